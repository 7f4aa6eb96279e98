//! The Python worker that runs on the remote side, and the bootstrap that ships it.
//!
//! The worker is one stdlib-only Python file, `worker.py`, embedded in the library. A bare
//! interpreter is started with [`BOOTSTRAP_ONELINER`]; the host writes one line holding the
//! worker's source plus a call that starts serving ([`bootstrap_line`]), and the worker
//! answers with the ready byte `1` before speaking frames.

pub mod cache;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::OnceLock;

pub use cache::CacheEntry;

use crate::wire::pyrepr::py_ascii_literal;

use crate::xspec::ExecModel;

/// The source of our worker (PROTOCOL.md sections 1 to 4).
pub const WORKER_SOURCE: &str = include_str!("worker.py");

/// The program given to `python -c`: read one line, evaluate it to a string, run that.
pub const BOOTSTRAP_ONELINER: &str = "import sys;exec(eval(sys.stdin.readline()))";

/// The ready byte the worker writes once it serves frames.
pub const READY_BYTE: u8 = b'1';

/// Which worker program a gateway ships to the bare interpreter.
///
/// The default is ours ([`WORKER_SOURCE`]). Any worker that speaks the protocol can be
/// used instead; [`WorkerSource::Execnet`] boots the execnet package's own worker (its
/// `gateway_base` module, sent as source the way execnet itself sends it), which the
/// conformance suite uses to check this host against the reference implementation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WorkerSource {
    /// Our stdlib-only worker, embedded in the library.
    #[default]
    Builtin,
    /// execnet's worker: the source of `execnet.gateway_base`, and for socket gateways
    /// the source of the class `execnet.gateway_socket.SocketIO`.
    Execnet { gateway_base: String, socket_io: String },
}

impl WorkerSource {
    /// Reads execnet's worker sources from an interpreter that has the execnet package
    /// installed (the package never needs to be installed on the remote side).
    pub fn execnet_from(python: &str) -> crate::Result<WorkerSource> {
        // The sources come back in the wire format itself, written by execnet's dumps.
        let script = "import inspect, sys, execnet\n\
            import execnet.gateway_base as b, execnet.gateway_socket as s\n\
            sys.stdout.buffer.write(execnet.dumps((inspect.getsource(b), inspect.getsource(s.SocketIO))))";
        let out =
            std::process::Command::new(python).arg("-c").arg(script).output().map_err(|e| crate::Error::Spawn {
                spec: String::new(),
                key: "worker".into(),
                program: python.into(),
                reason: format!("cannot run it to read execnet's worker source: {e}"),
            })?;
        if !out.status.success() {
            return Err(crate::Error::Spawn {
                spec: String::new(),
                key: "worker".into(),
                program: python.into(),
                reason: format!("it could not import execnet: {}", String::from_utf8_lossy(&out.stderr).trim()),
            });
        }
        let (gateway_base, socket_io): (String, String) = crate::loads(&out.stdout)?;
        Ok(WorkerSource::Execnet { gateway_base, socket_io })
    }
}

/// Settings the worker applies before it writes the ready byte.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerConfig {
    pub id: String,
    pub execmodel: ExecModel,
    pub chdir: Option<String>,
    pub nice: Option<i32>,
    pub env: BTreeMap<String, String>,
    /// The worker program to ship.
    pub worker: WorkerSource,
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

/// The bootstrap line for a worker that serves over its stdin/stdout; `cache` is what
/// the compiled-code cache has for a local interpreter (see [`cache`]), or empty.
pub fn stdio_bootstrap_line(config: &WorkerConfig, cache: &CacheEntry) -> String {
    match &config.worker {
        WorkerSource::Builtin if cache.path.is_some() || cache.code.is_some() => {
            cached_bootstrap_line(cache, &format!("serve_stdio({})", config.python_kwargs()))
        }
        WorkerSource::Builtin => bootstrap_line(WORKER_SOURCE, &format!("serve_stdio({})", config.python_kwargs())),
        WorkerSource::Execnet { gateway_base, .. } => bootstrap_line(
            gateway_base,
            &format!(
                "{}execmodel = get_execmodel({})\nio = init_popen_io(execmodel)\n\
                 io.write('1'.encode('ascii'))\nserve(io, id={})",
                execnet_prelude(config),
                py_ascii_literal(config.execmodel.as_str()),
                py_ascii_literal(&format!("{}-worker", config.id)),
            ),
        ),
    }
}

/// The loader a cached bootstrap line runs: it takes the worker's compiled code from
/// the cache when its magic number is the interpreter's own, else compiles the source
/// and, given a path, writes the compiled code there for the next start. Any failure of
/// the cache falls back to compiling; the cache can only save time.
const CACHE_LOADER: &str = r#"import sys
def _execnet_rs_worker_code(cached, source, cache_path):
    import binascii, marshal
    magic = getattr(sys.modules.get("_frozen_importlib_external"), "MAGIC_NUMBER", None)
    if cached and magic:
        try:
            blob = binascii.a2b_base64(cached)
            if blob[:len(magic)] == magic:
                return marshal.loads(blob[len(magic):])
        except Exception:
            pass
    code = compile(binascii.a2b_base64(source).decode("utf-8"), "<execnet-rs worker>", "exec", dont_inherit=True)
    if cache_path and magic:
        import os
        temporary = "%s.%d.tmp" % (cache_path, os.getpid())
        try:
            with open(temporary, "w") as f:
                f.write(binascii.b2a_base64(magic + marshal.dumps(code), newline=False).decode("ascii"))
            os.replace(temporary, cache_path)
        except Exception:
            try:
                os.unlink(temporary)
            except OSError:
                pass
    return code
"#;

/// The worker source, base64 encoded (the cached bootstrap carries it this way: decoding
/// is cheaper for the interpreter than a second level of string escapes).
fn worker_source_base64() -> &'static str {
    static ENCODED: OnceLock<String> = OnceLock::new();
    ENCODED.get_or_init(|| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(WORKER_SOURCE)
    })
}

/// The bootstrap line that runs [`CACHE_LOADER`] on the cache entry, then `invocation`.
fn cached_bootstrap_line(cache: &CacheEntry, invocation: &str) -> String {
    let code = cache.code.as_deref().unwrap_or("");
    let path = cache.path.as_deref().and_then(|p| p.to_str()).map(py_ascii_literal);
    let mut program = String::with_capacity(CACHE_LOADER.len() + code.len() + worker_source_base64().len() + 512);
    program.push_str(CACHE_LOADER);
    let _ = write!(
        program,
        "exec(_execnet_rs_worker_code(\"{code}\", \"{}\", {}))\ndel _execnet_rs_worker_code\n{invocation}\n",
        worker_source_base64(),
        path.as_deref().unwrap_or("None"),
    );
    let mut line = py_ascii_literal(&program);
    line.push('\n');
    line
}

/// The bootstrap line for a worker that serves over the socket bound to `clientsock`
/// (a socket server executes it, PROTOCOL.md section 5).
pub fn socket_bootstrap_line(config: &WorkerConfig) -> String {
    match &config.worker {
        WorkerSource::Builtin => {
            bootstrap_line(WORKER_SOURCE, &format!("serve_socket(clientsock, {})", config.python_kwargs()))
        }
        WorkerSource::Execnet { gateway_base, socket_io } => bootstrap_line(
            gateway_base,
            &format!(
                "import socket\n{socket_io}\n{}execmodel = get_execmodel({})\n\
                 io = SocketIO(clientsock, execmodel)\nio.write('1'.encode('ascii'))\nserve(io, id={})",
                execnet_prelude(config),
                py_ascii_literal(config.execmodel.as_str()),
                py_ascii_literal(&format!("{}-worker", config.id)),
            ),
        ),
    }
}

/// execnet's worker takes no chdir/nice/env settings (execnet applies them with a
/// remote_exec after start-up); with it, this host applies them in the bootstrap program
/// before the worker starts, which has the same effect without a round trip.
fn execnet_prelude(config: &WorkerConfig) -> String {
    let mut p = String::new();
    if let Some(dir) = &config.chdir {
        let _ =
            writeln!(p, "import os as _os\n_os.makedirs({0}, exist_ok=True)\n_os.chdir({0})", py_ascii_literal(dir));
    }
    if let Some(n) = config.nice {
        let _ = writeln!(p, "import os as _os\nif hasattr(_os, 'nice'): _os.nice({n})");
    }
    for (k, v) in &config.env {
        let _ = writeln!(p, "import os as _os\n_os.environ[{}] = {}", py_ascii_literal(k), py_ascii_literal(v));
    }
    p
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
        let line = stdio_bootstrap_line(&cfg, &CacheEntry::default());
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.is_ascii());
        assert!(cfg.python_kwargs().contains("env={'A': '1'}"));
    }
}
