#!/usr/bin/env bash
# Coverage-guided fuzzing of the frame parser and the loader with cargo-fuzz (libFuzzer).
#
#   bash scripts/fuzz.sh [SECONDS [TARGET...]]
#
# Runs each target of fuzz/ (default: all, `cargo fuzz list`) for SECONDS (default 20),
# seeded with the real worker frames in tests/fuzz/corpus (read, never written). New
# inputs go to fuzz/corpus/TARGET (ignored by git), so a later run goes on from there.
# A target fails on a panic, on one allocation above 16 MiB (the targets' own allocator
# check, fuzz/fuzz_targets/limits.rs), on more than 512 MiB resident (-rss_limit_mb) or
# on one input taking more than 10 s; the input is saved under
# ${CARGO_TARGET_DIR:-target}/fuzz-artifacts/TARGET/ and the run stops with status 1.
# A run that executed fewer than 1,000 inputs fails too (it did not really fuzz).
#
# cargo-fuzz needs nightly flags; the stable toolchain accepts them with
# RUSTC_BOOTSTRAP=1, set here for the cargo-fuzz commands only. cargo-fuzz itself is
# the pinned version below: the one on PATH if it is that version, else a private
# install under ${CARGO_TARGET_DIR:-target}/tools. If that install fails, the status is 2
# (scripts/test.sh skips the stage then, loudly, except under CI=true).
#
# EXECNET_FUZZ_SANITIZER=address builds with AddressSanitizer (slower to build and run;
# the default, none, suffices for safe Rust and keeps the CI stage short).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$ROOT"

CARGO_FUZZ_VERSION=0.13.2
MIN_RUNS=1000
SECONDS_PER_TARGET=${1:-20}
[ "$#" -gt 0 ] && shift
SANITIZER=${EXECNET_FUZZ_SANITIZER:-none}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
SEEDS="$ROOT/tests/fuzz/corpus"

[ "$(find "$SEEDS" -type f | wc -l)" -ge 20 ] || { echo "scripts/fuzz.sh: the seed corpus $SEEDS is missing" >&2; exit 1; }

# ---- cargo-fuzz, pinned -------------------------------------------------------------------

if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    tools="$TARGET_DIR/tools/cargo-fuzz-$CARGO_FUZZ_VERSION"
    if [ ! -x "$tools/bin/cargo-fuzz" ]; then
        # A debug build: it only drives cargo, and builds in about half the time.
        echo "installing cargo-fuzz $CARGO_FUZZ_VERSION into $tools"
        if ! cargo install cargo-fuzz --locked --version "$CARGO_FUZZ_VERSION" --debug --root "$tools"; then
            echo "scripts/fuzz.sh: could not install cargo-fuzz $CARGO_FUZZ_VERSION" >&2
            exit 2
        fi
    fi
    export PATH="$tools/bin:$PATH"
fi
echo "$(cargo fuzz --version), sanitizer $SANITIZER, $SECONDS_PER_TARGET s per target"

# opt-level 1 instead of cargo-fuzz's 3: the build (execnet with coverage instrumentation)
# takes about two thirds of the time, and the targets still run ~80,000 inputs a second.
fuzz() {
    CARGO_PROFILE_RELEASE_OPT_LEVEL=1 RUSTC_BOOTSTRAP=1 \
        cargo fuzz "$1" -s "$SANITIZER" --codegen-units 16 --target-dir "$TARGET_DIR/fuzz" "${@:2}"
}

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(RUSTC_BOOTSTRAP=1 cargo fuzz list)
fi
[ "${#targets[@]}" -gt 0 ] || { echo "scripts/fuzz.sh: no fuzz targets" >&2; exit 1; }

# fuzz/Cargo.lock is committed: a stale one is an error, as with --locked elsewhere.
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null

# One build for all targets (cargo fuzz run would build each again otherwise).
fuzz build

# ---- the runs -----------------------------------------------------------------------------

for target in "${targets[@]}"; do
    corpus="$ROOT/fuzz/corpus/$target"
    artifacts="$TARGET_DIR/fuzz-artifacts/$target/"
    log="$TARGET_DIR/fuzz-artifacts/$target.log"
    mkdir -p "$corpus" "$artifacts"
    echo "--- cargo fuzz run $target ($SECONDS_PER_TARGET s)"
    status=0
    fuzz run "$target" "$corpus" "$SEEDS" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=65536 -rss_limit_mb=512 -timeout=10 \
        -print_final_stats=1 -artifact_prefix="$artifacts" >"$log" 2>&1 || status=$?
    if [ "$status" -ne 0 ]; then
        tail -n 60 "$log"
        echo "scripts/fuzz.sh: $target failed (exit status $status); the input is in $artifacts, the log in $log" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    grep -E '^(Done|stat::(average_exec_per_sec|new_units_added|peak_rss_mb))' "$log"
    if [ -z "$runs" ] || [ "$runs" -lt "$MIN_RUNS" ]; then
        tail -n 30 "$log"
        echo "scripts/fuzz.sh: $target executed ${runs:-no} inputs, fewer than $MIN_RUNS" >&2
        exit 1
    fi
done
echo "scripts/fuzz.sh: ${#targets[@]} targets, no failure"
