//! A socket server that is safe to run: `execnet serve`.
//!
//! It speaks execnet's socket-server contract (PROTOCOL.md section 5), so both our
//! hosts (`socket=HOST:PORT`) and the execnet package's `makegateway("socket=...")` can
//! use it: for each connection it reads one line, a Python string literal holding a
//! program, and runs that program in a **fresh Python process** with the connection
//! bound to the global `clientsock` and the peer's address to `address`.
//!
//! What it does for safety:
//!
//! - **Loopback by default.** [`Server::bind`] refuses an address that is not a loopback
//!   address unless an access token is configured ([`ServeConfig::token`]) or the
//!   operator asked for it explicitly ([`ServeConfig::insecure`]).
//! - **Access token.** With a token, a client must answer an HMAC-SHA256 challenge
//!   before any line is read ([`auth`] describes the exchange); the token never crosses
//!   the wire. Without a token the line protocol is exactly execnet's.
//! - **Unix socket** listeners are created with mode 0600 (in a private directory, then
//!   renamed into place, so they are never reachable with wider permissions).
//! - **Bounds.** The first line may be at most [`ServeConfig::max_line`] bytes and must
//!   arrive (with the token answer) within [`ServeConfig::first_line_timeout`] of the
//!   accept; at most [`ServeConfig::max_connections`] connections are handled at once,
//!   counting those being checked and those with a running worker. The line must look
//!   like a Python string literal and be UTF-8 before any process is started.
//! - **Refusals** are written to the client as `EXECNET-REFUSED <reason>` and logged
//!   (with `tracing`, level WARN) with the peer's address and the reason; the server
//!   keeps serving.
//! - **Processes.** The server reaps every worker it started (it polls them every 100 ms)
//!   and logs how each ended. Each worker runs in its own process group, so a Ctrl-C in
//!   the terminal reaches the server only. When the server stops ([`ServerHandle::stop`];
//!   the CLI maps SIGINT and SIGTERM to it) it stops accepting, drops connections still
//!   in their handshake, sends SIGTERM to each worker's process group, waits up to
//!   [`ServeConfig::grace`], sends SIGKILL to what is left and reaps everything: no
//!   worker outlives the server (unless the server itself is killed with SIGKILL; the
//!   workers then end when their hosts disconnect).
//!
//! How a worker is started: the server runs `PYTHON -c LAUNCHER FD HOST PORT` with the
//! connected socket inherited as file descriptor FD (its close-on-exec flag is cleared
//! in the child only) and the line on the child's stdin; stdout goes to /dev/null,
//! stderr is the server's. The launcher evaluates the line with `ast.literal_eval`,
//! runs it with globals `{"clientsock": socket, "address": (host, port)}` (for Unix
//! clients `address` is `""`), and exits when that program returns.
//!
//! ```no_run
//! # fn main() -> execnet::Result<()> {
//! use execnet::server::{ServeConfig, Server};
//! let server = Server::bind(ServeConfig { listen: vec!["127.0.0.1:0".into()], ..ServeConfig::default() })?;
//! println!("listening on socket={}", server.addresses()[0]);
//! let handle = server.handle();          // handle.stop() ends run() from another thread
//! server.run()?;
//! # Ok(()) }
//! ```

pub use crate::net::auth;

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sync::lock;
use crate::sys;
use crate::net::Stream;

/// The longest first line accepted, in bytes (our bootstrap line is about 60 KiB,
/// execnet's about 70 KiB).
pub const DEFAULT_MAX_LINE: usize = 1 << 20;

/// How long a client has, from the accept, to answer the token challenge and send its
/// first line.
pub const DEFAULT_FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections are handled at once (in their handshake or with a worker).
pub const DEFAULT_MAX_CONNECTIONS: usize = 32;

/// How long workers get to end after SIGTERM when the server stops, before SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);

/// Where the server listens when nothing else is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8888";

/// The shortest access token accepted, in bytes.
pub const MIN_TOKEN_LEN: usize = 16;

/// How often the accept loop wakes up to reap workers and look at the stop flag.
const TICK: Duration = Duration::from_millis(100);

const LAUNCHER: &str = include_str!("launcher.py");

/// Everything a [`Server`] needs to know.
#[derive(Clone)]
pub struct ServeConfig {
    /// TCP addresses to listen on, `HOST:PORT` or `[IPV6]:PORT` (port 0: any free port).
    pub listen: Vec<String>,
    /// A Unix socket to listen on (created with mode 0600; removed when the server ends).
    pub unix: Option<PathBuf>,
    /// The interpreter that runs the workers.
    pub python: String,
    /// Serve a single client: stop accepting once a worker has started, and return
    /// when it has ended.
    pub once: bool,
    /// The access token clients must prove they know (see [`auth`]); None: no handshake.
    pub token: Option<Vec<u8>>,
    /// Allow a non-loopback address without a token.
    pub insecure: bool,
    /// The longest first line, in bytes.
    pub max_line: usize,
    /// The time limit for the token answer and the first line, from the accept.
    pub first_line_timeout: Duration,
    /// How many connections are handled at once; more are refused.
    pub max_connections: usize,
    /// How long workers get after SIGTERM when the server stops.
    pub grace: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: vec![DEFAULT_LISTEN.to_string()],
            unix: None,
            python: crate::worker::DEFAULT_PYTHON.to_string(),
            once: false,
            token: None,
            insecure: false,
            max_line: DEFAULT_MAX_LINE,
            first_line_timeout: DEFAULT_FIRST_LINE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            grace: DEFAULT_GRACE,
        }
    }
}

impl std::fmt::Debug for ServeConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeConfig")
            .field("listen", &self.listen)
            .field("unix", &self.unix)
            .field("python", &self.python)
            .field("once", &self.once)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("insecure", &self.insecure)
            .field("max_line", &self.max_line)
            .field("first_line_timeout", &self.first_line_timeout)
            .field("max_connections", &self.max_connections)
            .field("grace", &self.grace)
            .finish()
    }
}

/// Reads a server's token file: it must be readable by its owner only, and hold at
/// least [`MIN_TOKEN_LEN`] bytes (surrounding whitespace is not part of the token).
pub fn load_token_file(path: &Path) -> Result<Vec<u8>> {
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::Io(io::Error::new(e.kind(), format!("cannot read the token file {}: {e}", path.display())))
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::misuse(format!(
            "the token file {} can be read by other users (mode {mode:04o}): run chmod 600 on it",
            path.display()
        )));
    }
    let token = auth::read_token_file(path)?;
    if token.len() < MIN_TOKEN_LEN {
        return Err(Error::misuse(format!(
            "the token in {} is {} bytes long: use at least {MIN_TOKEN_LEN} random bytes, for example \
             `head -c 32 /dev/urandom | base64 > FILE`",
            path.display(),
            token.len()
        )));
    }
    Ok(token)
}

fn invalid_input(msg: String) -> Error {
    Error::Io(io::Error::new(io::ErrorKind::InvalidInput, msg))
}

/// Counts and live workers, from [`ServerHandle::stats`] or [`Server::run`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections handed to a worker process.
    pub served: u64,
    /// Connections turned down (each one logged with its reason).
    pub refused: u64,
    /// Connections handled now (in their handshake or with a running worker).
    pub active: usize,
    /// Process ids of the workers running now.
    pub workers: Vec<u32>,
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    fn accept(&self) -> io::Result<(Stream, String)> {
        match self {
            Listener::Tcp(l) => {
                let (s, addr) = l.accept()?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), addr.to_string()))
            }
            Listener::Unix(l) => {
                let (s, _) = l.accept()?;
                let peer = unix_peer(&s);
                Ok((Stream::Unix(s), peer))
            }
        }
    }

    fn fd(&self) -> i32 {
        match self {
            Listener::Tcp(l) => l.as_raw_fd(),
            Listener::Unix(l) => l.as_raw_fd(),
        }
    }
}

/// "unix peer pid P uid U", from SO_PEERCRED.
fn unix_peer(s: &UnixStream) -> String {
    match sys::peer_credentials(s.as_raw_fd()) {
        Some((pid, uid)) => format!("unix peer pid {pid} uid {uid}"),
        None => "unix peer".to_string(),
    }
}

struct Worker {
    child: Child,
    peer: String,
    started: Instant,
}

struct Workers {
    list: Vec<Worker>,
    /// Set when the server stops: no more workers are started.
    stopping: bool,
}

struct Shared {
    config: ServeConfig,
    stop: Arc<AtomicBool>,
    active: AtomicUsize,
    accepted: AtomicU64,
    served: AtomicU64,
    refused: AtomicU64,
    workers: Mutex<Workers>,
    /// Connections in their handshake, so that stopping can cut them short.
    inflight: Mutex<HashMap<u64, Stream>>,
    next_conn: AtomicU64,
    /// Connection threads still running.
    threads: AtomicUsize,
}

/// A handle to a running server, for another thread: stop it, look at it.
#[derive(Clone)]
pub struct ServerHandle(Arc<Shared>);

impl ServerHandle {
    /// Asks the server to stop; [`Server::run`] returns once its workers are ended.
    pub fn stop(&self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }

    /// The flag `stop` sets, for signal handlers (`signal_hook::flag::register`).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.0.stop.clone()
    }

    /// Counts so far and the workers running now.
    pub fn stats(&self) -> ServerStats {
        self.0.stats()
    }
}

/// A bound socket server; [`Server::run`] serves until stopped.
pub struct Server {
    listeners: Vec<Listener>,
    addresses: Vec<String>,
    shared: Arc<Shared>,
    unix_path: Option<UnixPathGuard>,
}

/// Removes the Unix socket file when the server ends.
struct UnixPathGuard(PathBuf);

impl Drop for UnixPathGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Server {
    /// Checks the configuration and binds every listener (see the module docs for the
    /// rules on non-loopback addresses).
    pub fn bind(config: ServeConfig) -> Result<Server> {
        if config.listen.is_empty() && config.unix.is_none() {
            return Err(Error::misuse("nothing to listen on: give a TCP address or a Unix socket path"));
        }
        if config.max_connections == 0 {
            return Err(Error::misuse("the connection limit must be at least 1"));
        }
        if config.token.as_ref().is_some_and(|t| t.is_empty()) {
            return Err(Error::misuse("the access token is empty"));
        }
        let mut listeners = Vec::new();
        let mut addresses = Vec::new();
        for spec in &config.listen {
            let addrs = resolve_listen(spec)?;
            check_exposure(spec, &addrs, &config)?;
            let l = TcpListener::bind(&addrs[..])
                .map_err(|e| Error::Io(io::Error::new(e.kind(), format!("cannot listen on {spec}: {e}"))))?;
            let local = l.local_addr()?;
            addresses.push(local.to_string());
            listeners.push(Listener::Tcp(l));
        }
        let mut unix_path = None;
        if let Some(path) = &config.unix {
            let l = bind_unix_private(path)?;
            unix_path = Some(UnixPathGuard(path.clone()));
            addresses.push(format!("unix:{}", path.display()));
            listeners.push(Listener::Unix(l));
        }
        for l in &listeners {
            match l {
                Listener::Tcp(t) => t.set_nonblocking(true)?,
                Listener::Unix(u) => u.set_nonblocking(true)?,
            }
        }
        let shared = Arc::new(Shared {
            config,
            stop: Arc::new(AtomicBool::new(false)),
            active: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            served: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            workers: Mutex::new(Workers { list: Vec::new(), stopping: false }),
            inflight: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            threads: AtomicUsize::new(0),
        });
        Ok(Server { listeners, addresses, shared, unix_path })
    }

    /// The addresses listened on, as a `socket=` value takes them: `127.0.0.1:40123`,
    /// `[::1]:40123`, `unix:/path`.
    pub fn addresses(&self) -> Vec<String> {
        self.addresses.clone()
    }

    /// A handle to stop the server from another thread or a signal handler.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle(self.shared.clone())
    }

    /// Serves until stopped (or, with `once`, until the one worker has ended), then ends
    /// every worker and returns the final counts.
    pub fn run(mut self) -> Result<ServerStats> {
        let shared = self.shared.clone();
        for a in &self.addresses {
            tracing::info!("listening on {a}");
        }
        let mut pollfds: Vec<libc::pollfd> =
            self.listeners.iter().map(|l| libc::pollfd { fd: l.fd(), events: libc::POLLIN, revents: 0 }).collect();
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                break;
            }
            if shared.config.once && shared.served.load(Ordering::SeqCst) > 0 {
                break;
            }
            match sys::poll(&mut pollfds, TICK.as_millis() as i32) {
                Err(e) if e.kind() != io::ErrorKind::Interrupted => {
                    tracing::error!("poll failed: {e}");
                    thread::sleep(TICK);
                }
                Ok(n) if n > 0 => {
                    for (i, pfd) in pollfds.iter_mut().enumerate() {
                        if pfd.revents != 0 {
                            pfd.revents = 0;
                            self.accept_all(i);
                        }
                    }
                }
                _ => {}
            }
            shared.reap();
        }
        // Stop listening: new connections are refused by the operating system from now.
        self.listeners.clear();
        self.unix_path.take();
        if shared.config.once && !shared.stop.load(Ordering::SeqCst) {
            tracing::info!("served one connection (--once): waiting for its worker to end");
            while (shared.active.load(Ordering::SeqCst) > 0 || shared.threads.load(Ordering::SeqCst) > 0)
                && !shared.stop.load(Ordering::SeqCst)
            {
                thread::sleep(TICK / 2);
                shared.reap();
            }
        }
        shared.shut_down();
        let stats = shared.stats();
        tracing::info!(
            "stopped: {} connections accepted, {} served, {} refused",
            stats.accepted,
            stats.served,
            stats.refused
        );
        Ok(stats)
    }

    fn accept_all(&self, index: usize) {
        let shared = &self.shared;
        loop {
            let (stream, peer) = match self.listeners[index].accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors and the like: log, and try again later.
                    tracing::error!("accept failed: {e}");
                    return;
                }
            };
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            if let Err(e) = stream.set_nonblocking(false) {
                tracing::warn!("dropped {peer}: {e}");
                continue;
            }
            let limit = shared.config.max_connections;
            if shared.active.load(Ordering::SeqCst) >= limit {
                shared.refuse_quickly(&stream, &peer, &format!("too many connections (the limit is {limit})"));
                continue;
            }
            shared.active.fetch_add(1, Ordering::SeqCst);
            shared.threads.fetch_add(1, Ordering::SeqCst);
            let for_thread = shared.clone();
            let peer_for_thread = peer.clone();
            let spawned =
                thread::Builder::new().name("execnet-serve-conn".into()).stack_size(256 * 1024).spawn(move || {
                    for_thread.handle_connection(stream, peer_for_thread);
                    for_thread.threads.fetch_sub(1, Ordering::SeqCst);
                });
            if let Err(e) = spawned {
                shared.threads.fetch_sub(1, Ordering::SeqCst);
                shared.active.fetch_sub(1, Ordering::SeqCst);
                shared.refused.fetch_add(1, Ordering::SeqCst);
                tracing::warn!("refused {peer}: cannot start a thread for it: {e}");
            }
        }
    }
}

/// Resolves a listen address (`HOST:PORT` or `[IPV6]:PORT`).
fn resolve_listen(spec: &str) -> Result<Vec<SocketAddr>> {
    crate::net::split_host_port(spec)
        .map_err(|reason| Error::misuse(format!("cannot listen on {spec}: {reason}")))?;
    let addrs: Vec<SocketAddr> = spec
        .to_socket_addrs()
        .map_err(|e| invalid_input(format!("cannot listen on {spec}: cannot resolve it ({e})")))?
        .collect();
    if addrs.is_empty() {
        return Err(invalid_input(format!("cannot listen on {spec}: it resolves to no address")));
    }
    Ok(addrs)
}

/// The rule: a non-loopback address needs a token or an explicit `insecure`.
fn check_exposure(spec: &str, addrs: &[SocketAddr], config: &ServeConfig) -> Result<()> {
    let Some(open) = addrs.iter().find(|a| !a.ip().is_loopback()) else { return Ok(()) };
    if config.token.is_some() {
        return Ok(());
    }
    if config.insecure {
        tracing::warn!(
            "listening on {spec} ({open}), which other machines may reach, WITHOUT an access token \
             (insecure): anyone who can connect can run code as this user"
        );
        return Ok(());
    }
    Err(Error::misuse(format!(
        "refusing to listen on {spec} ({open}) without an access token: it is not a loopback \
         address, and anyone who can connect to it could run code as this user. Configure a token \
         (execnet serve --token-file FILE; clients add //token_file=FILE to their spec), or, on a \
         trusted network only, pass --insecure"
    )))
}

/// Binds a Unix socket at `path` with mode 0600: bound inside a fresh directory only we
/// can enter, restricted, then renamed into place.
fn bind_unix_private(path: &Path) -> Result<UnixListener> {
    let fail = |what: String, e: io::Error| Error::Io(io::Error::new(e.kind(), format!("{what}: {e}")));
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        let stale = meta.file_type().is_socket()
            && matches!(UnixStream::connect(path), Err(e) if e.kind() == io::ErrorKind::ConnectionRefused);
        if !stale {
            return Err(Error::Io(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("cannot listen on {}: it exists (remove it, or choose another path)", path.display()),
            )));
        }
        std::fs::remove_file(path)
            .map_err(|e| fail(format!("cannot remove the stale socket {}", path.display()), e))?;
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let private =
        parent.join(format!(".execnet-serve-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|e| fail(format!("cannot create {}", private.display()), e))?;
    let tmp = private.join("s");
    let result = (|| {
        let l = UnixListener::bind(&tmp).map_err(|e| fail(format!("cannot listen on {}", path.display()), e))?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail(format!("cannot restrict {}", tmp.display()), e))?;
        std::fs::rename(&tmp, path).map_err(|e| fail(format!("cannot move the socket to {}", path.display()), e))?;
        Ok(l)
    })();
    let _ = std::fs::remove_file(&tmp);
    let _ = std::fs::remove_dir(&private);
    result
}

impl Shared {
    fn stats(&self) -> ServerStats {
        let workers = lock(&self.workers).list.iter().map(|w| w.child.id()).collect();
        ServerStats {
            accepted: self.accepted.load(Ordering::SeqCst),
            served: self.served.load(Ordering::SeqCst),
            refused: self.refused.load(Ordering::SeqCst),
            active: self.active.load(Ordering::SeqCst),
            workers,
        }
    }

    /// A refusal from the accept loop: say why and close, without waiting for anything.
    fn refuse_quickly(&self, stream: &Stream, peer: &str, reason: &str) {
        self.refused.fetch_add(1, Ordering::SeqCst);
        tracing::warn!("refused {peer}: {reason}");
        let _ = stream.set_nonblocking(true);
        let _ = (&*stream).write_all(auth::refusal_line(reason).as_bytes());
        let _ = stream.shutdown(Shutdown::Write);
        // Read what has already arrived, so that closing does not reset the connection
        // (which could discard the refusal before the client reads it).
        let mut buf = [0u8; 16 * 1024];
        let mut budget = 1 << 20;
        while budget > 0 {
            match (&*stream).read(&mut buf) {
                Ok(n) if n > 0 => budget -= n.min(budget),
                _ => break,
            }
        }
    }

    /// A refusal from a connection thread: say why, then read (and drop) what the client
    /// still sends for up to a second, so that it can read the reason before the close.
    fn refuse_lingering(&self, stream: &Stream, peer: &str, reason: &str) {
        self.refused.fetch_add(1, Ordering::SeqCst);
        tracing::warn!("refused {peer}: {reason}");
        let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
        let _ = (&*stream).write_all(auth::refusal_line(reason).as_bytes());
        let _ = stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut buf = vec![0u8; 64 * 1024];
        let mut budget: usize = 64 << 20;
        loop {
            let now = Instant::now();
            if now >= deadline || budget == 0 || self.stop.load(Ordering::SeqCst) {
                break;
            }
            let _ = stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))));
            match (&*stream).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => budget = budget.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    }

    fn handle_connection(self: &Arc<Self>, stream: Stream, peer: String) {
        let id = self.next_conn.fetch_add(1, Ordering::SeqCst);
        if let Ok(clone) = stream.try_clone() {
            lock(&self.inflight).insert(id, clone);
        }
        let outcome = self.handshake(&stream).and_then(|line| self.start_worker(&stream, &peer, &line));
        lock(&self.inflight).remove(&id);
        match outcome {
            Ok(pid) => tracing::info!("serving {peer}: worker pid {pid}"),
            Err(reason) => {
                self.refuse_lingering(&stream, &peer, &reason);
                self.active.fetch_sub(1, Ordering::SeqCst);
            }
        }
        // Our copy of the socket closes here; the worker has its own.
    }

    /// The token check (when configured) and the first line, within the time limit.
    fn handshake(&self, stream: &Stream) -> std::result::Result<Vec<u8>, String> {
        let config = &self.config;
        let deadline = Instant::now() + config.first_line_timeout;
        let _ = stream.set_write_timeout(Some(config.first_line_timeout));
        if let Some(token) = &config.token {
            let nonce = auth::new_nonce().map_err(|e| e.to_string())?;
            (&*stream)
                .write_all(auth::challenge_line(&nonce).as_bytes())
                .map_err(|e| format!("sending the token challenge failed: {e}"))?;
            let answer = read_line(stream, auth::MAX_HANDSHAKE_LINE, deadline, "the answer to the token challenge")?;
            if !auth::check_answer(token, &nonce, &answer) {
                return Err("authentication failed: wrong answer to the token challenge".into());
            }
            (&*stream)
                .write_all(auth::ACCEPTED.as_bytes())
                .map_err(|e| format!("acknowledging the token answer failed: {e}"))?;
        }
        let line = read_line(stream, config.max_line, deadline, "the first line")?;
        check_line(&line)?;
        Ok(line)
    }

    /// Starts the worker process for a checked connection; returns its pid.
    fn start_worker(&self, stream: &Stream, peer: &str, line: &[u8]) -> std::result::Result<u32, String> {
        let fd = stream.as_raw_fd();
        let (host, port) = match stream {
            Stream::Tcp(s) => match s.peer_addr() {
                Ok(a) => (a.ip().to_string(), a.port().to_string()),
                Err(_) => (String::new(), "0".to_string()),
            },
            Stream::Unix(_) => (String::new(), String::new()),
        };
        let mut cmd = Command::new(&self.config.python);
        cmd.arg("-c").arg(LAUNCHER).arg(fd.to_string()).arg(host).arg(port);
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::inherit());
        // A process group of its own: terminal signals go to the server only, and
        // stopping the server can signal the worker with its children.
        sys::own_group_inheriting(&mut cmd, fd);
        let mut stdin = {
            let mut workers = lock(&self.workers);
            if workers.stopping || self.stop.load(Ordering::SeqCst) {
                return Err("the server is shutting down".into());
            }
            if self.config.once && self.served.load(Ordering::SeqCst) > 0 {
                return Err("the server serves one connection only (--once), and it has".into());
            }
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("cannot start the worker interpreter {:?}: {e}", self.config.python))?;
            let stdin = child.stdin.take().expect("piped stdin");
            let pid = child.id();
            workers.list.push(Worker { child, peer: peer.to_string(), started: Instant::now() });
            self.served.fetch_add(1, Ordering::SeqCst);
            (stdin, pid)
        };
        if let Err(e) = stdin.0.write_all(line).and_then(|_| stdin.0.write_all(b"\n")) {
            // The interpreter ended early; its exit is logged when it is reaped.
            tracing::warn!("{peer}: passing the first line to worker {} failed: {e}", stdin.1);
        }
        let pid = stdin.1;
        drop(stdin);
        Ok(pid)
    }

    /// Reaps the workers that have ended.
    fn reap(&self) {
        let mut workers = lock(&self.workers);
        let mut i = 0;
        while i < workers.list.len() {
            match workers.list[i].child.try_wait() {
                Ok(None) => i += 1,
                done => {
                    let w = workers.list.swap_remove(i);
                    let how = match done {
                        Ok(Some(status)) => status.to_string(),
                        _ => "an unknown status".to_string(),
                    };
                    tracing::info!(
                        "worker {} for {} ended after {:.1?}: {how}",
                        w.child.id(),
                        w.peer,
                        w.started.elapsed()
                    );
                    self.active.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// Stops for good: no new workers, handshakes cut short, workers terminated and reaped.
    fn shut_down(&self) {
        lock(&self.workers).stopping = true;
        for stream in lock(&self.inflight).values() {
            let _ = stream.shutdown(Shutdown::Both);
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        while self.threads.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        self.reap();
        let count = self.signal_workers(libc::SIGTERM);
        if count > 0 {
            tracing::info!("stopping {count} worker(s): SIGTERM, SIGKILL after {:?}", self.config.grace);
        }
        let deadline = Instant::now() + self.config.grace;
        loop {
            self.reap();
            if lock(&self.workers).list.is_empty() || Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        if self.signal_workers(libc::SIGKILL) > 0 {
            let mut workers = lock(&self.workers);
            for w in workers.list.iter_mut() {
                let status = w.child.wait();
                tracing::info!("worker {} for {} killed: {status:?}", w.child.id(), w.peer);
                self.active.fetch_sub(1, Ordering::SeqCst);
            }
            workers.list.clear();
        }
    }

    /// Sends `sig` to each running worker's process group; returns how many there were.
    fn signal_workers(&self, sig: i32) -> usize {
        let workers = lock(&self.workers);
        for w in &workers.list {
            let pid = w.child.id() as i32;
            // Under the lock and before reaping, the pid cannot have been reused.
            if sys::kill(-pid, sig).is_err() {
                let _ = sys::kill(pid, sig);
            }
        }
        workers.list.len()
    }
}

/// Reads one line (up to and with its `\n`) of at most `max` bytes by `deadline`,
/// consuming nothing after it: later bytes belong to the worker. Returns it without
/// the newline.
fn read_line(stream: &Stream, max: usize, deadline: Instant, what: &str) -> std::result::Result<Vec<u8>, String> {
    let fd = stream.as_raw_fd();
    let mut line = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Err(format!("{what} did not arrive within the time limit ({} bytes received)", line.len()));
        }
        let _ = stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))));
        // Look first, then take exactly up to the newline.
        let n = match sys::recv_peek(fd, &mut buf, false) {
            Ok(n) => n,
            Err(e) => match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => continue, // the deadline decides
                _ => return Err(format!("reading {what} failed: {e}")),
            },
        };
        if n == 0 {
            return Err(format!(
                "the client closed the connection before sending {what} ({} bytes received)",
                line.len()
            ));
        }
        let (take, complete) = match buf[..n].iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (n, false),
        };
        let body = line.len() + take - usize::from(complete);
        if body > max {
            return Err(format!("{what} is longer than the limit of {max} bytes"));
        }
        let mut got = 0;
        while got < take {
            match (&*stream).read(&mut buf[got..take]) {
                Ok(0) => return Err(format!("the client closed the connection during {what}")),
                Ok(k) => got += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading {what} failed: {e}")),
            }
        }
        line.extend_from_slice(&buf[..take]);
        if complete {
            line.pop();
            return Ok(line);
        }
    }
}

/// The first line must be UTF-8 and shaped like a Python string literal; anything
/// else is refused before a process is started.
fn check_line(line: &[u8]) -> std::result::Result<(), String> {
    let Ok(text) = std::str::from_utf8(line) else {
        return Err("the first line is not UTF-8 text (is the client an execnet host?)".into());
    };
    let text = text.trim_end();
    if text.is_empty() {
        return Err("the first line is empty (is the client an execnet host?)".into());
    }
    if !looks_like_string_literal(text) {
        let shown: String = text.chars().take(40).collect();
        return Err(format!(
            "the first line is not a Python string literal: {shown:?}{} (is the client an execnet host?)",
            if text.chars().count() > 40 { "..." } else { "" }
        ));
    }
    Ok(())
}

fn looks_like_string_literal(text: &str) -> bool {
    let prefix = text.chars().take_while(|c| "rRuUbB".contains(*c)).count();
    if prefix > 2 {
        return false;
    }
    let body = &text[prefix..];
    ["'''", "\"\"\"", "'", "\""].iter().any(|q| body.len() >= 2 * q.len() && body.starts_with(q) && body.ends_with(q))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_shapes() {
        for ok in ["'x'", "\"x\"", "b'x'", "rb'x'", "'''a'''", "u\"\"", "'a' + 'b'"] {
            assert!(looks_like_string_literal(ok), "{ok}");
        }
        for bad in ["x", "'", "\"", "print(1)", "bru'x'", "1", "'x", "GET / HTTP/1.1"] {
            assert!(!looks_like_string_literal(bad), "{bad}");
        }
        assert!(check_line(b"\xff'").is_err());
        assert!(check_line(b"  ").is_err());
        assert!(check_line(b"'import sys'\r").is_ok());
    }

    #[test]
    fn non_loopback_needs_a_token_or_insecure() {
        let addrs: Vec<SocketAddr> = vec!["0.0.0.0:0".parse().unwrap()];
        let mut config = ServeConfig::default();
        let e = check_exposure("0.0.0.0:0", &addrs, &config).unwrap_err().to_string();
        assert!(e.contains("refusing to listen") && e.contains("--token-file"), "{e}");
        config.insecure = true;
        assert!(check_exposure("0.0.0.0:0", &addrs, &config).is_ok());
        config.insecure = false;
        config.token = Some(b"0123456789abcdef".to_vec());
        assert!(check_exposure("0.0.0.0:0", &addrs, &config).is_ok());
        let lo: Vec<SocketAddr> = vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()];
        assert!(check_exposure("localhost:0", &lo, &ServeConfig::default()).is_ok());
    }
}
