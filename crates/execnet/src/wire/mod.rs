//! The wire format: frames (PROTOCOL.md section 2) and serialized objects (section 3).
//!
//! * [`frame`]: the 9-byte frame header and message codes.
//! * [`ser`] / [`de`]: serde `Serializer` and `Deserializer` for the opcode format, so that
//!   any `Serialize` can be sent and any `DeserializeOwned` received.
//! * [`value`]: [`Value`], which holds any Python value the format carries.
//!
//! ## Channels inside data
//!
//! A [`crate::Channel`] serializes as the newtype struct [`CHANNEL_TOKEN`] wrapping the
//! tuple `(gateway_uid: u64, channel_id: i32)`. The serializer of this module writes it as
//! opcode `B` with the id, after checking that the channel belongs to the gateway the data
//! is being sent on ([`with_gateway`]). When loading, opcode `B` is presented to the
//! visitor as `visit_newtype_struct` over the same `(uid, id)` tuple, where uid is the
//! gateway of the current [`with_gateway`] scope; outside such a scope it is an error.
//! [`crate::gateway::lookup_channel`] turns `(uid, id)` into a live `Channel`.

pub mod de;
pub mod frame;
pub mod pyrepr;
pub mod ser;
pub mod value;

use std::cell::Cell;

use serde::{de::DeserializeOwned, Serialize};

use crate::error::Result;

/// The serde newtype-struct name under which channels travel through serde.
pub const CHANNEL_TOKEN: &str = "$execnet::private::Channel";

/// Version byte of the public [`dumps`]/[`loads`] form.
pub const DUMP_FORMAT_VERSION: u8 = 2;

thread_local! {
    static CURRENT_GATEWAY: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Runs `f` with `uid` as the gateway that channels in (de)serialized data belong to.
pub(crate) fn with_gateway<R>(uid: u64, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<u64>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT_GATEWAY.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(CURRENT_GATEWAY.with(|c| c.replace(Some(uid))));
    f()
}

/// The gateway of the innermost [`with_gateway`] scope on this thread.
pub(crate) fn current_gateway() -> Option<u64> {
    CURRENT_GATEWAY.with(|c| c.get())
}

/// Serializes `value` in the public, versioned form (version byte 0x02, then the object).
pub fn dumps<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let mut out = vec![DUMP_FORMAT_VERSION];
    ser::to_payload(value, &mut out)?;
    Ok(out)
}

/// Loads the public, versioned form written by [`dumps`] or by execnet's `dumps`.
pub fn loads<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match bytes.first() {
        Some(&DUMP_FORMAT_VERSION) => de::from_payload(&bytes[1..]),
        Some(&v) => Err(crate::Error::data_format(
            format!("unsupported dump format version {v} (expected {DUMP_FORMAT_VERSION})"),
            Some(0),
        )),
        None => Err(crate::Error::data_format("empty input", Some(0))),
    }
}
