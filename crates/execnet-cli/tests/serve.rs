//! `execnet serve`, run as an operator would, with clients on loopback only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

fn python() -> String {
    std::env::var("EXECNET_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A running `execnet serve`: its child, the address it printed, its stderr collected.
struct Serve {
    child: Child,
    addr: String,
    stderr: Option<JoinHandle<String>>,
}

impl Serve {
    fn start(args: &[&str]) -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_execnet"))
            .arg("serve")
            .args(["--python", &python()])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting execnet serve");
        let mut err = child.stderr.take().unwrap();
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line
            .trim_end()
            .strip_prefix("listening on socket=")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Serve { child, addr, stderr: Some(stderr) }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args([sig, &self.child.id().to_string()]).status().unwrap().success();
        assert!(ok, "kill {sig}");
    }

    /// Waits (up to 10 s) for the server to exit; returns its exit code and its stderr.
    fn wait(&mut self) -> (Option<i32>, String) {
        let end = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > end {
                let _ = self.child.kill();
                panic!("execnet serve did not exit");
            }
            thread::sleep(Duration::from_millis(20));
        };
        (status.code(), self.stderr.take().unwrap().join().unwrap())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Pids whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) {
            let after = stat.rsplit(')').next().unwrap_or("");
            let ppid = after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(child);
            }
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !matches!(s.rsplit(')').next().unwrap_or("").trim_start().chars().next(), Some('Z') | Some('X')))
        .unwrap_or(false)
}

fn private_file(dir: &Path, name: &str, content: &str, mode: u32) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn serves_logs_refusals_and_ends_its_workers_on_sigint() {
    let mut server = Serve::start(&["--listen", "127.0.0.1:0", "--first-line-timeout", "2"]);
    assert!(server.addr.starts_with("127.0.0.1:"), "{}", server.addr);
    let spec = format!("socket={}", server.addr);

    // The command-line client.
    let out = Command::new(env!("CARGO_BIN_EXE_execnet"))
        .args(["run", "-x", &spec, "-x", &spec, "-c", "channel.send(channel.gateway.id)"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    lines.sort();
    assert_eq!(lines, ["[gw0] 'gw0'", "[gw1] 'gw1'"]);

    // A garbage line is refused with the reason; the refusal is logged with the peer.
    let mut raw = TcpStream::connect(&server.addr).unwrap();
    let peer = raw.local_addr().unwrap().to_string();
    raw.write_all(b"hello\n").unwrap();
    let mut reply = String::new();
    raw.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("EXECNET-REFUSED the first line is not a Python string literal"), "{reply}");

    // A worker that is busy when the server stops.
    let gw = execnet::makegateway(spec.as_str()).unwrap();
    let ch = gw.remote_exec("import os, time\nchannel.send(os.getpid())\ntime.sleep(60)").unwrap();
    let pid: u32 = ch.receive().unwrap();
    assert_eq!(children_of(server.child.id()), [pid]);

    server.signal("-INT");
    let (code, log) = server.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(!alive(pid), "worker {pid} outlived the server");
    assert!(log.contains(&format!("refused {peer}: the first line is not a Python string literal")), "{log}");
    assert!(log.contains("serving 127.0.0.1:") && log.contains("SIGTERM"), "{log}");
    assert!(log.contains("4 connections accepted, 3 served, 1 refused"), "{log}");
    assert!(ch.waitclose(Some(Duration::from_secs(10))).is_err(), "the gateway is lost");
}

#[test]
fn unix_socket_with_token_and_once() {
    let dir = tempfile::tempdir().unwrap();
    let token = private_file(dir.path(), "token", "a long random token, 0123456789\n", 0o600);
    let sock = dir.path().join("serve.sock");
    let mut server =
        Serve::start(&["--unix", sock.to_str().unwrap(), "--token-file", &token, "--once", "--quiet"]);
    assert_eq!(server.addr, format!("unix:{}", sock.display()));
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let wrong = private_file(dir.path(), "wrong", "not the token at all, 0123456789", 0o600);
    let e = execnet::makegateway(format!("socket={}//token_file={wrong}", server.addr).as_str())
        .unwrap_err()
        .to_string();
    assert!(e.contains("authentication failed"), "{e}");

    let gw = execnet::makegateway(format!("socket={}//token_file={token}", server.addr).as_str()).unwrap();
    let pid = gw.rinfo().unwrap().pid;
    assert_eq!(children_of(server.child.id()), [pid], "the worker is a child of the server");
    gw.exit().unwrap();
    // --once: the server ends by itself once its one worker has.
    let (code, log) = server.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("refused unix peer pid") && log.contains("authentication failed"), "{log}");
    assert!(!log.contains("INFO"), "--quiet logs refusals only: {log}");
    assert!(!sock.exists());
}

#[test]
fn sigterm_stops_an_idle_server() {
    let mut server = Serve::start(&["--listen", "localhost:0"]);
    server.signal("-TERM");
    let (code, log) = server.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("0 connections accepted"), "{log}");
}

#[test]
fn unsafe_settings_are_refused_before_listening() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_execnet")).arg("serve").args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out.stdout));
        assert!(out.stdout.is_empty(), "{args:?} printed an address");
        text(&out.stderr)
    };
    // A non-loopback address without a token (only the argument check runs: nothing is
    // bound and no traffic is sent).
    let err = run(&["--listen", "0.0.0.0:0"]);
    assert!(err.contains("refusing to listen on 0.0.0.0:0") && err.contains("--token-file"), "{err}");
    let err = run(&["--listen", "[::]:0"]);
    assert!(err.contains("refusing to listen on [::]:0"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let shared = private_file(dir.path(), "shared", "a long random token, 0123456789", 0o644);
    let err = run(&["--listen", "0.0.0.0:0", "--token-file", &shared]);
    assert!(err.contains("can be read by other users") && err.contains("chmod 600"), "{err}");
    let short = private_file(dir.path(), "short", "secret", 0o600);
    let err = run(&["--token-file", &short]);
    assert!(err.contains("at least 16"), "{err}");
    let err = run(&["--listen", "nonsense"]);
    assert!(err.contains("cannot listen on nonsense"), "{err}");
    let err = run(&["--first-line-timeout", "0"]);
    assert!(err.contains("positive number of seconds"), "{err}");
}
