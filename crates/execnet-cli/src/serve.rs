//! `execnet serve`: a socket server for execnet hosts (ours and the execnet package's).
//!
//! The work is done by [`execnet::server`]; this parses the options, prints where the
//! server listens, logs to stderr and turns SIGINT and SIGTERM into a clean stop.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use execnet::server::{self, ServeConfig, Server};

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// A TCP address to listen on (repeatable). Port 0 picks a free port. Default:
    /// 127.0.0.1:8888 when no --unix is given.
    #[arg(long, value_name = "HOST:PORT")]
    listen: Vec<String>,
    /// Also (or only) listen on this Unix socket; it is created with mode 0600.
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// The interpreter that runs the workers.
    #[arg(long, value_name = "PY", default_value = "python3")]
    python: String,
    /// Serve one client: stop listening once its worker starts, exit when it ends.
    #[arg(long)]
    once: bool,
    /// Require clients to prove they know the token in FILE (mode 0600, 16 bytes or
    /// more) before anything is read; our clients add //token_file=FILE to the spec.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Allow listening on a non-loopback address without a token.
    #[arg(long)]
    insecure: bool,
    /// The longest first line accepted, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = server::DEFAULT_MAX_LINE)]
    max_line: usize,
    /// Seconds a client has after connecting to send its first line (and token answer).
    #[arg(long, value_name = "SECONDS", default_value_t = server::DEFAULT_FIRST_LINE_TIMEOUT.as_secs_f64())]
    first_line_timeout: f64,
    /// How many connections are handled at once; more are refused.
    #[arg(long, value_name = "N", default_value_t = server::DEFAULT_MAX_CONNECTIONS)]
    max_connections: usize,
    /// Seconds workers get after SIGTERM when the server stops, before SIGKILL.
    #[arg(long, value_name = "SECONDS", default_value_t = server::DEFAULT_GRACE.as_secs_f64())]
    grace: f64,
    /// Log only refusals and errors (not every connection).
    #[arg(short, long)]
    quiet: bool,
}

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    if value.is_finite() && value > 0.0 && value < 1e9 {
        Ok(Duration::from_secs_f64(value))
    } else {
        Err(format!("--{name} must be a positive number of seconds, not {value}"))
    }
}

fn config(args: ServeArgs) -> Result<ServeConfig, String> {
    let token = match &args.token_file {
        Some(path) => Some(server::load_token_file(path).map_err(|e| e.to_string())?),
        None => None,
    };
    let listen = if args.listen.is_empty() && args.unix.is_none() {
        vec![server::DEFAULT_LISTEN.to_string()]
    } else {
        args.listen
    };
    Ok(ServeConfig {
        listen,
        unix: args.unix,
        python: args.python,
        once: args.once,
        token,
        insecure: args.insecure,
        max_line: args.max_line,
        first_line_timeout: seconds("first-line-timeout", args.first_line_timeout)?,
        max_connections: args.max_connections,
        grace: seconds("grace", args.grace)?,
    })
}

pub(crate) fn serve(args: ServeArgs) -> ExitCode {
    let level = if args.quiet { tracing::Level::WARN } else { tracing::Level::INFO };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .with_max_level(level)
        .init();
    let server = match config(args).and_then(|c| Server::bind(c).map_err(|e| e.to_string())) {
        Ok(s) => s,
        Err(msg) => {
            eprintln!("execnet serve: {msg}");
            return ExitCode::from(2);
        }
    };
    let stop = server.handle().stop_flag();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("execnet serve: cannot handle signal {signal}: {e}");
            return ExitCode::from(2);
        }
    }
    {
        // One line per listener; the last word is a ready socket= spec value.
        let mut out = std::io::stdout().lock();
        for addr in server.addresses() {
            let _ = writeln!(out, "listening on socket={addr}");
        }
        let _ = out.flush();
    }
    match server.run() {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("execnet serve: {e}");
            ExitCode::from(2)
        }
    }
}
