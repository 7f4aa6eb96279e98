//! Reliability under load (issue 7): many channels and threads at once, and a slow
//! consumer, whose memory the queue limit bounds.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::{popen, LONG};
use execnet::Error;
use serde_bytes::ByteBuf;

/// The tests here measure memory and time: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// 64 channels on one gateway, N messages each way on each, from 8 host threads at once:
/// every message arrives, once, in order per channel (checked on both sides).
#[test]
fn many_channels_many_threads_every_message_once_in_order() {
    let _one = one_at_a_time();
    const CHANNELS: usize = 64;
    const THREADS: usize = 8;
    const N: i64 = 10_000;
    let gw = execnet::makegateway(popen("")).unwrap();
    let code = format!(
        r#"
import threading
N = {N}
def produce():
    for i in range(N):
        channel.send(i)
t = threading.Thread(target=produce)
t.start()
expected = 0
for _ in range(N):
    x = channel.receive()
    if x != expected:
        raise AssertionError("channel %d: got %r, expected %r" % (channel.id, x, expected))
    expected += 1
t.join()
channel.send("done")
"#
    );
    let t0 = Instant::now();
    let channels: Vec<_> = (0..CHANNELS).map(|_| gw.remote_exec(code.as_str()).unwrap()).collect();
    let mut workers = Vec::new();
    for part in channels.chunks(CHANNELS / THREADS) {
        let part = part.to_vec();
        workers.push(thread::spawn(move || {
            for i in 0..N {
                for ch in &part {
                    ch.send(&i).unwrap();
                }
            }
            for ch in &part {
                for i in 0..N {
                    assert_eq!(ch.receive::<i64>().unwrap(), i, "channel {}", ch.id());
                }
                assert_eq!(ch.receive::<String>().unwrap(), "done");
                ch.waitclose(Some(LONG)).unwrap();
                assert!(ch.receive::<i64>().unwrap_err().is_end_of_channel());
            }
        }));
    }
    for w in workers {
        w.join().unwrap();
    }
    eprintln!(
        "{CHANNELS} channels x {N} messages each way from {THREADS} threads: {:?}",
        t0.elapsed()
    );
    assert_eq!(gw.queued_bytes(), 0);
    gw.exit().unwrap();
}

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A worker streams 1 GiB to a host that reads slowly: with queue_limit=8 MiB the
/// gateway never queues more than the limit plus one message, and the host's resident
/// memory stays bounded (backpressure: the worker's writes wait).
#[test]
fn slow_consumer_memory_is_bounded() {
    let _one = one_at_a_time();
    const LIMIT: usize = 8 << 20;
    const CHUNK: usize = 1 << 20;
    const CHUNKS: usize = 1024;
    let gw = execnet::makegateway(popen(&format!("queue_limit={LIMIT}"))).unwrap();
    let ch = gw
        .remote_exec(format!(
            "data = b'x' * {CHUNK}\nfor i in range({CHUNKS}):\n    channel.send(data)\nchannel.send(b'')"
        ))
        .unwrap();
    // Let the worker run ahead while nothing is read at all.
    thread::sleep(Duration::from_millis(500));
    let rss0 = rss_bytes();
    let t0 = Instant::now();
    let (mut max_queued, mut max_rss, mut total) = (0, 0, 0usize);
    loop {
        max_queued = max_queued.max(gw.queued_bytes());
        let item: ByteBuf = ch.receive().unwrap();
        if item.is_empty() {
            break;
        }
        total += item.len();
        if total % (16 * CHUNK) == 0 {
            max_rss = max_rss.max(rss_bytes());
            thread::sleep(Duration::from_millis(20)); // the slow part
        }
    }
    ch.waitclose(Some(LONG)).unwrap();
    eprintln!(
        "streamed {} MiB in {:?}; queued at most {} KiB; RSS {} MiB at the start, at most {} MiB",
        total >> 20,
        t0.elapsed(),
        max_queued >> 10,
        rss0 >> 20,
        max_rss >> 20
    );
    assert_eq!(total, CHUNK * CHUNKS);
    assert!(max_queued <= LIMIT + CHUNK + 4096, "queued {max_queued} bytes");
    assert!(max_rss < rss0 + (64 << 20), "RSS grew from {rss0} to {max_rss}");
    gw.exit().unwrap();
}

/// The reader pauses only this gateway: others go on. A gateway whose reader is paused
/// still exits promptly, and its worker (blocked writing) ends.
#[test]
fn paused_gateway_exits_promptly() {
    let _one = one_at_a_time();
    let gw = execnet::makegateway(popen("queue_limit=100000")).unwrap();
    let pid = gw.local_pid().unwrap();
    let ch = gw.remote_exec("while True: channel.send(b'y' * 10000)").unwrap();
    assert!(common::eventually(LONG, || gw.queued_bytes() > 100_000));
    thread::sleep(Duration::from_millis(200));
    let queued = gw.queued_bytes();
    assert!(queued <= 100_000 + 10_000 + 64 + 64 * 1024, "queued {queued}");
    // another gateway is unaffected
    let other = execnet::makegateway(popen("")).unwrap();
    assert_eq!(other.remote_exec("channel.send(5)").unwrap().receive::<i64>().unwrap(), 5);
    let t0 = Instant::now();
    gw.terminate(Duration::from_secs(2)).unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3), "terminate took {:?}", t0.elapsed());
    assert!(!common::process_alive(pid));
    // items queued before the end stay receivable, then the loss shows
    let mut n = 0;
    loop {
        match ch.receive::<ByteBuf>() {
            Ok(_) => n += 1,
            Err(Error::GatewayLost(_)) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(n > 0);
    assert_eq!(gw.queued_bytes(), 0);
}

/// A bad queue_limit is a spec error.
#[test]
fn queue_limit_spec_is_checked() {
    let e = execnet::makegateway(popen("queue_limit=lots")).unwrap_err();
    assert!(e.to_string().contains("queue_limit"), "{e}");
    let e = execnet::makegateway(popen("max_message=-1")).unwrap_err();
    assert!(e.to_string().contains("max_message"), "{e}");
}
