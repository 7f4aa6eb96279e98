//! Gateways leave nothing behind: file descriptors, threads and processes come back to
//! where they started. (Its own test binary, so that no other test runs beside it.)

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{eventually, popen, process_alive};

/// The tests of this binary count the process's fds and threads: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// This process's threads by id. Counting them is not enough: the thread of the test
/// that ran before can still be ending when the next one takes its first count.
fn thread_ids() -> BTreeSet<u32> {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The threads running now that were not in `before`, with their names, e.g.
/// `["4711 execnet-gw0-st"]`: what a gateway left behind.
fn new_threads(before: &BTreeSet<u32>) -> Vec<String> {
    thread_ids()
        .difference(before)
        .map(|tid| {
            let name = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).unwrap_or_default();
            format!("{tid} {}", name.trim_end())
        })
        .collect()
}

#[test]
fn create_use_and_drop_cycles_leak_nothing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // warm up lazily created process-wide state
    let threads_before = thread_ids();
    let gw = execnet::makegateway(popen("")).unwrap();
    gw.remote_exec("channel.send(1)").unwrap().receive::<i32>().unwrap();
    gw.exit().unwrap();
    drop(gw);
    assert!(
        eventually(Duration::from_secs(5), || new_threads(&threads_before).is_empty()),
        "threads left by the first gateway: {:?}",
        new_threads(&threads_before)
    );

    let (fds0, threads0) = (open_fds(), thread_ids());
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
        eventually(Duration::from_secs(5), || open_fds() == fds0 && new_threads(&threads0).is_empty()),
        "fds {} -> {}, threads left: {:?}",
        fds0,
        open_fds(),
        new_threads(&threads0)
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
    let (fds0, threads0) = (open_fds(), thread_ids());
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
        eventually(Duration::from_secs(5), || open_fds() <= fds0 && new_threads(&threads0).is_empty()),
        "fds {fds0} -> {}, threads left: {:?}",
        open_fds(),
        new_threads(&threads0)
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
