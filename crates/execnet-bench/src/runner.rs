//! Running one side of one repetition in its own process, and the plain baselines
//! (a bare interpreter start, `dd` through a pipe).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::plan::Host;
use crate::scenarios::{Params, SideRun};

/// The execnet side's driver script, written to a temporary file for the run.
pub const DRIVER_SOURCE: &str = include_str!("driver.py");

/// The longest one side of one repetition may take before it is killed.
const SIDE_TIMEOUT: Duration = Duration::from_secs(300);

/// Which implementation a side runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Rs,
    Py,
}

/// The temporary driver file, removed when dropped.
pub struct DriverFile(pub PathBuf);

impl DriverFile {
    pub fn write() -> Result<DriverFile> {
        let path = std::env::temp_dir().join(format!("execnet-bench-driver-{}.py", std::process::id()));
        std::fs::write(&path, DRIVER_SOURCE).with_context(|| format!("writing {}", path.display()))?;
        Ok(DriverFile(path))
    }
}

impl Drop for DriverFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// How to start both sides.
pub struct Sides {
    /// This program, run again with `--side-rs`.
    pub rs_exe: PathBuf,
    /// The interpreter that has execnet (runs the driver).
    pub python: String,
    pub driver: DriverFile,
}

impl Sides {
    /// Runs `scenario` once on `side` in a fresh process and returns what it reported.
    /// For `Host::PythonBindings` the execnet-rs side is the driver too, importing
    /// `execnet_rs` in place of `execnet`.
    pub fn run(&self, side: Side, host: Host, scenario: &str, spec: &str, params: &Params) -> Result<SideRun> {
        let params = serde_json::to_string(params)?;
        let mut cmd = match (side, host) {
            (Side::Rs, Host::PythonBindings) => {
                let mut c = Command::new(&self.python);
                c.arg(&self.driver.0).arg("--bindings");
                c
            }
            (Side::Rs, Host::Rust) => {
                let mut c = Command::new(&self.rs_exe);
                c.arg("--side-rs");
                c
            }
            (Side::Py, _) => {
                let mut c = Command::new(&self.python);
                c.arg(&self.driver.0);
                c
            }
        };
        cmd.args([scenario, spec, &params]);
        let out = run_with_timeout(cmd, SIDE_TIMEOUT)
            .with_context(|| format!("{scenario} on {}", side_name(side)))?;
        let line = out.lines().rev().find(|l| l.trim_start().starts_with('{')).unwrap_or("");
        serde_json::from_str(line)
            .with_context(|| format!("{scenario} on {}: bad report {out:?}", side_name(side)))
    }

    /// The driver's `meta` report: python version, execnet version.
    pub fn py_meta(&self) -> Result<serde_json::Value> {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.driver.0).arg("meta");
        let out = run_with_timeout(cmd, Duration::from_secs(60)).with_context(|| {
            format!("{} cannot run the execnet driver: does it have the execnet package?", self.python)
        })?;
        Ok(serde_json::from_str(out.trim())?)
    }

    /// The driver's `--bindings meta` report (execnet_rs's version and file), or why
    /// the Python bindings cannot be used from this interpreter.
    pub fn bindings_meta(&self) -> std::result::Result<serde_json::Value, String> {
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.driver.0).args(["--bindings", "meta"]);
        let meta: serde_json::Value = run_with_timeout(cmd, Duration::from_secs(60))
            .and_then(|out| Ok(serde_json::from_str(out.trim())?))
            .map_err(|e| format!("{} cannot run the driver: {e:#}", self.python))?;
        match meta["unavailable"].as_str() {
            None => Ok(meta),
            Some(why) => Err(format!(
                "execnet_rs is not importable from {} ({why}); build the Python bindings into \
                 its venv: `VIRTUAL_ENV=.venv .venv/bin/maturin develop -m crates/execnet-py/Cargo.toml` \
                 (scripts/test.sh does this)",
                self.python
            )),
        }
    }
}

pub fn side_name(side: Side) -> &'static str {
    match side {
        Side::Rs => "execnet-rs",
        Side::Py => "execnet",
    }
}

/// Runs `cmd` (stderr passed on), returns its stdout; fails on a non-zero exit or when
/// it outlives `timeout` (then it is killed).
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<String> {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("killed after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("exited with {status}; stdout: {out:?}");
    }
    Ok(out)
}

/// Seconds for `python -c pass`, one sample per start.
pub fn bare_python(python: &str, count: usize) -> Result<Vec<f64>> {
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        let t0 = Instant::now();
        let status = Command::new(python)
            .args(["-c", "pass"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status()
            .with_context(|| format!("starting {python}"))?;
        samples.push(t0.elapsed().as_secs_f64());
        if !status.success() {
            bail!("{python} -c pass exited with {status}");
        }
    }
    Ok(samples)
}

/// Seconds for `k` copies of `python -c pass` started together and all waited for: the
/// floor under a fan-out of `k` gateways on this machine.
pub fn bare_python_parallel(python: &str, k: usize) -> Result<f64> {
    let t0 = Instant::now();
    let children = (0..k)
        .map(|_| {
            Command::new(python)
                .args(["-c", "pass"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {python}"))
        })
        .collect::<Result<Vec<_>>>()?;
    for mut c in children {
        c.wait()?;
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// MB/s (10^6 bytes) that `dd` moves through a pipe: `dd if=/dev/zero bs=1M count=N |
/// dd of=/dev/null bs=1M`, timed from outside (the shell and both dd starts included,
/// which is under 1% at these sizes).
pub fn dd_pipe(mib: usize) -> Result<f64> {
    let script = format!("dd if=/dev/zero bs=1M count={mib} status=none | dd of=/dev/null bs=1M status=none");
    let t0 = Instant::now();
    let status = Command::new("sh").args(["-c", &script]).status().context("running sh -c dd ...")?;
    let t = t0.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{script}: {status}");
    }
    Ok((mib as f64 * 1048576.0) / t / 1e6)
}

/// Seconds that `k` runs of `rsync -a SRC/ DST_i/` started together take for the rsync
/// row's tree (rsync's own sender and receiver processes, talking over a pipe): the
/// reference for the rsync row.
pub fn rsync_baseline(n: usize, size: usize, k: usize) -> Result<f64> {
    let src = tempfile::tempdir()?;
    crate::scenarios::make_rsync_tree(src.path(), n, size)?;
    let dst = tempfile::tempdir()?;
    let from = format!("{}/", src.path().display());
    let t0 = Instant::now();
    let children: Vec<_> = (0..k)
        .map(|i| {
            Command::new("rsync")
                .args(["-a", &from, &format!("{}/t{i}/", dst.path().display())])
                .spawn()
                .context("running rsync -a (Debian: apt-get install rsync)")
        })
        .collect::<Result<_>>()?;
    for mut child in children {
        let status = child.wait()?;
        if !status.success() {
            bail!("rsync -a: {status}");
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// The default interpreter: $EXECNET_PYTHON, else `.venv/bin/python` here or above.
pub fn default_python() -> Option<String> {
    if let Ok(p) = std::env::var("EXECNET_PYTHON") {
        if !p.is_empty() {
            return Some(p);
        }
    }
    let mut dir: Option<&Path> = Some(Path::new("."));
    let cwd = std::env::current_dir().ok();
    if let Some(cwd) = &cwd {
        dir = Some(cwd.as_path());
    }
    while let Some(d) = dir {
        let candidate = d.join(".venv/bin/python");
        if candidate.exists() {
            return Some(candidate.to_string_lossy().into_owned());
        }
        dir = d.parent();
    }
    None
}

/// The median of `xs` (NaN when empty).
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).expect("finite"));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// `/proc/loadavg`'s first three fields.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// CPU seconds: used by the whole machine (all cores, from /proc/stat), and by this
/// process with every child it has waited for (the sides, and through them their
/// workers, which each side reaps). The difference over a scenario is what other
/// programs took meanwhile: the interference figure the report gives.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock {
    machine: f64,
    ours: f64,
    at: Instant,
}

impl CpuClock {
    pub fn now() -> CpuClock {
        let machine = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                let line = s.lines().next()?.to_string();
                let f: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                // user nice system idle iowait irq softirq steal: busy is all but idle, iowait
                let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)? + f.get(7).unwrap_or(&0.0);
                // SAFETY: sysconf has no preconditions.
                let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
                Some(busy / if hz > 0.0 { hz } else { 100.0 })
            })
            .unwrap_or(f64::NAN);
        let usage = |who| {
            // SAFETY: getrusage writes into the struct we pass.
            let mut r: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(who, &mut r) };
            let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 * 1e-6;
            t(r.ru_utime) + t(r.ru_stime)
        };
        CpuClock { machine, ours: usage(libc::RUSAGE_SELF) + usage(libc::RUSAGE_CHILDREN), at: Instant::now() }
    }

    /// Since `earlier`: (CPU seconds others used, as a percentage of the whole machine).
    pub fn others_since(&self, earlier: &CpuClock) -> (f64, f64) {
        let others = ((self.machine - earlier.machine) - (self.ours - earlier.ours)).max(0.0);
        let wall = (self.at - earlier.at).as_secs_f64();
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
        (others, if wall > 0.0 { others / (wall * cores) * 100.0 } else { 0.0 })
    }
}
