//! The opcodes of the object format (PROTOCOL.md section 3), by name: the one table the
//! serializer, the loader and their messages use. G, I, M and S are legacy (Python 2
//! era) opcodes that are loaded but never written.

pub const BUILDTUPLE: u8 = b'@';
pub const BYTES: u8 = b'A';
pub const CHANNEL: u8 = b'B';
pub const FALSE: u8 = b'C';
pub const FLOAT: u8 = b'D';
pub const FROZENSET: u8 = b'E';
pub const INT: u8 = b'F';
pub const LONG: u8 = b'G';
pub const LONGINT: u8 = b'H';
pub const LONGLONG: u8 = b'I';
pub const NEWDICT: u8 = b'J';
pub const NEWLIST: u8 = b'K';
pub const NONE: u8 = b'L';
pub const PY2STRING: u8 = b'M';
pub const PY3STRING: u8 = b'N';
pub const SET: u8 = b'O';
pub const SETITEM: u8 = b'P';
pub const STOP: u8 = b'Q';
pub const TRUE: u8 = b'R';
pub const UNICODE: u8 = b'S';
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
