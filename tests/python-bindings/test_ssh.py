"""ssh gateways from Python, through the private sshd of conftest.py (127.0.0.1 only)."""

import os
import socket
import subprocess

import pytest

import execnet_rs as execnet

# What the worker reports about how it was reached: SSH_CONNECTION is set by sshd for
# the session ("client-ip client-port server-ip server-port").
WHERE = "import os; channel.send((os.getpid(), os.environ.get('SSH_CONNECTION', '')))"

RAISES = """
def inner():
    raise ValueError("boom over ssh")
inner()
"""


def check_gateway(gw, sshd):
    # remote_exec and receive: the worker runs in a session of our sshd
    pid, connection = gw.remote_exec(WHERE).receive(timeout=30)
    assert pid != os.getpid()
    assert connection.split()[2:] == ["127.0.0.1", str(sshd.port)], connection

    # items both ways
    ch = gw.remote_exec("for x in channel:\n    channel.send(x * 2)")
    for item in (21, "ab", [1, (2, b"3")]):
        ch.send(item)
        assert ch.receive(timeout=30) == item * 2
    ch.close()

    # a remote error arrives with its traceback
    ch = gw.remote_exec(RAISES)
    with pytest.raises(execnet.RemoteError) as info:
        ch.receive(timeout=30)
    text = str(info.value)
    assert "Traceback (most recent call last)" in text, text
    assert ", in inner" in text, text
    assert "ValueError: boom over ssh" in text, text

    # exit: the gateway leaves its group and takes no more work
    group = gw._group
    gw.exit()
    assert gw not in list(group)
    with pytest.raises((OSError, EOFError)):
        gw.remote_exec("pass").receive(timeout=10)


def test_seed_ssh_gateway(sshd):
    gw = execnet.SshGateway(sshd.host, ssh_config=str(sshd.ssh_config))
    try:
        assert gw.spec.ssh == sshd.host
        check_gateway(gw, sshd)
    finally:
        gw.exit()


def test_makegateway_ssh_spec(sshd):
    gw = execnet.makegateway(sshd.spec("id=over-ssh"))
    try:
        assert gw.id == "over-ssh"
        assert gw.spec.ssh_config == str(sshd.ssh_config)
        check_gateway(gw, sshd)
    finally:
        gw.exit()


def test_unreachable_ssh_host_is_host_not_found_at_makegateway(sshd, tmp_path):
    # as execnet's makegateway: a host ssh cannot reach raises HostNotFound right away
    # (found by execnet's TestSshPopenGateway::test_host_not_found); loopback only
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    config = tmp_path / "ssh_config"
    config.write_text(sshd.ssh_config.read_text().replace(f"Port {sshd.port}", f"Port {closed_port}"))
    group = execnet.Group()
    try:
        with pytest.raises(execnet.HostNotFound) as info:
            group.makegateway(f"ssh={sshd.host}//ssh_config={config}")
        assert "Connection refused" in str(info.value), info.value
        assert len(group) == 0
    finally:
        group.terminate(timeout=5)


def test_ssh_login_refused_is_an_error(sshd, tmp_path):
    # the same server, with a client key it does not know: makegateway fails with
    # ssh's own reason
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)],
                   stdin=subprocess.DEVNULL, check=True, timeout=30)
    config = tmp_path / "ssh_config"
    text = sshd.ssh_config.read_text()
    assert f"IdentityFile {sshd.dir / 'client_key'}" in text
    config.write_text(text.replace(f"IdentityFile {sshd.dir / 'client_key'}", f"IdentityFile {other}"))
    gw = None
    try:
        with pytest.raises((execnet.HostNotFound, EOFError, OSError)) as info:
            gw = execnet.makegateway(f"ssh={sshd.host}//ssh_config={config}")
            gw.remote_exec("channel.send(1)").receive(timeout=30)
        assert "Permission denied (publickey)" in str(info.value), info.value
    finally:
        if gw is not None:
            gw.exit()


def test_rsync_over_ssh(sshd, tmp_path, within):
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "file.txt").write_text("over ssh\n")
    os.symlink("sub/file.txt", source / "link")
    dest = tmp_path / "dest"
    gw = execnet.makegateway(sshd.spec())
    try:
        rsync = execnet.RSync(source, verbose=False)
        rsync.add_target(gw, str(dest))
        within(60, rsync.send)
        assert (dest / "sub" / "file.txt").read_text() == "over ssh\n"
        assert os.readlink(dest / "link") == "sub/file.txt"
    finally:
        gw.exit()
