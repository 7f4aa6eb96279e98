//! `socket=HOST:PORT`: a worker behind a socket server (PROTOCOL.md section 5).
//!
//! The host connects (TCP, or a Unix socket with `socket=unix:PATH`), optionally proves
//! that it knows the server's access token (the handshake described in `server::auth`),
//! then sends the usual bootstrap line: our worker's source and a call to
//! `serve_socket(clientsock, ...)`. The server runs that with the connection bound to
//! `clientsock`; the worker writes the ready byte and serves frames on the socket.
//! Any server honouring execnet's contract works: `execnet serve`, execnet's own
//! `socketserver.py`, or one started in another gateway (`Gateway::new_remote_socket`,
//! `installvia=ID`).
//!
//! Spec keys:
//!
//! | key | meaning |
//! |---|---|
//! | `socket=HOST:PORT` | a name, an IPv4 address, or an IPv6 address in brackets (`[::1]:8888`) |
//! | `socket=unix:PATH` | a Unix socket, such as the one of `execnet serve --unix PATH` |
//! | `token_file=FILE` | answer the server's `EXECNET-AUTH1` challenge with the token in FILE (a wrong token fails at once) |
//! | `connect_timeout=SECONDS` | give up connecting after this long (default 10) |
//! | `handshake_timeout=SECONDS` | give up when the challenge or the worker's ready byte takes longer (default 30) |
//! | `installvia=ID` | start a one-connection server inside the group's gateway ID first (the `socket=` value, if any, is its bind address; default `127.0.0.1:0`) |
//!
//! `chdir`, `nice`, `env:` and `execmodel` are applied by the worker; `python=` is refused,
//! since the server chooses the interpreter.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use super::Connection;
use crate::error::{Error, Result};
use crate::net::{auth, Stream, Target};
use crate::worker::{self, WorkerConfig, READY_BYTE};
use crate::xspec::XSpec;

/// How long connecting may take, unless the spec says `connect_timeout=`.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server may take to send its challenge and the worker its ready byte,
/// unless the spec says `handshake_timeout=`.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

fn seconds(spec: &XSpec, key: &str, default: Duration) -> Result<Duration> {
    match spec.get(key) {
        None => Ok(default),
        Some(v) => match v.trim().parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Duration::from_secs_f64(s)),
            _ => Err(spec.invalid(format!("{key}={v:?} is not a positive number of seconds"))),
        },
    }
}

fn spawn_error(spec: &XSpec, addr: &str, reason: String) -> Error {
    Error::Spawn { spec: spec.to_string(), key: "socket".into(), program: addr.into(), reason }
}

/// Connects to the socket server named by `spec` and prepares the bootstrap.
pub(crate) fn connect(spec: &XSpec, config: &WorkerConfig) -> Result<Connection> {
    let Some(addr) = spec.socket() else {
        return Err(spec.invalid(if spec.has("installvia") {
            "installvia=ID names a gateway of a group: make this gateway with Group::makegateway"
        } else {
            "socket needs an address: socket=HOST:PORT, socket=[IPV6]:PORT or socket=unix:PATH"
        }));
    };
    if spec.python().is_some() {
        return Err(spec.invalid(
            "python= does not apply to socket gateways: the server chooses the interpreter \
             (execnet serve --python PY)",
        ));
    }
    let connect_timeout = seconds(spec, "connect_timeout", DEFAULT_CONNECT_TIMEOUT)?;
    let handshake_timeout = seconds(spec, "handshake_timeout", DEFAULT_HANDSHAKE_TIMEOUT)?;
    let token = match spec.get("token_file") {
        Some(path) => Some(
            auth::read_token_file(path.as_ref()).map_err(|e| spawn_error(spec, addr, e.to_string()))?,
        ),
        None => None,
    };
    let target = Target::parse(addr).map_err(|reason| spec.invalid(reason))?;
    let stream = target.connect(connect_timeout).map_err(|reason| spawn_error(spec, addr, reason))?;
    if let Some(token) = &token {
        answer_challenge(&stream, token, handshake_timeout).map_err(|reason| spawn_error(spec, addr, reason))?;
    }
    // Until the ready byte arrives, reads time out (see ReadyReader).
    stream.set_read_timeout(Some(handshake_timeout))?;
    let reader = ReadyReader { stream: stream.try_clone()?, waiting: true, timeout: handshake_timeout, pending: Vec::new() };
    let closer = stream.try_clone()?;
    Ok(Connection {
        reader: Box::new(reader),
        reader_fd: None, // the handshake reader keeps bytes of its own
        writer: Box::new(SocketWriter(stream)),
        child: None,
        stderr: None,
        stderr_fd: None,
        bootstrap: worker::socket_bootstrap_line(config).into_bytes(),
        program: format!("the socket server at {addr}"),
        force_close: Some(Box::new(move || {
            let _ = closer.shutdown(Shutdown::Both);
        })),
        explain_loss: None,
    })
}

/// Reads one line of at most `max` bytes, a byte at a time (nothing after it is consumed).
fn read_short_line(mut stream: &Stream, max: usize) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < max {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {
                line.push(byte[0]);
                if byte[0] == b'\n' {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(line)
}

/// The client half of the token handshake: read the challenge, send the answer.
fn answer_challenge(stream: &Stream, token: &[u8], timeout: Duration) -> std::result::Result<(), String> {
    let _ = stream.set_read_timeout(Some(timeout));
    let line = match read_short_line(stream, auth::MAX_HANDSHAKE_LINE) {
        Ok(line) => line,
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            return Err(format!(
                "the server sent no {} challenge within {timeout:?}: does it have a token configured? \
                 (without one, leave token_file= out)",
                auth::GREETING
            ))
        }
        Err(e) => return Err(format!("reading the server's challenge failed: {e}")),
    };
    let text = String::from_utf8_lossy(&line);
    if let Some(reason) = text.strip_prefix(auth::REFUSED) {
        return Err(format!("the server refused the connection:{}", reason.trim_end()));
    }
    if line.is_empty() {
        return Err("the server closed the connection instead of sending its challenge".into());
    }
    let Some(nonce) = auth::parse_challenge(&text) else {
        return Err(format!(
            "the server answered {:?} instead of an {} challenge",
            text.chars().take(80).collect::<String>(),
            auth::GREETING
        ));
    };
    (&*stream)
        .write_all(auth::answer_line(token, &nonce).as_bytes())
        .map_err(|e| format!("sending the answer to the server's challenge failed: {e}"))?;
    let verdict = match read_short_line(stream, auth::MAX_HANDSHAKE_LINE) {
        Ok(line) => String::from_utf8_lossy(&line).into_owned(),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            return Err(format!("the server did not answer the token handshake within {timeout:?}"))
        }
        Err(e) => return Err(format!("reading the server's verdict on the token failed: {e}")),
    };
    if verdict == auth::ACCEPTED {
        return Ok(());
    }
    match verdict.strip_prefix(auth::REFUSED) {
        Some(reason) => Err(format!("the server refused the connection:{}", reason.trim_end())),
        None if verdict.is_empty() => Err("the server closed the connection during the token handshake".into()),
        None => Err(format!("the server answered {:?} to the token handshake", verdict.chars().take(80).collect::<String>())),
    }
}

/// The gateway's reader: until the ready byte arrives, reads time out and a refusal
/// line from the server becomes a clear error; afterwards it reads the socket as is.
struct ReadyReader {
    stream: Stream,
    waiting: bool,
    timeout: Duration,
    /// Bytes read while looking at a refusal line that turned out to be something else.
    pending: Vec<u8>,
}

impl ReadyReader {
    fn first_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = match (&self.stream).read(buf) {
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no ready byte within {:?}: the server took the connection but no worker \
                         started (is it an execnet socket server? a busy one? handshake_timeout= \
                         allows longer)",
                        self.timeout
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                return Err(io::Error::new(
                    e.kind(),
                    "the server reset the connection before the worker was ready",
                ))
            }
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(0);
        }
        if buf[0] == READY_BYTE {
            self.waiting = false;
            let _ = self.stream.set_read_timeout(None);
            return Ok(n);
        }
        if buf[0] != b'E' {
            return Ok(n);
        }
        // Perhaps a refusal or a challenge: look at the whole line.
        let mut line = buf[..n].to_vec();
        let deadline = Instant::now() + Duration::from_secs(2);
        while !line.contains(&b'\n') && line.len() < 1024 && Instant::now() < deadline {
            let mut more = [0u8; 512];
            match (&self.stream).read(&mut more) {
                Ok(0) | Err(_) => break,
                Ok(k) => line.extend_from_slice(&more[..k]),
            }
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        let first = text.lines().next().unwrap_or("");
        if let Some(reason) = first.strip_prefix(auth::REFUSED) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionRefused,
                format!("the server refused the connection:{reason}"),
            ));
        }
        if first.starts_with(auth::GREETING) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the server requires an access token: add //token_file=FILE to the spec",
            ));
        }
        let take = line.len().min(buf.len());
        buf[..take].copy_from_slice(&line[..take]);
        self.pending = line[take..].to_vec();
        Ok(take)
    }
}

impl Read for ReadyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.pending.is_empty() {
            let take = self.pending.len().min(buf.len());
            buf[..take].copy_from_slice(&self.pending[..take]);
            self.pending.drain(..take);
            return Ok(take);
        }
        if self.waiting {
            return self.first_read(buf);
        }
        (&self.stream).read(buf)
    }
}

/// The gateway's writer; dropping it shuts the sending half down, which the worker
/// sees as the end of its input.
struct SocketWriter(Stream);

impl Write for SocketWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&self.0).write(buf).map_err(|e| match peek_refusal(&self.0) {
            // The server turned us down and closed while we were still sending.
            Some(reason) => io::Error::new(e.kind(), format!("the server refused the connection:{reason}")),
            None => e,
        })
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The reason of an `EXECNET-REFUSED` line waiting on the socket, without consuming it.
fn peek_refusal(stream: &Stream) -> Option<String> {
    let mut buf = [0u8; 512];
    let n = crate::sys::recv_peek(stream.as_raw_fd(), &mut buf, true).ok()?;
    let text = String::from_utf8_lossy(buf.get(..n)?).into_owned();
    let reason = text.strip_prefix(auth::REFUSED)?;
    Some(reason.lines().next().unwrap_or("").to_string())
}

impl Drop for SocketWriter {
    fn drop(&mut self) {
        let _ = self.0.shutdown(Shutdown::Write);
    }
}
