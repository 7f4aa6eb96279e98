//! `ssh=HOSTARGS`: a worker started by the system OpenSSH client. STUB.

use super::Connection;
use crate::error::Result;
use crate::worker::WorkerConfig;
use crate::xspec::XSpec;

/// Starts `ssh HOSTARGS PYTHON -c BOOTSTRAP` for `spec`.
pub(crate) fn spawn(spec: &XSpec, config: &WorkerConfig) -> Result<Connection> {
    let _ = config;
    Err(spec.invalid("ssh gateways are not supported yet"))
}
