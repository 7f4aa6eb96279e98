//! `via=ID`: a gateway whose bytes travel through another gateway's worker. STUB.

use super::Connection;
use crate::error::Result;
use crate::gateway::Gateway;
use crate::worker::WorkerConfig;
use crate::xspec::XSpec;

/// Starts the worker for `spec` from inside `via`'s worker and relays its bytes.
pub(crate) fn connect(via: &Gateway, spec: &XSpec, config: &WorkerConfig) -> Result<Connection> {
    let _ = (via, config);
    Err(spec.invalid("via= is not supported yet"))
}
