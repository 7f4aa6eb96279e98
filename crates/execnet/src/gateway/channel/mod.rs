//! Channels: two-way, ordered message pipes between host code and one remote execution.
//!
//! The gateway's frame reader delivers items into a `ChannelState` (queue or callback);
//! [`Channel`] handles are what users hold. A channel ends in two halves: this side
//! closing (`close`, or dropping the last handle) stops sending; the peer closing (or
//! the gateway being lost) ends receiving once the queue is drained.
//!
//! This file has the handle ([`Channel`], what one handle owns, equality and hashing,
//! the serde impls that let a channel travel inside data); the rest lives in files of
//! their own: state.rs (the per-channel state the reader delivers into), budget.rs (the
//! gateway-wide queue budget), wait.rs (blocking on a channel's state), transfer.rs
//! (send, receive, iter), close.rs (closing and waiting for the close), callback.rs
//! (callbacks and service channels) and file.rs (the `std::io` adapters).

mod budget;
mod callback;
mod close;
mod file;
mod state;
mod transfer;
mod wait;

use std::fmt;
use std::sync::Arc;

use super::Gateway;
use crate::sync::lock;
use crate::wire::{self, frame::Code};

pub(crate) use self::budget::QueueBudget;
pub use self::file::{ChannelReader, ChannelWriter};
pub(crate) use self::state::{ChannelState, EndReason};
pub use self::transfer::Iter;

/// What a handle owns: the state and a gateway handle that keeps the gateway alive.
pub(crate) struct ChannelHandle {
    pub(crate) state: Arc<ChannelState>,
    pub(crate) gateway: Gateway,
}

impl Drop for ChannelHandle {
    fn drop(&mut self) {
        // Like execnet's Channel.__del__: tell the peer this side is gone. With a callback
        // installed the channel stays open for receiving (CHANNEL_LAST_MESSAGE).
        let (send_close, code) = {
            let mut inner = lock(&self.state.inner);
            if inner.send_closed {
                (false, Code::ChannelClose)
            } else {
                inner.send_closed = true;
                let code = if inner.callback.is_some() && inner.ended.is_none() {
                    Code::ChannelLastMessage
                } else {
                    Code::ChannelClose
                };
                (true, code)
            }
        };
        if send_close {
            let _ = self.gateway.inner.send_frame(code, self.state.id, &[]);
        }
        self.gateway.inner.forget_if_done(&self.state);
    }
}

/// A channel to code running in a worker: send items, receive items, wait for the end.
///
/// Handles are cheap to clone and can be used from several threads at once (`Send +
/// Sync`). A channel can itself be sent inside data; the remote side gets a working
/// channel object. When the last handle is dropped without [`Channel::close`], the
/// channel is closed, as execnet does when a channel object is garbage collected.
///
/// ```
/// # fn main() -> execnet::Result<()> {
/// let gw = execnet::makegateway("popen")?;
/// let ch = gw.remote_exec("for item in channel:\n    channel.send(item * 2)")?;
/// ch.send(&21)?;
/// assert_eq!(ch.receive::<i64>()?, 42);
/// ch.close()?; // ends the remote loop
/// ch.waitclose(None)?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Channel {
    pub(crate) h: Arc<ChannelHandle>,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = lock(&self.h.state.inner);
        let state = match (&inner.ended, inner.send_closed) {
            (None, false) => "open",
            (None, true) => "closed for sending",
            (Some(EndReason::LastMessage), false) => "receive-closed",
            _ => "closed",
        };
        write!(f, "<Channel id={} {} on {}>", self.h.state.id, state, self.h.gateway.id())
    }
}

impl PartialEq for Channel {
    fn eq(&self, other: &Self) -> bool {
        self.gateway_uid() == other.gateway_uid() && self.id() == other.id()
    }
}
impl Eq for Channel {}

impl std::hash::Hash for Channel {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.h.gateway.inner.uid, self.h.state.id).hash(state)
    }
}

impl Channel {
    /// The channel id (odd for channels this side created, even for the worker's).
    pub fn id(&self) -> i32 {
        self.h.state.id
    }

    /// The process-unique number of this channel's gateway.
    pub(crate) fn gateway_uid(&self) -> u64 {
        self.h.gateway.inner.uid
    }

    /// The gateway this channel belongs to.
    pub fn gateway(&self) -> &Gateway {
        &self.h.gateway
    }
}

impl serde::Serialize for Channel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_newtype_struct(wire::CHANNEL_TOKEN, &(self.h.gateway.inner.uid, self.id()))
    }
}

impl<'de> serde::Deserialize<'de> for Channel {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Channel;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a channel")
            }
            fn visit_newtype_struct<D: serde::Deserializer<'de>>(
                self,
                d: D,
            ) -> std::result::Result<Channel, D::Error> {
                use serde::Deserialize;
                let (uid, id) = <(u64, i32)>::deserialize(d)?;
                super::lookup_channel(uid, id).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_newtype_struct(wire::CHANNEL_TOKEN, V)
    }
}
