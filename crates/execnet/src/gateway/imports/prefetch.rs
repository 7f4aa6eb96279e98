//! Prefetch: the modules a found module imports from its own top-level package, read
//! roughly from its source and sent ahead with the answer, within a budget.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Mutex;

use super::names::valid_name;
use super::resolver::{Entry, Found, Resolver};
use super::ImportStats;
use crate::sync::lock;

/// At most this much source is sent ahead with one answer.
const PREFETCH_BYTES: usize = 4 << 20;
/// At most this many modules are sent ahead with one answer.
const PREFETCH_MODULES: usize = 256;

impl Resolver {
    /// Sends ahead the modules of the same top-level package that `fullname` (and what
    /// it brings along, breadth first) imports, within the budgets.
    pub(super) fn prefetch(
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
}
