//! How a gateway ends: the local process behind it (reaping, its exit status), the
//! three steps of an exit (GATEWAY_TERMINATE and end of input; SIGINT to a local worker
//! still running; kill at the deadline), written once for one gateway and for many
//! ([`terminate_all`]), and the loss report once the connection is gone.

use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use super::channel::EndReason;
use super::{Gateway, GatewayInner};
use crate::error::{ExitStatus, LostInfo};
use crate::sync::lock;
use crate::sys;

/// The local process serving a gateway (popen, ssh, exec), if any, and how it ends.
pub(super) struct Process {
    child: Mutex<Option<Child>>,
    exit_status: OnceLock<Option<ExitStatus>>,
    /// Forces a connection without a local child closed (see `Connection::force_close`).
    force_close: Option<Box<dyn Fn() + Send + Sync>>,
    /// A process of this host that SIGINT reaches: a popen worker (an ssh gateway's
    /// process is the ssh client, a via gateway has none).
    interruptible: bool,
    /// `exit`/`terminate` (or a drop) began ending the gateway.
    pub(super) exiting: AtomicBool,
    /// The worker sent GATEWAY_TERMINATE.
    pub(super) peer_terminated: AtomicBool,
}

impl Process {
    pub(super) fn new(
        child: Option<Child>,
        force_close: Option<Box<dyn Fn() + Send + Sync>>,
        interruptible: bool,
    ) -> Self {
        Process {
            child: Mutex::new(child),
            exit_status: OnceLock::new(),
            force_close,
            interruptible,
            exiting: AtomicBool::new(false),
            peer_terminated: AtomicBool::new(false),
        }
    }

    pub(super) fn has_child(&self) -> bool {
        lock(&self.child).is_some()
    }

    pub(super) fn pid(&self) -> Option<u32> {
        lock(&self.child).as_ref().map(Child::id)
    }

    fn record(&self, status: std::process::ExitStatus) {
        let _ = self.exit_status.set(describe_status(status));
    }

    /// Reaps the process if it has exited; true when it has (or there is none).
    fn poll(&self) -> bool {
        let mut child = lock(&self.child);
        let Some(c) = child.as_mut() else { return true };
        match c.try_wait() {
            Ok(Some(status)) => {
                self.record(status);
                true
            }
            Ok(None) => false,
            Err(_) => true,
        }
    }

    /// Waits for the process to exit, until `deadline`, and reaps it; true when it has
    /// exited (or there is none). Sleeps in poll() on a pidfd, which wakes the moment the
    /// process ends; where pidfds are missing (Linux before 5.3), polls with a growing
    /// pause instead.
    fn wait_until(&self, deadline: Instant) -> bool {
        use std::os::fd::AsRawFd;
        let pidfd = {
            let child = lock(&self.child);
            let Some(c) = child.as_ref() else { return true };
            // Opened under the lock: the process cannot be reaped (and its pid reused)
            // before the pidfd refers to it.
            sys::pidfd_open(c.id())
        };
        let mut pause = Duration::from_micros(50);
        loop {
            if self.poll() {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            match &pidfd {
                Some(fd) => {
                    let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                    let _ = sys::poll_readable(fd.as_raw_fd(), ms);
                }
                None => {
                    thread::sleep(pause.min(left));
                    pause = (pause * 2).min(Duration::from_millis(2));
                }
            }
        }
    }

    fn kill(&self) {
        if let Some(c) = lock(&self.child).as_mut() {
            let _ = c.kill();
        }
    }

    /// SIGINT to the process while it runs.
    fn interrupt(&self, gateway: &str) {
        let mut child = lock(&self.child);
        if let Some(c) = child.as_mut() {
            // Only while it is not reaped: until then the pid cannot belong to another
            // process (reaping takes this lock).
            match c.try_wait() {
                Ok(Some(status)) => self.record(status),
                Ok(None) => {
                    tracing::debug!(gateway = %gateway, "worker still running: SIGINT");
                    let _ = sys::kill(c.id() as i32, libc::SIGINT);
                }
                Err(_) => {}
            }
        }
    }

    fn kill_and_reap(&self) {
        if let Some(force_close) = &self.force_close {
            force_close();
        }
        let mut child = lock(&self.child);
        if let Some(c) = child.as_mut() {
            let _ = c.kill();
            if let Ok(status) = c.wait() {
                self.record(status);
            }
        }
    }
}

/// Ends `gateways` together, each step for all at once: GATEWAY_TERMINATE and end of
/// input; SIGINT to local workers still running after half of `timeout`; SIGKILL at
/// `timeout`; then reaping. ([`crate::Group::terminate`], the default group at exit.)
pub(crate) fn terminate_all(gateways: &[Gateway], timeout: Duration) {
    end_together(gateways.iter().map(|gw| &*gw.inner), timeout);
}

/// The steps of [`terminate_all`], on the gateways' insides.
fn end_together<'a>(gateways: impl Iterator<Item = &'a GatewayInner> + Clone, timeout: Duration) {
    let start = Instant::now();
    for gw in gateways.clone() {
        gw.begin_exit();
    }
    for gw in gateways.clone() {
        gw.interrupt_exit(start + timeout / 2);
    }
    for gw in gateways {
        gw.finish_exit(start + timeout);
    }
}

impl GatewayInner {
    /// Ends this gateway (see [`terminate_all`]).
    pub(crate) fn shutdown(&self, timeout: Duration) {
        end_together(std::iter::once(self), timeout);
    }

    /// Step 1: GATEWAY_TERMINATE and end of input, without waiting.
    fn begin_exit(&self) {
        if self.process.exiting.swap(true, Ordering::SeqCst) {
            return;
        }
        // The worker's end must be read at once, not after a deferral to receivers.
        self.wake_reader();
        // The reader must drain the worker's output so that the worker can end.
        self.table.budget.release();
        if !self.writer.close_for_exit() {
            // The interpreter never got its program: nothing to end gracefully, and
            // an empty line would only make it print a SyntaxError.
            self.process.kill();
        }
    }

    /// Waits until `until` for the reader to end and the process to exit; true when
    /// both happened. A local worker is polled until `until`, others once.
    fn ended_by(&self, until: Instant) -> bool {
        if !self.done.wait_until(until) {
            return false;
        }
        let mut pause = Duration::from_millis(1);
        loop {
            if self.process.poll() {
                return true;
            }
            let now = Instant::now();
            if !self.process.interruptible || now >= until {
                return false;
            }
            thread::sleep(pause.min(until - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        }
    }

    /// Step 2: a local worker still running at `at` gets SIGINT, so that the code it
    /// runs sees KeyboardInterrupt, its `finally` blocks run and the worker exits
    /// cleanly before the kill at the deadline.
    fn interrupt_exit(&self, at: Instant) {
        if !self.process.interruptible || self.ended_by(at) {
            return;
        }
        self.process.interrupt(&self.id);
    }

    /// Step 3: a process still there at `deadline` is killed; then reaped.
    fn finish_exit(&self, deadline: Instant) {
        if !self.ended_by(deadline) {
            self.process.kill_and_reap();
        }
        self.reader.join();
    }

    /// The reader has stopped: record why, wake every channel.
    pub(super) fn connection_ended(&self, reason: String) {
        self.writer.close(); // end-of-input tells the worker to exit
                             // The process usually exits right after closing its output; wait a little for
                             // its status and for the rest of its stderr.
        if self.process.exit_status.get().is_none() {
            self.process.wait_until(Instant::now() + Duration::from_millis(1000));
        }
        self.stderr_tail.done.wait_until(Instant::now() + Duration::from_millis(300));
        let exiting = self.process.exiting.load(Ordering::Relaxed);
        let terminated = self.process.peer_terminated.load(Ordering::Relaxed);
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
            exit_status: self.process.exit_status.get().copied().flatten(),
            stderr_tail: self.stderr_tail.text(),
        };
        if let (Some(explain), false, false) = (&self.explain_loss, exiting, terminated) {
            explain(&mut info, self.writer.is_ready());
        }
        let _ = self.lost.set(info.clone());
        for state in self.table.drain() {
            state.end(EndReason::Lost(info.clone()));
        }
        self.done.set();
        self.started.set();
    }
}

/// The status of a reaped process; `None` for one that neither exited nor was killed
/// (a stopped process, which `wait` does not report).
fn describe_status(status: std::process::ExitStatus) -> Option<ExitStatus> {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Some(ExitStatus::Code(code)),
        (None, Some(sig)) => Some(ExitStatus::Signal(sig)),
        (None, None) => None,
    }
}
