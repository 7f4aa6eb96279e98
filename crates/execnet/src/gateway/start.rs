//! How gateways are made: from a spec to a transport's connection (see
//! [`crate::transport`]), then to a running gateway with its reader thread, its stderr
//! forwarding and its place in the registry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use super::exit::Process;
use super::reader::Reader;
use super::table::ChannelTable;
use super::writer::Writer;
use super::{imports, registry, stderr, Gateway, GatewayHandle, GatewayInner, DEFAULT_QUEUE_LIMIT};
use crate::error::Result;
use crate::sync::Flag;
use crate::transport::{self, Connection};
use crate::wire::frame;
use crate::worker::{WorkerConfig, WorkerSource};
use crate::xspec::{Transport, XSpec};

static NEXT_UID: AtomicU64 = AtomicU64::new(1);

impl Gateway {
    /// Starts a gateway for `spec` with the given id (see [`crate::makegateway`] for the
    /// usual entry point, which also picks an id). A spec with `via=` needs the gateway
    /// it names: use [`Gateway::start_via`] or a [`crate::Group`].
    pub fn start(spec: &XSpec, id: &str) -> Result<Gateway> {
        if let Some(via) = spec.via() {
            return Err(spec
                .invalid(format!("via={via} names a gateway of a group: make this gateway with Group::makegateway")));
        }
        Gateway::start_inner(spec, id, None, &WorkerSource::Builtin)
    }

    /// Starts a gateway for `spec` whose connection is relayed by the worker of `via`.
    pub fn start_via(spec: &XSpec, id: &str, via: &Gateway) -> Result<Gateway> {
        Gateway::start_inner(spec, id, Some(via), &WorkerSource::Builtin)
    }

    /// Like [`Gateway::start`] (and [`Gateway::start_via`] when `via` is given), shipping
    /// `worker` instead of our own worker: for example execnet's, to check this host
    /// against the reference implementation.
    pub fn start_with_worker(spec: &XSpec, id: &str, via: Option<&Gateway>, worker: &WorkerSource) -> Result<Gateway> {
        Gateway::start_inner(spec, id, via, worker)
    }

    fn start_inner(spec: &XSpec, id: &str, via: Option<&Gateway>, worker: &WorkerSource) -> Result<Gateway> {
        let kind = spec.transport()?;
        spec.queue_limit()?;
        spec.max_message()?;
        let config = WorkerConfig {
            id: id.to_string(),
            execmodel: spec.execmodel()?,
            chdir: spec.chdir().map(str::to_string),
            nice: spec.nice()?,
            env: spec.env().clone(),
            worker: worker.clone(),
        };
        let conn = match (via, kind) {
            (Some(via), _) => transport::via::connect(via, spec, &config)?,
            (None, Transport::Popen) => transport::popen::spawn(spec, &config)?,
            (None, Transport::Ssh(_)) => transport::ssh::spawn(spec, &config)?,
            (None, Transport::Socket(_)) => transport::socket::connect(spec, &config)?,
            (
                None,
                Transport::Exec(_)
                | Transport::Docker(_)
                | Transport::Podman(_)
                | Transport::Kubectl(_)
                | Transport::Sudo(_),
            ) => transport::exec::spawn(spec, &config)?,
        };
        let gw = Gateway::from_connection(spec.with_id(id), id, conn);
        if let Some(forwarding) = imports::ImportForwarding::from_spec(spec)? {
            gw.forward_imports(forwarding)?;
        }
        Ok(gw)
    }

    /// A popen gateway on this machine with the default interpreter.
    pub fn popen() -> Result<Gateway> {
        crate::makegateway("popen")
    }

    /// An ssh gateway to `host` (anything `ssh=` accepts, such as `user@host` or
    /// `-p 2222 host`) with the default remote `python3`, in the default group.
    ///
    /// ```no_run
    /// # fn main() -> execnet::Result<()> {
    /// let gw = execnet::Gateway::ssh("build@example.org")?;
    /// println!("{:?}", gw.rinfo()?);
    /// # Ok(()) }
    /// ```
    pub fn ssh(host: &str) -> Result<Gateway> {
        crate::makegateway(format!("ssh={host}"))
    }

    /// A gateway to the socket server at `addr` (`HOST:PORT`, `[IPV6]:PORT` or
    /// `unix:PATH`), in the default group; the same as
    /// `makegateway("socket=ADDR")`.
    pub fn socket(addr: &str) -> Result<Gateway> {
        crate::makegateway(format!("socket={addr}"))
    }

    pub(super) fn from_connection(spec: XSpec, id: &str, conn: Connection) -> Gateway {
        let Connection {
            reader,
            reader_fd,
            writer,
            child,
            stderr,
            stderr_fd,
            bootstrap,
            program,
            force_close,
            explain_loss,
        } = conn;
        let max_message = spec.max_message().ok().flatten().unwrap_or(frame::DEFAULT_MAX_MESSAGE);
        let queue_limit = spec.queue_limit().ok().flatten().unwrap_or(DEFAULT_QUEUE_LIMIT);
        let interruptible = spec.is_popen() && spec.via().is_none();
        let inner = Arc::new(GatewayInner {
            uid: NEXT_UID.fetch_add(1, Ordering::Relaxed),
            id: id.to_string(),
            spec,
            program,
            explain_loss,
            writer: Writer::new(writer),
            reader: Reader::new(reader_fd, max_message),
            table: ChannelTable::new(queue_limit),
            process: Process::new(child, force_close, interruptible),
            lost: OnceLock::new(),
            stderr_tail: Arc::new(stderr::StderrTail::default()),
            done: Flag::default(),
            started: Flag::default(),
        });
        let reader = match stderr {
            Some(err) => stderr::forward(&inner.id, &inner.stderr_tail, err, stderr_fd, reader),
            None => {
                inner.stderr_tail.finish();
                reader
            }
        };
        Reader::spawn(&inner, reader, bootstrap);
        let handle = Arc::new(GatewayHandle { inner: inner.clone() });
        registry().insert(inner.uid, Arc::downgrade(&handle));
        Gateway { inner, handle }
    }
}
