//! Sending and receiving items: [`Channel::send`], the `receive` family (which may
//! read the next frame in the receiving thread) and the [`Iter`] over received items.

use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::budget::item_cost;
use super::state::EndReason;
use super::wait::{end_error, wait};
use super::Channel;
use crate::error::{Error, Result};
use crate::sync::lock;
use crate::wire::{self, frame::Code};

impl Channel {
    /// Sends one item to the other side. Any `Serialize` value whose parts the format
    /// carries can be sent (see [`crate::Value`] for the mapping).
    pub fn send<T: Serialize + ?Sized>(&self, item: &T) -> Result<()> {
        let gw = &self.h.gateway.inner;
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&[0u8; wire::frame::HEADER_LEN]);
        wire::with_gateway(gw.uid, || wire::ser::to_payload(item, &mut buf))?;
        {
            let inner = lock(&self.h.state.inner);
            if inner.send_closed {
                if let Some(EndReason::Lost(info)) = &inner.ended {
                    return Err(Error::GatewayLost(info.clone()));
                }
                return Err(Error::ChannelClosed { id: self.id() });
            }
        }
        // The state lock is not held while writing: a write can block on a full pipe
        // while the worker waits for our reader, which needs that lock to deliver.
        let len = buf.len() - wire::frame::HEADER_LEN;
        buf[..wire::frame::HEADER_LEN]
            .copy_from_slice(&wire::frame::encode_header(Code::ChannelData, self.id(), len));
        gw.write_raw(buf)
    }

    /// Receives the next item, blocking until one arrives. After the peer closed the
    /// channel and the queue is drained: [`Error::EndOfChannel`], or [`Error::Remote`]
    /// when the remote code raised, or [`Error::GatewayLost`].
    pub fn receive<T: DeserializeOwned>(&self) -> Result<T> {
        self.receive_inner(None)
    }

    /// Like [`Channel::receive`], giving up with [`Error::Timeout`] after `timeout`.
    pub fn receive_timeout<T: DeserializeOwned>(&self, timeout: Duration) -> Result<T> {
        self.receive_inner(Some(timeout))
    }

    /// Like [`Channel::receive_timeout`] with an absolute deadline: gives up with
    /// [`Error::Timeout`] at `deadline`. A deadline already past still returns an item
    /// that is queued (or has arrived unread), and otherwise times out at once. Handy for
    /// one time limit over several receives.
    pub fn receive_deadline<T: DeserializeOwned>(&self, deadline: Instant) -> Result<T> {
        self.receive_timeout(deadline.saturating_duration_since(Instant::now()))
    }

    /// Receives an item if one is there, without waiting: `Ok(Some(item))` for an item
    /// already queued (or already arrived and not yet read), `Ok(None)` when none has
    /// come yet. The errors are those of [`Channel::receive`]: once the peer closed the
    /// channel and the queue is drained, [`Error::EndOfChannel`], [`Error::Remote`] or
    /// [`Error::GatewayLost`]; never [`Error::Timeout`].
    pub fn try_receive<T: DeserializeOwned>(&self) -> Result<Option<T>> {
        match self.receive_inner(Some(Duration::ZERO)) {
            Ok(item) => Ok(Some(item)),
            Err(Error::Timeout(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn receive_inner<T: DeserializeOwned>(&self, timeout: Option<Duration>) -> Result<T> {
        let payload = self.next_payload(timeout)?;
        wire::with_gateway(self.h.gateway.inner.uid, || wire::de::from_payload(&payload))
    }

    fn next_payload(&self, timeout: Option<Duration>) -> Result<Vec<u8>> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let state = &self.h.state;
        let gw = &self.h.gateway.inner;
        let mut inner = lock(&state.inner);
        // Whether to try reading the next frame in this thread (see
        // GatewayInner::read_for): after it could not, wait until woken.
        let mut read_here = true;
        loop {
            if inner.callback.is_some() {
                return Err(Error::misuse(format!("cannot receive on channel {}: it has a callback", state.id)));
            }
            if let Some(item) = inner.queue.pop_front() {
                state.budget.sub(item_cost(item.len()));
                return Ok(item);
            }
            if let Some(reason) = &inner.ended {
                return Err(end_error(state.id, reason, true));
            }
            if read_here {
                drop(inner);
                read_here = gw.read_for(state, deadline);
                inner = lock(&state.inner);
                continue;
            }
            if deadline.is_some() {
                gw.wake_reader(); // a bounded wait: the reader thread must not hold back
            }
            inner = wait(state, inner, deadline, timeout)?;
            read_here = true;
        }
    }

    /// An iterator over received items that ends when the channel is closed normally.
    /// Errors (remote error, lost gateway, undecodable item) are yielded as `Err` once,
    /// then the iteration ends.
    pub fn iter<T: DeserializeOwned>(&self) -> Iter<'_, T> {
        Iter { channel: self, done: false, _t: std::marker::PhantomData }
    }
}

/// Iterator returned by [`Channel::iter`].
pub struct Iter<'a, T> {
    channel: &'a Channel,
    done: bool,
    _t: std::marker::PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for Iter<'_, T> {
    type Item = Result<T>;
    fn next(&mut self) -> Option<Result<T>> {
        if self.done {
            return None;
        }
        match self.channel.receive() {
            Ok(item) => Some(Ok(item)),
            Err(Error::EndOfChannel { .. }) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
