#!/usr/bin/env bash
# The CRI server rrun-cri beside containerd's CRI plugin (Debian's containerd 1.6): pod
# start latency and memory, measured over their sockets by target/release/cri-bench.
#
#   sudo bash bench/cri.sh
#
# Pod start latency: RunPodSandbox + CreateContainer + StartContainer until ContainerStatus
# says RUNNING, for one busybox `sleep 3600` container, CRI_BENCH_RUNS times (default 30)
# after 3 warmups; every pod torn down untimed (StopPodSandbox, RemovePodSandbox).
#
# containerd runs without CNI (offline, no plugins installed), so the comparison uses
# pods on the node's network (namespace_options.network = NODE) for BOTH servers;
# rrun-cri is measured a second time with pods of their own network namespace (pinned,
# a loopback only) for its own figure.
#
# Memory: each server's idle RSS (VmRSS, and Pss / Private_Clean+Private_Dirty from
# /proc/PID/smaps_rollup) after the image import and before any pod, then with 10 pods
# running (cri-bench --keep 10): the server again, and the per-pod processes: rrun-cri's
# container monitor; containerd's containerd-shim-runc-v2 (one per pod) plus the pod's
# sandbox ("pause") process. There is no registry here: containerd's sandbox image
# registry.k8s.io/pause:3.6 is the fixtures' busybox with the entrypoint `sleep
# 2147483647`, imported locally, so its "pause" is a busybox sleep, not the real pause.
#
# Everything lives in a temp dir: both servers' roots, state, sockets, pod logs.
# containerd runs in a private mount namespace with a tmpfs of its own on /run (its 1.6
# shims put their sockets in /run/containerd/s), so none of its mounts reach the host.
# Every pod has a relative cgroup parent rrun-bench/cri-<pid>/pod-... (below the
# servers' own cgroups). The trap stops everything, unmounts what is left under the temp
# dir and removes our cgroups, also when the script fails; the script checks that the
# servers left nothing (mounts, cgroups, monitors, shims) before that.
#
# Environment:
#   CRI_BENCH_RUNS (default 30), CRI_BENCH_WARMUP (3), CRI_BENCH_KEEP (10)
#   CRI_BENCH_ROUNDS (3)   the runs are split into rounds; each round measures the three
#                  variants one after the other (each with its own warmups), so that a
#                  change of load hits all alike; the figures are over all rounds' samples
#   BENCH_OUT      directory for results (default target/bench): cri-<variant>-r<round>-<stamp>.json
#                  from cri-bench, cri-summary-<stamp>.json
#   CRI_BENCH_SKIP_BUILD=1   use the release binaries as they are
#   CRI_BENCH_CLIENT=PATH    the cri-bench client to measure with (default
#                  target/release/cri-bench); the same client measures every server
#   CRI_BENCH_CONTAINERD=0   leave containerd out
#   CRI_BENCH_BASELINE=PATH  another rrun-cri binary (e.g. the release build of an older
#                  commit, for a before/after) served beside the first from a dir of its own
#                  and measured the same way: its host-network and pod-network variants
#                  (`baseline-*`) take turns with rrun-cri's in every round (which of the two
#                  goes first alternates), and its memory is measured too. It serves with its
#                  own runtime library, so the rrun it runs is the one it was built with.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench_name=cri-bench
# shellcheck source=bench/lib.sh
source bench/lib.sh

runs="${CRI_BENCH_RUNS:-30}"
warmup="${CRI_BENCH_WARMUP:-3}"
keep="${CRI_BENCH_KEEP:-10}"
rounds="${CRI_BENCH_ROUNDS:-3}"
((runs >= 1 && rounds >= 1)) || die "CRI_BENCH_RUNS and CRI_BENCH_ROUNDS must be at least 1"
with_containerd="${CRI_BENCH_CONTAINERD:-1}"
out="${BENCH_OUT:-$PWD/target/bench}"
stamp="$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"

if [[ "${CRI_BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release"
    # Two commands: with --bin, cargo builds only that binary of every package named.
    cargo build --release -p rrun -p rrun-cri -p rootfs-fixtures
    cargo build --release -p integration-tests --bin cri-bench
fi
rel="$PWD/target/release"
client="${CRI_BENCH_CLIENT:-$rel/cri-bench}"
for b in "$rel/rrun-cri" "$rel/rrun-fixtures" "$client"; do
    [[ -x "$b" ]] || die "no $b: build it (or unset CRI_BENCH_SKIP_BUILD)"
done
if [[ "$with_containerd" == 1 ]]; then
    for b in containerd ctr containerd-shim-runc-v2 runc; do
        command -v "$b" >/dev/null || die "$b not found (scripts/setup.sh installs containerd), or CRI_BENCH_CONTAINERD=0"
    done
fi

load_before="$(uptime)" # after the build
work="$(mktemp -d /tmp/rrun-cri-bench.XXXXXX)"
chmod 755 "$work"
tag="$$"
cg_parent="rrun-bench/cri-$tag"
image=localhost/rrun-bench-busybox:1
pause_image=registry.k8s.io/pause:3.6
r_dir="$work/rrun"
c_dir="$work/containerd"
b_dir="$work/baseline"
b_sock="$b_dir/cri.sock"
baseline="${CRI_BENCH_BASELINE:-}"
if [[ -n "$baseline" ]]; then
    [[ -x "$baseline" ]] || die "CRI_BENCH_BASELINE=$baseline: not an executable"
    baseline="$(realpath "$baseline")"
fi
base_pid=""
r_sock="$r_dir/cri.sock"
c_sock="$c_dir/containerd.sock"
rrun_pid=""
cd_pid=""
bench_pids=()
problems=()

# --- helpers -------------------------------------------------------------------------

# Every cgroup dir of ours: <hierarchy>[/<own path>]/rrun-bench/cri-<tag>.
our_cgroups() {
    find /sys/fs/cgroup -mindepth 1 -maxdepth 7 -type d -path "*/rrun-bench/cri-$tag" -prune 2>/dev/null
}
# Pids in our cgroups.
cgroup_pids() {
    local d
    while IFS= read -r d; do
        find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null
    done < <(our_cgroups) | sort -un
}
# Pids (but ours) whose command line holds $1 (and whose argv[0] holds $2, if given).
pids_with_cmdline() {
    python3 - "$$" "$@" <<'EOF'
import os, sys
me, needle = int(sys.argv[1]), sys.argv[2].encode()
argv0 = sys.argv[3].encode() if len(sys.argv) > 3 else b""
skip = {me, os.getpid(), os.getppid()}
for p in os.listdir("/proc"):
    if not p.isdigit() or int(p) in skip:
        continue
    try:
        with open(f"/proc/{p}/cmdline", "rb") as f:
            cl = f.read()
    except OSError:
        continue
    if needle in cl and argv0 in cl.split(b"\0")[0]:
        print(p)
EOF
}
# Mount points at or below $1 in the mount namespace of pid $2 (default: ours).
mounts_under() {
    local pid="${2:-self}"
    awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' "/proc/$pid/mountinfo" 2>/dev/null
}
# Memory of pids as JSON: VmRSS, and Rss/Pss/Private from smaps_rollup, in KiB.
mem_json() {
    python3 - "$@" <<'EOF'
import json, sys
out = []
for p in sys.argv[1:]:
    d = {"pid": int(p)}
    try:
        with open(f"/proc/{p}/cmdline", "rb") as f:
            d["cmd"] = f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
        with open(f"/proc/{p}/status") as f:
            for l in f:
                if l.startswith("VmRSS:"):
                    d["vmrss_kib"] = int(l.split()[1])
        with open(f"/proc/{p}/smaps_rollup") as f:
            r = {}
            for l in f:
                k, _, v = l.partition(":")
                if v.strip().endswith("kB"):
                    r[k.strip()] = int(v.split()[0])
        d["rss_kib"] = r.get("Rss", 0)
        d["pss_kib"] = r.get("Pss", 0)
        d["private_kib"] = r.get("Private_Clean", 0) + r.get("Private_Dirty", 0)
    except OSError as e:
        d["error"] = str(e)
    out.append(d)
print(json.dumps(out))
EOF
}
wait_gone() { # pid, seconds
    local i
    for ((i = 0; i < $2 * 20; i++)); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.05; done
    return 1
}
stop_pid() { # pid: TERM, then KILL after 10 s
    [[ -n "$1" ]] || return 0
    kill -TERM "$1" 2>/dev/null || return 0
    wait_gone "$1" 10 || kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null || true
}
shim_pids() { pids_with_cmdline "$c_sock" containerd-shim; }
monitor_pids() { # the rrun-cri processes of our temp dir (or of dir $1) but the server
    local p b
    for p in $(pids_with_cmdline "${1:-$r_dir}/"); do
        [[ "$p" == "$rrun_pid" || "$p" == "$base_pid" ]] && continue
        for b in "${bench_pids[@]}"; do [[ "$p" == "$b" ]] && continue 2; done
        echo "$p"
    done
}
# Cgroup dirs below the pod parents (the servers' own: containers, sandboxes, pods).
cgroup_leftovers() {
    local d
    while IFS= read -r d; do
        find "$d" -mindepth 2 -type d 2>/dev/null
    done < <(our_cgroups)
}

cleanup() {
    set +e
    local p d
    for p in "${bench_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
    for p in "${bench_pids[@]}"; do wait_gone "$p" 30 || kill -KILL "$p" 2>/dev/null; done
    stop_pid "$rrun_pid"
    stop_pid "$base_pid"
    stop_pid "$cd_pid"
    # Whatever a failed run left: shims, monitors, containers (in our cgroups).
    for _ in 1 2 3; do
        for p in $(shim_pids) $(pids_with_cmdline "$work/") $(cgroup_pids); do
            kill -KILL "$p" 2>/dev/null
        done
        sleep 0.1
    done
    # rrun-cri's mounts are in our mount namespace (containerd's went with its own).
    for _ in 1 2 3; do
        mounts_under "$work" | sort -r | while IFS= read -r d; do umount -l "$d" 2>/dev/null; done
    done
    while IFS= read -r d; do
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
        rmdir "$(dirname "$d")" 2>/dev/null # rrun-bench, unless someone else uses it
    done < <(our_cgroups)
    if [[ -n "$(mounts_under "$work")" ]]; then
        echo "cri-bench: mounts left under $work, not removing it" >&2
    else
        rm -rf --one-file-system "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Starts cri-bench in the background; sets bench_pid.
start_bench() {
    "$client" --cgroup-parent "$cg_parent" "$@" &
    bench_pid=$!
    bench_pids+=("$bench_pid")
}
# Runs cri-bench to the end (the latency runs of one round).
run_bench() {
    local name="$1" round="$2" n="$3"; shift 3
    log "cri-bench $name, round $round: $n runs"
    start_bench --name "$name" --json "$out/cri-$name-r$round-$stamp.json" --runs "$n" --warmup "$warmup" \
        --log-root "$work/logs/$name-$round" "$@"
    wait "$bench_pid" || { log "cri-bench $name failed"; return 1; }
}
# Starts cri-bench --keep and waits until its pods run: sets bench_pid, ready file $work/ready-<name>.json.
keep_bench() {
    local name="$1"; shift
    log "cri-bench $name: $keep pods kept running"
    start_bench --name "$name" --runs 0 --warmup 0 --keep "$keep" --ready-file "$work/ready-$name.json" \
        --log-root "$work/logs/$name" "$@" >/dev/null
    local i
    for ((i = 0; i < 6000; i++)); do
        [[ -f "$work/ready-$name.json" ]] && return 0
        kill -0 "$bench_pid" 2>/dev/null || die "cri-bench $name (keep) exited"
        sleep 0.05
    done
    die "cri-bench $name: pods not running within 300 s"
}
release_bench() {
    kill -USR1 "$bench_pid"
    wait "$bench_pid" || die "cri-bench: removing the kept pods failed"
}
wait_socket() { # socket, pid, log, what
    local i
    for ((i = 0; i < 600; i++)); do
        [[ -S "$1" ]] && return 0
        kill -0 "$2" 2>/dev/null || die "$4 exited: $(tail -5 "$3")"
        sleep 0.05
    done
    die "$4: no socket $1 within 30 s: $(tail -5 "$3")"
}
problem() { problems+=("$*"); printf 'cri-bench: LEFT BEHIND: %s\n' "$*" >&2; }

# --- images --------------------------------------------------------------------------

mkdir -p "$r_dir/root" "$r_dir/run" "$c_dir" "$work/logs"
log "busybox image archives in $work"
"$rel/rrun-fixtures" image "$work/busybox.tar" --ref "$image" >/dev/null
"$rel/rrun-fixtures" image "$work/pause.tar" --ref "$pause_image" --entrypoint "sleep 2147483647" >/dev/null

# --- rrun-cri ------------------------------------------------------------------------

log "rrun-cri in $r_dir"
"$rel/rrun-cri" --root "$r_dir/root" image import "$work/busybox.tar" >/dev/null
# An empty CNI conf dir of its own: the default /etc/cni/net.d may hold a config (podman's
# bridge) that would wire the pods into the machine's own network namespace.
"$rel/rrun-cri" --socket "$r_sock" --root "$r_dir/root" --runtime-root "$r_dir/run" \
    --cni-conf-dir "$r_dir/cni-conf" </dev/null >"$r_dir/server.log" 2>&1 &
rrun_pid=$!
wait_socket "$r_sock" "$rrun_pid" "$r_dir/server.log" rrun-cri

if [[ -n "$baseline" ]]; then
    log "baseline rrun-cri ($baseline) in $b_dir"
    mkdir -p "$b_dir/root" "$b_dir/run"
    "$baseline" --root "$b_dir/root" image import "$work/busybox.tar" >/dev/null
    # A build from before CNI support has no --cni-conf-dir, and no CNI: its own-network
    # pods get a loopback only, as with the empty conf dir above.
    b_cni=()
    "$baseline" --help 2>/dev/null | grep -q -- --cni-conf-dir && b_cni=(--cni-conf-dir "$b_dir/cni-conf")
    "$baseline" --socket "$b_sock" --root "$b_dir/root" --runtime-root "$b_dir/run" "${b_cni[@]}" \
        </dev/null >"$b_dir/server.log" 2>&1 &
    base_pid=$!
    wait_socket "$b_sock" "$base_pid" "$b_dir/server.log" "baseline rrun-cri"
fi

# --- containerd ----------------------------------------------------------------------

cd_status="not run (CRI_BENCH_CONTAINERD=0)"
if [[ "$with_containerd" == 1 ]]; then
    log "containerd (CRI plugin) in $c_dir"
    mkdir -p "$c_dir/cni-bin" "$c_dir/cni-conf"
    cat >"$c_dir/config.toml" <<EOF
version = 2
root = "$c_dir/root"
state = "$c_dir/state"
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]
[grpc]
  address = "$c_sock"
[ttrpc]
  address = "$c_sock.ttrpc"
[plugins."io.containerd.monitor.v1.cgroups"]
  no_prometheus = true
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_image"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$c_dir/cni-bin"
    conf_dir = "$c_dir/cni-conf"
EOF
    unshare -m --propagation private sh -c \
        "mount -t tmpfs -o mode=0755 rrun-cri-bench-run /run && exec containerd --config $c_dir/config.toml" \
        </dev/null >"$c_dir/containerd.log" 2>&1 &
    cd_pid=$!
    ctr_k8s=(ctr --address "$c_sock" --namespace k8s.io)
    for ((i = 0; i < 600; i++)); do
        "${ctr_k8s[@]}" version >/dev/null 2>&1 && break
        kill -0 "$cd_pid" 2>/dev/null || break
        sleep 0.05
    done
    if ! "${ctr_k8s[@]}" version >/dev/null 2>&1; then
        cd_status="containerd did not start: $(grep -i 'level=\(error\|fatal\)' "$c_dir/containerd.log" | tail -3)"
        log "$cd_status"
        stop_pid "$cd_pid"
        cd_pid=""
    elif ! "${ctr_k8s[@]}" images import "$work/busybox.tar" >/dev/null 2>"$c_dir/import.err" ||
        ! "${ctr_k8s[@]}" images import "$work/pause.tar" >/dev/null 2>>"$c_dir/import.err"; then
        cd_status="ctr -n k8s.io images import failed: $(tail -3 "$c_dir/import.err")"
        log "$cd_status"
    elif ! "${ctr_k8s[@]}" plugins ls | grep -q 'io.containerd.grpc.v1 *cri .* ok'; then
        cd_status="containerd's CRI plugin did not load: $("${ctr_k8s[@]}" plugins ls | grep ' cri ')"
        cd_status+="; $(grep 'io.containerd.grpc.v1.cri' "$c_dir/containerd.log" | grep -i 'level=\(error\|fatal\|warn\)' | tail -3)"
        log "$cd_status"
    else
        cd_status=ok
        "${ctr_k8s[@]}" images ls -q >"$c_dir/images.txt"
    fi
fi

# --- idle RSS ------------------------------------------------------------------------

sleep 2
log "idle RSS"
rrun_idle="$(mem_json "$rrun_pid")"
base_idle="null"
[[ -n "$baseline" ]] && base_idle="$(mem_json "$base_pid")"
cd_idle="null"
[[ "$cd_status" == ok ]] && cd_idle="$(mem_json "$cd_pid")"

# --- latency: host network for both, and rrun-cri with pod networks -------------------
# In rounds, the three variants one after the other in each, so that a change of the
# machine's load (other builds) hits all of them alike.

for ((round = 1; round <= rounds; round++)); do
    n=$((runs / rounds + (round <= runs % rounds ? 1 : 0)))
    ((n > 0)) || continue
    # With a baseline, the two rrun-cri builds take turns going first.
    if [[ -n "$baseline" ]] && ((round % 2 == 0)); then
        run_bench baseline-hostnet "$round" "$n" --socket "$b_sock" --image "$image" --host-network ||
            die "baseline rrun-cri failed"
    fi
    run_bench rrun-cri-hostnet "$round" "$n" --socket "$r_sock" --image "$image" --host-network ||
        die "rrun-cri failed"
    if [[ -n "$baseline" ]] && ((round % 2 == 1)); then
        run_bench baseline-hostnet "$round" "$n" --socket "$b_sock" --image "$image" --host-network ||
            die "baseline rrun-cri failed"
    fi
    if [[ "$cd_status" == ok ]]; then
        if ! run_bench containerd-hostnet "$round" "$n" --socket "$c_sock" --image "$image" --host-network; then
            cd_status="cri-bench against containerd failed: $(grep -i 'level=error' "$c_dir/containerd.log" | tail -3)"
        fi
    fi
    if [[ -n "$baseline" ]] && ((round % 2 == 0)); then
        run_bench baseline-podnet "$round" "$n" --socket "$b_sock" --image "$image" ||
            die "baseline rrun-cri failed"
    fi
    run_bench rrun-cri-podnet "$round" "$n" --socket "$r_sock" --image "$image" || die "rrun-cri failed"
    if [[ -n "$baseline" ]] && ((round % 2 == 1)); then
        run_bench baseline-podnet "$round" "$n" --socket "$b_sock" --image "$image" ||
            die "baseline rrun-cri failed"
    fi
done

# --- memory with $keep pods ------------------------------------------------------------

keep_bench rrun-cri-keep --socket "$r_sock" --image "$image" --host-network
sleep 1
rrun_busy="$(mem_json "$rrun_pid")"
mapfile -t mons < <(monitor_pids)
((${#mons[@]} == keep)) || problem "rrun-cri: ${#mons[@]} monitor processes for $keep pods"
rrun_monitors="$(mem_json "${mons[@]}")"
release_bench
base_busy="null"
base_monitors="[]"
if [[ -n "$baseline" ]]; then
    keep_bench baseline-keep --socket "$b_sock" --image "$image" --host-network
    sleep 1
    base_busy="$(mem_json "$base_pid")"
    mapfile -t mons < <(monitor_pids "$b_dir")
    ((${#mons[@]} == keep)) || problem "baseline rrun-cri: ${#mons[@]} monitor processes for $keep pods"
    base_monitors="$(mem_json "${mons[@]}")"
    release_bench
fi
cd_busy="null"
cd_shims="[]"
cd_pauses="[]"
if [[ "$cd_status" == ok ]]; then
    keep_bench containerd-keep --socket "$c_sock" --image "$image" --host-network
    sleep 1
    cd_busy="$(mem_json "$cd_pid")"
    mapfile -t shims < <(shim_pids)
    ((${#shims[@]} == keep)) || problem "containerd: ${#shims[@]} shims for $keep pods"
    cd_shims="$(mem_json "${shims[@]}")"
    mapfile -t pauses < <(python3 -c 'import json,sys; [print(p["sandbox_pid"]) for p in json.load(open(sys.argv[1]))["pods"] if p.get("sandbox_pid")]' "$work/ready-containerd-keep.json")
    ((${#pauses[@]} == keep)) || problem "containerd: ${#pauses[@]} sandbox pids for $keep pods"
    cd_pauses="$(mem_json "${pauses[@]}")"
    release_bench
fi

# --- nothing left? --------------------------------------------------------------------

log "checking for leftovers"
sleep 1
for p in $(monitor_pids); do problem "rrun-cri process $p: $(tr '\0' ' ' <"/proc/$p/cmdline")"; done
for m in $(mounts_under "$r_dir"); do problem "rrun-cri mount $m (server running)"; done
stop_pid "$rrun_pid"
rrun_pid=""
for m in $(mounts_under "$r_dir"); do problem "rrun-cri mount $m (server stopped)"; done
if [[ -n "$baseline" ]]; then
    for p in $(monitor_pids "$b_dir"); do problem "baseline process $p: $(tr '\0' ' ' <"/proc/$p/cmdline")"; done
    for m in $(mounts_under "$b_dir"); do problem "baseline mount $m (server running)"; done
    stop_pid "$base_pid"
    base_pid=""
    for m in $(mounts_under "$b_dir"); do problem "baseline mount $m (server stopped)"; done
fi
if [[ -n "$cd_pid" ]]; then
    for p in $(shim_pids); do problem "containerd shim $p"; done
    for m in $(mounts_under "$c_dir" "$cd_pid" | grep -v "^$c_dir/root/io.containerd.snapshotter.v1.overlayfs$"); do
        problem "containerd mount $m (in its mount namespace, containerd running)"
    done
    stop_pid "$cd_pid"
    cd_pid=""
    for p in $(shim_pids); do problem "containerd shim $p (containerd stopped)"; done
fi
for d in $(cgroup_leftovers); do problem "cgroup $d"; done
for p in $(cgroup_pids); do problem "process $p in our cgroups"; done

# --- table -----------------------------------------------------------------------------

load_after="$(uptime)"
problems_json="$(printf '%s\n' "${problems[@]}" | python3 -c 'import json,sys; print(json.dumps([l for l in sys.stdin.read().splitlines() if l]))')"
python3 - "$out" "$stamp" "$rounds" "$keep" "$cd_status" "$load_before" "$load_after" "$problems_json" \
    "$rrun_idle" "$rrun_busy" "$rrun_monitors" "$cd_idle" "$cd_busy" "$cd_shims" "$cd_pauses" \
    "$(containerd --version 2>/dev/null || echo '?')" "$(runc --version 2>/dev/null | head -1 || echo '?')" \
    "$baseline" "$base_idle" "$base_busy" "$base_monitors" <<'EOF'
import json, os, platform, sys
(out, stamp, rounds, keep, cd_status, load_before, load_after, problems, rrun_idle, rrun_busy, rrun_mon,
 cd_idle, cd_busy, cd_shims, cd_pauses, cd_version, runc_version,
 baseline, base_idle, base_busy, base_mon) = sys.argv[1:22]
keep = int(keep)
J = json.loads
problems, rrun_idle, rrun_busy, rrun_mon = J(problems), J(rrun_idle), J(rrun_busy), J(rrun_mon)
cd_idle, cd_busy, cd_shims, cd_pauses = J(cd_idle), J(cd_busy), J(cd_shims), J(cd_pauses)
base_idle, base_busy, base_mon = J(base_idle), J(base_busy), J(base_mon)

import glob
def stats(v):
    v = sorted(v)
    n = len(v)
    med = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    p90 = v[max(1, min(n, -(-9 * n // 10))) - 1]  # nearest rank, as cri-bench
    return {"median": round(med, 3), "p90": round(p90, 3), "min": round(v[0], 3),
            "max": round(v[-1], 3), "mean": round(sum(v) / n, 3), "n": n}

def bench(name):
    samples, files = [], sorted(glob.glob(os.path.join(out, f"cri-{name}-r*-{stamp}.json")))
    for p in files:
        with open(p) as f:
            samples += json.load(f)["samples"]
    if not samples:
        return None
    r = {"runs": len(samples), "files": files}
    for k in ("total_ms", "run_pod_ms", "create_ms", "start_ms", "running_ms"):
        r[k] = stats([s[k] for s in samples])
    return r

def avg(procs, key):
    v = [p.get(key, 0) for p in procs if "error" not in p]
    return sum(v) / len(v) if v else None

def mib(kib):
    return f"{kib / 1024:.1f} MiB" if kib is not None else "-"

lat = {n: bench(n) for n in ("rrun-cri-hostnet", "containerd-hostnet", "rrun-cri-podnet",
                             "baseline-hostnet", "baseline-podnet")}
def ms(n, k):
    b = lat[n]
    return f"{b['total_ms'][k]:.1f}" if b else "-"

one = lambda l: l[0] if l else {}
print()
print(f"pod start (RunPodSandbox + CreateContainer + StartContainer until RUNNING), ms; "
      f"{lat['rrun-cri-hostnet']['runs'] if lat['rrun-cri-hostnet'] else '?'} runs each "
      f"in {rounds} rounds")
print(f"{'':34} {'median':>8} {'p90':>8} {'mean':>8} {'min':>8} {'max':>8}")
for n, label in (("rrun-cri-hostnet", "rrun-cri, host network"),
                 ("baseline-hostnet", "baseline, host network"),
                 ("containerd-hostnet", "containerd 1.6 CRI, host network"),
                 ("rrun-cri-podnet", "rrun-cri, pod network (pinned ns)"),
                 ("baseline-podnet", "baseline, pod network (pinned ns)")):
    if n.startswith("baseline") and not baseline:
        continue
    print(f"{label:34} {ms(n, 'median'):>8} {ms(n, 'p90'):>8} {ms(n, 'mean'):>8} {ms(n, 'min'):>8} {ms(n, 'max'):>8}")
if baseline:
    print(f"baseline: {baseline}")
    for net in ("hostnet", "podnet"):
        a, b = lat[f"rrun-cri-{net}"], lat[f"baseline-{net}"]
        if a and b:
            print(f"  rrun-cri / baseline, {net}: median {a['total_ms']['median'] / b['total_ms']['median']:.3f}, "
                  f"mean {a['total_ms']['mean'] / b['total_ms']['mean']:.3f}")
print("medians per call (RunPodSandbox / CreateContainer / StartContainer / until RUNNING):")
for n in lat:
    b = lat[n]
    if b:
        print(f"  {n:32} " + " / ".join(f"{b[k]['median']:.1f}" for k in
                                        ("run_pod_ms", "create_ms", "start_ms", "running_ms")))
print()
print(f"memory{'':28} {'rrun-cri':>28} {'containerd':>28}")
def row(label, a, b):
    print(f"{label:34} {a:>28} {b:>28}")
r_i, c_i, r_b, c_b = one(rrun_idle), one(cd_idle or []), one(rrun_busy), one(cd_busy or [])
row("server idle RSS (Pss, private)",
    f"{mib(r_i.get('vmrss_kib'))} ({mib(r_i.get('pss_kib'))}, {mib(r_i.get('private_kib'))})",
    f"{mib(c_i.get('vmrss_kib'))} ({mib(c_i.get('pss_kib'))}, {mib(c_i.get('private_kib'))})" if c_i else "-")
row(f"server with {keep} pods (Pss, private)",
    f"{mib(r_b.get('vmrss_kib'))} ({mib(r_b.get('pss_kib'))}, {mib(r_b.get('private_kib'))})",
    f"{mib(c_b.get('vmrss_kib'))} ({mib(c_b.get('pss_kib'))}, {mib(c_b.get('private_kib'))})" if c_b else "-")
mon_rss, mon_priv = avg(rrun_mon, "rss_kib"), avg(rrun_mon, "private_kib")
shim_rss, shim_priv = avg(cd_shims, "rss_kib"), avg(cd_shims, "private_kib")
pause_rss, pause_priv = avg(cd_pauses, "rss_kib"), avg(cd_pauses, "private_kib")
per_pod_rss = shim_rss + pause_rss if shim_rss is not None and pause_rss is not None else None
per_pod_priv = shim_priv + pause_priv if shim_priv is not None and pause_priv is not None else None
kib = lambda v: f"{v:.0f} KiB" if v is not None else "-"
row("per pod: RSS", f"{kib(mon_rss)} monitor", f"{kib(per_pod_rss)} shim+pause")
row("per pod: private (Clean+Dirty)", f"{kib(mon_priv)} monitor", f"{kib(per_pod_priv)} shim+pause")
if baseline:
    b_i, b_b = one(base_idle or []), one(base_busy or [])
    row("baseline: server idle / with pods",
        f"{mib(b_i.get('vmrss_kib'))} / {mib(b_b.get('vmrss_kib'))}", "")
    row("baseline: per pod monitor RSS/priv",
        f"{kib(avg(base_mon, 'rss_kib'))} / {kib(avg(base_mon, 'private_kib'))}", "")
if cd_shims:
    row("  containerd-shim-runc-v2 RSS/priv", "", f"{kib(shim_rss)} / {kib(shim_priv)}")
    row("  pause (busybox sleep) RSS/priv", "", f"{kib(pause_rss)} / {kib(pause_priv)}")
print()
print("host network for both servers: containerd runs without CNI (offline); rrun-cri's own-network")
print("pods are its own figure. containerd's pause is busybox `sleep` (no registry for the real one).")
if cd_status != "ok":
    print(f"containerd: {cd_status}")
print(f"load before: {load_before.strip()}")
print(f"load after:  {load_after.strip()}")
print(f"{os.cpu_count()} CPUs, Linux {platform.release()}; {cd_version}; {runc_version}")
if problems:
    print("LEFT BEHIND:\n  " + "\n  ".join(problems))
else:
    print("nothing left behind (mounts, cgroups, monitors, shims)")
summary = os.path.join(out, f"cri-summary-{stamp}.json")
with open(summary, "w") as f:
    json.dump({
        "host": {"kernel": platform.release(), "cpus": os.cpu_count(),
                 "load_before": load_before.strip(), "load_after": load_after.strip()},
        "versions": {"containerd": cd_version, "runc": runc_version},
        "containerd_status": cd_status,
        "pod_start_ms": {n: (b["total_ms"] if b else None) for n, b in lat.items()},
        "pod_start_phases_ms": {n: ({k: b[k] for k in ("run_pod_ms", "create_ms", "start_ms",
                                                        "running_ms")} if b else None)
                                for n, b in lat.items()},
        "rounds": int(rounds),
        "memory_kib": {
            "rrun_cri_idle": r_i, "rrun_cri_with_pods": r_b, "rrun_cri_monitors": rrun_mon,
            "containerd_idle": c_i or None, "containerd_with_pods": c_b or None,
            "containerd_shims": cd_shims, "containerd_pauses": cd_pauses,
            "per_pod": {"rrun_cri_monitor_rss": mon_rss, "rrun_cri_monitor_private": mon_priv,
                        "containerd_shim_pause_rss": per_pod_rss,
                        "containerd_shim_pause_private": per_pod_priv},
        },
        "baseline": baseline or None,
        "baseline_memory_kib": {"idle": base_idle, "with_pods": base_busy, "monitors": base_mon}
                               if baseline else None,
        "pods_kept": keep,
        "left_behind": problems,
    }, f, indent=2)
print(f"\nresults: {out}/cri-*-{stamp}.json\nsummary: {summary}")
EOF
((${#problems[@]} == 0)) || exit 1
