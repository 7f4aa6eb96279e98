//! A private OpenSSH server on loopback for the ssh rows, when no `--ssh` target is given.
//!
//! It runs Debian's `/usr/sbin/sshd` in the foreground (`-D`) as our child, on 127.0.0.1
//! at a free port, with a host key, a client key and configs made by `ssh-keygen` in a
//! temporary directory; the client logs in as the current user. Dropping it kills that
//! child (by its pid) and removes the directory. No system sshd is used or started.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SSHD: &str = "/usr/sbin/sshd";
/// The host alias the client config defines.
pub const HOST_ALIAS: &str = "execnet-bench";

pub struct TestSshd {
    dir: PathBuf,
    child: Child,
    /// What goes after `ssh=` in a spec: the alias and the client config.
    pub target: String,
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Starts the server, or says why it cannot.
pub fn start() -> Result<TestSshd, String> {
    if !std::path::Path::new(SSHD).exists() {
        return Err(format!("no {SSHD} to start a test sshd (Debian's openssh-server)"));
    }
    let dir = std::env::temp_dir().join(format!("execnet-bench-sshd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let d = |name: &str| dir.join(name).to_string_lossy().into_owned();
    for key in ["host_key", "client_key"] {
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f", &d(key)]))?;
    }
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| format!("{name}: {e}"));
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"));
    write("authorized_keys", read("client_key.pub")?)?;
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            let out = Command::new("id").arg("-un").output().ok()?;
            Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "root".into());
    write(
        "sshd_config",
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\nLogLevel ERROR\n",
            d("host_key"),
            d("authorized_keys")
        ),
    )?;
    write("known_hosts", format!("[127.0.0.1]:{port} {}", read("host_key.pub")?))?;
    write(
        "ssh_config",
        format!(
            "Host {HOST_ALIAS}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  IdentityFile {}\n  \
             IdentitiesOnly yes\n  UserKnownHostsFile {}\n  GlobalKnownHostsFile /dev/null\n  \
             StrictHostKeyChecking yes\n  BatchMode yes\n  LogLevel ERROR\n",
            d("client_key"),
            d("known_hosts")
        ),
    )?;
    // sshd wants its privilege separation directory.
    let _ = std::fs::create_dir_all("/run/sshd");
    let child = Command::new(SSHD)
        .args(["-D", "-f", &d("sshd_config"), "-E", &d("sshd.log")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {SSHD}: {e}"))?;
    let target = format!("{HOST_ALIAS}//ssh_config={}", d("ssh_config"));
    let log = dir.join("sshd.log");
    let server = TestSshd { target, child, dir: dir.clone() };
    let deadline = Instant::now() + Duration::from_secs(10);
    // Up when sshd's banner answers, not when something accepts: the port picked free may
    // have been taken meanwhile by another listener (sshd then exits unable to bind).
    while !speaks_ssh(port) {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!("the test sshd did not listen on port {port}: {log}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

/// Whether 127.0.0.1:`port` accepts and sends the SSH protocol banner within a second.
fn speaks_ssh(port: u16) -> bool {
    use std::io::Read;
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let mut banner = [0u8; 4];
    stream.read_exact(&mut banner).is_ok() && &banner == b"SSH-"
}
