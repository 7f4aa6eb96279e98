"""Rough performance figures for worker.py, next to execnet's own worker.

Not a test (pytest does not collect it).  Run:

    /tmp/venv-exec/bin/python tests/python/bench_worker.py [python ...]

Each worker is started as the Rust host starts ours and driven by the same
minimal host (one thread, frames parsed by hand), so the numbers compare the
workers rather than hosts.  execnet's worker is bootstrapped the way execnet
bootstraps it over ssh (its gateway_base source, sent as the line).
"""

import inspect
import os
import struct
import subprocess
import sys
import time

from conftest import BOOTSTRAP, INTERPRETERS, bootstrap_line, dumps
from execnet import gateway_base

HEADER = struct.Struct("!bii")
EXEC, DATA, CLOSE, CLOSE_ERROR, TERMINATE = 3, 4, 5, 6, 2


def start(python, which):
    proc = subprocess.Popen([python, "-u", "-c", BOOTSTRAP], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    if which == "ours":
        line = bootstrap_line("serve_stdio(id='bench')")
    else:
        source = "\n".join(
            [
                inspect.getsource(gateway_base),
                "io = init_popen_io(get_execmodel('thread'))",
                "io.write(b'1')",
                "serve(io, id='bench')",
            ]
        )
        line = (repr(source) + "\n").encode("ascii")
    proc.stdin.write(line)
    proc.stdin.flush()
    assert proc.stdout.read(1) == b"1"
    return proc


class Host:
    def __init__(self, proc):
        self.proc = proc
        self.out = proc.stdin
        self.inp = proc.stdout
        self.next_id = 1

    def send(self, code, channel, payload=b""):
        self.out.write(HEADER.pack(code, channel, len(payload)) + payload)
        self.out.flush()

    def frame(self):
        code, channel, size = HEADER.unpack(self.inp.read(9))
        return code, channel, self.inp.read(size)

    def exec_(self, source):
        channel = self.next_id
        self.next_id += 2
        self.send(EXEC, channel, dumps((source, None, None, {})))
        return channel

    def until_close(self, channel):
        """Read frames until channel closes; return (frames, payload bytes)."""
        count = size = 0
        while True:
            code, ch, payload = self.frame()
            if ch == channel and code in (CLOSE, CLOSE_ERROR):
                assert code == CLOSE, gateway_base.loads_internal(payload)
                return count, size
            count += 1
            size += len(payload)

    def stop(self):
        self.send(TERMINATE, 0)
        self.proc.wait(10)


def bench(python, which):
    host = Host(start(python, which))
    results = {}

    # Round trips: host sends an int, the worker echoes it.
    channel = host.exec_("for item in channel:\n    channel.send(item)")
    one = dumps(1)
    rounds = 5000
    for _ in range(200):  # warm up (PyPy's JIT too)
        host.send(DATA, channel, one)
        host.frame()
    began = time.perf_counter()
    for _ in range(rounds):
        host.send(DATA, channel, one)
        host.frame()
    results["round trip (us)"] = (time.perf_counter() - began) / rounds * 1e6
    host.send(CLOSE, channel)

    # Streaming 200,000 small ints from the worker.
    began = time.perf_counter()
    channel = host.exec_("for i in range(200000):\n    channel.send(i)")
    count, _ = host.until_close(channel)
    assert count == 200000
    results["200k ints (s)"] = time.perf_counter() - began

    # 1 MiB bytes items: 64 each way.
    blob = os.urandom(1 << 20)
    channel = host.exec_("for item in channel:\n    channel.send(item)")
    payload = dumps(blob)
    began = time.perf_counter()
    for _ in range(64):
        host.send(DATA, channel, payload)
        code, _, reply = host.frame()
        assert code == DATA and len(reply) == len(payload)
    results["1 MiB echo (ms)"] = (time.perf_counter() - began) / 64 * 1e3
    host.send(CLOSE, channel)

    host.stop()
    return results


def main(pythons):
    for python in pythons:
        for which in ("ours", "execnet"):
            results = bench(python, which)
            figures = "  ".join("%s %.2f" % item for item in results.items())
            print("%-40s %-8s %s" % (python, which, figures), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:] or [path for path in INTERPRETERS.values() if path])
