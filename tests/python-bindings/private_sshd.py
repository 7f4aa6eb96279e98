"""A private OpenSSH server on 127.0.0.1 for tests, as the Rust ssh tests start one
(crates/execnet/tests/common/sshd.rs): Debian's /usr/sbin/sshd in the foreground on a
free loopback port, with its own host key, config and authorized_keys in a directory
of the caller's, and a client key and ssh_config (host alias ``execnet-test``) next to
them. It logs in as the current user (root in CI: the config permits key logins for
root). Nothing leaves 127.0.0.1.

Used by conftest.py's ``sshd`` fixture and by scripts/upstream_run.py (execnet's own
ssh tests). Standard library only.
"""

import os
import pwd
import socket
import subprocess
import time

SSHD = "/usr/sbin/sshd"
HOST_ALIAS = "execnet-test"


def _keygen(path):
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "execnet-test", "-f", str(path)],
        stdin=subprocess.DEVNULL,
        check=True,
        timeout=30,
    )


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _speaks_ssh(port, timeout=5):
    """Whether 127.0.0.1:port answers with the SSH banner: a port picked free may be
    taken by another listener before sshd binds it (sshd then exits), so "something
    accepts" does not say that sshd is up."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
            conn.settimeout(timeout)
            banner = b""
            while len(banner) < 4:
                more = conn.recv(4 - len(banner))
                if not more:
                    break
                banner += more
            return banner == b"SSH-"
    except OSError:
        return False


class Sshd:
    """A running test sshd: its port, directory and the client's ssh_config."""

    def __init__(self, directory, port, proc, ssh_config, log):
        self.dir = directory
        self.port = port
        self.proc = proc
        self.ssh_config = ssh_config
        self.log = log
        self.host = HOST_ALIAS

    def spec(self, extra=""):
        """``ssh=execnet-test//ssh_config=FILE`` plus ``//extra`` items."""
        spec = f"ssh={self.host}//ssh_config={self.ssh_config}"
        return spec + "//" + extra if extra else spec

    def log_text(self):
        return self.log.read_text(errors="replace")


def start(directory):
    host_key = directory / "host_key"
    client_key = directory / "client_key"
    for key in (host_key, client_key):
        _keygen(key)
    (directory / "authorized_keys").write_text((directory / "client_key.pub").read_text())
    if os.geteuid() == 0:
        # sshd running as root insists on its privilege separation directory
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    user = pwd.getpwuid(os.geteuid()).pw_name
    log = directory / "sshd.log"
    config = directory / "sshd_config"
    for _attempt in range(5):
        port = _free_port()
        config.write_text(
            "ListenAddress 127.0.0.1\n"
            f"Port {port}\n"
            f"HostKey {host_key}\n"
            f"AuthorizedKeysFile {directory / 'authorized_keys'}\n"
            "PidFile none\n"
            "UsePAM no\n"
            "StrictModes no\n"
            "PermitRootLogin prohibit-password\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "UseDNS no\n"
            "PrintMotd no\n"
            "PrintLastLog no\n"
            "LogLevel INFO\n"
        )
        with open(log, "wb") as log_file:
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log_file,
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and proc.poll() is None:
            if _speaks_ssh(port):
                break
            time.sleep(0.02)
        else:
            # exited (the port may have been taken meanwhile) or never listened
            proc.kill()
            proc.wait(timeout=10)
            continue
        ssh_config = directory / "ssh_config"
        ssh_config.write_text(
            f"Host {HOST_ALIAS}\n"
            "  HostName 127.0.0.1\n"
            f"  Port {port}\n"
            f"  User {user}\n"
            f"  IdentityFile {client_key}\n"
            "  IdentitiesOnly yes\n"
            "  StrictHostKeyChecking no\n"
            f"  UserKnownHostsFile {directory / 'known_hosts'}\n"
            "  GlobalKnownHostsFile /dev/null\n"
            "  BatchMode yes\n"
            "  ConnectTimeout 10\n"
            "  LogLevel ERROR\n"
        )
        return Sshd(directory, port, proc, ssh_config, log)
    raise RuntimeError("sshd did not start; its log:\n" + log.read_text(errors="replace"))




def stop(server):
    """Terminates the server and reaps it."""
    server.proc.terminate()
    try:
        server.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(timeout=10)
