"""Runs the conformance scenarios with the execnet package as the host.

    python run_python_host.py --worker {execnet-rs,execnet} --python PY
    python run_python_host.py --socket HOST:PORT

Writes the results on stdout as execnet.dumps([(scenario name, "passed" | "skipped" |
"failed", detail), ...]) for the Rust side of the suite to tabulate.
"""

import argparse
import os
import sys
import threading
import traceback

import execnet
from execnet import gateway, gateway_base, gateway_io, xspec

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "..", "..", "crates", "execnet", "src", "worker", "worker.py")
sys.path.insert(0, HERE)
from scenarios import SCENARIOS  # noqa: E402

TIMEOUT = 20


class Failed(Exception):
    pass


def canon(value):
    """A text form of value that does not depend on set order."""
    if isinstance(value, (set, frozenset)):
        inner = ", ".join(sorted(canon(v) for v in value))
        return "%s({%s})" % (type(value).__name__, inner)
    if isinstance(value, list):
        return "[%s]" % ", ".join(canon(v) for v in value)
    if isinstance(value, tuple):
        return "(%s)" % ", ".join(canon(v) for v in value)
    if isinstance(value, dict):
        return "{%s}" % ", ".join("%s: %s" % (canon(k), canon(v)) for k, v in value.items())
    if isinstance(value, gateway_base.Channel):
        return "<channel>"
    return repr(value)


def is_channel_ref(value):
    return isinstance(value, tuple) and len(value) == 2 and value[0] == "$channel"


def substitute(value, channels):
    if is_channel_ref(value):
        return channels[value[1]]
    if isinstance(value, list):
        return [substitute(v, channels) for v in value]
    if isinstance(value, tuple):
        return tuple(substitute(v, channels) for v in value)
    return value


def make_gateway(args, group):
    if args.socket:
        return group.makegateway("socket=%s" % args.socket)
    spec = xspec.XSpec("popen//python=%s" % args.python)
    if args.worker == "execnet":
        return group.makegateway(spec)
    # Our worker: execnet's popen io, our bootstrap line, then execnet's Gateway class.
    spec.id = "gw-conformance"
    io = gateway_io.create_io(spec, execmodel=gateway_base.get_execmodel("thread"))
    with open(WORKER) as f:
        source = f.read()
    program = source + "\nserve_stdio(id='gw-conformance', execmodel='thread')\n"
    io.write((repr(program) + "\n").encode("ascii"))
    if io.read(1) != b"1":
        raise Failed("our worker did not answer the ready byte")
    gw = gateway.Gateway(io, spec)
    group._register(gw)
    return gw


def run_step(gw, channels, step):
    op, args = step[0], step[1:]
    if op == "exec":
        channels[args[0]] = gw.remote_exec(args[1])
    elif op == "newchannel":
        channels[args[0]] = gw.newchannel()
    elif op == "send":
        channels[args[0]].send(substitute(args[1], channels))
    elif op == "receive":
        got = channels[args[0]].receive(TIMEOUT)
        if is_channel_ref(args[1]):
            if not isinstance(got, gateway_base.Channel):
                raise Failed("expected a channel, got %r" % (got,))
            channels[args[1][1]] = got
        elif canon(got) != canon(args[1]):
            raise Failed("received %s, expected %s" % (canon(got)[:200], canon(args[1])[:200]))
    elif op == "receive_error":
        try:
            got = channels[args[0]].receive(TIMEOUT)
        except gateway_base.RemoteError as e:
            if args[1] not in str(e):
                raise Failed("remote error without %r: %s" % (args[1], e))
        else:
            raise Failed("expected a remote error, received %r" % (got,))
    elif op == "receive_eof":
        try:
            got = channels[args[0]].receive(TIMEOUT)
        except EOFError:
            pass
        else:
            raise Failed("expected the end of the channel, received %r" % (got,))
    elif op == "receive_timeout":
        try:
            got = channels[args[0]].receive(args[1])
        except channels[args[0]].TimeoutError:
            pass
        else:
            raise Failed("expected a timeout, received %r" % (got,))
    elif op == "receive_lost":
        try:
            got = channels[args[0]].receive(TIMEOUT)
        except (EOFError, OSError, gateway_base.RemoteError):
            pass
        else:
            raise Failed("expected an error, received %r" % (got,))
    elif op == "waitclose":
        channels[args[0]].waitclose(TIMEOUT)
    elif op == "waitclose_error":
        try:
            channels[args[0]].waitclose(TIMEOUT)
        except gateway_base.RemoteError as e:
            if args[1] not in str(e):
                raise Failed("remote error without %r: %s" % (args[1], e))
        else:
            raise Failed("expected a remote error from waitclose")
    elif op == "close":
        channels[args[0]].close()
    elif op == "close_error":
        channels[args[0]].close(args[1])
    elif op == "callback":
        items, done = [], threading.Event()
        end = object()

        def collect(item):
            if item is end:
                done.set()
            else:
                items.append(item)

        channels[args[0]].setcallback(collect, endmarker=end)
        if not done.wait(TIMEOUT):
            raise Failed("no endmarker after %d items" % len(items))
        if canon(items) != canon(args[1]):
            raise Failed("callback items %s, expected %s" % (canon(items)[:200], canon(args[1])[:200]))
    elif op == "status":
        status = gw.remote_status()
        if args[0] is not None and status.numexecuting != args[0]:
            raise Failed("numexecuting %r, expected %r" % (status.numexecuting, args[0]))
        if not isinstance(status.numchannels, int) or not status.execmodel:
            raise Failed("incomplete status %r" % (status.__dict__,))
    elif op == "rinfo":
        info = gw._rinfo()
        if not (info.pid > 0 and info.executable and info.cwd and info.platform):
            raise Failed("incomplete rinfo %r" % (info.__dict__,))
        if len(info.version_info) != 5:
            raise Failed("version_info %r" % (info.version_info,))
    elif op == "terminate":
        gw.exit()
    else:
        raise Failed("unknown step %r" % (op,))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=["execnet-rs", "execnet"], default="execnet")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--socket")
    args = parser.parse_args()
    props = {"host:execnet", "worker:" + args.worker}
    results = []
    for scenario in SCENARIOS:
        skip = [reason for key, reason in scenario.get("skip", {}).items() if key in props]
        if skip:
            results.append((scenario["name"], "skipped", skip[0]))
            continue
        group = execnet.Group()
        try:
            gw = make_gateway(args, group)
            channels = {}
            for step in scenario["steps"]:
                run_step(gw, channels, step)
            results.append((scenario["name"], "passed", ""))
        except Failed as e:
            results.append((scenario["name"], "failed", str(e)))
        except Exception:
            results.append((scenario["name"], "failed", traceback.format_exc()[-600:]))
        finally:
            group.terminate(timeout=5)
    sys.stdout.buffer.write(execnet.dumps(results))


if __name__ == "__main__":
    main()
