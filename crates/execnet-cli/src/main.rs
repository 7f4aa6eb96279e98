//! `execnet`: run Python code on one or many gateways from the command line.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use execnet::{Error, Gateway, Group, Source, Value};

#[derive(Parser)]
#[command(
    name = "execnet",
    version,
    about = "Run Python code in other Python processes, with nothing installed there",
    long_about = "Run Python code in other Python processes, with nothing installed there.\n\n\
        Each -x SPEC starts a gateway: a Python process that receives a small worker over its \
        connection and then runs the code you send it. The code sees a global `channel`; \
        whatever it passes to channel.send(...) is printed here, one item per line.",
    after_help = "SPEC syntax: key=value items separated by //, for example\n  \
        popen                          a python3 subprocess on this machine (the default)\n  \
        popen//python=pypy3            another interpreter\n  \
        popen//chdir=/tmp/work//nice=10//env:LANG=C\n  \
        popen//execmodel=main_thread_only\n\n\
        Examples:\n  \
        execnet run -c 'import sys; channel.send(sys.version)'\n  \
        execnet run -x popen -x popen//python=pypy3 -c 'import os; channel.send(os.getpid())'\n  \
        execnet info -x popen -x popen//python=python3"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run code on every gateway in parallel and print what it sends.
    #[command(after_help = "Exit status: 0 when the code ran everywhere without error, 1 when \
        the code raised on some gateway (its traceback goes to stderr), 2 when a gateway could \
        not be started or was lost.")]
    Run(RunArgs),
    /// Show the interpreter behind each gateway (executable, version, platform, pid, cwd).
    Info(SpecArgs),
}

#[derive(Args)]
struct SpecArgs {
    /// A gateway spec; repeat for several gateways (default: popen).
    #[arg(short = 'x', long = "spec", value_name = "SPEC")]
    specs: Vec<String>,
}

impl SpecArgs {
    fn specs(&self) -> Vec<String> {
        if self.specs.is_empty() {
            vec!["popen".to_string()]
        } else {
            self.specs.clone()
        }
    }
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    specs: SpecArgs,
    /// Python code to run (it sees the global `channel`).
    #[arg(short = 'c', long = "code", value_name = "CODE", conflicts_with = "file")]
    code: Option<String>,
    /// A Python file to run instead of -c.
    #[arg(value_name = "FILE", required_unless_present = "code")]
    file: Option<PathBuf>,
    /// Print items as JSON lines instead of Python literals.
    #[arg(long)]
    json: bool,
    /// Give up (and exit with status 2) after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Info(args) => info(args),
    }
}

/// Starts one gateway per spec, in a group that ends them all when dropped.
fn start_gateways(group: &Group, specs: &[String]) -> Result<Vec<Gateway>, String> {
    specs
        .iter()
        .map(|spec| {
            group.makegateway(spec.as_str()).map_err(|e| format!("execnet: {e}"))
        })
        .collect()
}

enum Outcome {
    Ok,
    RemoteError,
    Lost,
}

fn run(args: RunArgs) -> ExitCode {
    let source = match (&args.code, &args.file) {
        (Some(code), _) => Source::code(code),
        (None, Some(path)) => match Source::file(path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("execnet: {e}");
                return ExitCode::from(2);
            }
        },
        (None, None) => unreachable!("clap requires code or file"),
    };
    let timeout = args.timeout.map(Duration::from_secs_f64);
    let group = Group::new();
    let gateways = match start_gateways(&group, &args.specs.specs()) {
        Ok(g) => g,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let prefix = gateways.len() > 1;
    let stdout = Mutex::new(std::io::stdout());
    let deadline = timeout.map(|t| Instant::now() + t);
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let handles: Vec<_> = gateways
            .iter()
            .map(|gw| {
                let source = source.clone();
                let stdout = &stdout;
                let json = args.json;
                s.spawn(move || run_one(gw, source, prefix, json, stdout, deadline))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(Outcome::Lost)).collect()
    });
    let _ = stdout.lock().map(|mut o| o.flush());
    if outcomes.iter().any(|o| matches!(o, Outcome::Lost)) {
        ExitCode::from(2)
    } else if outcomes.iter().any(|o| matches!(o, Outcome::RemoteError)) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn run_one(
    gw: &Gateway,
    source: Source,
    prefix: bool,
    json: bool,
    stdout: &Mutex<std::io::Stdout>,
    deadline: Option<Instant>,
) -> Outcome {
    let tag = if prefix { format!("[{}] ", gw.id()) } else { String::new() };
    let channel = match gw.remote_exec(source) {
        Ok(ch) => ch,
        Err(e) => {
            eprintln!("execnet: {tag}{e}");
            return Outcome::Lost;
        }
    };
    loop {
        let item = match deadline {
            None => channel.receive::<Value>(),
            Some(d) => channel.receive_timeout::<Value>(d.saturating_duration_since(Instant::now())),
        };
        match item {
            Ok(value) => {
                let text = if json {
                    serde_json::to_string(&to_json(&value)).unwrap_or_else(|e| format!("{e}"))
                } else {
                    value.to_string()
                };
                let mut out = stdout.lock().unwrap_or_else(|e| e.into_inner());
                let _ = writeln!(out, "{tag}{text}");
            }
            Err(Error::EndOfChannel { .. }) => return Outcome::Ok,
            Err(Error::Remote { traceback }) => {
                let mut err = std::io::stderr().lock();
                let _ = writeln!(err, "{tag}remote error on {}:", gw.id());
                let _ = writeln!(err, "{}", traceback.trim_end());
                return Outcome::RemoteError;
            }
            Err(e @ Error::Timeout(_)) => {
                eprintln!("execnet: {tag}{e}: no end of the code on {} (see --timeout)", gw.id());
                return Outcome::Lost;
            }
            Err(e) => {
                eprintln!("execnet: {tag}{e}");
                return Outcome::Lost;
            }
        }
    }
}

/// JSON form of a Python value: tuples, sets and frozensets become arrays, dicts with
/// string keys objects (other dicts arrays of [key, value] pairs), bytes
/// `{"bytes_hex": ...}`, complex `{"real": .., "imag": ..}`, big ints strings.
fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::None => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => match i.as_i64() {
            Some(n) => J::from(n),
            None => J::String(i.to_string()),
        },
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or_else(|| J::String(f.to_string()), J::Number),
        Value::Complex(c) => serde_json::json!({"real": c.re, "imag": c.im}),
        Value::Str(s) => J::String(s.clone()),
        Value::Bytes(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            serde_json::json!({ "bytes_hex": hex })
        }
        Value::List(items) | Value::Tuple(items) | Value::Set(items) | Value::FrozenSet(items) => {
            J::Array(items.iter().map(to_json).collect())
        }
        Value::Dict(d) => {
            if d.iter().all(|(k, _)| matches!(k, Value::Str(_))) {
                J::Object(
                    d.iter()
                        .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), to_json(v)))
                        .collect(),
                )
            } else {
                J::Array(d.iter().map(|(k, v)| J::Array(vec![to_json(k), to_json(v)])).collect())
            }
        }
        Value::Channel(ch) => serde_json::json!({ "channel": ch.id() }),
    }
}

fn info(args: SpecArgs) -> ExitCode {
    let group = Group::new();
    let gateways = match start_gateways(&group, &args.specs()) {
        Ok(g) => g,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = gateways.iter().map(|gw| s.spawn(move || gw.rinfo())).collect();
        handles.into_iter().map(|h| h.join().expect("rinfo thread")).collect()
    });
    let mut rows = vec![["ID", "SPEC", "PYTHON", "VERSION", "PLATFORM", "PID", "CWD"].map(String::from)];
    let mut failed = false;
    for (gw, result) in gateways.iter().zip(results) {
        match result {
            Ok(ri) => {
                let (maj, min, mic, level, serial) = &ri.version_info;
                let version = if level == "final" {
                    format!("{maj}.{min}.{mic}")
                } else {
                    format!("{maj}.{min}.{mic}{level}{serial}")
                };
                rows.push([
                    gw.id().to_string(),
                    gw.spec().to_string(),
                    ri.executable,
                    version,
                    ri.platform,
                    ri.pid.to_string(),
                    ri.cwd,
                ]);
            }
            Err(e) => {
                failed = true;
                eprintln!("execnet: {}: {e}", gw.id());
            }
        }
    }
    let widths: Vec<usize> =
        (0..7).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    let mut out = std::io::stdout().lock();
    for row in &rows {
        let line: Vec<String> =
            row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    if failed {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}
