#!/usr/bin/env bash
# Exec round trip through the CRI streaming server, rrun-cri vs containerd 1.6's CRI
# (with runc), side by side in one run: the Exec RPC for `echo hi` in a running busybox
# container, then the WebSocket session (v4.channel.k8s.io) on the URL it answers until
# the server closes it; the median of EXEC_BENCH_RUNS (default 50) round trips per server
# after 3 warmups (integration-tests/src/bin/exec-bench.rs).
#
#   sudo bash bench/exec.sh
#
# Both servers run from the test harness: rrun-cri in a temp dir with a pod of its own
# network namespace, containerd in a temp dir and a private mount namespace with a pod on
# the node's network (no CNI); everything is removed after. EXEC_BENCH_PROFILE=debug
# measures the debug build (quicker to build; not the figure to quote).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench_name=exec-bench
# shellcheck source=bench/lib.sh
source bench/lib.sh

runs="${EXEC_BENCH_RUNS:-50}"
profile="${EXEC_BENCH_PROFILE:-release}"
case "$profile" in
release) log "cargo build --release"; flag=(--release) ;;
debug) log "cargo build (debug)"; flag=() ;;
*) die "EXEC_BENCH_PROFILE must be release or debug" ;;
esac
# Two builds: `--bin` would narrow the first to that one binary of every package.
cargo build "${flag[@]}" -p rrun -p rrun-cri
cargo build "${flag[@]}" -p integration-tests --bin exec-bench
for b in containerd ctr containerd-shim-runc-v2 runc; do
    command -v "$b" >/dev/null || die "$b not found (scripts/setup.sh installs containerd)"
done
export RRUN_CRI_BIN="$PWD/target/$profile/rrun-cri"
export RRUN_BIN="$PWD/target/$profile/rrun"
load_before="$(uptime)"
out="$("target/$profile/exec-bench" "$runs")"
load_after="$(uptime)"
printf '%s\n' "$out" | awk -v runs="$runs" -v profile="$profile" '
    $2 == "failed:" { print; next }
    $1 == "ratio" { ratio = $2; next }
    { med[$1] = $2; min[$1] = $3; max[$1] = $4 }
    END {
        printf "exec round trip (Exec RPC + WebSocket session of echo), median of %d (ms, %s build)\n", runs, profile
        printf "%-12s %8s %8s %8s\n", "server", "median", "min", "max"
        for (e in med) printf "%-12s %8.2f %8.2f %8.2f\n", e, med[e], min[e], max[e]
        if (ratio != "") printf "rrun-cri / containerd: %sx\n", ratio
    }'
printf 'load before: %s\nload after:  %s\n' "$load_before" "$load_after"
