//! execnet-rs: run Python code in other processes, local or remote, with nothing installed there.
//!
//! SKELETON: being filled in.

pub mod error;
pub mod gateway;
pub mod wire;

pub use error::{Error, LostInfo, Result};
pub use gateway::channel::Channel;
pub use wire::value::{Complex, Dict, Int, Value};
pub use wire::{dumps, loads};
