//! Socket gateways whose server runs inside another gateway: a one-connection socket
//! server, in the style of execnet's `socketserver.py`, started there with remote_exec
//! ([`Gateway::new_remote_socket`], `socket//installvia=ID`), then a `socket=` gateway
//! connected to it.

use serde::Serialize;

use super::{Gateway, Source};
use crate::error::{Error, Result};
use crate::net::split_host_port;
use crate::transport::socket::DEFAULT_HANDSHAKE_TIMEOUT;
use crate::xspec::XSpec;
use crate::Channel;

/// Python run inside a gateway by [`Gateway::new_remote_socket`] and `installvia=`: a
/// socket server for one connection, in the style of execnet's `socketserver.py`.
const REMOTE_SERVER: &str = r#"
import ast
import socket


def serve_one(channel, host, port, accept_timeout, max_line):
    family, kind, proto, _, sockaddr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    listener = socket.socket(family, kind, proto)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(sockaddr)
        listener.listen(1)
        channel.send(tuple(listener.getsockname()[:2]))
        listener.settimeout(accept_timeout)
        clientsock, address = listener.accept()
    finally:
        listener.close()
    clientsock.settimeout(accept_timeout)
    reader = clientsock.makefile("rb")
    try:
        line = reader.readline(max_line + 1)
    finally:
        reader.close()
    if not line.endswith(b"\n"):
        clientsock.close()
        raise ValueError("the client sent no complete bootstrap line")
    clientsock.settimeout(None)
    source = ast.literal_eval(line.decode("utf-8").rstrip())
    if isinstance(source, bytes):
        source = source.decode("utf-8")
    exec(compile(source + "\n", "<socket server>", "exec"), {"clientsock": clientsock, "address": address})
"#;

#[derive(Serialize)]
struct ServeOneArgs<'a> {
    host: &'a str,
    port: u16,
    accept_timeout: f64,
    max_line: usize,
}

/// Starts a one-connection socket server inside `gw`, bound to `bind` (`HOST:PORT`, port
/// 0 for any free one); returns the address to connect to and the server's channel.
fn start_remote_server(gw: &Gateway, bind: &str) -> Result<(String, Channel)> {
    let (host, port) = split_host_port(bind).map_err(|reason| Error::Spec {
        spec: bind.to_string(),
        reason: format!("the bind address of a remote socket server: {reason}"),
    })?;
    let args = ServeOneArgs {
        host,
        port,
        accept_timeout: DEFAULT_HANDSHAKE_TIMEOUT.as_secs_f64(),
        max_line: crate::server::DEFAULT_MAX_LINE,
    };
    let source = Source::call(REMOTE_SERVER, "serve_one", &args)?.with_file_name("<execnet-rs socket server>");
    let channel = gw.remote_exec(source)?;
    let (real_host, real_port): (String, u16) = channel.receive_timeout(DEFAULT_HANDSHAKE_TIMEOUT)?;
    let connect_host = match real_host.as_str() {
        "" | "0.0.0.0" => "127.0.0.1",
        "::" => "::1",
        other => other,
    };
    let addr = if connect_host.contains(':') {
        format!("[{connect_host}]:{real_port}")
    } else {
        format!("{connect_host}:{real_port}")
    };
    Ok((addr, channel))
}

impl Gateway {
    /// Starts a socket server for one connection inside `gw` (the worker runs it with
    /// remote_exec; nothing is installed), bound to `bind` such as `"127.0.0.1:0"`, and
    /// returns a new gateway connected to it (in the default group). The new worker runs
    /// in `gw`'s process, in the thread of that execution. execnet's
    /// `SocketGateway.new_remote(gw, ("127.0.0.1", 0))`.
    pub fn new_remote_socket(gw: &Gateway, bind: &str) -> Result<Gateway> {
        let (addr, _server) = start_remote_server(gw, bind)?;
        Gateway::socket(&addr)
    }

    /// `socket//installvia=ID`: a server inside `host` (bound to the spec's socket value,
    /// default 127.0.0.1:0), then a gateway `id` connected to it.
    pub(crate) fn start_installvia(spec: &XSpec, id: &str, host: &Gateway) -> Result<Gateway> {
        let bind = spec.socket().unwrap_or("127.0.0.1:0");
        let (addr, _server) = start_remote_server(host, bind)?;
        let rewritten: Vec<String> = spec
            .as_str()
            .split("//")
            .map(|part| {
                if part == "socket" || part.starts_with("socket=") {
                    format!("socket={addr}")
                } else {
                    part.to_string()
                }
            })
            .collect();
        let spec: XSpec = rewritten.join("//").parse()?;
        Gateway::start(&spec, id)
    }
}
