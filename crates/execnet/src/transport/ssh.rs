//! `ssh=HOSTARGS`: a worker started by the system OpenSSH client.
//!
//! The host runs
//!
//! ```text
//! ssh -C -T [-F CONFIG] [-o ControlMaster=no -o ControlPath=SOCKET] HOSTARGS... \
//!     '[env NAME=value...] PYTHON -u -c '\''import sys;exec(eval(sys.stdin.readline()))'\'''
//! ```
//!
//! and then speaks to the worker over ssh's stdin and stdout, exactly as a popen gateway
//! does over a child's pipes. Because it is the user's own `ssh`, everything in
//! `~/.ssh/config` (or the file named by `ssh_config=`), the agent, ProxyJump and
//! known_hosts applies. Nothing is installed on the remote host: it needs an sshd, a
//! POSIX shell and Python 3.
//!
//! Spec keys:
//! - `ssh=HOSTARGS`: split on whitespace and passed to ssh before the remote command, so it
//!   may carry options: `ssh=-p 2222 -o BatchMode=yes user@host`.
//! - `ssh_config=FILE`: `ssh -F FILE` (the user's `~/.ssh/config` is then not read).
//! - `python=CMD`: the remote interpreter, default `python3`. It is given to the remote
//!   shell as written, so `python=/opt/py/bin/python3` or `python=nice python3` both work.
//! - `ssh_share` or `ssh_share=SECONDS`: connection sharing, see below.
//!
//! No `BatchMode` is forced: with a terminal, ssh may still ask for a password or a key
//! passphrase (it reads those from the terminal, not from the pipe the worker uses);
//! without one it fails at once. Put `-o BatchMode=yes` into `ssh=` (or the config) to
//! never prompt. `-T` is always given, as the frame stream cannot pass through a pty.
//!
//! When the session fails, the gateway's [`crate::LostInfo`] says why in ssh's terms:
//! unknown host, unreachable host, authentication refused, host key not verified, or no
//! such python on the remote (exit status 127), with ssh's stderr attached.
//!
//! ## Connection sharing (`ssh_share`)
//!
//! With `ssh_share`, the first gateway to a host starts an OpenSSH master connection
//! (`ssh -f -N -o ControlMaster=yes -o ControlPersist=SECONDS`, default 60 seconds of
//! idleness) whose control socket lives in a private directory (mode 0700) that the
//! library creates under the temporary directory; every later gateway to the same host
//! arguments and config runs as a session of that connection, skipping the TCP and key
//! exchange. A master that fails to connect makes `makegateway` fail at once with ssh's
//! message. At process exit (or on [`stop_shared_connections`]) each master is asked to
//! stop (`ssh -O stop`: it ends once its last session has) and the directory is removed.
//! The idle timeout ends masters of a process that died without cleaning up.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::{exit_code_of, Connection, ExplainLoss};
use crate::error::{Error, LostInfo, Result};
use crate::sync::lock;
use crate::worker::{WorkerConfig, BOOTSTRAP_ONELINER};
use crate::xspec::XSpec;

/// The interpreter run on the remote host when the spec has no `python=`.
pub const DEFAULT_REMOTE_PYTHON: &str = "python3";

/// The OpenSSH client program.
const SSH_PROGRAM: &str = "ssh";

/// Seconds a shared master connection stays up without sessions (`ssh_share` bare).
const DEFAULT_SHARE_PERSIST_SECS: u32 = 60;

/// Starts `ssh HOSTARGS PYTHON -u -c BOOTSTRAP` for `spec`.
pub(crate) fn spawn(spec: &XSpec, config: &WorkerConfig) -> Result<Connection> {
    let target = SshTarget::from_spec(spec)?;
    let socket = match share_persist(spec)? {
        Some(persist) => Some(shared_master(spec, &target, persist)?),
        None => None,
    };
    let args = target.session_args(socket.as_deref());
    let mut cmd = Command::new(SSH_PROGRAM);
    cmd.args(&args);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let child = cmd.spawn().map_err(|e| Error::Spawn {
        spec: spec.to_string(),
        key: "ssh".into(),
        program: SSH_PROGRAM.into(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => {
                "the OpenSSH client `ssh` was not found on PATH (Debian: apt-get install openssh-client)"
                    .into()
            }
            _ => e.to_string(),
        },
    })?;
    Ok(Connection::over_child_stdio(
        child,
        crate::worker::stdio_bootstrap_line(config).into_bytes(),
        format!("ssh {}", target.host_display()),
        Some(target.explainer()),
    ))
}

/// Where and how to reach the remote interpreter: everything of an ssh spec but sharing.
#[derive(Debug, Clone)]
pub(crate) struct SshTarget {
    /// `ssh=` split on whitespace.
    host_args: Vec<String>,
    /// `ssh_config=`.
    config_file: Option<String>,
    /// The remote interpreter command, as the remote shell reads it.
    python: String,
    /// The command line the remote shell runs.
    remote_command: String,
}

impl SshTarget {
    pub(crate) fn from_spec(spec: &XSpec) -> Result<SshTarget> {
        let host_args: Vec<String> =
            spec.ssh().unwrap_or("").split_whitespace().map(str::to_string).collect();
        if host_args.is_empty() {
            return Err(spec.invalid("ssh= needs a host, as in ssh=user@host or ssh=-p 2222 host"));
        }
        if let Some(bad) = host_args.iter().find(|a| a.contains('\0')) {
            return Err(spec.invalid(format!("ssh= argument {bad:?} holds a NUL byte")));
        }
        let config_file = match spec.get("ssh_config") {
            Some("true") | Some("") => {
                return Err(spec.invalid("ssh_config= needs a file name, as in ssh_config=~/.ssh/other"))
            }
            other => other.map(str::to_string),
        };
        let python = spec.python().unwrap_or(DEFAULT_REMOTE_PYTHON).trim().to_string();
        if python.is_empty() {
            return Err(spec.invalid("python= is empty: name the remote interpreter, as in python=python3"));
        }
        let mut remote_command = String::new();
        if !spec.env().is_empty() {
            // Applied from the interpreter's start, as popen does (PYTHONPATH and the like).
            remote_command.push_str("env");
            for (name, value) in spec.env() {
                remote_command.push(' ');
                remote_command.push_str(&sh_quote(&format!("{name}={value}")));
            }
            remote_command.push(' ');
        }
        // The interpreter goes to the remote shell as written; its arguments are quoted.
        let argv = crate::worker::python_command([python.as_str()], spec.dont_write_bytecode(), BOOTSTRAP_ONELINER);
        remote_command.push_str(&argv[0]);
        for arg in &argv[1..] {
            remote_command.push(' ');
            remote_command.push_str(&sh_quote(arg));
        }
        Ok(SshTarget { host_args, config_file, python, remote_command })
    }

    /// The host as the user wrote it, for messages.
    pub(crate) fn host_display(&self) -> String {
        self.host_args.join(" ")
    }

    /// `-F CONFIG` when there is one.
    fn config_args(&self) -> Vec<String> {
        match &self.config_file {
            Some(file) => vec!["-F".into(), file.clone()],
            None => Vec::new(),
        }
    }

    /// The arguments after `ssh` for a worker session (through `socket`, when shared).
    ///
    /// The layout of execnet's (`-C`, `-F CONFIG`, the spec's words) comes first;
    /// our own options follow the destination (OpenSSH reads options there too):
    /// `-T`, so that no configuration's RequestTTY puts a terminal on the pipe.
    pub(crate) fn session_args(&self, socket: Option<&Path>) -> Vec<String> {
        let mut args: Vec<String> = vec!["-C".into()];
        args.extend(self.config_args());
        args.extend(self.host_args.iter().cloned());
        args.push("-T".into());
        if let Some(socket) = socket {
            args.extend(["-o".into(), "ControlMaster=no".into()]);
            args.extend(["-o".into(), format!("ControlPath={}", socket.display())]);
        }
        args.push(self.remote_command.clone());
        args
    }

    /// The whole command line, program first (for the via relay).
    pub(crate) fn command_line(&self) -> Vec<String> {
        let mut argv = vec![SSH_PROGRAM.to_string()];
        argv.extend(self.session_args(None));
        argv
    }

    /// The hook that explains a lost ssh gateway.
    pub(crate) fn explainer(&self) -> ExplainLoss {
        let host = self.host_display();
        let python = self.python.clone();
        Box::new(move |info: &mut LostInfo, ready: bool| explain(info, ready, &host, &python))
    }
}

/// Quotes `s` as one word for a POSIX shell (single quotes unless it is plain).
pub(crate) fn sh_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"_@%+=:,./-".contains(&b));
    if plain {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Rewrites the reason of a lost ssh gateway from ssh's exit status and messages.
pub(crate) fn explain(info: &mut LostInfo, ready: bool, host: &str, python: &str) {
    let code = exit_code_of(info.exit_status);
    let reason = match (ready, code) {
        (false, Some(255)) => {
            format!("ssh could not open a session on {host}: {}", classify(&info.stderr_tail))
        }
        (false, Some(127)) => format!(
            "the remote shell on {host} did not find the interpreter {python:?} (exit status 127): \
             install Python 3 there, or name one with python=..."
        ),
        (false, Some(126)) => format!(
            "the remote shell on {host} could not run the interpreter {python:?} (exit status 126): \
             is it an executable Python 3?"
        ),
        (true, Some(255)) => format!(
            "the ssh connection to {host} broke ({}; ssh exited with status 255)",
            info.reason
        ),
        _ => return,
    };
    info.reason = reason;
}

/// What ssh's messages say went wrong when it could not connect.
pub(crate) fn classify(stderr: &str) -> &'static str {
    let s = stderr.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| s.contains(n));
    if any(&["could not resolve hostname", "name or service not known", "nodename nor servname"]) {
        "unknown host (ssh could not resolve its name)"
    } else if any(&["host key verification failed", "remote host identification has changed"]) {
        "the host key could not be verified (see known_hosts and StrictHostKeyChecking)"
    } else if any(&[
        "permission denied",
        "too many authentication failures",
        "no supported authentication methods",
    ]) {
        "authentication refused (check the user name, the key or agent, and the server's authorized_keys)"
    } else if any(&["connection refused"]) {
        "host unreachable (connection refused: nothing listens at that address and port)"
    } else if any(&["timed out", "no route to host", "network is unreachable", "host is down"]) {
        "host unreachable (no answer from it)"
    } else if any(&["connection closed by", "connection reset", "kex_exchange_identification"]) {
        "the server closed the connection during the handshake"
    } else if any(&["bad configuration option", "can't open user config file", "terminating,"]) {
        "ssh rejected its configuration or arguments"
    } else {
        "ssh failed (exit status 255)"
    }
}

// ---- connection sharing ---------------------------------------------------------------

/// `ssh_share` in the spec: the idle timeout in seconds of the master connection.
pub(crate) fn share_persist(spec: &XSpec) -> Result<Option<u32>> {
    match spec.get("ssh_share") {
        None | Some("false") | Some("no") | Some("0") => Ok(None),
        Some("true") | Some("yes") | Some("") => Ok(Some(DEFAULT_SHARE_PERSIST_SECS)),
        Some(v) => v.trim().parse::<u32>().map(Some).map_err(|_| {
            spec.invalid(format!(
                "ssh_share={v:?}: give no value, or the seconds a master connection stays up \
                 without sessions (for example ssh_share=300)"
            ))
        }),
    }
}

/// One master connection this process started (or will start).
struct Master {
    socket: PathBuf,
    log: PathBuf,
    /// Arguments that name the connection (`-F`, host args) for `ssh -O stop`.
    target_args: Vec<String>,
    /// Held while the master is checked, started or stopped, so that only one starts.
    starting: Mutex<()>,
}

#[derive(Default)]
struct Shares {
    dir: Option<PathBuf>,
    masters: HashMap<String, Arc<Master>>,
}

fn shares() -> MutexGuard<'static, Shares> {
    static SHARES: OnceLock<Mutex<Shares>> = OnceLock::new();
    lock(SHARES.get_or_init(Default::default))
}

/// The private directory for control sockets, created (mode 0700) on first use.
fn share_dir(shares: &mut Shares) -> std::io::Result<PathBuf> {
    if let Some(dir) = &shares.dir {
        return Ok(dir.clone());
    }
    use std::os::unix::fs::DirBuilderExt;
    // Socket paths are limited to about 100 bytes: use /tmp if TMPDIR is long.
    let mut base = std::env::temp_dir();
    if base.as_os_str().len() > 60 {
        base = PathBuf::from("/tmp");
    }
    let pid = std::process::id();
    let mut attempt = 0u32;
    loop {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("execnet-ssh-{pid}-{:x}", nanos ^ attempt));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => {
                register_cleanup();
                shares.dir = Some(dir.clone());
                return Ok(dir);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 100 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

fn register_cleanup() {
    static REGISTERED: OnceLock<()> = OnceLock::new();
    REGISTERED.get_or_init(|| {
        extern "C" fn at_exit() {
            let _ = std::panic::catch_unwind(stop_shared_connections);
        }
        crate::sys::at_exit(at_exit);
    });
}

/// The control socket of a running master for `target`, starting the master if needed.
fn shared_master(spec: &XSpec, target: &SshTarget, persist: u32) -> Result<PathBuf> {
    let io_error = |e: std::io::Error| Error::Spawn {
        spec: spec.to_string(),
        key: "ssh_share".into(),
        program: SSH_PROGRAM.into(),
        reason: format!("cannot create the private directory for ssh control sockets: {e}"),
    };
    let master = {
        let mut shares = shares();
        let dir = share_dir(&mut shares).map_err(io_error)?;
        let mut target_args = target.config_args();
        target_args.extend(target.host_args.iter().cloned());
        let key = target_args.join("\0");
        let number = shares.masters.len();
        shares
            .masters
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Master {
                    socket: dir.join(format!("{number}.sock")),
                    log: dir.join(format!("{number}.log")),
                    target_args,
                    starting: Mutex::new(()),
                })
            })
            .clone()
    };
    let _starting = lock(&master.starting);
    if master.socket.exists() {
        if std::os::unix::net::UnixStream::connect(&master.socket).is_ok() {
            return Ok(master.socket.clone());
        }
        // A master that was killed leaves its socket behind: replace it.
        let _ = std::fs::remove_file(&master.socket);
    }
    // Not running (never started, stopped, or ended after its idle timeout): start it.
    // With -f, ssh goes to the background once authenticated, so its exit status tells
    // whether the connection is up; its stderr goes to a file, as the background process
    // must not hold a pipe of ours open.
    let log = std::fs::File::create(&master.log).map_err(io_error)?;
    let mut cmd = Command::new(SSH_PROGRAM);
    cmd.args(["-f", "-N", "-T", "-C"])
        .args(["-o", "ControlMaster=yes"])
        .arg("-o")
        .arg(format!("ControlPath={}", master.socket.display()))
        .arg("-o")
        .arg(format!("ControlPersist={persist}"))
        .args(&master.target_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let status = cmd.status().map_err(|e| Error::Spawn {
        spec: spec.to_string(),
        key: "ssh_share".into(),
        program: SSH_PROGRAM.into(),
        reason: format!("cannot run ssh for the shared connection: {e}"),
    })?;
    let messages = std::fs::read_to_string(&master.log).unwrap_or_default();
    if !status.success() || !master.socket.exists() {
        let what = if status.code() == Some(255) {
            classify(&messages).to_string()
        } else {
            format!("the master connection did not start ({status})")
        };
        return Err(Error::Spawn {
            spec: spec.to_string(),
            key: "ssh_share".into(),
            program: SSH_PROGRAM.into(),
            reason: format!(
                "ssh could not open a shared connection to {}: {what}; ssh said:\n{}",
                target.host_display(),
                messages.trim_end()
            ),
        });
    }
    Ok(master.socket.clone())
}

/// Stops the shared ssh connections (`ssh_share`) this process started: each master
/// stops accepting sessions and ends once its current sessions have ended. Later
/// `ssh_share` gateways start new masters. This runs by itself at process exit, which
/// also removes the private directory of the control sockets.
pub fn stop_shared_connections() {
    let (masters, dir) = {
        let mut shares = shares();
        let masters: Vec<Arc<Master>> = shares.masters.drain().map(|(_, m)| m).collect();
        (masters, shares.dir.take())
    };
    for master in masters {
        let _guard = lock(&master.starting);
        if !master.socket.exists() {
            continue;
        }
        let _ = Command::new(SSH_PROGRAM)
            .arg("-o")
            .arg(format!("ControlPath={}", master.socket.display()))
            .args(["-O", "stop"])
            .args(&master.target_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    if let Some(dir) = dir {
        // Logs only: the masters remove their own sockets. A master still serving
        // sessions keeps listening on nothing, so removing the directory is safe.
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.path().extension().is_some_and(|e| e == "log") {
                    let _ = std::fs::remove_file(entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> XSpec {
        s.parse().unwrap()
    }

    #[test]
    fn quoting_survives_a_posix_shell() {
        for word in ["plain", "", "a b", "it's", "$HOME", "a\"b\\c", BOOTSTRAP_ONELINER, "x;y|z&"] {
            let out = Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", sh_quote(word)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), word, "{}", sh_quote(word));
        }
        assert_eq!(sh_quote("python3"), "python3");
    }

    #[test]
    fn session_command_line() {
        let t = SshTarget::from_spec(&spec("ssh=-p 2222 user@host//ssh_config=/etc/cfg//dont_write_bytecode"))
            .unwrap();
        let args = t.session_args(None);
        assert_eq!(&args[..6], ["-C", "-F", "/etc/cfg", "-p", "2222", "user@host"]);
        assert_eq!(args[6], "-T");
        assert_eq!(args[7], "python3 -u -B -c 'import sys;exec(eval(sys.stdin.readline()))'");
        assert_eq!(args.len(), 8);
        let shared = t.session_args(Some(Path::new("/tmp/d/0.sock")));
        assert!(shared.contains(&"ControlPath=/tmp/d/0.sock".to_string()), "{shared:?}");
        assert!(shared.contains(&"ControlMaster=no".to_string()), "{shared:?}");

        let t = SshTarget::from_spec(&spec("ssh=h//python=/opt/py 3/bin/python//env:A=x y")).unwrap();
        assert_eq!(
            t.remote_command,
            "env 'A=x y' /opt/py 3/bin/python -u -c 'import sys;exec(eval(sys.stdin.readline()))'"
        );
        assert_eq!(t.command_line()[0], "ssh");
    }

    #[test]
    fn bad_ssh_specs() {
        // Valued keys given bare or empty are refused when the spec is parsed.
        for (s, needle) in [
            ("ssh=", "ssh needs a value"),
            ("ssh", "ssh needs a value"),
            ("ssh=h//ssh_config", "ssh_config needs a value"),
            ("ssh=h//python= ", "python needs a value"),
        ] {
            let err = s.parse::<XSpec>().unwrap_err().to_string();
            assert!(err.contains(needle), "{s}: {err}");
        }
        assert_eq!(share_persist(&spec("ssh=h//ssh_share")).unwrap(), Some(60));
        assert_eq!(share_persist(&spec("ssh=h//ssh_share=5")).unwrap(), Some(5));
        assert_eq!(share_persist(&spec("ssh=h")).unwrap(), None);
        assert!(share_persist(&spec("ssh=h//ssh_share=soon")).is_err());
    }

    #[test]
    fn ssh_messages_are_classified() {
        for (stderr, needle) in [
            ("ssh: Could not resolve hostname nowhere.invalid: Name or service not known", "unknown host"),
            ("ssh: connect to host 127.0.0.1 port 1: Connection refused", "host unreachable"),
            ("ssh: connect to host 10.1.1.1 port 22: Connection timed out", "host unreachable"),
            ("root@127.0.0.1: Permission denied (publickey).", "authentication refused"),
            ("Host key verification failed.", "host key"),
            ("kex_exchange_identification: Connection closed by remote host", "handshake"),
            ("/x/cfg: line 1: Bad configuration option: foo", "configuration"),
            ("something new", "ssh failed"),
        ] {
            assert!(classify(stderr).contains(needle), "{stderr}: {}", classify(stderr));
        }
    }

    #[test]
    fn lost_info_is_explained() {
        let info = |code: i32, stderr: &str| LostInfo {
            gateway: "gw0".into(),
            reason: "ssh h ended before the worker was ready".into(),
            exit_status: Some(crate::ExitStatus::Code(code)),
            stderr_tail: stderr.into(),
        };
        let mut i = info(255, "ssh: connect to host h port 1: Connection refused\n");
        explain(&mut i, false, "h", "python3");
        assert!(i.reason.starts_with("ssh could not open a session on h: host unreachable"), "{}", i.reason);
        let mut i = info(127, "bash: line 1: nopython: command not found\n");
        explain(&mut i, false, "h", "nopython");
        assert!(i.reason.contains("did not find the interpreter \"nopython\""), "{}", i.reason);
        let mut i = info(1, "Traceback ...\n");
        explain(&mut i, false, "h", "python3");
        assert_eq!(i.reason, "ssh h ended before the worker was ready");
        let mut i = info(255, "Connection to h closed by remote host.\n");
        i.reason = "the worker closed the connection".into();
        explain(&mut i, true, "h", "python3");
        assert!(i.reason.starts_with("the ssh connection to h broke"), "{}", i.reason);
    }
}
