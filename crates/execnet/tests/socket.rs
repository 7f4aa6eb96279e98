//! Socket gateways and the socket server, with real worker processes, on loopback only.
//!
//! The server runs in this process (`Server::run` on a thread); the tests that need the
//! execnet package (its host, its socketserver script) use $EXECNET_PYTHON.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::{eventually, process_alive, required_part, LONG};
use execnet::server::{ServeConfig, Server, ServerHandle, ServerStats};
use execnet::{Error, Gateway, Group, MultiChannel};

/// A server on 127.0.0.1:0 in a thread; dropping it stops it and checks it ended cleanly.
struct TestServer {
    addr: String,
    handle: ServerHandle,
    thread: Option<JoinHandle<execnet::Result<ServerStats>>>,
}

impl TestServer {
    fn start(adjust: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let mut config = ServeConfig {
            listen: vec!["127.0.0.1:0".into()],
            python: common::python(),
            first_line_timeout: Duration::from_secs(5),
            ..ServeConfig::default()
        };
        adjust(&mut config);
        let server = Server::bind(config).expect("bind");
        let addr = server.addresses()[0].clone();
        let handle = server.handle();
        let thread = Some(thread::spawn(move || server.run()));
        TestServer { addr, handle, thread }
    }

    fn spec(&self, extra: &str) -> String {
        if extra.is_empty() {
            format!("socket={}", self.addr)
        } else {
            format!("socket={}//{extra}", self.addr)
        }
    }

    /// Stops the server; returns its final counts (all workers reaped).
    fn stop(&mut self) -> ServerStats {
        self.handle.stop();
        let stats = self.thread.take().expect("running").join().expect("server thread").expect("run");
        assert!(stats.workers.is_empty() && stats.active == 0, "{stats:?}");
        stats
    }

    /// Waits until no connection is being handled and no worker runs.
    fn wait_idle(&self) -> ServerStats {
        assert!(
            eventually(LONG, || {
                let s = self.handle.stats();
                s.active == 0 && s.workers.is_empty()
            }),
            "server not idle: {:?}",
            self.handle.stats()
        );
        self.handle.stats()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.handle.stop();
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

/// A gateway works on the server: one remote_exec round trip.
fn assert_serves(server: &TestServer) {
    let gw = execnet::makegateway(server.spec("").as_str()).expect("gateway");
    let ch = gw.remote_exec("channel.send(channel.receive() + 1)").unwrap();
    ch.send(&41).unwrap();
    assert_eq!(ch.receive::<i64>().unwrap(), 42);
    gw.exit().unwrap();
}

/// Reads whatever the server sends until it closes (or 5 s pass).
fn read_reply(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn token_file(dir: &Path, name: &str, token: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn the_core_works_over_a_socket_gateway() {
    let server = TestServer::start(|_| {});
    let dir = tempfile::tempdir().unwrap();
    let gw = execnet::makegateway(server.spec(&format!("chdir={}//env:SOCKET_TEST=yes", dir.path().display())).as_str())
        .unwrap();
    let info = gw.rinfo().unwrap();
    assert_ne!(info.pid, std::process::id());
    assert_eq!(Path::new(&info.cwd).canonicalize().unwrap(), dir.path().canonicalize().unwrap());
    assert!(gw.local_pid().is_none(), "no local process behind a socket gateway");
    assert_eq!(server.handle.stats().workers, vec![info.pid]);

    // items both ways, environment applied by the worker
    let ch = gw.remote_exec("import os\nfor x in channel: channel.send((x, os.environ['SOCKET_TEST']))").unwrap();
    ch.send(&"a").unwrap();
    assert_eq!(ch.receive::<(String, String)>().unwrap(), ("a".into(), "yes".into()));
    ch.close().unwrap();

    // remote errors, status, channels inside data
    let err = gw.remote_exec("1/0").unwrap().waitclose(None).unwrap_err();
    assert!(matches!(&err, Error::Remote { traceback } if traceback.contains("ZeroDivisionError")), "{err}");
    let status = gw.remote_status().unwrap();
    assert_eq!(status.execmodel, "thread");
    let ch = gw
        .remote_exec("c = channel.gateway.newchannel()\nchannel.send(c)\nc.send('via inner')")
        .unwrap();
    let inner: execnet::Channel = ch.receive().unwrap();
    assert_eq!(inner.receive::<String>().unwrap(), "via inner");

    // a group of socket gateways and a multi-channel
    let group = Group::new();
    group.makegateway(server.spec("").as_str()).unwrap();
    group.makegateway(server.spec("id=second").as_str()).unwrap();
    let mch = group.remote_exec("channel.send(channel.gateway.id)").unwrap();
    let ids: Vec<String> = mch.receive_each().unwrap();
    assert_eq!(ids, ["gw0", "second"]);
    let chans = group.gateways().iter().map(|g| g.remote_exec("import os; channel.send(os.getpid())").unwrap()).collect();
    let pids: Vec<u32> = MultiChannel::new(chans).receive_each().unwrap();
    assert_ne!(pids[0], pids[1], "one process per connection");
    group.terminate(Duration::from_secs(2));

    gw.exit().unwrap();
    assert!(eventually(LONG, || !process_alive(info.pid)), "worker {} left running", info.pid);
    let mut server = server;
    let stats = server.stop();
    assert_eq!((stats.served, stats.refused), (3, 0), "{stats:?}");
    assert!(pids.iter().all(|&p| !process_alive(p)));
}

#[test]
fn addresses_by_name_ipv6_and_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("serve.sock");
    let sock_for_config = sock.clone();
    let mut server = TestServer::start(move |c| c.unix = Some(sock_for_config));
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600, "the Unix socket is private");

    let port = server.addr.rsplit(':').next().unwrap().to_string();
    let specs = [format!("socket=localhost:{port}"), format!("socket=unix:{}", sock.display())];
    for spec in &specs {
        let gw = execnet::makegateway(spec.as_str()).unwrap();
        assert!(gw.rinfo().unwrap().pid > 0, "{spec}");
        gw.exit().unwrap();
    }
    if TcpListener::bind("[::1]:0").is_ok() {
        // A server on [::1], named in brackets.
        let s6 = Server::bind(ServeConfig { listen: vec!["[::1]:0".into()], python: common::python(), ..ServeConfig::default() })
            .unwrap();
        let addr = s6.addresses()[0].clone();
        assert!(addr.starts_with("[::1]:"), "{addr}");
        let h = s6.handle();
        let t = thread::spawn(move || s6.run());
        let gw = Gateway::socket(&addr).unwrap();
        assert!(gw.rinfo().unwrap().pid > 0);
        gw.exit().unwrap();
        h.stop();
        t.join().unwrap().unwrap();
    } else {
        eprintln!("note: no IPv6 loopback here; [::1] not tested");
    }
    server.stop();
    assert!(!sock.exists(), "the Unix socket is removed when the server ends");
}

#[test]
fn client_errors_say_what_went_wrong() {
    // Nothing listens: connection refused, at once.
    let free = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let e = Gateway::socket(&free.to_string()).unwrap_err().to_string();
    assert!(e.contains("connection refused") && e.contains(&free.to_string()), "{e}");

    // Host not found. A label longer than 63 characters is rejected by the resolver
    // itself, before any query is sent: no traffic leaves this machine.
    let e = Gateway::socket(&format!("{}.invalid:8888", "a".repeat(70))).unwrap_err().to_string();
    assert!(e.contains("host not found"), "{e}");

    // Malformed addresses and keys are spec errors.
    for bad in ["socket=::1:80", "socket=host", "socket", "socket=127.0.0.1:1//python=python3", "socket=127.0.0.1:1//handshake_timeout=soon"] {
        let e = execnet::makegateway(bad).unwrap_err();
        assert!(matches!(e, Error::Spec { .. }), "{bad}: {e}");
    }

    // A server that accepts and says nothing: the ready byte never comes.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let keeper = thread::spawn(move || {
        let (conn, _) = silent.accept().unwrap();
        let _ = released.recv_timeout(LONG);
        drop(conn);
    });
    let start = Instant::now();
    let gw = execnet::makegateway(format!("socket={addr}//handshake_timeout=0.5").as_str()).unwrap();
    let e = gw.rinfo().unwrap_err().to_string();
    assert!(e.contains("no ready byte within 500ms"), "{e}");
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    drop(gw);
    release.send(()).unwrap();

    // A server that reads the line and closes before any worker is ready.
    let closing = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closing.local_addr().unwrap();
    let closer = thread::spawn(move || {
        let (conn, _) = closing.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line).unwrap();
        drop(conn);
        line.len()
    });
    let gw = Gateway::socket(&addr.to_string()).unwrap();
    let e = gw.rinfo().unwrap_err().to_string();
    assert!(e.contains(&format!("the socket server at {addr} ended before the worker was ready")), "{e}");
    assert!(closer.join().unwrap() > 10_000, "our bootstrap line was sent");

    // A server that refuses and closes at once, without reading what we send.
    let rude = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = rude.local_addr().unwrap();
    let refuser = thread::spawn(move || {
        let (mut conn, _) = rude.accept().unwrap();
        conn.write_all(b"EXECNET-REFUSED busy, try later\n").unwrap();
    });
    let gw = Gateway::socket(&addr.to_string()).unwrap();
    let e = gw.rinfo().unwrap_err().to_string();
    assert!(e.contains("the server refused the connection: busy, try later"), "{e}");
    refuser.join().unwrap();
    keeper.join().unwrap();
}

#[test]
fn token_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let good = token_file(dir.path(), "good", "correct horse battery staple");
    let bad = token_file(dir.path(), "bad", "incorrect horse battery staple");
    let mut server = TestServer::start(|c| c.token = Some(b"correct horse battery staple".to_vec()));

    // The right token: service.
    let gw = execnet::makegateway(server.spec(&format!("token_file={good}")).as_str()).unwrap();
    assert!(gw.rinfo().unwrap().pid > 0);
    gw.exit().unwrap();

    // A wrong token: refused at once, with the reason.
    let e = execnet::makegateway(server.spec(&format!("token_file={bad}")).as_str()).unwrap_err().to_string();
    assert!(e.contains("refused") && e.contains("authentication failed"), "{e}");

    // No token: the client is told that one is needed.
    let gw = execnet::makegateway(server.spec("").as_str()).unwrap();
    let e = gw.rinfo().unwrap_err().to_string();
    assert!(e.contains("requires an access token") && e.contains("token_file"), "{e}");

    // A raw client sees the challenge, and never the token.
    let mut raw = TcpStream::connect(&server.addr).unwrap();
    raw.write_all(b"'print(1)'\n").unwrap();
    let reply = read_reply(&mut raw);
    let mut lines = reply.lines();
    let challenge = lines.next().unwrap();
    assert!(challenge.starts_with("EXECNET-AUTH1 ") && challenge.len() == 14 + 64, "{reply}");
    assert!(lines.next().unwrap().starts_with("EXECNET-REFUSED authentication failed"), "{reply}");
    assert!(!reply.contains("horse"));

    // A client that leaves in the middle of the handshake.
    let mut raw = TcpStream::connect(&server.addr).unwrap();
    let mut line = String::new();
    BufReader::new(&raw).read_line(&mut line).unwrap();
    assert!(line.starts_with("EXECNET-AUTH1 "), "{line}");
    raw.write_all(b"00ff").unwrap();
    drop(raw);

    assert_serves_with(&server, &good);
    let stats = server.stop();
    assert_eq!(stats.served, 2, "{stats:?}");
    assert_eq!(stats.refused, 4, "{stats:?}");

    // A token client and a server without a token: a clear error after the timeout.
    let plain = TestServer::start(|_| {});
    let e = execnet::makegateway(plain.spec(&format!("token_file={good}//handshake_timeout=0.3")).as_str())
        .unwrap_err()
        .to_string();
    assert!(e.contains("sent no EXECNET-AUTH1 challenge"), "{e}");
}

fn assert_serves_with(server: &TestServer, token: &str) {
    let gw = execnet::makegateway(server.spec(&format!("token_file={token}")).as_str()).unwrap();
    let ch = gw.remote_exec("channel.send(7)").unwrap();
    assert_eq!(ch.receive::<i32>().unwrap(), 7);
    gw.exit().unwrap();
}

#[test]
fn bad_input_is_refused_and_the_server_keeps_serving() {
    let mut server = TestServer::start(|c| c.first_line_timeout = Duration::from_millis(600));

    // Garbage first line.
    let mut raw = TcpStream::connect(&server.addr).unwrap();
    raw.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let reply = read_reply(&mut raw);
    assert!(reply.starts_with("EXECNET-REFUSED the first line is not a Python string literal"), "{reply}");

    // A line of several megabytes.
    let mut raw = TcpStream::connect(&server.addr).unwrap();
    let writer = {
        let mut w = raw.try_clone().unwrap();
        thread::spawn(move || {
            let mut line = vec![b'x'; 4 << 20];
            line[0] = b'\'';
            let _ = w.write_all(&line);
        })
    };
    let reply = read_reply(&mut raw);
    writer.join().unwrap();
    assert!(reply.contains("longer than the limit of 1048576 bytes"), "{reply:?}");

    // A client that connects and says nothing.
    let start = Instant::now();
    let mut raw = TcpStream::connect(&server.addr).unwrap();
    let reply = read_reply(&mut raw);
    assert!(reply.starts_with("EXECNET-REFUSED the first line did not arrive within the time limit"), "{reply}");
    assert!(start.elapsed() < Duration::from_secs(3));

    // A client that disconnects in the middle of its line.
    let mut raw = TcpStream::connect(&server.addr).unwrap();
    raw.write_all(b"'import sys").unwrap();
    drop(raw);

    // A string literal that is not a program: the worker process fails and is reaped.
    let mut raw = TcpStream::connect(&server.addr).unwrap();
    raw.write_all(b"'this is not Python'\n").unwrap();
    assert_eq!(read_reply(&mut raw), "");

    let stats = server.wait_idle();
    assert_eq!((stats.refused, stats.served), (4, 1), "{stats:?}");
    assert_serves(&server);
    server.stop();

    // A server whose interpreter cannot be started refuses with that reason.
    let mut broken = TestServer::start(|c| c.python = "/no/such/python".into());
    let gw = execnet::makegateway(broken.spec("").as_str()).unwrap();
    let e = gw.rinfo().unwrap_err().to_string();
    assert!(e.contains("refused the connection: cannot start the worker interpreter \"/no/such/python\""), "{e}");
    assert_eq!(broken.stop().refused, 1);
}

#[test]
fn thirty_two_clients_at_once() {
    let mut server = TestServer::start(|c| c.max_connections = 16);
    let barrier = Arc::new(Barrier::new(32));
    let spec = server.spec("");
    let clients: Vec<_> = (0..32)
        .map(|_| {
            let (barrier, spec) = (barrier.clone(), spec.clone());
            thread::spawn(move || {
                let outcome = execnet::makegateway(spec.as_str()).map(|gw| {
                    let pid = gw.rinfo().map(|i| i.pid);
                    (gw, pid)
                });
                // Everyone holds on to the connection until all have an answer.
                barrier.wait();
                match outcome {
                    Ok((_gw, Ok(pid))) => Ok(pid),
                    Ok((_gw, Err(e))) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                }
            })
        })
        .collect();
    let results: Vec<_> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let pids: Vec<u32> = results.iter().filter_map(|r| r.as_ref().ok().copied()).collect();
    let refusals: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert_eq!(pids.len(), 16, "{results:?}");
    for e in &refusals {
        assert!(e.contains("refused the connection: too many connections (the limit is 16)"), "{e}");
    }
    let stats = server.wait_idle();
    assert_eq!((stats.accepted, stats.served, stats.refused), (32, 16, 16), "{stats:?}");
    assert!(pids.iter().all(|&p| !process_alive(p)), "a worker was left running");
    assert_serves(&server);
    server.stop();
}

#[test]
fn stopping_the_server_ends_its_workers() {
    let server = TestServer::start(|c| c.grace = Duration::from_millis(500));
    let gw = execnet::makegateway(server.spec("").as_str()).unwrap();
    let ch = gw.remote_exec("import os, time\nchannel.send(os.getpid())\ntime.sleep(60)").unwrap();
    let pid: u32 = ch.receive().unwrap();
    let start = Instant::now();
    let mut server = server;
    server.stop();
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
    assert!(!process_alive(pid), "worker {pid} outlived the server");
    assert!(ch.waitclose(Some(LONG)).is_err(), "the gateway is lost");
    // And the port is closed.
    assert!(TcpStream::connect(&server.addr).is_err());
}

#[test]
fn once_serves_a_single_client() {
    let server = Server::bind(ServeConfig {
        listen: vec!["127.0.0.1:0".into()],
        python: common::python(),
        once: true,
        ..ServeConfig::default()
    })
    .unwrap();
    let addr = server.addresses()[0].clone();
    let t = thread::spawn(move || server.run());
    let gw = Gateway::socket(&addr).unwrap();
    gw.rinfo().unwrap();
    assert!(!t.is_finished(), "the server waits for its worker");
    gw.exit().unwrap();
    let stats = t.join().unwrap().unwrap();
    assert_eq!(stats.served, 1);
    assert!(TcpStream::connect(&addr).is_err(), "no longer listening");
}

#[test]
fn new_remote_socket_and_installvia() {
    // The seed's example: a socket server inside a popen gateway, and a gateway to it.
    let popen = execnet::makegateway(common::popen("").as_str()).unwrap();
    let host_pid = popen.rinfo().unwrap().pid;
    let sgw = Gateway::new_remote_socket(&popen, "127.0.0.1:0").unwrap();
    assert!(sgw.spec().as_str().starts_with("socket=127.0.0.1:"), "{:?}", sgw.spec());
    let info = sgw.rinfo().unwrap();
    assert_eq!(info.pid, host_pid, "the socket worker runs in the popen gateway's process");
    sgw.exit().unwrap();
    // The popen gateway is still fine.
    assert_eq!(popen.remote_exec("channel.send(5)").unwrap().receive::<i32>().unwrap(), 5);

    // installvia=ID in a group.
    let group = Group::new();
    let host = group.makegateway(common::popen("id=host").as_str()).unwrap();
    let host_pid = host.rinfo().unwrap().pid;
    let gw = group.makegateway("socket//installvia=host//id=sock").unwrap();
    assert_eq!(gw.id(), "sock");
    assert_eq!(gw.rinfo().unwrap().pid, host_pid);
    assert!(gw.spec().as_str().contains("installvia=host"));
    let e = group.makegateway("socket//installvia=nobody").unwrap_err().to_string();
    assert!(e.contains("no gateway with that id"), "{e}");
    let e = Gateway::start(&"socket//installvia=host".parse().unwrap(), "x").unwrap_err().to_string();
    assert!(e.contains("Group::makegateway"), "{e}");
    group.terminate(Duration::from_secs(2));
}

#[test]
fn the_execnet_package_host_uses_our_server() {
    let Some(py) = required_part("EXECNET_PYTHON", "a Python with the execnet package") else { return };
    let mut server = TestServer::start(|_| {});
    let script = format!(
        r#"
import execnet
gw = execnet.makegateway("socket={addr}")
ch = gw.remote_exec("import os\nfor x in channel: channel.send((x * 2, os.getpid()))")
ch.send(21)
value, pid = ch.receive()
ch.close()
info = gw._rinfo()
print(value, pid, info.pid)
gw.exit()
"#,
        addr = server.addr
    );
    let out = std::process::Command::new(&py).arg("-c").arg(script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let words: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(words[0], "42");
    assert_eq!(words[1], words[2]);
    let pid: u32 = words[1].parse().unwrap();
    assert!(eventually(LONG, || !process_alive(pid)), "worker {pid} still running after gw.exit()");

    // execnet's host against a server that wants a token: refused, and the server stays up.
    let mut guarded = TestServer::start(|c| c.token = Some(b"0123456789abcdef0123".to_vec()));
    let out = std::process::Command::new(&py)
        .arg("-c")
        .arg(format!("import execnet\nexecnet.makegateway('socket={}')", guarded.addr))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let dir = tempfile::tempdir().unwrap();
    assert_serves_with(&guarded, &token_file(dir.path(), "t", "0123456789abcdef0123"));
    assert_eq!(guarded.stop().refused, 1);
    assert_eq!(server.stop().served, 1);
}

#[test]
fn our_host_uses_the_execnet_package_socketserver() {
    let Some(py) = required_part("EXECNET_PYTHON", "a Python with the execnet package") else { return };
    // execnet 2.1.2: `python -m execnet.script.socketserver HOST:PORT` serves one
    // connection after another, and prints "... Entering Accept loop ('HOST', PORT)".
    let mut child = std::process::Command::new(&py)
        .args(["-u", "-m", "execnet.script.socketserver", "127.0.0.1:0"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.contains("Entering Accept loop"), "{line}");
    let port: u16 = line.trim_end().trim_end_matches(')').rsplit(", ").next().unwrap().parse().unwrap();
    let drain = thread::spawn(move || {
        let mut rest = String::new();
        let _ = out.read_to_string(&mut rest);
    });
    for round in 0..2 {
        let gw = Gateway::socket(&format!("127.0.0.1:{port}")).unwrap();
        let info = gw.rinfo().unwrap();
        assert_eq!(info.pid, child.id(), "round {round}: the worker runs inside the script");
        let ch = gw.remote_exec("for x in channel: channel.send(x + 1)").unwrap();
        ch.send(&round).unwrap();
        assert_eq!(ch.receive::<i32>().unwrap(), round + 1);
        gw.exit().unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drain.join().unwrap();
}

#[test]
fn the_line_contract_is_execnets() {
    // The program sees exactly `clientsock` and `address`, and whatever the client sent
    // after the line is still on the socket for it (the server consumed only the line).
    let mut server = TestServer::start(|_| {});
    let program = "\
        names = sorted(k for k in globals() if not k.startswith('__'))\n\
        extra = b''\n\
        while not extra.endswith(b'!'):\n\
        \x20   extra += clientsock.recv(100)\n\
        clientsock.sendall(repr((names, address, extra)).encode())\n";
    let literal = format!("'{}'\n", program.replace('\\', "\\\\").replace('\n', "\\n").replace('\'', "\\'"));
    let mut raw = TcpStream::connect(&server.addr).unwrap();
    let local = raw.local_addr().unwrap();
    raw.write_all(format!("{literal}after the line!").as_bytes()).unwrap();
    let reply = read_reply(&mut raw);
    assert_eq!(
        reply,
        format!("(['address', 'clientsock'], ('127.0.0.1', {}), b'after the line!')", local.port())
    );
    server.wait_idle();
    server.stop();
}
