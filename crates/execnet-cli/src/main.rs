//! `execnet`: run Python code on one or many gateways from the command line.
//!
//! One module per subcommand: [`run`], [`info`], [`rsync`], [`serve`]; [`hosts`] turns `-x` and
//! `--hosts` into the list of gateways to start; [`json`] turns values into JSON.

mod hosts;
mod info;
mod json;
mod rsync;
mod run;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use execnet::{Gateway, Group};

#[derive(Parser)]
#[command(
    name = "execnet",
    version,
    about = "Run Python code in other Python processes, with nothing installed there",
    long_about = "Run Python code in other Python processes, with nothing installed there.\n\n\
        Each -x SPEC starts a gateway: a Python process that receives a small worker over its \
        connection and then runs the code you send it. The code sees a global `channel`; \
        whatever it passes to channel.send(...) is printed here, one item per line, and what \
        it prints comes back too (tagged [ID] per host when there are several).",
    after_help = "SPEC syntax: key=value items separated by //, for example\n  \
        popen                          a python3 subprocess on this machine (the default)\n  \
        popen//python=pypy3            another interpreter\n  \
        popen//chdir=/tmp/work//nice=10//env:LANG=C\n  \
        popen//execmodel=main_thread_only\n  \
        ssh=user@host                  python3 on another machine, through your ssh\n  \
        ssh=-p 2222 host//python=python3.12//ssh_config=~/.ssh/work\n  \
        ssh=host//ssh_share            share one ssh connection between gateways to host\n  \
        popen//via=gw0                 a process started by gateway gw0, on its machine\n  \
        socket=127.0.0.1:8888          a worker behind a socket server (execnet serve)\n  \
        socket=unix:PATH//token_file=F  a Unix socket, with an access token\n  \
        4*popen                        four gateways of one spec (as in pytest-xdist)\n\n\
        Examples:\n  \
        execnet run -c 'import sys; channel.send(sys.version)'\n  \
        execnet run -x popen -x popen//python=pypy3 -c 'import os; channel.send(os.getpid())'\n  \
        execnet run -x ssh=web1 -x ssh=web2 -c 'import socket; channel.send(socket.gethostname())'\n  \
        execnet run --hosts fleet.txt --fanout 32 -c 'import os; print(os.uname().release)'\n  \
        seq 3 | execnet run --stdin -c 'for line in channel: channel.send(int(line) * 2)'\n  \
        execnet info -x popen -x popen//python=python3\n  \
        execnet rsync ./project --dest /srv/project -x ssh=web1 -x ssh=web2\n  \
        execnet serve --listen 127.0.0.1:0"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run code on every gateway in parallel and print what it sends and prints.
    #[command(after_help = "Items go to stdout, one per line, and so does what the code prints \
        to stdout; its stderr and tracebacks go to stderr. With several gateways every line \
        starts with [ID] (remote output is passed on in whole lines). --json prints one JSON \
        object per line instead: {\"gateway\": ID, \"item\" | \"stdout\" | \"stderr\" | \"error\": ...}, \
        and {\"gateway\": ID, \"status\": ..., \"seconds\": ...} when a gateway is done.\n\n\
        At most --fanout gateways start and run at once; on a terminal a progress bar shows \
        them, and with several gateways (or on a terminal) a summary on stderr ends the run: one \
        line per gateway with ok, remote error, unreachable, lost, timed out or interrupted, and \
        how long it took. Ctrl-C ends the remote code (KeyboardInterrupt: finally blocks run) \
        and prints the summary; a second Ctrl-C exits at once.\n\n\
        Exit status: 0 when the code ran everywhere without error, 1 when \
        the code raised on some gateway, 2 for a usage error, a gateway that could not be \
        started or was lost, or --timeout; 130 after Ctrl-C or when stdout was closed, 143 \
        after SIGTERM.")]
    Run(RunArgs),
    /// Show the interpreter behind each gateway (executable, version, platform, pid, cwd).
    Info(SpecArgs),
    /// Send a directory tree to every gateway: only files whose size or time differ.
    #[command(after_help = "The contents of SRC go into --dest (default: the same absolute \
        path) on every host at once. A file is sent when the host has no regular file of the \
        same size and modification time there; it is written beside its place and renamed, with \
        SRC's permission bits and time. Symlinks are made anew (an absolute link into SRC points \
        into DEST); --delete removes what DEST holds beyond SRC. On a terminal a progress bar \
        shows the bytes sent; a summary on stderr ends the run, one line per host.\n\n\
        Examples:\n  \
        execnet rsync ./project --dest /srv/project -x ssh=web1 -x ssh=web2 --delete\n  \
        execnet rsync ./src --hosts fleet.txt --exclude .git --exclude '*.pyc'\n\n\
        Exit status: 0 when every host is in sync, 1 when the receiving side raised on some host \
        (a directory it may not write, say), 2 for a usage error or a host that could not be \
        started or was lost.")]
    Rsync(rsync::RsyncArgs),
    /// Accept socket gateways: run each client's worker in a fresh Python process.
    #[command(after_help = "Prints `listening on socket=ADDR` for each listener on stdout, then \
        logs connections and refusals on stderr. Safe by default: listens on 127.0.0.1, and \
        refuses a non-loopback address unless --token-file or --insecure is given. SIGINT or \
        SIGTERM stops it: its workers get SIGTERM, then SIGKILL after --grace seconds.")]
    Serve(serve::ServeArgs),
}

#[derive(Args)]
pub(crate) struct SpecArgs {
    /// A gateway spec (N*SPEC for N of them); repeat for several gateways (default: popen).
    #[arg(short = 'x', long = "spec", value_name = "SPEC")]
    pub(crate) specs: Vec<String>,
    /// A file with one spec or ssh destination (user@host) per line; # starts a comment.
    #[arg(long = "hosts", value_name = "FILE")]
    pub(crate) hosts: Vec<PathBuf>,
}

#[derive(Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) specs: SpecArgs,
    /// Python code to run (it sees the global `channel`).
    #[arg(short = 'c', long = "code", value_name = "CODE", conflicts_with = "file")]
    pub(crate) code: Option<String>,
    /// A Python file to run instead of -c.
    #[arg(value_name = "FILE", required_unless_present = "code")]
    pub(crate) file: Option<PathBuf>,
    /// Print one JSON object per line (items, remote output, errors, statuses) instead of text.
    #[arg(long)]
    pub(crate) json: bool,
    /// Give up (and exit with status 2) after this many seconds.
    #[arg(long, value_name = "SECONDS", value_parser = hosts::parse_seconds)]
    pub(crate) timeout: Option<f64>,
    /// At most this many gateways starting or running at once (a socket server takes 32
    /// connections by default; ssh servers often limit unauthenticated ones to 10).
    #[arg(long, value_name = "N", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    pub(crate) fanout: u64,
    /// Try a gateway that cannot be reached this many more times (0.5s, 1s, 2s, 4s apart).
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub(crate) retries: u32,
    /// Give our stdin to the code: as str lines (the default) or bytes chunks, received with
    /// channel.receive(), `for line in channel`, or channel.makefile("r"). Without it the code
    /// sees the end of its input (EOFError) at once.
    #[arg(long, value_name = "MODE", num_args = 0..=1, require_equals = true, default_missing_value = "lines")]
    pub(crate) stdin: Option<run::StdinMode>,
    /// No progress bar, even on a terminal (for example while ssh asks for a password).
    #[arg(long)]
    pub(crate) no_progress: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Info(args) => info::info(args),
        Command::Rsync(args) => rsync::rsync(args),
        Command::Serve(args) => serve::serve(args),
    }
}

/// Starts one gateway per planned host, in a group that ends them all when dropped.
pub(crate) fn start_gateways(group: &Group, hosts: &[hosts::Host]) -> Result<Vec<Gateway>, String> {
    hosts
        .iter()
        .map(|host| group.makegateway(host.full_spec.as_str()).map_err(|e| format!("execnet: {e}")))
        .collect()
}
