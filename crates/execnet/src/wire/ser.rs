//! serde Serializer writing the opcode format (PROTOCOL.md section 3). HELPER-OWNED.

use serde::Serialize;

use crate::error::Result;

/// Appends the serialized object (opcodes, ending with STOP) to `out`.
pub fn to_payload<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    let _ = (value, out);
    todo!("wire helper")
}
