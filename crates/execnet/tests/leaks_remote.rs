//! ssh and via gateways leave nothing behind either: file descriptors and threads come
//! back to where they started. (Its own test binary, so that no other test runs beside
//! it; the one test covers both, one after the other.)

mod common;

use std::time::Duration;

use common::{eventually, popen, process_alive};
use execnet::Group;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

fn via_cycle(i: usize) -> Vec<u32> {
    let group = Group::new();
    let master = group.makegateway(popen("id=m")).unwrap();
    let sub = group.makegateway("popen//via=m//id=s").unwrap();
    let ch = sub.remote_exec("import os\nfor x in channel: channel.send((x, os.getpid()))").unwrap();
    ch.send(&i).unwrap();
    let (x, pid): (usize, u32) = ch.receive().unwrap();
    assert_eq!(x, i);
    let master_pid: u32 = master.remote_exec("import os; channel.send(os.getpid())").unwrap().receive().unwrap();
    match i % 3 {
        0 => sub.exit().unwrap(),
        1 => ch.close().unwrap(),
        _ => sub.terminate(Duration::from_millis(200)).unwrap(),
    }
    vec![pid, master_pid]
}

fn ssh_cycle(spec: &str) -> u32 {
    let gw = execnet::makegateway(spec).unwrap();
    let pid: u32 = gw.remote_exec("import os; channel.send(os.getpid())").unwrap().receive().unwrap();
    gw.exit().unwrap();
    pid
}

#[test]
fn via_and_ssh_cycles_leak_nothing() {
    let sshd = common::sshd::sshd();
    // warm up lazily created process-wide state
    via_cycle(0);
    if let Some(s) = sshd {
        ssh_cycle(&s.spec(""));
    }
    assert!(eventually(Duration::from_secs(5), || threads() == 2), "threads: {}", threads());

    let (fds0, threads0) = (open_fds(), threads());
    let mut pids = Vec::new();
    for i in 0..9 {
        pids.extend(via_cycle(i));
    }
    if let Some(s) = sshd {
        for _ in 0..3 {
            pids.push(ssh_cycle(&s.spec("")));
        }
    }
    assert!(
        eventually(Duration::from_secs(10), || open_fds() == fds0 && threads() == threads0),
        "fds {} -> {}, threads {} -> {}",
        fds0,
        open_fds(),
        threads0,
        threads()
    );
    assert!(eventually(Duration::from_secs(10), || pids.iter().all(|p| !process_alive(*p))), "workers left");
}
