"""Writes the scenario list on stdout in the wire format (internal payload form).

It uses our worker's serializer, not execnet's: execnet 2.1.2 cannot dump ints below
-2**31, which one scenario contains. (Both write the same bytes otherwise; the golden
tests prove that.)
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "..", "..", "crates", "execnet", "src", "worker", "worker.py")

sys.path.insert(0, HERE)
from scenarios import SCENARIOS  # noqa: E402

namespace = {"__name__": "execnet_rs_worker"}
with open(WORKER) as f:
    exec(compile(f.read(), WORKER, "exec"), namespace)
sys.stdout.buffer.write(namespace["dumps"](SCENARIOS))
