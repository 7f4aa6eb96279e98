//! `exec=COMMAND ARGS` and its presets: a worker started by a command that runs another
//! command somewhere else (in a container, as another user) and hands back its stdin and
//! stdout.
//!
//! The host runs
//!
//! ```text
//! COMMAND ARGS... [env NAME=value...] PYTHON -u -c 'import sys;exec(eval(sys.stdin.readline()))'
//! ```
//!
//! with no shell in between (each word is one argument), and then speaks to the worker
//! over the command's stdin and stdout, as a popen gateway does over a child's pipes.
//!
//! Spec keys (exactly one of the first five):
//! - `exec=COMMAND ARGS`: split on whitespace, for example `exec=docker exec -i web` or
//!   `exec=kubectl exec -i pod-1 -c app --` (the command line must end where the program
//!   to run begins).
//! - `docker=CONTAINER` is `docker exec -i CONTAINER`; `podman=CONTAINER` is
//!   `podman exec -i CONTAINER`. The value is split on whitespace too, so options may
//!   come first: `docker=-u app web`.
//! - `kubectl=POD` is `kubectl [--context C] [--namespace NS] exec -i POD --`, with
//!   `kubectl_context=C` and `namespace=NS` (`kubectl=pod-1 -c app` names a container).
//! - `sudo=USER` is `sudo -n -u USER`: no terminal, never a password prompt (a sudo that
//!   wants a password fails at once, and the gateway's error says so).
//! - `python=CMD`: the interpreter at the other end, default `python3`, split on
//!   whitespace (`python=nice python3`).
//!
//! `env:NAME=value` items reach the interpreter from its start through `env(1)` at the
//! other end; `chdir=`, `nice=`, `execmodel=` and `dont_write_bytecode` work as for
//! popen. With `via=ID` the command runs on the machine of gateway ID (sudo on a
//! remote host through ssh: `ssh=host//id=h` and then `sudo=app//via=h`).
//!
//! When the command fails before the worker is ready, the gateway's [`crate::LostInfo`]
//! says why in the command's terms: the command or the interpreter not found, a
//! container that is not running or does not exist, sudo asking for a password or
//! refusing the user, with the command's stderr attached.

use std::process::{Command, Stdio};

use super::{exit_code_of, Connection, ExplainLoss};
use crate::error::{Error, LostInfo, Result};
use crate::worker::{WorkerConfig, BOOTSTRAP_ONELINER};
use crate::xspec::XSpec;

/// The interpreter run at the other end when the spec has no `python=`.
pub const DEFAULT_EXEC_PYTHON: &str = "python3";

/// The spec keys that name a command transport, in the order they are documented.
pub const EXEC_KEYS: &[&str] = &["exec", "docker", "podman", "kubectl", "sudo"];

/// Which kind of command: the presets get messages in their own terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Exec,
    Docker,
    Podman,
    Kubectl,
    Sudo,
}

impl Kind {
    fn key(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Docker => "docker",
            Kind::Podman => "podman",
            Kind::Kubectl => "kubectl",
            Kind::Sudo => "sudo",
        }
    }
}

/// A command transport's whole command line, and what to say about it.
#[derive(Debug, Clone)]
pub(crate) struct ExecTarget {
    kind: Kind,
    /// The command that runs the interpreter (`docker exec -i web`), program first.
    prefix: Vec<String>,
    /// The interpreter at the other end, split on whitespace.
    python: Vec<String>,
    /// The whole command line, program first.
    argv: Vec<String>,
}

impl ExecTarget {
    pub(crate) fn from_spec(spec: &XSpec) -> Result<ExecTarget> {
        let (kind, value) = EXEC_KEYS
            .iter()
            .zip([Kind::Exec, Kind::Docker, Kind::Podman, Kind::Kubectl, Kind::Sudo])
            .find_map(|(key, kind)| spec.get(key).map(|v| (kind, v)))
            .ok_or_else(|| spec.invalid("not a command transport (exec=, docker=, podman=, kubectl=, sudo=)"))?;
        let words: Vec<String> = value.split_whitespace().map(str::to_string).collect();
        if words.is_empty() {
            return Err(spec.invalid(format!("{}= needs a value, as in {}", kind.key(), example(kind))));
        }
        if let Some(bad) = words.iter().find(|w| w.contains('\0')) {
            return Err(spec.invalid(format!("{}= argument {bad:?} holds a NUL byte", kind.key())));
        }
        for (key, wanted_with) in [("kubectl_context", "kubectl"), ("namespace", "kubectl")] {
            if spec.has(key) && kind != Kind::Kubectl {
                return Err(spec.invalid(format!("{key}= goes with {wanted_with}=POD only")));
            }
        }
        let mut prefix: Vec<String> = Vec::new();
        match kind {
            Kind::Exec => prefix = words,
            Kind::Docker | Kind::Podman => {
                prefix.extend([kind.key().to_string(), "exec".into(), "-i".into()]);
                prefix.extend(words);
            }
            Kind::Kubectl => {
                prefix.push("kubectl".into());
                if let Some(context) = spec.get("kubectl_context") {
                    prefix.extend(["--context".into(), context.to_string()]);
                }
                if let Some(namespace) = spec.get("namespace") {
                    prefix.extend(["--namespace".into(), namespace.to_string()]);
                }
                prefix.extend(["exec".into(), "-i".into()]);
                prefix.extend(words);
                prefix.push("--".into());
            }
            Kind::Sudo => {
                if words.len() != 1 {
                    return Err(spec.invalid(format!(
                        "sudo={value:?}: give one user name (for other sudo options use exec=sudo -n ...)"
                    )));
                }
                prefix.extend(["sudo".into(), "-n".into(), "-u".into()]);
                prefix.extend(words);
            }
        }
        let python: Vec<String> =
            spec.python().unwrap_or(DEFAULT_EXEC_PYTHON).split_whitespace().map(str::to_string).collect();
        if python.is_empty() {
            return Err(spec.invalid("python= is empty: name the interpreter, as in python=python3"));
        }
        let mut argv = prefix.clone();
        if !spec.env().is_empty() {
            // Applied from the interpreter's start, as popen does (PYTHONPATH and the like).
            argv.push("env".into());
            argv.extend(spec.env().iter().map(|(name, value)| format!("{name}={value}")));
        }
        let dont_write_bytecode = spec.dont_write_bytecode();
        argv.extend(crate::worker::python_command(python.iter().cloned(), dont_write_bytecode, BOOTSTRAP_ONELINER));
        Ok(ExecTarget { kind, prefix, python, argv })
    }

    /// The whole command line, program first.
    pub(crate) fn command_line(&self) -> &[String] {
        &self.argv
    }

    /// What to call the command in messages: `sudo -n -u app`, `docker exec -i web`.
    pub(crate) fn display(&self) -> String {
        self.prefix.join(" ")
    }

    /// The hook that explains a lost gateway of this command.
    pub(crate) fn explainer(&self) -> ExplainLoss {
        let this = self.clone();
        Box::new(move |info: &mut LostInfo, ready: bool| this.explain(info, ready))
    }

    /// Rewrites the reason of a gateway whose command failed before the worker was ready.
    fn explain(&self, info: &mut LostInfo, ready: bool) {
        if ready {
            return;
        }
        let code = exit_code_of(info.exit_status);
        if let Some(why) = classify(self.kind, &info.stderr_tail, code) {
            info.reason = format!("{} failed: {why}", self.display());
            return;
        }
        let python = self.python.join(" ");
        info.reason = match code {
            Some(127) => format!(
                "{} could not find the interpreter {python:?} (exit status 127): install Python 3 \
                 there, or name one with python=...",
                self.display()
            ),
            Some(126) => format!(
                "{} could not run the interpreter {python:?} (exit status 126): is it an executable \
                 Python 3?",
                self.display()
            ),
            Some(code) => format!(
                "{} ended with exit status {code} before the worker started (see its stderr)",
                self.display()
            ),
            None => return,
        };
    }
}

fn example(kind: Kind) -> &'static str {
    match kind {
        Kind::Exec => "exec=docker exec -i CONTAINER",
        Kind::Docker => "docker=CONTAINER",
        Kind::Podman => "podman=CONTAINER",
        Kind::Kubectl => "kubectl=POD",
        Kind::Sudo => "sudo=USER",
    }
}

/// What the command's messages say went wrong, for the failures each kind is known for,
/// quoting the line of its stderr that says so.
fn classify(kind: Kind, stderr: &str, code: Option<i32>) -> Option<String> {
    // The first line holding one of `needles` (compared without case), trimmed.
    let line_with = |needles: &[&str]| -> Option<String> {
        stderr.lines().map(str::trim).find_map(|line| {
            let lower = line.to_ascii_lowercase();
            needles.iter().any(|n| lower.contains(n)).then(|| line.to_string())
        })
    };
    // The interpreter (or `env`) missing at the other end, in the words of the container
    // runtimes ("executable file not found in $PATH") and of env(1) ("No such file").
    let no_python = || {
        line_with(&["executable file not found", "no such file or directory", "command not found"])
            .filter(|_| matches!(code, Some(1) | Some(125..=127) | Some(255)))
    };
    let sudo = |needles: &[&str], what: &str| line_with(needles).map(|l| format!("{what} ({l})"));
    match kind {
        Kind::Sudo => line_with(&["a password is required", "a terminal is required"])
            .map(|_| {
                "sudo needs a password for this (sudo -n never asks): allow it without one in sudoers \
                 (NOPASSWD), or start the host program with the rights it needs"
                    .to_string()
            })
            .or_else(|| sudo(&["unknown user"], "sudo does not know that user"))
            .or_else(|| sudo(&["is not in the sudoers file", "is not allowed to", "not allowed to execute"], "sudo refused"))
            .or_else(|| no_python().map(|l| format!("the interpreter was not found ({l})"))),
        Kind::Docker | Kind::Podman | Kind::Kubectl => {
            let says = |needles: &[&str], what: &str| line_with(needles).map(|l| format!("{what} ({l})"));
            says(&["is not running", "can only exec into running containers", "container state improper"], "the container is not running")
                .or_else(|| says(&["no such container", "no container with name or id", "(notfound)"], "no such container or pod"))
                .or_else(|| {
                    says(
                        &["cannot connect to the docker daemon", "unable to connect to podman", "connection to the server", "unable to connect to the server"],
                        "its daemon or cluster cannot be reached",
                    )
                })
                .or_else(|| no_python().map(|l| format!("the interpreter was not found there ({l})")))
        }
        Kind::Exec => None,
    }
}

/// Starts the command line of `spec` as a local child process.
pub(crate) fn spawn(spec: &XSpec, config: &WorkerConfig) -> Result<Connection> {
    let target = ExecTarget::from_spec(spec)?;
    let argv = target.command_line();
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // As for popen: a Ctrl-C at the terminal reaches the host, which ends its gateways.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn().map_err(|e| Error::Spawn {
        spec: spec.to_string(),
        key: target.kind.key().into(),
        program: argv[0].clone(),
        reason: match e.kind() {
            std::io::ErrorKind::NotFound => {
                format!("the command {:?} was not found on PATH{}", argv[0], install_hint(target.kind))
            }
            std::io::ErrorKind::PermissionDenied => format!("{:?} is not executable", argv[0]),
            _ => e.to_string(),
        },
    })?;
    Ok(Connection::over_child_stdio(
        child,
        crate::worker::stdio_bootstrap_line(config).into_bytes(),
        target.display(),
        Some(target.explainer()),
    ))
}

fn install_hint(kind: Kind) -> &'static str {
    match kind {
        Kind::Sudo => " (Debian: apt-get install sudo)",
        Kind::Docker => " (install the Docker client)",
        Kind::Podman => " (Debian: apt-get install podman)",
        Kind::Kubectl => " (install kubectl)",
        Kind::Exec => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(spec: &str) -> Vec<String> {
        let spec: XSpec = spec.parse().unwrap();
        ExecTarget::from_spec(&spec).unwrap().argv
    }

    fn prefix(spec: &str) -> String {
        let full = argv(spec);
        let python = full.iter().position(|w| w == "python3" || w == "env").unwrap();
        full[..python].join(" ")
    }

    #[test]
    fn presets_build_their_command_lines() {
        assert_eq!(prefix("docker=web"), "docker exec -i web");
        assert_eq!(prefix("docker=-u app web"), "docker exec -i -u app web");
        assert_eq!(prefix("podman=web"), "podman exec -i web");
        assert_eq!(prefix("kubectl=pod-1"), "kubectl exec -i pod-1 --");
        assert_eq!(
            prefix("kubectl=pod-1 -c app//kubectl_context=prod//namespace=ci"),
            "kubectl --context prod --namespace ci exec -i pod-1 -c app --"
        );
        assert_eq!(prefix("sudo=app"), "sudo -n -u app");
        assert_eq!(prefix("exec=unshare --net"), "unshare --net");
    }

    #[test]
    fn the_interpreter_and_bootstrap_follow_the_command() {
        let full = argv("docker=web//python=/opt/py/bin/python3 -X dev//dont_write_bytecode");
        assert_eq!(
            full[4..],
            ["/opt/py/bin/python3", "-X", "dev", "-u", "-B", "-c", BOOTSTRAP_ONELINER].map(String::from)
        );
        let full = argv("sudo=app//env:A=1 2//env:B=x");
        assert_eq!(full[4..7], ["env", "A=1 2", "B=x"].map(String::from));
        assert_eq!(full[7..], ["python3", "-u", "-c", BOOTSTRAP_ONELINER].map(String::from));
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        let err = |s: &str| ExecTarget::from_spec(&s.parse::<XSpec>().unwrap()).unwrap_err().to_string();
        assert!(err("sudo=a b").contains("one user name"), "{}", err("sudo=a b"));
        assert!(err("docker=web//namespace=x").contains("kubectl=POD only"));
        let blank = match "exec=   ".parse::<XSpec>() {
            Ok(spec) => ExecTarget::from_spec(&spec).unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(blank.contains("needs a value"), "{blank}");
    }

    #[test]
    fn failures_are_classified_in_the_commands_terms() {
        let c = |kind, text: &str, code| classify(kind, text, code).unwrap_or_default();
        assert!(c(Kind::Sudo, "sudo: a password is required\n", Some(1)).contains("needs a password"));
        assert!(c(Kind::Sudo, "sudo: unknown user nobody2\n", Some(1)).contains("does not know that user"));
        assert!(c(Kind::Docker, "Error response from daemon: container 3f is not running\n", Some(1))
            .contains("not running"));
        assert!(c(Kind::Docker, "Error response from daemon: No such container: web\n", Some(1))
            .contains("no such container"));
        assert!(c(Kind::Podman, "Error: no container with name or ID \"web\" found: no such container\n", Some(125))
            .contains("no such container"));
        assert!(c(Kind::Kubectl, "Error from server (NotFound): pods \"p\" not found\n", Some(1))
            .contains("no such container or pod"));
        assert!(c(Kind::Docker, "OCI runtime exec failed: exec: \"python3\": executable file not found in $PATH\n", Some(126))
            .contains("interpreter was not found"));
        assert_eq!(classify(Kind::Exec, "anything", Some(1)), None);
    }
}
