//! The worker's stderr: passed on to ours, its tail kept for error reports.
//!
//! A thread per gateway copies the worker's stderr to this process's stderr. For a local
//! pipe (popen, and the ssh client's stderr) that alone would let a frame overtake what
//! the worker wrote to stderr before it sent the frame: the frame's reader and the
//! stderr thread race. So the frame stream's reader is wrapped ([`DrainsStderrFirst`]):
//! after each read from the worker's stdout it passes on whatever stderr holds already,
//! before any frame of that read is handed out. What the worker wrote to stderr before
//! a frame is therefore on our stderr by the time `receive()` returns that frame, as it
//! is with execnet, whose workers inherit the host's stderr. The cost is one `poll` with
//! a zero timeout per read of the frame stream (not per frame).

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};
use std::thread;

use crate::sync::{lock, Flag};

/// How much of the worker's stderr is kept for error reports.
const STDERR_TAIL_BYTES: usize = 4096;

/// The last [`STDERR_TAIL_BYTES`] the worker wrote to stderr, and whether it is done.
#[derive(Default)]
pub(super) struct StderrTail {
    tail: Mutex<VecDeque<u8>>,
    pub(super) done: Flag,
}

impl StderrTail {
    fn push(&self, bytes: &[u8]) {
        let mut tail = lock(&self.tail);
        tail.extend(bytes);
        let excess = tail.len().saturating_sub(STDERR_TAIL_BYTES);
        tail.drain(..excess);
    }
    pub(super) fn finish(&self) {
        self.done.set();
    }
    pub(super) fn text(&self) -> String {
        let tail = lock(&self.tail);
        let (a, b) = tail.as_slices();
        String::from_utf8_lossy(&[a, b].concat()).into_owned()
    }
}

/// The worker's stderr stream; whoever holds `source` reads it.
struct Forward {
    source: Mutex<Source>,
    /// The pipe's file descriptor, when `source` is a local pipe that can be polled.
    fd: Option<RawFd>,
    tail: Arc<StderrTail>,
}

struct Source {
    read: Box<dyn Read + Send>,
    ended: bool,
}

impl Forward {
    /// Reads once and passes it on; false at the end of the stream.
    fn copy_once(&self, source: &mut Source) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            match source.read.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    self.tail.push(&buf[..n]);
                    let _ = io::stderr().write_all(&buf[..n]);
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        source.ended = true;
        false
    }

    /// Passes on what the pipe holds now, without waiting for more. Taking the lock
    /// also waits for a copy the stderr thread has begun (it read bytes the pipe no
    /// longer shows); uncontended, as it usually is, that costs next to nothing.
    fn drain_ready(&self) {
        let Some(fd) = self.fd else { return };
        let mut source = lock(&self.source);
        while !source.ended && readable(fd, 0) {
            if !self.copy_once(&mut source) {
                break;
            }
        }
    }
}

/// Whether `fd` has data (or its end) to read within `timeout_ms` (-1: no limit).
fn readable(fd: RawFd, timeout_ms: i32) -> bool {
    // The fd stays open while the Forward that owns it lives.
    matches!(crate::sys::poll_readable(fd, timeout_ms), Ok(true))
}

/// The frame stream's reader, passing on the worker's stderr after each read.
pub(super) struct DrainsStderrFirst {
    frames: Box<dyn Read + Send>,
    stderr: Arc<Forward>,
}

impl Read for DrainsStderrFirst {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.frames.read(buf)?;
        self.stderr.drain_ready();
        Ok(n)
    }
}

/// Starts passing on the worker's `stderr` (with `fd`, its pipe's descriptor, when it
/// is a local pipe) to ours and keeping its tail; returns the frame reader to use in
/// place of `frames`, wrapped when the stderr pipe can be drained from it.
pub(super) fn forward(
    gateway_id: &str,
    tail: &Arc<StderrTail>,
    stderr: Box<dyn Read + Send>,
    fd: Option<RawFd>,
    frames: Box<dyn Read + Send>,
) -> Box<dyn Read + Send> {
    let fwd =
        Arc::new(Forward { source: Mutex::new(Source { read: stderr, ended: false }), fd, tail: tail.clone() });
    let for_thread = fwd.clone();
    let spawned = thread::Builder::new()
        .name(format!("execnet-{gateway_id}-stderr"))
        .stack_size(64 * 1024)
        .spawn(move || {
            let fwd = for_thread;
            loop {
                if let Some(fd) = fwd.fd {
                    // Wait without the lock, so that the frame reader can drain meanwhile;
                    // then check again with it: the frame reader may have taken the data.
                    readable(fd, -1);
                    let mut source = lock(&fwd.source);
                    if source.ended || (readable(fd, 0) && !fwd.copy_once(&mut source)) {
                        break;
                    }
                } else {
                    let mut source = lock(&fwd.source);
                    if !fwd.copy_once(&mut source) {
                        break;
                    }
                }
            }
            fwd.tail.finish();
        });
    if spawned.is_err() {
        tail.finish();
        return frames;
    }
    if fd.is_some() {
        Box::new(DrainsStderrFirst { frames, stderr: fwd })
    } else {
        frames
    }
}
