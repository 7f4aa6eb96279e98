//! Gateways leave nothing behind: file descriptors, threads and processes come back to
//! where they started. (Its own test binary, so that no other test runs beside it.)

mod common;

use std::time::Duration;

use common::{eventually, popen, process_alive};

/// The tests of this binary count the process's fds and threads: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

#[test]
fn create_use_and_drop_cycles_leak_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // warm up lazily created process-wide state
    let threads_before = threads();
    let gw = execnet::makegateway(popen("")).unwrap();
    gw.remote_exec("channel.send(1)").unwrap().receive::<i32>().unwrap();
    gw.exit().unwrap();
    drop(gw);
    assert!(eventually(Duration::from_secs(5), || threads() == threads_before), "threads: {}", threads());

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

/// Many gateway cycles: file descriptors and threads come back to where they started.
fn cycles(n: usize) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // The interpreter's real path: a shim such as pyenv's `python3` costs more per start.
    let gw = execnet::makegateway(popen("")).unwrap();
    let spec = format!("popen//python={}", gw.rinfo().unwrap().executable);
    gw.exit().unwrap();
    drop(gw);
    let gw = execnet::Gateway::start(&spec.parse().unwrap(), "warm").unwrap();
    gw.exit().unwrap();
    drop(gw);
    std::thread::sleep(Duration::from_millis(100));
    let (fds0, threads0) = (open_fds(), threads());
    let t0 = std::time::Instant::now();
    for i in 0..n {
        let gw = execnet::Gateway::start(&spec.parse().unwrap(), "cycle").unwrap();
        let ch = gw.remote_exec("channel.send(channel.receive())").unwrap();
        ch.send(&(i as i64)).unwrap();
        assert_eq!(ch.receive::<i64>().unwrap(), i as i64);
        gw.exit().unwrap();
    }
    eprintln!("{n} gateway cycles in {:?}", t0.elapsed());
    assert!(
        eventually(Duration::from_secs(5), || open_fds() <= fds0 && threads() <= threads0),
        "fds {fds0} -> {}, threads {threads0} -> {}",
        open_fds(),
        threads()
    );
}

#[test]
fn gateway_cycles_leak_nothing_100() {
    cycles(100);
}

/// The full 1,000 cycles of issue 7 (about a minute): `cargo test -p execnet --test
/// leaks -- --ignored`.
#[test]
#[ignore = "slow: 1,000 gateway cycles; run by hand"]
fn gateway_cycles_leak_nothing_1000() {
    cycles(1000);
}
