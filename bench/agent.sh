#!/usr/bin/env bash
# rrun-kubelet through rrun-cri and through containerd 1.6's CRI: the time from a pod's
# manifest written to the pod Ready (median, p90, and until all are Ready), for 1 and for
# 100 pods (one manifest file each, written at once), and the agent's RSS and CPU over 30 s
# of steady state with those pods probed (an exec readiness probe every 10 s).
#
#   sudo bash bench/agent.sh            # 1 and 100 pods, both endpoints
#   PODS="1 10" bash bench/agent.sh
#
# It runs the ignored `bench_*` tests of integration-tests/tests/kubelet_pods.rs (the same
# node of namespaces, engines and agent harness as the tests) on debug builds of the agent
# and rrun-cri, and prints their BENCH lines.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -x "$HOME/.cargo/bin/cargo" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
cargo build -q -p rrun -p rrun-cri -p rrun-kubelet
export RRUN_BIN="${RRUN_BIN:-$PWD/target/debug/rrun}"
export RRUN_CRI_BIN="${RRUN_CRI_BIN:-$PWD/target/debug/rrun-cri}"
for n in ${PODS:-1 100}; do
    for t in bench_rrun_cri bench_containerd; do
        RRUN_AGENT_BENCH_PODS=$n cargo nextest run --cargo-quiet -p integration-tests --test kubelet_pods \
            --run-ignored only --no-capture "$t" 2>&1 | grep '^BENCH' || {
            echo "bench/agent.sh: $t with $n pods failed" >&2
            exit 1
        }
    done
done
