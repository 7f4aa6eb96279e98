//! Channels: two-way, ordered message pipes between host code and one remote execution.
//!
//! The gateway's frame reader delivers items into a `ChannelState` (queue or callback);
//! [`Channel`] handles are what users hold. A channel ends in two halves: this side
//! closing (`close`, or dropping the last handle) stops sending; the peer closing (or
//! the gateway being lost) ends receiving once the queue is drained.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Gateway;
use crate::error::{Error, LostInfo, Result};
use crate::sync::{self, lock, wait_timeout};
use crate::wire::{self, frame::Code};

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

type Callback = Box<dyn FnMut(Delivery) + Send>;

/// What one queued item counts against the budget: its payload and a fixed estimate of
/// its bookkeeping, so that a flood of empty items is bounded too.
pub(crate) fn item_cost(payload_len: usize) -> usize {
    payload_len + 64
}

/// The bytes of received items queued in all channels of one gateway, and the limit
/// above which the gateway's reader stops reading (backpressure: the worker's writes
/// then block once the pipe or socket buffer is full).
pub(crate) struct QueueBudget {
    used: Mutex<usize>,
    cond: Condvar,
    /// 0: no limit.
    limit: usize,
    /// Set when the gateway ends: the reader no longer waits.
    released: std::sync::atomic::AtomicBool,
}

impl QueueBudget {
    pub(crate) fn new(limit: usize) -> QueueBudget {
        QueueBudget {
            used: Mutex::new(0),
            cond: Condvar::new(),
            limit,
            released: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub(crate) fn used(&self) -> usize {
        *lock(&self.used)
    }

    fn add(&self, n: usize) {
        *lock(&self.used) += n;
    }

    fn sub(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut used = lock(&self.used);
        let was_above = self.limit != 0 && *used > self.limit;
        *used = used.saturating_sub(n);
        if was_above && *used <= self.limit {
            self.cond.notify_all();
        }
    }

    /// Blocks the reader while more than the limit is queued, until the gateway ends.
    pub(crate) fn wait_for_room(&self) {
        if self.limit == 0 {
            return;
        }
        let mut used = lock(&self.used);
        while *used > self.limit && !self.released.load(std::sync::atomic::Ordering::SeqCst) {
            used = wait_timeout(&self.cond, used, Duration::from_millis(200));
        }
    }

    /// Stops the reader from waiting (the gateway is ending).
    pub(crate) fn release(&self) {
        self.released.store(true, std::sync::atomic::Ordering::SeqCst);
        let _used = lock(&self.used);
        self.cond.notify_all();
    }
}

/// What the frame reader hands to a callback.
pub(crate) enum Delivery {
    Item(Vec<u8>),
    End,
}

struct Inner {
    queue: VecDeque<Vec<u8>>,
    /// Set once no more items will be queued (peer closed, local close, or lost).
    ended: Option<EndReason>,
    /// This side may no longer send.
    send_closed: bool,
    callback: Option<Arc<Mutex<Callback>>>,
    /// Threads blocked in receive/waitclose (so that delivery notifies only when needed).
    waiters: usize,
    /// The thread giving the callback its end marker, while it does: waitclose in other
    /// threads returns after the callback saw the end (as execnet's), not before.
    end_delivering: Option<std::thread::ThreadId>,
}

/// The shared state of one channel, owned by the gateway's table and by handles.
pub(crate) struct ChannelState {
    pub(crate) id: i32,
    inner: Mutex<Inner>,
    cond: Condvar,
    budget: Arc<QueueBudget>,
    /// Threads of this gateway blocked in receive/waitclose, over all its channels.
    waiting: Arc<AtomicUsize>,
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
    fn end_delivered(&self) {
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

    /// Waits until the channel is closed: by the peer (its code finished), by this side,
    /// or because the gateway was lost. Returns the remote error if the remote code
    /// raised. Items still queued stay receivable.
    pub fn waitclose(&self, timeout: Option<Duration>) -> Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let state = &self.h.state;
        let mut inner = lock(&state.inner);
        loop {
            let delivering_elsewhere =
                inner.end_delivering.is_some_and(|t| t != std::thread::current().id());
            match &inner.ended {
                Some(reason) if !delivering_elsewhere => {
                    return match reason {
                        EndReason::RemoteError(_) | EndReason::Lost(_) | EndReason::LocalError(_) => {
                            Err(end_error(state.id, reason, false))
                        }
                        _ => Ok(()),
                    };
                }
                _ => {}
            }
            inner = wait(state, inner, deadline, timeout)?;
        }
    }

    /// The error this channel ended with, without waiting: the remote error, the loss
    /// of the gateway, or a local decoding failure. None while it is open or when it
    /// closed cleanly.
    pub fn end_error(&self) -> Option<Error> {
        let inner = lock(&self.h.state.inner);
        match &inner.ended {
            Some(
                reason @ (EndReason::RemoteError(_) | EndReason::Lost(_) | EndReason::LocalError(_)),
            ) => Some(end_error(self.h.state.id, reason, false)),
            _ => None,
        }
    }

    /// Closes the channel on both sides: the remote code sees end-of-channel (EOFError)
    /// on receive, this side can no longer send, and local receives end once the queue
    /// is drained. Closing twice is harmless.
    pub fn close(&self) -> Result<()> {
        self.close_inner(Code::ChannelClose, &[])
    }

    /// Closes the channel with an error: the remote side sees a RemoteError with `text`.
    pub fn close_with_error(&self, text: &str) -> Result<()> {
        let mut payload = Vec::new();
        wire::ser::to_payload(text, &mut payload)?;
        self.close_inner(Code::ChannelCloseError, &payload)
    }

    /// Tells the peer that this side sends no more (CHANNEL_LAST_MESSAGE): remote
    /// receives end with `EOFError` once the items sent before are drained, while this
    /// side keeps receiving until the peer closes. Sending afterwards is an error;
    /// calling it again, or after `close`, does nothing.
    pub fn close_sending(&self) -> Result<()> {
        let state = &self.h.state;
        {
            let mut inner = lock(&state.inner);
            if inner.send_closed {
                return Ok(());
            }
            inner.send_closed = true;
        }
        let res = self.h.gateway.inner.send_frame(Code::ChannelLastMessage, state.id, &[]);
        self.h.gateway.inner.forget_if_done(state);
        match res {
            Err(Error::GatewayLost(_)) => Ok(()),
            other => other,
        }
    }

    fn close_inner(&self, code: Code, payload: &[u8]) -> Result<()> {
        let state = &self.h.state;
        let mut inner = lock(&state.inner);
        if inner.send_closed {
            return Ok(());
        }
        inner.send_closed = true;
        if inner.ended.is_none() {
            inner.ended = Some(EndReason::LocalClose);
            state.cond.notify_all();
        }
        drop(inner);
        let res = self.h.gateway.inner.send_frame(code, state.id, payload);
        self.h.gateway.inner.forget_if_done(state);
        match res {
            Err(Error::GatewayLost(_)) => Ok(()), // nothing left to close on the other side
            other => other,
        }
    }

    /// True once the channel is closed: by this side, or by the peer for good.
    pub fn is_closed(&self) -> bool {
        let inner = lock(&self.h.state.inner);
        inner.send_closed || matches!(inner.ended, Some(ref r) if !matches!(r, EndReason::LastMessage))
    }

    /// An iterator over received items that ends when the channel is closed normally.
    /// Errors (remote error, lost gateway, undecodable item) are yielded as `Err` once,
    /// then the iteration ends.
    pub fn iter<T: DeserializeOwned>(&self) -> Iter<'_, T> {
        Iter { channel: self, done: false, _t: std::marker::PhantomData }
    }

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

    /// A writer that sends what is written as `bytes` items (`std::io::Write`), like
    /// execnet's `makefile("w")`. Closing (dropping) it does not close the channel.
    pub fn makefile_writer(&self) -> ChannelWriter {
        ChannelWriter { channel: self.clone() }
    }

    /// A reader over received `str`/`bytes` items (`std::io::Read`), like execnet's
    /// `makefile("r")`; it reads until the channel ends.
    pub fn makefile_reader(&self) -> ChannelReader {
        ChannelReader { channel: self.clone(), buf: Vec::new(), pos: 0 }
    }
}

fn wait<'a>(
    state: &ChannelState,
    mut inner: MutexGuard<'a, Inner>,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
) -> Result<MutexGuard<'a, Inner>> {
    let cond = &state.cond;
    inner.waiters += 1;
    state.waiting.fetch_add(1, Ordering::Relaxed);
    let _counted = Counted(&state.waiting);
    let res = match deadline {
        None => Ok(sync::wait(cond, inner)),
        Some(d) => {
            let now = Instant::now();
            if now >= d {
                Err(inner)
            } else {
                Ok(wait_timeout(cond, inner, d - now))
            }
        }
    };
    match res {
        Ok(mut g) => {
            g.waiters -= 1;
            Ok(g)
        }
        Err(mut g) => {
            g.waiters -= 1;
            Err(Error::Timeout(timeout.unwrap_or_default()))
        }
    }
}

/// Takes one off a count when dropped.
struct Counted<'a>(&'a AtomicUsize);

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn end_error(id: i32, reason: &EndReason, receiving: bool) -> Error {
    match reason {
        EndReason::RemoteError(tb) => Error::Remote { traceback: tb.clone() },
        EndReason::Lost(info) => Error::GatewayLost(info.clone()),
        EndReason::LocalError(msg) => Error::data_format(msg.clone(), None),
        _ if receiving => Error::EndOfChannel { id },
        _ => Error::ChannelClosed { id },
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

/// `std::io::Write` over a channel; see [`Channel::makefile_writer`].
pub struct ChannelWriter {
    channel: Channel,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.channel
            .send(serde_bytes::Bytes::new(buf))
            .map_err(std::io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `std::io::Read` over a channel; see [`Channel::makefile_reader`].
pub struct ChannelReader {
    channel: Channel,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    /// Makes sure unread bytes are buffered; false at the end of the channel.
    fn refill(&mut self) -> std::io::Result<bool> {
        while self.pos >= self.buf.len() {
            match self.channel.receive::<crate::Value>() {
                Ok(crate::Value::Bytes(b)) => self.buf = b,
                Ok(crate::Value::Str(s)) => self.buf = s.into_bytes(),
                Ok(other) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "channel {} sent {other} where str or bytes was expected",
                            self.channel.id()
                        ),
                    ))
                }
                Err(Error::EndOfChannel { .. }) => return Ok(false),
                Err(e) => return Err(std::io::Error::other(e)),
            }
            self.pos = 0;
        }
        Ok(true)
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if !self.refill()? {
            return Ok(0);
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

impl std::io::BufRead for ChannelReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if !self.refill()? {
            return Ok(&[]);
        }
        Ok(&self.buf[self.pos..])
    }
    fn consume(&mut self, amt: usize) {
        self.pos = (self.pos + amt).min(self.buf.len());
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

#[cfg(test)]
mod budget_tests {
    use super::QueueBudget;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    #[test]
    fn reader_waits_above_the_limit_until_items_are_taken_or_released() {
        let b = Arc::new(QueueBudget::new(100));
        b.add(150);
        let b2 = b.clone();
        let t = std::thread::spawn(move || {
            let t0 = Instant::now();
            b2.wait_for_room();
            t0.elapsed()
        });
        std::thread::sleep(Duration::from_millis(100));
        b.sub(60); // 90: below the limit
        assert!(t.join().unwrap() >= Duration::from_millis(90));
        b.add(500);
        b.release();
        b.wait_for_room(); // released: no waiting
        assert_eq!(b.used(), 590);
        let unlimited = QueueBudget::new(0);
        unlimited.add(1 << 40);
        unlimited.wait_for_room();
    }
}
