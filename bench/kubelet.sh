#!/usr/bin/env bash
# Manifest written → container Running under the stock kubelet (Debian bookworm's v1.20,
# built once per machine by scripts/kubelet.sh), containerd 1.6's CRI vs rrun-cri, side
# by side in one run: the median of KUBELET_BENCH_PODS (default 10) hostNetwork pods per
# endpoint, after one warm-up pod, each pod removed before the next.
#
#   sudo bash bench/kubelet.sh
#
# Everything runs on the stock-kubelet test's node (integration-tests/src/kubelet.rs):
# the kubelet and the CRI server in a network and mount namespace of their own, with
# their dirs and cgroups (rrun-test/kubelet-bench-*) private and removed after. Most of
# the time is the kubelet's own: its file source and pod workers, its PLEG relisting every
# second, its status updates (read from its read-only port, polled every 10 ms).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench_name=kubelet-bench
# shellcheck source=bench/lib.sh
source bench/lib.sh

pods="${KUBELET_BENCH_PODS:-10}"
log "the stock kubelet (scripts/kubelet.sh; builds it the first time, several minutes)"
bash scripts/kubelet.sh >/dev/null || die "the kubelet could not be built"
# KUBELET_BENCH_PROFILE=debug: the debug build (quicker to build; rrun-cri's share of
# the figure is small next to the kubelet's, but say so when quoting it).
profile="${KUBELET_BENCH_PROFILE:-release}"
case "$profile" in
release) log "cargo build --release"; flag=(--release) ;;
debug) log "cargo build (debug)"; flag=() ;;
*) die "KUBELET_BENCH_PROFILE must be release or debug" ;;
esac
# Two commands: with --bin, cargo builds only that binary of every package named.
cargo build "${flag[@]}" -p rrun -p rrun-cri -p rootfs-fixtures
cargo build "${flag[@]}" -p integration-tests --bin kubelet-bench
export RRUN_CRI_BIN="$PWD/target/$profile/rrun-cri"
export RRUN_BIN="$PWD/target/$profile/rrun"
load_before="$(uptime)"
out="$("target/$profile/kubelet-bench" "$pods")"
load_after="$(uptime)"

printf '%s\n' "$out" | awk -v pods="$pods" -v profile="$profile" '
    $2 == "failed:" { failed[$1] = $0; next }
    { med[$1] = $2; min[$1] = $3; max[$1] = $4 }
    END {
        printf "manifest written -> container Running, stock kubelet v1.20, median of %d pods (ms, %s build)\n", pods, profile
        printf "%-12s %8s %8s %8s\n", "endpoint", "median", "min", "max"
        for (e in failed) printf "%s\n", failed[e]
        for (e in med) printf "%-12s %8d %8d %8d\n", e, med[e], min[e], max[e]
        if (("RrunCri" in med) && ("Containerd" in med) && med["Containerd"] > 0)
            printf "rrun-cri / containerd: %.2fx\n", med["RrunCri"] / med["Containerd"]
    }'
printf 'load before: %s\nload after:  %s\n' "$load_before" "$load_after"
