//! What is measured: the scenarios, their sizes, repetitions and targets.
//!
//! A scenario row is run on both sides (execnet-rs and execnet) with the same gateway
//! spec and parameters. Adding a transport (ssh today) is adding rows whose `transport`
//! says so: the spec is the only thing that changes, both sides take it as a string.

use crate::scenarios::Params;

/// How the gateways of a row are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Popen,
    Ssh,
    /// ssh with `ssh_share` (execnet ignores the key: it has no connection sharing).
    SshShared,
}

impl Transport {
    /// The gateway spec for `python` (the interpreter path, on the remote side for ssh).
    /// `ssh_target` is what follows `ssh=`: host arguments and optional `//`-items.
    pub fn spec(self, python: &str, ssh_target: Option<&str>) -> String {
        match self {
            Transport::Popen => format!("popen//python={python}"),
            Transport::Ssh => format!("ssh={}//python={python}", ssh_target.unwrap_or("127.0.0.1")),
            Transport::SshShared => format!("{}//ssh_share", Transport::Ssh.spec(python, ssh_target)),
        }
    }
}

/// Which program drives the execnet-rs side of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// This program, with the execnet crate (`--side-rs`).
    Rust,
    /// The execnet driver script with `import execnet_rs as execnet`: the Python
    /// bindings (crates/execnet-py), under the same interpreter as the execnet side.
    PythonBindings,
}

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    Lower,
    Higher,
}

/// A target for one row of the table.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Target {
    /// execnet-rs / execnet at most this (times).
    RatioAtMost(f64),
    /// execnet-rs / execnet at least this (rates).
    RatioAtLeast(f64),
    /// execnet-rs minus the reference at most this (same unit as the row).
    DiffAtMost(f64),
    /// execnet-rs / reference at least this.
    FractionAtLeast(f64),
    /// execnet-rs strictly below this (same unit as the row).
    Below(f64),
    /// execnet-rs at most this (same unit as the row).
    AtMost(f64),
}

/// The primary figure a scenario's samples hold.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    /// What the table's unit column says.
    pub unit: &'static str,
    /// Multiply a sample by this for display in `unit` (seconds to ms, say).
    pub display_scale: f64,
    pub better: Better,
}

#[derive(Debug, Clone)]
pub struct Scenario {
    /// The row id, also what `--only` takes.
    pub id: &'static str,
    /// The scenario both sides run (`startup`, `roundtrip`, ...).
    pub kind: &'static str,
    pub transport: Transport,
    pub host: Host,
    pub what: &'static str,
    pub reps: usize,
    pub params: Params,
    pub metric: Metric,
    /// None for rows that are compared without a goal (the Python bindings' rows).
    pub target: Option<Target>,
}

const TIME_MS: Metric = Metric { unit: "ms", display_scale: 1e3, better: Better::Lower };
const RATE: Metric = Metric { unit: "1/s", display_scale: 1.0, better: Better::Higher };
const MBPS: Metric = Metric { unit: "MB/s", display_scale: 1.0, better: Better::Higher };
const KIB: Metric = Metric { unit: "KiB/gateway", display_scale: 1.0, better: Better::Lower };

/// Every scenario, full size (`quick` shrinks sizes and repetitions to a smoke run).
pub fn scenarios(quick: bool) -> Vec<Scenario> {
    // (full, quick)
    let q = |full: usize, small: usize| Some(if quick { small } else { full });
    let reps = |full: usize| if quick { 1 } else { full };
    let startup = |id, transport| Scenario {
        id,
        kind: "startup",
        transport,
        host: Host::Rust,
        what: "create a gateway, receive the first item of a remote_exec, exit (one sample each)",
        reps: reps(5),
        params: Params { inner: q(5, 2), ..Default::default() },
        metric: TIME_MS,
        target: Some(Target::RatioAtMost(0.5)),
    };
    let roundtrip = |id, transport| Scenario {
        id,
        kind: "roundtrip",
        transport,
        host: Host::Rust,
        what: "send an int, receive the echo; round trips per second",
        reps: reps(5),
        params: Params { n: q(20_000, 2_000), ..Default::default() },
        metric: RATE,
        target: Some(Target::RatioAtLeast(2.5)),
    };
    let mut all = vec![
        startup("startup", Transport::Popen),
        Scenario {
            id: "startup-cold-process",
            what: "the first gateway of a new host process: create, first item, exit (one sample per process)",
            reps: reps(10),
            params: Params { inner: Some(1), ..Default::default() },
            ..startup("startup-cold-process", Transport::Popen)
        },
        roundtrip("roundtrip", Transport::Popen),
        Scenario {
            id: "stream",
            kind: "stream",
            transport: Transport::Popen,
            host: Host::Rust,
            what: "the remote sends small ints; items per second",
            reps: reps(5),
            params: Params { n: q(200_000, 20_000), ..Default::default() },
            metric: RATE,
            target: Some(Target::RatioAtLeast(3.0)),
        },
        Scenario {
            id: "bulk",
            kind: "bulk",
            transport: Transport::Popen,
            host: Host::Rust,
            what: "the remote sends 1 MiB bytes items; MB/s (10^6 bytes)",
            reps: reps(5),
            params: Params { n: q(500, 50), size: Some(1 << 20), ..Default::default() },
            metric: MBPS,
            target: Some(Target::RatioAtLeast(2.0)),
        },
        Scenario {
            id: "fanout",
            kind: "fanout",
            transport: Transport::Popen,
            host: Host::Rust,
            what: "make gateways in a group, each sends one item, terminate the group",
            reps: reps(5),
            params: Params { gateways: q(16, 4), ..Default::default() },
            metric: TIME_MS,
            target: Some(Target::RatioAtMost(0.4)),
        },
        Scenario {
            id: "imports",
            kind: "imports",
            transport: Transport::Popen,
            host: Host::Rust,
            what: "start, import json + email.message + a 22-module package, first result, exit: \
                   forwarded from the host (execnet-rs) vs local imports (execnet)",
            reps: reps(5),
            params: Params { inner: q(5, 2), ..Default::default() },
            metric: TIME_MS,
            target: None,
        },
        Scenario {
            id: "taskfarm",
            kind: "taskfarm",
            transport: Transport::Popen,
            host: Host::Rust,
            what: "small tasks over workers through a MultiChannel receive queue; tasks per second",
            reps: reps(3),
            params: Params { n: q(100_000, 5_000), workers: Some(8), window: Some(32), ..Default::default() },
            metric: RATE,
            target: Some(Target::RatioAtLeast(2.0)),
        },
        Scenario {
            id: "scale",
            kind: "scale",
            transport: Transport::Popen,
            host: Host::Rust,
            what: "gateways alive at once: host RSS and threads per gateway",
            reps: reps(3),
            params: Params { gateways: q(256, 16), ..Default::default() },
            metric: KIB,
            target: Some(Target::Below(1024.0)),
        },
        Scenario {
            id: "rsync",
            kind: "rsync",
            transport: Transport::Popen,
            host: Host::Rust,
            what: "RSync of a tree of 2,000 files (200 MB) to 4 popen gateways, each its own directory",
            reps: reps(3),
            params: Params { n: q(2_000, 100), size: Some(100_000), gateways: q(4, 2), ..Default::default() },
            metric: TIME_MS,
            target: None,
        },
        startup("ssh-startup", Transport::Ssh),
        Scenario {
            id: "ssh-share-startup",
            what: "a later ssh gateway to the same host with ssh_share (the first one, which opens the \
                   shared connection, is not timed); execnet has no sharing and ignores the key",
            params: Params { inner: q(6, 2), warmup: Some(1), ..Default::default() },
            ..startup("ssh-share-startup", Transport::SshShared)
        },
        roundtrip("ssh-roundtrip", Transport::Ssh),
    ];
    // The same scenarios from Python: execnet_rs (the bindings) against execnet, both
    // driven by driver.py under one interpreter. Same sizes; no targets set for them.
    let from_python: Vec<Scenario> = ["startup", "roundtrip", "stream"]
        .iter()
        .map(|kind| {
            let base = all.iter().find(|s| s.id == *kind).expect("popen row");
            Scenario {
                id: match *kind {
                    "startup" => "py-startup",
                    "roundtrip" => "py-roundtrip",
                    _ => "py-stream",
                },
                host: Host::PythonBindings,
                target: None,
                ..base.clone()
            }
        })
        .collect();
    all.extend(from_python);
    all.push(Scenario {
        id: "py-xdist",
        kind: "xdist",
        transport: Transport::Popen,
        host: Host::PythonBindings,
        what: "pytest -n 2 of 300 short tests in 10 files (the whole pytest process, wall clock)",
        reps: reps(3),
        params: Params { n: q(300, 30), workers: Some(2), ..Default::default() },
        metric: TIME_MS,
        target: None,
    });
    all
}

/// Target for the startup row against a bare `python -c pass`, in ms.
pub const STARTUP_OVER_BARE_PYTHON_MS: f64 = 6.0;
/// Target for the bulk row against `dd` through a pipe.
pub const BULK_FRACTION_OF_DD: f64 = 0.70;
/// Target for host threads per gateway.
pub const THREADS_PER_GATEWAY: f64 = 2.0;
