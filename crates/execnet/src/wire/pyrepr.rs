//! Python literal forms: `repr()` of strings (for the bootstrap line) and of [`Value`]s
//! (for the command-line tool). HELPER-OWNED.

/// The Python string literal for `s`, as `repr(s)` writes it (all on one line).
pub fn py_str_literal(s: &str) -> String {
    let _ = s;
    todo!("wire helper")
}
