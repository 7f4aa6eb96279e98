//! execnet-bench: execnet-rs against the execnet package, side by side, with targets.
//!
//! ```text
//! cargo run --release -p execnet-bench -- [--python PATH] [--only A,B] [--reps N] [--quick]
//!                                         [--out DIR] [--ssh TARGET] [--no-chart] [--list]
//! ```
//!
//! Each scenario runs on execnet-rs (this program again, `--side-rs`) and on execnet (the
//! driver script `driver.py` run by `--python`), one process per side and repetition,
//! the two sides alternating which goes first. Both spawn their workers with the same
//! interpreter. The py-* rows run the driver on both sides, the execnet-rs side with
//! `import execnet_rs as execnet` (the Python bindings). The table of medians goes to
//! stdout, progress to stderr, the raw figures to `DIR/results.json` and the chart to
//! `DIR/ratios.png`.

mod chart;
mod plan;
mod report;
mod runner;
mod scenarios;
mod sshd;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use serde_json::json;

use plan::{Host, Scenario, Transport};
use report::{ScenarioResult, Baseline};
use runner::{median, side_name, Side, Sides};

const USAGE: &str = "\
usage: execnet-bench [OPTIONS]

Runs each scenario on execnet-rs and on the execnet package, alternating, and prints
a table of medians, ratios and targets.

options:
  --python PATH   the interpreter for both sides' workers and for the execnet driver;
                  it must have the execnet package (default: $EXECNET_PYTHON, then
                  .venv/bin/python in this folder or above, as scripts/test.sh makes it);
                  the py-* rows also need the Python bindings (execnet_rs) built into
                  it, and are skipped, saying so, without them
  --only A,B      run only these scenarios (see --list)
  --reps N        repetitions per side (default: 5; 3 for taskfarm and scale)
  --quick         small sizes and one repetition: a smoke run, figures meaningless
  --out DIR       where results.json and ratios.png go (default: results)
  --ssh TARGET    what follows `ssh=` in the ssh rows' spec: host arguments, then
                  optional //-items, e.g. 'myhost//ssh_config=FILE' (default:
                  $EXECNET_BENCH_SSH; else a private sshd on 127.0.0.1 is started
                  for the run, when /usr/sbin/sshd exists)
  --no-chart      do not draw ratios.png
  --replot DIR    print the table and redraw the chart of DIR/results.json (no run)
  --list          list the scenarios and exit
";

#[derive(Debug, Default)]
struct Args {
    python: Option<String>,
    only: Option<Vec<String>>,
    reps: Option<usize>,
    quick: bool,
    out: Option<PathBuf>,
    ssh: Option<String>,
    no_chart: bool,
    list: bool,
    replot: Option<PathBuf>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args> {
    let mut a = Args::default();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--python" => a.python = Some(value("--python")?),
            "--only" => {
                a.only = Some(value("--only")?.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            }
            "--reps" => a.reps = Some(value("--reps")?.parse().context("--reps takes a number")?),
            "--quick" => a.quick = true,
            "--out" => a.out = Some(value("--out")?.into()),
            "--ssh" => a.ssh = Some(value("--ssh")?),
            "--no-chart" => a.no_chart = true,
            "--list" => a.list = true,
            "--replot" => a.replot = Some(value("--replot")?.into()),
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    Ok(a)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1).peekable();
    let result = if args.peek().map(String::as_str) == Some("--side-rs") {
        args.next();
        side_rs(args.collect())
    } else {
        parse_args(args).and_then(run)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("execnet-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// `--side-rs SCENARIO SPEC PARAMS_JSON`: one repetition of the execnet-rs side.
fn side_rs(args: Vec<String>) -> Result<()> {
    let [name, spec, params] = <[String; 3]>::try_from(args)
        .map_err(|_| anyhow::anyhow!("--side-rs takes SCENARIO SPEC PARAMS_JSON"))?;
    let params: scenarios::Params = serde_json::from_str(&params)?;
    let out = scenarios::run(&name, &spec, &params)?;
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

/// Whether this build has ssh gateways, asked with a spec that cannot connect or
/// prompt (port 1 on loopback, batch mode).
fn ssh_in_this_build(python: &str) -> bool {
    let probe = Transport::Ssh.spec(python, Some("-o BatchMode=yes -o ConnectTimeout=2 -p 1 127.0.0.1"));
    match execnet::makegateway(probe.as_str()) {
        Err(execnet::Error::Spec { reason, .. }) if reason.contains("not supported") => false,
        Ok(gw) => {
            let _ = gw.exit();
            true
        }
        Err(_) => true,
    }
}

/// The ssh rows' spec, or why they are skipped. `target` is what goes after `ssh=`
/// (host arguments, then optional `//`-items such as `ssh_config=FILE`); without one, a
/// private test sshd is started (and kept in `server` for the next ssh row).
fn ssh_spec(
    python: &str,
    target: Option<&str>,
    server: &mut Option<sshd::TestSshd>,
) -> std::result::Result<String, String> {
    if !ssh_in_this_build(python) {
        return Err("ssh gateways not available in this build".into());
    }
    let target = match target {
        Some(t) => t.to_string(),
        None => {
            if server.is_none() {
                *server = Some(sshd::start().map_err(|e| format!("no ssh target given and no test sshd: {e}"))?);
            }
            server.as_ref().expect("started").target.clone()
        }
    };
    let spec = Transport::Ssh.spec(python, Some(&target));
    match execnet::makegateway(spec.as_str()) {
        Ok(gw) => {
            let _ = gw.exit();
            Ok(spec)
        }
        Err(e) => Err(format!("no ssh gateway for {spec:?}: {e}")),
    }
}

/// `--replot DIR`: the table and the chart again, from DIR/results.json.
fn replot(dir: &std::path::Path) -> Result<()> {
    let path = dir.join("results.json");
    let doc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    )?;
    let rows: Vec<report::Row> = serde_json::from_value(doc["rows"].clone())?;
    let meta = &doc["meta"];
    print!("{}", report::table(&rows));
    let subtitle = format!(
        "medians; python {}, execnet {}; load {} at the start, others' CPU {:.1}%; {}{}",
        meta["python"]["python"].as_str().unwrap_or("?"),
        meta["execnet"].as_str().unwrap_or("?"),
        meta["loadavg_before"].as_str().unwrap_or("?"),
        meta["others_cpu_percent"].as_f64().unwrap_or(f64::NAN),
        meta["started"].as_str().map(String::from).unwrap_or_else(|| format!("unix time {}", meta["started_unix"])),
        if meta["quick"] == true { " (QUICK)" } else { "" },
    );
    let png = dir.join("ratios.png");
    if chart::draw(&png, &rows, &subtitle)? {
        eprintln!("chart: {}", png.display());
    }
    Ok(())
}

fn run(args: Args) -> Result<()> {
    if let Some(dir) = &args.replot {
        return replot(dir);
    }
    let all = plan::scenarios(args.quick);
    if args.list {
        for s in &all {
            println!("{:<14} {}", s.id, s.what);
        }
        return Ok(());
    }
    let selected: Vec<Scenario> = match &args.only {
        None => all,
        Some(names) => {
            for name in names {
                if !all.iter().any(|s| s.id == name) {
                    bail!("unknown scenario {name:?} (see --list)");
                }
            }
            all.into_iter().filter(|s| names.iter().any(|n| n == s.id)).collect()
        }
    };
    let python = match args.python.clone().or_else(runner::default_python) {
        Some(p) => p,
        None => bail!(
            "no interpreter with execnet: give --python PATH or set EXECNET_PYTHON \
             (scripts/test.sh makes .venv with execnet 2.1.2)"
        ),
    };
    // A relative path (".venv/bin/python") is made absolute, without resolving symlinks
    // (a venv's python is a symlink: resolving it would lose the venv, and execnet).
    let python = if python.contains('/') && !python.starts_with('/') {
        std::env::current_dir()?.join(&python).to_string_lossy().into_owned()
    } else {
        python
    };
    let out_dir = args.out.clone().unwrap_or_else(|| PathBuf::from("results"));
    let sides = Sides {
        rs_exe: std::env::current_exe().context("finding this program")?,
        python: python.clone(),
        driver: runner::DriverFile::write()?,
    };
    let meta_py = sides.py_meta()?;
    let execnet_version = meta_py["execnet"].as_str().unwrap_or("?").to_string();
    if execnet_version != "2.1.2" {
        eprintln!("execnet-bench: note: execnet is {execnet_version} here, the project pins 2.1.2");
    }
    let load_before = runner::loadavg();
    let started = std::time::SystemTime::now();
    eprintln!(
        "execnet-bench: python {} ({}), execnet {execnet_version}, load {load_before}{}",
        meta_py["python"].as_str().unwrap_or("?"),
        python,
        if args.quick { ", QUICK run: the figures mean nothing" } else { "" }
    );

    let mut results: Vec<ScenarioResult> = Vec::new();
    let mut test_sshd = None;
    // whether execnet_rs imports under `python`: asked once, for the first py-* row
    let mut bindings: Option<std::result::Result<serde_json::Value, String>> = None;
    let run_clock = runner::CpuClock::now();
    for sc in &selected {
        let reps = args.reps.unwrap_or(sc.reps).max(1);
        let bindings = match sc.host {
            Host::Rust => Ok(()),
            Host::PythonBindings => bindings.get_or_insert_with(|| sides.bindings_meta()).clone().map(|_| ()),
        };
        let spec = match sc.transport {
            _ if bindings.is_err() => bindings.clone().map(|_| String::new()),
            Transport::Popen => Ok(sc.transport.spec(&python, None)),
            Transport::Ssh | Transport::SshShared => {
                let host = args.ssh.clone().or_else(|| std::env::var("EXECNET_BENCH_SSH").ok());
                let spec = ssh_spec(&python, host.as_deref(), &mut test_sshd);
                match sc.transport {
                    Transport::SshShared => spec.map(|s| format!("{s}//ssh_share")),
                    _ => spec,
                }
            }
        };
        let mut res = ScenarioResult {
            id: sc.id.into(),
            kind: sc.kind.into(),
            what: sc.what.into(),
            spec: spec.clone().unwrap_or_default(),
            params: sc.params.clone(),
            reps,
            skipped: None,
            rs: Vec::new(),
            py: Vec::new(),
            order: Vec::new(),
            baseline: None,
            failures: Vec::new(),
            loadavg_at_start: runner::loadavg(),
            others_cpu_seconds: 0.0,
            others_cpu_percent: 0.0,
            scenario: Some(sc.clone()),
        };
        let clock = runner::CpuClock::now();
        let spec = match spec {
            Ok(spec) => spec,
            Err(why) => {
                eprintln!("{:<14} skipped: {why}", sc.id);
                res.skipped = Some(why);
                results.push(res);
                continue;
            }
        };
        let mut baseline = match (sc.kind, sc.transport) {
            // the bindings' rows compare two Python hosts; the plain references are
            // in the Rust rows already
            _ if sc.host != Host::Rust => None,
            ("startup", Transport::Popen) => {
                Some(Baseline { what: format!("{python} -c pass"), unit: "s".into(), samples: vec![] })
            }
            ("fanout", Transport::Popen) => Some(Baseline {
                what: format!("{} x `{python} -c pass` started together", sc.params.gateways.unwrap_or(0)),
                unit: "s".into(),
                samples: vec![],
            }),
            ("rsync", Transport::Popen) => Some(Baseline {
                what: format!("{} x `rsync -a SRC/ DST/` started together", sc.params.gateways.unwrap_or(0)),
                unit: "s".into(),
                samples: vec![],
            }),
            ("bulk", _) => Some(Baseline {
                what: "dd if=/dev/zero bs=1M | dd of=/dev/null bs=1M".into(),
                unit: "MB/s".into(),
                samples: vec![],
            }),
            _ => None,
        };
        for rep in 0..reps {
            let order = if rep % 2 == 0 { [Side::Rs, Side::Py] } else { [Side::Py, Side::Rs] };
            res.order.push(format!("{}, {}", side_name(order[0]), side_name(order[1])));
            let mut line = format!("{:<14} {}/{}:", sc.id, rep + 1, reps);
            for side in order {
                let run = match sides.run(side, sc.host, sc.kind, &spec, &sc.params) {
                    Ok(run) => run,
                    Err(e) => {
                        // One failed run (a hang, a crash) is reported, not fatal.
                        line.push_str(&format!("  {} FAILED", side_name(side)));
                        res.failures.push(format!("repetition {}, {}: {e:#}", rep + 1, side_name(side)));
                        continue;
                    }
                };
                let m = median(&run.samples) * sc.metric.display_scale;
                line.push_str(&format!("  {} {} {}", side_name(side), report::num(m), sc.metric.unit));
                match side {
                    Side::Rs => res.rs.push(run),
                    Side::Py => res.py.push(run),
                }
            }
            if let Some(b) = baseline.as_mut() {
                if sc.kind == "fanout" {
                    let s = runner::bare_python_parallel(&python, sc.params.gateways.unwrap_or(1))?;
                    line.push_str(&format!("  bare pythons {} ms", report::num(s * 1e3)));
                    b.samples.push(s);
                } else if sc.kind == "rsync" {
                    let p = &sc.params;
                    match runner::rsync_baseline(p.n.unwrap_or(1), p.size.unwrap_or(1), p.gateways.unwrap_or(1)) {
                        Ok(s) => {
                            line.push_str(&format!("  rsync -a {} ms", report::num(s * 1e3)));
                            b.samples.push(s);
                        }
                        Err(e) => line.push_str(&format!("  rsync -a not measured: {e:#}")),
                    }
                } else if sc.kind == "startup" {
                    let s = runner::bare_python(&python, sc.params.inner.unwrap_or(1))?;
                    line.push_str(&format!("  bare python {} ms", report::num(median(&s) * 1e3)));
                    b.samples.extend(s);
                } else {
                    // the same number of MiB as the scenario moves, at least 1000 for
                    // a figure that start-up costs do not blur
                    let mib = ((sc.params.n.unwrap_or(0) * sc.params.size.unwrap_or(0)) >> 20).max(1000);
                    let s = runner::dd_pipe(mib)?;
                    line.push_str(&format!("  dd {} MB/s", report::num(s)));
                    b.samples.push(s);
                }
            }
            let (_, pct) = runner::CpuClock::now().others_since(&clock);
            line.push_str(&format!("  [others {pct:.1}% CPU so far]"));
            eprintln!("{line}");
        }
        (res.others_cpu_seconds, res.others_cpu_percent) = runner::CpuClock::now().others_since(&clock);
        res.baseline = baseline;
        results.push(res);
    }

    drop(test_sshd);
    let load_after = runner::loadavg();
    let (_, others_pct) = runner::CpuClock::now().others_since(&run_clock);
    let (worst_pct, worst_id) = results
        .iter()
        .filter(|r| r.skipped.is_none())
        .map(|r| (r.others_cpu_percent, r.id.clone()))
        .fold((0.0, String::new()), |a, b| if b.0 > a.0 { b } else { a });
    let rows: Vec<report::Row> = results.iter().flat_map(report::rows).collect();
    let table = report::table(&rows);
    let when = humantime(started);
    let cpu = cpu_model();
    let header = format!(
        "execnet-rs {} vs execnet {execnet_version}, python {} ({python}); {} cores {cpu}; {when}\n\
         load average {load_before} at the start ({load_after} at the end, our own workers included); \
         other programs used {others_pct:.1}% of the machine's CPU during the run \
         (at most {worst_pct:.1}%, in {worst_id}){}",
        env!("CARGO_PKG_VERSION"),
        meta_py["python"].as_str().unwrap_or("?"),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        if args.quick { "; QUICK run (--quick): sizes shrunk, figures not comparable" } else { "" },
    );
    println!("{header}\n");
    print!("{table}");

    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let json_path = out_dir.join("results.json");
    let doc = json!({
        "meta": {
            "execnet_rs": env!("CARGO_PKG_VERSION"),
            "execnet": execnet_version,
            "python": meta_py,
            // execnet_rs under `python`, when a py-* row asked (null otherwise)
            "python_bindings": bindings.as_ref().map(|b| match b {
                Ok(meta) => meta.clone(),
                Err(why) => json!({ "unavailable": why }),
            }),
            "python_path": python,
            "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "cpu": cpu,
            "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
            "loadavg_before": load_before,
            "loadavg_after": load_after,
            "others_cpu_percent": others_pct,
            "started": when,
            "started_unix": started.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            "quick": args.quick,
            "command": std::env::args().collect::<Vec<_>>(),
        },
        "rows": rows,
        "scenarios": results,
    });
    std::fs::write(&json_path, serde_json::to_string_pretty(&doc)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    eprintln!("\nraw figures: {}", json_path.display());
    if !args.no_chart {
        let png = out_dir.join("ratios.png");
        let subtitle = format!(
            "medians; python {}, execnet {execnet_version}; load {load_before} at the start, others' CPU {others_pct:.1}%; {when}{}",
            meta_py["python"].as_str().unwrap_or("?"),
            if args.quick { " (QUICK)" } else { "" }
        );
        if chart::draw(&png, &rows, &subtitle)? {
            eprintln!("chart: {}", png.display());
        } else {
            eprintln!("no chart: no row has figures on both sides");
        }
    }
    Ok(())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_default()
}

/// UTC date and time, without a date crate.
fn humantime(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let days = (secs / 86400) as i64;
    let (h, m) = ((secs % 86400) / 3600, (secs % 3600) / 60);
    // civil-from-days (proleptic Gregorian)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if mo <= 2 { 1 } else { 0 };
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400 + 3600); // 2000-02-29 01:00
        assert_eq!(humantime(t), "2000-02-29 01:00 UTC");
    }

    #[test]
    fn args() {
        let a = parse_args(["--quick", "--only", "startup,roundtrip"].iter().map(|s| s.to_string())).unwrap();
        assert!(a.quick);
        assert_eq!(a.only.unwrap(), ["startup", "roundtrip"]);
        assert!(parse_args(["--bogus"].iter().map(|s| s.to_string())).is_err());
    }
}
