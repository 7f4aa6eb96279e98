//! Gateways: one connection to one worker process, carrying many channels.
//!
//! This file has the gateway's handle types and its public methods; the parts of a
//! gateway live in files of their own: start.rs (making one from a spec), writer.rs
//! (writing frames), reader.rs (the reader thread and receivers that read for
//! themselves), dispatch.rs (handling each frame), table.rs (the channel table),
//! exit.rs (ending it and its process, the loss report), stderr.rs (passing the
//! worker's stderr on and keeping its tail for error reports) and remote_socket.rs
//! (socket gateways to a server started inside another gateway). What users hold and
//! call has its own modules: channel/ (channels, their queues, callbacks and file
//! adapters), source.rs (the code `remote_exec` sends), output.rs (capturing the
//! worker's stdout and stderr) and imports/ (import forwarding).

pub mod channel;
mod dispatch;
mod exit;
pub mod imports;
pub mod output;
mod reader;
mod remote_socket;
pub mod source;
mod start;
mod stderr;
mod table;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use serde::Deserialize;

pub(crate) use self::exit::terminate_all;
pub use self::source::Source;
use self::stderr::StderrTail;
use crate::error::{Error, LostInfo, Result};
use crate::sync::{lock, Flag};
#[cfg(test)]
use crate::transport::Connection;
use crate::transport::ExplainLoss;
use crate::wire::frame::Code;
use crate::wire::ser;
use crate::xspec::XSpec;
use crate::Channel;

/// How long `exit()` and dropping a gateway wait for the worker to end before killing it.
pub const DEFAULT_EXIT_TIMEOUT: Duration = Duration::from_secs(3);

/// How many bytes of received items a gateway queues, over all its channels, before its
/// reader stops reading from the worker until the host receives some (spec key
/// `queue_limit=BYTES`, `0` for no limit). One message may overshoot it: the check
/// happens before each frame is read.
pub const DEFAULT_QUEUE_LIMIT: usize = 64 << 20;

fn registry() -> MutexGuard<'static, HashMap<u64, Weak<GatewayHandle>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<u64, Weak<GatewayHandle>>>> = OnceLock::new();
    lock(REGISTRY.get_or_init(|| {
        crate::wire::set_channel_resolver(lookup_channel);
        Mutex::default()
    }))
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
        reader: Box::new(std::io::empty()),
        reader_fd: None,
        writer: Box::new(std::io::sink()),
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
///
/// ```
/// # fn main() -> execnet::Result<()> {
/// let gw = execnet::makegateway("popen//id=local")?;
/// assert_eq!(gw.id(), "local");
/// let info = gw.rinfo()?; // the worker's interpreter, platform, cwd and pid
/// let ch = gw.remote_exec("import os; channel.send(os.getpid())")?;
/// assert_eq!(ch.receive::<u32>()?, info.pid);
/// gw.exit()?;
/// assert!(gw.remote_exec("pass").is_err()); // an exited gateway refuses new work
/// # Ok(()) }
/// ```
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
    pub fn remote_exec_with_callback<T, F>(
        &self,
        source: impl Into<Source>,
        callback: F,
        endmarker: T,
    ) -> Result<Channel>
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
        Ok(self.inner.table.open(self))
    }

    /// The handle for channel `id`, creating its state when it is new.
    fn channel_for_id(&self, id: i32) -> Channel {
        self.inner.table.channel_for_id(self, id, || self.inner.lost.get().is_some())
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
        if self.inner.writer.is_ready() {
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
        self.inner.process.exiting.load(Ordering::Relaxed) || self.inner.lost.get().is_some()
    }

    /// Bytes of received items waiting in this gateway's channel queues (see
    /// [`DEFAULT_QUEUE_LIMIT`] for the limit that makes the reader pause).
    pub fn queued_bytes(&self) -> usize {
        self.inner.table.budget.used()
    }

    /// Why the gateway was lost, once it is.
    pub fn lost_info(&self) -> Option<LostInfo> {
        self.inner.lost.get().cloned()
    }

    /// The worker process id on this machine (popen and ssh client processes).
    pub fn local_pid(&self) -> Option<u32> {
        self.inner.process.pid()
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
}

pub(crate) struct GatewayInner {
    pub(crate) uid: u64,
    id: String,
    spec: XSpec,
    /// What to call the worker's program in error messages.
    program: String,
    explain_loss: Option<ExplainLoss>,
    writer: writer::Writer,
    reader: reader::Reader,
    table: table::ChannelTable,
    process: exit::Process,
    lost: OnceLock<LostInfo>,
    stderr_tail: Arc<StderrTail>,
    /// Set once the connection is gone and `lost` says why.
    done: Flag,
    /// Set when the worker sent its ready byte, or the connection ended before it did.
    started: Flag,
}

impl GatewayInner {
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
    pub(crate) fn forget_if_done(&self, state: &Arc<channel::ChannelState>) {
        self.table.forget_if_done(state);
    }
}
