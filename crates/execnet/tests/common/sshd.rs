//! A real OpenSSH server for the ssh tests, private to one test binary.
//!
//! [`sshd()`] starts Debian's `/usr/sbin/sshd` once per test binary, listening on
//! 127.0.0.1 at a free port, with its own host key, config and authorized_keys in a
//! temporary directory, and a client key and client config next to them. Tests log in
//! as the current user (root in CI: the config permits key logins for root). The server
//! is stopped, and the directory removed, when the test binary exits.
//!
//! Without `/usr/sbin/sshd`, the tests that need it skip loudly, except under CI=true,
//! where that is a failure (scripts/test.sh installs openssh-server).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";

/// The alias the client config defines for the test server.
pub const HOST_ALIAS: &str = "execnet-test";

/// A running test sshd and the files to reach it.
pub struct Sshd {
    pub dir: PathBuf,
    pub port: u16,
    pub user: String,
    /// The client key that the server accepts.
    pub key: PathBuf,
    /// A client key that the server does not know.
    pub other_key: PathBuf,
    pub known_hosts: PathBuf,
    /// A client config with `Host execnet-test` (all settings for the server).
    pub client_config: PathBuf,
    pid: i32,
}

impl Sshd {
    /// A spec through the client config: `ssh=execnet-test//ssh_config=FILE` + extra items.
    pub fn spec(&self, extra: &str) -> String {
        let mut spec = format!("ssh={HOST_ALIAS}//ssh_config={}", self.client_config.display());
        if !extra.is_empty() {
            spec.push_str("//");
            spec.push_str(extra);
        }
        spec
    }

    /// Host arguments with every setting on the command line (no config file).
    pub fn host_args(&self, port: u16, key: &Path) -> String {
        format!(
            "-p {port} -i {} -o IdentitiesOnly=yes -o UserKnownHostsFile={} \
             -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes \
             -o LogLevel=ERROR {}@127.0.0.1",
            key.display(),
            self.known_hosts.display(),
            self.user
        )
    }

    /// `ssh=HOSTARGS` with the accepted key + extra items.
    pub fn direct_spec(&self, extra: &str) -> String {
        let mut spec = format!("ssh={}", self.host_args(self.port, &self.key));
        if !extra.is_empty() {
            spec.push_str("//");
            spec.push_str(extra);
        }
        spec
    }

    /// Whether the server's main process is still running.
    pub fn alive(&self) -> bool {
        // SAFETY: signal 0 only checks that the process exists.
        unsafe { libc::kill(self.pid, 0) == 0 }
    }
}

fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// The shared test server, started on first use; None (after a loud notice) when
/// sshd is not installed and this is not CI.
pub fn sshd() -> Option<&'static Sshd> {
    static SERVER: OnceLock<Option<Sshd>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            if !Path::new(SSHD).exists() {
                if in_ci() {
                    panic!("{SSHD} is required under CI (scripts/test.sh installs openssh-server)");
                }
                eprintln!(
                    "\n!!! SKIPPED: ssh tests need {SSHD} (apt-get install openssh-server); \
                     run scripts/test.sh for the full suite\n"
                );
                return None;
            }
            Some(start())
        })
        .as_ref()
}

static SERVER_PID: AtomicI32 = AtomicI32::new(0);
static SERVER_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

extern "C" fn stop_at_exit() {
    let pid = SERVER_PID.swap(0, Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: ending and reaping the sshd child this process started.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    if let Ok(mut dir) = SERVER_DIR.lock() {
        if let Some(dir) = dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "execnet-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("running ssh-keygen (openssh-client)");
    assert!(out.status.success(), "ssh-keygen failed: {}", String::from_utf8_lossy(&out.stderr));
}

fn current_user() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; copied at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        assert!(!pw.is_null(), "no passwd entry for the current user");
        std::ffi::CStr::from_ptr((*pw).pw_name).to_string_lossy().into_owned()
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether what listens on 127.0.0.1:`port` is an SSH server: it accepts and its first
/// bytes, within `timeout`, are the protocol banner `SSH-`.
pub fn speaks_ssh(port: u16, timeout: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut banner = [0u8; 4];
    stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-"
}

fn write(path: &Path, text: &str) {
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn start() -> Sshd {
    let dir = tempfile::Builder::new().prefix("execnet-sshd-").tempdir().unwrap().keep();
    *SERVER_DIR.lock().unwrap() = Some(dir.clone());
    let host_key = dir.join("host_key");
    let key = dir.join("client_key");
    let other_key = dir.join("other_key");
    for k in [&host_key, &key, &other_key] {
        keygen(k);
    }
    std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
    let user = current_user();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 && !Path::new("/run/sshd").exists() {
        // sshd running as root insists on its privilege separation directory.
        use std::os::unix::fs::DirBuilderExt;
        let _ = std::fs::DirBuilder::new().recursive(true).mode(0o755).create("/run/sshd");
    }

    let log_path = dir.join("sshd.log");
    let mut last_error = String::new();
    for _attempt in 0..5 {
        let port = free_port();
        let config = dir.join("sshd_config");
        write(
            &config,
            &format!(
                "ListenAddress 127.0.0.1\n\
                 Port {port}\n\
                 HostKey {host_key}\n\
                 AuthorizedKeysFile {authorized}\n\
                 PidFile none\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PermitRootLogin prohibit-password\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UseDNS no\n\
                 PrintMotd no\n\
                 PrintLastLog no\n\
                 MaxStartups 200\n\
                 MaxSessions 200\n\
                 LogLevel INFO\n",
                host_key = host_key.display(),
                authorized = dir.join("authorized_keys").display(),
            ),
        );
        let log = std::fs::File::create(&log_path).unwrap();
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting sshd");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut up = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            // Not only "something accepts": a port picked free may have been taken by
            // another listener meanwhile (sshd then fails to bind and exits), and a
            // probe may even connect to itself. Only sshd's banner says it is up.
            if speaks_ssh(port, Duration::from_secs(5)) {
                up = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !up {
            let _ = child.kill();
            let _ = child.wait();
            last_error = std::fs::read_to_string(&log_path).unwrap_or_default();
            continue; // the port may have been taken meanwhile: try another
        }
        let pid = child.id() as i32;
        std::mem::forget(child); // reaped by stop_at_exit
        SERVER_PID.store(pid, Ordering::SeqCst);
        // SAFETY: registering a plain extern "C" function with the C runtime.
        unsafe {
            libc::atexit(stop_at_exit);
        }

        let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
        let known_hosts = dir.join("known_hosts");
        write(&known_hosts, &format!("[127.0.0.1]:{port} {host_pub}"));
        let client_config = dir.join("ssh_config");
        write(
            &client_config,
            &format!(
                "Host {HOST_ALIAS}\n\
                 \x20 HostName 127.0.0.1\n\
                 \x20 Port {port}\n\
                 \x20 User {user}\n\
                 \x20 IdentityFile {key}\n\
                 \x20 IdentitiesOnly yes\n\
                 \x20 UserKnownHostsFile {known}\n\
                 \x20 GlobalKnownHostsFile /dev/null\n\
                 \x20 StrictHostKeyChecking yes\n\
                 \x20 BatchMode yes\n\
                 \x20 LogLevel ERROR\n",
                key = key.display(),
                known = known_hosts.display(),
            ),
        );
        return Sshd { dir, port, user, key, other_key, known_hosts, client_config, pid };
    }
    panic!("sshd did not start; its log:\n{last_error}");
}
