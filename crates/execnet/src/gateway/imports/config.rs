//! What to forward: [`ImportForwarding`], the import roots and the names served, from
//! code, from a host interpreter's `sys.path` or from a spec.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::names::valid_name;
use crate::error::{Error, Result};
use crate::sync::lock;
use crate::xspec::XSpec;

/// Where the host finds the modules it serves, and which ones it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportForwarding {
    pub(super) roots: Vec<PathBuf>,
    pub(super) only: Option<Vec<String>>,
    pub(super) prefer_host: bool,
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
