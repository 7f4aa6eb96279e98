#!/usr/bin/env bash
# execnet's and pytest-xdist's own test suites (their sdists' testing/ folders), run
# twice: on the real execnet (the reference) and on execnet_rs standing in for it
# (`python -m execnet_rs.standin install` in a venv without the execnet package).
# Prints a table per test file: passed/failed/skipped on both sides.
#
#   bash scripts/upstream-suites.sh [execnet|xdist]...     (default: both)
#
# Exits non-zero when a test that passes on execnet fails on execnet_rs without being
# listed (with its reason) in scripts/upstream-known-differences.txt, or when a listed
# test passes. Needs .venv (bash scripts/test.sh makes it) and the network to PyPI.
# Work files go to target/upstream/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
WORK="$ROOT/target/upstream"
BASE_PYTHON="$ROOT/.venv/bin/python"
PER_TEST_TIMEOUT=${EXECNET_UPSTREAM_TIMEOUT:-20}

# name version sha256 of the sdist (PyPI's)
SDISTS=(
    "execnet 2.1.2 63d83bfdd9a23e35b9c6a3261412324f964c2ec8dcd8d3c6916ee9373e0befcd"
    "pytest_xdist 3.8.0 7e578125ec9bc6050861aa93f2d59f1d8d085595d6551c2c90b6f4fad8d3a9f1"
)
TEST_PINS=("pytest==8.4.2" "pytest-timeout==2.4.0" "filelock==4.3.2")

die() { printf 'upstream-suites: %s\n' "$*" >&2; exit 1; }
[ -x "$BASE_PYTHON" ] || die "no $BASE_PYTHON: run bash scripts/test.sh once first"
mkdir -p "$WORK/sdist"

for entry in "${SDISTS[@]}"; do
    read -r name version sha <<<"$entry"
    file="$WORK/sdist/$name-$version.tar.gz"
    if [ ! -f "$file" ]; then
        "$BASE_PYTHON" -m pip download -q --no-deps --no-binary :all: -d "$WORK/sdist" \
            "${name//_/-}==$version"
    fi
    echo "$sha  $file" | sha256sum -c --quiet - || die "$file: sha256 is not $sha"
    [ -d "$WORK/$name-$version" ] || tar -xzf "$file" -C "$WORK"
done

if [ ! -x "$WORK/ref/bin/python" ]; then
    "$BASE_PYTHON" -m venv "$WORK/ref"
    "$WORK/ref/bin/pip" install -q "${TEST_PINS[@]}" execnet==2.1.2 pytest-xdist==3.8.0
fi
if [ ! -x "$WORK/rs/bin/python" ]; then
    "$BASE_PYTHON" -m venv "$WORK/rs"
    "$WORK/rs/bin/pip" install -q "${TEST_PINS[@]}"
    "$WORK/rs/bin/pip" install -q --no-deps pytest-xdist==3.8.0
fi
VIRTUAL_ENV="$WORK/rs" "$ROOT/.venv/bin/maturin" develop --quiet --release \
    --manifest-path "$ROOT/crates/execnet-py/Cargo.toml"
"$WORK/rs/bin/python" -m execnet_rs.standin install
if "$WORK/rs/bin/pip" show -q execnet 2>/dev/null; then die "the rs venv has the execnet package"; fi

status=0
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(execnet xdist)
for suite in "${suites[@]}"; do
    case $suite in
        execnet) dir="$WORK/execnet-2.1.2" ;;
        xdist) dir="$WORK/pytest_xdist-3.8.0" ;;
        *) die "unknown suite $suite (execnet or xdist)" ;;
    esac
    for side in ref rs; do
        echo "--- $suite on $side"
        start=$(date +%s)
        (cd "$dir" && timeout 1500 "$WORK/$side/bin/python" -m pytest testing -q -p no:cacheprovider \
            --timeout="$PER_TEST_TIMEOUT" --junitxml="$WORK/$suite-$side.xml" >"$WORK/$suite-$side.log" 2>&1) || true
        echo "$suite on $side: $(( $(date +%s) - start )) s; $(tail -n 1 "$WORK/$suite-$side.log")"
    done
    "$BASE_PYTHON" - "$WORK/$suite-ref.xml" "$WORK/$suite-rs.xml" "$suite" \
        "$ROOT/scripts/upstream-known-differences.txt" <<'PY' || status=1
import collections, sys, xml.etree.ElementTree as ET

def counts(path):
    table = collections.defaultdict(collections.Counter)
    outcomes = {}
    for case in ET.parse(path).iter("testcase"):
        parts = case.get("classname", "").split(".")  # testing.test_x.TestClass
        name = (parts[1] if parts[0] == "testing" and len(parts) > 1 else parts[0]) + ".py"
        tags = {child.tag for child in case}
        kind = "failed" if tags & {"failure", "error"} else "skipped" if "skipped" in tags else "passed"
        table[name][kind] += 1
        # the pytest node id: testing/test_x.py::TestClass::test_name[params]
        module = "/".join(parts[:2]) + ".py" if parts[0] == "testing" else parts[0] + ".py"
        outcomes["::".join([module] + parts[2:] + [case.get("name")])] = kind
    return table, outcomes

(ref, ref_out), (rs, rs_out) = counts(sys.argv[1]), counts(sys.argv[2])
print("| file | execnet passed/failed/skipped | execnet_rs passed/failed/skipped |")
print("|---|---|---|")
for name in sorted(set(ref) | set(rs)):
    fmt = lambda c: "%d/%d/%d" % (c["passed"], c["failed"], c["skipped"])
    print(f"| {name} | {fmt(ref[name])} | {fmt(rs[name])} |")
worse = sorted(t for t, k in ref_out.items() if k == "passed" and rs_out.get(t) != "passed")
known = {}
for line in open(sys.argv[4]):
    if line.strip() and not line.startswith("#"):
        head, reason = line.split("|", 1)
        suite, node = head.split()
        if suite == sys.argv[3]:
            known[node] = reason.strip()
matches = lambda node, t: t == node or t.startswith(node + "[") or t.startswith(node + "::")
print(f"{len(worse)} tests pass on execnet but not on execnet_rs")
unexpected = [t for t in worse if not any(matches(n, t) for n in known)]
for t in worse:
    print("  ", t, "(unexpected)" if t in unexpected else "")
stale = [n for n in known if not any(matches(n, t) for t in worse)]
for n in stale:
    print(f"listed in upstream-known-differences.txt but not failing: {n}")
if not rs_out:
    print("no results from execnet_rs")
sys.exit(1 if unexpected or stale or not rs_out else 0)
PY
done
exit $status
