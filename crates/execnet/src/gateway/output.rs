//! Remote output: what code in a worker prints, brought back to the host.
//!
//! [`Gateway::capture_output`] runs a small stdlib-only script (`output.py`, embedded)
//! through `remote_exec`: it replaces the worker's `sys.stdout` and `sys.stderr` with
//! streams that send each line to the host on a channel of their own, and, for workers
//! that serve over stdio (popen, ssh, and those started `via` them), points fds 1 and 2
//! at pipes too, so that subprocesses' output comes back as well. Socket workers keep
//! their fds (they belong to the server); their `sys.stdout`/`sys.stderr` are captured.
//!
//! ```
//! # fn main() -> execnet::Result<()> {
//! let gw = execnet::makegateway("popen")?;
//! let output = gw.capture_output()?;
//! gw.remote_exec("print('hello'); import os; os.system('echo from a subprocess')")?
//!     .waitclose(None)?;
//! output.stop()?;
//! for line in output.iter() {
//!     let line = line?;
//!     print!("{:?}: {}", line.stream, line.text);
//! }
//! # Ok(()) }
//! ```
//!
//! The capture is per gateway (the streams are the process's), and it ends with
//! [`OutputCapture::stop`] or when the `OutputCapture` is dropped. Lines written by one
//! remote thread arrive in the order written, also relative to the items that thread
//! sends on other channels; output of subprocesses (read from the fd pipes) may
//! interleave differently.

use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::gateway::{Gateway, Source};
use crate::Channel;

/// The script run by [`Gateway::capture_output`].
const OUTPUT_SOURCE: &str = include_str!("output.py");

/// Which remote stream a piece of output was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputStream {
    /// The remote `sys.stdout`.
    Stdout,
    /// The remote `sys.stderr`.
    Stderr,
}

impl OutputStream {
    /// `"stdout"` or `"stderr"`.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// Text written remotely: usually one or more whole lines (with their `\n`), or a partial
/// line that was flushed or grew long.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "(String, String)")]
pub struct Output {
    /// The stream the text was written to.
    pub stream: OutputStream,
    /// The text, as written.
    pub text: String,
}

impl TryFrom<(String, String)> for Output {
    type Error = String;
    fn try_from((stream, text): (String, String)) -> std::result::Result<Output, String> {
        let stream = match stream.as_str() {
            "stdout" => OutputStream::Stdout,
            "stderr" => OutputStream::Stderr,
            other => return Err(format!("unknown output stream {other:?}")),
        };
        Ok(Output { stream, text })
    }
}

/// A running capture of a gateway's remote output (see the [module docs](self)).
#[derive(Debug)]
pub struct OutputCapture {
    channel: Channel,
}

impl Gateway {
    /// Starts capturing the worker's `sys.stdout` and `sys.stderr` (and fds 1 and 2 of
    /// stdio workers); returns once the capture is in place, so output written by code
    /// started afterwards is captured. This waits for the worker: it also tells that the
    /// gateway is up.
    pub fn capture_output(&self) -> Result<OutputCapture> {
        self.capture_output_timeout(None)
    }

    /// Like [`Gateway::capture_output`], giving up with [`Error::Timeout`] after `timeout`.
    pub fn capture_output_timeout(&self, timeout: Option<Duration>) -> Result<OutputCapture> {
        #[derive(serde::Serialize)]
        struct Args {
            fds: bool,
        }
        let source = Source::call(OUTPUT_SOURCE, "capture", Args { fds: true })?
            .with_file_name("<execnet output capture>");
        let setup = self.remote_exec(source)?;
        let channel: Channel = match timeout {
            None => setup.receive()?,
            Some(t) => setup.receive_timeout(t)?,
        };
        Ok(OutputCapture { channel })
    }
}

impl OutputCapture {
    /// The channel the output arrives on (items are `("stdout" | "stderr", text)`).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The next piece of output; [`Error::EndOfChannel`] once the capture stopped and
    /// everything was received.
    pub fn receive(&self) -> Result<Output> {
        self.channel.receive()
    }

    /// Like [`OutputCapture::receive`], giving up with [`Error::Timeout`] after `timeout`.
    pub fn receive_timeout(&self, timeout: Duration) -> Result<Output> {
        self.channel.receive_timeout(timeout)
    }

    /// The output as it arrives, until the capture stopped.
    pub fn iter(&self) -> crate::gateway::channel::Iter<'_, Output> {
        self.channel.iter()
    }

    /// Hands each piece of output to `callback` (on the gateway's reader thread, in the
    /// order of the worker's frames), then `None` once the capture ended.
    pub fn set_callback<F>(&self, mut callback: F) -> Result<()>
    where
        F: FnMut(Option<Output>) + Send + 'static,
    {
        self.channel.install_callback(move |item: Option<Output>| callback(item))
    }

    /// Ends the capture: the worker flushes and restores its streams and fds, sends what
    /// is left (subprocesses' pipes are drained for up to a second) and closes the
    /// channel. Output still on its way stays receivable. Stopping twice is harmless.
    pub fn stop(&self) -> Result<()> {
        match self.channel.send("stop") {
            Ok(()) | Err(Error::ChannelClosed { .. }) | Err(Error::GatewayLost(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Stops the capture and waits up to `timeout` until the worker closed it.
    pub fn stop_and_wait(&self, timeout: Option<Duration>) -> Result<()> {
        self.stop()?;
        self.channel.waitclose(timeout)
    }
}
