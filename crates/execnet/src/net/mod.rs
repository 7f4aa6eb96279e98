//! Sockets as both ends of `socket=` use them: the host's socket transport
//! ([`crate::transport::socket`]) and the socket server ([`crate::server`]). A stream
//! that is TCP or Unix, the address forms of `socket=` and `--listen` and connecting to
//! them, and the token handshake ([`auth`]).

pub mod auth;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

/// A connected stream socket, TCP or Unix.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub(crate) fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(how),
            Stream::Unix(s) => s.shutdown(how),
        }
    }

    pub(crate) fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    pub(crate) fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }

    pub(crate) fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_nonblocking(on),
            Stream::Unix(s) => s.set_nonblocking(on),
        }
    }
}

impl AsRawFd for Stream {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Stream::Tcp(s) => s.as_raw_fd(),
            Stream::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for &Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).read(buf),
            Stream::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => (&*s).write(buf),
            Stream::Unix(s) => (&*s).write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where a `socket=` value points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Tcp { host: String, port: u16 },
    Unix(PathBuf),
}

impl Target {
    /// Parses `HOST:PORT`, `[IPV6]:PORT` or `unix:PATH`.
    pub(crate) fn parse(addr: &str) -> std::result::Result<Target, String> {
        if let Some(path) = addr.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path, as in socket=unix:/run/execnet.sock".into());
            }
            return Ok(Target::Unix(PathBuf::from(path)));
        }
        let (host, port) = split_host_port(addr)?;
        Ok(Target::Tcp { host: host.to_string(), port })
    }

    pub(crate) fn connect(&self, timeout: Duration) -> std::result::Result<Stream, String> {
        match self {
            Target::Unix(path) => UnixStream::connect(path).map(Stream::Unix).map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => format!("no Unix socket at {}", path.display()),
                io::ErrorKind::ConnectionRefused => {
                    format!("connection refused: nothing listens on the Unix socket {}", path.display())
                }
                _ => format!("cannot connect to the Unix socket {}: {e}", path.display()),
            }),
            Target::Tcp { host, port } => {
                let addrs: Vec<_> = (host.as_str(), *port)
                    .to_socket_addrs()
                    .map_err(|e| format!("host not found: cannot resolve {host:?} ({e})"))?
                    .collect();
                if addrs.is_empty() {
                    return Err(format!("host not found: {host:?} has no addresses"));
                }
                let mut last = String::new();
                for addr in &addrs {
                    match TcpStream::connect_timeout(addr, timeout) {
                        Ok(s) => {
                            let _ = s.set_nodelay(true);
                            return Ok(Stream::Tcp(s));
                        }
                        Err(e) => {
                            last = match e.kind() {
                                io::ErrorKind::ConnectionRefused => format!(
                                    "connection refused: nothing listens on {addr} (start a server with `execnet serve --listen {addr}`)"
                                ),
                                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                                    format!("no answer from {addr} within {timeout:?} (connect_timeout)")
                                }
                                _ => format!("cannot connect to {addr}: {e}"),
                            }
                        }
                    }
                }
                Err(last)
            }
        }
    }
}

/// Splits `HOST:PORT` or `[IPV6]:PORT`.
pub(crate) fn split_host_port(addr: &str) -> std::result::Result<(&str, u16), String> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{addr:?}: an IPv6 address needs its closing bracket, as in [::1]:8888"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| format!("{addr:?}: the port is missing, as in [::1]:8888"))?;
        (host, port)
    } else {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("{addr:?} is not HOST:PORT (for example 127.0.0.1:8888)"))?;
        if host.contains(':') {
            return Err(format!("{addr:?}: put an IPv6 address in brackets, as in [::1]:8888"));
        }
        (host, port)
    };
    if host.is_empty() {
        return Err(format!("{addr:?}: the host is missing, as in 127.0.0.1:8888"));
    }
    let port = port.parse().map_err(|_| format!("{addr:?}: {port:?} is not a port number"))?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses() {
        assert_eq!(
            Target::parse("127.0.0.1:8888").unwrap(),
            Target::Tcp { host: "127.0.0.1".into(), port: 8888 }
        );
        assert_eq!(Target::parse("[::1]:0").unwrap(), Target::Tcp { host: "::1".into(), port: 0 });
        assert_eq!(
            Target::parse("localhost:1").unwrap(),
            Target::Tcp { host: "localhost".into(), port: 1 }
        );
        assert_eq!(Target::parse("unix:/tmp/s").unwrap(), Target::Unix("/tmp/s".into()));
        for bad in ["", "host", "::1:80", "[::1]80", "[::1", ":80", "h:99999", "h:x", "unix:"] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
