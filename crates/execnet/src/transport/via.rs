//! `via=ID`: a gateway whose bytes travel through another gateway's worker.
//!
//! The host runs a small relay ([`RELAY_SOURCE`], standard library only) on the via
//! gateway with `remote_exec`. The relay starts the new worker's process on the via
//! gateway's machine (popen: `PYTHON -u -c BOOTSTRAP`; ssh: the same ssh command line
//! that `transport::ssh` runs here) and pumps bytes both ways between the process's
//! stdio and the relay channel. The new gateway reads and writes that channel as its
//! connection, so everything above the transport is the same as for a local process,
//! and a via gateway can itself be the via of another one (chains).
//!
//! Items on the relay channel:
//! - host to relay: `bytes` for the process's stdin; `None` closes its stdin (the worker
//!   then ends, as a popen worker does when its pipe closes).
//! - relay to host: `bytes` from its stdout; `("stderr", bytes)` from its stderr;
//!   `("exit", returncode)` once it ended; `("failed", text)` if it could not start.
//!
//! Closing the channel from the host (or the via gateway going away) kills the process.
//! The relay holds one execution of the via gateway while the relayed worker runs; with
//! `execmodel=main_thread_only` on the via gateway, that blocks its other executions.
//!
//! Spec notes: for a popen spec without `python=`, the relay starts the via worker's own
//! interpreter (`sys.executable`). For an ssh spec, `ssh_config=` names a file on the via
//! gateway's machine, and `ssh_share` is not available.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use serde::Serialize;

use super::exec::ExecTarget;
use super::ssh::{share_persist, SshTarget};
use super::{Connection, ExplainLoss};
use crate::error::{Error, ExitStatus, LostInfo, Result};
use crate::gateway::{Gateway, Source};
use crate::sync::lock;
use crate::worker::{self, WorkerConfig, BOOTSTRAP_ONELINER, DEFAULT_PYTHON};
use crate::xspec::{Transport, XSpec};
use crate::{Channel, Value};

/// The relay the via gateway runs: `relay(channel, argv, env, own_python)`.
pub const RELAY_SOURCE: &str = r#"
import os
import subprocess
import sys
import threading


def _send(channel, item):
    try:
        channel.send(item)
        return True
    except OSError:  # the host closed the channel: nobody listens any more
        return False


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def relay(channel, argv, env=None, own_python=False):
    argv = list(argv)
    if own_python:
        argv[0] = sys.executable or "python3"
    child_env = None
    if env:
        child_env = dict(os.environ)
        child_env.update(env)
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=child_env, bufsize=0,
        )
    except (OSError, ValueError) as exc:
        channel.send(("failed", "cannot run %s: %s" % (argv[0], exc)))
        return

    def feed():
        # Host -> process stdin, until the channel ends; then the process must go.
        stdin_fd = proc.stdin.fileno()
        stdin_open = True
        try:
            for item in channel:
                if item is None:
                    if stdin_open:
                        stdin_open = False
                        proc.stdin.close()
                elif stdin_open:
                    try:
                        _write_all(stdin_fd, item)
                    except OSError:
                        pass  # the process is gone; its end is reported below
        except Exception:
            pass
        finally:
            # End of input first (a worker exits on it), then the hard way.
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(0.3)
            except subprocess.TimeoutExpired:
                try:
                    proc.kill()
                except OSError:
                    pass

    def pump_stderr():
        fd = proc.stderr.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            _send(channel, ("stderr", data))

    threading.Thread(target=feed, name="execnet-relay-feed", daemon=True).start()
    errors = threading.Thread(target=pump_stderr, name="execnet-relay-stderr", daemon=True)
    errors.start()
    out_fd = proc.stdout.fileno()
    while True:
        try:
            data = os.read(out_fd, 65536)
        except OSError:
            break
        if not data:
            break
        _send(channel, data)
    proc.wait()
    errors.join(2.0)
    for stream in (proc.stdout, proc.stderr):
        try:
            stream.close()
        except OSError:
            pass
    _send(channel, ("exit", proc.returncode))
"#;

#[derive(Serialize)]
struct RelayArgs {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    own_python: bool,
}

/// Starts the worker for `spec` from inside `via`'s worker and relays its bytes.
pub(crate) fn connect(via: &Gateway, spec: &XSpec, config: &WorkerConfig) -> Result<Connection> {
    let (args, program, ssh_explain): (RelayArgs, String, Option<ExplainLoss>) = match spec.transport()? {
        Transport::Popen => {
            let python = spec.python().unwrap_or(DEFAULT_PYTHON);
            let argv = worker::python_command([python], spec.dont_write_bytecode(), BOOTSTRAP_ONELINER);
            let program = match spec.python() {
                Some(python) => format!("{python} on gateway {}", via.id()),
                None => format!("the python of gateway {}", via.id()),
            };
            let own_python = spec.python().is_none();
            (RelayArgs { argv, env: spec.env().clone(), own_python }, program, None)
        }
        Transport::Ssh(_) => {
            if share_persist(spec)?.is_some() {
                return Err(spec.invalid(
                    "ssh_share does not combine with via=: the ssh client runs on the via gateway's machine",
                ));
            }
            let target = SshTarget::from_spec(spec)?;
            let program = format!("ssh {} from gateway {}", target.host_display(), via.id());
            let args = RelayArgs { argv: target.command_line(), env: BTreeMap::new(), own_python: false };
            (args, program, Some(target.explainer()))
        }
        Transport::Exec(_)
        | Transport::Docker(_)
        | Transport::Podman(_)
        | Transport::Kubectl(_)
        | Transport::Sudo(_) => {
            let target = ExecTarget::from_spec(spec)?;
            let program = format!("{} on gateway {}", target.display(), via.id());
            let args = RelayArgs { argv: target.command_line().to_vec(), env: BTreeMap::new(), own_python: false };
            (args, program, Some(target.explainer()))
        }
        other @ Transport::Socket(_) => {
            return Err(spec.invalid(format!(
                "via= works with popen, ssh and command (exec=, sudo=, ...) specs, not with {}",
                other.key()
            )))
        }
    };
    let channel = via.remote_exec(Source::call(RELAY_SOURCE, "relay", &args)?)?;
    let end = Arc::new(RelayEnd::default());
    let (stderr_tx, stderr_rx) = crossbeam_channel::unbounded();
    let closer = channel.clone();
    let via_handle = via.downgrade();
    let via_id = via.id().to_string();
    Ok(Connection {
        reader: Box::new(RelayReader {
            channel: channel.clone(),
            buf: Vec::new(),
            pos: 0,
            stderr: Some(stderr_tx),
            end: end.clone(),
        }),
        reader_fd: None, // frames come through a relay channel
        writer: Box::new(RelayWriter { channel }),
        child: None,
        stderr: Some(Box::new(StderrFeed { rx: stderr_rx, buf: Vec::new(), pos: 0 })),
        stderr_fd: None,
        bootstrap: worker::stdio_bootstrap_line(config).into_bytes(),
        program: program.clone(),
        force_close: Some(Box::new(move || {
            let _ = closer.close();
        })),
        explain_loss: Some(Box::new(move |info: &mut LostInfo, ready: bool| {
            end.explain(info, ready, &program, ssh_explain.as_ref());
            let via_ending = match via_handle.upgrade() {
                Some(via) => via.is_ending(),
                None => true,
            };
            if via_ending {
                info.reason = format!("its via gateway {via_id} was exited or lost ({})", info.reason);
            }
        })),
    })
}

/// What the relay reported about the process's end.
#[derive(Default)]
struct RelayEnd {
    /// `("exit", returncode)`.
    returncode: Mutex<Option<i64>>,
    /// `("failed", text)`.
    failed: Mutex<Option<String>>,
}

impl RelayEnd {
    fn explain(&self, info: &mut LostInfo, ready: bool, program: &str, ssh: Option<&ExplainLoss>) {
        if let Some(text) = lock(&self.failed).clone() {
            info.reason = format!("could not start {program}: {text}");
            return;
        }
        if info.exit_status.is_none() {
            let code = *lock(&self.returncode);
            // Python's returncode: -N when signal N ended the process.
            info.exit_status = code.and_then(|c| match i32::try_from(c) {
                Ok(c) if c < 0 => c.checked_neg().map(ExitStatus::Signal),
                Ok(c) => Some(ExitStatus::Code(c)),
                Err(_) => None,
            });
        }
        if let Some(explain) = ssh {
            explain(info, ready);
        }
    }
}

/// The process's stdout, from the relay channel's `bytes` items.
struct RelayReader {
    channel: Channel,
    buf: Vec<u8>,
    pos: usize,
    /// Where `("stderr", bytes)` items go; dropped at the end of the channel.
    stderr: Option<Sender<Vec<u8>>>,
    end: Arc<RelayEnd>,
}

impl RelayReader {
    /// Makes sure unread bytes are buffered; false at the end of the channel.
    fn refill(&mut self) -> io::Result<bool> {
        while self.pos >= self.buf.len() {
            let item = match self.channel.receive::<Value>() {
                Ok(item) => item,
                Err(Error::EndOfChannel { .. }) => {
                    self.stderr = None;
                    return Ok(false);
                }
                Err(e) => {
                    self.stderr = None;
                    return Err(io::Error::other(e));
                }
            };
            match item {
                Value::Bytes(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Value::Tuple(parts) => match parts.as_slice() {
                    [Value::Str(tag), Value::Bytes(data)] if tag == "stderr" => {
                        if let Some(tx) = &self.stderr {
                            let _ = tx.send(data.clone());
                        }
                    }
                    [Value::Str(tag), Value::Int(code)] if tag == "exit" => {
                        *lock(&self.end.returncode) = code.as_i64();
                    }
                    [Value::Str(tag), Value::Str(text)] if tag == "failed" => {
                        *lock(&self.end.failed) = Some(text.clone());
                    }
                    _ => return Err(unexpected(&Value::Tuple(parts))),
                },
                other => return Err(unexpected(&other)),
            }
        }
        Ok(true)
    }
}

fn unexpected(item: &Value) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("the relay sent an unexpected item {item}"))
}

impl Read for RelayReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if !self.refill()? {
            return Ok(0);
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// The process's stdin: each write is one `bytes` item; dropping it closes the stdin.
struct RelayWriter {
    channel: Channel,
}

impl Write for RelayWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.channel.send(serde_bytes::Bytes::new(buf)).map_err(io::Error::other)?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for RelayWriter {
    fn drop(&mut self) {
        // End of input for the worker, as when a local process's stdin pipe closes.
        let _ = self.channel.send(&Value::None);
    }
}

/// The process's stderr as the gateway's stderr stream.
struct StderrFeed {
    rx: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for StderrFeed {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos >= self.buf.len() {
            match self.rx.recv() {
                Ok(data) => {
                    self.buf = data;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
