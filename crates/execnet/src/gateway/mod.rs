//! Gateways: one connection to one worker process, carrying many channels.
//!
//! Each gateway has a reader thread that writes the bootstrap line, waits for the ready
//! byte, then reads frames and hands them to channels (queue or callback); a thread
//! blocked in `receive` may read the frames itself while the stream is free (see
//! `GatewayInner::read_for`), which spares a thread hand-off per item. Writes happen
//! on the caller's thread, one `write` per frame, under a lock; frames sent before the
//! worker is ready are kept and written as soon as it is, so `makegateway` returns
//! without waiting for the interpreter to start. A second thread passes the worker's
//! stderr on to ours and keeps its tail for error reports.

pub mod channel;
pub mod imports;
pub mod output;
pub mod source;
mod stderr;

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader, Read, Write};
use std::process::Child;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde::Deserialize;

use self::channel::{ChannelHandle, ChannelState, EndReason, QueueBudget};
use self::stderr::StderrTail;
pub use self::source::Source;
use crate::error::{Error, LostInfo, Result};
use crate::transport::{self, Connection, ExplainLoss};
use crate::wire::frame::{self, Code};
use crate::wire::{self, ser};
use crate::worker::{WorkerConfig, WorkerSource, READY_BYTE};
use crate::xspec::XSpec;
use crate::Channel;

/// How long `exit()` and dropping a gateway wait for the worker to end before killing it.
pub const DEFAULT_EXIT_TIMEOUT: Duration = Duration::from_secs(3);

/// How many bytes of received items a gateway queues, over all its channels, before its
/// reader stops reading from the worker until the host receives some (spec key
/// `queue_limit=BYTES`, `0` for no limit). One message may overshoot it: the check
/// happens before each frame is read.
pub const DEFAULT_QUEUE_LIMIT: usize = 64 << 20;

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

fn registry() -> MutexGuard<'static, HashMap<u64, Weak<GatewayHandle>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u64, Weak<GatewayHandle>>>> = OnceLock::new();
    lock(REGISTRY.get_or_init(Default::default))
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Turns `(gateway uid, channel id)` from received data into a live channel handle.
pub(crate) fn lookup_channel(uid: u64, id: i32) -> Result<Channel> {
    let handle = registry().get(&uid).and_then(Weak::upgrade);
    match handle {
        Some(handle) => Ok(Gateway { inner: handle.inner.clone(), handle }.channel_for_id(id)),
        None => Err(Error::data_format(format!("channel {id} arrived for a gateway that no longer exists"), None)),
    }
}

/// A channel of a gateway with no worker behind it, for unit tests of the wire format.
#[cfg(test)]
pub(crate) fn detached_channel(id: i32) -> Channel {
    let conn = Connection {
        reader: Box::new(io::empty()),
        reader_fd: None,
        writer: Box::new(io::sink()),
        child: None,
        stderr: None,
        stderr_fd: None,
        bootstrap: Vec::new(),
        program: "nothing".into(),
        force_close: None,
        explain_loss: None,
    };
    let spec: XSpec = "popen".parse().expect("spec");
    Gateway::from_connection(spec, "detached", conn).channel_for_id(id)
}

/// Information about the remote interpreter, from [`Gateway::rinfo`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct RInfo {
    /// `sys.executable`.
    pub executable: String,
    /// `sys.version_info[:5]`, such as `(3, 11, 7, "final", 0)`.
    pub version_info: (u32, u32, u32, String, u32),
    /// `sys.platform`.
    pub platform: String,
    /// `os.getcwd()`.
    pub cwd: String,
    /// `os.getpid()`.
    pub pid: u32,
}

/// The worker's answer to a STATUS request, from [`Gateway::remote_status`].
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct RemoteStatus {
    /// Channels open in the worker.
    pub numchannels: u64,
    /// Executions running (or queued, with main_thread_only) in the worker.
    pub numexecuting: u64,
    /// The worker's execution model.
    pub execmodel: String,
}

const RINFO_SOURCE: &str = "\
import sys, os
channel.send(dict(
    executable=sys.executable,
    version_info=tuple(sys.version_info[:5]),
    platform=sys.platform,
    cwd=os.getcwd(),
    pid=os.getpid(),
))
";

/// A connection to one worker process. Cheap to clone; all clones are the same gateway.
///
/// When the last `Gateway` handle and the last [`Channel`] of it are dropped, the worker
/// is asked to exit and its process is reaped (killed after [`DEFAULT_EXIT_TIMEOUT`]).
#[derive(Clone)]
pub struct Gateway {
    pub(crate) inner: Arc<GatewayInner>,
    handle: Arc<GatewayHandle>,
}

/// The part whose drop shuts the gateway down.
struct GatewayHandle {
    inner: Arc<GatewayInner>,
}

impl Drop for GatewayHandle {
    fn drop(&mut self) {
        registry().remove(&self.inner.uid);
        self.inner.shutdown(DEFAULT_EXIT_TIMEOUT);
    }
}

/// A gateway reference that does not keep the gateway alive (used by the default group).
#[derive(Clone)]
pub struct WeakGateway(Weak<GatewayHandle>);

impl WeakGateway {
    /// The gateway, if a handle to it still exists.
    pub fn upgrade(&self) -> Option<Gateway> {
        self.0.upgrade().map(|handle| Gateway { inner: handle.inner.clone(), handle })
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<Gateway id={:?} spec={:?}>", self.inner.id, self.inner.spec.as_str())
    }
}

impl PartialEq for Gateway {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}
impl Eq for Gateway {}

impl Gateway {
    /// Starts a gateway for `spec` with the given id (see [`crate::makegateway`] for the
    /// usual entry point, which also picks an id). A spec with `via=` needs the gateway
    /// it names: use [`Gateway::start_via`] or a [`crate::Group`].
    pub fn start(spec: &XSpec, id: &str) -> Result<Gateway> {
        if let Some(via) = spec.via() {
            return Err(spec
                .invalid(format!("via={via} names a gateway of a group: make this gateway with Group::makegateway")));
        }
        Gateway::start_inner(spec, id, None, &WorkerSource::Builtin)
    }

    /// Starts a gateway for `spec` whose connection is relayed by the worker of `via`.
    pub fn start_via(spec: &XSpec, id: &str, via: &Gateway) -> Result<Gateway> {
        Gateway::start_inner(spec, id, Some(via), &WorkerSource::Builtin)
    }

    /// Like [`Gateway::start`] (and [`Gateway::start_via`] when `via` is given), shipping
    /// `worker` instead of our own worker: for example execnet's, to check this host
    /// against the reference implementation.
    pub fn start_with_worker(spec: &XSpec, id: &str, via: Option<&Gateway>, worker: &WorkerSource) -> Result<Gateway> {
        Gateway::start_inner(spec, id, via, worker)
    }

    fn start_inner(spec: &XSpec, id: &str, via: Option<&Gateway>, worker: &WorkerSource) -> Result<Gateway> {
        let kind = spec.transport()?;
        spec.queue_limit()?;
        spec.max_message()?;
        let config = WorkerConfig {
            id: id.to_string(),
            execmodel: spec.execmodel()?,
            chdir: spec.chdir().map(str::to_string),
            nice: spec.nice()?,
            env: spec.env().clone(),
            worker: worker.clone(),
        };
        let conn = match (via, kind) {
            (Some(via), _) => transport::via::connect(via, spec, &config)?,
            (None, "popen") => transport::popen::spawn(spec, &config)?,
            (None, "ssh") => transport::ssh::spawn(spec, &config)?,
            (None, "socket") => transport::socket::connect(spec, &config)?,
            (None, "exec" | "docker" | "podman" | "kubectl" | "sudo") => transport::exec::spawn(spec, &config)?,
            (None, other) => return Err(spec.invalid(format!("unknown transport {other}"))),
        };
        let gw = Gateway::from_connection(spec.with_id(id), id, conn);
        if let Some(forwarding) = imports::ImportForwarding::from_spec(spec)? {
            gw.forward_imports(forwarding)?;
        }
        Ok(gw)
    }

    /// A popen gateway on this machine with the default interpreter.
    pub fn popen() -> Result<Gateway> {
        crate::makegateway("popen")
    }

    fn from_connection(spec: XSpec, id: &str, conn: Connection) -> Gateway {
        let Connection { reader, reader_fd, writer, child, stderr, stderr_fd, bootstrap, program, force_close, explain_loss } =
            conn;
        let max_message = spec.max_message().ok().flatten().unwrap_or(frame::DEFAULT_MAX_MESSAGE);
        let queue_limit = spec.queue_limit().ok().flatten().unwrap_or(DEFAULT_QUEUE_LIMIT);
        let inner = Arc::new(GatewayInner {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            id: id.to_string(),
            spec,
            program,
            force_close,
            explain_loss,
            writer: Mutex::new(Writer {
                out: writer,
                started: false,
                ready: false,
                pending: Vec::new(),
                closed: false,
            }),
            table: Mutex::new(Table { map: HashMap::new(), next_id: 1, max_peer_id: 0, peer_closed: VecDeque::new() }),
            lost: OnceLock::new(),
            exiting: AtomicBool::new(false),
            peer_terminated: AtomicBool::new(false),
            child: Mutex::new(child),
            exit_status: OnceLock::new(),
            stderr_tail: Arc::new(StderrTail::default()),
            done: Flag::default(),
            started: Flag::default(),
            reader_thread: Mutex::new(None),
            max_message,
            budget: Arc::new(QueueBudget::new(queue_limit)),
            waiting: Arc::new(AtomicUsize::new(0)),
            read_side: Mutex::new(None),
            reader_fd,
            reading: Mutex::new(ReadCtl::default()),
            reading_cv: Condvar::new(),
            reading_ended: AtomicBool::new(false),
            quick_answers: AtomicBool::new(true),
        });
        let reader = match stderr {
            Some(err) => stderr::forward(&inner.id, &inner.stderr_tail, err, stderr_fd, reader),
            None => {
                inner.stderr_tail.finish();
                reader
            }
        };
        let for_reader = inner.clone();
        let reader_thread = thread::Builder::new()
            .name(format!("execnet-{}-reader", inner.id))
            .stack_size(4 << 20)
            .spawn(move || reader_main(for_reader, reader, bootstrap))
            .expect("spawning the gateway reader thread");
        *lock(&inner.reader_thread) = Some(reader_thread);
        let handle = Arc::new(GatewayHandle { inner: inner.clone() });
        registry().insert(inner.uid, Arc::downgrade(&handle));
        Gateway { inner, handle }
    }

    /// The gateway id, such as `gw0`.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The spec this gateway was made from (with its `id=`).
    pub fn spec(&self) -> &XSpec {
        &self.inner.spec
    }

    /// A reference that does not keep the gateway alive.
    pub fn downgrade(&self) -> WeakGateway {
        WeakGateway(Arc::downgrade(&self.handle))
    }

    /// Runs `source` in the worker, bound to a new channel, and returns that channel at
    /// once (without waiting for the code to start). The code sees the other end as the
    /// global `channel`.
    pub fn remote_exec(&self, source: impl Into<Source>) -> Result<Channel> {
        let channel = self.newchannel()?;
        self.send_exec(&channel, source.into())?;
        Ok(channel)
    }

    /// Like [`Gateway::remote_exec`] with [`Channel::set_callback_with_endmarker`] in
    /// place before the code starts: every item the code sends goes to `callback` (on
    /// the reader thread, in the order of the worker's frames, also relative to the
    /// callbacks of other channels), then `endmarker` once the channel closes.
    pub fn remote_exec_with_callback<T, F>(&self, source: impl Into<Source>, callback: F, endmarker: T) -> Result<Channel>
    where
        T: serde::de::DeserializeOwned + Send + 'static,
        F: FnMut(T) + Send + 'static,
    {
        let channel = self.newchannel()?;
        channel.set_callback_with_endmarker(callback, endmarker)?;
        self.send_exec(&channel, source.into())?;
        Ok(channel)
    }

    fn send_exec(&self, channel: &Channel, source: Source) -> Result<()> {
        let mut payload = Vec::with_capacity(source.code.len() + 64);
        ser::to_payload(&source.payload_tuple(), &mut payload)?;
        self.inner.send_frame(Code::ChannelExec, channel.id(), &payload)
    }

    /// A new channel with no code attached; send it inside data to give it to remote code.
    pub fn newchannel(&self) -> Result<Channel> {
        if let Some(info) = self.inner.lost.get() {
            return Err(Error::GatewayLost(info.clone()));
        }
        let mut table = self.inner.table();
        let id = table.next_id;
        table.next_id += 2;
        let state = Arc::new(ChannelState::new(id, self.inner.budget.clone(), self.inner.waiting.clone()));
        let channel = Channel { h: Arc::new(ChannelHandle { state: state.clone(), gateway: self.clone() }) };
        table.map.insert(id, Entry { state, handle: Arc::downgrade(&channel.h), claimed: true });
        Ok(channel)
    }

    /// The handle for channel `id`, creating its state when it is new.
    fn channel_for_id(&self, id: i32) -> Channel {
        let mut table = self.inner.table();
        if let Some(entry) = table.map.get(&id) {
            if let Some(h) = entry.handle.upgrade() {
                return Channel { h };
            }
            let state = entry.state.clone();
            let channel = Channel { h: Arc::new(ChannelHandle { state, gateway: self.clone() }) };
            let entry = table.map.get_mut(&id).expect("entry");
            entry.handle = Arc::downgrade(&channel.h);
            entry.claimed = true;
            return channel;
        }
        let state = Arc::new(ChannelState::new(id, self.inner.budget.clone(), self.inner.waiting.clone()));
        let known_closed = id % 2 != 0 || id <= table.max_peer_id || self.inner.lost.get().is_some();
        if known_closed {
            // A channel that was already closed and forgotten here: hand out a closed one.
            state.end(EndReason::Closed);
            return Channel { h: Arc::new(ChannelHandle { state, gateway: self.clone() }) };
        }
        table.max_peer_id = id;
        let channel = Channel { h: Arc::new(ChannelHandle { state: state.clone(), gateway: self.clone() }) };
        table.map.insert(id, Entry { state, handle: Arc::downgrade(&channel.h), claimed: true });
        channel
    }

    /// Information about the remote interpreter (executable, version, platform, cwd, pid).
    pub fn rinfo(&self) -> Result<RInfo> {
        let ch = self.remote_exec(Source { code: RINFO_SOURCE.to_string(), ..Source::code("") })?;
        let info = ch.receive()?;
        ch.waitclose(None)?;
        Ok(info)
    }

    /// Asks the worker how many channels and executions it has (a STATUS message).
    pub fn remote_status(&self) -> Result<RemoteStatus> {
        let channel = self.newchannel()?;
        self.inner.send_frame(Code::Status, channel.id(), &[])?;
        channel.receive()
    }

    /// Waits until the worker has started and serves frames (it answered the bootstrap
    /// with its ready byte). `makegateway` does not wait for that: frames sent before are
    /// kept and written then. This is for callers that want a failure to start (ssh's
    /// "Could not resolve hostname", a missing interpreter on the far side) reported
    /// here rather than by the first use of the gateway, as execnet's makegateway does.
    ///
    /// Errors: [`Error::GatewayLost`] with the reason when the worker never became ready,
    /// [`Error::Timeout`] when it is not ready within `timeout`.
    pub fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout.min(Duration::from_secs(365 * 24 * 3600));
        if !self.inner.started.wait_until(deadline) {
            return Err(Error::Timeout(timeout));
        }
        if lock(&self.inner.writer).ready {
            Ok(())
        } else {
            Err(self.inner.lost_error("the worker never became ready"))
        }
    }

    /// True until the connection to the worker is gone.
    pub fn is_alive(&self) -> bool {
        self.inner.lost.get().is_none()
    }

    /// True once `exit`/`terminate` (or a drop) began ending the gateway, or it was lost.
    pub(crate) fn is_ending(&self) -> bool {
        self.inner.exiting.load(Ordering::Relaxed) || self.inner.lost.get().is_some()
    }

    /// Bytes of received items waiting in this gateway's channel queues (see
    /// [`DEFAULT_QUEUE_LIMIT`] for the limit that makes the reader pause).
    pub fn queued_bytes(&self) -> usize {
        self.inner.budget.used()
    }

    /// Why the gateway was lost, once it is.
    pub fn lost_info(&self) -> Option<LostInfo> {
        self.inner.lost.get().cloned()
    }

    /// The worker process id on this machine (popen and ssh client processes).
    pub fn local_pid(&self) -> Option<u32> {
        lock(&self.inner.child).as_ref().map(Child::id)
    }

    /// Asks the worker to exit, waits up to [`DEFAULT_EXIT_TIMEOUT`], then kills it. Open
    /// channels end with a gateway-lost error. Calling it again does nothing.
    pub fn exit(&self) -> Result<()> {
        self.inner.shutdown(DEFAULT_EXIT_TIMEOUT);
        Ok(())
    }

    /// Like [`Gateway::exit`] with your own time limit before the process is killed.
    ///
    /// The steps: GATEWAY_TERMINATE is sent and the worker's input closed (the worker
    /// ends its receivers with `EOFError`, gives running code a grace period and
    /// exits); a popen worker still running after half of `timeout` gets SIGINT (the
    /// code it runs sees `KeyboardInterrupt`, so `finally` blocks run); a process still
    /// there at `timeout` gets SIGKILL. It is reaped before this returns.
    pub fn terminate(&self, timeout: Duration) -> Result<()> {
        self.inner.shutdown(timeout);
        Ok(())
    }

    /// Sends GATEWAY_TERMINATE and closes the connection, without waiting (see
    /// [`crate::Group::terminate`], which ends many gateways in parallel this way).
    pub(crate) fn begin_exit(&self) {
        self.inner.begin_exit();
    }

    /// The interrupt step of an exit begun by `begin_exit`: waits until `at`, then
    /// sends SIGINT to a local worker that is still running.
    pub(crate) fn interrupt_exit(&self, at: Instant) {
        self.inner.interrupt_exit(at);
    }

    /// Waits for the end begun by `begin_exit` until `deadline`, then kills.
    pub(crate) fn finish_exit(&self, deadline: Instant) {
        self.inner.finish_exit(deadline);
    }
}

/// Where writes go. Until the worker is ready, frames wait in `pending`.
struct Writer {
    out: Box<dyn Write + Send>,
    /// The bootstrap line has been written.
    started: bool,
    ready: bool,
    pending: Vec<u8>,
    closed: bool,
}

struct Entry {
    state: Arc<ChannelState>,
    handle: Weak<ChannelHandle>,
    /// A handle was ever made. A channel the worker made may be closed by it before
    /// the item that carries it is received here; it must stay findable until then.
    claimed: bool,
}

struct Table {
    map: HashMap<i32, Entry>,
    /// The next id for a channel made here (odd).
    next_id: i32,
    /// The highest id of a channel the worker made (even); lower unknown ids are closed.
    max_peer_id: i32,
    /// The last channels the worker closed (at most PEER_CLOSED_MEMORY), to recognize
    /// data it sends on them afterwards as the protocol error it is.
    peer_closed: VecDeque<i32>,
}

/// How many channels closed by the worker a gateway remembers (see `Table::peer_closed`).
const PEER_CLOSED_MEMORY: usize = 1024;

/// A one-way flag that threads can wait on.
#[derive(Default)]
struct Flag {
    set: Mutex<bool>,
    cond: Condvar,
}

impl Flag {
    fn set(&self) {
        *lock(&self.set) = true;
        self.cond.notify_all();
    }
    /// Waits until the flag is set or the deadline passes; true when set.
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut set = lock(&self.set);
        while !*set {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            set = self.cond.wait_timeout(set, deadline - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        true
    }
}

pub(crate) struct GatewayInner {
    pub(crate) uid: u64,
    id: String,
    spec: XSpec,
    program: String,
    force_close: Option<Box<dyn Fn() + Send + Sync>>,
    explain_loss: Option<ExplainLoss>,
    writer: Mutex<Writer>,
    table: Mutex<Table>,
    lost: OnceLock<LostInfo>,
    exiting: AtomicBool,
    peer_terminated: AtomicBool,
    child: Mutex<Option<Child>>,
    exit_status: OnceLock<String>,
    stderr_tail: Arc<StderrTail>,
    done: Flag,
    /// Set when the worker sent its ready byte, or the connection ended before it did.
    started: Flag,
    reader_thread: Mutex<Option<JoinHandle<()>>>,
    max_message: usize,
    budget: Arc<QueueBudget>,
    /// Threads blocked in receive/waitclose on any channel of this gateway.
    waiting: Arc<AtomicUsize>,
    /// The frame stream once the worker is ready; whoever holds the lock reads (see
    /// [`GatewayInner::read_for`]).
    read_side: Mutex<Option<BufReader<Box<dyn Read + Send>>>>,
    /// The file descriptor under `read_side`, when receivers may read it themselves.
    reader_fd: Option<std::os::fd::RawFd>,
    reading: Mutex<ReadCtl>,
    reading_cv: Condvar,
    /// Set once the reader thread has its reason to stop: no thread reads any more.
    reading_ended: AtomicBool,
    /// The last frame a receiver read for itself came within SELF_READ_SPIN.
    quick_answers: AtomicBool,
}

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

/// While receivers read their own frames, the reader thread checks back this often.
const SELF_READ_DEFER: Duration = Duration::from_millis(2);

/// How long a receiver reading for itself waits in poll() before it checks whether
/// reading has ended (the gateway lost or exited).
const SELF_READ_POLL_MS: i32 = 50;

/// How long a receiver reading for itself spins before it sleeps, when answers come
/// that quickly.
const SELF_READ_SPIN: Duration = Duration::from_micros(50);

impl GatewayInner {
    fn table(&self) -> MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// Writes one frame.
    pub(crate) fn send_frame(&self, code: Code, channel: i32, payload: &[u8]) -> Result<()> {
        let mut buf = Vec::with_capacity(frame::HEADER_LEN + payload.len());
        frame::write_frame(&mut buf, code, channel, payload);
        self.write_raw(buf)
    }

    /// Writes already-encoded frames.
    pub(crate) fn write_raw(&self, bytes: Vec<u8>) -> Result<()> {
        let mut w = lock(&self.writer);
        if w.closed {
            drop(w);
            return Err(self.lost_error("the connection is closed"));
        }
        if !w.ready {
            if w.pending.is_empty() {
                w.pending = bytes;
            } else {
                w.pending.extend_from_slice(&bytes);
            }
            return Ok(());
        }
        if let Err(e) = w.out.write_all(&bytes).and_then(|_| w.out.flush()) {
            w.closed = true;
            drop(w);
            return Err(self.lost_error(&format!("writing to the worker failed: {e}")));
        }
        Ok(())
    }

    /// The gateway-lost error, waiting briefly for the reader to find out why.
    fn lost_error(&self, fallback: &str) -> Error {
        if self.lost.get().is_none() {
            self.done.wait_until(Instant::now() + Duration::from_secs(1));
        }
        match self.lost.get() {
            Some(info) => Error::GatewayLost(info.clone()),
            None => Error::GatewayLost(LostInfo {
                gateway: self.id.clone(),
                reason: fallback.to_string(),
                exit_status: None,
                stderr_tail: self.stderr_tail.text(),
            }),
        }
    }

    /// Removes a channel from the table once it is closed both ways.
    pub(crate) fn forget_if_done(&self, state: &Arc<ChannelState>) {
        let mut table = self.table();
        if let Some(entry) = table.map.get(&state.id) {
            if entry.claimed && Arc::ptr_eq(&entry.state, state) && state.is_done() {
                table.map.remove(&state.id);
            }
        }
    }

    fn set_ready(&self) -> std::result::Result<(), String> {
        let mut w = lock(&self.writer);
        w.ready = true;
        self.started.set();
        if w.closed || w.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut w.pending);
        w.out.write_all(&pending).and_then(|_| w.out.flush()).map_err(|e| format!("writing to the worker failed: {e}"))
    }

    /// Handles one frame from the worker. Returns true when it gave an item to a receiver
    /// that was waiting for it.
    fn dispatch(&self, code: Code, id: i32, payload: Vec<u8>) -> Result<bool> {
        if matches!(code, Code::ChannelData | Code::ChannelClose | Code::ChannelCloseError | Code::ChannelLastMessage) {
            self.check_channel_id(code, id)?;
        }
        match code {
            Code::ChannelData => match self.incoming_state(id) {
                Some(state) => {
                    if let Some(how) = state.peer_ended() {
                        return Err(Error::data_format(
                            format!("CHANNEL_DATA for channel {id} after the worker {how}"),
                            None,
                        ));
                    }
                    return Ok(state.deliver(payload));
                }
                None => {
                    if self.table().peer_closed.contains(&id) {
                        return Err(Error::data_format(
                            format!("CHANNEL_DATA for channel {id} after the worker closed it"),
                            None,
                        ));
                    }
                    tracing::debug!(gateway = %self.id, channel = id, "data for a closed channel dropped")
                }
            },
            Code::ChannelClose => self.peer_end(id, EndReason::Closed),
            Code::ChannelLastMessage => self.peer_end(id, EndReason::LastMessage),
            Code::ChannelCloseError => {
                let text: String = wire::de::from_payload(&payload)
                    .map_err(|e| Error::data_format(format!("CHANNEL_CLOSE_ERROR for channel {id}: {e}"), None))?;
                self.peer_end(id, EndReason::RemoteError(text))
            }
            Code::ChannelExec => {
                let mut text = Vec::new();
                ser::to_payload(
                    "execnet-rs hosts do not run code sent by the worker (remote_exec towards the host)",
                    &mut text,
                )?;
                self.send_frame(Code::ChannelCloseError, id, &text)?;
            }
            Code::Status => {
                let status = RemoteStatus {
                    numchannels: self.table().map.len() as u64,
                    numexecuting: 0,
                    execmodel: "thread".into(),
                };
                let mut data = Vec::new();
                ser::to_payload(&status, &mut data)?;
                self.send_frame(Code::ChannelData, id, &data)?;
                self.send_frame(Code::ChannelClose, id, &[])?;
            }
            Code::Reconfigure => {}
            Code::GatewayTerminate => self.peer_terminated.store(true, Ordering::Relaxed),
        }
        Ok(false)
    }

    // Reading. The reader thread reads and dispatches every frame, except while a
    // thread blocked in `Channel::receive` reads for itself: with nothing queued for it
    // and the frame stream free, such a thread polls the stream and reads the next frame
    // itself. A frame for its own channel it handles at once (sparing the hand-off from
    // the reader thread, a thread wake-up per round trip); anything else it hands to the
    // reader thread, in order, and goes back to waiting. After giving an item to the
    // only waiting receiver, and while receivers read for themselves, the reader thread
    // keeps off the stream for SELF_READ_DEFER at a time, so that the receiver finds it
    // free when it comes back for its next item.

    /// The reader thread: waits while receivers read for themselves and handed nothing
    /// over. True when something was handed over.
    fn wait_turn(&self) -> bool {
        let mut ctl = lock(&self.reading);
        loop {
            if !ctl.handed.is_empty() {
                return true;
            }
            match ctl.self_read_at {
                Some(at) if at.elapsed() < SELF_READ_DEFER => {
                    let left = SELF_READ_DEFER.saturating_sub(at.elapsed());
                    ctl = self.reading_cv.wait_timeout(ctl, left).unwrap_or_else(|e| e.into_inner()).0;
                }
                _ => return false,
            }
        }
    }

    /// The reader thread, holding the stream: the next frame handed over; else, unless
    /// a receiver read meanwhile (then None: look again), the next frame of the stream.
    fn next_incoming(&self, r: &mut BufReader<Box<dyn Read + Send>>) -> Option<Incoming> {
        {
            let mut ctl = lock(&self.reading);
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
        lock(&self.reading).self_read_at = Some(Instant::now());
    }

    /// Has the reader thread read again now (a receiver waits with a timeout, or handed
    /// it a frame).
    pub(crate) fn wake_reader(&self) {
        let mut ctl = lock(&self.reading);
        if ctl.self_read_at.take().is_some() {
            self.reading_cv.notify_all();
        }
    }

    fn read_incoming(&self, r: &mut BufReader<Box<dyn Read + Send>>) -> Incoming {
        match frame::read_frame(r, self.max_message) {
            Ok(Some((header, payload))) => Incoming::Frame(header, payload),
            Ok(None) => Incoming::End("the worker closed the connection".into()),
            Err(e) => Incoming::End(format!("bad frame from the worker: {e}")),
        }
    }

    /// A receiver on `state` with nothing queued reads the next frame itself, if the
    /// stream is free. True when it read a frame for its channel (now handled) or its
    /// channel no longer needs one; false when it cannot read: it should wait.
    pub(crate) fn read_for(&self, state: &ChannelState, deadline: Option<Instant>) -> bool {
        let Some(fd) = self.reader_fd else { return false };
        let Ok(mut side) = self.read_side.try_lock() else { return false };
        let Some(r) = side.as_mut() else { return false };
        if state.would_not_wait() {
            return true;
        }
        if !lock(&self.reading).handed.is_empty() {
            return false; // the reader thread has frames to handle before any later one
        }
        // Answers that come quickly are caught by spinning briefly (a sleeping thread
        // takes several microseconds to wake), when the last answer came quickly too.
        if r.buffer().is_empty() && self.quick_answers.load(Ordering::Relaxed) {
            let began = Instant::now();
            loop {
                let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
                if unsafe { libc::poll(&mut p, 1, 0) } != 0 || began.elapsed() >= SELF_READ_SPIN {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let waited_from = Instant::now();
        // Wait for data, checking now and then whether reading has ended, and giving up
        // at the deadline (the caller then times out).
        while r.buffer().is_empty() {
            if self.reading_ended.load(Ordering::Relaxed) {
                return false;
            }
            let poll_ms = match deadline {
                None => SELF_READ_POLL_MS,
                Some(d) => match d.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => {
                        (left.as_micros().div_ceil(1000) as i32).min(SELF_READ_POLL_MS)
                    }
                    _ => return false,
                },
            };
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            let n = unsafe { libc::poll(&mut p, 1, poll_ms) };
            if n > 0 {
                break;
            }
            if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                return false;
            }
        }
        self.quick_answers.store(waited_from.elapsed() < SELF_READ_SPIN, Ordering::Relaxed);
        let incoming = self.read_incoming(r);
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
        let mut ctl = lock(&self.reading);
        ctl.self_read_at = Some(Instant::now());
        if mine {
            drop(ctl);
            let Incoming::Frame(h, payload) = incoming else { unreachable!() };
            // Handled while the stream is held: no later frame can overtake it.
            if let Err(e) = self.dispatch(h.code, h.channel, payload) {
                let mut ctl = lock(&self.reading);
                ctl.handed.push_back(Incoming::End(format!("bad {} frame from the worker: {e}", h.code.name())));
                ctl.self_read_at = None;
                self.reading_cv.notify_all();
            }
            true
        } else {
            ctl.handed.push_back(incoming);
            ctl.self_read_at = None;
            self.reading_cv.notify_all();
            false
        }
    }

    /// A channel frame must name a channel that can exist: a positive id, and when odd
    /// (made here) one this side has handed out.
    fn check_channel_id(&self, code: Code, id: i32) -> Result<()> {
        if id <= 0 {
            return Err(Error::data_format(
                format!("{} for channel {id}: channel ids are positive", code.name()),
                None,
            ));
        }
        if id % 2 != 0 && id >= self.table().next_id {
            return Err(Error::data_format(
                format!("{} for channel {id}, which the host never opened", code.name()),
                None,
            ));
        }
        Ok(())
    }

    /// The state that incoming data for `id` goes to; None for channels closed here.
    fn incoming_state(&self, id: i32) -> Option<Arc<ChannelState>> {
        let mut table = self.table();
        if let Some(entry) = table.map.get(&id) {
            return Some(entry.state.clone());
        }
        // Odd ids are made here; an unknown one was closed and forgotten. Even ids come
        // from the worker in increasing order, so one we have passed was closed too.
        if id <= 0 || id % 2 != 0 || id <= table.max_peer_id {
            return None;
        }
        table.max_peer_id = id;
        let state = Arc::new(ChannelState::new(id, self.budget.clone(), self.waiting.clone()));
        table.map.insert(id, Entry { state: state.clone(), handle: Weak::new(), claimed: false });
        Some(state)
    }

    fn peer_end(&self, id: i32, reason: EndReason) {
        let state = {
            let mut table = self.table();
            if table.peer_closed.len() >= PEER_CLOSED_MEMORY {
                table.peer_closed.pop_front();
            }
            table.peer_closed.push_back(id);
            table.map.get(&id).map(|e| e.state.clone())
        };
        let Some(state) = state else {
            if let EndReason::RemoteError(tb) = reason {
                tracing::warn!(gateway = %self.id, channel = id, "remote error on a channel closed here:\n{tb}");
            }
            return;
        };
        state.end(reason);
        self.forget_if_done(&state);
    }

    /// The reader has stopped: record why, wake every channel.
    fn connection_ended(&self, reason: String) {
        {
            let mut w = lock(&self.writer);
            w.closed = true;
            w.out = Box::new(io::sink()); // end-of-input tells the worker to exit
        }
        // The process usually exits right after closing its output; wait a little for
        // its status and for the rest of its stderr.
        if self.exit_status.get().is_none() {
            self.wait_child_until(Instant::now() + Duration::from_millis(1000));
        }
        self.stderr_tail.done.wait_until(Instant::now() + Duration::from_millis(300));
        let exiting = self.exiting.load(Ordering::Relaxed);
        let terminated = self.peer_terminated.load(Ordering::Relaxed);
        let reason = if exiting {
            "the gateway was exited".to_string()
        } else if terminated {
            format!("the worker terminated the gateway ({reason})")
        } else {
            reason
        };
        let mut info = LostInfo {
            gateway: self.id.clone(),
            reason,
            exit_status: self.exit_status.get().cloned(),
            stderr_tail: self.stderr_tail.text(),
        };
        if let (Some(explain), false, false) = (&self.explain_loss, exiting, terminated) {
            let ready = lock(&self.writer).ready;
            explain(&mut info, ready);
        }
        let _ = self.lost.set(info.clone());
        let states: Vec<_> = self.table().map.drain().map(|(_, e)| e.state).collect();
        for state in states {
            state.end(EndReason::Lost(info.clone()));
        }
        self.done.set();
        self.started.set();
    }

    /// Waits for the process to exit, until `deadline`, and reaps it; true when it has
    /// exited (or there is none). Sleeps in poll() on a pidfd, which wakes the moment the
    /// process ends; where pidfds are missing (Linux before 5.3), polls with a growing
    /// pause instead.
    fn wait_child_until(&self, deadline: Instant) -> bool {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let pidfd = {
            let child = lock(&self.child);
            let Some(c) = child.as_ref() else { return true };
            // Opened under the lock: the process cannot be reaped (and its pid reused)
            // before the pidfd refers to it.
            let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, c.id() as libc::pid_t, 0) };
            (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
        };
        let mut pause = Duration::from_micros(50);
        loop {
            if self.poll_child() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match &pidfd {
                Some(fd) => {
                    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                    let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                    unsafe { libc::poll(&mut p, 1, ms) };
                }
                None => {
                    thread::sleep(pause.min(left));
                    pause = (pause * 2).min(Duration::from_millis(2));
                }
            }
        }
    }

    /// Reaps the process if it has exited; true when it has (or there is none).
    fn poll_child(&self) -> bool {
        let mut child = lock(&self.child);
        let Some(c) = child.as_mut() else { return true };
        match c.try_wait() {
            Ok(Some(status)) => {
                let _ = self.exit_status.set(describe_status(status));
                true
            }
            Ok(None) => false,
            Err(_) => true,
        }
    }

    fn begin_exit(&self) {
        if self.exiting.swap(true, Ordering::SeqCst) {
            return;
        }
        // The worker's end must be read at once, not after a deferral to receivers.
        self.wake_reader();
        // The reader must drain the worker's output so that the worker can end.
        self.budget.release();
        let mut w = lock(&self.writer);
        if !w.closed {
            if w.ready {
                let _ = w.out.write_all(&frame::encode_header(Code::GatewayTerminate, 0, 0));
                let _ = w.out.flush();
            }
            w.closed = true;
            w.pending = Vec::new();
            // Dropping the pipe gives the worker end-of-input, which also ends it.
            w.out = Box::new(io::sink());
        }
        if !w.started {
            // The interpreter never got its program: nothing to end gracefully, and
            // an empty line would only make it print a SyntaxError.
            drop(w);
            if let Some(c) = lock(&self.child).as_mut() {
                let _ = c.kill();
            }
        }
    }

    /// True when the worker is a process of this host that SIGINT reaches: a popen
    /// gateway (an ssh gateway's process is the ssh client, a via gateway has none).
    fn interruptible(&self) -> bool {
        self.spec.is_popen() && self.spec.via().is_none()
    }

    /// Waits until `until` for the reader to end and the process to exit; true when
    /// both happened. A local worker is polled until `until`, others once.
    fn ended_by(&self, until: Instant) -> bool {
        if !self.done.wait_until(until) {
            return false;
        }
        let mut pause = Duration::from_millis(1);
        loop {
            if self.poll_child() {
                return true;
            }
            let now = Instant::now();
            if !self.interruptible() || now >= until {
                return false;
            }
            thread::sleep(pause.min(until - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Step 2 of an exit (after `begin_exit`): a local worker still running at `at` gets
    /// SIGINT, so that the code it runs sees KeyboardInterrupt, its `finally` blocks
    /// run and the worker exits cleanly before the kill at the deadline.
    fn interrupt_exit(&self, at: Instant) {
        if !self.interruptible() || self.ended_by(at) {
            return;
        }
        let mut child = lock(&self.child);
        if let Some(c) = child.as_mut() {
            // Only while it is not reaped: until then the pid cannot belong to another
            // process (reaping takes this lock).
            match c.try_wait() {
                Ok(Some(status)) => {
                    let _ = self.exit_status.set(describe_status(status));
                }
                Ok(None) => {
                    tracing::debug!(gateway = %self.id, "worker still running: SIGINT");
                    // SAFETY: kill(2) on our own unreaped child; no memory is involved.
                    unsafe {
                        libc::kill(c.id() as libc::pid_t, libc::SIGINT);
                    }
                }
                Err(_) => {}
            }
        }
    }

    /// Step 3 of an exit: a process still there at `deadline` is killed; then reaped.
    fn finish_exit(&self, deadline: Instant) {
        if !self.ended_by(deadline) {
            if let Some(force_close) = &self.force_close {
                force_close();
            }
            let mut child = lock(&self.child);
            if let Some(c) = child.as_mut() {
                let _ = c.kill();
                let status = c.wait();
                if let Ok(status) = status {
                    let _ = self.exit_status.set(describe_status(status));
                }
            }
        }
        let handle = lock(&self.reader_thread).take();
        if let Some(handle) = handle {
            if handle.thread().id() != thread::current().id() {
                let _ = handle.join();
            } else {
                // Dropped from a callback on the reader thread itself: it ends on its own.
                *lock(&self.reader_thread) = Some(handle);
            }
        }
    }

    /// Ends the gateway: GATEWAY_TERMINATE and end of input at once, SIGINT to a local
    /// worker still running after half of `timeout`, SIGKILL at `timeout`, then reaping.
    pub(crate) fn shutdown(&self, timeout: Duration) {
        let start = Instant::now();
        self.begin_exit();
        self.interrupt_exit(start + timeout / 2);
        self.finish_exit(start + timeout);
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (None, None) => status.to_string(),
        (code, signal) => describe_exit(code, signal),
    }
}

/// "exit status N" or "signal N (NAME)", as [`LostInfo::exit_status`] says it (transports
/// that learn a remote process's end use it too; see `transport::exit_code_of`).
pub(crate) fn describe_exit(code: Option<i32>, signal: Option<i32>) -> String {
    match (code, signal) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("signal {sig} ({})", signal_name(sig)),
        (None, None) => "an unknown status".to_string(),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGINT => "SIGINT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

fn reader_main(inner: Arc<GatewayInner>, reader: Box<dyn Read + Send>, bootstrap: Vec<u8>) {
    let reason = read_until_end(&inner, reader, bootstrap);
    tracing::debug!(gateway = %inner.id, "reader ends: {reason}");
    inner.connection_ended(reason);
}

/// Writes the bootstrap, waits for the ready byte, dispatches frames; returns why it ended.
fn read_until_end(inner: &GatewayInner, reader: Box<dyn Read + Send>, bootstrap: Vec<u8>) -> String {
    {
        let mut w = lock(&inner.writer);
        if w.closed {
            return "the gateway was exited before it started".into();
        }
        w.started = true;
        if let Err(e) = w.out.write_all(&bootstrap).and_then(|_| w.out.flush()) {
            if lock(&inner.child).is_none() {
                // A connection (socket): the transport's error says what happened.
                return format!("could not send the worker source to {}: {e}", inner.program);
            }
            return format!(
                "could not send the worker source to {} ({e}); it exited at once: is it a Python 3 interpreter?",
                inner.program
            );
        }
    }
    drop(bootstrap); // about 180 KB with the cached worker code: not kept for the gateway's life
    let mut r = BufReader::with_capacity(64 * 1024, reader);
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
    if let Err(reason) = inner.set_ready() {
        return reason;
    }
    *lock(&inner.read_side) = Some(r);
    let reason = loop {
        if !inner.wait_turn() {
            // Backpressure: with too much queued, stop reading until the host catches up.
            inner.budget.wait_for_room();
        }
        // Frames are dispatched with the stream held, as receivers do with theirs: a
        // frame read later can never be handled first.
        let mut side = lock(&inner.read_side);
        let Some(incoming) = inner.next_incoming(side.as_mut().expect("the reader thread owns the stream")) else {
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
        if served_a_waiter && inner.reader_fd.is_some() && inner.waiting.load(Ordering::Relaxed) == 1 {
            inner.defer_to_receiver();
        }
    };
    inner.reading_ended.store(true, Ordering::Relaxed);
    reason
}
