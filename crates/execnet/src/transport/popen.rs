//! `popen`: a Python subprocess on this machine, talking over its stdin and stdout.

use std::process::{Command, Stdio};

use super::Connection;
use crate::error::{Error, Result};
use crate::worker::{self, WorkerConfig, BOOTSTRAP_ONELINER};
use crate::xspec::XSpec;

/// The interpreter used when the spec has no `python=`.
pub use crate::worker::DEFAULT_PYTHON;

/// Starts `python -u -c PROGRAM` for `spec`: with our worker, the raw-bytes loader of
/// [`crate::worker::popen_bootstrap`] (the compiled worker from the cache, no literal to
/// parse); with another worker, the usual one-liner that evaluates the first line.
pub(crate) fn spawn(spec: &XSpec, config: &WorkerConfig) -> Result<Connection> {
    let python = spec.python().unwrap_or(DEFAULT_PYTHON);
    // A local interpreter: its compiled worker can be cached (not under -B, which asks
    // for no bytecode to be written).
    let mut cache = crate::worker::cache::lookup(python);
    if spec.dont_write_bytecode() {
        cache.path = None;
    }
    let (program, bootstrap) = match crate::worker::popen_bootstrap(config, &cache) {
        Some(boot) => (boot.program, boot.bytes),
        None => (
            BOOTSTRAP_ONELINER.to_string(),
            crate::worker::stdio_bootstrap_line(config).into_bytes(),
        ),
    };
    let argv = worker::python_command([python], spec.dont_write_bytecode(), &program);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // A process group of its own: a Ctrl-C at the terminal reaches the host only, which
    // ends its gateways in order (terminate, then SIGINT to code still running), instead
    // of every worker dying at once in the middle of whatever it was doing.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // The environment applies from the interpreter's start (PYTHONPATH and the like).
    cmd.envs(spec.env());
    let child = cmd.spawn().map_err(|e| Error::Spawn {
        spec: spec.to_string(),
        key: if spec.python().is_some() { "python" } else { "popen" }.into(),
        program: python.into(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => format!(
                "{python:?} was not found on PATH; name an installed interpreter with python=..."
            ),
            std::io::ErrorKind::PermissionDenied => format!("{python:?} is not executable"),
            _ => e.to_string(),
        },
    })?;
    Ok(Connection::over_child_stdio(child, bootstrap, python.to_string(), None))
}
