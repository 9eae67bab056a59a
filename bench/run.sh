#!/usr/bin/env bash
# rrun against runc and crun, side by side on the same busybox bundle whose process is
# /bin/true, with hyperfine (no shell between hyperfine and the command):
#
#   run     `run` of the bundle, with the default namespaces (pid, net, ipc, uts, mount),
#           and again with memory, cpu and pids limits (`*-limits`), in ONE hyperfine run
#           with the floor (`unshare --pid --mount --uts --ipc --net --fork /bin/true`)
#           and the wrapper alone (see below);
#   create, start, delete   each phase on its own (one hyperfine run per phase, the three
#           runtimes in each; --prepare brings the container to the phase's start state);
#   ctr     `ctr run --rm` of a busybox image through a containerd the bench starts in a
#           temp dir of its own (root, state, socket, config), once per runtime
#           (`--runc-binary`);
#   RSS     the peak RSS of each runtime's `run` (GNU time's maximum resident set size,
#           the largest of BENCH_RSS_SAMPLES runs).
#
# The wrapper: Debian's crun 1.8 refuses this CI host's hybrid cgroup layout (a cgroup2
# mount beside the v1 controllers); hiding the cgroup2 mount under a tmpfs in a private
# mount namespace makes it take the v1 path and changes nothing on the host. For a fair
# comparison EVERY runtime command (the three runtimes, all phases, containerd) runs the
# same way:
#   unshare -m --propagation private sh -c 'mount -t tmpfs none /sys/fs/cgroup/unified && exec RUNTIME ...'
# ("wrapper" in the table is that wrapper exec'ing /bin/true: what it adds to each.) On a
# host without /sys/fs/cgroup/unified (pure v1 or v2) there is nothing to hide and no
# wrapper is used.
#
#   sudo bash bench/run.sh
#
# Environment:
#   BENCH_RUNS (default 100, at least 30), BENCH_WARMUP (10), BENCH_RSS_SAMPLES (10)
#   BENCH_ROUNDS   run each group this many times over, medians over all rounds (default 1;
#                  see hf below)
#   BENCH_OUT      directory for results (default target/bench): hyperfine-<group>-<stamp>-r<round>.json
#                  per group and round, and summary-<stamp>.json (medians, ratios, RSS, host, load)
#   RRUN_BIN       the rrun binary to measure (skips its build; default: a static-pie
#                  build, see below)
#   BENCH_RRUN_DYNAMIC=1  measure the default dynamically linked target/release/rrun
#   RUNC_BIN, CRUN_BIN   the reference runtimes (default: runc and crun on PATH)
#   RRUN_BASELINE_BIN  another rrun binary (e.g. an older commit's build, for a before/after),
#                  measured as a fourth runtime `baseline` in every group, in the same
#                  hyperfine runs as the others; the table gets its column and rrun/baseline
#   BENCH_GROUPS   which groups to run (default "run create start delete ctr rss")
#   BENCH_SKIP_SETUP=1  do not run scripts/setup.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench_name=bench
# shellcheck source=bench/lib.sh
source bench/lib.sh

runs="${BENCH_RUNS:-100}"
warmup="${BENCH_WARMUP:-10}"
rss_samples="${BENCH_RSS_SAMPLES:-10}"
rounds="${BENCH_ROUNDS:-1}"
groups=" ${BENCH_GROUPS:-run create start delete ctr rss} "
((runs >= 30)) || die "BENCH_RUNS=$runs: use at least 30 runs"
out="${BENCH_OUT:-$PWD/target/bench}"
stamp="$(date -u +%Y%m%d-%H%M%S)"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"

[[ "${BENCH_SKIP_SETUP:-0}" == 1 ]] || bash scripts/setup.sh

# rrun is measured as a static-pie binary (glibc linked in, -C target-feature=+crt-static),
# as runc ships static: no dynamic loader and no libc.so to map and relocate at each of
# its two execs (the second from the read-only view of itself), which saves CPU and about
# 1 MiB of peak RSS. Its relative relocations are packed (-z pack-relative-relocs, DT_RELR,
# glibc >= 2.36): a static-pie relocates itself at each start, and reading a 250 KiB
# .rela.dyn for that was 8% of its peak RSS; it stays position-independent (ASLR), unlike a
# non-PIE build that would need no relocations at all. It is built for the host triple
# explicitly so that the flags reach rrun only, not build scripts or proc macros. It aborts
# on panic (the workspace's release profile unwinds, for the CRI server's sake).
# BENCH_RRUN_DYNAMIC=1 measures the default (dynamic) target/release/rrun instead.
cargo build --release -p rootfs-fixtures
if [[ -n "${RRUN_BIN:-}" ]]; then
    rrun="$RRUN_BIN"
elif [[ "${BENCH_RRUN_DYNAMIC:-0}" == 1 ]]; then
    log "cargo build --release -p rrun"
    cargo build --release -p rrun
    rrun="$PWD/target/release/rrun"
else
    host="$(rustc -vV | sed -n 's/^host: //p')"
    log "cargo build --release -p rrun --target $host (crt-static, packed relocations, panic=abort)"
    RUSTFLAGS="-C target-feature=+crt-static -C link-arg=-Wl,-z,pack-relative-relocs -C panic=abort" \
        cargo build --release -p rrun --target "$host"
    rrun="$PWD/target/$host/release/rrun"
fi
fixtures="$PWD/target/release/rrun-fixtures"
runc="${RUNC_BIN:-$(command -v runc || true)}"
crun="${CRUN_BIN:-$(command -v crun || true)}"
[[ -x "$rrun" ]] || die "no rrun binary at $rrun"
[[ -x "$runc" ]] || die "runc not found (scripts/setup.sh installs it)"
[[ -x "$crun" ]] || die "crun not found (scripts/setup.sh installs it)"
command -v hyperfine >/dev/null || die "hyperfine not found (scripts/setup.sh installs it)"
if [[ "$groups" == *" ctr "* ]]; then
    command -v containerd >/dev/null && command -v ctr >/dev/null ||
        die "containerd/ctr not found (scripts/setup.sh installs them), or leave ctr out of BENCH_GROUPS"
fi
runtimes=(rrun runc crun)
declare -A bin=([rrun]="$rrun" [runc]="$runc" [crun]="$crun")
baseline="${RRUN_BASELINE_BIN:-}"
if [[ -n "$baseline" ]]; then
    [[ -x "$baseline" ]] || die "RRUN_BASELINE_BIN=$baseline: not an executable"
    baseline="$(realpath "$baseline")"
    runtimes=(rrun baseline runc crun)
    bin[baseline]="$baseline"
fi

work="$(mktemp -d /tmp/rrun-bench.XXXXXX)"
tag="$$"
# A relative cgroupsPath puts each container below the caller's own cgroup, in a
# rrun-bench/ parent, instead of a cgroup named after the container at the hierarchy root.
cgroups_path="rrun-bench/bench-$tag"
id="bench-$tag"
containerd_pid=""

# The wrapper (see the top), as a prefix for `sh -c` strings and as a command.
if [[ -d /sys/fs/cgroup/unified ]] && mountpoint -q /sys/fs/cgroup/unified; then
    wrap_sh="unshare -m --propagation private sh -c 'mount -t tmpfs none /sys/fs/cgroup/unified && exec"
    wrap_end="'"
else
    wrap_sh="sh -c 'exec"
    wrap_end="'"
fi
wrapped() { printf "%s %s%s" "$wrap_sh" "$*" "$wrap_end"; }

# `ctl RUNTIME ACTION`: brings the bench container of RUNTIME to a state, for --prepare
# (not timed). reset: gone; created: created; stopped: started and exited.
cat >"$work/ctl" <<EOF
#!/bin/sh
rt="\$1"; action="\$2"
case "\$rt" in
rrun) bin="$rrun";; runc) bin="$runc";; crun) bin="$crun";; baseline) bin="$baseline";;
*) echo "ctl: unknown runtime \$rt" >&2; exit 2;;
esac
r() { $wrap_sh "\$0" "\$@"$wrap_end "\$bin" --root "$work/\$rt-state" "\$@"; }
bundle="$work/bundle"
[ "\${3:-}" = limits ] && bundle="$work/bundle-limits"
r delete --force "$id" >/dev/null 2>&1
[ "\$action" = own ] && exit 0
# rrun takes only cgroups it creates, and all runtimes share the bundle's cgroupsPath: with
# two rrun builds, the container another runtime left (create's, start's) goes too.
if [ -n "$baseline" ]; then
    for other in ${runtimes[*]}; do [ "\$other" = "\$rt" ] || "\$0" "\$other" own; done
fi
[ "\$action" = reset ] && exit 0
r create --bundle "\$bundle" "$id" || exit 1
[ "\$action" = created ] && exit 0
r start "$id" || exit 1
i=0
until r state "$id" 2>/dev/null | grep -q '"stopped"'; do
    i=\$((i + 1)); [ \$i -gt 2000 ] && { echo "ctl: $id did not stop" >&2; exit 1; }
done
exit 0
EOF
chmod +x "$work/ctl"

cleanup() {
    set +e
    for rt in "${runtimes[@]}"; do "$work/ctl" "$rt" reset 2>/dev/null; done
    if [[ -n "$containerd_pid" ]]; then
        kill -TERM "$containerd_pid" 2>/dev/null
        for _ in $(seq 100); do kill -0 "$containerd_pid" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$containerd_pid" 2>/dev/null
        wait "$containerd_pid" 2>/dev/null
    fi
    # containerd's shims exit with their last task (every ctr run was --rm); one left by
    # a failed run is found by its containerd address.
    pkill_shims
    # The runtimes remove their containers' cgroups; remove what is left below our
    # rrun-bench parents, and the parents when nothing else uses them.
    local d
    while IFS= read -r d; do
        find "$d" -depth -mindepth 1 -type d \( -name "bench-$tag*" -o -path "*/bench-$tag*/*" \) \
            -exec rmdir {} \; 2>/dev/null
        rmdir "$d" 2>/dev/null
    done < <(find /sys/fs/cgroup -mindepth 1 -maxdepth 6 -type d -name rrun-bench 2>/dev/null)
    rm -rf --one-file-system "$work"
}
pkill_shims() {
    local p
    for p in $(pgrep -f "containerd-shim-runc-v2 .*-address $work/containerd/c.sock" 2>/dev/null); do
        kill -KILL "$p" 2>/dev/null
    done
}
trap cleanup EXIT

log "bundle in $work/bundle (busybox, process /bin/true, cgroupsPath $cgroups_path)"
"$fixtures" bundle "$work/bundle" -- /bin/true >/dev/null
# ociVersion 1.1.0: Debian's crun 1.8 refuses 1.2.0 ("unknown version specified"); the
# config uses nothing newer, and the same file goes to all three.
python3 - "$work/bundle/config.json" "$cgroups_path" <<'EOF'
import json, sys
path, cgroups_path = sys.argv[1], sys.argv[2]
with open(path) as f:
    config = json.load(f)
config["ociVersion"] = "1.1.0"
config.setdefault("linux", {})["cgroupsPath"] = cgroups_path
with open(path, "w") as f:
    json.dump(config, f, indent=2)
EOF
# The limits run: the same container with memory, cpu and pids limits, so the cost of
# writing them (cgroup setup beyond mkdir + join) shows beside the others'.
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
for rt in "${runtimes[@]}"; do
    "$work/ctl" "$rt" stopped || die "$rt cannot run the bundle (see above)"
    "$work/ctl" "$rt" reset
done

mkdir -p "$out"
# hyperfine runs all the runs of one command before the next command's: on a shared
# machine whose load drifts, that favours whichever command met a quiet spell. With
# BENCH_ROUNDS=N each group runs N times over, and the medians are taken over all the
# rounds' samples of a command, so the commands take turns.
hf() {
    local group="$1" round
    shift
    for ((round = 1; round <= rounds; round++)); do
        log "hyperfine: $group, round $round/$rounds ($warmup warmup, $runs runs each)"
        hyperfine -N --warmup "$warmup" --runs "$runs" --style basic \
            --export-json "$out/hyperfine-$group-$stamp-r$round.json" "$@"
    done
}
# One runtime command per runtime, the same string for all three: `<rt> --root S ARGS`.
rtcmd() {
    local rt="$1"
    shift
    wrapped "${bin[$rt]} --root $work/$rt-state $*"
}

if [[ "$groups" == *" run "* ]]; then
    args=()
    for rt in "${runtimes[@]}"; do
        args+=(--prepare "$work/ctl $rt reset" -n "$rt" "$(rtcmd "$rt" run --bundle "$work/bundle" "$id")")
    done
    for rt in "${runtimes[@]}"; do
        args+=(--prepare "$work/ctl $rt reset" -n "$rt-limits"
            "$(rtcmd "$rt" run --bundle "$work/bundle-limits" "$id")")
    done
    args+=(--prepare true -n floor "unshare --pid --mount --uts --ipc --net --fork /bin/true")
    args+=(--prepare true -n wrapper "$(wrapped /bin/true)")
    hf run "${args[@]}"
fi
if [[ "$groups" == *" create "* ]]; then
    args=()
    for rt in "${runtimes[@]}"; do
        args+=(--prepare "$work/ctl $rt reset" -n "$rt" "$(rtcmd "$rt" create --bundle "$work/bundle" "$id")")
    done
    hf create "${args[@]}"
fi
if [[ "$groups" == *" start "* ]]; then
    args=()
    for rt in "${runtimes[@]}"; do
        args+=(--prepare "$work/ctl $rt created" -n "$rt" "$(rtcmd "$rt" start "$id")")
    done
    hf start "${args[@]}"
fi
if [[ "$groups" == *" delete "* ]]; then
    args=()
    for rt in "${runtimes[@]}"; do
        args+=(--prepare "$work/ctl $rt stopped" -n "$rt" "$(rtcmd "$rt" delete "$id")")
    done
    hf delete "${args[@]}"
fi
for rt in "${runtimes[@]}"; do "$work/ctl" "$rt" reset; done

if [[ "$groups" == *" ctr "* ]]; then
    # containerd 1.6's shims put their sockets in /run/containerd/s: containerd runs in a
    # private mount namespace with a tmpfs of its own on /run (and the wrapper's tmpfs on
    # the cgroup2 mount, for crun), so nothing of it reaches the host's /run.
    cd_dir="$work/containerd"
    mkdir -p "$cd_dir/fifo"
    cat >"$cd_dir/config.toml" <<EOF
version = 2
root = "$cd_dir/root"
state = "$cd_dir/state"
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]
[grpc]
  address = "$cd_dir/c.sock"
[ttrpc]
  address = "$cd_dir/c.sock.ttrpc"
[plugins."io.containerd.monitor.v1.cgroups"]
  no_prometheus = true
EOF
    hide_unified=""
    [[ "$wrap_sh" == unshare* ]] && hide_unified="mount -t tmpfs none /sys/fs/cgroup/unified && "
    log "containerd in $cd_dir"
    unshare -m --propagation private sh -c \
        "mount -t tmpfs -o mode=0755 rrun-bench-run /run && ${hide_unified}exec containerd --config $cd_dir/config.toml" \
        </dev/null >"$cd_dir/containerd.log" 2>&1 &
    containerd_pid=$!
    ctr_base="ctr --address $cd_dir/c.sock --namespace default"
    for _ in $(seq 200); do
        $ctr_base version >/dev/null 2>&1 && break
        kill -0 "$containerd_pid" 2>/dev/null || die "containerd exited: $(tail -5 "$cd_dir/containerd.log")"
        sleep 0.05
    done
    $ctr_base version >/dev/null 2>&1 || die "containerd did not answer: $(tail -5 "$cd_dir/containerd.log")"
    image=localhost/rrun-bench-busybox:latest
    "$fixtures" image "$work/busybox-oci.tar" --ref "$image" >/dev/null
    $ctr_base images import --snapshotter native "$work/busybox-oci.tar" >/dev/null
    args=()
    for rt in "${runtimes[@]}"; do
        mkdir -p "$cd_dir/$rt-root"
        ctr_cmd="$ctr_base run --rm --runc-binary ${bin[$rt]} --runc-root $cd_dir/$rt-root"
        ctr_cmd+=" --cgroup rrun-bench/bench-$tag-ctr-$rt --fifo-dir $cd_dir/fifo --snapshotter native"
        ctr_cmd+=" $image bench-$tag-$rt /bin/true"
        $ctr_cmd >/dev/null || die "ctr run --rm with $rt failed"
        args+=(--prepare true -n "$rt" "$ctr_cmd")
    done
    hf ctr "${args[@]}"
fi

rss_json="{}"
if [[ "$groups" == *" rss "* ]]; then
    # GNU time's "Maximum resident set size" of a whole run (the wrapper, the runtime and
    # the children it waits for: the largest of them), the largest of BENCH_RSS_SAMPLES.
    peak_rss_kib() {
        local rt="$1" max=0 kib i
        for ((i = 0; i < rss_samples; i++)); do
            "$work/ctl" "$rt" reset
            eval "/usr/bin/time -v -o $work/time.txt $(rtcmd "$rt" run --bundle "$work/bundle" "$id")" \
                >/dev/null 2>&1 || die "$rt failed under /usr/bin/time"
            kib="$(awk -F: '/Maximum resident set size/ { gsub(/ /, "", $2); print $2 }' "$work/time.txt")"
            [[ -n "$kib" ]] || die "no RSS from /usr/bin/time -v ($rt)"
            ((kib > max)) && max="$kib"
        done
        echo "$max"
    }
    log "peak RSS ($rss_samples runs each)"
    rss_json="{"
    for rt in "${runtimes[@]}"; do
        rss_json+="\"$rt\": $(peak_rss_kib "$rt"),"
    done
    rss_json="${rss_json%,}}"
fi

load_after="$(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" "$stamp" "$rss_json" "$load_before" "$load_after" "$rrun" "$runc" "$crun" "$baseline" <<'EOF'
import json, os, platform, subprocess, sys
out, stamp, rss_text, load_before, load_after, rrun, runc, crun, baseline = sys.argv[1:10]
rss = json.loads(rss_text)
import glob, statistics
groups = {}
for g in ["run", "create", "start", "delete", "ctr"]:
    for p in sorted(glob.glob(os.path.join(out, f"hyperfine-{g}-{stamp}-r*.json"))):
        with open(p) as f:
            for r in json.load(f)["results"]:
                groups.setdefault(g, {}).setdefault(r["command"], []).extend(r["times"])

def med(g, name):
    t = groups.get(g, {}).get(name)
    return statistics.median(t) * 1000.0 if t else None

def version(b):
    try:
        return subprocess.run([b, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    except OSError:
        return "?"

rows = [("run /bin/true", "run", ""), ("run, with limits", "run", "-limits"),
        ("create", "create", ""), ("start", "start", ""), ("delete", "delete", ""),
        ("ctr run --rm", "ctr", "")]
fmt = lambda v: f"{v:.2f} ms" if v is not None else "-"
ratio = lambda a, b: f"{a / b:.2f}x" if a is not None and b else "-"
print()
rts = ("rrun", "baseline", "runc", "crun") if baseline else ("rrun", "runc", "crun")
others = [rt for rt in rts if rt != "rrun"]
print(f"{'median':22} " + " ".join(f"{rt:>10}" for rt in rts) + " "
      + " ".join(f"{'rrun/' + rt:>13}" for rt in others))
table = {}
for label, g, suffix in rows:
    if g not in groups:
        continue
    v = {rt: med(g, rt + suffix) for rt in rts}
    table[label] = v
    print(f"{label:22} " + " ".join(f"{fmt(v[rt]):>10}" for rt in rts) + " "
          + " ".join(f"{ratio(v['rrun'], v[rt]):>13}" for rt in others))
if rss:
    print(f"{'peak RSS':22} " + " ".join(f"{str(rss[rt]) + ' KiB':>10}" for rt in rts) + " "
          + " ".join(f"{rss['rrun'] / rss[rt]:>12.2f}x" for rt in others))
if "run" in groups:
    print(f"\nfloor (unshare --pid --mount --uts --ipc --net --fork /bin/true): {fmt(med('run', 'floor'))}")
    print(f"wrapper alone (private mount ns + tmpfs, exec /bin/true): {fmt(med('run', 'wrapper'))}")
print(f"load average before {load_before}, after {load_after}; {os.cpu_count()} CPUs; "
      f"Linux {platform.release()}")
print(f"{version(rrun)} / {version(runc)} / {version(crun)}")
if baseline:
    print(f"baseline: {baseline} ({version(baseline)})")
samples = {g: len(next(iter(v.values()))) for g, v in groups.items()}
summary = os.path.join(out, f"summary-{stamp}.json")
with open(summary, "w") as f:
    json.dump({
        "host": {"kernel": platform.release(), "machine": platform.machine(),
                 "cpus": os.cpu_count(), "load_before": load_before, "load_after": load_after},
        "versions": {"rrun": version(rrun), "runc": version(runc), "crun": version(crun),
                     "baseline": version(baseline) if baseline else None},
        "baseline": baseline or None,
        "median_ms": {label: {k: (round(x, 3) if x is not None else None) for k, x in v.items()}
                      for label, v in table.items()},
        "floor_ms": med("run", "floor"), "wrapper_ms": med("run", "wrapper"),
        "peak_rss_kib": rss,
        "samples_per_command": samples,
    }, f, indent=2)
print(f"samples per command: {samples}")
print(f"\nresults: {out}/hyperfine-*-{stamp}-r*.json\nsummary: {summary}")
EOF
