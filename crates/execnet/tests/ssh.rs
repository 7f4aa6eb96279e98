//! ssh gateways against a real OpenSSH server on 127.0.0.1 (see common/sshd.rs).
//!
//! The server runs on this machine, so remote pids can be checked with /proc here.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::sshd::{sshd, Sshd};
use common::{eventually, process_alive, LONG};
use execnet::{Error, ExitStatus, Gateway, Group, MultiChannel, Value};
use serde_bytes::ByteBuf;

fn server() -> Option<&'static Sshd> {
    sshd()
}

fn lost(err: Error) -> execnet::LostInfo {
    match err {
        Error::GatewayLost(info) => info,
        other => panic!("expected a lost gateway, got: {other}"),
    }
}

// ---- the seed's examples, over ssh -----------------------------------------------------

#[test]
fn seed_remote_pid_over_ssh() {
    let Some(s) = server() else { return };
    let gw = execnet::makegateway(s.spec("")).unwrap();
    let ch = gw.remote_exec("import os\nchannel.send(os.getpid())").unwrap();
    let pid: u32 = ch.receive().unwrap();
    assert_ne!(pid, std::process::id());
    assert_ne!(Some(pid), gw.local_pid(), "local_pid is the ssh client, not the worker");
    assert!(process_alive(pid));
    gw.exit().unwrap();
    assert!(eventually(LONG, || !process_alive(pid)), "remote worker {pid} outlived exit()");
}

#[test]
fn seed_cwd_over_ssh_is_the_login_directory_or_chdir() {
    let Some(s) = server() else { return };
    let gw = execnet::makegateway(s.spec("")).unwrap();
    let cwd: String = gw.remote_exec("import os; channel.send(os.getcwd())").unwrap().receive().unwrap();
    let home: String =
        gw.remote_exec("import os; channel.send(os.path.expanduser('~'))").unwrap().receive().unwrap();
    assert_eq!(cwd, home);
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("made/by/chdir");
    let gw = execnet::makegateway(s.spec(&format!("chdir={}", target.display()))).unwrap();
    assert_eq!(gw.rinfo().unwrap().cwd, target.to_str().unwrap());
}

#[test]
fn seed_read_files_through_a_channel_over_ssh() {
    let Some(s) = server() else { return };
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<(String, Vec<u8>)> = [b"hello, world\n".to_vec(), vec![0, 1, 2, 254, 255], vec![b'x'; 300_000]]
        .into_iter()
        .enumerate()
        .map(|(i, content)| {
            let path = dir.path().join(format!("file{i}"));
            std::fs::write(&path, &content).unwrap();
            (path.to_str().unwrap().to_string(), content)
        })
        .collect();
    let gw = execnet::makegateway(s.spec("")).unwrap();
    let channel = gw
        .remote_exec(
            r#"
            for fn in channel:
                with open(fn, 'rb') as f:
                    channel.send(f.read())
            "#,
        )
        .unwrap();
    for (path, expected) in &files {
        channel.send(path).unwrap();
        let content: ByteBuf = channel.receive().unwrap();
        assert_eq!(&content[..], &expected[..]);
    }
    channel.close().unwrap();
    channel.waitclose(Some(LONG)).unwrap();
    gw.exit().unwrap();
}

#[test]
fn seed_multichannel_receive_each_and_queue_over_two_ssh_gateways() {
    let Some(s) = server() else { return };
    let group = Group::new();
    group.makegateway(s.spec("")).unwrap();
    group.makegateway(s.direct_spec("")).unwrap();
    let mch = group.remote_exec("channel.send(channel.gateway.id)").unwrap();
    let ids: Vec<String> = mch.receive_each().unwrap();
    assert_eq!(ids, ["gw0", "gw1"]);

    let mch = group.remote_exec("import os; channel.send(os.getpid())").unwrap();
    let mut queue = mch.make_receive_queue::<u32>().unwrap();
    let (mut pids, mut ends) = (BTreeSet::new(), 0);
    while ends < 2 {
        match queue.get_timeout(LONG).unwrap() {
            (_, Some(pid)) => {
                pids.insert(pid);
            }
            (_, None) => ends += 1,
        }
    }
    assert_eq!(pids.len(), 2, "two workers: {pids:?}");
}

#[test]
fn remote_traceback_over_ssh() {
    let Some(s) = server() else { return };
    let gw = execnet::makegateway(s.spec("")).unwrap();
    let ch = gw.remote_exec("def inner():\n    raise ValueError('boom over ssh')\ninner()\n").unwrap();
    let err = ch.receive::<Value>().unwrap_err();
    let tb = err.remote_traceback().expect("a remote error");
    assert!(tb.contains("ValueError: boom over ssh") && tb.contains("inner"), "{tb}");
    // the gateway goes on working
    let ch = gw.remote_exec("channel.send('still here')").unwrap();
    assert_eq!(ch.receive::<String>().unwrap(), "still here");
}

// ---- everything of the core, over ssh --------------------------------------------------

#[test]
fn rinfo_status_and_gateway_shorthand() {
    let Some(s) = server() else { return };
    let gw = Gateway::ssh(&format!("-F {} {}", s.client_config.display(), common::sshd::HOST_ALIAS)).unwrap();
    let info = gw.rinfo().unwrap();
    assert_eq!(info.version_info.0, 3);
    assert_eq!(info.platform, "linux");
    let status = gw.remote_status().unwrap();
    assert_eq!(status.execmodel, "thread");
    assert!(gw.spec().as_str().starts_with("ssh=-F "));
}

#[test]
fn env_bytecode_and_execmodel_keys_over_ssh() {
    let Some(s) = server() else { return };
    let gw = execnet::makegateway(s.direct_spec(
        "env:EXECNET_SSH_TEST=a b 'c'//dont_write_bytecode//execmodel=main_thread_only",
    ))
    .unwrap();
    let ch = gw
        .remote_exec(
            "import os, sys, threading\n\
             channel.send((os.environ.get('EXECNET_SSH_TEST'), sys.flags.dont_write_bytecode,\n\
             threading.current_thread() is threading.main_thread()))",
        )
        .unwrap();
    let got: (String, i64, bool) = ch.receive().unwrap();
    assert_eq!(got, ("a b 'c'".to_string(), 1, true));
}

#[test]
fn big_items_and_channels_inside_data_over_ssh() {
    let Some(s) = server() else { return };
    let gw = execnet::makegateway(s.spec("")).unwrap();
    let ch = gw.remote_exec("for x in channel: channel.send(x)").unwrap();
    let big = ByteBuf::from(vec![7u8; 2 * 1024 * 1024]);
    ch.send(&big).unwrap();
    let back: ByteBuf = ch.receive().unwrap();
    assert_eq!(back, big);
    ch.close().unwrap();

    let ch = gw.remote_exec("sub = channel.receive(); sub.send('via a sent channel')").unwrap();
    let sub = gw.newchannel().unwrap();
    ch.send(&sub).unwrap();
    assert_eq!(sub.receive::<String>().unwrap(), "via a sent channel");
}

#[test]
fn remote_worker_killed_is_reported() {
    let Some(s) = server() else { return };
    let gw = execnet::makegateway(s.spec("")).unwrap();
    let ch = gw
        .remote_exec("import os, sys\nsys.stderr.write('last words\\n'); sys.stderr.flush()\nos._exit(3)")
        .unwrap();
    let info = lost(ch.receive::<Value>().unwrap_err());
    assert_eq!(info.exit_status, Some(ExitStatus::Code(3)), "{info}");
    assert!(info.stderr_tail.contains("last words"), "{info}");
}

// ---- failures that say what happened ---------------------------------------------------

#[test]
fn wrong_port_says_unreachable() {
    let Some(s) = server() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gw = execnet::makegateway(format!("ssh={}", s.host_args(port, &s.key))).unwrap();
    let info = lost(gw.rinfo().unwrap_err());
    assert!(info.reason.contains("host unreachable"), "{info}");
    assert_eq!(info.exit_status, Some(ExitStatus::Code(255)), "{info}");
    assert!(info.stderr_tail.contains("Connection refused"), "ssh's own message: {info}");
}

#[test]
fn wait_ready_reports_the_failure_to_start_and_succeeds_on_a_working_host() {
    let Some(s) = server() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let gw = execnet::makegateway(format!("ssh={}", s.host_args(port, &s.key))).unwrap();
    let info = lost(gw.wait_ready(LONG).unwrap_err());
    assert!(info.reason.contains("host unreachable"), "{info}");
    assert!(info.stderr_tail.contains("Connection refused"), "ssh's own message: {info}");

    let gw = execnet::makegateway(s.spec("")).unwrap();
    gw.wait_ready(LONG).unwrap();
    let ch = gw.remote_exec("channel.send(7)").unwrap();
    assert_eq!(ch.receive::<i64>().unwrap(), 7);
    gw.wait_ready(Duration::ZERO).unwrap(); // ready stays ready
    gw.exit().unwrap();
}

#[test]
fn refused_key_says_authentication_refused() {
    let Some(s) = server() else { return };
    let gw = execnet::makegateway(format!("ssh={}", s.host_args(s.port, &s.other_key))).unwrap();
    let info = lost(gw.rinfo().unwrap_err());
    assert!(info.reason.contains("authentication refused"), "{info}");
    assert!(info.stderr_tail.contains("Permission denied"), "{info}");
}

#[test]
fn missing_remote_python_is_named() {
    let Some(s) = server() else { return };
    let gw = execnet::makegateway(s.spec("python=/nonexistent/python3.99")).unwrap();
    let err = gw.remote_exec("channel.send(1)").and_then(|ch| ch.receive::<i32>()).unwrap_err();
    let info = lost(err);
    assert!(info.reason.contains("did not find the interpreter \"/nonexistent/python3.99\""), "{info}");
    assert_eq!(info.exit_status, Some(ExitStatus::Code(127)), "{info}");
    assert!(info.stderr_tail.contains("/nonexistent/python3.99"), "the remote shell's message: {info}");
    let text = Error::GatewayLost(info).to_string();
    assert!(text.contains("python="), "{text}");
}

#[test]
fn bad_ssh_specs_are_rejected() {
    for (spec, needle) in [("ssh=", "ssh needs a value, as in ssh=user@host"), ("ssh= //python=python3", "ssh needs a value")] {
        let err = execnet::makegateway(spec).unwrap_err();
        assert!(err.to_string().contains(needle), "{spec}: {err}");
    }
}

// ---- many gateways, shared connections -------------------------------------------------

#[test]
fn eight_ssh_gateways_at_once() {
    let Some(s) = server() else { return };
    let start = Instant::now();
    let group = Group::new();
    for i in 0..8 {
        let spec = if i % 2 == 0 { s.spec("") } else { s.direct_spec("") };
        group.makegateway(spec).unwrap();
    }
    let mch = group.remote_exec("import os; channel.send((channel.gateway.id, os.getpid()))").unwrap();
    let got: Vec<(String, u32)> = mch.receive_each().unwrap();
    let pids: BTreeSet<u32> = got.iter().map(|(_, p)| *p).collect();
    assert_eq!(pids.len(), 8);
    assert_eq!(got.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(), (0..8).map(|i| format!("gw{i}")).collect::<Vec<_>>());
    mch.waitclose(Some(LONG)).unwrap();
    let elapsed = start.elapsed();
    group.terminate(Duration::from_secs(3));
    assert!(eventually(LONG, || pids.iter().all(|p| !process_alive(*p))), "workers left: {pids:?}");
    eprintln!("8 ssh gateways started and used in {elapsed:?}");
}

/// The running ssh master processes whose command line holds `marker`.
fn master_pids(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let is_master = cmd.starts_with("ssh ") && cmd.contains("ControlMaster=yes");
            if is_master && cmd.contains(marker) && process_alive(pid) {
                pids.push(pid);
            }
        }
    }
    pids
}

fn masters(marker: &str) -> usize {
    master_pids(marker).len()
}

#[test]
fn shared_connections_are_reused_and_stopped() {
    let Some(s) = server() else { return };
    // a host of its own, so that no other test shares this master
    let spec = format!("ssh=-F {} -o ServerAliveInterval=30 {}//ssh_share=20", s.client_config.display(), common::sshd::HOST_ALIAS);
    let start = Instant::now();
    let first = execnet::makegateway(spec.as_str()).unwrap();
    first.rinfo().unwrap();
    let first_time = start.elapsed();
    let marker = "ServerAliveInterval=30";
    assert_eq!(masters(marker), 1, "one master connection");
    let start = Instant::now();
    let more: Vec<Gateway> = (0..4).map(|_| execnet::makegateway(spec.as_str()).unwrap()).collect();
    for gw in &more {
        gw.rinfo().unwrap();
    }
    let shared_time = start.elapsed() / 4;
    assert_eq!(masters(marker), 1, "still one master connection");
    eprintln!("first ssh_share gateway {first_time:?}, then {shared_time:?} each");
    drop(more);
    first.exit().unwrap();
    drop(first);
    execnet::transport::ssh::stop_shared_connections();
    assert!(eventually(LONG, || masters(marker) == 0), "the master ended after stop");
    // a later gateway starts a new master
    let again = execnet::makegateway(spec.as_str()).unwrap();
    again.rinfo().unwrap();
    assert_eq!(masters(marker), 1);
    again.exit().unwrap();
    // a master killed outright leaves a stale socket: the next gateway replaces it
    let pid = master_pids(marker)[0];
    // SAFETY: killing the ssh master process this test's gateway started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(eventually(LONG, || masters(marker) == 0));
    let after_kill = execnet::makegateway(spec.as_str()).unwrap();
    after_kill.rinfo().unwrap();
    assert_eq!(masters(marker), 1, "a new master replaced the killed one");
    after_kill.exit().unwrap();
    execnet::transport::ssh::stop_shared_connections();
    assert!(eventually(LONG, || masters(marker) == 0));
}

#[test]
fn shared_connection_failure_is_immediate_and_explained() {
    let Some(s) = server() else { return };
    let spec = format!("ssh={}//ssh_share", s.host_args(s.port, &s.other_key));
    let err = execnet::makegateway(spec).unwrap_err();
    assert!(matches!(err, Error::Spawn { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains("authentication refused") && text.contains("Permission denied"), "{text}");
}

#[test]
fn group_mixes_ssh_and_popen() {
    let Some(s) = server() else { return };
    let group = Group::new();
    group.makegateway(common::popen("id=local")).unwrap();
    group.makegateway(s.spec("id=remote")).unwrap();
    let mch: MultiChannel = group.remote_exec("channel.send(channel.gateway.id)").unwrap();
    let ids: Vec<String> = mch.receive_each().unwrap();
    assert_eq!(ids, ["local", "remote"]);
    assert!(group.get("remote").unwrap().spec().as_str().starts_with("ssh="));
}

// ---- the harness itself ----------------------------------------------------------------

/// The harness waits for sshd by its banner, not by "something accepts": a port picked
/// free can be taken by another test's listener before sshd binds it (sshd then exits
/// with "Address already in use" while the other listener answers), which once made an
/// ssh test fail with "connection refused" in CI.
#[test]
fn the_harness_tells_sshd_from_another_listener() {
    use std::io::Write;
    let Some(s) = server() else { return };
    assert!(common::sshd::speaks_ssh(s.port, LONG), "the test sshd's port does not answer with a banner");

    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = other.local_addr().unwrap().port();
    let answer = std::thread::spawn(move || {
        let (mut conn, _) = other.accept().unwrap();
        conn.write_all(b"HTTP/1.0 400 Bad Request\r\n\r\n").unwrap();
    });
    assert!(!common::sshd::speaks_ssh(port, LONG), "a listener that is not sshd was taken for it");
    answer.join().unwrap();

    // A listener that accepts and stays silent is not sshd either (after the timeout).
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    assert!(!common::sshd::speaks_ssh(port, Duration::from_millis(200)));
}
