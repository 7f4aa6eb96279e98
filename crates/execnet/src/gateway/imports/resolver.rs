//! The host's side of the forwarding protocol: [`Resolver`] answers the worker's
//! requests (`find`, `read`, `stat`, `list`, `dists`), finds modules under the roots
//! as Python's path finder would, and keeps reads inside the roots and the names
//! served.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;

use super::names::{is_extension, normalize_project, valid_name};
use super::{ImportForwarding, ImportStats};
use crate::sync::lock;
use crate::wire::value::Value;

/// What a module name resolved to.
pub(super) enum Found {
    Module(PathBuf),
    Package(PathBuf),
    Namespace(Vec<PathBuf>),
    Refused(String),
}

/// The answer to `find`, as the worker's finder reads it.
#[derive(Serialize)]
pub(super) struct Entry {
    pub(super) kind: &'static str,
    origin: Option<String>,
    pub(super) source: Option<String>,
    dir: Option<String>,
    message: Option<String>,
}

#[derive(Serialize)]
struct FindAnswer {
    found: Option<Entry>,
    prefetch: BTreeMap<String, Option<Entry>>,
}

pub(super) struct Resolver {
    pub(super) config: ImportForwarding,
    /// Directory listings, kept while the directory's mtime stays the same.
    pub(super) listings: HashMap<PathBuf, (Option<SystemTime>, Arc<HashSet<String>>)>,
}

impl Resolver {
    /// The answer to one request `(id, kind, argument)`; None for a malformed one.
    pub(super) fn answer(&mut self, request: &Value, stats: &Mutex<ImportStats>) -> Option<(Value, Value)> {
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

    pub(super) fn entry(&self, found: Found) -> Entry {
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

    /// Finds `fullname` under the roots, as Python's path finder would.
    pub(super) fn resolve(&mut self, fullname: &str) -> Option<Found> {
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
