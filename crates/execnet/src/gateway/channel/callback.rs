//! Callbacks: items handed to a function on the reader thread instead of queued, and
//! service channels (a callback the library keeps for the gateway's life, answered
//! through a [`ServiceSender`]).

use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::budget::item_cost;
use super::state::{Callback, Delivery, EndReason};
use super::Channel;
use crate::error::{Error, Result};
use crate::sync::lock;
use crate::wire::{self, frame::Code};

impl Channel {
    /// Hands every item to `callback` instead of queueing it; items already queued are
    /// handed over first, in order. The callback runs on the gateway's reader thread:
    /// keep it short and do not block on this gateway's channels in it. Items that do
    /// not decode as `T` end the channel with a data format error (see `waitclose`).
    pub fn set_callback<T, F>(&self, mut callback: F) -> Result<()>
    where
        T: DeserializeOwned + Send + 'static,
        F: FnMut(T) + Send + 'static,
    {
        self.install_callback(move |item: Option<T>| {
            if let Some(item) = item {
                callback(item)
            }
        })
    }

    /// Like [`Channel::set_callback`], and calls `callback(endmarker)` once when the
    /// channel closes (also on a remote error or a lost gateway).
    pub fn set_callback_with_endmarker<T, F>(&self, mut callback: F, endmarker: T) -> Result<()>
    where
        T: DeserializeOwned + Send + 'static,
        F: FnMut(T) + Send + 'static,
    {
        let mut endmarker = Some(endmarker);
        self.install_callback(move |item: Option<T>| match item {
            Some(item) => callback(item),
            None => {
                if let Some(m) = endmarker.take() {
                    callback(m)
                }
            }
        })
    }

    /// Installs `f`, called with `Some(item)` for each item and with `None` once at the end.
    pub(crate) fn install_callback<T, F>(&self, f: F) -> Result<()>
    where
        T: DeserializeOwned + Send + 'static,
        F: FnMut(Option<T>) + Send + 'static,
    {
        let uid = self.h.gateway.inner.uid;
        let weak_state = Arc::downgrade(&self.h.state);
        let id = self.id();
        let mut failed = false;
        let mut ended = false;
        // Taken out (and dropped) once it has had the end: it is never called again, and
        // what it holds is let go now rather than with the channel's last handle (a
        // callback holding a handle of its own channel, as a Python bound method of an
        // object that keeps the channel does, would otherwise keep itself alive for ever).
        let mut f = Some(f);
        let f: Callback = Box::new(move |d: Delivery| match d {
            Delivery::Item(_) if failed || ended => {}
            Delivery::Item(payload) => {
                match wire::with_gateway(uid, || wire::de::from_payload::<T>(&payload)) {
                    Ok(item) => {
                        if let Some(f) = f.as_mut() {
                            f(Some(item))
                        }
                    }
                    Err(e) => {
                        failed = true;
                        tracing::warn!(channel = id, "callback item did not decode: {e}");
                        let state = weak_state.upgrade();
                        if let Some(state) = &state {
                            let mut inner = lock(&state.inner);
                            if inner.ended.is_none() {
                                inner.ended = Some(EndReason::LocalError(e.to_string()));
                                inner.end_delivering = Some(std::thread::current().id());
                                state.cond.notify_all();
                            }
                        }
                        ended = true;
                        if let Some(mut f) = f.take() {
                            f(None);
                        }
                        if let Some(state) = &state {
                            state.end_delivered();
                        }
                    }
                }
            }
            Delivery::End if !ended => {
                ended = true;
                if let Some(mut f) = f.take() {
                    f(None);
                }
            }
            Delivery::End => {}
        });
        let cb = Arc::new(Mutex::new(f));
        let state = &self.h.state;
        let mut inner = lock(&state.inner);
        if inner.callback.is_some() {
            return Err(Error::misuse(format!("channel {} already has a callback", state.id)));
        }
        inner.callback = Some(cb.clone());
        // Lock the callback before releasing the state so that the reader thread, which
        // would call it for newer items, waits until the queued ones are delivered.
        let mut f = lock(&cb);
        let queued: Vec<Vec<u8>> = inner.queue.drain(..).collect();
        self.h.state.budget.sub(queued.iter().map(|i| item_cost(i.len())).sum());
        let ended = inner.ended.is_some() && !matches!(inner.ended, Some(EndReason::LocalClose));
        if ended {
            inner.end_delivering = Some(std::thread::current().id());
        }
        state.cond.notify_all(); // receivers blocked on this channel must see the callback
        drop(inner);
        for item in queued {
            f(Delivery::Item(item));
        }
        if ended {
            f(Delivery::End);
            drop(f);
            state.end_delivered();
        }
        Ok(())
    }

    /// Turns this channel into one that a service of the library (import forwarding)
    /// answers on for the gateway's whole life: its handles may all be dropped without
    /// closing it (with the callback that takes its items left in place), and the
    /// returned sender sends on it without keeping the gateway alive.
    pub(crate) fn into_service(self) -> ServiceSender {
        lock(&self.h.state.inner).send_closed = true; // dropping the handles sends nothing
        ServiceSender { gateway: Arc::downgrade(&self.h.gateway.inner), id: self.id() }
    }
}

/// Sends items on a channel made a service channel by [`Channel::into_service`].
pub(crate) struct ServiceSender {
    gateway: std::sync::Weak<crate::gateway::GatewayInner>,
    id: i32,
}

impl ServiceSender {
    pub(crate) fn send<T: Serialize + ?Sized>(&self, item: &T) -> Result<()> {
        let Some(gw) = self.gateway.upgrade() else {
            return Err(Error::ChannelClosed { id: self.id });
        };
        let mut payload = Vec::with_capacity(256);
        wire::with_gateway(gw.uid, || wire::ser::to_payload(item, &mut payload))?;
        gw.send_frame(Code::ChannelData, self.id, &payload)
    }
}
