//! Directory sync over gateways: execnet's `RSync`, in Rust.
//!
//! [`RSync`] sends the tree under a source directory to a directory in the worker of
//! each gateway added with [`RSync::add_target`]. The receiving half is a small Python
//! program ([`REMOTE_SOURCE`], stdlib only) that the bindings' `execnet_rs.RSync` ships
//! too, so both sides speak the same conversation on the channel:
//!
//! ```text
//! host -> worker   (destdir, {"delete": bool})
//! host -> worker   ("list", entries)   every path of the tree, parents first:
//!                  ("d", rel, mode) | ("f", rel, size, mtime_ns, mode)
//!                  | ("l", rel, "intree", rel_target) | ("l", rel, "verbatim", text)
//! worker -> host   ("need", [rel, ...])  files missing there or of another size or mtime
//! host -> worker   (rel, data, mtime_ns, mode) per needed file (data None: it vanished)
//! host -> worker   None
//! worker -> host   ("done", number of files written)
//! ```
//!
//! A file is sent when the target has no regular file of the same size and modification
//! time; it is written beside its place and renamed there (a reader never sees half a
//! file), with the source's permission bits and modification time. Directories are made;
//! symlinks are made anew: an absolute link into the source tree points to the same
//! place in the target tree, any other link is copied as it is. With
//! [`TargetOptions::delete`], what the target holds beyond the source tree is removed.
//! Paths for which the [`RSync::filter`] returns false are left out (a directory with all
//! it holds). Targets are served in parallel, one thread each; every file is read when a
//! target asks for it, so memory stays at a file per target.
//!
//! ```no_run
//! # fn main() -> execnet::Result<()> {
//! let a = execnet::makegateway("popen")?;
//! let b = execnet::makegateway("ssh=build@example.org")?;
//! let mut sync = execnet::RSync::new("./project");
//! sync.filter(|path| !path.ends_with(".git"));
//! sync.add_target(&a, "/tmp/project");
//! sync.add_target(&b, "project"); // relative: to the worker's current directory
//! for report in sync.send()? {
//!     println!("{}: {} of {} files sent ({} bytes)", report.gateway, report.files_sent,
//!              report.files_listed, report.bytes_sent);
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_bytes::Bytes;

use crate::error::{Error, Result};
use crate::gateway::channel::Channel;
use crate::gateway::Gateway;

/// The receiving half, run in each target's worker by `remote_exec` (also shipped by
/// the Python bindings' `execnet_rs.RSync`).
pub const REMOTE_SOURCE: &str = include_str!("remote.py");

/// One path of the source tree as the receiving half reads it (a tuple on the wire).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
enum Entry {
    /// `("d", rel, mode)`
    Dir((&'static str, String, u32)),
    /// `("f", rel, size, mtime_ns, mode)`
    File((&'static str, String, u64, i64, u32)),
    /// `("l", rel, "intree" | "verbatim", text)`
    Link((&'static str, String, &'static str, String)),
}

/// How one target is synced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TargetOptions {
    /// Remove what the target directory holds beyond the source tree.
    pub delete: bool,
}

/// What happened at one target, in the order the targets were added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetReport {
    /// The gateway's id.
    pub gateway: String,
    /// The target directory as given to [`RSync::add_target`].
    pub destdir: String,
    /// Regular files in the source tree (after the filter).
    pub files_listed: usize,
    /// Files the target did not have as they are here, and got.
    pub files_sent: usize,
    /// Bytes of file contents sent.
    pub bytes_sent: u64,
    /// Files that vanished or changed kind between the listing and the send.
    pub files_vanished: usize,
    /// From the start of the send to the target's "done".
    pub elapsed: Duration,
}

/// A step of a send, for progress displays ([`RSync::send_each`]). Called from the
/// targets' threads, so the callback must be `Sync`.
#[derive(Debug)]
pub enum Progress<'a> {
    /// The target said what it needs: `files` files of `bytes` bytes in all.
    Needs {
        /// The id of the target's gateway.
        gateway: &'a str,
        /// How many files it needs.
        files: usize,
        /// Their total size, in bytes.
        bytes: u64,
    },
    /// One file's contents were sent.
    Sent {
        /// The id of the target's gateway.
        gateway: &'a str,
        /// The file's path, relative to the source directory.
        path: &'a str,
        /// The size of its contents, in bytes.
        bytes: u64,
    },
    /// The target is in sync (or failed: see the result of the send).
    Finished {
        /// The id of the target's gateway.
        gateway: &'a str,
    },
}

type Filter = Box<dyn Fn(&Path) -> bool + Send + Sync>;

struct Target {
    gateway: Gateway,
    destdir: String,
    options: TargetOptions,
}

/// Sends a directory tree to directories reached through gateways (see the module docs).
pub struct RSync {
    source: PathBuf,
    filter: Option<Filter>,
    targets: Vec<Target>,
}

impl std::fmt::Debug for RSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RSync")
            .field("source", &self.source)
            .field("targets", &self.targets.iter().map(|t| (t.gateway.id(), &t.destdir)).collect::<Vec<_>>())
            .finish()
    }
}

impl RSync {
    /// An RSync of the tree under `source`, with no targets yet.
    pub fn new(source: impl AsRef<Path>) -> RSync {
        RSync { source: source.as_ref().to_path_buf(), filter: None, targets: Vec::new() }
    }

    /// Leaves out every path (a full path under the source directory) for which `keep`
    /// returns false; a directory left out is left out with all it holds.
    pub fn filter(&mut self, keep: impl Fn(&Path) -> bool + Send + Sync + 'static) -> &mut RSync {
        self.filter = Some(Box::new(keep));
        self
    }

    /// Adds `destdir` in the worker of `gateway` (a relative path is taken from the
    /// worker's current directory), with the default options.
    pub fn add_target(&mut self, gateway: &Gateway, destdir: impl Into<String>) -> &mut RSync {
        self.add_target_with(gateway, destdir, TargetOptions::default())
    }

    /// Adds a target with `options` (see [`TargetOptions`]).
    pub fn add_target_with(
        &mut self,
        gateway: &Gateway,
        destdir: impl Into<String>,
        options: TargetOptions,
    ) -> &mut RSync {
        self.targets.push(Target { gateway: gateway.clone(), destdir: destdir.into(), options });
        self
    }

    /// Brings every target added since the last send in line with the source tree, all
    /// at once. Errors: the failure of the first target (in the order added) that failed,
    /// once every target has finished; [`Error::Misuse`] when there are no targets,
    /// [`Error::Io`] when the source cannot be listed. [`RSync::send_each`] gives every target's result.
    pub fn send(&mut self) -> Result<Vec<TargetReport>> {
        self.send_each(&|_| {})?.into_iter().collect()
    }

    /// Like [`RSync::send`], with `progress` told of each step, and one result per target
    /// (in the order they were added), so that one failing target does not hide the others.
    /// The outer error is for what fails before any target is served: no targets, or a
    /// source that cannot be listed.
    pub fn send_each(&mut self, progress: &(dyn Fn(Progress<'_>) + Sync)) -> Result<Vec<Result<TargetReport>>> {
        if self.targets.is_empty() {
            return Err(Error::misuse("rsync: no targets to send to (add_target first)"));
        }
        let (entries, files) = self.listing()?;
        let targets = std::mem::take(&mut self.targets);
        let source = self.source.as_path();
        let entries = &entries;
        let results = std::thread::scope(|scope| {
            let running: Vec<_> = targets
                .iter()
                .map(|target| {
                    scope.spawn(move || {
                        let result = serve(target, source, entries, files, progress);
                        progress(Progress::Finished { gateway: target.gateway.id() });
                        result
                    })
                })
                .collect();
            running
                .into_iter()
                .map(|thread| thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
                .collect()
        });
        Ok(results)
    }

    /// The source tree's entries, parents before children, and how many regular files.
    fn listing(&self) -> Result<(Vec<Entry>, usize)> {
        let root = &self.source;
        let meta = std::fs::metadata(root)
            .map_err(|e| io_context(e, format!("rsync: cannot read the source {}", root.display())))?;
        if !meta.is_dir() {
            return Err(io_context(
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory"),
                format!("rsync: the source {} is not a directory", root.display()),
            ));
        }
        let absolute = std::path::absolute(root).unwrap_or_else(|_| root.clone());
        let roots: Vec<PathBuf> = vec![absolute.clone(), std::fs::canonicalize(root).unwrap_or(absolute)];
        let mut entries = Vec::new();
        let mut files = 0;
        self.walk(root, "", &roots, &mut entries, &mut files)?;
        Ok((entries, files))
    }

    fn walk(&self, dir: &Path, prefix: &str, roots: &[PathBuf], out: &mut Vec<Entry>, files: &mut usize) -> Result<()> {
        let mut names: Vec<String> = match std::fs::read_dir(dir) {
            Ok(read) => read
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_context(e, format!("rsync: cannot list {}", dir.display()))),
        };
        names.sort();
        for name in names {
            let path = dir.join(&name);
            if let Some(keep) = &self.filter {
                if !keep(&path) {
                    continue;
                }
            }
            let rel = format!("{prefix}{name}");
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                Err(_) => continue, // gone since it was listed
            };
            let kind = meta.file_type();
            let mode = meta.permissions().mode() & 0o7777;
            if kind.is_symlink() {
                let text = std::fs::read_link(&path)
                    .map_err(|e| io_context(e, format!("rsync: cannot read the link {}", path.display())))?;
                let inside = if text.is_absolute() { in_tree(&normalize(&text), roots) } else { None };
                out.push(match inside {
                    Some(target) => Entry::Link(("l", rel, "intree", target)),
                    None => Entry::Link(("l", rel, "verbatim", text.to_string_lossy().into_owned())),
                });
            } else if kind.is_dir() {
                out.push(Entry::Dir(("d", rel.clone(), mode)));
                self.walk(&path, &format!("{rel}/"), roots, out, files)?;
            } else if kind.is_file() {
                *files += 1;
                let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
                out.push(Entry::File(("f", rel, meta.len(), mtime_ns, mode)));
            }
        }
        Ok(())
    }
}

/// `text` with `.` and `..` resolved lexically (as Python's os.path.normpath).
fn normalize(text: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in text.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The path of `target` relative to one of the tree's roots ("" for the root itself).
fn in_tree(target: &Path, roots: &[PathBuf]) -> Option<String> {
    roots.iter().find_map(|root| {
        target.strip_prefix(root).ok().map(|rel| {
            rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/")
        })
    })
}

fn io_context(e: std::io::Error, what: String) -> Error {
    Error::Io(std::io::Error::new(e.kind(), format!("{what}: {e}")))
}

/// Runs the conversation with one target.
fn serve(
    target: &Target,
    source: &Path,
    entries: &[Entry],
    files_listed: usize,
    progress: &(dyn Fn(Progress<'_>) + Sync),
) -> Result<TargetReport> {
    let started = Instant::now();
    let id = target.gateway.id();
    let channel: Channel = target.gateway.remote_exec(REMOTE_SOURCE)?;
    let options: BTreeMap<&str, bool> = [("delete", target.options.delete)].into();
    channel.send(&(target.destdir.as_str(), options))?;
    channel.send(&("list", entries))?;
    let (tag, need): (String, Vec<String>) = channel.receive()?;
    if tag != "need" {
        return Err(protocol(id, &tag));
    }
    let sizes: BTreeMap<&str, u64> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::File((_, rel, size, _, _)) => Some((rel.as_str(), *size)),
            _ => None,
        })
        .collect();
    let bytes: u64 = need.iter().filter_map(|rel| sizes.get(rel.as_str())).sum();
    progress(Progress::Needs { gateway: id, files: need.len(), bytes });
    let mut report = TargetReport {
        gateway: id.to_string(),
        destdir: target.destdir.clone(),
        files_listed,
        files_sent: 0,
        bytes_sent: 0,
        files_vanished: 0,
        elapsed: Duration::ZERO,
    };
    for rel in &need {
        match read_file(source, rel) {
            Some((data, mtime_ns, mode)) => {
                channel.send(&(rel.as_str(), Bytes::new(&data), mtime_ns, mode))?;
                report.files_sent += 1;
                report.bytes_sent += data.len() as u64;
                progress(Progress::Sent { gateway: id, path: rel, bytes: data.len() as u64 });
            }
            None => {
                channel.send(&(rel.as_str(), None::<&Bytes>, 0, 0))?;
                report.files_vanished += 1;
            }
        }
    }
    channel.send(&None::<()>)?;
    let (tag, _written): (String, i64) = channel.receive()?;
    if tag != "done" {
        return Err(protocol(id, &tag));
    }
    channel.waitclose(None)?;
    report.elapsed = started.elapsed();
    Ok(report)
}

fn protocol(gateway: &str, tag: &str) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("rsync: gateway {gateway}'s receiver answered {tag:?} out of turn"),
    ))
}

/// (contents, mtime_ns, permission bits) of a listed file, or None when it is gone or
/// no longer a regular file.
fn read_file(source: &Path, rel: &str) -> Option<(Vec<u8>, i64, u32)> {
    let path = rel.split('/').fold(source.to_path_buf(), |p, part| p.join(part));
    let meta = std::fs::symlink_metadata(&path).ok()?;
    if !meta.file_type().is_file() {
        return None;
    }
    let mut file = std::fs::File::open(&path).ok()?;
    let meta = file.metadata().ok()?;
    let mut data = Vec::with_capacity(meta.len() as usize);
    std::io::Read::read_to_end(&mut file, &mut data).ok()?;
    Some((data, meta.mtime() * 1_000_000_000 + meta.mtime_nsec(), meta.permissions().mode() & 0o7777))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_into_the_tree_are_found_under_either_root() {
        let roots = [PathBuf::from("/a/src"), PathBuf::from("/real/src")];
        assert_eq!(in_tree(Path::new("/a/src/x/y"), &roots).as_deref(), Some("x/y"));
        assert_eq!(in_tree(Path::new("/real/src"), &roots).as_deref(), Some(""));
        assert_eq!(in_tree(Path::new("/a/srcx"), &roots), None);
        assert_eq!(normalize(Path::new("/a/src/x/../y/./z")), PathBuf::from("/a/src/y/z"));
    }
}
