//! The shared state of one channel: its queue, how it ended, its callback. The
//! gateway's frame reader delivers into it ([`ChannelState::deliver`],
//! [`ChannelState::end`]); handles read and close through it.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Condvar, Mutex};

use super::budget::{item_cost, QueueBudget};
use crate::error::LostInfo;
use crate::sync::lock;

/// Why receiving on a channel ended.
#[derive(Debug, Clone)]
pub(crate) enum EndReason {
    /// The peer sent CHANNEL_CLOSE.
    Closed,
    /// The peer sent CHANNEL_LAST_MESSAGE: it sends no more but may still receive.
    LastMessage,
    /// The peer sent CHANNEL_CLOSE_ERROR with this traceback.
    RemoteError(String),
    /// This side closed the channel.
    LocalClose,
    /// An item could not be decoded for a callback; the message says why.
    LocalError(String),
    /// The connection to the worker is gone.
    Lost(LostInfo),
}

pub(super) type Callback = Box<dyn FnMut(Delivery) + Send>;

/// What the frame reader hands to a callback.
pub(crate) enum Delivery {
    Item(Vec<u8>),
    End,
}

pub(super) struct Inner {
    pub(super) queue: VecDeque<Vec<u8>>,
    /// Set once no more items will be queued (peer closed, local close, or lost).
    pub(super) ended: Option<EndReason>,
    /// This side may no longer send.
    pub(super) send_closed: bool,
    pub(super) callback: Option<Arc<Mutex<Callback>>>,
    /// Threads blocked in receive/waitclose (so that delivery notifies only when needed).
    pub(super) waiters: usize,
    /// The thread giving the callback its end marker, while it does: waitclose in other
    /// threads returns after the callback saw the end (as execnet's), not before.
    pub(super) end_delivering: Option<std::thread::ThreadId>,
}

/// The shared state of one channel, owned by the gateway's table and by handles.
pub(crate) struct ChannelState {
    pub(crate) id: i32,
    pub(super) inner: Mutex<Inner>,
    pub(super) cond: Condvar,
    pub(super) budget: Arc<QueueBudget>,
    /// Threads of this gateway blocked in receive/waitclose, over all its channels.
    pub(super) waiting: Arc<AtomicUsize>,
}

impl Drop for ChannelState {
    fn drop(&mut self) {
        let inner = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        self.budget.sub(inner.queue.iter().map(|i| item_cost(i.len())).sum());
    }
}

impl ChannelState {
    pub(crate) fn new(id: i32, budget: Arc<QueueBudget>, waiting: Arc<AtomicUsize>) -> ChannelState {
        ChannelState {
            id,
            budget,
            waiting,
            inner: Mutex::new(Inner {
                queue: VecDeque::new(),
                ended: None,
                send_closed: false,
                callback: None,
                waiters: 0,
                end_delivering: None,
            }),
            cond: Condvar::new(),
        }
    }

    /// Called by the frame reader for CHANNEL_DATA. Returns true when a receiver was
    /// waiting for it.
    pub(crate) fn deliver(&self, payload: Vec<u8>) -> bool {
        let mut inner = lock(&self.inner);
        if inner.send_closed && inner.callback.is_none() {
            // Closed by this side: execnet drops late data too.
            tracing::debug!(channel = self.id, "dropping data for a channel closed by this side");
            return false;
        }
        if let Some(cb) = inner.callback.clone() {
            drop(inner);
            run_callback(&cb, Delivery::Item(payload), self.id);
            return false;
        }
        self.budget.add(item_cost(payload.len()));
        inner.queue.push_back(payload);
        if inner.waiters > 0 {
            self.cond.notify_all();
            return true;
        }
        false
    }

    /// An item is queued or no more will come: a receive would not wait.
    pub(crate) fn would_not_wait(&self) -> bool {
        let inner = lock(&self.inner);
        !inner.queue.is_empty() || inner.ended.is_some() || inner.callback.is_some()
    }

    /// Called by the frame reader when the peer ends the channel, or when the gateway is
    /// lost. Returns true when the channel is now closed in both directions.
    pub(crate) fn end(&self, reason: EndReason) -> bool {
        let mut inner = lock(&self.inner);
        if inner.ended.is_some() && !matches!(inner.ended, Some(EndReason::LocalClose)) {
            return inner.send_closed;
        }
        match &reason {
            EndReason::Closed | EndReason::RemoteError(_) | EndReason::Lost(_) => {
                inner.send_closed = true
            }
            _ => {}
        }
        // A local close only ended the queue for this side; the peer's reason is more
        // informative for waitclose (for example a remote error), so it replaces it.
        inner.ended = Some(reason);
        let both = inner.send_closed;
        let cb = inner.callback.clone();
        if cb.is_some() {
            inner.end_delivering = Some(std::thread::current().id());
        }
        self.cond.notify_all();
        drop(inner);
        if let Some(cb) = cb {
            run_callback(&cb, Delivery::End, self.id);
            self.end_delivered();
        }
        both
    }

    /// The callback has seen the end: waitclose may return.
    pub(super) fn end_delivered(&self) {
        let mut inner = lock(&self.inner);
        inner.end_delivering = None;
        self.cond.notify_all();
    }

    /// How the peer ended this channel, if it did: it must send no data after that.
    pub(crate) fn peer_ended(&self) -> Option<&'static str> {
        match lock(&self.inner).ended {
            Some(EndReason::Closed) => Some("closed it"),
            Some(EndReason::RemoteError(_)) => Some("closed it with an error"),
            Some(EndReason::LastMessage) => Some("sent its last message on it"),
            _ => None,
        }
    }

    /// Closed both ways: nothing more can be sent or will be received.
    pub(crate) fn is_done(&self) -> bool {
        let inner = lock(&self.inner);
        inner.send_closed && inner.ended.is_some()
    }
}

fn run_callback(cb: &Arc<Mutex<Callback>>, d: Delivery, id: i32) {
    let mut f = lock(cb);
    if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (f)(d))).is_err() {
        tracing::error!(channel = id, "a channel callback panicked; the item was dropped");
    }
}
