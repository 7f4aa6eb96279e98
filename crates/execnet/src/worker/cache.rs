//! The compiled worker, cached per local interpreter, so that a popen worker starts
//! without compiling its 50 KB source (about 9 ms of CPU at every start otherwise).
//!
//! How it works:
//!
//! - The first popen gateway for an interpreter ships the worker as source, as every
//!   gateway did before, plus a cache file path. Its worker compiles the source, then
//!   writes the interpreter's bytecode magic number and `marshal.dumps(code)`, base64
//!   encoded, to that path (a temporary file renamed into place).
//! - Later gateways for the same interpreter find the file and ship its text along with
//!   the source. The worker checks that the magic number is its own and runs the
//!   unmarshalled code; on any mismatch or error it compiles the source as before.
//!
//! The cache lives in `$EXECNET_RS_CACHE_DIR`, else `$XDG_CACHE_HOME/execnet-rs`, else
//! `$HOME/.cache/execnet-rs` (a directory made private, mode 0700). Setting
//! `EXECNET_RS_CACHE_DIR` to an empty value or `off` turns caching off. The file name is
//! a SHA-256 of the worker source and the interpreter's resolved path, size and
//! modification time, so a new worker or a reinstalled interpreter gets a new file.
//! Only popen gateways use it: ssh, via and socket workers run on other machines or
//! other interpreters that this host cannot name.

use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};

use super::WORKER_SOURCE;

/// The environment variable that names the cache directory (empty or `off`: no cache).
pub const CACHE_DIR_ENV: &str = "EXECNET_RS_CACHE_DIR";

/// How many entries a cache directory keeps (the most recently written): one per
/// interpreter and worker version, so old ones pile up as either changes.
const KEEP_ENTRIES: usize = 16;

/// Cache files larger than this are ignored (the worker's code is about 110 KB).
const MAX_ENTRY_BYTES: u64 = 8 << 20;

/// What the bootstrap of one popen worker gets from the cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheEntry {
    /// Where the worker writes its compiled code when `code` is None or unusable.
    pub path: Option<PathBuf>,
    /// The cached compiled code: magic number and marshal data, base64 encoded.
    pub code: Option<Arc<str>>,
}

/// The cache directory in force, or None when caching is off.
pub fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os(CACHE_DIR_ENV) {
        Some(v) if v.is_empty() || v == "off" => None,
        Some(v) => Some(PathBuf::from(v)),
        None => {
            let base = match std::env::var_os("XDG_CACHE_HOME") {
                Some(x) if !x.is_empty() => PathBuf::from(x),
                _ => PathBuf::from(std::env::var_os("HOME").filter(|h| !h.is_empty())?).join(".cache"),
            };
            Some(base.join("execnet-rs"))
        }
    }
}

/// Entries already read, by cache file path: a process that starts many gateways reads
/// each file once.
fn memo() -> &'static Mutex<HashMap<PathBuf, Arc<str>>> {
    static MEMO: OnceLock<Mutex<HashMap<PathBuf, Arc<str>>>> = OnceLock::new();
    MEMO.get_or_init(Default::default)
}

/// The cache entry for the interpreter `python` (a path, or a name looked up on `PATH`
/// as the process start will look it up). Empty when caching is off or the interpreter
/// cannot be found; never an error: the cache only ever saves time.
pub fn lookup(python: &str) -> CacheEntry {
    let Some(dir) = cache_dir() else {
        return CacheEntry::default();
    };
    let Some(interpreter) = resolve(python) else {
        return CacheEntry::default();
    };
    let Ok(meta) = std::fs::metadata(&interpreter) else {
        return CacheEntry::default();
    };
    let path = dir.join(format!("worker-{}.b64", key(&interpreter, &meta)));
    if let Some(code) = crate::sync::lock(memo()).get(&path) {
        return CacheEntry { path: Some(path), code: Some(code.clone()) };
    }
    match read_entry(&path) {
        Some(code) => {
            let code: Arc<str> = code.into();
            crate::sync::lock(memo()).insert(path.clone(), code.clone());
            CacheEntry { path: Some(path), code: Some(code) }
        }
        None => {
            // The worker writes the file; it needs the directory.
            if make_private_dir(&dir) {
                prune(&dir, KEEP_ENTRIES);
                CacheEntry { path: Some(path), code: None }
            } else {
                CacheEntry::default()
            }
        }
    }
}

/// Forgets what was read (for tests that change the cache under a running process).
pub fn forget() {
    crate::sync::lock(memo()).clear();
}

/// An entry's bytes (magic number and marshal data), decoded from its base64 text;
/// None when it does not decode.
pub fn decode_entry(text: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// The file's text when it looks like an entry: base64 characters only, not too long.
fn read_entry(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() == 0 || meta.len() > MAX_ENTRY_BYTES {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let valid = text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
    valid.then_some(text)
}

/// Removes all but the `keep` newest entries, and temporary files a minute old (left by
/// a worker that died while writing).
fn prune(dir: &Path, keep: usize) {
    let Ok(listing) = std::fs::read_dir(dir) else { return };
    let mut entries = Vec::new();
    for item in listing.flatten() {
        let name = item.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("worker-") {
            continue;
        }
        let Ok(modified) = item.metadata().and_then(|m| m.modified()) else { continue };
        if name.ends_with(".tmp") {
            if modified.elapsed().is_ok_and(|age| age.as_secs() > 60) {
                let _ = std::fs::remove_file(item.path());
            }
        } else if name.ends_with(".b64") {
            entries.push((modified, item.path()));
        }
    }
    if entries.len() > keep {
        entries.sort();
        for (_, path) in &entries[..entries.len() - keep] {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn make_private_dir(dir: &Path) -> bool {
    if dir.is_dir() {
        return true;
    }
    let made = std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).is_ok();
    // `recursive` applies the mode to every level it creates; make sure of the last.
    made && std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).is_ok()
}

/// The interpreter's path: as given when it names a path, else the first match on PATH.
fn resolve(python: &str) -> Option<PathBuf> {
    let found = if python.contains('/') {
        Some(PathBuf::from(python))
    } else {
        std::env::split_paths(&std::env::var_os("PATH")?)
            .map(|dir| dir.join(python))
            .find(|candidate| candidate.metadata().map(|m| m.is_file() && m.mode() & 0o111 != 0).unwrap_or(false))
    };
    std::fs::canonicalize(found?).ok()
}

/// The file name's hash: the worker source and the interpreter's identity.
fn key(interpreter: &Path, meta: &std::fs::Metadata) -> String {
    let mut h = Sha256::new();
    h.update(WORKER_SOURCE.as_bytes());
    h.update([0]);
    h.update(interpreter.as_os_str().as_encoded_bytes());
    h.update([0]);
    h.update(meta.len().to_le_bytes());
    h.update(meta.mtime().to_le_bytes());
    h.update(meta.mtime_nsec().to_le_bytes());
    h.update(meta.ino().to_le_bytes());
    let digest = h.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_must_be_base64_text() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "QUJD+/9=").unwrap();
        assert_eq!(read_entry(&good).as_deref(), Some("QUJD+/9="));
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "QUJD\"); import os #").unwrap();
        assert_eq!(read_entry(&bad), None);
        std::fs::write(&bad, "").unwrap();
        assert_eq!(read_entry(&bad), None);
        assert_eq!(read_entry(&dir.path().join("missing")), None);
    }

    #[test]
    fn pruning_keeps_the_newest_entries_and_fresh_temporary_files() {
        let dir = tempfile::tempdir().unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for i in 0..5 {
            let path = dir.path().join(format!("worker-{i}.b64"));
            std::fs::write(&path, "QQ==").unwrap();
            let modified = old + std::time::Duration::from_secs(i);
            std::fs::File::options().write(true).open(&path).unwrap().set_modified(modified).unwrap();
        }
        let stale_tmp = dir.path().join("worker-x.b64.7.tmp");
        std::fs::write(&stale_tmp, "").unwrap();
        std::fs::File::options().write(true).open(&stale_tmp).unwrap().set_modified(old).unwrap();
        let fresh_tmp = dir.path().join("worker-y.b64.8.tmp");
        std::fs::write(&fresh_tmp, "").unwrap();
        std::fs::write(dir.path().join("unrelated"), "").unwrap();
        prune(dir.path(), 2);
        let mut left: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, ["unrelated", "worker-3.b64", "worker-4.b64", "worker-y.b64.8.tmp"]);
    }

    #[test]
    fn interpreters_resolve_through_path() {
        let sh = resolve("sh").expect("sh on PATH");
        assert!(sh.is_absolute());
        assert!(resolve("no-such-interpreter-here").is_none());
        assert!(resolve("/no/such/python").is_none());
    }
}
