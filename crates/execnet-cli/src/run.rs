//! `execnet run`: the code on every gateway in parallel, items printed as they arrive.

use std::io::Write;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use execnet::{Error, Gateway, Group, Source, Value};

use crate::json::to_json;
use crate::{start_gateways, RunArgs};

enum Outcome {
    Ok,
    RemoteError,
    Lost,
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

