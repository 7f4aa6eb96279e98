//! Import forwarding: remote code imports pure-Python modules from this host, with
//! nothing installed on the remote side.
//!
//! [`Gateway::forward_imports`] (or the spec key `forward_imports`) runs `imports.py`
//! through `remote_exec`: it puts a finder at the end of the worker's `sys.meta_path`
//! (modules the remote interpreter has win) that asks the host for modules it cannot
//! find. The host answers from its import roots ([`ImportForwarding`]): packages
//! (`__init__.py`), modules (`name.py`), namespace packages, package data for
//! `importlib.resources`, and distribution metadata for `importlib.metadata` (entry
//! points). C extensions are refused with an `ImportError` that names the file.
//!
//! ```no_run
//! # fn main() -> execnet::Result<()> {
//! use execnet::ImportForwarding;
//! let gw = execnet::makegateway("popen//python=python3")?;
//! let server = gw.forward_imports(ImportForwarding::new(["/home/me/src"]).only(["mypkg"]))?;
//! let ch = gw.remote_exec("import mypkg; channel.send(mypkg.__file__)")?;
//! println!("{} from the host; {:?}", ch.receive::<String>()?, server.stats());
//! # Ok(()) }
//! ```
//!
//! Spec keys: `forward_imports` (any module the remote side lacks) or
//! `forward_imports=NAME,NAME` (only these top-level names), `import_path=DIR:DIR` (the
//! roots; default: the `sys.path` of this host's `python3`), `prefer_host_imports` (with
//! a name list: the host's copy wins over the remote one).
//!
//! What is readable: only files under the roots (after resolving symlinks and `..`),
//! and with a name list only those names' modules and packages (and `*.dist-info`
//! metadata). Requests name modules, never paths the host would trust. The host reads
//! files and sends their text; it runs nothing. Answers to `find` carry the modules the
//! found module imports from its own top-level package ("prefetch"), so a package
//! usually costs a round trip or a few, not one per submodule.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::gateway::{Gateway, Source};
use crate::sync::lock;
use crate::wire::value::Value;
use crate::xspec::XSpec;
use crate::Channel;

/// The script run by [`Gateway::forward_imports`].
const IMPORTS_SOURCE: &str = include_str!("imports.py");

/// At most this much source is sent ahead with one answer.
const PREFETCH_BYTES: usize = 4 << 20;
/// At most this many modules are sent ahead with one answer.
const PREFETCH_MODULES: usize = 256;

/// Where the host finds the modules it serves, and which ones it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportForwarding {
    roots: Vec<PathBuf>,
    only: Option<Vec<String>>,
    prefer_host: bool,
}

impl ImportForwarding {
    /// Serves modules found under `roots` (searched in order, like `sys.path`). Roots
    /// that are not directories (zip files, missing paths) are left out.
    pub fn new<I, P>(roots: I) -> ImportForwarding
    where
        I: IntoIterator<Item = P>,
        P: AsRef<Path>,
    {
        let mut seen = HashSet::new();
        let roots = roots
            .into_iter()
            .filter_map(|p| std::fs::canonicalize(p.as_ref()).ok())
            .filter(|p| p.is_dir() && seen.insert(p.clone()))
            .collect();
        ImportForwarding { roots, only: None, prefer_host: false }
    }

    /// Serves what `python` (an interpreter of this host) can import: the directories of
    /// its `sys.path`. The answer is kept for the rest of the process.
    pub fn from_python(python: &str) -> Result<ImportForwarding> {
        static CACHE: OnceLock<Mutex<HashMap<String, Vec<PathBuf>>>> = OnceLock::new();
        let cache = CACHE.get_or_init(Default::default);
        if let Some(roots) = lock(cache).get(python) {
            return Ok(ImportForwarding::new(roots));
        }
        let out = std::process::Command::new(python)
            .args(["-c", "import sys\nfor p in sys.path:\n    print(p)"])
            .output()
            .map_err(|e| spawn_error(python, &e.to_string()))?;
        if !out.status.success() {
            return Err(spawn_error(python, &String::from_utf8_lossy(&out.stderr)));
        }
        let roots: Vec<PathBuf> =
            String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()).map(PathBuf::from).collect();
        lock(cache).insert(python.to_string(), roots.clone());
        Ok(ImportForwarding::new(roots))
    }

    /// The configuration a spec asks for (`forward_imports`, `import_path`,
    /// `prefer_host_imports`), or None when it does not ask for forwarding.
    pub fn from_spec(spec: &XSpec) -> Result<Option<ImportForwarding>> {
        if !spec.has("forward_imports") {
            if spec.has("import_path") || spec.has("prefer_host_imports") {
                return Err(spec.invalid("import_path and prefer_host_imports need forward_imports"));
            }
            return Ok(None);
        }
        let mut config = match spec.get("import_path") {
            Some(path) => ImportForwarding::new(std::env::split_paths(path)),
            None => ImportForwarding::from_python(crate::worker::DEFAULT_PYTHON)?,
        };
        if let Some(names) = spec.get("forward_imports").filter(|v| *v != "true") {
            let names: Vec<&str> = names.split(',').map(str::trim).filter(|n| !n.is_empty()).collect();
            if let Some(bad) = names.iter().find(|n| !valid_name(n) || n.contains('.')) {
                return Err(spec.invalid(format!(
                    "forward_imports={bad:?}: give top-level module names, separated by commas"
                )));
            }
            config = config.only(names);
        }
        Ok(Some(config.prefer_host(spec.has("prefer_host_imports"))))
    }

    /// Serves only these top-level modules and packages (and their submodules).
    pub fn only<I, S>(mut self, names: I) -> ImportForwarding
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.only = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// With [`ImportForwarding::only`]: the host's copy of those modules wins over the
    /// remote interpreter's own (the finder goes first on `sys.meta_path`).
    pub fn prefer_host(mut self, yes: bool) -> ImportForwarding {
        self.prefer_host = yes;
        self
    }

    /// The roots searched, canonical, in order.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }
}

fn spawn_error(python: &str, why: &str) -> Error {
    Error::Spawn {
        spec: String::new(),
        key: "forward_imports".into(),
        program: python.into(),
        reason: format!("cannot ask it for its sys.path (the import roots; or give import_path=): {}", why.trim()),
    }
}

/// What import forwarding has done for one gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportStats {
    /// Requests answered (each one a round trip for the remote side).
    pub requests: u64,
    /// Modules and packages sent in answer to a `find`.
    pub modules: u64,
    /// Modules sent ahead, with the answer for a module that imports them.
    pub prefetched: u64,
    /// `find` requests for modules the host does not have (or does not serve).
    pub misses: u64,
    /// C extensions and other modules that cannot be forwarded.
    pub refused: u64,
    /// Bytes of source and data sent.
    pub bytes: u64,
}

/// A handle on a gateway's import forwarding; the forwarding lasts as long as the
/// gateway, whether this handle is kept or not.
#[derive(Debug, Clone)]
pub struct ImportServer {
    stats: Arc<Mutex<ImportStats>>,
}

impl ImportServer {
    /// What the forwarding has done so far.
    pub fn stats(&self) -> ImportStats {
        *lock(&self.stats)
    }
}

impl Gateway {
    /// Lets remote code import modules from this host (see the [module docs](self)).
    /// Returns once the finder is in place: code started afterwards can use it.
    pub fn forward_imports(&self, config: ImportForwarding) -> Result<ImportServer> {
        #[derive(Serialize)]
        struct Args<'a> {
            only: Option<&'a [String]>,
            prefer_host: bool,
        }
        let source = Source::call(
            IMPORTS_SOURCE,
            "install",
            Args { only: config.only.as_deref(), prefer_host: config.prefer_host },
        )?
        .with_file_name("<execnet import forwarding>");
        let setup = self.remote_exec(source)?;
        let requests: Channel = setup.receive()?;
        let stats = Arc::new(Mutex::new(ImportStats::default()));
        let (tx, rx) = crossbeam_channel::unbounded::<Option<Value>>();
        requests.set_callback_with_endmarker(move |item: Value| {
            let _ = tx.send(if item == Value::None { None } else { Some(item) });
        }, Value::None)?;
        let sender = requests.into_service();
        let resolver = Resolver { config, listings: HashMap::new() };
        let for_thread = stats.clone();
        std::thread::Builder::new()
            .name(format!("execnet-{}-imports", self.id()))
            .spawn(move || {
                let mut resolver = resolver;
                while let Ok(Some(request)) = rx.recv() {
                    let Some((id, answer)) = resolver.answer(&request, &for_thread) else { continue };
                    if sender.send(&(id, answer)).is_err() {
                        break;
                    }
                }
            })
            .map_err(Error::Io)?;
        Ok(ImportServer { stats })
    }
}

/// What a module name resolved to.
enum Found {
    Module(PathBuf),
    Package(PathBuf),
    Namespace(Vec<PathBuf>),
    Refused(String),
}

/// The answer to `find`, as the worker's finder reads it.
#[derive(Serialize)]
struct Entry {
    kind: &'static str,
    origin: Option<String>,
    source: Option<String>,
    dir: Option<String>,
    message: Option<String>,
}

#[derive(Serialize)]
struct FindAnswer {
    found: Option<Entry>,
    prefetch: BTreeMap<String, Option<Entry>>,
}

struct Resolver {
    config: ImportForwarding,
    /// Directory listings, kept while the directory's mtime stays the same.
    listings: HashMap<PathBuf, (Option<SystemTime>, Arc<HashSet<String>>)>,
}

impl Resolver {
    /// The answer to one request `(id, kind, argument)`; None for a malformed one.
    fn answer(&mut self, request: &Value, stats: &Mutex<ImportStats>) -> Option<(Value, Value)> {
        let (Value::Tuple(parts) | Value::List(parts)) = request else { return None };
        let [id, kind, arg] = parts.as_slice() else { return None };
        let arg = arg.as_str();
        let answer = match (kind.as_str()?, arg) {
            ("find", Some(name)) => self.find(name, stats),
            ("read", Some(path)) => match self.allowed_path(path).and_then(|p| std::fs::read(p).ok()) {
                Some(data) => {
                    lock(stats).bytes += data.len() as u64;
                    Value::Bytes(data)
                }
                None => Value::None,
            },
            ("stat", Some(path)) => match self.allowed_path(path) {
                Some(p) if p.is_dir() => Value::from("dir"),
                Some(p) if p.is_file() => Value::from("file"),
                _ => Value::None,
            },
            ("list", Some(path)) => match self.allowed_path(path).and_then(|p| std::fs::read_dir(p).ok()) {
                Some(entries) => {
                    let mut names: Vec<String> =
                        entries.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
                    names.sort();
                    Value::List(names.into_iter().map(Value::from).collect())
                }
                None => Value::None,
            },
            ("dists", name) => Value::List(self.dists(name).into_iter().map(Value::from).collect()),
            _ => Value::None,
        };
        lock(stats).requests += 1;
        Some((id.clone(), answer))
    }

    fn find(&mut self, fullname: &str, stats: &Mutex<ImportStats>) -> Value {
        let found = self.resolve(fullname);
        let mut st = lock(stats);
        let entry = match found {
            None => {
                st.misses += 1;
                None
            }
            Some(Found::Refused(message)) => {
                st.refused += 1;
                Some(Entry { kind: "refused", origin: None, source: None, dir: None, message: Some(message) })
            }
            Some(found) => {
                let entry = self.entry(found);
                st.modules += 1;
                st.bytes += entry.source.as_ref().map_or(0, |s| s.len() as u64);
                Some(entry)
            }
        };
        drop(st);
        let mut prefetch = BTreeMap::new();
        if let Some(e) = &entry {
            self.prefetch(fullname, e, &mut prefetch, stats);
        }
        crate::to_value(&FindAnswer { found: entry, prefetch }).unwrap_or(Value::None)
    }

    fn entry(&self, found: Found) -> Entry {
        let text = |p: &Path| p.to_string_lossy().into_owned();
        match found {
            Found::Module(file) => Entry {
                kind: "module",
                source: read_source(&file),
                origin: Some(text(&file)),
                dir: None,
                message: None,
            },
            Found::Package(dir) => {
                let init = dir.join("__init__.py");
                Entry {
                    kind: "package",
                    source: read_source(&init),
                    origin: Some(text(&init)),
                    dir: Some(text(&dir)),
                    message: None,
                }
            }
            Found::Namespace(dirs) => Entry {
                kind: "namespace",
                source: Some(String::new()),
                origin: None,
                dir: dirs.first().map(|d| text(d)),
                message: None,
            },
            Found::Refused(message) => {
                Entry { kind: "refused", origin: None, source: None, dir: None, message: Some(message) }
            }
        }
    }

    /// Sends ahead the modules of the same top-level package that `fullname` (and what
    /// it brings along, breadth first) imports, within the budgets.
    fn prefetch(
        &mut self,
        fullname: &str,
        entry: &Entry,
        out: &mut BTreeMap<String, Option<Entry>>,
        stats: &Mutex<ImportStats>,
    ) {
        let top = fullname.split('.').next().unwrap_or(fullname).to_string();
        let mut bytes = 0usize;
        let mut queue: VecDeque<(String, bool, String)> = VecDeque::new();
        if let Some(src) = &entry.source {
            queue.push_back((fullname.to_string(), entry.kind != "module", src.clone()));
        }
        let mut seen: HashSet<String> = HashSet::from([fullname.to_string()]);
        while let Some((name, is_package, source)) = queue.pop_front() {
            for candidate in imported_names(&name, is_package, &source) {
                if out.len() >= PREFETCH_MODULES || bytes >= PREFETCH_BYTES {
                    return;
                }
                if candidate.split('.').next() != Some(top.as_str()) || !seen.insert(candidate.clone()) {
                    continue;
                }
                match self.resolve(&candidate) {
                    None => {
                        out.insert(candidate, None);
                    }
                    Some(Found::Refused(_)) => {} // asked for when imported, refused then
                    Some(found) => {
                        let e = self.entry(found);
                        let len = e.source.as_ref().map_or(0, String::len);
                        bytes += len;
                        {
                            let mut st = lock(stats);
                            st.prefetched += 1;
                            st.bytes += len as u64;
                        }
                        if let Some(src) = &e.source {
                            queue.push_back((candidate.clone(), e.kind != "module", src.clone()));
                        }
                        out.insert(candidate, Some(e));
                    }
                }
            }
        }
    }

    /// Finds `fullname` under the roots, as Python's path finder would.
    fn resolve(&mut self, fullname: &str) -> Option<Found> {
        if !fullname.split('.').all(valid_name) {
            return None;
        }
        let parts: Vec<&str> = fullname.split('.').collect();
        if let Some(only) = &self.config.only {
            if !only.iter().any(|n| n == parts[0]) {
                return None;
            }
        }
        let mut dirs: Vec<PathBuf> = self.config.roots.clone();
        for (i, part) in parts.iter().enumerate() {
            let found = self.search(&dirs, part, fullname)?;
            if i + 1 == parts.len() {
                return Some(found);
            }
            dirs = match found {
                Found::Package(dir) => vec![dir],
                Found::Namespace(portions) => portions,
                Found::Module(_) => return None,
                refused @ Found::Refused(_) => return Some(refused),
            };
        }
        None
    }

    /// One name in these directories: a package wins, then an extension (refused), then
    /// a source module; directories without `__init__.py` are namespace portions.
    fn search(&mut self, dirs: &[PathBuf], part: &str, fullname: &str) -> Option<Found> {
        let mut portions = Vec::new();
        for dir in dirs {
            let names = self.listing(dir);
            if names.contains(part) {
                let pkg = dir.join(part);
                if let Some(pkg) = self.inside_roots(&pkg).filter(|p| p.is_dir()) {
                    if pkg.join("__init__.py").is_file() {
                        return Some(Found::Package(pkg));
                    }
                    let inner = self.listing(&pkg);
                    if let Some(ext) = inner.iter().find(|n| is_extension(n, "__init__")) {
                        return Some(refuse(fullname, &pkg.join(ext)));
                    }
                    portions.push(pkg);
                }
            }
            if let Some(ext) = names.iter().find(|n| is_extension(n, part)) {
                return Some(refuse(fullname, &dir.join(ext)));
            }
            let file = format!("{part}.py");
            if names.contains(&file) {
                if let Some(path) = self.inside_roots(&dir.join(&file)).filter(|p| p.is_file()) {
                    return Some(Found::Module(path));
                }
            }
        }
        (!portions.is_empty()).then_some(Found::Namespace(portions))
    }

    fn listing(&mut self, dir: &Path) -> Arc<HashSet<String>> {
        let mtime = std::fs::metadata(dir).and_then(|m| m.modified()).ok();
        if let Some((seen, names)) = self.listings.get(dir) {
            if *seen == mtime {
                return names.clone();
            }
        }
        let names: HashSet<String> = std::fs::read_dir(dir)
            .map(|rd| rd.filter_map(|e| e.ok()?.file_name().into_string().ok()).collect())
            .unwrap_or_default();
        let names = Arc::new(names);
        self.listings.insert(dir.to_path_buf(), (mtime, names.clone()));
        names
    }

    /// The canonical path if it is under a root (symlinks resolved), else None.
    fn inside_roots(&self, path: &Path) -> Option<PathBuf> {
        let real = std::fs::canonicalize(path).ok()?;
        self.config.roots.iter().any(|r| real.starts_with(r)).then_some(real)
    }

    /// A path the worker asks to read or list: absolute, under a root, and with a name
    /// list under one of those names (or a distribution's metadata).
    fn allowed_path(&self, path: &str) -> Option<PathBuf> {
        let path = Path::new(path);
        if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
            return None;
        }
        let real = std::fs::canonicalize(path).ok()?;
        let root = self.config.roots.iter().find(|r| real.starts_with(r))?;
        if let Some(only) = &self.config.only {
            let first = real.strip_prefix(root).ok()?.components().next()?;
            let first = first.as_os_str().to_str()?;
            let stem = first.strip_suffix(".py").unwrap_or(first);
            let metadata = first.ends_with(".dist-info") || first.ends_with(".egg-info");
            if !metadata && !only.iter().any(|n| n == stem) {
                return None;
            }
        }
        Some(real)
    }

    /// The `.dist-info` directories under the roots (of one project, when named).
    fn dists(&mut self, name: Option<&str>) -> Vec<String> {
        let wanted = name.map(normalize_project);
        let mut out = Vec::new();
        for root in self.config.roots.clone() {
            let names = self.listing(&root);
            let mut names: Vec<&String> = names.iter().collect();
            names.sort();
            for entry in names {
                let Some(stem) = entry.strip_suffix(".dist-info").or_else(|| entry.strip_suffix(".egg-info")) else {
                    continue;
                };
                let project = stem.split('-').next().unwrap_or(stem);
                if wanted.as_ref().is_some_and(|w| *w != normalize_project(project)) {
                    continue;
                }
                if root.join(entry).is_dir() {
                    out.push(root.join(entry).to_string_lossy().into_owned());
                }
            }
        }
        out
    }
}

fn refuse(fullname: &str, file: &Path) -> Found {
    Found::Refused(format!(
        "cannot forward {fullname}: it is a C extension ({}), which the host cannot send; install it on the remote side",
        file.display()
    ))
}

fn read_source(path: &Path) -> Option<String> {
    std::fs::read(path).ok().map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// `name.cpython-311-x86_64-linux-gnu.so`, `name.abi3.so`, `name.so`, `name.pyd`, ….
fn is_extension(file: &str, name: &str) -> bool {
    file.strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|rest| rest.ends_with(".so") || rest == "so" || rest.ends_with(".pyd") || rest == "pyd")
}

/// A Python identifier (the part of a dotted module name).
fn valid_name(part: &str) -> bool {
    let mut chars = part.chars();
    chars.next().is_some_and(|c| c == '_' || c.is_alphabetic()) && chars.all(|c| c == '_' || c.is_alphanumeric())
}

fn normalize_project(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut sep = false;
    for c in name.chars() {
        if c == '-' || c == '_' || c == '.' {
            sep = true;
        } else {
            if sep && !out.is_empty() {
                out.push('_');
            }
            sep = false;
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// The modules a source imports (absolute names; relative imports resolved against
/// `module`), read from its `import` and `from ... import` statements. For
/// `from X import a, b` both `X` and `X.a`, `X.b` are listed (the names may be
/// submodules). A rough reading: enough to send things ahead, never trusted otherwise.
fn imported_names(module: &str, is_package: bool, source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut statement = String::new();
    let mut depth = 0i32;
    for line in source.lines() {
        let code = line.split('#').next().unwrap_or("");
        if statement.is_empty() {
            let t = code.trim_start();
            if !(t.starts_with("import ") || t.starts_with("from ")) {
                continue;
            }
        }
        statement.push(' ');
        statement.push_str(code.trim_end().trim_end_matches('\\'));
        depth += code.matches('(').count() as i32 - code.matches(')').count() as i32;
        if depth > 0 || code.trim_end().ends_with('\\') {
            continue;
        }
        depth = 0;
        let text = std::mem::take(&mut statement).replace(['(', ')'], " ");
        let words: Vec<&str> = text.split_whitespace().collect();
        match words.as_slice() {
            ["import", rest @ ..] => {
                for item in rest.join(" ").split(',') {
                    if let Some(name) = item.split_whitespace().next() {
                        out.push(name.to_string());
                    }
                }
            }
            ["from", base, "import", rest @ ..] => {
                let Some(base) = absolute(module, is_package, base) else { continue };
                out.push(base.clone());
                for item in rest.join(" ").split(',') {
                    if let Some(name) = item.split_whitespace().next().filter(|n| *n != "*") {
                        out.push(format!("{base}.{name}"));
                    }
                }
            }
            _ => {}
        }
    }
    out.retain(|n| n.split('.').all(valid_name));
    out
}

/// `..x` from inside `module` as an absolute name.
fn absolute(module: &str, is_package: bool, name: &str) -> Option<String> {
    let dots = name.chars().take_while(|&c| c == '.').count();
    if dots == 0 {
        return Some(name.to_string());
    }
    let mut package: Vec<&str> = module.split('.').collect();
    if !is_package {
        package.pop();
    }
    for _ in 1..dots {
        package.pop()?;
    }
    let rest = &name[dots..];
    if package.is_empty() {
        return None;
    }
    Some(if rest.is_empty() { package.join(".") } else { format!("{}.{rest}", package.join(".")) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_read_with_relative_names_resolved() {
        let src = "import os, pkg.a as x\nfrom . import b, c  # two\nfrom .sub.d import (\n    e,\n    f,\n)\nfrom .. import up\n";
        let names = imported_names("pkg.mod", false, src);
        assert_eq!(names, ["os", "pkg.a", "pkg", "pkg.b", "pkg.c", "pkg.sub.d", "pkg.sub.d.e", "pkg.sub.d.f"]);
        assert_eq!(imported_names("pkg", true, "from .x import y"), ["pkg.x", "pkg.x.y"]);
    }

    #[test]
    fn names_and_extensions() {
        assert!(valid_name("_x1") && valid_name("été") && !valid_name("1x") && !valid_name("") && !valid_name("a-b"));
        assert!(is_extension("m.cpython-311-x86_64-linux-gnu.so", "m") && is_extension("m.so", "m"));
        assert!(!is_extension("m.py", "m") && !is_extension("mm.so", "m"));
        assert_eq!(normalize_project("Pytest.XDist"), "pytest_xdist");
    }
}
