//! The execnet-rs side of each scenario, the twin of `driver.py` (the execnet side).
//!
//! `execnet-bench` runs each repetition in a fresh process (`execnet-bench --side-rs
//! SCENARIO SPEC PARAMS_JSON`), as it runs the driver for the execnet side, so that both
//! sides are timed the same way: inside the process, after its start, including gateway
//! start-up only where the scenario says so. The output is one JSON line, a [`SideRun`].

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use execnet::{Channel, Gateway, Group};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// What one process run of one side reports: the scenario's figure for each sample
/// (seconds, or a rate), and scenario-specific figures.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct SideRun {
    pub samples: Vec<f64>,
    #[serde(default)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// The parameters of a scenario; both sides get the same JSON object.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Params {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateways: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<usize>,
    /// Leading samples run but not reported (startup: the gateway that opens a shared
    /// ssh connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warmup: Option<usize>,
}

fn get(v: Option<usize>, name: &str) -> Result<usize> {
    v.with_context(|| format!("parameter {name} missing"))
}

/// Runs scenario `name` on execnet-rs with gateways made from `spec`.
pub fn run(name: &str, spec: &str, p: &Params) -> Result<SideRun> {
    match name {
        "startup" => startup(spec, get(p.inner, "inner")?, p.warmup.unwrap_or(0)),
        "imports" => imports(spec, get(p.inner, "inner")?),
        "roundtrip" => roundtrip(spec, get(p.n, "n")?),
        "stream" => stream(spec, get(p.n, "n")?),
        "bulk" => bulk(spec, get(p.n, "n")?, get(p.size, "size")?),
        "fanout" => fanout(spec, get(p.gateways, "gateways")?),
        "taskfarm" => taskfarm(spec, get(p.n, "n")?, get(p.workers, "workers")?, get(p.window, "window")?),
        "scale" => scale(spec, get(p.gateways, "gateways")?),
        "rsync" => rsync(spec, get(p.n, "n")?, get(p.size, "size")?, get(p.gateways, "gateways")?),
        other => bail!("unknown scenario {other}"),
    }
}

fn secs(t: Duration) -> f64 {
    t.as_secs_f64()
}

fn extra(pairs: &[(&str, serde_json::Value)]) -> serde_json::Map<String, serde_json::Value> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// (VmRSS in KiB, number of threads) of this process.
pub fn host_status() -> Result<(u64, usize)> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/self/status")?;
    let threads = std::fs::read_dir("/proc/self/task")?.count();
    Ok((rss, threads))
}

/// A gateway that has answered once, so that its start is not timed.
fn ready_gateway(spec: &str) -> Result<Gateway> {
    let gw = execnet::makegateway(spec)?;
    let ch = gw.remote_exec("channel.send(channel.receive())")?;
    ch.send(&1)?;
    ensure!(ch.receive::<i64>()? == 1);
    ch.waitclose(None)?;
    Ok(gw)
}

fn startup(spec: &str, inner: usize, warmup: usize) -> Result<SideRun> {
    let mut samples = Vec::with_capacity(inner);
    for _ in 0..inner {
        let t0 = Instant::now();
        let gw = execnet::makegateway(spec)?;
        let ch = gw.remote_exec("channel.send(1)")?;
        ensure!(ch.receive::<i64>()? == 1);
        gw.exit()?;
        samples.push(secs(t0.elapsed()));
        drop(ch);
    }
    ensure!(warmup < samples.len(), "warmup {warmup} leaves no samples of {inner}");
    Ok(SideRun { samples: samples.split_off(warmup), extra: Default::default() })
}

/// The package of driver.py's `write_benchpkg`, written by the same rules.
fn write_benchpkg(root: &std::path::Path) -> Result<()> {
    const MODULES: usize = 20;
    let pkg = root.join("benchpkg");
    std::fs::create_dir_all(&pkg)?;
    let names: Vec<String> = (0..MODULES).map(|i| format!("mod{i}")).collect();
    let list = names.join(", ");
    std::fs::write(
        pkg.join("__init__.py"),
        format!("from . import {list}\n\ndef total():\n    return sum(m.VALUE for m in ({list},))\n"),
    )?;
    std::fs::write(pkg.join("util.py"), "def helper(x):\n    return 2 * x\n")?;
    for (i, name) in names.iter().enumerate() {
        std::fs::write(pkg.join(format!("{name}.py")), format!("from .util import helper\nVALUE = helper({i})\n"))?;
    }
    Ok(())
}

/// Time to the first result of code importing json, email.message and a 22-module
/// package, all forwarded from the host (execnet imports them locally: driver.py).
fn imports(spec: &str, inner: usize) -> Result<SideRun> {
    let dir = tempfile::tempdir()?;
    write_benchpkg(dir.path())?;
    let xspec = execnet::XSpec::new(spec)?;
    let python = xspec.python().unwrap_or("python3");
    let out = std::process::Command::new(python)
        .args(["-c", "import json, os; print(os.path.dirname(os.path.dirname(json.__file__)))"])
        .output()?;
    let stdlib = String::from_utf8(out.stdout)?.trim().to_string();
    let forwarding = execnet::ImportForwarding::new([std::path::PathBuf::from(&stdlib), dir.path().to_path_buf()])
        .only(["json", "email", "benchpkg"])
        .prefer_host(true);
    let code = "import json, email.message, benchpkg\nchannel.send((json.dumps([1]), benchpkg.total()))";
    let mut samples = Vec::with_capacity(inner);
    let mut stats = execnet::ImportStats::default();
    for _ in 0..inner {
        let t0 = Instant::now();
        let gw = execnet::makegateway(spec)?;
        let server = gw.forward_imports(forwarding.clone())?;
        let ch = gw.remote_exec(code)?;
        let (text, total): (String, i64) = ch.receive()?;
        ensure!(text == "[1]" && total == 380, "unexpected result {text} {total}");
        gw.exit()?;
        samples.push(secs(t0.elapsed()));
        stats = server.stats();
    }
    Ok(SideRun {
        samples,
        extra: extra(&[
            ("round_trips", stats.requests.into()),
            ("modules", stats.modules.into()),
            ("prefetched", stats.prefetched.into()),
            ("bytes", stats.bytes.into()),
        ]),
    })
}

fn roundtrip(spec: &str, n: usize) -> Result<SideRun> {
    let gw = ready_gateway(spec)?;
    let ch = gw.remote_exec("for x in channel:\n    channel.send(x)")?;
    ch.send(&-1)?;
    ensure!(ch.receive::<i64>()? == -1);
    let t0 = Instant::now();
    for i in 0..n as i64 {
        ch.send(&i)?;
        let _: i64 = ch.receive()?;
    }
    let t = secs(t0.elapsed());
    ch.close()?;
    gw.exit()?;
    Ok(SideRun { samples: vec![n as f64 / t], extra: extra(&[("seconds", t.into())]) })
}

fn stream(spec: &str, n: usize) -> Result<SideRun> {
    let gw = ready_gateway(spec)?;
    let t0 = Instant::now();
    let ch = gw.remote_exec(format!("for i in range({n}):\n    channel.send(i)"))?;
    for _ in 0..n {
        let _: i64 = ch.receive()?;
    }
    let t = secs(t0.elapsed());
    ch.waitclose(None)?;
    gw.exit()?;
    Ok(SideRun { samples: vec![n as f64 / t], extra: extra(&[("seconds", t.into())]) })
}

fn bulk(spec: &str, n: usize, size: usize) -> Result<SideRun> {
    let gw = ready_gateway(spec)?;
    let t0 = Instant::now();
    let ch = gw.remote_exec(format!("b = bytes({size})\nfor _ in range({n}):\n    channel.send(b)"))?;
    let mut total = 0usize;
    for _ in 0..n {
        total += ch.receive::<ByteBuf>()?.len();
    }
    let t = secs(t0.elapsed());
    ensure!(total == n * size);
    ch.waitclose(None)?;
    gw.exit()?;
    Ok(SideRun { samples: vec![total as f64 / t / 1e6], extra: extra(&[("seconds", t.into())]) })
}

/// Writes the rsync scenario's tree under `root`: `n` files of `size` bytes, 100 to a
/// directory (`d000/f0000.bin`, ...), of bytes that do not repeat (driver.py makes the
/// same layout).
pub fn make_rsync_tree(root: &std::path::Path, n: usize, size: usize) -> Result<()> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = vec![0u8; size];
    for i in 0..n {
        let dir = root.join(format!("d{:03}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir)?;
        }
        for chunk in data.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(dir.join(format!("f{i:04}.bin")), &data)?;
    }
    Ok(())
}

/// One sync of a fresh tree to `k` gateways, each into a directory of its own (timed:
/// from the start of the send to the last target's done), then the same again with
/// nothing to send (in `extra`).
fn rsync(spec: &str, n: usize, size: usize, k: usize) -> Result<SideRun> {
    let src = tempfile::tempdir()?;
    make_rsync_tree(src.path(), n, size)?;
    let dst = tempfile::tempdir()?;
    let group = start_group(spec, k)?;
    let gateways = group.gateways();
    let sync_all = || -> Result<f64> {
        let mut sync = execnet::RSync::new(src.path());
        for (i, gw) in gateways.iter().enumerate() {
            sync.add_target(gw, dst.path().join(format!("t{i}")).to_string_lossy().into_owned());
        }
        let t0 = Instant::now();
        let reports = sync.send()?;
        let t = secs(t0.elapsed());
        ensure!(reports.len() == k && reports.iter().all(|r| r.files_listed == n));
        Ok(t)
    };
    let t = sync_all()?;
    let unchanged = sync_all()?;
    for i in 0..k {
        let copy = dst.path().join(format!("t{i}/d000/f0000.bin"));
        ensure!(std::fs::metadata(&copy)?.len() == size as u64, "{} incomplete", copy.display());
    }
    group.terminate(Duration::from_secs(10));
    Ok(SideRun {
        samples: vec![t],
        extra: extra(&[("unchanged_seconds", unchanged.into()), ("mb_per_s", ((n * size * k) as f64 / t / 1e6).into())]),
    })
}

/// A group of `k` gateways for `spec`, each of which has answered once.
fn start_group(spec: &str, k: usize) -> Result<Group> {
    let group = Group::new();
    for _ in 0..k {
        group.makegateway(spec)?;
    }
    let mch = group.remote_exec("channel.send(1)")?;
    ensure!(mch.receive_each::<i64>()? == vec![1; k]);
    Ok(group)
}

fn fanout(spec: &str, k: usize) -> Result<SideRun> {
    let t0 = Instant::now();
    let group = start_group(spec, k)?;
    group.terminate(Duration::from_secs(10));
    let t = secs(t0.elapsed());
    Ok(SideRun { samples: vec![t], extra: Default::default() })
}

fn taskfarm(spec: &str, n: usize, workers: usize, window: usize) -> Result<SideRun> {
    // makegateway returns before the worker is up (execnet's waits): start_group waits
    // for all, so that the timing below holds no start-up on either side.
    let group = start_group(spec, workers)?;
    let mch = group.remote_exec("for x in channel:\n    channel.send(x * 2)")?;
    let mut queue = mch.make_receive_queue::<i64>()?;
    let t0 = Instant::now();
    let mut sent = 0i64;
    let n_i = n as i64;
    for ch in mch.channels() {
        for _ in 0..window.min((n_i - sent) as usize) {
            ch.send(&sent)?;
            sent += 1;
        }
    }
    let mut total = 0i64;
    let mut received = 0;
    while received < n {
        let (ch, item): (Channel, Option<i64>) = queue.get()?;
        let item = item.context("a worker channel closed before the end")?;
        total += item;
        received += 1;
        if sent < n_i {
            ch.send(&sent)?;
            sent += 1;
        }
    }
    let t = secs(t0.elapsed());
    ensure!(total == n_i * (n_i - 1));
    for ch in mch.channels() {
        ch.close()?;
    }
    group.terminate(Duration::from_secs(10));
    Ok(SideRun { samples: vec![n as f64 / t], extra: extra(&[("seconds", t.into())]) })
}

fn scale(spec: &str, k: usize) -> Result<SideRun> {
    let (rss0, threads0) = host_status()?;
    let t0 = Instant::now();
    let group = start_group(spec, k)?;
    let t_up = secs(t0.elapsed());
    let (rss1, threads1) = host_status()?;
    let t1 = Instant::now();
    group.terminate(Duration::from_secs(30));
    let t_down = secs(t1.elapsed());
    let rss_per = (rss1 as f64 - rss0 as f64) / k as f64;
    let threads_per = (threads1 as f64 - threads0 as f64) / k as f64;
    Ok(SideRun {
        samples: vec![rss_per],
        extra: extra(&[
            ("threads_per_gateway", threads_per.into()),
            ("rss_kib_before", rss0.into()),
            ("rss_kib_after", rss1.into()),
            ("threads_before", threads0.into()),
            ("threads_after", threads1.into()),
            ("seconds_up", t_up.into()),
            ("seconds_down", t_down.into()),
        ]),
    })
}
