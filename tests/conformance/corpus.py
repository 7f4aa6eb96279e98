"""The serializer corpus: random values dumped by execnet, loaded by execnet-rs, and back.

    python corpus.py generate SEED COUNT   -> execnet.dumps([blob, ...]) on stdout
    python corpus.py check                 <- execnet.dumps([(execnet_blob, our_blob), ...])

`check` loads both blobs of every pair with execnet and compares the values (NaN-aware,
-0.0 distinct from 0.0, bool distinct from int); it prints "ok N" or the mismatches
and exits 1.
"""

import math
import random
import sys

import execnet

EDGE_INTS = [0, 1, -1, 2**31 - 1, -(2**31), 2**31, 2**63 - 1, 2**63, 2**64, 10**50]
EDGE_FLOATS = [0.0, -0.0, 1.5, -2.25, 1e-300, 1e300, float("inf"), float("-inf"), float("nan")]
EDGE_STRS = ["", "a", "\x00", "\u00e9", "\u20ac", "\U0001f600\U00010348", "line\nbreak", "q'\"\\"]


def rand_str(rng):
    if rng.random() < 0.3:
        return rng.choice(EDGE_STRS)
    alphabet = "abc xyz\u00e9\u4e2d\U0001f600\t"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))


def rand_hashable(rng, depth):
    kind = rng.randint(0, 6)
    if kind == 0:
        return rng.choice(EDGE_INTS) if rng.random() < 0.5 else rng.randint(-(2**31), 2**40)
    if kind == 1:
        return rand_str(rng)
    if kind == 2:
        return bytes(rng.randint(0, 255) for _ in range(rng.randint(0, 8)))
    if kind == 3 and depth > 0:
        return tuple(rand_hashable(rng, depth - 1) for _ in range(rng.randint(0, 3)))
    if kind == 4 and depth > 0:
        return frozenset(rand_hashable(rng, depth - 1) for _ in range(rng.randint(0, 3)))
    if kind == 5:
        return rng.choice([None, True, False])
    return rng.choice(EDGE_FLOATS[:-1])  # no nan keys: nan != nan breaks dict lookups


def rand_value(rng, depth):
    kind = rng.randint(0, 13 if depth > 0 else 7)
    if kind == 0:
        return None
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice(EDGE_INTS) if rng.random() < 0.5 else rng.randint(-(2**31), 2**200)
    if kind == 3:
        return rng.choice(EDGE_FLOATS) if rng.random() < 0.5 else rng.uniform(-1e9, 1e9)
    if kind == 4:
        return complex(rng.choice(EDGE_FLOATS), rng.uniform(-5, 5))
    if kind == 5:
        return rand_str(rng)
    if kind == 6:
        size = rng.choice([0, 1, 7, 300, 70000])
        return bytes(rng.randint(0, 255) for _ in range(min(size, 300))) * (size // 300 + 1)
    if kind == 7:
        return rand_hashable(rng, 1)
    n = rng.randint(0, 5)
    if kind in (8, 9):
        return [rand_value(rng, depth - 1) for _ in range(n)]
    if kind == 10:
        return tuple(rand_value(rng, depth - 1) for _ in range(n))
    if kind == 11:
        return {rand_hashable(rng, 1): rand_value(rng, depth - 1) for _ in range(n)}
    if kind == 12:
        return {rand_hashable(rng, 1) for _ in range(n)}
    return frozenset(rand_hashable(rng, 1) for _ in range(n))


def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (a == b and math.copysign(1, a) == math.copysign(1, b))
    if isinstance(a, complex):
        return same(a.real, b.real) and same(a.imag, b.imag)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return list(a.keys()) == list(b.keys()) and all(same(a[k], b[k]) for k in a)
    return a == b


def main():
    if sys.argv[1] == "generate":
        rng = random.Random(int(sys.argv[2]))
        blobs = [execnet.dumps(rand_value(rng, 4)) for _ in range(int(sys.argv[3]))]
        sys.stdout.buffer.write(execnet.dumps(blobs))
        return
    pairs = execnet.loads(sys.stdin.buffer.read())
    bad = []
    for i, (theirs, ours) in enumerate(pairs):
        a, b = execnet.loads(theirs), execnet.loads(ours)
        if not same(a, b):
            bad.append("%d: %r != %r" % (i, a, b))
    if bad:
        print("\n".join(bad[:20]))
        sys.exit(1)
    print("ok %d" % len(pairs))


if __name__ == "__main__":
    main()
