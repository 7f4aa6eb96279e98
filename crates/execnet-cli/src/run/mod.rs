//! `execnet run`: the code on every gateway, at most `--fanout` at a time, with what it
//! sends and prints passed on as it arrives.
//!
//! Each gateway goes through: start (retried `--retries` times if it cannot be
//! reached), capture of its remote output (which also tells that it is up), the code,
//! then the end of the capture and of the gateway, which frees its fan-out slot. A
//! gateway others are started through (`via=ID`) stays until the end. [`print`] says
//! what goes where; [`input`] handles `--stdin`.
//!
//! The summary on stderr has one line per gateway: ok, remote error, unreachable, lost,
//! timed out or interrupted, with how long it took. It is printed when there are several
//! gateways, when stderr is a terminal, or when the run was interrupted.
//!
//! Ctrl-C (or SIGTERM) stops starting gateways and ends those running: the remote code
//! gets KeyboardInterrupt, so its `finally` blocks run, and its end is awaited for the
//! grace period (code that ends normally then is ok); a second Ctrl-C exits at once. A
//! stdout that goes away (`execnet run ... | head`) ends the run the same way.

mod input;
mod print;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;
use execnet::{Channel, Error, Gateway, Group, Output, OutputCapture, Source, Value};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;

pub(crate) use self::input::StdinMode;
use self::input::Input;
use self::print::{Lines, Printer};
use crate::hosts::{self, Host};
use crate::RunArgs;

/// How long the remote output may still come after the code ended (subprocesses' pipes).
const OUTPUT_DRAIN: Duration = Duration::from_secs(3);
/// How long the gateways get to end after Ctrl-C before they are killed.
const INTERRUPT_GRACE: Duration = Duration::from_secs(2);
/// How often waiting threads look at the clock and at the abort flag.
const TICK: Duration = Duration::from_millis(100);

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
    /// Ctrl-C, SIGTERM or a closed stdout ended the run first.
    Interrupted(&'static str),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::RemoteError(_) => "remote error",
            Outcome::Unreachable(_) => "unreachable",
            Outcome::Lost(_) => "lost",
            Outcome::TimedOut => "timed out",
            Outcome::Interrupted(_) => "interrupted",
        }
    }
    fn detail(&self) -> &str {
        match self {
            Outcome::Ok => "",
            Outcome::RemoteError(s) | Outcome::Unreachable(s) | Outcome::Lost(s) => s,
            Outcome::TimedOut => "no end within --timeout",
            Outcome::Interrupted(s) => s,
        }
    }
    /// Failures of the gateway (status 2), as opposed to failures of the code (status 1).
    fn gateway_failed(&self) -> bool {
        matches!(self, Outcome::Unreachable(_) | Outcome::Lost(_) | Outcome::TimedOut)
    }
}

/// One line of the summary.
struct Report {
    id: String,
    spec: String,
    outcome: Outcome,
    elapsed: Duration,
}

/// Where a gateway that others are started through stands.
#[derive(Clone, Copy, PartialEq)]
enum Started {
    Pending,
    Up,
    Failed,
}

/// What the threads running gateways share.
struct Ctx<'a> {
    hosts: &'a [Host],
    source: Source,
    group: Group,
    printer: Printer,
    progress: Progress,
    deadline: Option<Instant>,
    timeout_text: String,
    retries: u32,
    input: Option<Input>,
    /// Set when the run is being interrupted: start nothing more.
    abort: AtomicBool,
    /// The next host to start.
    next: AtomicUsize,
    started: Mutex<Vec<Started>>,
    started_cv: Condvar,
    reports: Mutex<Vec<Option<Report>>>,
}

impl Ctx<'_> {
    fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }
    fn left(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(Instant::now()))
    }
    fn timed_out(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
    fn set_started(&self, i: usize, state: Started) {
        self.started.lock().unwrap_or_else(|e| e.into_inner())[i] = state;
        self.started_cv.notify_all();
    }
}

/// SIGINT and SIGTERM, as flags; a second one of either exits at once.
struct Signals {
    int: Arc<AtomicBool>,
    term: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Signals {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let signals = Signals { int: Arc::new(AtomicBool::new(false)), term: Arc::new(AtomicBool::new(false)) };
        let any = Arc::new(AtomicBool::new(false));
        for (sig, flag) in [(SIGINT, &signals.int), (SIGTERM, &signals.term)] {
            // The order matters: the shutdown check sees the flag as it was before this signal.
            let _ = signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, any.clone());
            let _ = signal_hook::flag::register(sig, any.clone());
            let _ = signal_hook::flag::register(sig, flag.clone());
        }
        signals
    }

    /// The exit status for the signal that came, if one did.
    fn status(&self) -> Option<u8> {
        if self.int.load(Ordering::Relaxed) {
            Some(130)
        } else if self.term.load(Ordering::Relaxed) {
            Some(143)
        } else {
            None
        }
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
    let (hosts, warnings) = match hosts::plan(&args.specs.specs, &args.specs.hosts) {
        Ok(plan) => plan,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    for w in &warnings {
        eprintln!("execnet: warning: {w}");
    }
    let signals = Signals::install();
    let start = Instant::now();
    let stderr_terminal = std::io::stderr().is_terminal();
    let progress = Progress::new(hosts.len(), stderr_terminal && !args.no_progress);
    let ctx = Ctx {
        hosts: &hosts,
        source,
        group: Group::new(),
        printer: Printer::new(args.json, hosts.len() > 1, progress.bar.clone()),
        progress,
        deadline: args.timeout.map(|t| start + Duration::from_secs_f64(t)),
        timeout_text: args.timeout.map(|t| format!("{t}s")).unwrap_or_default(),
        retries: args.retries,
        input: args.stdin.map(Input::read_stdin),
        abort: AtomicBool::new(false),
        next: AtomicUsize::new(0),
        started: Mutex::new(vec![Started::Pending; hosts.len()]),
        started_cv: Condvar::new(),
        reports: Mutex::new((0..hosts.len()).map(|_| None).collect()),
    };
    ctx.progress.update(|_| {});
    let threads = (args.fanout as usize).clamp(1, hosts.len());
    let running = AtomicUsize::new(threads);
    let mut interrupted: Option<u8> = None;
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let _done = Decrement(&running);
                run_hosts(&ctx);
            });
        }
        // This thread watches for Ctrl-C and for a stdout that went away.
        loop {
            let all_done = running.load(Ordering::Relaxed) == 0;
            if interrupted.is_none() {
                let broken = ctx.printer.is_broken() || ctx.aborted();
                if let Some(status) = signals.status().or(if broken { Some(130) } else { None }) {
                    interrupted = Some(status);
                    ctx.abort.store(true, Ordering::Relaxed);
                    ctx.started_cv.notify_all();
                    ctx.group.terminate(INTERRUPT_GRACE);
                }
            }
            if all_done {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    // The gateways others were started through, and any started during an interrupt.
    ctx.group.terminate(INTERRUPT_GRACE);
    ctx.progress.bar.finish_and_clear();
    let reports: Vec<Report> = ctx
        .reports
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .zip(&hosts)
        .map(|(r, h)| {
            r.unwrap_or_else(|| Report {
                id: h.id.clone(),
                spec: h.spec.clone(),
                outcome: Outcome::Lost("the thread running it panicked".into()),
                elapsed: Duration::ZERO,
            })
        })
        .collect();
    if let Some(status) = interrupted {
        if ctx.printer.is_broken() && signals.status().is_none() {
            eprintln!("execnet: stdout was closed: the run was ended");
        }
        print_summary(&reports, start.elapsed());
        return ExitCode::from(status);
    }
    if hosts.len() > 1 || stderr_terminal {
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

/// Takes one off a count when dropped (also when the thread panics).
struct Decrement<'a>(&'a AtomicUsize);

impl Drop for Decrement<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One fan-out slot: runs hosts one after the other until none is left.
fn run_hosts(ctx: &Ctx) {
    loop {
        let i = ctx.next.fetch_add(1, Ordering::Relaxed);
        let Some(host) = ctx.hosts.get(i) else { return };
        let begun = Instant::now();
        let outcome = if ctx.aborted() {
            ctx.progress.skipped();
            Outcome::Interrupted("not started")
        } else {
            run_host(ctx, i, host)
        };
        let elapsed = begun.elapsed();
        let _ = ctx.printer.status(&host.id, outcome.label(), elapsed.as_secs_f64(), outcome.detail());
        ctx.reports.lock().unwrap_or_else(|e| e.into_inner())[i] =
            Some(Report { id: host.id.clone(), spec: host.spec.clone(), outcome, elapsed });
    }
}

/// Why a gateway did not start.
enum StartFailure {
    Unreachable { why: String, message: String },
    TimedOut,
    Interrupted,
}

fn run_host(ctx: &Ctx, i: usize, host: &Host) -> Outcome {
    ctx.progress.starting();
    if let Some(t) = host.via {
        if let Err(outcome) = wait_for_via(ctx, t) {
            ctx.set_started(i, Started::Failed);
            ctx.progress.finished(false);
            return outcome;
        }
    }
    let mut attempt = 0;
    let (gw, capture) = loop {
        match start(ctx, host) {
            Ok(up) => break up,
            Err(StartFailure::Unreachable { why, message }) => {
                let backoff = Duration::from_millis(500 << attempt.min(3));
                let time_left = ctx.left().is_none_or(|left| left > backoff);
                if attempt < ctx.retries && time_left && !ctx.aborted() {
                    attempt += 1;
                    ctx.printer.note(
                        &host.id,
                        &format!("{message}\nretrying in {:.1}s (retry {attempt} of {})", backoff.as_secs_f64(), ctx.retries),
                    );
                    sleep_unless_aborted(ctx, backoff);
                    continue;
                }
                ctx.printer.note(&host.id, &message);
                ctx.set_started(i, Started::Failed);
                ctx.progress.finished(false);
                return Outcome::Unreachable(why);
            }
            Err(StartFailure::TimedOut) => {
                ctx.printer.note(
                    &host.id,
                    &format!("timed out after {}: {} did not start (see --timeout)", ctx.timeout_text, host.id),
                );
                ctx.set_started(i, Started::Failed);
                ctx.progress.finished(false);
                return Outcome::TimedOut;
            }
            Err(StartFailure::Interrupted) => {
                ctx.set_started(i, Started::Failed);
                ctx.progress.finished(false);
                return Outcome::Interrupted("interrupted while starting");
            }
        }
    };
    ctx.set_started(i, Started::Up);
    ctx.progress.started();
    let outcome = run_code(ctx, host, &gw, &capture);
    ctx.progress.finished(true);
    if !host.keep && !ctx.aborted() {
        // Ends the worker (it has finished) and waits for it: then the slot is free.
        let _ = gw.exit();
    }
    outcome
}

fn sleep_unless_aborted(ctx: &Ctx, total: Duration) {
    let end = Instant::now() + total;
    while !ctx.aborted() && Instant::now() < end {
        std::thread::sleep(TICK.min(end.saturating_duration_since(Instant::now())));
    }
}

/// Waits until the gateway this one is started through is up.
fn wait_for_via(ctx: &Ctx, t: usize) -> Result<(), Outcome> {
    let mut started = ctx.started.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        match started[t] {
            Started::Up => return Ok(()),
            Started::Failed => {
                return Err(Outcome::Unreachable(format!("via={}: that gateway did not start", ctx.hosts[t].id)))
            }
            Started::Pending if ctx.aborted() => return Err(Outcome::Interrupted("interrupted while starting")),
            Started::Pending if ctx.timed_out() => return Err(Outcome::TimedOut),
            Started::Pending => {
                started = ctx.started_cv.wait_timeout(started, TICK).unwrap_or_else(|e| e.into_inner()).0;
            }
        }
    }
}

/// Starts the gateway and the capture of its output (the first answer from the worker).
fn start(ctx: &Ctx, host: &Host) -> Result<(Gateway, OutputCapture), StartFailure> {
    let unreachable = |e: &Error| StartFailure::Unreachable { why: reason_of(e), message: e.to_string() };
    let gw = ctx.group.makegateway(host.full_spec.as_str()).map_err(|e| unreachable(&e))?;
    match gw.capture_output_timeout(ctx.left()) {
        Ok(capture) => Ok((gw, capture)),
        Err(e) => {
            let failure = if ctx.aborted() {
                StartFailure::Interrupted
            } else if matches!(e, Error::Timeout(_)) {
                StartFailure::TimedOut
            } else {
                unreachable(&e)
            };
            let _ = gw.terminate(Duration::from_secs(1));
            Err(failure)
        }
    }
}

/// What the gateway's callbacks pass to the thread that prints, in the worker's order.
enum Event {
    Item(Value),
    End,
    Output(Output),
    OutputEnd,
}

/// An item of the code's channel, or its end (the endmarker).
#[derive(Deserialize)]
#[serde(from = "Value")]
enum ItemOrEnd {
    Item(Value),
    End,
}

impl From<Value> for ItemOrEnd {
    fn from(v: Value) -> ItemOrEnd {
        ItemOrEnd::Item(v)
    }
}

fn run_code(ctx: &Ctx, host: &Host, gw: &Gateway, capture: &OutputCapture) -> Outcome {
    let id = host.id.as_str();
    let printer = &ctx.printer;
    let (tx, rx) = crossbeam_channel::bounded::<Event>(1024);
    let out_tx = tx.clone();
    let installed = capture.set_callback(move |o| {
        let _ = out_tx.send(o.map_or(Event::OutputEnd, Event::Output));
    });
    if let Err(e) = installed {
        printer.note(id, &e.to_string());
        return Outcome::Lost(reason_of(&e));
    }
    let channel: Channel = match gw.remote_exec_with_callback(
        ctx.source.clone(),
        move |item: ItemOrEnd| {
            let _ = tx.send(match item {
                ItemOrEnd::Item(v) => Event::Item(v),
                ItemOrEnd::End => Event::End,
            });
        },
        ItemOrEnd::End,
    ) {
        Ok(ch) => ch,
        Err(e) => {
            printer.note(id, &e.to_string());
            return Outcome::Lost(reason_of(&e));
        }
    };
    match &ctx.input {
        Some(input) => input.feed(channel.clone()),
        None => {
            let _ = channel.close_sending(); // receive() gets EOFError: no input comes
        }
    }
    let mut lines = Lines::default();
    let mut outcome: Option<Outcome> = None;
    let mut output_open = true;
    let mut drain_until: Option<Instant> = None;
    // Set at Ctrl-C: the code's end is still awaited until then, since the end may be on
    // its way (the code finished as the key was pressed) or come from KeyboardInterrupt.
    let mut interrupt_deadline: Option<Instant> = None;
    let result = loop {
        if ctx.aborted() {
            if outcome.is_some() {
                break outcome.take(); // it ended before Ctrl-C; only output was awaited
            }
            let deadline = *interrupt_deadline.get_or_insert_with(|| Instant::now() + INTERRUPT_GRACE + TICK * 5);
            if Instant::now() >= deadline {
                break Some(Outcome::Interrupted("interrupted while running"));
            }
        }
        if let (Some(done), false) = (&outcome, output_open) {
            let _ = done;
            break outcome.take();
        }
        let mut wait = TICK;
        if let Some(left) = ctx.left() {
            wait = wait.min(left);
        }
        let event = rx.recv_timeout(wait);
        let printed = match event {
            Ok(Event::Item(v)) => printer.item(id, &v),
            Ok(Event::Output(o)) => printer.output(id, &mut lines, o.stream, &o.text),
            Ok(Event::OutputEnd) => {
                output_open = false;
                Ok(())
            }
            Ok(Event::End) => {
                // The callback saw the end: read how it ended (waitclose would wait for
                // the delivery of the end marker, which is still running).
                let ended = match channel.end_error() {
                    None => Outcome::Ok,
                    Some(_) if interrupt_deadline.is_some() => Outcome::Interrupted("interrupted while running"),
                    Some(Error::Remote { traceback }) => {
                        let _ = printer.finish_lines(id, &mut lines);
                        let _ = printer.remote_error(id, &traceback);
                        Outcome::RemoteError(last_line(&traceback))
                    }
                    Some(e) => {
                        printer.note(id, &e.to_string());
                        Outcome::Lost(reason_of(&e))
                    }
                };
                outcome = Some(ended);
                let _ = capture.stop();
                drain_until = Some(Instant::now() + OUTPUT_DRAIN);
                Ok(())
            }
            Err(RecvTimeoutError::Timeout) => {
                if outcome.is_none() && ctx.timed_out() {
                    let _ = printer.finish_lines(id, &mut lines);
                    printer.note(
                        id,
                        &format!("timed out after {}: no end of the code on {id} (see --timeout)", ctx.timeout_text),
                    );
                    let _ = gw.terminate(Duration::from_secs(2));
                    return Outcome::TimedOut;
                }
                if drain_until.is_some_and(|d| Instant::now() >= d) {
                    break outcome.take();
                }
                Ok(())
            }
            Err(RecvTimeoutError::Disconnected) => break outcome.take(),
        };
        if printed.is_err() {
            // stdout is gone: the watching thread ends the run.
            ctx.abort.store(true, Ordering::Relaxed);
        }
    };
    let _ = printer.finish_lines(id, &mut lines);
    result.unwrap_or_else(|| Outcome::Lost("the gateway ended without closing the channel".into()))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or("").trim().to_string()
}

pub(crate) fn last_line(text: &str) -> String {
    text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string()
}

/// Why a gateway failed, in one line (the details went to stderr already).
pub(crate) fn reason_of(e: &Error) -> String {
    match e {
        Error::GatewayLost(info) => first_line(&info.reason),
        Error::Spawn { reason, .. } => first_line(reason),
        other => first_line(&other.to_string()),
    }
}

/// The progress bar: how many gateways are queued, starting, running, done.
struct Progress {
    bar: ProgressBar,
    total: usize,
    counts: Mutex<(usize, usize, usize)>, // (starting, running, done)
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
        Progress { bar, total, counts: Mutex::new((0, 0, 0)) }
    }

    fn update(&self, change: impl FnOnce(&mut (usize, usize, usize))) {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        change(&mut counts);
        let (starting, running, done) = *counts;
        let queued = self.total.saturating_sub(starting + running + done);
        let mut parts = Vec::new();
        for (n, what) in [(queued, "queued"), (starting, "starting"), (running, "running")] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        self.bar.set_position(done as u64);
        self.bar.set_message(parts.join(", "));
    }

    fn starting(&self) {
        self.update(|c| c.0 += 1);
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
            c.2 += 1;
        });
    }

    fn skipped(&self) {
        self.update(|c| c.2 += 1);
    }
}

fn print_summary(reports: &[Report], total: Duration) {
    use std::io::Write;
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
