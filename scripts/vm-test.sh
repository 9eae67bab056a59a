#!/usr/bin/env bash
# The cgroup v2 pass: the integration test binaries (the same ones the host pass runs) in a
# virtme-ng VM booting Debian's linux-image-amd64, where /sys/fs/cgroup is cgroup2 only.
#
#   sudo bash scripts/vm-test.sh                 # every integration test binary
#   sudo bash scripts/vm-test.sh cgroups rootfs  # only these (tests/<name>.rs)
#   sudo VM_ALL=1 bash scripts/vm-test.sh         # also the host-only binaries (vm_skip)
#
# Installs what it needs, idempotently: qemu-system-x86 from bookworm-backports (Debian's
# archive), linux-image-amd64, virtme-ng from PyPI. Boots with --disable-kvm (KVM hangs on
# this project's CI machine; TCG is slow but works). One boot per test binary, so a kernel
# panic or hang costs one binary, not the pass.
#
# The guest boots on one CPU (maxcpus=1) and brings the others online only once it is up.
# Multi-threaded TCG in QEMU 10 (Debian's, with upstream 2865bf1c57 "fix use-after-free
# with dispatch") has a race: a change to the guest's memory map (the kernel sizing PCI
# BARs, which toggles their decoding) is applied to the other vCPUs' TLBs only when those
# vCPUs next leave translated code, while an MMIO access they make in between looks its
# stale TLB entry up in the new map and aborts QEMU on "iotlb_to_section: Assertion
# `section_index < d->map.sections_nb' failed". Booting this q35 machine makes about 3900
# such changes, all from the boot CPU and all before init runs (measured with
# `-trace enable=flatview_new`); none follow once the tests start. With one CPU online
# while they happen, no other vCPU is running translated code to race with them.
#
# Environment: VM_TIMEOUT (seconds per boot, default 1800), VM_MEMORY (default 2G),
# VM_CPUS (default 2), VM_KERNEL (default: newest /boot/vmlinuz-*), RRUN_BIN (default
# target/debug/rrun), VM_TIME_SCALE (default 5: the harness's timeouts are multiplied by
# it, software emulation being that much slower); anything after `--` goes to the test
# binaries (a name filter) instead of the default `--skip run_true_1000_times`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() { printf 'vm-test: error: %s\n' "$*" >&2; exit 1; }
log() { printf '==> [%4ds] %s\n' "$SECONDS" "$*" >&2; }
((EUID == 0)) || die "run as root (sudo bash scripts/vm-test.sh)"
if [[ -x "$HOME/.cargo/bin/cargo" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
SECONDS=0

names=()
# The 1000-runs stress test belongs to the host pass: under software emulation it alone
# would take a quarter of an hour, and it checks nothing cgroup-specific.
test_args=(--skip run_true_1000_times)
# Binaries the default pass leaves to the host pass (VM_ALL=1 runs them too): the engines'
# (containerd, podman: the runtime's cgroup code they reach is what the runtime binaries
# test here) and the CRI ones beyond cri_runtime (images, restart, bad requests: no cgroup
# code of their own). Under emulation each costs ten minutes or more; the pass must fit
# in CI's time with the host pass. stock_kubelet runs a kubelet built on the host into its
# cache, and cri_clients is about gRPC clients (its hugepage case is not yet checked here).
# cri_pull needs a registry and skopeo on the host. cri_network and cri_streaming drive
# CNI plugins in a node network namespace. The agent's binaries (kubelet_*, kubectl_*,
# kube_*: the agent and its API clients in a node network namespace, with CNI plugins and
# containerd) have no cgroup code of their own beyond cri_runtime's; they are host-only by
# their names, so a new one is too.
vm_skip=(compat_containerd compat_podman cri_images cri_restart cri_bad_requests cri_clients stock_kubelet cri_pull cri_network cri_streaming)
host_only() {
    [[ " ${vm_skip[*]} " == *" $1 "* || "$1" == kubelet_* || "$1" == kubectl_* || "$1" == kube_* ]]
}
vm_all="${VM_ALL:-0}"
while (($#)); do
    if [[ "$1" == "--" ]]; then
        shift
        test_args=("$@")
        break
    fi
    names+=("$1")
    shift
done

# --- what the VM needs ------------------------------------------------------------------
apt_updated=0
apt_install() {
    if ((apt_updated == 0)); then
        apt-get update -qq
        apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
if ! command -v qemu-system-x86_64 >/dev/null; then
    if ! grep -rqs '^[^#]*bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
        log "adding bookworm-backports to the apt sources"
        echo 'deb http://deb.debian.org/debian bookworm-backports main' \
            >/etc/apt/sources.list.d/bookworm-backports.list
        apt_updated=0
    fi
    log "installing qemu-system-x86 (bookworm-backports)"
    apt_install -t bookworm-backports qemu-system-x86
fi
if ! compgen -G '/boot/vmlinuz-*' >/dev/null; then
    log "installing linux-image-amd64"
    apt_install linux-image-amd64
fi
if ! command -v vng >/dev/null; then
    log "installing virtme-ng (PyPI)"
    pip3 install -q virtme-ng
fi
kernel="${VM_KERNEL:-$(ls -1 /boot/vmlinuz-* | sort -V | tail -n1)}"
[[ -r "$kernel" ]] || die "no kernel at $kernel"

# --- what runs in it ----------------------------------------------------------------------
log "building rrun, rrun-cri and the integration test binaries"
cargo build -q -p rrun -p rrun-cri
rrun_bin="${RRUN_BIN:-$PWD/target/debug/rrun}"
[[ -x "$rrun_bin" ]] || die "no rrun at $rrun_bin"
# The VM runs private copies of every binary, without debug info: the VM sees the host's
# files live, so a rebuild on the host while the VM runs must not change a program under
# its feet; and under software emulation, loading 150 MiB debug builds dominates the pass.
vm_bin="$PWD/target/vm-bin"
rm -rf "$vm_bin"
mkdir -p "$vm_bin/tests"
strip_to() { objcopy --strip-debug "$1" "$2" || die "objcopy --strip-debug $1 failed"; }
strip_to "$rrun_bin" "$vm_bin/rrun"
rrun_bin="$vm_bin/rrun"
for b in rrun-cri rrun-cri-monitor; do
    # rrun-cri starts its monitor binary from its own directory.
    [[ -x "target/debug/$b" ]] && strip_to "target/debug/$b" "$vm_bin/$b"
done
mapfile -t bins < <(cargo test -q -p integration-tests --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"] + " " + m["executable"])
')
((${#bins[@]})) || die "no integration test binaries were built"

# Under target/: the VM sees the host's filesystem (read-only), but not the host's /tmp.
work="$PWD/target/vm-test"
cpus="${VM_CPUS:-2}"
rm -rf "$work"
mkdir -p "$work"
failed=()
for entry in "${bins[@]}"; do
    name="${entry%% *}"
    exe="${entry#* }"
    if ((${#names[@]})) && [[ " ${names[*]} " != *" $name "* ]]; then
        continue
    fi
    if ((${#names[@]} == 0)) && [[ "$vm_all" != 1 ]] && host_only "$name"; then
        log "SKIPPED in the VM: tests/$name.rs (host pass only; VM_ALL=1 runs it here too)"
        continue
    fi
    strip_to "$exe" "$vm_bin/tests/$name"
    exe="$vm_bin/tests/$name"
    # Inside the VM: refuse to run unless cgroup v2 is what is mounted, so this pass can
    # never silently test v1 again.
    cat >"$work/$name.sh" <<EOF
set -u
fs=\$(stat -fc %T /sys/fs/cgroup)
if [ "\$fs" != cgroup2fs ]; then
    echo "vm-test: /sys/fs/cgroup is \$fs, not cgroup2: this pass must run on cgroup v2" >&2
    echo VM-RESULT 99
    exit 99
fi
for online in /sys/devices/system/cpu/cpu[0-9]*/online; do
    [ -e "\$online" ] && echo 1 >"\$online"
done
if [ "\$(nproc)" != '$cpus' ]; then
    echo "vm-test: \$(nproc) CPUs online (\$(cat /sys/devices/system/cpu/online)), not $cpus" >&2
    echo VM-RESULT 98
    exit 98
fi
echo "vm-test: cgroup2 at /sys/fs/cgroup, controllers: \$(cat /sys/fs/cgroup/cgroup.controllers); CPUs \$(cat /sys/devices/system/cpu/online); kernel \$(uname -r)"
cd '$PWD/integration-tests'
RRUN_BIN='$rrun_bin' RRUN_CRI_BIN='$vm_bin/rrun-cri' RRUN_TEST_TIME_SCALE='${VM_TIME_SCALE:-5}' RUST_BACKTRACE=1 '$exe' --test-threads=2 ${test_args[*]:-}
echo VM-RESULT \$?
EOF
    log "booting $(basename "$kernel") for tests/$name.rs"
    start=$SECONDS
    status=0
    timeout --kill-after=30 "${VM_TIMEOUT:-1800}" \
        vng --disable-kvm -r "$kernel" --user root --cpus "$cpus" --memory "${VM_MEMORY:-2G}" \
        --append maxcpus=1 -- "sh $work/$name.sh" 2>&1 | tee "$work/$name.log" || status=$?
    # No VM-RESULT line (QEMU or the guest died first) is a failure of this binary, not
    # of the script: the other binaries still run.
    result="$(grep -ao 'VM-RESULT [0-9]*' "$work/$name.log" | tail -n1 | cut -d' ' -f2 || true)"
    log "tests/$name.rs in the VM: exit ${result:-none} (vng $status) in $((SECONDS - start))s"
    if [[ "${result:-}" != 0 ]]; then
        failed+=("$name")
    fi
done
log "cgroup v2 VM pass done in ${SECONDS}s"
((${#failed[@]} == 0)) || die "failed in the VM: ${failed[*]}"
