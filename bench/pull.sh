#!/usr/bin/env bash
# Registry pulls: rrun-cri's PullImage beside containerd 1.6's CRI PullImage and a floor
# (`skopeo copy` to a directory, then `tar -xzf` of each layer, one after the other), all
# from one docker-registry on 127.0.0.1 with one image of 5 gzip layers (~200 MiB
# uncompressed, made here by Python: random text that compresses like real files).
#
#   sudo bash bench/pull.sh
#
# Every run is cold: each server starts on a fresh root for it (so nothing is stored) and
# is stopped afterwards; the figure is the PullImage call's wall time (target/release/
# cri-pull). rrun-cri's peak RSS growth is VmHWM after the pull minus VmRSS before it.
#
# Environment: PULL_BENCH_RUNS (default 5), PULL_BENCH_CONTAINERD=0 to leave containerd
# out, PULL_BENCH_SKIP_BUILD=1 to use the release binaries as they are, BENCH_OUT
# (default target/bench) for pull-summary-<stamp>.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bench_name=pull-bench
# shellcheck source=bench/lib.sh
source bench/lib.sh

runs="${PULL_BENCH_RUNS:-5}"
with_containerd="${PULL_BENCH_CONTAINERD:-1}"
out="${BENCH_OUT:-$PWD/target/bench}"
stamp="$(date -u +%Y%m%d-%H%M%S)"
mkdir -p "$out"
if [[ "${PULL_BENCH_SKIP_BUILD:-0}" != 1 ]]; then
    log "cargo build --release"
    cargo build --release -p rrun-cri --bin rrun-cri -p integration-tests --bin cri-pull
fi
rel="$PWD/target/release"
[[ -x "$rel/rrun-cri" ]] || die "no $rel/rrun-cri: build it (or unset PULL_BENCH_SKIP_BUILD)"
# The client only waits for one answer: a debug build of it measures the same.
client="$rel/cri-pull"
[[ -x "$client" ]] || client="$PWD/target/debug/cri-pull"
[[ -x "$client" ]] || die "no cri-pull in target/release or target/debug"
for b in docker-registry skopeo python3; do
    command -v "$b" >/dev/null || die "$b not found (scripts/setup.sh installs it)"
done

work="$(mktemp -d /tmp/rrun-pull-bench.XXXXXX)"
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    # containerd's snapshots are mounted in its own mount namespace, gone with it.
    rm -rf "$work"
}
trap cleanup EXIT

now() { python3 -c 'import time; print(time.monotonic())'; }
wait_socket() { # path pid
    local i
    for ((i = 0; i < 600; i++)); do
        [[ -S "$1" ]] && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# --- the registry and the image -------------------------------------------------------
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
mkdir -p "$work/registry"
cat >"$work/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/registry/storage
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$work/registry/config.yml" >"$work/registry/log" 2>&1 &
pids+=($!)
for ((i = 0; i < 600; i++)); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null && break
    sleep 0.05
done
log "making the image (5 gzip layers)"
python3 - "$work/layout" <<'EOF'
import gzip, hashlib, io, json, os, random, sys, tarfile
out = sys.argv[1]
os.makedirs(f"{out}/blobs/sha256")
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    open(f"{out}/blobs/sha256/{d}", "wb").write(data)
    return "sha256:" + d, len(data)
rng = random.Random(42)
words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
layers, diff_ids = [], []
for n in range(5):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for f in range(40):
            data = b" ".join(rng.choice(words) for _ in range(180000))[: 1 << 20]
            info = tarfile.TarInfo(f"layer{n}/file{f}")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    tar = raw.getvalue()
    diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
    d, size = blob(gzip.compress(tar, compresslevel=6, mtime=0))
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d, "size": size})
config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
          "rootfs": {"type": "layers", "diff_ids": diff_ids}}
cd, cs = blob(json.dumps(config).encode())
manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
            "layers": layers}
md, ms = blob(json.dumps(manifest).encode())
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
           "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "bench"}}]},
          open(f"{out}/index.json", "w"))
open(f"{out}/oci-layout", "w").write('{"imageLayoutVersion": "1.0.0"}')
print(sum(l["size"] for l in layers), file=sys.stderr)
EOF
skopeo --insecure-policy copy --quiet --preserve-digests --dest-tls-verify=false \
    "oci:$work/layout:bench" "docker://127.0.0.1:$port/bench/big:1"
image="127.0.0.1:$port/bench/big:1"
compressed="$(du -sb "$work/layout/blobs" | cut -f1)"

# --- one cold pull per server ---------------------------------------------------------
rrun_run() { # n -> "secs rss_growth_kib"
    local d="$work/rrun-$1" pid before hwm t
    mkdir -p "$d"
    "$rel/rrun-cri" --socket "$d/cri.sock" --root "$d/root" --runtime-root "$d/run" \
        >"$d/log" 2>&1 &
    pid=$!
    pids+=("$pid")
    wait_socket "$d/cri.sock" "$pid" || die "rrun-cri did not start: $(tail -3 "$d/log")"
    before="$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")"
    t="$("$client" "$d/cri.sock" "$image" | cut -d' ' -f1)"
    hwm="$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -rf "$d"
    echo "$t $((hwm - before))"
}
containerd_run() { # n -> secs
    local d="$work/cd-$1" pid t
    mkdir -p "$d"
    cat >"$d/config.toml" <<EOF
version = 2
root = "$d/root"
state = "$d/state"
[grpc]
  address = "$d/containerd.sock"
[ttrpc]
  address = "$d/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
EOF
    unshare -m --propagation private sh -c \
        "mount -t tmpfs -o mode=0755 rrun-pull-bench-run /run && exec containerd --config $d/config.toml" \
        </dev/null >"$d/log" 2>&1 &
    pid=$!
    pids+=("$pid")
    wait_socket "$d/containerd.sock" "$pid" || die "containerd did not start: $(tail -3 "$d/log")"
    # The CRI plugin loads after the socket appears: its Version answers when it is up.
    t=""
    for ((i = 0; i < 100; i++)); do
        if t="$("$client" "$d/containerd.sock" "$image" 2>"$d/pull.err" | cut -d' ' -f1)" && [[ -n "$t" ]]; then
            break
        fi
        grep -q "Unimplemented\|connecting" "$d/pull.err" || die "containerd PullImage: $(cat "$d/pull.err")"
        sleep 0.1
    done
    [[ -n "$t" ]] || die "containerd PullImage: $(cat "$d/pull.err")"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    rm -rf "$d"
    echo "$t"
}
floor_run() { # n -> secs
    local d="$work/floor-$1" t0 t1 f
    mkdir -p "$d/rootfs"
    t0="$(now)"
    skopeo --insecure-policy copy --quiet --src-tls-verify=false "docker://$image" "dir:$d/img"
    for f in $(python3 -c 'import json,sys; [print(l["digest"].split(":")[1]) for l in json.load(open(sys.argv[1]))["layers"]]' "$d/img/manifest.json"); do
        tar -xzf "$d/img/$f" -C "$d/rootfs"
    done
    t1="$(now)"
    rm -rf "$d"
    python3 -c "print(f'{$t1 - $t0:.4f}')"
}

r_times=() r_rss=() c_times=() f_times=()
for ((n = 0; n < runs; n++)); do
    log "round $((n + 1))/$runs"
    read -r t rss < <(rrun_run "$n")
    r_times+=("$t") r_rss+=("$rss")
    if [[ "$with_containerd" == 1 ]]; then c_times+=("$(containerd_run "$n")"); fi
    f_times+=("$(floor_run "$n")")
done

python3 - "$out/pull-summary-$stamp.json" "$compressed" "${r_times[*]}" "${r_rss[*]}" "${c_times[*]:-}" "${f_times[*]}" <<'EOF'
import json, statistics, sys
path, compressed = sys.argv[1], int(sys.argv[2])
parse = lambda s: [float(x) for x in s.split()] if s.strip() else []
r, rss, c, f = (parse(a) for a in sys.argv[3:7])
med = lambda xs: statistics.median(xs) if xs else None
summary = {"compressed_bytes": compressed, "runs": len(r),
           "rrun_cri_s": r, "containerd_s": c, "floor_s": f,
           "rrun_cri_rss_growth_kib": rss}
json.dump(summary, open(path, "w"), indent=1)
print(f"image: 5 gzip layers, {compressed / 2**20:.0f} MiB compressed, {len(r)} cold pulls each (medians)")
print(f"| puller | median s | vs containerd |")
print(f"|---|---|---|")
for name, xs in (("rrun-cri PullImage", r), ("containerd 1.6 CRI PullImage", c), ("skopeo copy + tar -xzf (sequential floor)", f)):
    if xs:
        ratio = f"{med(xs) / med(c):.2f}x" if c else "-"
        print(f"| {name} | {med(xs):.2f} | {ratio} |")
print(f"rrun-cri peak RSS growth during the pull: median {med(rss) / 1024:.1f} MiB (max {max(rss) / 1024:.1f})")
print(f"summary: {path}")
EOF
