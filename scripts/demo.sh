#!/usr/bin/env bash
# README command 1: build rrun and run one container with it.
#
#   sudo bash scripts/demo.sh
#
# Installs what is missing (scripts/setup.sh), builds the release binaries, lays out a busybox
# bundle in a temporary directory, and runs a container that describes itself: its hostname,
# user, the processes it can see (it is pid 1), its namespaces (compare with the host's,
# printed first) and how many mounts it has. Everything temporary is removed afterwards.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -x "$HOME/.cargo/bin/cargo" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
((EUID == 0)) || { echo "demo.sh: containers need root: run 'sudo bash scripts/demo.sh'" >&2; exit 1; }

echo "==> setup"
bash scripts/setup.sh

echo "==> cargo build --release"
cargo build --release -p rrun -p rootfs-fixtures
rrun="$PWD/target/release/rrun"
fixtures="$PWD/target/release/rrun-fixtures"

work="$(mktemp -d /tmp/rrun-demo.XXXXXX)"
id="demo-$RANDOM$RANDOM"
# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
    "$rrun" --root "$work/state" delete --force "$id" >/dev/null 2>&1 || true
    # --one-file-system: never follow a mount that might have been left in the bundle.
    rm -rf --one-file-system "$work"
}
trap cleanup EXIT

# What the container runs (busybox sh).
read -r -d '' inside <<'EOF' || true
echo "hostname:   $(hostname)"
echo "user:       $(id)"
echo "mounts:     $(wc -l < /proc/self/mounts) (rootfs, /proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys, ...)"
echo "namespaces:"
for ns in /proc/self/ns/*; do printf '  %-18s %s\n' "${ns##*/}" "$(readlink "$ns")"; done
echo "processes (ps): the container's sh is pid 1"
ps -o pid,user,comm
exit 0
EOF

"$fixtures" bundle "$work/bundle" -- sh -c "$inside" >/dev/null
# A hostname of our own, so the output shows rrun setting it.
python3 - "$work/bundle/config.json" <<'EOF'
import json, sys
with open(sys.argv[1]) as f:
    config = json.load(f)
config["hostname"] = "rrun-demo"
with open(sys.argv[1], "w") as f:
    json.dump(config, f, indent=2)
EOF

echo "==> the host, for comparison"
echo "hostname:   $(hostname)"
echo "mounts:     $(wc -l </proc/self/mounts)"
echo "namespaces:"
for ns in /proc/self/ns/*; do printf '  %-18s %s\n' "${ns##*/}" "$(readlink "$ns")"; done

echo
echo "==> $rrun --root $work/state run --bundle $work/bundle $id"
status=0
timeout --kill-after=5 60 "$rrun" --root "$work/state" run --bundle "$work/bundle" "$id" || status=$?
((status != 124)) || echo "demo.sh: rrun run did not finish within 60s" >&2
echo "==> the container exited with status $status"
exit "$status"
