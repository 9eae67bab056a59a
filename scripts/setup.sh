#!/usr/bin/env bash
# Installs what building, testing and benchmarking rrun needs on Debian 12, and only what is
# missing: running it again changes nothing. Needs root (or sudo) when a package is missing.
#
#   bash scripts/setup.sh
#
# Debian packages come from apt. The Rust toolchain is not installed here: cargo must already
# be on PATH (rustup). cargo-nextest, if absent, is installed from crates.io with
# `cargo install`, and when that is not possible the test script falls back to `cargo test`.
set -euo pipefail

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Debian packages the project uses:
#   busybox-static   the test and demo root filesystem (rootfs-fixtures copies its binary)
#   runc             the reference runtime for compatibility tests and the benchmark
#   hyperfine        the benchmark driver
#   iproute2         `ip` for network namespace checks
#   libcap2-bin      `capsh`/`getpcaps` for capability checks
#   time             GNU time (`/usr/bin/time -v`) for peak RSS
#   strace           debugging syscall paths
#   build-essential, pkg-config   the C toolchain some crates' build scripts want
#   libseccomp-dev   libseccomp.a, linked statically into rrun for seccomp filters
#   python3, jq      the benchmark's JSON summaries
#   util-linux       `unshare` (the benchmark's floor); essential on Debian, listed for clarity
#   protobuf-compiler  `protoc`, which k8s-cri's build script runs to generate the CRI types
#   crun             the second reference runtime of the benchmark
#   containerd, podman  the engines rrun is tested under as a drop-in for runc
#                    (compat_containerd, compat_podman); containerd brings ctr and the runc shim
#   zstd             zstd-compressed image layers in the CRI tests
#   containernetworking-plugins  bridge, host-local, portmap: rrun-cri's pod network
#                    (cri_network, bench/cni.sh) and the stock-kubelet test's CNI pod
#   iptables         `iptables-save`, which the stock-kubelet test compares before and after
#   docker-registry, skopeo, apache2-utils  the registry the cri_pull test pulls from, what
#                    fills it, and `htpasswd` for its authenticated registry
#                    (and portmap's rules, which cri_network checks for leaks)
#   nftables         `nft`: rrun-kubelet's Services (one nftables table), kubelet_deploy
PACKAGES=(
    busybox-static runc hyperfine iproute2 libcap2-bin time strace
    build-essential pkg-config libseccomp-dev python3 jq util-linux ca-certificates
    protobuf-compiler crun containerd podman zstd containernetworking-plugins iptables
    docker-registry skopeo apache2-utils nftables
)
# kubernetes-client  Debian's kubectl (1.20), only where no kubectl is on PATH: the client
#                    the README's commands and the agent's API are used with
command -v kubectl >/dev/null || PACKAGES+=(kubernetes-client)

if [[ ! -r /etc/debian_version ]] || ! command -v apt-get >/dev/null; then
    die "this script supports Debian (12) with apt-get; install the equivalents of: ${PACKAGES[*]}"
fi

installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

missing=()
for pkg in "${PACKAGES[@]}"; do
    installed "$pkg" || missing+=("$pkg")
done

if ((${#missing[@]})); then
    sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null || die "missing packages (${missing[*]}) and not root; run as root"
        sudo=(sudo)
    fi
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    log "Debian packages: all present"
fi

# Rust: rustup installs into ~/.cargo/bin, which a non-login shell may not have on PATH.
if ! command -v cargo >/dev/null && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
command -v cargo >/dev/null || die "cargo not found: install a Rust toolchain (https://rustup.rs), then rerun"
log "$(cargo --version)"
for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null; then
            log "adding rustup component $component"
            rustup component add "$component"
        else
            die "cargo ${component/rustfmt/fmt} is missing and rustup is not available to add it"
        fi
    fi
done

# RRUN_SETUP_MINIMAL=1 (scripts/demo.sh): the packages and the toolchain only; the test
# tools below (nextest, grpcio, the stock kubelet's 6-minute build) are left out.
if [[ "${RRUN_SETUP_MINIMAL:-}" == 1 ]]; then
    log "ready (minimal: no test tools)"
    exit 0
fi

# cargo-nextest: optional (scripts/test.sh falls back to `cargo test`).
if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest from crates.io"
    if ! cargo install cargo-nextest --locked; then
        log "warning: could not install cargo-nextest; tests will run with cargo test"
    fi
fi

# Python's grpcio: a CRI client built on grpc-core, independent of tonic and of our code
# (integration-tests/clients/grpc_core_cri.py). 1.57 and later send the socket path
# percent-encoded as the HTTP/2 :authority, which the test must see accepted. Debian's
# python3-grpcio is 1.51, so it comes from PyPI, into the python3 on PATH; a Debian
# python3 marked externally managed gets --break-system-packages.
if ! python3 -c 'import grpc, sys; sys.exit(tuple(map(int, grpc.__version__.split(".")[:2])) < (1, 57))' 2>/dev/null; then
    log "installing grpcio from PyPI"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore 'grpcio>=1.57,<2' ||
        python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --break-system-packages 'grpcio>=1.57,<2' ||
        die "could not install Python's grpcio (the grpc-core CRI client of the tests)"
fi

# The official Kubernetes Python client (`kubernetes` on PyPI): an API client of the agent
# written apart from kubectl's Go code (integration-tests/clients/kube_python_client.py).
# Debian has no package of it.
if ! python3 -c 'import kubernetes' 2>/dev/null; then
    log "installing the kubernetes Python client from PyPI"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore 'kubernetes>=28,<35' ||
        python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --break-system-packages 'kubernetes>=28,<35' ||
        die "could not install the kubernetes Python client (an API client of the tests)"
fi

# Debian's kubectl 1.20 beside the machine's own, for the kubectl_old test (which skips
# without it).
if ((EUID == 0)); then
    if kubectl120="$(bash "$(dirname "${BASH_SOURCE[0]}")/kubectl-1.20.sh")"; then
        log "kubectl 1.20: $kubectl120"
    else
        log "warning: Debian's kubectl 1.20 could not be unpacked (scripts/kubectl-1.20.sh); kubectl_old will skip"
    fi
fi

# The stock kubelet (Debian's kubernetes source, built once per machine and cached; the
# stock-kubelet test builds it itself if this did not).
if ((EUID == 0)); then
    if kubelet="$(bash "$(dirname "${BASH_SOURCE[0]}")/kubelet.sh")"; then
        log "stock kubelet: $kubelet"
    else
        log "warning: the stock kubelet could not be built (scripts/kubelet.sh); its test will skip"
    fi
fi

log "ready"
