//! The reading half of a gateway: the reader thread, which writes the bootstrap line,
//! waits for the ready byte, then reads frames and dispatches them (see dispatch.rs),
//! and the receivers that read frames for themselves.
//!
//! The reader thread reads and dispatches every frame, except while a thread blocked in
//! `Channel::receive` reads for itself: with nothing queued for it and the frame stream
//! free, such a thread polls the stream and reads the next frame itself. A frame for
//! its own channel it handles at once (sparing the hand-off from the reader thread, a
//! thread wake-up per round trip); anything else it hands to the reader thread, in
//! order, and goes back to waiting. After giving an item to the only waiting receiver,
//! and while receivers read for themselves, the reader thread keeps off the stream for
//! SELF_READ_DEFER at a time, so that the receiver finds it free when it comes back for
//! its next item.

use std::collections::VecDeque;
use std::io::{self, BufReader, Read};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::channel::ChannelState;
use super::GatewayInner;
use crate::sync::{lock, wait_timeout};
use crate::sys;
use crate::wire::frame::{self, Code};
use crate::worker::READY_BYTE;

/// While receivers read their own frames, the reader thread checks back this often.
const SELF_READ_DEFER: Duration = Duration::from_millis(2);

/// How long a receiver reading for itself waits in poll() before it checks whether
/// reading has ended (the gateway lost or exited).
const SELF_READ_POLL_MS: i32 = 50;

/// How long a receiver reading for itself spins before it sleeps, when answers come
/// that quickly.
const SELF_READ_SPIN: Duration = Duration::from_micros(50);

type FrameStream = BufReader<Box<dyn Read + Send>>;

/// A frame read from the worker, or why reading ends.
enum Incoming {
    Frame(frame::Header, Vec<u8>),
    End(String),
}

/// Between the reader thread and receivers that read for themselves.
#[derive(Default)]
struct ReadCtl {
    /// What receivers read that was not theirs, for the reader thread, in order.
    handed: VecDeque<Incoming>,
    /// When a receiver last read a frame for itself (or the reader thread expects one
    /// to): until [`SELF_READ_DEFER`] after that, the reader thread leaves reading to it.
    self_read_at: Option<Instant>,
}

pub(super) struct Reader {
    /// The largest frame payload accepted.
    max_message: usize,
    /// The frame stream once the worker is ready; whoever holds the lock reads (see
    /// [`GatewayInner::read_for`]).
    side: Mutex<Option<FrameStream>>,
    /// The file descriptor under `side`, when receivers may read it themselves.
    fd: Option<RawFd>,
    ctl: Mutex<ReadCtl>,
    cv: Condvar,
    /// Set once the reader thread has its reason to stop: no thread reads any more.
    ended: AtomicBool,
    /// The last frame a receiver read for itself came within SELF_READ_SPIN.
    quick_answers: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Reader {
    pub(super) fn new(fd: Option<RawFd>, max_message: usize) -> Reader {
        Reader {
            max_message,
            side: Mutex::new(None),
            fd,
            ctl: Mutex::new(ReadCtl::default()),
            cv: Condvar::new(),
            ended: AtomicBool::new(false),
            quick_answers: AtomicBool::new(true),
            thread: Mutex::new(None),
        }
    }

    /// Starts the reader thread of `inner`, which writes `bootstrap` first.
    pub(super) fn spawn(inner: &Arc<GatewayInner>, stream: Box<dyn Read + Send>, bootstrap: Vec<u8>) {
        let for_reader = inner.clone();
        let handle = thread::Builder::new()
            .name(format!("execnet-{}-reader", inner.id))
            .stack_size(4 << 20)
            .spawn(move || reader_main(for_reader, stream, bootstrap))
            .expect("spawning the gateway reader thread");
        *lock(&inner.reader.thread) = Some(handle);
    }

    /// Waits for the reader thread to end (unless this is the reader thread: dropped
    /// from a callback there, it ends on its own).
    pub(super) fn join(&self) {
        let handle = lock(&self.thread).take();
        if let Some(handle) = handle {
            if handle.thread().id() != thread::current().id() {
                let _ = handle.join();
            } else {
                *lock(&self.thread) = Some(handle);
            }
        }
    }

    /// The reader thread: waits while receivers read for themselves and handed nothing
    /// over. True when something was handed over.
    fn wait_turn(&self) -> bool {
        let mut ctl = lock(&self.ctl);
        loop {
            if !ctl.handed.is_empty() {
                return true;
            }
            match ctl.self_read_at {
                Some(at) if at.elapsed() < SELF_READ_DEFER => {
                    let left = SELF_READ_DEFER.saturating_sub(at.elapsed());
                    ctl = wait_timeout(&self.cv, ctl, left);
                }
                _ => return false,
            }
        }
    }

    /// The reader thread, holding the stream: the next frame handed over; else, unless
    /// a receiver read meanwhile (then None: look again), the next frame of the stream.
    fn next_incoming(&self, r: &mut FrameStream) -> Option<Incoming> {
        {
            let mut ctl = lock(&self.ctl);
            if let Some(incoming) = ctl.handed.pop_front() {
                return Some(incoming);
            }
            if ctl.self_read_at.is_some_and(|at| at.elapsed() < SELF_READ_DEFER) {
                return None;
            }
        }
        Some(self.read_incoming(r))
    }

    /// The reader thread: leave the stream to the receiver just served for a while.
    fn defer_to_receiver(&self) {
        lock(&self.ctl).self_read_at = Some(Instant::now());
    }

    /// Has the reader thread read again now.
    pub(super) fn wake(&self) {
        let mut ctl = lock(&self.ctl);
        if ctl.self_read_at.take().is_some() {
            self.cv.notify_all();
        }
    }

    fn read_incoming(&self, r: &mut FrameStream) -> Incoming {
        match frame::read_frame(r, self.max_message) {
            Ok(Some((header, payload))) => Incoming::Frame(header, payload),
            Ok(None) => Incoming::End("the worker closed the connection".into()),
            Err(e) => Incoming::End(format!("bad frame from the worker: {e}")),
        }
    }

    /// Hands `incoming` to the reader thread and has it read again.
    fn hand_over(&self, incoming: Incoming) {
        let mut ctl = lock(&self.ctl);
        ctl.handed.push_back(incoming);
        ctl.self_read_at = None;
        self.cv.notify_all();
    }
}

impl GatewayInner {
    /// Has the reader thread read again now (a receiver waits with a timeout, or handed
    /// it a frame).
    pub(crate) fn wake_reader(&self) {
        self.reader.wake();
    }

    /// A receiver on `state` with nothing queued reads the next frame itself, if the
    /// stream is free. True when it read a frame for its channel (now handled) or its
    /// channel no longer needs one; false when it cannot read: it should wait.
    pub(crate) fn read_for(&self, state: &ChannelState, deadline: Option<Instant>) -> bool {
        let reader = &self.reader;
        let Some(fd) = reader.fd else { return false };
        let Ok(mut side) = reader.side.try_lock() else { return false };
        let Some(r) = side.as_mut() else { return false };
        if state.would_not_wait() {
            return true;
        }
        if !lock(&reader.ctl).handed.is_empty() {
            return false; // the reader thread has frames to handle before any later one
        }
        // Answers that come quickly are caught by spinning briefly (a sleeping thread
        // takes several microseconds to wake), when the last answer came quickly too.
        if r.buffer().is_empty() && reader.quick_answers.load(Ordering::Relaxed) {
            let began = Instant::now();
            loop {
                if !matches!(sys::poll_readable(fd, 0), Ok(false)) || began.elapsed() >= SELF_READ_SPIN {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let waited_from = Instant::now();
        // Wait for data, checking now and then whether reading has ended, and giving up
        // at the deadline (the caller then times out).
        while r.buffer().is_empty() {
            if reader.ended.load(Ordering::Relaxed) {
                return false;
            }
            let poll_ms = match deadline {
                None => SELF_READ_POLL_MS,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => (left.as_micros().div_ceil(1000) as i32).min(SELF_READ_POLL_MS),
                    _ => return false,
                },
            };
            match sys::poll_readable(fd, poll_ms) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) if e.kind() != io::ErrorKind::Interrupted => return false,
                Err(_) => {}
            }
        }
        reader.quick_answers.store(waited_from.elapsed() < SELF_READ_SPIN, Ordering::Relaxed);
        let incoming = reader.read_incoming(r);
        let mine = match &incoming {
            Incoming::Frame(h, _) => {
                h.channel == state.id
                    && matches!(
                        h.code,
                        Code::ChannelData | Code::ChannelClose | Code::ChannelCloseError | Code::ChannelLastMessage
                    )
            }
            Incoming::End(_) => false,
        };
        if !mine {
            reader.hand_over(incoming);
            return false;
        }
        lock(&reader.ctl).self_read_at = Some(Instant::now());
        let Incoming::Frame(h, payload) = incoming else { unreachable!() };
        // Handled while the stream is held: no later frame can overtake it.
        if let Err(e) = self.dispatch(h.code, h.channel, payload) {
            reader.hand_over(Incoming::End(format!("bad {} frame from the worker: {e}", h.code.name())));
        }
        true
    }
}

fn reader_main(inner: Arc<GatewayInner>, stream: Box<dyn Read + Send>, bootstrap: Vec<u8>) {
    let reason = read_until_end(&inner, stream, bootstrap);
    tracing::debug!(gateway = %inner.id, "reader ends: {reason}");
    inner.connection_ended(reason);
}

/// Writes the bootstrap, waits for the ready byte, dispatches frames; returns why it ended.
fn read_until_end(inner: &GatewayInner, stream: Box<dyn Read + Send>, bootstrap: Vec<u8>) -> String {
    match inner.writer.send_bootstrap(&bootstrap) {
        Ok(true) => {}
        Ok(false) => return "the gateway was exited before it started".into(),
        Err(e) if !inner.process.has_child() => {
            // A connection (socket): the transport's error says what happened.
            return format!("could not send the worker source to {}: {e}", inner.program);
        }
        Err(e) => {
            return format!(
                "could not send the worker source to {} ({e}); it exited at once: is it a Python 3 interpreter?",
                inner.program
            )
        }
    }
    drop(bootstrap); // about 180 KB with the cached worker code: not kept for the gateway's life
    let mut r = BufReader::with_capacity(64 * 1024, stream);
    let mut first = [0u8; 1];
    match r.read(&mut first) {
        Ok(1) if first[0] == READY_BYTE => {}
        Ok(1) => {
            let more = String::from_utf8_lossy(r.buffer()).into_owned();
            return format!(
                "the worker answered {:?} instead of the ready byte '1': is {} a Python 3 interpreter?",
                format!("{}{}", first[0] as char, more.chars().take(200).collect::<String>()),
                inner.program
            );
        }
        Ok(_) => return format!("{} ended before the worker was ready", inner.program),
        Err(e) => return format!("reading from {} failed: {e}", inner.program),
    }
    if let Err(reason) = inner.writer.set_ready(&inner.started) {
        return reason;
    }
    let reader = &inner.reader;
    *lock(&reader.side) = Some(r);
    let reason = loop {
        if !reader.wait_turn() {
            // Backpressure: with too much queued, stop reading until the host catches up.
            inner.table.budget.wait_for_room();
        }
        // Frames are dispatched with the stream held, as receivers do with theirs: a
        // frame read later can never be handled first.
        let mut side = lock(&reader.side);
        let Some(incoming) = reader.next_incoming(side.as_mut().expect("the reader thread owns the stream")) else {
            continue;
        };
        let served_a_waiter = match incoming {
            Incoming::End(reason) => break reason,
            Incoming::Frame(header, payload) => match inner.dispatch(header.code, header.channel, payload) {
                Err(e) => break format!("bad {} frame from the worker: {e}", header.code.name()),
                Ok(served) => served,
            },
        };
        drop(side);
        // The receiver just served, if no other waits, will likely be back for its next
        // item soon and can read it itself.
        if served_a_waiter && reader.fd.is_some() && inner.table.waiting.load(Ordering::Relaxed) == 1 {
            reader.defer_to_receiver();
        }
    };
    reader.ended.store(true, Ordering::Relaxed);
    reason
}
