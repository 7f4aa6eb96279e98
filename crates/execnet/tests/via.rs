//! Gateways routed through other gateways (`via=ID`): popen via popen, chains of two
//! hops, ssh via popen, popen via ssh (against the test sshd of common/sshd.rs).

mod common;

use std::time::Duration;

use common::sshd::sshd;
use common::{eventually, popen, process_alive, LONG};
use execnet::{Error, ExitStatus, Gateway, Group, Value};

/// (pid, parent pid) of the worker behind `gw`.
fn pids(gw: &Gateway) -> (u32, u32) {
    gw.remote_exec("import os; channel.send((os.getpid(), os.getppid()))").unwrap().receive().unwrap()
}

fn lost(err: Error) -> execnet::LostInfo {
    match err {
        Error::GatewayLost(info) => info,
        other => panic!("expected a lost gateway, got: {other}"),
    }
}

#[test]
fn popen_via_popen_runs_under_the_via_worker() {
    let group = Group::new();
    let master = group.makegateway(popen("id=master")).unwrap();
    let sub = group.makegateway("popen//via=master//id=sub").unwrap();
    let (master_pid, _) = pids(&master);
    let (sub_pid, sub_parent) = pids(&sub);
    assert_eq!(sub_parent, master_pid, "the relay in the master started the sub worker");
    assert_eq!(sub.local_pid(), None, "no local process behind a via gateway");
    // the sub worker runs the master's interpreter when the spec names none
    assert_eq!(sub.rinfo().unwrap().executable, master.rinfo().unwrap().executable);
    // channels work as on any gateway, both ways and with big items
    let ch = sub.remote_exec("for x in channel: channel.send(x)").unwrap();
    let big = serde_bytes::ByteBuf::from(vec![1u8; 1 << 20]);
    ch.send(&big).unwrap();
    assert_eq!(ch.receive::<serde_bytes::ByteBuf>().unwrap(), big);
    ch.send("text").unwrap();
    assert_eq!(ch.receive::<String>().unwrap(), "text");
    ch.close().unwrap();
    // a remote traceback comes back through the relay
    let err = sub.remote_exec("1/0").unwrap().waitclose(Some(LONG)).unwrap_err();
    assert!(err.to_string().contains("ZeroDivisionError"), "{err}");
    // exiting the sub gateway ends its worker and leaves the master working
    sub.exit().unwrap();
    assert!(eventually(LONG, || !process_alive(sub_pid)), "sub worker {sub_pid} still there");
    assert_eq!(master.remote_status().unwrap().numexecuting, 0, "the relay ended");
    assert_eq!(pids(&master).0, master_pid);
}

#[test]
fn chain_of_two_hops() {
    let group = Group::new();
    let a = group.makegateway(popen("id=a")).unwrap();
    let b = group.makegateway("popen//via=a//id=b").unwrap();
    let c = group.makegateway("popen//via=b//id=c//env:EXECNET_HOP=two//chdir=/tmp").unwrap();
    let (a_pid, _) = pids(&a);
    let (b_pid, b_parent) = pids(&b);
    let (c_pid, c_parent) = pids(&c);
    assert_eq!((b_parent, c_parent), (a_pid, b_pid));
    let got: (String, String) = c
        .remote_exec("import os; channel.send((os.environ['EXECNET_HOP'], os.getcwd()))")
        .unwrap()
        .receive()
        .unwrap();
    assert_eq!(got, ("two".to_string(), "/tmp".to_string()));
    // terminating the group ends every hop
    group.terminate(Duration::from_secs(3));
    assert!(eventually(LONG, || ![a_pid, b_pid, c_pid].iter().any(|p| process_alive(*p))));
    assert!(!c.is_alive());
}

#[test]
fn dropping_the_via_gateway_first_loses_the_sub_gateway() {
    let group = Group::new();
    let master = group.makegateway(popen("id=m")).unwrap();
    let sub = group.makegateway("popen//via=m").unwrap();
    let (sub_pid, _) = pids(&sub);
    let ch = sub.remote_exec("channel.send('waiting'); channel.receive()").unwrap();
    assert_eq!(ch.receive::<String>().unwrap(), "waiting");
    master.exit().unwrap();
    // The relay closes the sub worker's input: it ends its execution as a worker does
    // whose host went away (quietly), then the sub gateway is lost.
    let err = ch.receive::<Value>().unwrap_err();
    assert!(matches!(err, Error::EndOfChannel { .. } | Error::GatewayLost(_)), "{err}");
    assert!(eventually(LONG, || !sub.is_alive()));
    let info = sub.lost_info().unwrap();
    assert!(info.reason.contains("its via gateway m was exited or lost"), "{info}");
    assert!(sub.remote_exec("pass").is_err());
    assert!(eventually(LONG, || !process_alive(sub_pid)), "sub worker {sub_pid} outlived its relay");
}

#[test]
fn via_errors_are_explained() {
    let group = Group::new();
    group.makegateway(popen("id=m")).unwrap();
    // no such gateway
    let err = group.makegateway("popen//via=nope").unwrap_err();
    assert!(err.to_string().contains("no gateway with that id"), "{err}");
    // an interpreter that does not exist on the via machine
    let gw = group.makegateway("popen//via=m//python=/nonexistent/python9").unwrap();
    let info = lost(gw.rinfo().unwrap_err());
    assert!(info.reason.contains("could not start /nonexistent/python9 on gateway m"), "{info}");
    assert!(info.reason.contains("No such file"), "{info}");
    // a worker that fails at start: its stderr and exit status come through the relay
    let gw = group.makegateway("popen//via=m//chdir=/proc/no/such/dir").unwrap();
    let info = lost(gw.rinfo().unwrap_err());
    assert_eq!(info.exit_status, Some(ExitStatus::Code(1)), "{info}");
    assert!(info.stderr_tail.contains("cannot change into directory"), "{info}");
    // transports the relay cannot carry, and direct starts of via specs
    let err = group.makegateway("socket=127.0.0.1:1//via=m").unwrap_err();
    assert!(err.to_string().contains("via= works with popen, ssh and command"), "{err}");
    let err = Gateway::start(&"popen//via=m".parse().unwrap(), "x").unwrap_err();
    assert!(err.to_string().contains("Group::makegateway"), "{err}");
}

#[test]
fn ssh_via_popen() {
    let Some(s) = sshd() else { return };
    let group = Group::new();
    let jump = group.makegateway(popen("id=jump")).unwrap();
    let inner = group.makegateway(format!("{}//via=jump//id=inner", s.spec(""))).unwrap();
    let (jump_pid, _) = pids(&jump);
    let (inner_pid, _) = pids(&inner);
    assert_ne!(inner_pid, jump_pid);
    let info = inner.rinfo().unwrap();
    assert_eq!(info.pid, inner_pid);
    // the ssh client runs under the jump worker (the sshd's session is the worker's parent)
    let ssh_clients: Vec<u32> = children_of(jump_pid);
    assert_eq!(ssh_clients.len(), 1, "one ssh client under the jump worker: {ssh_clients:?}");
    // a missing remote python is explained through the relay too
    let bad = group.makegateway(format!("{}//via=jump", s.spec("python=/nonexistent/py"))).unwrap();
    let info = lost(bad.rinfo().unwrap_err());
    assert!(info.reason.contains("did not find the interpreter"), "{info}");
    assert_eq!(info.exit_status, Some(ExitStatus::Code(127)), "{info}");
    let err = group.makegateway(format!("{}//via=jump", s.spec("ssh_share"))).unwrap_err();
    assert!(err.to_string().contains("ssh_share does not combine with via="), "{err}");
}

#[test]
fn popen_via_ssh_and_a_second_hop() {
    let Some(s) = sshd() else { return };
    let group = Group::new();
    let remote = group.makegateway(s.spec("id=remote")).unwrap();
    let sub = group.makegateway("popen//via=remote//id=sub").unwrap();
    let subsub = group.makegateway("popen//via=sub//id=subsub").unwrap();
    let (remote_pid, _) = pids(&remote);
    let (sub_pid, sub_parent) = pids(&sub);
    let (_, subsub_parent) = pids(&subsub);
    assert_eq!((sub_parent, subsub_parent), (remote_pid, sub_pid));
    let ch = subsub.remote_exec("for x in channel: channel.send(x * 2)").unwrap();
    for i in 0..50 {
        ch.send(&i).unwrap();
        assert_eq!(ch.receive::<i64>().unwrap(), i * 2);
    }
    ch.close().unwrap();
    // ssh from the remote side onwards: the ssh client runs under the remote worker
    let onward = group.makegateway(format!("{}//via=remote", s.spec(""))).unwrap();
    let (onward_pid, _) = pids(&onward);
    assert!(![remote_pid, sub_pid].contains(&onward_pid));
    assert_eq!(children_of(remote_pid).len(), 2, "the sub worker and an ssh client under the remote worker");
}

fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) {
            let after = stat.rsplit(')').next().unwrap_or("");
            let ppid = after.split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(child);
            }
        }
    }
    out
}
