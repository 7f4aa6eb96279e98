//! Name checks: Python identifiers, C extension file names, normalized project names.

/// `name.cpython-311-x86_64-linux-gnu.so`, `name.abi3.so`, `name.so`, `name.pyd`, ….
pub(super) fn is_extension(file: &str, name: &str) -> bool {
    file.strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|rest| rest.ends_with(".so") || rest == "so" || rest.ends_with(".pyd") || rest == "pyd")
}

/// A Python identifier (the part of a dotted module name).
pub(super) fn valid_name(part: &str) -> bool {
    let mut chars = part.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic()) && chars.all(|c| c == '_' || c.is_alphanumeric())
}

pub(super) fn normalize_project(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if c == '-' || c == '_' || c == '.' {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('_');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_extensions() {
        assert!(valid_name("_x1") && valid_name("été") && !valid_name("1x") && !valid_name("") && !valid_name("a-b"));
        assert!(is_extension("m.cpython-311-x86_64-linux-gnu.so", "m") && is_extension("m.so", "m"));
        assert!(!is_extension("m.py", "m") && !is_extension("mm.so", "m"));
        assert_eq!(normalize_project("Pytest.XDist"), "pytest_xdist");
    }
}
