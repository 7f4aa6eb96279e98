//! The Python worker that runs on the remote side, and the bootstrap that ships it.
//!
//! The worker is one stdlib-only Python file, `worker.py`, embedded in the library. A bare
//! interpreter is started with [`BOOTSTRAP_ONELINER`]; the host writes one line holding the
//! worker's source plus a call that starts serving ([`bootstrap_line`]), and the worker
//! answers with the ready byte `1` before speaking frames.

pub mod cache;

use std::collections::BTreeMap;
use std::fmt::Write as _;

pub use cache::CacheEntry;

use crate::wire::pyrepr::py_ascii_literal;

use crate::xspec::ExecModel;

/// The source of our worker (PROTOCOL.md sections 1 to 4).
pub const WORKER_SOURCE: &str = include_str!("worker.py");

/// The program given to `python -c`: read one line, evaluate it to a string, run that.
pub const BOOTSTRAP_ONELINER: &str = "import sys;exec(eval(sys.stdin.readline()))";

/// The interpreter a local worker runs when the spec has no `python=` (popen, also on
/// the far side of a via gateway, and the socket server's default).
pub const DEFAULT_PYTHON: &str = "python3";

/// The command line that starts an interpreter as a worker: `PYTHON... -u [-B] -c
/// PROGRAM`, with `python` the interpreter command as words (`["nice", "python3"]`),
/// `-B` for `dont_write_bytecode`, and `program` the `-c` program that reads the rest
/// ([`BOOTSTRAP_ONELINER`], or popen's raw loader). Every transport that starts an
/// interpreter builds its command here: popen, via's relay, the command transports
/// (exec, docker, ...) and ssh's remote command.
pub fn python_command<S: Into<String>>(
    python: impl IntoIterator<Item = S>,
    dont_write_bytecode: bool,
    program: &str,
) -> Vec<String> {
    let mut argv: Vec<String> = python.into_iter().map(Into::into).collect();
    argv.push("-u".into());
    if dont_write_bytecode {
        argv.push("-B".into());
    }
    argv.push("-c".into());
    argv.push(program.into());
    argv
}

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
    Execnet {
        /// The source of the module `execnet.gateway_base`.
        gateway_base: String,
        /// The source of the class `execnet.gateway_socket.SocketIO`.
        socket_io: String,
    },
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
    /// The gateway id (such as `gw0`), which the worker uses as its own id.
    pub id: String,
    /// How the worker runs remote executions.
    pub execmodel: ExecModel,
    /// A directory the worker creates if needed and changes into.
    pub chdir: Option<String>,
    /// An increment to the worker's niceness (`os.nice`), where the platform has it.
    pub nice: Option<i32>,
    /// Environment variables the worker sets in its `os.environ`.
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

/// The bootstrap line for a worker that serves over its stdin/stdout (ssh, exec, via,
/// and popen with execnet's worker; popen with ours starts from [`popen_bootstrap`]).
pub fn stdio_bootstrap_line(config: &WorkerConfig) -> String {
    match &config.worker {
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

/// How a popen worker of ours starts: the program for `python -c`, and the bytes the
/// host writes first (see [`popen_bootstrap`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PopenBoot {
    /// The `-c` program: reads [`PopenBoot::bytes`]'s first part, a small loader, from
    /// fd 0 by its exact length and runs it.
    pub program: String,
    /// The loader, then the compiled worker (magic number and marshal data, when the
    /// cache has it), then the worker source, as raw bytes.
    pub bytes: Vec<u8>,
}

/// The loader a popen worker runs first: it reads the compiled worker and the source
/// from fd 0 by their exact lengths (so nothing of the frames after them is read), runs
/// the compiled code when its magic number is the interpreter's own, else compiles the
/// source (and, given a cache path, writes the compiled code there for the next start).
const RAW_LOADER: &str = r#"def _execnet_rs_boot(code_len, source_len, cache_path):
    import sys
    def read(n):
        buf = bytearray()
        while len(buf) < n:
            chunk = os.read(0, n - len(buf))
            if not chunk:
                raise SystemExit(1)
            buf += chunk
        return bytes(buf)
    blob, source = read(code_len), read(source_len)
    magic = getattr(sys.modules.get("_frozen_importlib_external"), "MAGIC_NUMBER", None)
    if blob and magic and blob[:len(magic)] == magic:
        import marshal
        try:
            return marshal.loads(blob[len(magic):])
        except Exception:
            pass
    code = compile(source, "<execnet-rs worker>", "exec", dont_inherit=True)
    if cache_path and magic:
        import binascii, marshal
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

/// The `-c` program of a popen worker: reads the loader (LOADER_LEN bytes) from fd 0,
/// exactly, and runs it.
const RAW_ONELINER: &str = "import os
_execnet_rs_loader = bytearray()
while len(_execnet_rs_loader) < LOADER_LEN:
    _c = os.read(0, LOADER_LEN - len(_execnet_rs_loader))
    if not _c:
        raise SystemExit(1)
    _execnet_rs_loader += _c
del _c
exec(bytes(_execnet_rs_loader))
";

/// The start of a popen gateway with our worker: no escaped literal to parse, no base64
/// to decode; the interpreter reads a loader of a few hundred bytes, then the compiled
/// worker (from the cache) as raw bytes. None for another worker program (execnet's),
/// which starts from [`stdio_bootstrap_line`] as with any transport.
pub fn popen_bootstrap(config: &WorkerConfig, cache: &CacheEntry) -> Option<PopenBoot> {
    if config.worker != WorkerSource::Builtin {
        return None;
    }
    let code = cache.code.as_deref().and_then(cache::decode_entry).unwrap_or_default();
    let path = cache.path.as_deref().and_then(|p| p.to_str()).map(py_ascii_literal);
    let mut loader = String::with_capacity(RAW_LOADER.len() + 256);
    loader.push_str(RAW_LOADER);
    let _ = write!(
        loader,
        "exec(_execnet_rs_boot({}, {}, {}))\ndel _execnet_rs_boot, _execnet_rs_loader\nserve_stdio({})\n",
        code.len(),
        WORKER_SOURCE.len(),
        path.as_deref().unwrap_or("None"),
        config.python_kwargs(),
    );
    let program = RAW_ONELINER.replace("LOADER_LEN", &loader.len().to_string());
    let mut bytes = Vec::with_capacity(loader.len() + code.len() + WORKER_SOURCE.len());
    bytes.extend_from_slice(loader.as_bytes());
    bytes.extend_from_slice(&code);
    bytes.extend_from_slice(WORKER_SOURCE.as_bytes());
    Some(PopenBoot { program, bytes })
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
        let line = stdio_bootstrap_line(&cfg);
        assert!(line.ends_with('\n'));
        assert_eq!(line.matches('\n').count(), 1);
        assert!(line.is_ascii());
        assert!(cfg.python_kwargs().contains("env={'A': '1'}"));
    }

    #[test]
    fn python_command_lines() {
        assert_eq!(python_command(["python3"], false, "P"), ["python3", "-u", "-c", "P"]);
        assert_eq!(python_command(["nice", "python3"], true, "P"), ["nice", "python3", "-u", "-B", "-c", "P"]);
    }
}
