//! serde Deserializer reading the opcode format (PROTOCOL.md section 3). HELPER-OWNED.

use serde::de::DeserializeOwned;

use crate::error::Result;

/// Loads one object from an internal payload (no version byte).
pub fn from_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    let _ = payload;
    todo!("wire helper")
}
