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
//!
//! This file has the entry point ([`Gateway::forward_imports`]) and its handle and
//! counters; config.rs has the configuration ([`ImportForwarding`]), resolver.rs the
//! answers to the worker's requests and the module search, prefetch.rs the modules sent
//! ahead, names.rs the name checks, and imports.py is the worker's finder.

mod config;
mod names;
mod prefetch;
mod resolver;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use self::config::ImportForwarding;
use self::resolver::Resolver;
use crate::error::{Error, Result};
use crate::gateway::{Gateway, Source};
use crate::sync::lock;
use crate::wire::value::Value;
use crate::Channel;

/// The script run by [`Gateway::forward_imports`].
const IMPORTS_SOURCE: &str = include_str!("imports.py");

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
