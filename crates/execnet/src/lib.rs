//! execnet-rs: run Python code in other processes, local or remote, with nothing
//! installed there but a Python interpreter.
//!
//! A [`Gateway`] starts a Python process (`popen`, a subprocess) or connects to one
//! (`socket=HOST:PORT`, a socket server such as [`server`]), ships it a small worker, and
//! runs source code there with [`Gateway::remote_exec`]. The code and the
//! host talk over a [`Channel`]: `send` any `Serialize` value, `receive` any
//! `DeserializeOwned` one; a remote exception comes back as [`Error::Remote`] with the
//! remote traceback. [`Group`] and [`MultiChannel`] handle many gateways at once.
//!
//! ```
//! # fn main() -> execnet::Result<()> {
//! let gw = execnet::makegateway("popen")?;
//! let ch = gw.remote_exec(r#"
//!     import os
//!     for name in channel:
//!         channel.send(os.path.exists(name))
//! "#)?;
//! ch.send("/etc/hostname")?;
//! let exists: bool = ch.receive()?;
//! ch.close()?;
//! # Ok(()) }
//! ```
//!
//! The crate is laid out as the architecture: [`wire`] (frames and the object format),
//! [`transport`] (how bytes reach a worker), [`gateway`] (gateways and channels),
//! [`worker`] (the Python side and its bootstrap), [`multi`] (groups and multi-channels),
//! [`xspec`] (gateway specifications), [`server`] (the socket server of `execnet serve`),
//! [`rsync`] (directory sync to the workers).

#![warn(missing_docs)]

pub mod error;
pub mod gateway;
pub mod multi;
mod net;
pub mod rsync;
pub mod server;
mod sync;
mod sys;
pub mod transport;
pub mod wire;
pub mod worker;
pub mod xspec;

pub use error::{Error, ExitStatus, LostInfo, Result};
pub use gateway::channel::{Channel, ChannelReader, ChannelWriter};
pub use gateway::imports::{ImportForwarding, ImportServer, ImportStats};
pub use gateway::output::{Output, OutputCapture, OutputStream};
pub use gateway::{Gateway, RInfo, RemoteStatus, Source, WeakGateway, DEFAULT_EXIT_TIMEOUT};
pub use multi::{default_group, makegateway, Group, MultiChannel, ReceiveQueue};
pub use rsync::{Progress, RSync, TargetOptions, TargetReport};
pub use server::{ServeConfig, Server, ServerHandle, ServerStats};
pub use wire::value::{from_value, to_value, Complex, Dict, FrozenSet, Int, Set, Tuple, Value};
pub use wire::{dumps, loads};
pub use worker::WorkerSource;
pub use xspec::{ExecModel, ToXSpec, Transport, XSpec};

/// The README's Rust snippets (copied by build.rs), compiled and run by `cargo test --doc`.
/// A failure reads `ReadmeSnippets (line N)`: line N of `$OUT_DIR/readme_snippets.md`,
/// where each snippet is headed by the README line it comes from.
#[cfg(doctest)]
#[doc = include_str!(concat!(env!("OUT_DIR"), "/readme_snippets.md"))]
pub struct ReadmeSnippets;
