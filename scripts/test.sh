#!/usr/bin/env bash
# README command 2, and what CI runs (.ci/run): every check the project has, in order,
# stopping at the first failure with a non-zero exit.
#
#   sudo bash scripts/test.sh
#
#   1. scripts/setup.sh (packages, cargo, cargo-nextest)
#   2. cargo fmt --check
#   3. cargo clippy --workspace --all-targets -- -D warnings
#   4. cargo build --workspace --all-targets
#   5. unit tests: every crate but integration-tests (+ doc tests)
#   6. fuzz: each cargo-fuzz target in fuzz/ for RRUN_FUZZ_RUNS inputs (default 2000),
#      scripts/fuzz.sh
#   7. integration tests: the integration-tests crate, real containers, as root,
#      against the freshly built target/debug/rrun
#   8. the same integration binaries in a cgroup v2 VM (scripts/vm-test.sh: virtme-ng,
#      Debian's kernel, QEMU without KVM; 20 to 30 minutes under software emulation; the
#      engines' and the cgroup-free CRI binaries stay in the host pass). RRUN_VM=0 skips
#      it, and the step says so.
#
# Environment: RRUN_TEST_TIMEOUT (seconds, default 2400) bounds each test step;
# anything after `--` is passed to the test runner (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -x "$HOME/.cargo/bin/cargo" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

die() { printf 'test.sh: error: %s\n' "$*" >&2; exit 1; }
step() { printf '\n==> [%4ds] %s\n' "$SECONDS" "$*"; }

runner_args=()
if [[ "${1:-}" == "--" ]]; then
    shift
    runner_args=("$@")
elif (($#)); then
    die "unknown argument $1 (pass test runner arguments after --)"
fi

# Integration tests create namespaces, mounts and cgroups: they need root. Check before
# spending minutes on the build.
((EUID == 0)) || die "the integration tests need root: run 'sudo bash scripts/test.sh'"

timeout_s="${RRUN_TEST_TIMEOUT:-2400}"
logs="$(mktemp -d /tmp/rrun-test.XXXXXX)"
SECONDS=0

step "setup"
bash scripts/setup.sh

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build"
cargo build --workspace --all-targets

export RUST_BACKTRACE=1
# The integration harness would otherwise prefer target/release/rrun, which may be stale.
export RRUN_BIN="$PWD/target/debug/rrun"
[[ -x "$RRUN_BIN" ]] || die "cargo build did not produce $RRUN_BIN"

if cargo nextest --version >/dev/null 2>&1; then
    runner=nextest
else
    runner=cargo-test
    printf 'test.sh: cargo-nextest not available, using cargo test\n'
fi

# run_tests NAME CARGO-ARGS...: runs one test step under a timeout, keeps its output in
# $logs/NAME.log and fails the script if it fails.
run_tests() {
    local name="$1"
    shift
    local status=0
    timeout --kill-after=60 "$timeout_s" "$@" 2>&1 | tee "$logs/$name.log" || status=$?
    if ((status == 124)); then
        printf 'test.sh: %s timed out after %ss\n' "$name" "$timeout_s" >&2
    fi
    return "$status"
}

# The tests' containers live in cgroups under rrun-test/ (their `linux.cgroupsPath`); the
# runtimes remove each container's own cgroup, as runc does, but not the shared parent, which
# a test cannot remove without racing the other tests that create children in it. Removed
# here, once nothing runs: depth first, and only what is empty (rmdir refuses the rest).
remove_test_cgroups() {
    local d
    for d in /sys/fs/cgroup/rrun-test /sys/fs/cgroup/*/rrun-test; do
        [[ -d "$d" ]] || continue
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
}

summary() {
    local rc=$? f
    remove_test_cgroups
    # The logs stay only when something failed, for reading; a green run leaves nothing.
    if ((rc == 0)); then
        printf '\n==> summary (%ds)\n' "$SECONDS"
    else
        printf '\n==> summary (%ds; logs in %s)\n' "$SECONDS" "$logs"
    fi
    for f in "$logs"/*.log; do
        [[ -e "$f" ]] || continue
        printf -- '--- %s\n' "$(basename "$f" .log)"
        # nextest's final lines, or cargo test's per-binary result lines.
        grep -E '^\s*(Summary|FAIL|SIGSEGV|SIGABRT|TIMEOUT|LEAK)\b|^test result:|^error: ' "$f" || true
    done
    ((rc != 0)) || rm -rf "$logs"
}
trap summary EXIT

step "unit tests"
if [[ "$runner" == nextest ]]; then
    run_tests unit cargo nextest run --workspace --exclude integration-tests \
        --no-fail-fast "${runner_args[@]}"
else
    run_tests unit cargo test --workspace --exclude integration-tests \
        --no-fail-fast "${runner_args[@]}"
fi
# nextest does not run doc tests.
run_tests doc cargo test --workspace --exclude integration-tests --doc

step "fuzz (${RRUN_FUZZ_RUNS:-2000} runs per target)"
run_tests fuzz bash scripts/fuzz.sh "${RRUN_FUZZ_RUNS:-2000}"

step "integration tests (RRUN_BIN=$RRUN_BIN)"
if [[ "$runner" == nextest ]]; then
    run_tests integration cargo nextest run -p integration-tests --no-fail-fast \
        "${runner_args[@]}"
else
    run_tests integration cargo test -p integration-tests --no-fail-fast "${runner_args[@]}"
fi

if [[ "${RRUN_VM:-1}" == 1 ]]; then
    step "integration tests in a cgroup v2 VM (scripts/vm-test.sh)"
    # One step of many boots: its own, longer bound.
    timeout_s="${RRUN_VM_STEP_TIMEOUT:-3600}"
    run_tests vm bash scripts/vm-test.sh
else
    step "SKIPPED: the cgroup v2 VM pass (RRUN_VM=0; this host has hybrid cgroups, so" \
        "cgroup v2 is exercised only there)"
fi

step "all checks passed"
