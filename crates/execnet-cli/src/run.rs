//! `execnet run`: the code on every gateway in parallel, items printed as they arrive.
//!
//! stdout carries the items only (prefixed with `[ID] ` when there are several
//! gateways). stderr carries remote tracebacks and errors as they happen, a progress bar
//! while gateways start and the code runs (only when stderr is a terminal), and at the
//! end a summary with one line per gateway: ok, remote error, unreachable, lost or timed
//! out, with how long it took. The summary is printed when there are several gateways,
//! or when stderr is a terminal; a single gateway in a script stays quiet.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use execnet::{Error, Gateway, Group, Source, Value, XSpec};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::json::to_json;
use crate::RunArgs;

/// How the run ended on one gateway.
enum Outcome {
    Ok,
    /// The code raised; the last line of the traceback.
    RemoteError(String),
    /// The gateway never became ready: why.
    Unreachable(String),
    /// The gateway was lost while the code ran: why.
    Lost(String),
    /// `--timeout` passed (while starting, or while the code ran).
    TimedOut,
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::RemoteError(_) => "remote error",
            Outcome::Unreachable(_) => "unreachable",
            Outcome::Lost(_) => "lost",
            Outcome::TimedOut => "timed out",
        }
    }
    fn detail(&self) -> &str {
        match self {
            Outcome::Ok => "",
            Outcome::RemoteError(s) | Outcome::Unreachable(s) | Outcome::Lost(s) => s,
            Outcome::TimedOut => "no end within --timeout",
        }
    }
    /// Failures of the gateway (status 2), as opposed to failures of the code (status 1).
    fn gateway_failed(&self) -> bool {
        matches!(self, Outcome::Unreachable(_) | Outcome::Lost(_) | Outcome::TimedOut)
    }
}

/// What every gateway's thread shares.
struct Shared<'a> {
    prefix: bool,
    json: bool,
    stdout: &'a Mutex<std::io::Stdout>,
    progress: &'a Progress,
    /// `--timeout`, and when it ends.
    timeout: Option<(Duration, Instant)>,
}

impl Shared<'_> {
    fn left(&self) -> Option<Duration> {
        self.timeout.map(|(_, end)| end.saturating_duration_since(Instant::now()))
    }
    fn timeout_text(&self) -> String {
        self.timeout.map(|(t, _)| format!("{}s", t.as_secs_f64())).unwrap_or_default()
    }
}

/// One line of the summary.
struct Report {
    id: String,
    spec: String,
    outcome: Outcome,
    elapsed: Duration,
}

/// The progress bar: how many gateways are starting, running, done.
struct Progress {
    bar: ProgressBar,
    counts: Mutex<(usize, usize)>, // (starting, running)
}

impl Progress {
    fn new(total: usize, visible: bool) -> Progress {
        let bar = if visible {
            ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr())
        } else {
            ProgressBar::hidden()
        };
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} {elapsed:>4} [{bar:24}] {pos}/{len} done  {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        if visible {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        Progress { bar, counts: Mutex::new((total, 0)) }
    }

    fn update(&self, change: impl FnOnce(&mut (usize, usize))) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut counts);
        let (starting, running) = *counts;
        let mut parts = Vec::new();
        if starting > 0 {
            parts.push(format!("{starting} starting"));
        }
        if running > 0 {
            parts.push(format!("{running} running"));
        }
        self.bar.set_message(parts.join(", "));
    }

    fn started(&self) {
        self.update(|c| {
            c.0 -= 1;
            c.1 += 1;
        });
    }

    fn finished(&self, was_running: bool) {
        self.update(|c| {
            if was_running {
                c.1 -= 1;
            } else {
                c.0 -= 1;
            }
        });
        self.bar.inc(1);
    }

    /// Runs `f` (which prints) with the bar out of the way.
    fn print<R>(&self, f: impl FnOnce() -> R) -> R {
        self.bar.suspend(f)
    }
}

pub(crate) fn run(args: RunArgs) -> ExitCode {
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
    let specs = args.specs.specs();
    // A malformed spec is a usage error: stop before starting anything.
    for spec in &specs {
        if let Err(e) = XSpec::new(spec) {
            eprintln!("execnet: {e}");
            return ExitCode::from(2);
        }
    }
    let timeout = args.timeout.map(Duration::from_secs_f64);
    let start = Instant::now();
    let stderr_terminal = std::io::stderr().is_terminal();
    let progress = Progress::new(specs.len(), stderr_terminal && !args.no_progress);
    progress.update(|_| {});

    // Start every gateway (this returns at once: the processes start in the background).
    let group = Group::new();
    let mut slots: Vec<(String, Result<Gateway, String>)> = Vec::new();
    let mut auto_ids = 0;
    for spec in &specs {
        // The id the group gives (or gave) this gateway, for failures to start.
        let explicit = XSpec::new(spec).ok().and_then(|s| s.id().map(str::to_string));
        let id = explicit.unwrap_or_else(|| {
            auto_ids += 1;
            format!("gw{}", auto_ids - 1)
        });
        match group.makegateway(spec.as_str()) {
            Ok(gw) => slots.push((gw.id().to_string(), Ok(gw))),
            Err(e @ Error::Spec { .. }) => {
                progress.print(|| eprintln!("execnet: {e}"));
                return ExitCode::from(2);
            }
            Err(e) => {
                progress.print(|| eprintln!("execnet: [{id}] {e}"));
                let why = match &e {
                    Error::Spawn { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                slots.push((id, Err(why)));
            }
        }
    }

    let stdout = Mutex::new(std::io::stdout());
    let shared = Shared {
        prefix: specs.len() > 1,
        json: args.json,
        stdout: &stdout,
        progress: &progress,
        timeout: timeout.map(|t| (t, start + t)),
    };
    let reports: Vec<Report> = std::thread::scope(|s| {
        let handles: Vec<_> = slots
            .iter()
            .zip(&specs)
            .map(|((id, slot), spec)| {
                let source = source.clone();
                let shared = &shared;
                s.spawn(move || {
                    let outcome = match slot {
                        Ok(gw) => run_one(gw, source, shared),
                        Err(why) => {
                            shared.progress.finished(false);
                            Outcome::Unreachable(first_line(why))
                        }
                    };
                    Report { id: id.clone(), spec: spec.clone(), outcome, elapsed: start.elapsed() }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Report {
                    id: "?".into(),
                    spec: String::new(),
                    outcome: Outcome::Lost("the thread running it panicked".into()),
                    elapsed: start.elapsed(),
                })
            })
            .collect()
    });
    let _ = stdout.lock().map(|mut o| o.flush());
    progress.bar.finish_and_clear();
    if specs.len() > 1 || stderr_terminal {
        print_summary(&reports, start.elapsed());
    }
    if reports.iter().any(|r| r.outcome.gateway_failed()) {
        ExitCode::from(2)
    } else if reports.iter().any(|r| matches!(r.outcome, Outcome::RemoteError(_))) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_string()
}

fn last_line(text: &str) -> String {
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

/// Why a gateway was lost, in one line (the details went to stderr already).
fn lost_reason(e: &Error) -> String {
    match e {
        Error::GatewayLost(info) => first_line(&info.reason),
        other => first_line(&other.to_string()),
    }
}

fn run_one(gw: &Gateway, source: Source, shared: &Shared) -> Outcome {
    let tag = if shared.prefix { format!("[{}] ", gw.id()) } else { String::new() };
    let progress = shared.progress;
    // Wait until the worker answers, so that "starting" and "unreachable" mean what they say.
    let ready = gw.remote_exec("pass").and_then(|probe| probe.waitclose(shared.left()));
    match ready {
        Ok(()) => progress.started(),
        Err(e) => {
            progress.finished(false);
            return match e {
                Error::Timeout(_) => {
                    progress.print(|| {
                        eprintln!(
                            "execnet: {tag}timed out after {}: {} did not start (see --timeout)",
                            shared.timeout_text(),
                            gw.id()
                        )
                    });
                    Outcome::TimedOut
                }
                e => {
                    progress.print(|| eprintln!("execnet: {tag}{e}"));
                    Outcome::Unreachable(lost_reason(&e))
                }
            };
        }
    }
    let outcome = run_code(gw, source, &tag, shared);
    progress.finished(true);
    outcome
}

fn run_code(gw: &Gateway, source: Source, tag: &str, shared: &Shared) -> Outcome {
    let progress = shared.progress;
    let channel = match gw.remote_exec(source) {
        Ok(ch) => ch,
        Err(e) => {
            progress.print(|| eprintln!("execnet: {tag}{e}"));
            return Outcome::Lost(lost_reason(&e));
        }
    };
    loop {
        let item = match shared.left() {
            None => channel.receive::<Value>(),
            Some(left) => channel.receive_timeout::<Value>(left),
        };
        match item {
            Ok(value) => {
                let text = if shared.json {
                    serde_json::to_string(&to_json(&value)).unwrap_or_else(|e| format!("{e}"))
                } else {
                    value.to_string()
                };
                progress.print(|| {
                    let mut out = shared.stdout.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = writeln!(out, "{tag}{text}");
                    let _ = out.flush();
                });
            }
            Err(Error::EndOfChannel { .. }) => return Outcome::Ok,
            Err(Error::Remote { traceback }) => {
                progress.print(|| {
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err, "{tag}remote error on {}:", gw.id());
                    let _ = writeln!(err, "{}", traceback.trim_end());
                });
                return Outcome::RemoteError(last_line(&traceback));
            }
            Err(Error::Timeout(_)) => {
                progress.print(|| {
                    eprintln!(
                        "execnet: {tag}timed out after {}: no end of the code on {} (see --timeout)",
                        shared.timeout_text(),
                        gw.id()
                    )
                });
                return Outcome::TimedOut;
            }
            Err(e) => {
                progress.print(|| eprintln!("execnet: {tag}{e}"));
                return Outcome::Lost(lost_reason(&e));
            }
        }
    }
}

fn print_summary(reports: &[Report], total: Duration) {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for r in reports {
        let label = r.outcome.label();
        match counts.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => counts.push((label, 1)),
        }
    }
    let counts: Vec<String> = counts.iter().map(|(l, n)| format!("{n} {l}")).collect();
    let plural = if reports.len() == 1 { "" } else { "s" };
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "execnet: {} gateway{plural} in {:.2}s: {}",
        reports.len(),
        total.as_secs_f64(),
        counts.join(", ")
    );
    let id_w = reports.iter().map(|r| r.id.chars().count()).max().unwrap_or(0);
    let spec_w = reports.iter().map(|r| r.spec.chars().count()).max().unwrap_or(0);
    let label_w = reports.iter().map(|r| r.outcome.label().len()).max().unwrap_or(0);
    for r in reports {
        let line = format!(
            "  {:<id_w$}  {:<spec_w$}  {:<label_w$}  {:>6.2}s  {}",
            r.id,
            r.spec,
            r.outcome.label(),
            r.elapsed.as_secs_f64(),
            r.outcome.detail()
        );
        let _ = writeln!(err, "{}", line.trim_end());
    }
}
