"""Record the fuzz corpus of crates/execnet/tests/fuzz_wire.rs from real worker traffic.

Loads the worker shipped to remote interpreters (crates/execnet/src/worker/worker.py)
and has its own frame writer (WorkerGateway._send_object / _send_frame) produce the
frames it sends a host: items of every type on CHANNEL_DATA, a remote traceback on
CHANNEL_CLOSE_ERROR, CHANNEL_CLOSE, CHANNEL_LAST_MESSAGE, GATEWAY_TERMINATE, and one
whole stream of all of them. Each file is the exact bytes written.

    python3 tests/fuzz/record_corpus.py        (from the repository root)
"""

import importlib.util
import os

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
spec = importlib.util.spec_from_file_location("worker", os.path.join(ROOT, "crates/execnet/src/worker/worker.py"))
worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(worker)

written = []
gw = worker.WorkerGateway("gw0", "thread", None, written.append)

values = [
    None, True, False, 0, 1, -1, 2**31 - 1, -(2**31), 2**100, -(2**70), 1.5, float("inf"), -0.0,
    1 + 2j, "", "text", "\u00e9\U0001f600", b"", b"\x00\xffbytes", [], [1, [2, [3]]], (), (1, "a"),
    {}, {"a": 1, 2: (3, 4), (5,): None}, set(), {1, 2}, frozenset(), frozenset({"x"}),
    {"nested": [{"deep": ({1}, frozenset({2}))}]}, ["x" * 1000], list(range(100)),
    ("source code", None, None, {}), ("print(1)", "file.py", "main", {"arg": [1, 2]}),
    dict(numchannels=3, numexecuting=1, execmodel="thread"),
]
for i, value in enumerate(values):
    gw._send_object(worker.CHANNEL_DATA, 2 * i + 1, value)
gw._send_object(worker.CHANNEL_CLOSE_ERROR, 3, "Traceback (most recent call last):\n  ZeroDivisionError\n")
gw._send_object(worker.CHANNEL_EXEC, 4, ("channel.send(1)", None, None, {}))
gw._send_frame(worker.CHANNEL_CLOSE, 1)
gw._send_frame(worker.CHANNEL_LAST_MESSAGE, 5)
gw._send_frame(worker.GATEWAY_TERMINATE, 0)

out = os.path.join(HERE, "corpus")
os.makedirs(out, exist_ok=True)
for i, frame in enumerate(written):
    with open(os.path.join(out, "frame-%03d.bin" % i), "wb") as f:
        f.write(frame)
with open(os.path.join(out, "stream.bin"), "wb") as f:
    f.write(b"".join(written))
print("wrote %d frames to %s" % (len(written), out))
