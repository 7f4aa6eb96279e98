"""The real execnet 2.x host (its Gateway class) driving our worker, under CPython and PyPy.

Only the bootstrap differs from a normal execnet popen gateway: the line sent
is ours (worker.py plus serve_stdio(...)) instead of execnet's own source.
"""

import pytest
from conftest import TIMEOUT, bootstrap_line, invocation
from execnet import Group, gateway, gateway_base, gateway_io, xspec


@pytest.fixture
def gw(python):
    spec = xspec.XSpec("popen//python=%s//id=gw-execnet" % python)
    io = gateway_io.create_io(spec, execmodel=gateway_base.get_execmodel("thread"))
    io.write(bootstrap_line(invocation(id="gw-execnet")))
    assert io.read(1) == b"1"
    group = Group()
    gateway_ = gateway.Gateway(io, spec)
    group._register(gateway_)  # what Group.makegateway does after bootstrapping
    yield gateway_
    group.terminate(timeout=TIMEOUT)
    assert io.wait() == 0


def test_rinfo_and_status(gw, python):
    info = gw._rinfo()
    assert info.executable and info.pid > 0
    status = gw.remote_status()
    assert (status.numchannels, status.numexecuting, status.execmodel) == (0, 0, "thread")


def test_send_receive_and_waitclose(gw):
    channel = gw.remote_exec("channel.send(channel.receive() + 1)")
    channel.send(41)
    assert channel.receive(TIMEOUT) == 42
    channel.waitclose(TIMEOUT)


def remote_function(channel, factor):
    for item in channel:
        channel.send(item * factor)


def test_function_with_kwargs(gw):
    channel = gw.remote_exec(remote_function, factor=3)
    for value in [1, "ab", [2]]:
        channel.send(value)
        assert channel.receive(TIMEOUT) == value * 3
    channel.close()


def test_remote_error(gw):
    channel = gw.remote_exec("raise ValueError('from the worker')")
    with pytest.raises(gateway_base.RemoteError) as info:
        channel.waitclose(TIMEOUT)
    assert "ValueError: from the worker" in str(info.value)


def test_channels_both_ways(gw):
    host_side = gw.newchannel()
    channel = gw.remote_exec(
        "mine = channel.gateway.newchannel()\n"
        "theirs = channel.receive()\n"
        "channel.send(mine)\n"
        "mine.send(theirs.receive() * 2)\n"
        "mine.close()\n"
    )
    channel.send(host_side)
    mine = channel.receive(TIMEOUT)
    host_side.send(21)
    assert mine.receive(TIMEOUT) == 42
    mine.waitclose(TIMEOUT)
    channel.waitclose(TIMEOUT)


def test_callback_on_the_host(gw):
    channel = gw.remote_exec("for i in range(1000):\n    channel.send(i)")
    received = []
    channel.setcallback(received.append, endmarker=None)
    channel.waitclose(TIMEOUT)
    assert received == list(range(1000)) + [None]


def test_makefile_on_the_worker(gw):
    channel = gw.remote_exec("f = channel.makefile('w')\nf.write('hello ')\nf.write('world')")
    assert channel.receive(TIMEOUT) + channel.receive(TIMEOUT) == "hello world"
    channel.waitclose(TIMEOUT)
