#!/usr/bin/env bash
# rrun-kubelet's Deployments and Services on rrun-cri (release builds): the time to roll 10
# httpd replicas from v1 to v2 (maxSurge 25%, maxUnavailable 0, a readiness probe every
# 1 s; from the manifest written to the Deployment complete), and requests per second
# through a Service's ClusterIP (the node's nftables DNAT) against straight to its pod's
# IP, side by side in one run, with their ratio: the proxy's cost is measured on a Service
# of one pod against that pod (the 10 replicas' ClusterIP is printed too: it also spreads
# the load over ten httpd processes).
#
#   sudo bash bench/rollout.sh
#   RRUN_ROLLOUT_BENCH_SECS=10 sudo bash bench/rollout.sh   # longer rate rounds
#
# It runs the ignored `bench_rollout` test of integration-tests/tests/kubelet_rollout_cli.rs
# (the tests' node of namespaces, engine and agent harness): one client thread in the
# node's network namespace sends HTTP/1.0 GETs one after another (a new connection each,
# so the DNAT is paid on every request); three alternating rounds per path after a warm-up,
# medians printed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench_name=rollout-bench
# shellcheck source=bench/lib.sh
source bench/lib.sh

# ROLLOUT_BENCH_PROFILE=debug: the debug build (the release build of the agent, with LTO,
# takes long on a small machine; the requests' path is the kernel's either way, the
# rollout's time includes the agent's and rrun-cri's work: say which when quoting it).
profile="${ROLLOUT_BENCH_PROFILE:-release}"
case "$profile" in
release) log "cargo build --release (rrun, rrun-cri, rrun-kubelet)"; flag=(--release) ;;
debug) log "cargo build (debug)"; flag=() ;;
*) die "ROLLOUT_BENCH_PROFILE must be release or debug" ;;
esac
cargo build "${flag[@]}" -p rrun -p rrun-cri -p rrun-kubelet
export RRUN_BIN="$PWD/target/$profile/rrun"
export RRUN_CRI_BIN="$PWD/target/$profile/rrun-cri"
export RRUN_KUBELET_AGENT_BIN="$PWD/target/$profile/rrun-kubelet"
load_before="$(uptime)"
out="$(cargo nextest run -p integration-tests --test kubelet_rollout_cli --run-ignored only \
    --no-capture bench_rollout 2>&1)" || {
    printf '%s\n' "$out" | tail -40 >&2
    die "bench_rollout failed"
}
load_after="$(uptime)"
printf '%s\n' "$out" | awk -v profile="$profile" '
    $1 == "BENCH" { v[$2] = $3 }
    END {
        printf "%-44s %10s\n", "rrun-kubelet on rrun-cri (" profile ")", "value"
        printf "%-44s %10.1f\n", "roll 10 replicas v1 -> v2 (s)", v["roll_10_replicas_ms"] / 1000
        printf "%-44s %10d\n", "requests/s, ClusterIP of the 10 replicas", v["rps_cluster_ip_10"]
        printf "%-44s %10d\n", "requests/s, ClusterIP of a 1-pod Service", v["rps_cluster_ip"]
        printf "%-44s %10d\n", "requests/s, that pod'"'"'s IP", v["rps_pod_ip"]
        if (v["rps_pod_ip"] > 0) {
            r = v["rps_cluster_ip"] / v["rps_pod_ip"]
            printf "ClusterIP / pod IP: %.3f (the proxy costs %.1f%%)\n", r, (1 - r) * 100
        }
    }'
printf 'load before: %s\nload after:  %s\n' "$load_before" "$load_after"
