//! The Python worker that runs on the remote side, and the bootstrap that ships it.
//!
//! The worker is one stdlib-only Python file, `worker.py`, embedded in the library. A bare
//! interpreter is started with [`BOOTSTRAP_ONELINER`]; the host writes one line holding the
//! worker's source plus a call that starts serving ([`bootstrap_line`]), and the worker
//! answers with the ready byte `1` before speaking frames.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::wire::pyrepr::py_ascii_literal;

use crate::xspec::ExecModel;

/// The source of our worker (PROTOCOL.md sections 1 to 4).
pub const WORKER_SOURCE: &str = include_str!("worker.py");

/// The program given to `python -c`: read one line, evaluate it to a string, run that.
pub const BOOTSTRAP_ONELINER: &str = "import sys;exec(eval(sys.stdin.readline()))";

/// The ready byte the worker writes once it serves frames.
pub const READY_BYTE: u8 = b'1';

/// Settings the worker applies before it writes the ready byte.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerConfig {
    pub id: String,
    pub execmodel: ExecModel,
    pub chdir: Option<String>,
    pub nice: Option<i32>,
    pub env: BTreeMap<String, String>,
}

impl WorkerConfig {
    /// The Python keyword arguments for `serve_stdio(...)` / `serve_socket(sock, ...)`.
    pub fn python_kwargs(&self) -> String {
        let mut s = format!(
            "id={}, execmodel={}, chdir={}, nice={}, env=",
            py_ascii_literal(&self.id),
            py_ascii_literal(self.execmodel.as_str()),
            self.chdir.as_deref().map(py_ascii_literal).unwrap_or_else(|| "None".into()),
            self.nice.map(|n| n.to_string()).unwrap_or_else(|| "None".into()),
        );
        if self.env.is_empty() {
            s.push_str("None");
        } else {
            s.push('{');
            for (i, (k, v)) in self.env.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                let _ = write!(s, "{}: {}", py_ascii_literal(k), py_ascii_literal(v));
            }
            s.push('}');
        }
        s
    }
}

/// The line the host writes after starting the interpreter: the worker source and the
/// call `invocation`, as one Python string literal, ending in a newline.
pub fn bootstrap_line(source: &str, invocation: &str) -> String {
    let mut program = String::with_capacity(source.len() + invocation.len() + 2);
    program.push_str(source);
    program.push('\n');
    program.push_str(invocation);
    program.push('\n');
    let mut line = py_ascii_literal(&program);
    line.push('\n');
    line
}

/// The bootstrap line for a worker that serves over its stdin/stdout.
pub fn stdio_bootstrap_line(config: &WorkerConfig) -> String {
    bootstrap_line(WORKER_SOURCE, &format!("serve_stdio({})", config.python_kwargs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_line_is_one_ascii_line() {
        let cfg = WorkerConfig {
            id: "gw0".into(),
            env: [("A".to_string(), "1".to_string())].into_iter().collect(),
            ..Default::default()
        };
        let line = stdio_bootstrap_line(&cfg);
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.is_ascii());
        assert!(cfg.python_kwargs().contains("env={'A': '1'}"));
    }
}
