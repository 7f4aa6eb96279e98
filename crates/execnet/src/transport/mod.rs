//! Transports: how the bytes of a gateway reach a worker.
//!
//! A transport starts (or connects to) a bare Python interpreter that runs the
//! bootstrap one-liner, and hands the gateway a `Connection`: a byte stream each way,
//! and the local process, if there is one, with its stderr.

pub mod exec;
pub mod popen;
pub mod socket;
pub mod ssh;
pub mod via;

use std::io::{Read, Write};
use std::process::Child;

use crate::error::LostInfo;

/// Explains a lost connection in the transport's own terms (see [`Connection::explain_loss`]).
pub(crate) type ExplainLoss = Box<dyn Fn(&mut LostInfo, bool) + Send + Sync>;

/// A started worker connection, before the bootstrap line is written.
pub(crate) struct Connection {
    /// Frames (and first the ready byte) from the worker.
    pub reader: Box<dyn Read + Send>,
    /// The file descriptor `reader` reads, when it reads one directly (a local pipe):
    /// threads waiting in receive() may then poll it and read frames themselves.
    pub reader_fd: Option<std::os::fd::RawFd>,
    /// Frames (and first the bootstrap line) to the worker.
    pub writer: Box<dyn Write + Send>,
    /// The local process serving the connection (popen, ssh), to reap and to kill.
    pub child: Option<Child>,
    /// The worker's stderr (a local process's pipe, or what a relay forwards), kept for
    /// error reports and passed on to ours.
    pub stderr: Option<Box<dyn Read + Send>>,
    /// The file descriptor `stderr` reads, when it is a local pipe: the frame reader then
    /// passes on what stderr holds before handing out the frames it read (see
    /// gateway/stderr.rs), so stderr output is not overtaken by later frames.
    pub stderr_fd: Option<std::os::fd::RawFd>,
    /// The line to write first (the worker source and its start call).
    pub bootstrap: Vec<u8>,
    /// What to call this program in error messages (for example the python path).
    pub program: String,
    /// Forces the connection closed when the worker does not end by itself within the
    /// exit timeout (socket: shut the socket down; via: close the relay channel). Child
    /// processes are killed in any case; this is for what is not a local child.
    pub force_close: Option<Box<dyn Fn() + Send + Sync>>,
    /// Called when the connection ends on its own (not by `exit`), with the gateway's
    /// LostInfo and whether the worker had become ready: the transport may fill in what
    /// only it knows (a relayed exit status) and say what happened in its own terms (ssh:
    /// unreachable host, refused key, no such python on the remote).
    pub explain_loss: Option<ExplainLoss>,
}

impl Connection {
    /// A connection over a local child process's stdin and stdout (popen, ssh, exec),
    /// whose worker speaks over stdio once it has read `bootstrap`.
    pub(crate) fn over_child_stdio(
        mut child: Child,
        bootstrap: Vec<u8>,
        program: String,
        explain_loss: Option<ExplainLoss>,
    ) -> Connection {
        let stdin = GrowingPipe::new(child.stdin.take().expect("piped stdin"));
        let stdout = child.stdout.take().expect("piped stdout");
        let reader_fd = Some(std::os::fd::AsRawFd::as_raw_fd(&stdout));
        let stderr_pipe = child.stderr.take();
        let stderr_fd = stderr_pipe.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
        let stderr = stderr_pipe.map(|e| Box::new(e) as Box<dyn Read + Send>);
        Connection {
            reader: Box::new(stdout),
            reader_fd,
            writer: Box::new(stdin),
            child: Some(child),
            stderr,
            stderr_fd,
            bootstrap,
            program,
            force_close: None,
            explain_loss,
        }
    }
}

/// Pipe capacity once a pipe carries big frames (Linux's default is 64 KiB; 1 MiB is
/// the most an unprivileged process may set by default, /proc/sys/fs/pipe-max-size).
pub(crate) const BIG_PIPE_BYTES: usize = 1 << 20;

/// A write of at least this many bytes grows the pipe to [`BIG_PIPE_BYTES`].
pub(crate) const GROW_PIPE_AT: usize = 256 << 10;

/// The pipe to a local worker's stdin, grown from the kernel's default 64 KiB to 1 MiB
/// the first time a big frame goes through it: each pipe-full is a wake-up of the
/// reader, and a megabyte in 64 KiB pieces costs sixteen of them (a bigger pipe moved
/// about three times the bytes per second across cores here). Pipes grow only when
/// needed because the kernel counts pipe capacity against a per-user budget
/// (/proc/sys/fs/pipe-user-pages-soft) and hundreds of idle gateways must not use it
/// up. The worker grows its output pipe the same way.
pub(crate) struct GrowingPipe<P> {
    inner: P,
    grown: bool,
}

impl<P: std::os::fd::AsRawFd> GrowingPipe<P> {
    pub(crate) fn new(inner: P) -> Self {
        GrowingPipe { inner, grown: false }
    }

    fn grow_for(&mut self, len: usize) {
        if !self.grown && len >= GROW_PIPE_AT {
            self.grown = true;
            // Failure (no permission, not a pipe) leaves the pipe as it was.
            let _ = crate::sys::set_pipe_size(self.inner.as_raw_fd(), BIG_PIPE_BYTES);
        }
    }
}

impl<P: Write + std::os::fd::AsRawFd> Write for GrowingPipe<P> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.grow_for(buf.len());
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The exit code in a [`LostInfo::exit_status`], if the process exited.
pub(crate) fn exit_code_of(status: Option<crate::ExitStatus>) -> Option<i32> {
    status?.code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_grow_on_the_first_big_write_only() {
        use std::os::fd::AsRawFd;
        let (read_end, write_end) = crate::sys::pipe().unwrap();
        let size = |f: &std::fs::File| crate::sys::pipe_size(f.as_raw_fd()).unwrap();
        let default = size(&read_end);
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut &read_end, &mut all).unwrap();
            all.len()
        });
        let mut pipe = GrowingPipe::new(write_end);
        pipe.write_all(&[1; 1000]).unwrap();
        assert_eq!(size(&pipe.inner), default, "small writes leave the pipe alone");
        pipe.write_all(&vec![2; GROW_PIPE_AT]).unwrap();
        assert_eq!(size(&pipe.inner), BIG_PIPE_BYTES, "grown by the first big write");
        drop(pipe);
        assert_eq!(reader.join().unwrap(), 1000 + GROW_PIPE_AT);
    }

    #[test]
    fn exit_codes_read_back_from_status_texts() {
        use crate::ExitStatus;
        assert_eq!(exit_code_of(Some(ExitStatus::Code(255))), Some(255));
        assert_eq!(ExitStatus::Code(255).to_string(), "exit status 255");
        assert_eq!(exit_code_of(Some(ExitStatus::Signal(9))), None);
        assert_eq!(ExitStatus::Signal(9).to_string(), "signal 9 (SIGKILL)");
        assert_eq!(exit_code_of(None), None);
    }
}
