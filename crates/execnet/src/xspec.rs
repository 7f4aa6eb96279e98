//! Gateway specifications: `popen//python=python3//chdir=work`.
//!
//! A spec is a list of `key=value` or bare `key` (meaning true) items separated by `//`.
//! The first key usually names the transport (`popen`, `ssh=HOST`, `socket=HOST:PORT`);
//! the others configure the worker. `env:NAME=value` items set environment variables of
//! the remote process. Keys that take a value ([`VALUED_KEYS`]: `chdir`, `python`, …) are
//! refused bare or empty. Unknown keys are kept and can be read with [`XSpec::get`], so
//! that tools built on top can carry their own; [`XSpec::warnings`] names them, with the
//! known key they most resemble (`pyhton`: did you mean `python`?).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Keys that need a value (`key=value`): given bare or empty, the spec is refused.
pub const VALUED_KEYS: &[&str] = &[
    "ssh",
    "exec",
    "docker",
    "podman",
    "kubectl",
    "sudo",
    "kubectl_context",
    "namespace",
    "python",
    "chdir",
    "nice",
    "id",
    "via",
    "installvia",
    "execmodel",
    "ssh_config",
    "token_file",
    "connect_timeout",
    "handshake_timeout",
    "queue_limit",
    "max_message",
    "import_path",
];

/// Keys that may be given bare: flags, and `socket` (bare with `installvia=ID`, a value
/// otherwise; `ssh_share` takes an optional value).
pub const FLAG_KEYS: &[&str] =
    &["popen", "socket", "dont_write_bytecode", "ssh_share", "forward_imports", "prefer_host_imports"];

/// How the worker runs remote executions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExecModel {
    /// Every `remote_exec` runs in its own thread (the default).
    #[default]
    Thread,
    /// Executions run one at a time in the worker's main thread (for code that needs it,
    /// such as GUI toolkits or signal handlers).
    MainThreadOnly,
}

impl ExecModel {
    /// The name used on the wire and in specs.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecModel::Thread => "thread",
            ExecModel::MainThreadOnly => "main_thread_only",
        }
    }
}

impl FromStr for ExecModel {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "thread" => Ok(ExecModel::Thread),
            "main_thread_only" => Ok(ExecModel::MainThreadOnly),
            other => Err(format!(
                "execmodel {other:?} is not supported: use 'thread' or 'main_thread_only'"
            )),
        }
    }
}

/// The transport a spec asks for, from [`XSpec::transport`]: which of the transport
/// keys it has (exactly one), with that key's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `popen`: a Python subprocess of this host.
    Popen,
    /// `ssh=HOSTARGS`: a worker started by the OpenSSH client.
    Ssh(String),
    /// `socket=ADDR`: a worker behind a socket server; None for a bare `socket` (with
    /// `installvia=ID`, which starts the server).
    Socket(Option<String>),
    /// `exec=COMMAND`: a command line that starts the interpreter.
    Exec(String),
    /// `docker=CONTAINER`.
    Docker(String),
    /// `podman=CONTAINER`.
    Podman(String),
    /// `kubectl=POD`.
    Kubectl(String),
    /// `sudo=USER`.
    Sudo(String),
}

impl Transport {
    /// The transport keys, in the order messages name them.
    pub const KEYS: [&'static str; 8] = ["popen", "ssh", "socket", "exec", "docker", "podman", "kubectl", "sudo"];

    /// The spec key of this transport.
    pub fn key(&self) -> &'static str {
        match self {
            Transport::Popen => "popen",
            Transport::Ssh(_) => "ssh",
            Transport::Socket(_) => "socket",
            Transport::Exec(_) => "exec",
            Transport::Docker(_) => "docker",
            Transport::Podman(_) => "podman",
            Transport::Kubectl(_) => "kubectl",
            Transport::Sudo(_) => "sudo",
        }
    }
}

/// A parsed gateway specification.
///
/// ```
/// let spec: execnet::XSpec = "popen//python=python3//env:LANG=C//id=w1".parse().unwrap();
/// assert!(spec.is_popen());
/// assert_eq!(spec.python(), Some("python3"));
/// assert_eq!(spec.env().get("LANG").map(String::as_str), Some("C"));
/// assert_eq!(spec.id(), Some("w1"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XSpec {
    raw: String,
    /// Items in the order written, without `env:` items. A bare key has the value None.
    items: Vec<(String, Option<String>)>,
    env: BTreeMap<String, String>,
}

impl XSpec {
    /// Parses a spec string; the same as `s.parse()`.
    pub fn new(s: &str) -> Result<XSpec> {
        s.parse()
    }

    /// The spec string as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The value of `key`: the text after `=` for `key=value`, `"true"` for a bare `key`,
    /// None when the key is absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_deref().unwrap_or("true"))
    }

    /// True when the key is present (bare or with a value).
    pub fn has(&self, key: &str) -> bool {
        self.items.iter().any(|(k, _)| k == key)
    }

    /// All items in order (bare keys have the value None), without `env:` items.
    pub fn items(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.items.iter().map(|(k, v)| (k.as_str(), v.as_deref()))
    }

    /// The keys this crate does not know (neither [`VALUED_KEYS`] nor [`FLAG_KEYS`]), in
    /// the order written.
    pub fn unknown_keys(&self) -> Vec<&str> {
        self.items
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !VALUED_KEYS.contains(k) && !FLAG_KEYS.contains(k))
            .collect()
    }

    /// One message per unknown key, with the known key it most resembles, for example
    /// `unknown key "pyhton" in spec "popen//pyhton=python3" (did you mean "python"?)`.
    pub fn warnings(&self) -> Vec<String> {
        self.unknown_keys()
            .into_iter()
            .map(|key| {
                let hint = match suggest_key(key) {
                    Some(known) => format!(" (did you mean {known:?}?)"),
                    None => String::new(),
                };
                format!("unknown key {key:?} in spec {:?}{hint}: execnet does not use it", self.raw)
            })
            .collect()
    }

    /// Environment variables given as `env:NAME=value`.
    pub fn env(&self) -> &BTreeMap<String, String> {
        &self.env
    }

    /// True when the spec has the `popen` key (a local Python subprocess).
    pub fn is_popen(&self) -> bool {
        self.has("popen")
    }
    /// The `ssh=` host arguments.
    pub fn ssh(&self) -> Option<&str> {
        self.value_of("ssh")
    }
    /// The `socket=` address.
    pub fn socket(&self) -> Option<&str> {
        self.value_of("socket")
    }
    /// The `python=` interpreter.
    pub fn python(&self) -> Option<&str> {
        self.value_of("python")
    }
    /// The `chdir=` directory.
    pub fn chdir(&self) -> Option<&str> {
        self.value_of("chdir")
    }
    /// The `id=` gateway id.
    pub fn id(&self) -> Option<&str> {
        self.value_of("id")
    }
    /// The `via=` gateway id.
    pub fn via(&self) -> Option<&str> {
        self.value_of("via")
    }
    /// `dont_write_bytecode`: start Python with `-B`.
    pub fn dont_write_bytecode(&self) -> bool {
        self.has("dont_write_bytecode")
    }

    /// The `nice=` level.
    pub fn nice(&self) -> Result<Option<i32>> {
        match self.value_of("nice") {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                self.invalid(format!("nice={v:?} is not an integer (for example nice=10)"))
            }),
        }
    }

    /// `queue_limit=BYTES`: how many bytes of received items a gateway queues before its
    /// reader stops reading from the worker (default
    /// [`crate::gateway::DEFAULT_QUEUE_LIMIT`]; `0` means no limit).
    pub fn queue_limit(&self) -> Result<Option<usize>> {
        self.byte_size("queue_limit", "queue_limit=67108864")
    }

    /// `max_message=BYTES`: the largest frame payload accepted from the worker (default
    /// [`crate::wire::frame::DEFAULT_MAX_MESSAGE`]).
    pub fn max_message(&self) -> Result<Option<usize>> {
        self.byte_size("max_message", "max_message=1048576")
    }

    fn byte_size(&self, key: &str, example: &str) -> Result<Option<usize>> {
        match self.value_of(key) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                self.invalid(format!("{key}={v:?} is not a number of bytes (for example {example})"))
            }),
        }
    }

    /// The `execmodel=` (default: thread).
    pub fn execmodel(&self) -> Result<ExecModel> {
        match self.value_of("execmodel") {
            None => Ok(ExecModel::Thread),
            Some(v) => v.parse().map_err(|e: String| self.invalid(e)),
        }
    }

    /// The transport this spec asks for: popen, ssh, socket, or one of the command
    /// transports exec, docker, podman, kubectl, sudo.
    pub fn transport(&self) -> Result<Transport> {
        let kinds: Vec<&'static str> = Transport::KEYS.into_iter().filter(|k| self.has(k)).collect();
        let value = |key: &str| self.value_of(key).unwrap_or_default().to_string();
        match kinds.as_slice() {
            [one] => Ok(match *one {
                "popen" => Transport::Popen,
                "ssh" => Transport::Ssh(value("ssh")),
                "socket" => Transport::Socket(self.value_of("socket").map(str::to_string)),
                "exec" => Transport::Exec(value("exec")),
                "docker" => Transport::Docker(value("docker")),
                "podman" => Transport::Podman(value("podman")),
                "kubectl" => Transport::Kubectl(value("kubectl")),
                "sudo" => Transport::Sudo(value("sudo")),
                other => unreachable!("{other} is in Transport::KEYS without a variant"),
            }),
            [] => Err(self.invalid(
                "no transport given: start the spec with popen, ssh=HOST, socket=HOST:PORT, \
                 exec=COMMAND, docker=CONTAINER, podman=CONTAINER, kubectl=POD or sudo=USER",
            )),
            many => Err(self.invalid(format!(
                "more than one transport given ({}): use exactly one",
                many.join(", ")
            ))),
        }
    }

    fn value_of(&self, key: &str) -> Option<&str> {
        self.items
            .iter()
            .find(|(k, _)| k == key)
            .and_then(|(_, v)| v.as_deref())
    }

    pub(crate) fn invalid(&self, reason: impl Into<String>) -> Error {
        Error::Spec { spec: self.raw.clone(), reason: reason.into() }
    }

    /// A copy of this spec with `id=` set (replacing any id).
    pub(crate) fn with_id(&self, id: &str) -> XSpec {
        let mut spec = self.clone();
        match spec.items.iter_mut().find(|(k, _)| k == "id") {
            Some(item) => item.1 = Some(id.to_string()),
            None => spec.items.push(("id".into(), Some(id.to_string()))),
        }
        spec
    }
}

impl FromStr for XSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<XSpec> {
        let invalid = |reason: String| Error::Spec { spec: s.to_string(), reason };
        if s.trim().is_empty() {
            return Err(invalid("the spec is empty: try \"popen\"".into()));
        }
        let mut items: Vec<(String, Option<String>)> = Vec::new();
        let mut env = BTreeMap::new();
        for part in s.split("//") {
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (part, None),
            };
            if key.is_empty() {
                return Err(invalid(format!(
                    "empty key in item {part:?}: items are key=value or key, separated by //"
                )));
            }
            if key.starts_with('_') {
                return Err(invalid(format!("key {key:?} starts with '_', which is reserved")));
            }
            if let Some(name) = key.strip_prefix("env:") {
                if name.is_empty() {
                    return Err(invalid("env: needs a variable name, as in env:NAME=value".into()));
                }
                let Some(value) = value else {
                    return Err(invalid(format!("{key} needs a value, as in {key}=value")));
                };
                if env.insert(name.to_string(), value.to_string()).is_some() {
                    return Err(invalid(format!("duplicate key {key:?}")));
                }
                continue;
            }
            if items.iter().any(|(k, _)| k == key) {
                return Err(invalid(format!("duplicate key {key:?}")));
            }
            if VALUED_KEYS.contains(&key) && value.unwrap_or_default().trim().is_empty() {
                return Err(invalid(format!("{key} needs a value, as in {}", example_of(key))));
            }
            items.push((key.to_string(), value.map(str::to_string)));
        }
        Ok(XSpec { raw: s.to_string(), items, env })
    }
}

/// The known key closest to `key` (by Jaro-Winkler similarity), if one is close enough.
pub fn suggest_key(key: &str) -> Option<&'static str> {
    VALUED_KEYS
        .iter()
        .chain(FLAG_KEYS)
        .map(|known| (strsim::jaro_winkler(key, known), *known))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, known)| known)
}

fn example_of(key: &str) -> &'static str {
    match key {
        "ssh" => "ssh=user@host",
        "socket" => "socket=127.0.0.1:8888",
        "exec" => "exec=docker exec -i CONTAINER",
        "docker" => "docker=CONTAINER",
        "podman" => "podman=CONTAINER",
        "kubectl" => "kubectl=POD",
        "sudo" => "sudo=USER",
        "kubectl_context" => "kubectl_context=prod",
        "namespace" => "namespace=default",
        "python" => "python=python3",
        "chdir" => "chdir=/tmp/work",
        "nice" => "nice=10",
        "id" => "id=web1",
        "via" => "via=gw0",
        "installvia" => "installvia=gw0",
        "execmodel" => "execmodel=thread",
        "ssh_config" => "ssh_config=~/.ssh/config",
        "token_file" => "token_file=/path/to/token",
        "connect_timeout" => "connect_timeout=10",
        "handshake_timeout" => "handshake_timeout=30",
        "queue_limit" => "queue_limit=67108864",
        "max_message" => "max_message=1048576",
        "import_path" => "import_path=/home/me/src:/opt/lib",
        _ => "key=value",
    }
}

impl fmt::Display for XSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Anything that names a gateway spec: `&str`, `String`, or an [`XSpec`].
pub trait ToXSpec {
    /// The parsed spec.
    fn to_xspec(&self) -> Result<XSpec>;
}

impl ToXSpec for str {
    fn to_xspec(&self) -> Result<XSpec> {
        self.parse()
    }
}
impl ToXSpec for String {
    fn to_xspec(&self) -> Result<XSpec> {
        self.parse()
    }
}
impl ToXSpec for XSpec {
    fn to_xspec(&self) -> Result<XSpec> {
        Ok(self.clone())
    }
}
impl<T: ToXSpec + ?Sized> ToXSpec for &T {
    fn to_xspec(&self) -> Result<XSpec> {
        (**self).to_xspec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_values_and_bare_keys() {
        let spec: XSpec = "ssh=wyvern//python=python2.4//chdir=mycache//custom".parse().unwrap();
        assert_eq!(spec.ssh(), Some("wyvern"));
        assert_eq!(spec.python(), Some("python2.4"));
        assert_eq!(spec.chdir(), Some("mycache"));
        assert_eq!(spec.get("custom"), Some("true"));
        assert!(spec.has("custom"));
        assert_eq!(spec.get("missing"), None);
        assert_eq!(spec.transport().unwrap(), Transport::Ssh("wyvern".into()));
        assert_eq!(spec.to_string(), "ssh=wyvern//python=python2.4//chdir=mycache//custom");
    }

    #[test]
    fn valued_keys_given_bare_or_empty_are_refused() {
        for (spec, key) in [("popen//chdir", "chdir"), ("popen//python=", "python"), ("popen//nice", "nice"), ("ssh", "ssh"), ("popen//id= ", "id")] {
            let e = spec.parse::<XSpec>().unwrap_err().to_string();
            assert!(e.contains(&format!("{key} needs a value, as in {key}=")), "{spec}: {e}");
        }
        // Flags stay flags.
        let spec: XSpec = "popen//dont_write_bytecode//ssh_share".parse().unwrap();
        assert!(spec.dont_write_bytecode() && spec.has("ssh_share"));
    }

    #[test]
    fn unknown_keys_are_kept_and_named_with_a_suggestion() {
        let spec: XSpec = "popen//pyhton=python3//chdr=/tmp//myflag//env:X=1".parse().unwrap();
        assert_eq!(spec.unknown_keys(), ["pyhton", "chdr", "myflag"]);
        assert_eq!(spec.get("pyhton"), Some("python3"), "still readable");
        let w = spec.warnings();
        assert_eq!(w.len(), 3);
        assert!(w[0].contains("unknown key \"pyhton\"") && w[0].ends_with("(did you mean \"python\"?): execnet does not use it"), "{}", w[0]);
        assert!(w[1].contains("(did you mean \"chdir\"?)"), "{}", w[1]);
        assert!(!w[2].contains("did you mean"), "{}", w[2]);
        assert!("popen//python=python3//id=a".parse::<XSpec>().unwrap().warnings().is_empty());
    }

    #[test]
    fn values_may_contain_equals_and_spaces() {
        let spec: XSpec = "ssh=-p 2222 user@host//env:OPTS=a=b".parse().unwrap();
        assert_eq!(spec.ssh(), Some("-p 2222 user@host"));
        assert_eq!(spec.env()["OPTS"], "a=b");
    }

    #[test]
    fn rejects_duplicates_and_private_keys() {
        let e = "popen//python=a//python=b".parse::<XSpec>().unwrap_err();
        assert!(e.to_string().contains("duplicate key \"python\""), "{e}");
        let e = "popen//_secret=1".parse::<XSpec>().unwrap_err();
        assert!(e.to_string().contains("reserved"), "{e}");
        let e = "popen//env:A=1//env:A=2".parse::<XSpec>().unwrap_err();
        assert!(e.to_string().contains("duplicate"), "{e}");
        assert!("".parse::<XSpec>().is_err());
        assert!("popen////x".parse::<XSpec>().is_err());
    }

    #[test]
    fn typed_accessors_check_values() {
        let spec: XSpec = "popen//nice=5//execmodel=main_thread_only".parse().unwrap();
        assert_eq!(spec.nice().unwrap(), Some(5));
        assert_eq!(spec.execmodel().unwrap(), ExecModel::MainThreadOnly);
        let spec: XSpec = "popen//nice=high//execmodel=eventlet".parse().unwrap();
        assert!(spec.nice().unwrap_err().to_string().contains("not an integer"));
        assert!(spec.execmodel().unwrap_err().to_string().contains("not supported"));
        assert!("python=x".parse::<XSpec>().unwrap().transport().is_err());
        assert!("popen//ssh=x".parse::<XSpec>().unwrap().transport().is_err());
    }

    #[test]
    fn with_id_replaces_or_adds() {
        let spec: XSpec = "popen".parse().unwrap();
        assert_eq!(spec.with_id("gw3").id(), Some("gw3"));
        let spec: XSpec = "popen//id=a".parse().unwrap();
        assert_eq!(spec.with_id("b").id(), Some("b"));
    }
}
