#!/usr/bin/env bash
# rrun against runc: the time to `run` /bin/true in a busybox bundle (create, start, wait,
# delete), side by side in one hyperfine run, with the floor the kernel sets: `unshare` of
# the same namespaces running /bin/true. Then the peak RSS of each (GNU time).
#
#   sudo bash bench/run.sh
#
# Environment:
#   BENCH_RUNS (default 100, at least 50), BENCH_WARMUP (10), BENCH_RSS_SAMPLES (10)
#   BENCH_OUT      directory for results (default target/bench); each run writes
#                  hyperfine-<stamp>.json and summary-<stamp>.json there
#   RRUN_BIN       the runtime to measure instead of target/release/rrun (skips the build)
#   RUNC_BIN       the reference runtime (default: runc on PATH)
#   BENCH_CRUN=1   also measure crun (a later issue; see crun_command below)
#   BENCH_SKIP_SETUP=1  do not run scripts/setup.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { printf 'bench: error: %s\n' "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

((EUID == 0)) || die "containers need root: run 'sudo bash bench/run.sh'"
if [[ -x "$HOME/.cargo/bin/cargo" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

runs="${BENCH_RUNS:-100}"
warmup="${BENCH_WARMUP:-10}"
rss_samples="${BENCH_RSS_SAMPLES:-10}"
((runs >= 50)) || die "BENCH_RUNS=$runs: use at least 50 runs"
out="${BENCH_OUT:-$PWD/target/bench}"
stamp="$(date +%Y%m%d-%H%M%S)"

[[ "${BENCH_SKIP_SETUP:-0}" == 1 ]] || bash scripts/setup.sh

if [[ -n "${RRUN_BIN:-}" ]]; then
    cargo build --release -p rootfs-fixtures
    rrun="$RRUN_BIN"
else
    log "cargo build --release"
    cargo build --release -p rrun -p rootfs-fixtures
    rrun="$PWD/target/release/rrun"
fi
fixtures="$PWD/target/release/rrun-fixtures"
runc="${RUNC_BIN:-$(command -v runc || true)}"
[[ -x "$rrun" ]] || die "no rrun binary at $rrun"
[[ -x "$runc" ]] || die "runc not found (scripts/setup.sh installs it)"

work="$(mktemp -d /tmp/rrun-bench.XXXXXX)"
tag="$$"
# A relative cgroupsPath puts each container under the caller's own cgroup, in a
# rrun-bench/ parent, instead of a cgroup named after the container at the hierarchy root.
cgroups_path="rrun-bench/bench-$tag"
rrun_id="bench-rrun-$tag"
runc_id="bench-runc-$tag"
crun_id="bench-crun-$tag"

cleanup() {
    "$rrun" --root "$work/rrun-state" delete --force "$rrun_id" >/dev/null 2>&1 || true
    "$runc" --root "$work/runc-state" delete --force "$runc_id" >/dev/null 2>&1 || true
    # The runtimes remove their container's cgroup; remove what is left of ours, and the
    # rrun-bench parent when nothing else uses it.
    local d
    while IFS= read -r d; do
        [[ -d "$d/bench-$tag" ]] && rmdir "$d/bench-$tag" 2>/dev/null
        rmdir "$d" 2>/dev/null || true
    done < <(find /sys/fs/cgroup -mindepth 1 -maxdepth 6 -type d -name rrun-bench 2>/dev/null)
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

log "bundle in $work/bundle (busybox, process /bin/true, cgroupsPath $cgroups_path)"
"$fixtures" bundle "$work/bundle" -- /bin/true >/dev/null
python3 - "$work/bundle/config.json" "$cgroups_path" <<'EOF'
import json, sys
path, cgroups_path = sys.argv[1], sys.argv[2]
with open(path) as f:
    config = json.load(f)
config.setdefault("linux", {})["cgroupsPath"] = cgroups_path
with open(path, "w") as f:
    json.dump(config, f, indent=2)
EOF

# The limits run: the same container with memory, cpu and pids limits, so the cost of
# writing them (cgroup setup beyond mkdir + join) shows beside runc's.
mkdir -p "$work/bundle-limits"
python3 - "$work/bundle/config.json" "$work/bundle-limits/config.json" "$work/bundle" <<'EOF2'
import json, os, sys
src, dst, bundle = sys.argv[1:4]
with open(src) as f:
    config = json.load(f)
config["root"]["path"] = os.path.join(bundle, config["root"]["path"])
config["linux"]["resources"] = dict(config["linux"].get("resources") or {}, **{
    "memory": {"limit": 64 << 20, "reservation": 32 << 20},
    "cpu": {"shares": 512, "quota": 50000, "period": 100000},
    "pids": {"limit": 64},
})
with open(dst, "w") as f:
    json.dump(config, f, indent=2)
EOF2

# One command per runtime. hyperfine runs them without a shell (-N): what is timed is the
# runtime alone. The --prepare step (not timed) removes a container a failed run may have
# left, so every run starts from the same state with the same id.
rrun_cmd="$rrun --root $work/rrun-state run --bundle $work/bundle $rrun_id"
runc_cmd="$runc --root $work/runc-state run --bundle $work/bundle $runc_id"
floor_cmd="unshare --pid --mount --uts --ipc --net --fork /bin/true"
prepare() { printf "sh -c '%s --root %s delete --force %s >/dev/null 2>&1 || true'" "$1" "$2" "$3"; }

names=(rrun runc floor rrun-limits runc-limits)
cmds=("$rrun_cmd" "$runc_cmd" "$floor_cmd"
    "$rrun --root $work/rrun-state run --bundle $work/bundle-limits $rrun_id"
    "$runc --root $work/runc-state run --bundle $work/bundle-limits $runc_id")
preps=("$(prepare "$rrun" "$work/rrun-state" "$rrun_id")"
    "$(prepare "$runc" "$work/runc-state" "$runc_id")"
    "true"
    "$(prepare "$rrun" "$work/rrun-state" "$rrun_id")"
    "$(prepare "$runc" "$work/runc-state" "$runc_id")")

# crun: a later issue. Debian's crun refuses this machine's hybrid cgroup layout (v1
# controllers plus a cgroup2 mount at /sys/fs/cgroup/unified); hiding the cgroup2 mount in a
# private mount namespace makes it take the v1 path. Not yet measured or verified here.
crun_command() {
    local crun="$1"
    printf "unshare -m --propagation private sh -c 'mount -t tmpfs none /sys/fs/cgroup/unified && exec %s --root %s run --bundle %s %s'" \
        "$crun" "$work/crun-state" "$work/bundle" "$crun_id"
}
if [[ "${BENCH_CRUN:-0}" == 1 ]]; then
    crun="$(command -v crun || true)"
    [[ -n "$crun" ]] || die "BENCH_CRUN=1 but crun is not installed (apt-get install crun)"
    names+=(crun)
    cmds+=("$(crun_command "$crun")")
    preps+=("$(prepare "$crun" "$work/crun-state" "$crun_id")")
fi

args=(-N --warmup "$warmup" --runs "$runs" --style basic)
for i in "${!cmds[@]}"; do
    args+=(--prepare "${preps[$i]}" --command-name "${names[$i]}")
done
mkdir -p "$out"
json="$out/hyperfine-$stamp.json"
log "hyperfine: ${names[*]} ($warmup warmup, $runs runs each)"
hyperfine "${args[@]}" --export-json "$json" "${cmds[@]}"

# Peak RSS: GNU time's "Maximum resident set size" of a whole run (the runtime and the
# children it waits for), the largest of BENCH_RSS_SAMPLES runs. The commands are the same
# strings hyperfine got; eval splits them the same way (no paths with spaces).
peak_rss_kib() {
    local prep="$1" cmd="$2" max=0 kib i
    for ((i = 0; i < rss_samples; i++)); do
        eval "$prep"
        eval "/usr/bin/time -v -o $work/time.txt $cmd" >/dev/null 2>&1 ||
            die "failed under /usr/bin/time: $cmd"
        kib="$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$work/time.txt")"
        [[ -n "$kib" ]] || die "no RSS from /usr/bin/time -v $cmd"
        ((kib > max)) && max="$kib"
    done
    echo "$max"
}
log "peak RSS ($rss_samples runs each)"
rss_json="{"
for i in "${!cmds[@]}"; do
    rss_json+="\"${names[$i]}\": $(peak_rss_kib "${preps[$i]}" "${cmds[$i]}"),"
done
rss_json="${rss_json%,}}"

summary="$out/summary-$stamp.json"
python3 - "$json" "$summary" "$rss_json" <<'EOF'
import json, platform, sys
json_path, summary_path = sys.argv[1], sys.argv[2]
rss = json.loads(sys.argv[3])
with open(json_path) as f:
    results = {r["command"]: r for r in json.load(f)["results"]}
ms = lambda s: s * 1000.0

print()
print(f"{'':8} {'median':>10} {'mean':>10} {'stddev':>9} {'min':>9} {'max':>9} {'peak RSS':>10}")
for name, r in results.items():
    kib = f"{rss[name]} KiB" if name in rss else "-"
    print(f"{name:8} {ms(r['median']):8.2f}ms {ms(r['mean']):8.2f}ms {ms(r['stddev']):7.2f}ms "
          f"{ms(r['min']):7.2f}ms {ms(r['max']):7.2f}ms {kib:>10}")
med = {n: r["median"] for n, r in results.items()}
ratio = med["rrun"] / med["runc"]
print()
print(f"median time, rrun/runc: {ratio:.2f}x"
      f"  ({'faster' if ratio < 1 else 'slower'} than runc by {abs(1 - ratio) * 100:.0f}%)")
print(f"above the unshare floor: rrun +{ms(med['rrun'] - med['floor']):.2f}ms,"
      f" runc +{ms(med['runc'] - med['floor']):.2f}ms")
print(f"peak RSS, rrun/runc: {rss['rrun'] / rss['runc']:.2f}x")
if "rrun-limits" in med:
    print(f"with memory/cpu/pids limits, rrun/runc: {med['rrun-limits'] / med['runc-limits']:.2f}x"
          f"  (cost of the limits: rrun +{ms(med['rrun-limits'] - med['rrun']):.2f}ms,"
          f" runc +{ms(med['runc-limits'] - med['runc']):.2f}ms)")
if "crun" in med:
    print(f"median time, rrun/crun: {med['rrun'] / med['crun']:.2f}x")

with open(summary_path, "w") as f:
    json.dump({
        "host": {"kernel": platform.release(), "machine": platform.machine()},
        "median_ms": {n: round(ms(v), 3) for n, v in med.items()},
        "peak_rss_kib": rss,
        "ratio_rrun_runc_median": round(ratio, 3),
        "ratio_rrun_runc_rss": round(rss["rrun"] / rss["runc"], 3),
        "ratio_rrun_runc_limits_median": round(med["rrun-limits"] / med["runc-limits"], 3)
        if "rrun-limits" in med else None,
        "runs": len(next(iter(results.values()))["times"]),
    }, f, indent=2)
print(f"\nresults: {json_path}\nsummary: {summary_path}")
EOF
