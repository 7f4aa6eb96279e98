//! The wire format: frames (PROTOCOL.md section 2) and serialized objects (section 3).
//!
//! * [`frame`]: the 9-byte frame header and message codes.
//! * [`opcode`]: the object format's opcodes, by name.
//! * [`ser`] / [`de`]: serde `Serializer` and `Deserializer` for the opcode format, so that
//!   any `Serialize` can be sent and any `DeserializeOwned` received.
//! * [`value`]: [`Value`](value::Value), which holds any Python value the format carries.
//!
//! ## Channels inside data
//!
//! A [`crate::Channel`] serializes as the newtype struct [`CHANNEL_TOKEN`] wrapping the
//! tuple `(gateway_uid: u64, channel_id: i32)`. The serializer of this module writes it as
//! opcode `B` with the id, after checking that the channel belongs to the gateway the data
//! is being sent on (`with_gateway`). When loading, opcode `B` is presented to the
//! visitor as `visit_newtype_struct` over the same `(uid, id)` tuple, where uid is the
//! gateway of the current `with_gateway` scope; outside such a scope it is an error.
//! The gateway layer hands in the function that turns `(uid, id)` into a live
//! `Channel` (`set_channel_resolver`); this module never calls into gateways itself.

pub mod de;
pub mod frame;
pub mod opcode;
pub mod pyrepr;
pub mod ser;
pub(crate) mod shared;
pub mod value;

use std::cell::Cell;

use serde::{de::DeserializeOwned, Serialize};

use crate::error::Result;

/// The serde newtype-struct name under which channels travel through serde.
pub const CHANNEL_TOKEN: &str = "$execnet::private::Channel";

/// The serde newtype-struct name of a Python tuple of any length ([`value::Tuple`]):
/// the wrapped sequence is written as its items, then BUILDTUPLE.
pub const TUPLE_TOKEN: &str = "$execnet::private::Tuple";

/// The serde newtype-struct name of a Python set ([`value::Set`]): the wrapped sequence
/// is written as its items, then SET.
pub const SET_TOKEN: &str = "$execnet::private::Set";

/// The serde newtype-struct name of a Python frozenset ([`value::FrozenSet`]): the
/// wrapped sequence is written as its items, then FROZENSET.
pub const FROZENSET_TOKEN: &str = "$execnet::private::FrozenSet";

/// The serde newtype-struct name of a Python complex ([`value::Complex`]), wrapping the
/// tuple `(re: f64, im: f64)`.
pub const COMPLEX_TOKEN: &str = "$execnet::private::Complex";

/// The serde newtype-struct name of an integer too big for the serde data model
/// ([`value::Int`]), wrapping its decimal text (optional `-`, then digits).
pub const BIGINT_TOKEN: &str = "$execnet::private::BigInt";

/// Deserializer side only: [`value::Value`] asks for this newtype struct, and the
/// deserializers of this module then present tuples, sets and frozensets as single-entry
/// maps keyed by their token, so that `Value` can tell them from lists.
pub const VALUE_TOKEN: &str = "$execnet::private::Value";

/// Deserializer side only: when a dict is presented through `deserialize_any`, a genuine
/// dict whose first key is a str starting with `$execnet::private::` is wrapped as
/// `{DICT_TOKEN: dict}`, so that it is never mistaken for a magic form (a peer cannot
/// forge a channel reference, for instance).
pub const DICT_TOKEN: &str = "$execnet::private::Dict";

/// The prefix shared by every magic name.
pub(crate) const MAGIC_PREFIX: &str = "$execnet::private::";

/// The deepest nesting of containers accepted when loading (and written when dumping),
/// so that hostile input cannot overflow the stack of the thread that loads it. A debug
/// build uses about 4 KiB of stack per level to load a [`value::Value`], a release build
/// much less; execnet itself fails to dump somewhere between 300 and 490 levels (its serializer
/// recurses).
pub const MAX_DEPTH: usize = 256;

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

/// How `(gateway uid, channel id)` in loaded data becomes a live channel handle.
pub(crate) type ChannelResolver = fn(u64, i32) -> Result<crate::Channel>;

static CHANNEL_RESOLVER: std::sync::OnceLock<ChannelResolver> = std::sync::OnceLock::new();

/// Hands the wire format the gateway layer's [`ChannelResolver`]; the gateway registry
/// does so when it is first used, before any gateway (and so any channel) exists.
pub(crate) fn set_channel_resolver(resolve: ChannelResolver) {
    let _ = CHANNEL_RESOLVER.set(resolve);
}

/// The live channel that `(uid, id)` in loaded data names.
pub(crate) fn resolve_channel(uid: u64, id: i32) -> Result<crate::Channel> {
    match CHANNEL_RESOLVER.get() {
        Some(resolve) => resolve(uid, id),
        None => Err(crate::Error::data_format(
            format!("channel {id} arrived for a gateway that no longer exists"),
            None,
        )),
    }
}

/// The gateway of the innermost `with_gateway` scope on this thread.
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
