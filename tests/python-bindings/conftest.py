"""Fixtures for the bindings' tests: a private sshd, and a time limit for blocking calls.

``sshd``: a private OpenSSH server on 127.0.0.1, as the Rust ssh tests start one
(crates/execnet/tests/common/sshd.rs): Debian's /usr/sbin/sshd in the foreground on a
free loopback port, with its own host key, config and authorized_keys in a temporary
directory, and a client key and ssh_config next to them (private_sshd.py).

Without /usr/sbin/sshd the tests that use it are skipped with a warning, except under
CI=true, where that is a failure (scripts/test.sh installs openssh-server).
"""

import os
import threading
import warnings
from pathlib import Path

import pytest

import private_sshd
from private_sshd import SSHD


def _in_ci():
    return os.environ.get("CI") in ("true", "1")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    if not Path(SSHD).exists():
        why = f"the ssh tests need {SSHD} (apt-get install openssh-server; scripts/test.sh does)"
        if _in_ci():
            pytest.fail(f"{why}: it is required under CI", pytrace=False)
        warnings.warn(pytest.PytestWarning(f"SKIPPED: {why}"))
        pytest.skip(why)
    server = private_sshd.start(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        private_sshd.stop(server)


def _within(seconds, fn, *args):
    """Runs fn(*args) in a thread; fails the test if it has not returned in time (the
    gateways' teardown then ends whatever it waits for)."""
    box = {}

    def run():
        try:
            box["value"] = fn(*args)
        except BaseException as e:  # handed to the test's thread
            box["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn} did not return within {seconds} s"
    if "error" in box:
        raise box["error"]
    return box.get("value")


@pytest.fixture
def within():
    """``within(seconds, fn, *args)``: calls that may block (RSync.send) with a limit."""
    return _within
