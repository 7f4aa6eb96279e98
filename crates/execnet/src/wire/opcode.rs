//! The opcodes of the object format (PROTOCOL.md section 3), by name: the one table the
//! serializer, the loader and their messages use. G, I, M and S are legacy (Python 2
//! era) opcodes that are loaded but never written.
//!
//! Lengths, counts and ids that follow an opcode are 4-byte, signed, big-endian integers.

/// Pops the number of items given by its 4-byte count operand and pushes them as a tuple.
pub const BUILDTUPLE: u8 = b'@';
/// A `bytes` object: a 4-byte length, then that many raw bytes.
pub const BYTES: u8 = b'A';
/// A channel, by its 4-byte channel id on the gateway the data travels on.
pub const CHANNEL: u8 = b'B';
/// `False`.
pub const FALSE: u8 = b'C';
/// A `float`: 8 bytes, an IEEE 754 double, big-endian.
pub const FLOAT: u8 = b'D';
/// Pops the number of members given by its 4-byte count operand and pushes them as a `frozenset`.
pub const FROZENSET: u8 = b'E';
/// An `int` that fits in 32 bits: 4 bytes, signed, big-endian.
pub const INT: u8 = b'F';
/// Legacy (Python 2 `int`, never written): loaded like [`INT`].
pub const LONG: u8 = b'G';
/// An `int` too big for [`INT`]: a 4-byte length, then its decimal digits as ASCII text.
pub const LONGINT: u8 = b'H';
/// Legacy (Python 2 `long`, never written): loaded like [`LONGINT`].
pub const LONGLONG: u8 = b'I';
/// Pushes a new, empty `dict`, which SETITEMs then fill.
pub const NEWDICT: u8 = b'J';
/// Pushes a new `list` of the length given by its 4-byte operand, whose items SETITEMs then set.
pub const NEWLIST: u8 = b'K';
/// `None`.
pub const NONE: u8 = b'L';
/// Legacy (Python 2 `str`, never written): a 4-byte length, then that many bytes, loaded as a `str` (non-ASCII bytes as Latin-1).
pub const PY2STRING: u8 = b'M';
/// A `str`: a 4-byte length, then that many bytes of UTF-8.
pub const PY3STRING: u8 = b'N';
/// Pops the number of members given by its 4-byte count operand and pushes them as a `set`.
pub const SET: u8 = b'O';
/// Pops a value and a key and stores them in the container below them: a dict entry, or a list item by index.
pub const SETITEM: u8 = b'P';
/// Ends the object: exactly one item must be on the stack, and no bytes may follow.
pub const STOP: u8 = b'Q';
/// `True`.
pub const TRUE: u8 = b'R';
/// Legacy (Python 2 `unicode`, never written): loaded like [`PY3STRING`].
pub const UNICODE: u8 = b'S';
/// A `complex`: 16 bytes, the real and then the imaginary part, each an IEEE 754 double, big-endian.
pub const COMPLEX: u8 = b'T';

/// Every opcode with its name, in byte order.
pub const ALL: [(u8, &str); 21] = [
    (BUILDTUPLE, "BUILDTUPLE"),
    (BYTES, "BYTES"),
    (CHANNEL, "CHANNEL"),
    (FALSE, "FALSE"),
    (FLOAT, "FLOAT"),
    (FROZENSET, "FROZENSET"),
    (INT, "INT"),
    (LONG, "LONG"),
    (LONGINT, "LONGINT"),
    (LONGLONG, "LONGLONG"),
    (NEWDICT, "NEWDICT"),
    (NEWLIST, "NEWLIST"),
    (NONE, "NONE"),
    (PY2STRING, "PY2STRING"),
    (PY3STRING, "PY3STRING"),
    (SET, "SET"),
    (SETITEM, "SETITEM"),
    (STOP, "STOP"),
    (TRUE, "TRUE"),
    (UNICODE, "UNICODE"),
    (COMPLEX, "COMPLEX"),
];

/// The name of an opcode, or "unknown".
pub fn name(op: u8) -> &'static str {
    match op.checked_sub(BUILDTUPLE) {
        Some(i) if (i as usize) < ALL.len() => ALL[i as usize].1,
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_byte_order_without_gaps() {
        for (i, (op, _)) in ALL.iter().enumerate() {
            assert_eq!(*op as usize, BUILDTUPLE as usize + i);
        }
        assert_eq!(name(NEWLIST), "NEWLIST");
        assert_eq!(name(b'Z'), "unknown");
        assert_eq!(name(0), "unknown");
    }

    /// The worker's table (`class Op` in worker.py) names the same codes.
    #[test]
    fn the_worker_names_the_same_opcodes() {
        let worker = crate::worker::WORKER_SOURCE;
        let start = worker.find("\nclass Op:").expect("worker.py has class Op");
        let table: Vec<(u8, String)> = worker[start + 1..]
            .lines()
            .skip(1)
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .filter_map(|l| {
                let (name, value) = l.trim().split_once(" = ")?;
                let value = value.split_whitespace().next()?.strip_prefix("0x")?;
                Some((u8::from_str_radix(value, 16).ok()?, name.to_string()))
            })
            .collect();
        let ours: Vec<(u8, String)> = ALL.iter().map(|(op, n)| (*op, n.to_string())).collect();
        assert_eq!(table, ours);
    }
}
