"""Runs one side of an upstream suite with the peers its ssh and socket tests need.

    python scripts/upstream_run.py --socket-server CMD... -- PYTHON -m pytest ARGS...

execnet's and pytest-xdist's suites skip their ssh and socket tests unless given
``--gx ssh=HOST`` and ``--gx socket=HOST:PORT``. This starts, for the length of one
pytest run:

- the private sshd of tests/python-bindings/private_sshd.py on 127.0.0.1, and an ``ssh``
  first on PATH that adds ``-F`` with that server's client config (the suites build
  ``ssh=execnet-test`` specs without an ssh_config; the host alias is found there, and
  the one unreachable host the suite names is sent to a closed loopback port);
- a socket server: the command after ``--socket-server`` (up to ``--``), with ``PORT``
  replaced by a free loopback port; the run waits until it accepts connections;

then runs the pytest command with both ``--gx`` options added, and stops both servers.
Its exit status is pytest's. Standard library only; nothing leaves 127.0.0.1.
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "python-bindings"))
import private_sshd  # noqa: E402


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, proc, what, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"upstream_run: {what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except OSError:
            time.sleep(0.05)
            continue
        # something accepts; if it is another listener that took the port first, the
        # server fails to bind and exits: give it a moment to show that
        time.sleep(0.3)
        if proc.poll() is None:
            return
        sys.exit(f"upstream_run: {what} exited with status {proc.returncode}")
    sys.exit(f"upstream_run: {what} did not listen on 127.0.0.1:{port} within {seconds} s")


def ssh_wrapper(directory, sshd):
    """An ``ssh`` that reads the test server's client config unless the caller names a
    config with -F. execnet's test_host_not_found makes ``ssh=nowhere.codespeak.net``:
    the config sends that name to a closed loopback port, so the test sees ssh fail to
    reach the host without a DNS query leaving this machine."""
    ssh_config = directory / "ssh_config"
    ssh_config.write_text(
        sshd.ssh_config.read_text()
        + f"Host nowhere.codespeak.net\n  HostName 127.0.0.1\n  Port {free_port()}\n"
        + "  BatchMode yes\n  ConnectTimeout 10\n"
    )
    real = shutil.which("ssh")
    if real is None:
        sys.exit("upstream_run: no ssh on PATH (apt-get install openssh-client)")
    wrapper = directory / "ssh"
    wrapper.write_text(
        "#!/bin/sh\n"
        'for arg in "$@"; do [ "$arg" = -F ] && exec ' + real + ' "$@"; done\n'
        "exec " + real + " -F " + str(ssh_config) + ' "$@"\n'
    )
    wrapper.chmod(0o755)


def main(argv):
    if "--socket-server" not in argv or "--" not in argv:
        sys.exit(__doc__)
    server_cmd = argv[argv.index("--socket-server") + 1 : argv.index("--")]
    pytest_cmd = argv[argv.index("--") + 1 :]
    if not os.path.exists(private_sshd.SSHD):
        sys.exit(f"upstream_run: the ssh tests need {private_sshd.SSHD} (openssh-server)")
    with tempfile.TemporaryDirectory(prefix="execnet-upstream-") as tmp:
        tmp = Path(tmp)
        (tmp / "sshd").mkdir()
        (tmp / "bin").mkdir()
        sshd = private_sshd.start(tmp / "sshd")
        port = free_port()
        server = subprocess.Popen(
            [word.replace("PORT", str(port)) for word in server_cmd],
            stdin=subprocess.DEVNULL,
            stdout=open(tmp / "socket-server.log", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_listening(port, server, "the socket server " + " ".join(server_cmd))
            ssh_wrapper(tmp / "bin", sshd)
            env = dict(os.environ, PATH=f"{tmp / 'bin'}{os.pathsep}{os.environ['PATH']}")
            # the ssh spec names the run's own interpreter: pytest-xdist's ssh tests hand
            # it to --tx as it is, and their workers need pytest there
            gx = ["--gx", f"ssh={sshd.host}//python={pytest_cmd[0]}", "--gx", f"socket=127.0.0.1:{port}"]
            return subprocess.call(pytest_cmd + gx, env=env)
        finally:
            try:
                os.killpg(server.pid, 15)
            except ProcessLookupError:
                pass
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, 9)
                server.wait(timeout=10)
            private_sshd.stop(sshd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
