//! `socket=HOST:PORT`: a worker behind a socket server (PROTOCOL.md section 5). STUB.

use super::Connection;
use crate::error::Result;
use crate::worker::WorkerConfig;
use crate::xspec::XSpec;

/// Connects to the socket server named by `spec` and prepares the bootstrap.
pub(crate) fn connect(spec: &XSpec, config: &WorkerConfig) -> Result<Connection> {
    let _ = config;
    Err(spec.invalid("socket gateways are not supported yet"))
}
