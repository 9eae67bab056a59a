#!/usr/bin/env bash
# rrun-kubelet's Kubernetes API under kubectl, with 100 pods on the node: `kubectl get pods`
# end to end and the server's own time for the list (the Table kubectl asks for, and the
# JSON list), `kubectl apply -f` of a 20-object file (first created, then unchanged), the
# watch latency (a label patch to its event), and the agent's RSS and CPU over 30 s of
# steady state with the pods (and with 5 idle `kubectl get pods -w` open). A few minutes.
#
#   sudo bash bench/api.sh
#
# It runs the ignored `bench_api` test of integration-tests/tests/kubectl_bench.rs (the
# node of namespaces, rrun-cri and agent harness of the kubectl_* tests, kubectl 1.33, curl
# and the Python `kubernetes` client in the node's network namespace) on RELEASE builds of
# the agent and rrun-cri, and prints its BENCH lines.
#
# Environment:
#   API_BENCH_PODS (default 100)   pods on the node (one Deployment)
#   API_BENCH_RUNS (default 30)    rounds of get pods (kubectl, curl Table, curl JSON)
#   RRUN_KUBELET_AGENT_BIN, RRUN_CRI_BIN   the binaries (default: target/release/...,
#                                  built by the script)
#   API_BENCH_SKIP_BUILD=1         use the binaries as they are
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench_name=api-bench
# shellcheck source=bench/lib.sh
source bench/lib.sh

if [[ "${API_BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release -p rrun-kubelet -p rrun-cri"
    cargo build -q --release -p rrun-kubelet -p rrun-cri
fi
export RRUN_KUBELET_AGENT_BIN="${RRUN_KUBELET_AGENT_BIN:-$PWD/target/release/rrun-kubelet}"
export RRUN_CRI_BIN="${RRUN_CRI_BIN:-$PWD/target/release/rrun-cri}"
for b in "$RRUN_KUBELET_AGENT_BIN" "$RRUN_CRI_BIN"; do
    [[ -x "$b" ]] || die "no $b: build it (or unset API_BENCH_SKIP_BUILD)"
done
[[ -x /usr/lib/google-cloud-sdk/bin/kubectl.1.33 ]] || die "kubectl 1.33 not found (scripts/setup.sh)"
python3 -c 'import kubernetes' 2>/dev/null || die "python3's kubernetes client not found (scripts/setup.sh)"
command -v curl >/dev/null || die "curl not found"

export RRUN_API_BENCH_PODS="${API_BENCH_PODS:-100}"
export RRUN_API_BENCH_RUNS="${API_BENCH_RUNS:-30}"
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
log "agent $RRUN_KUBELET_AGENT_BIN, rrun-cri $RRUN_CRI_BIN, $RRUN_API_BENCH_PODS pods"
out="$(mktemp /tmp/rrun-api-bench.XXXXXX)"
trap 'rm -f "$out"' EXIT
if ! cargo nextest run --cargo-quiet -p integration-tests --test kubectl_bench --run-ignored only \
    --no-capture bench_api >"$out" 2>&1; then
    tail -n 60 "$out" >&2
    die "bench_api failed (output above)"
fi
grep '^BENCH' "$out"
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) CPUs; Linux $(uname -r)"
