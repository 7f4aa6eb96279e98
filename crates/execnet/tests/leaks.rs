//! Gateways leave nothing behind: file descriptors, threads and processes come back to
//! where they started. (Its own test binary, so that no other test runs beside it.)

mod common;

use std::time::Duration;

use common::{eventually, popen, process_alive};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn create_use_and_drop_cycles_leak_nothing() {
    // warm up lazily created process-wide state
    let gw = execnet::makegateway(popen("")).unwrap();
    gw.remote_exec("channel.send(1)").unwrap().receive::<i32>().unwrap();
    gw.exit().unwrap();
    drop(gw);
    assert!(eventually(Duration::from_secs(5), || threads() == 1 + 1), "threads: {}", threads());

    let (fds0, threads0) = (open_fds(), threads());
    let mut pids = Vec::new();
    for i in 0..40 {
        let gw = execnet::makegateway(popen("")).unwrap();
        pids.push(gw.local_pid().unwrap());
        let ch = gw.remote_exec("for x in channel: channel.send(x)").unwrap();
        ch.send(&i).unwrap();
        assert_eq!(ch.receive::<i32>().unwrap(), i);
        match i % 3 {
            0 => gw.exit().unwrap(),                               // explicit exit
            1 => ch.close().unwrap(),                              // close, then drop
            _ => gw.terminate(Duration::from_millis(200)).unwrap(), // terminate
        }
    }
    assert!(
        eventually(Duration::from_secs(5), || open_fds() == fds0 && threads() == threads0),
        "fds {} -> {}, threads {} -> {}",
        fds0,
        open_fds(),
        threads0,
        threads()
    );
    for pid in pids {
        assert!(!process_alive(pid), "worker {pid} was not reaped");
    }
}
