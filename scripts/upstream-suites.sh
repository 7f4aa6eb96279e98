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
PER_TEST_TIMEOUT=${EXECNET_UPSTREAM_TIMEOUT:-30}

# name version sha256 of the sdist (PyPI's)
SDISTS=(
    "execnet 2.1.2 63d83bfdd9a23e35b9c6a3261412324f964c2ec8dcd8d3c6916ee9373e0befcd"
    "pytest_xdist 3.8.0 7e578125ec9bc6050861aa93f2d59f1d8d085595d6551c2c90b6f4fad8d3a9f1"
)
# What the suites' tests import or skip without: on both sides, so that the same tests
# run on both (eventlet and gevent for execnet's execmodel parametrizations, pexpect and
# psutil for pytest-xdist's looponfail and worker tests).
TEST_PINS=("pytest==8.4.2" "pytest-timeout==2.4.0" "filelock==4.3.2" "eventlet==0.41.3"
           "gevent==26.9.0" "pexpect==4.9.0" "psutil==7.2.2")

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

# The two venvs are set up at once (pip is mostly waiting for downloads).
setup_side() {
    local side=$1
    shift
    [ -x "$WORK/$side/bin/python" ] || "$BASE_PYTHON" -m venv "$WORK/$side"
    "$WORK/$side/bin/pip" install -q --disable-pip-version-check "${TEST_PINS[@]}"
    "$WORK/$side/bin/pip" install -q --disable-pip-version-check "$@"
}
setup_side ref execnet==2.1.2 pytest-xdist==3.8.0 &
ref_setup=$!
setup_side rs --no-deps pytest-xdist==3.8.0 || die "could not set up the rs venv"
wait "$ref_setup" || die "could not set up the ref venv"
VIRTUAL_ENV="$WORK/rs" "$ROOT/.venv/bin/maturin" develop --quiet --release \
    --manifest-path "$ROOT/crates/execnet-py/Cargo.toml"
"$WORK/rs/bin/python" -m execnet_rs.standin install
if "$WORK/rs/bin/pip" show -q execnet 2>/dev/null; then die "the rs venv has the execnet package"; fi

# The socket tests' servers: execnet's own script on the reference side, `execnet serve`
# (this project's, built by cargo) on ours. upstream_run.py also starts the private sshd
# for the ssh tests and passes both as --gx options.
(cd "$ROOT" && cargo build -q -p execnet-cli --locked)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
case $TARGET_DIR in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac
SOCKET_SERVER_ref=("$WORK/ref/bin/python" -m execnet.script.socketserver "127.0.0.1:PORT")
SOCKET_SERVER_rs=("$TARGET_DIR/debug/execnet" serve --listen "127.0.0.1:PORT" --python "$WORK/rs/bin/python" -q)

# One side of one suite: its log, junit XML and elapsed seconds go to $WORK. Each run has
# its own basetemp, sshd and socket server, so that the runs can go at once.
# run_side SUITE SIDE DIR NAME [TEST...]: results in $WORK/NAME.{log,xml} (default: all
# of testing/).
run_side() {
    local suite=$1 side=$2 dir=$3 name=$4 server="SOCKET_SERVER_$2[@]" start=$SECONDS status=0
    shift 4
    [ $# -gt 0 ] || set -- testing
    rm -f "$WORK/$name.xml"
    (cd "$dir" && timeout 1200 "$WORK/$side/bin/python" "$ROOT/scripts/upstream_run.py" \
        --socket-server "${!server}" -- \
        "$WORK/$side/bin/python" -m pytest "$@" -q -p no:cacheprovider -rfE \
        --basetemp="$WORK/tmp-$name" --timeout="$PER_TEST_TIMEOUT" \
        --junitxml="$WORK/$name.xml" >"$WORK/$name.log" 2>&1) || status=$?
    echo "$name: $((SECONDS - start)) s (exit status $status); $(tail -n 1 "$WORK/$name.log")"
}

suite_dir() {
    case $1 in
        execnet) echo "$WORK/execnet-2.1.2" ;;
        xdist) echo "$WORK/pytest_xdist-3.8.0" ;;
        *) die "unknown suite $1 (execnet or xdist)" ;;
    esac
}

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(execnet xdist)
for suite in "${suites[@]}"; do suite_dir "$suite" >/dev/null; done
# The runs are started together: each uses about one core and waits much of its time
# (processes starting, timeouts), so on two cores they take a little longer each and
# far less in all than one after the other.
pids=()
for suite in "${suites[@]}"; do
    dir=$(suite_dir "$suite")
    for side in ref rs; do
        run_side "$suite" "$side" "$dir" "$suite-$side" &
        pids+=($!)
    done
done
for pid in "${pids[@]}"; do wait "$pid"; done

# A test that fails on execnet_rs alone and is not listed is run once more, alone (the
# four runs at once load the machine; some of execnet's tests race under load, on the
# real execnet too); the judgement counts the second outcome.
status=0
for suite in "${suites[@]}"; do
    echo "--- $suite"
    compare=("$BASE_PYTHON" "$ROOT/scripts/upstream_compare.py" "$suite" "$WORK/$suite-ref.xml"
             "$WORK/$suite-rs.xml" "$ROOT/scripts/upstream-known-differences.txt")
    rm -f "$WORK/$suite-rs-rerun.xml"
    if ! "${compare[@]}" --unexpected-out "$WORK/$suite-unexpected.txt" >"$WORK/$suite-report.md" \
        && [ -s "$WORK/$suite-unexpected.txt" ]; then
        mapfile -t again <"$WORK/$suite-unexpected.txt"
        echo "running ${#again[@]} test(s) that failed only on execnet_rs again: ${again[*]}"
        run_side "$suite" rs "$(suite_dir "$suite")" "$suite-rs-rerun" "${again[@]}"
    fi
    "${compare[@]}" --rerun "$WORK/$suite-rs-rerun.xml" | tee "$WORK/$suite-report.md" || status=1
done
# The verdicts again, last, where a truncated log still shows them.
echo "--- verdicts"
for suite in "${suites[@]}"; do
    grep -E "UNEXPECTED|STALE|SKIPPED FOR WANT|FAILED|then passed when run again|^$suite: ok" "$WORK/$suite-report.md" || true
done
exit $status
