//! Transports: how the bytes of a gateway reach a worker.
//!
//! A transport starts (or connects to) a bare Python interpreter that runs the
//! bootstrap one-liner, and hands the gateway a [`Connection`]: a byte stream each way,
//! and the local process, if there is one, with its stderr.

pub mod popen;
pub mod socket;
pub mod ssh;
pub mod via;

use std::io::{Read, Write};
use std::process::{Child, ChildStderr};

/// A started worker connection, before the bootstrap line is written.
pub(crate) struct Connection {
    /// Frames (and first the ready byte) from the worker.
    pub reader: Box<dyn Read + Send>,
    /// Frames (and first the bootstrap line) to the worker.
    pub writer: Box<dyn Write + Send>,
    /// The local process serving the connection (popen, ssh), to reap and to kill.
    pub child: Option<Child>,
    /// That process's stderr, kept for error reports and passed on to ours.
    pub stderr: Option<ChildStderr>,
    /// The line to write first (the worker source and its start call).
    pub bootstrap: Vec<u8>,
    /// What to call this program in error messages (for example the python path).
    pub program: String,
    /// Forces the connection closed when the worker does not end by itself within the
    /// exit timeout (socket: shut the socket down; via: close the relay channel). Child
    /// processes are killed in any case; this is for what is not a local child.
    pub force_close: Option<Box<dyn Fn() + Send + Sync>>,
}
