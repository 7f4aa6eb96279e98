//! Hostile input (issue 7): malformed frames from a fake worker, and a socket server fed
//! random bytes. (The parser and deserializer fuzz loop is in fuzz_wire.rs.)

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use common::LONG;
use execnet::server::{ServeConfig, Server};
use execnet::Error;

/// A fake "interpreter": it reads the bootstrap (the popen loader and what it reads, whose
/// lengths it takes from the `-c` program and the loader, as the real loader does),
/// writes the ready byte, reads one frame from the host (the first remote_exec), then
/// writes the bytes given in hex in $FAKE_BYTES and waits for its input to end.
fn fake_worker(dir: &tempfile::TempDir) -> PathBuf {
    let script = dir.path().join("fake_worker.py");
    std::fs::write(
        &script,
        r#"
import os, re, sys, struct
inp = sys.stdin.buffer
program = sys.argv[sys.argv.index("-c") + 1]
loader_len = re.search(r"< (\d+):", program)
if loader_len:
    loader = inp.read(int(loader_len.group(1))).decode()
    code_len, source_len = map(int, re.search(r"_execnet_rs_boot\((\d+), (\d+),", loader).groups())
    inp.read(code_len + source_len)
else:
    inp.readline()
os.write(1, b"1")
header = inp.read(9)
code, channel, size = struct.unpack("!biI", header)
inp.read(size)
os.write(1, bytes.fromhex(os.environ["FAKE_BYTES"]))
if os.environ.get("FAKE_EXIT"):
    os._exit(0)
inp.read()
"#,
    )
    .unwrap();
    let wrapper = dir.path().join("fakepython");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec {} -u {} \"$@\"\n", common::python(), script.display()))
        .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

fn frame(code: i8, channel: i32, len: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![code as u8];
    f.extend_from_slice(&channel.to_be_bytes());
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the fake worker with `bytes`; returns why the gateway was lost.
fn lost_reason(bytes: &[u8], exit_after: bool) -> String {
    let dir = tempfile::tempdir().unwrap();
    let python = fake_worker(&dir);
    let mut spec = format!("popen//python={}//env:FAKE_BYTES={}", python.display(), hex(bytes));
    if exit_after {
        spec.push_str("//env:FAKE_EXIT=1");
    }
    let gw = execnet::makegateway(spec.as_str()).unwrap();
    let ch = gw.remote_exec("pass").unwrap(); // channel 1
    let t0 = Instant::now();
    // A receive blocked on the channel ends: with the loss, or (when the bad frame came
    // after a well-formed CHANNEL_CLOSE) with the end of the channel.
    match ch.receive::<execnet::Value>() {
        Err(Error::GatewayLost(_)) | Err(Error::EndOfChannel { .. }) => {}
        other => panic!("expected GatewayLost, got {other:?}"),
    }
    assert!(common::eventually(LONG, || !gw.is_alive()));
    assert!(t0.elapsed() < Duration::from_secs(5));
    let info = gw.lost_info().unwrap();
    // Further use fails cleanly too.
    assert!(matches!(gw.remote_exec("pass"), Err(Error::GatewayLost(_))));
    gw.exit().unwrap();
    info.reason
}

fn assert_reason(bytes: &[u8], exit_after: bool, wanted: &[&str]) {
    let reason = lost_reason(bytes, exit_after);
    for w in wanted {
        assert!(reason.contains(w), "reason {reason:?} does not say {w:?}");
    }
}

#[test]
fn unknown_message_code() {
    assert_reason(&frame(9, 1, 0, b""), false, &["unknown message code 9"]);
    assert_reason(&frame(-3, 1, 0, b""), false, &["unknown message code -3"]);
}

#[test]
fn frames_for_channels_that_cannot_exist() {
    assert_reason(&frame(5, 99, 0, b""), false, &["CHANNEL_CLOSE for channel 99, which the host never opened"]);
    assert_reason(&frame(4, -4, 1, b"N"), false, &["CHANNEL_DATA for channel -4", "positive"]);
    assert_reason(&frame(7, 0, 0, b""), false, &["CHANNEL_LAST_MESSAGE for channel 0"]);
}

#[test]
fn data_after_close() {
    let mut bytes = frame(5, 1, 0, b"");
    bytes.extend(frame(4, 1, 1, b"N")); // None, after CHANNEL_CLOSE
    assert_reason(&bytes, false, &["CHANNEL_DATA for channel 1 after the worker closed it"]);
    let mut bytes = frame(7, 1, 0, b"");
    bytes.extend(frame(4, 1, 1, b"N"));
    assert_reason(&bytes, false, &["after the worker sent its last message"]);
}

#[test]
fn truncated_frames() {
    let mut bytes = frame(4, 1, 100, b"");
    bytes.extend_from_slice(&[b'N'; 10]);
    assert_reason(&bytes, true, &["stream ended inside the payload of a CHANNEL_DATA frame (10 of 100 bytes)"]);
    assert_reason(&[4, 0, 0], true, &["stream ended inside a frame header (3 of 9 bytes)"]);
}

#[test]
fn huge_lengths_are_refused_before_allocating() {
    // 2 GiB does not fit the signed 32-bit length: negative.
    assert_reason(&frame(4, 1, 1 << 31, b""), false, &["negative payload length -2147483648"]);
    // 2 GiB - 1: more than the maximum message size (1 GiB by default).
    assert_reason(&frame(4, 1, (1 << 31) - 1, b""), false, &["2147483647 bytes", "maximum message size of 1073741824"]);
}

#[test]
fn max_message_is_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let python = fake_worker(&dir);
    let bytes = frame(4, 1, 2000, &[0u8; 2000]);
    let spec = format!("popen//python={}//env:FAKE_BYTES={}//max_message=1000", python.display(), hex(&bytes));
    let gw = execnet::makegateway(spec.as_str()).unwrap();
    let ch = gw.remote_exec("pass").unwrap();
    match ch.waitclose(Some(LONG)) {
        Err(Error::GatewayLost(info)) => {
            assert!(info.reason.contains("maximum message size of 1000"), "{info}")
        }
        other => panic!("{other:?}"),
    }
}

/// 100 connections of random bytes (some with a newline, some without, some closing at
/// once): the server stays up and serves the next honest client.
#[test]
fn socket_server_survives_random_bytes() {
    let config = ServeConfig {
        listen: vec!["127.0.0.1:0".into()],
        python: common::python(),
        first_line_timeout: Duration::from_secs(2),
        max_connections: 200,
        ..ServeConfig::default()
    };
    let server = Server::bind(config).unwrap();
    let addr = server.addresses()[0].clone();
    let handle = server.handle();
    let run = thread::spawn(move || server.run());

    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rand = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut clients = Vec::new();
    for i in 0..100 {
        let len = (rand() % 4096) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
        if i % 3 == 0 {
            bytes.push(b'\n');
        }
        let addr = addr.clone();
        clients.push(thread::spawn(move || {
            let Ok(mut s) = TcpStream::connect(&addr) else { return };
            let _ = s.write_all(&bytes);
            if i % 2 == 0 {
                let _ = s.shutdown(std::net::Shutdown::Write);
            }
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut sink = Vec::new();
            let _ = s.read_to_end(&mut sink);
        }));
    }
    for c in clients {
        c.join().unwrap();
    }
    // The server is still there and serves an honest client.
    let gw = execnet::makegateway(format!("socket={addr}").as_str()).unwrap();
    let ch = gw.remote_exec("channel.send(channel.receive() + 1)").unwrap();
    ch.send(&41).unwrap();
    assert_eq!(ch.receive::<i64>().unwrap(), 42);
    gw.exit().unwrap();
    assert!(common::eventually(LONG, || handle.stats().workers.is_empty()));
    handle.stop();
    let stats = run.join().unwrap().unwrap();
    assert!(stats.workers.is_empty(), "{stats:?}");
}
