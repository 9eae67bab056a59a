#!/usr/bin/env bash
# Pod start on a CNI bridge network, rrun-cri vs containerd 1.6's CRI, side by side in one
# run, with the same conflist (Debian's bridge + host-local plugins): RunPodSandbox until
# it answers (the pod then has its address on the bridge), the median of CNI_BENCH_RUNS
# (default 20) pods one at a time after a warm-up, then CNI_BENCH_CONCURRENT (default 100)
# pods started at once (the time until the last answered). containerd's figure includes
# its pause container (the fixtures' busybox); rrun-cri has no pause process.
#
#   sudo bash bench/cni.sh
#
# Each server runs in a network namespace the benchmark makes (its bridge, veths and
# addresses exist only there; host-local's state in its temp dir) and is removed after,
# with every pod (integration-tests/src/bin/cni-bench.rs, on the test harness).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench_name=cni-bench
# shellcheck source=bench/lib.sh
source bench/lib.sh

runs="${CNI_BENCH_RUNS:-20}"
concurrent="${CNI_BENCH_CONCURRENT:-100}"
# CNI_BENCH_PROFILE=debug: the debug build (quicker to build; say so when quoting it).
profile="${CNI_BENCH_PROFILE:-release}"
case "$profile" in
release) log "cargo build --release"; flag=(--release) ;;
debug) log "cargo build (debug)"; flag=() ;;
*) die "CNI_BENCH_PROFILE must be release or debug" ;;
esac
# Two builds: `--bin` would narrow the first to that one binary.
cargo build "${flag[@]}" -p rrun -p rrun-cri
cargo build "${flag[@]}" -p integration-tests --bin cni-bench
export RRUN_CRI_BIN="$PWD/target/$profile/rrun-cri"
export RRUN_BIN="$PWD/target/$profile/rrun"
load_before="$(uptime)"
out="$("target/$profile/cni-bench" "$runs" "$concurrent")"
load_after="$(uptime)"

printf '%s\n' "$out" | awk -v runs="$runs" -v conc="$concurrent" -v profile="$profile" '
    $2 == "failed:" { failed[$1] = $0; next }
    $2 == "single" { med[$1] = $3; min[$1] = $4; max[$1] = $5 }
    $2 == "concurrent" { tot[$1] = $3 }
    END {
        printf "RunPodSandbox on a CNI bridge (%s build): median of %d pods, and %d at once (ms)\n", profile, runs, conc
        printf "%-12s %8s %8s %8s %12s\n", "endpoint", "median", "min", "max", conc " at once"
        for (e in failed) printf "%s\n", failed[e]
        for (e in med) printf "%-12s %8.1f %8.1f %8.1f %12.1f\n", e, med[e], min[e], max[e], tot[e]
        if (("rrun-cri" in med) && ("containerd" in med) && med["containerd"] > 0 && tot["containerd"] > 0)
            printf "rrun-cri / containerd: %.2fx (one pod), %.2fx (%d at once)\n", med["rrun-cri"] / med["containerd"], tot["rrun-cri"] / tot["containerd"], conc
    }'
printf 'load before: %s\nload after:  %s\n' "$load_before" "$load_after"
