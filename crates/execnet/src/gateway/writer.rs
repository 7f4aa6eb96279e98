//! The writing half of a gateway. Writes happen on the caller's thread, one `write`
//! per frame, under a lock; frames sent before the worker is ready wait in `pending`
//! and are written as soon as it is, so `makegateway` returns without waiting for the
//! interpreter to start.

use std::io::{self, Write};
use std::sync::Mutex;

use super::GatewayInner;
use crate::error::Result;
use crate::sync::{lock, Flag};
use crate::wire::frame::{self, Code};

pub(super) struct Writer {
    state: Mutex<WriteState>,
}

/// Where writes go. Until the worker is ready, frames wait in `pending`.
struct WriteState {
    out: Box<dyn Write + Send>,
    /// The bootstrap line has been written.
    started: bool,
    ready: bool,
    pending: Vec<u8>,
    closed: bool,
}

impl Writer {
    pub(super) fn new(out: Box<dyn Write + Send>) -> Writer {
        Writer {
            state: Mutex::new(WriteState { out, started: false, ready: false, pending: Vec::new(), closed: false }),
        }
    }

    /// Writes `bytes`, or keeps them until the worker is ready. Err with what to say
    /// when the gateway's loss has no reason yet.
    fn write(&self, bytes: Vec<u8>) -> std::result::Result<(), String> {
        let mut w = lock(&self.state);
        if w.closed {
            return Err("the connection is closed".into());
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
            return Err(format!("writing to the worker failed: {e}"));
        }
        Ok(())
    }

    /// Writes the bootstrap line; Ok(false) when the gateway was exited before.
    pub(super) fn send_bootstrap(&self, bootstrap: &[u8]) -> io::Result<bool> {
        let mut w = lock(&self.state);
        if w.closed {
            return Ok(false);
        }
        w.started = true;
        w.out.write_all(bootstrap).and_then(|_| w.out.flush())?;
        Ok(true)
    }

    /// The worker is ready: sets `started` and writes what was kept for it.
    pub(super) fn set_ready(&self, started: &Flag) -> std::result::Result<(), String> {
        let mut w = lock(&self.state);
        w.ready = true;
        started.set();
        if w.closed || w.pending.is_empty() {
            return Ok(());
        }
        let pending = std::mem::take(&mut w.pending);
        w.out.write_all(&pending).and_then(|_| w.out.flush()).map_err(|e| format!("writing to the worker failed: {e}"))
    }

    /// Whether the worker became ready.
    pub(super) fn is_ready(&self) -> bool {
        lock(&self.state).ready
    }

    /// The connection ended: later writes fail, and end-of-input tells the worker to exit.
    pub(super) fn close(&self) {
        let mut w = lock(&self.state);
        w.closed = true;
        w.out = Box::new(io::sink());
    }

    /// The first step of an exit: GATEWAY_TERMINATE (to a ready worker) and end of
    /// input. False when the bootstrap was never written.
    pub(super) fn close_for_exit(&self) -> bool {
        let mut w = lock(&self.state);
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
        w.started
    }
}

impl GatewayInner {
    /// Writes one frame.
    pub(crate) fn send_frame(&self, code: Code, channel: i32, payload: &[u8]) -> Result<()> {
        let mut buf = Vec::with_capacity(frame::HEADER_LEN + payload.len());
        frame::write_frame(&mut buf, code, channel, payload);
        self.write_raw(buf)
    }

    /// Writes already-encoded frames.
    pub(crate) fn write_raw(&self, bytes: Vec<u8>) -> Result<()> {
        self.writer.write(bytes).map_err(|fallback| self.lost_error(&fallback))
    }
}
