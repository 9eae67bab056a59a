#!/usr/bin/env bash
# Builds the stock kubelet of Debian bookworm's `kubernetes` source package (v1.20) for the
# stock-kubelet test and benchmark, once per machine, and prints the binary's path.
#
#   bash scripts/kubelet.sh            # build if needed, print the path
#   bash scripts/kubelet.sh --path     # print the path only if it is already built
#
# The binary is cached in $RRUN_KUBELET_CACHE (default /var/cache/rrun-kubelet-build) as
# kubelet-<source version>, so that a second run (and every test run) costs nothing.
#
# How: a temporary deb-src entry for the mirror of the machine's own bookworm apt source
# (read from /etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list), `apt-get
# update`, `apt-get source kubernetes`, the entry removed again and `apt-get update` once
# more, so that apt is left as it was. Only golang-go is installed (the source carries its
# Go dependencies in vendor/). `cmd/kubelet` is built in GOPATH mode (GO111MODULE=off,
# which uses vendor/ and never the module proxy) with Debian's Go. Needs root, no sudo.
set -euo pipefail

log() { printf 'kubelet-build: %s\n' "$*" >&2; }
die() { printf 'kubelet-build: error: %s\n' "$*" >&2; exit 1; }

cache="${RRUN_KUBELET_CACHE:-/var/cache/rrun-kubelet-build}"
path_only=0
[[ "${1:-}" == --path ]] && path_only=1

# A build that is already there: the newest kubelet-* whose stamp says it is complete.
cached() {
    local f
    for f in "$cache"/kubelet-*; do
        [[ -x "$f" && -e "$f.ok" ]] && { printf '%s\n' "$f"; return 0; }
    done
    return 1
}
if bin="$(cached)"; then
    printf '%s\n' "$bin"
    exit 0
fi
((path_only)) && exit 1

((EUID == 0)) || die "building the kubelet installs packages: run as root"
command -v apt-get >/dev/null || die "apt-get not found: this script builds Debian's kubelet on Debian 12"

mkdir -p "$cache"
# One build at a time per machine (the test and the bench may both ask).
exec 9>"$cache/.lock"
flock 9
if bin="$(cached)"; then
    printf '%s\n' "$bin"
    exit 0
fi

apt_get() { apt-get -q -o DPkg::Lock::Timeout=300 "$@"; }

# The mirror and keyring of the machine's bookworm source, deb822 or one-line style.
mirror="" keyring=""
if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
    mirror="$(awk '
        /^Types:/ { deb = ($0 ~ /[[:space:]]deb([[:space:]]|$)/) }
        /^URIs:/ { uri = $2 }
        /^Suites:/ { if (deb && $0 ~ /[[:space:]]bookworm([[:space:]]|$)/) { print uri; exit } }
    ' /etc/apt/sources.list.d/debian.sources)"
    keyring="$(awk -v m="$mirror" '
        /^URIs:/ { uri = $2 }
        /^Signed-By:/ { if (uri == m) { print $2; exit } }
    ' /etc/apt/sources.list.d/debian.sources)"
fi
if [[ -z "$mirror" && -r /etc/apt/sources.list ]]; then
    mirror="$(awk '$1 == "deb" && $0 ~ / bookworm / {
        for (i = 2; i <= NF; i++) if ($i ~ /^(https?|file):/) { print $i; exit } }' /etc/apt/sources.list)"
fi
[[ -n "$mirror" ]] || die "no bookworm apt source found in /etc/apt/sources.list*"
log "deb-src from $mirror"

src_list=/etc/apt/sources.list.d/rrun-kubelet-src.sources
work=""
cleanup() {
    local rc=$?
    if [[ -e "$src_list" ]]; then
        rm -f "$src_list"
        apt_get update >/dev/null 2>&1 || log "warning: apt-get update after removing $src_list failed"
    fi
    [[ -n "$work" ]] && rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT
{
    echo "Types: deb-src"
    echo "URIs: $mirror"
    echo "Suites: bookworm"
    echo "Components: main"
    [[ -n "$keyring" ]] && echo "Signed-By: $keyring"
} >"$src_list"

export DEBIAN_FRONTEND=noninteractive
apt_get update >/dev/null || die "apt-get update with the deb-src entry failed"
command -v dpkg-source >/dev/null || apt_get install -y --no-install-recommends dpkg-dev >/dev/null
if ! command -v go >/dev/null && [[ ! -x /usr/lib/go/bin/go ]]; then
    log "installing golang-go"
    apt_get install -y --no-install-recommends golang-go >/dev/null
fi

work="$(mktemp -d /var/tmp/rrun-kubelet-build.XXXXXX)"
cd "$work"
log "apt-get source kubernetes"
apt_get source --download-only kubernetes >/dev/null || die "apt-get source kubernetes failed (is deb-src reachable?)"
rm -f "$src_list"
apt_get update >/dev/null || log "warning: apt-get update after removing $src_list failed"

dsc="$(ls ./kubernetes_*.dsc | head -n1)"
[[ -n "$dsc" ]] || die "apt-get source left no kubernetes_*.dsc"
version="$(awk '/^Version:/ { print $2; exit }' "$dsc")"
dpkg-source --no-check -x "$dsc" src >/dev/null
log "building cmd/kubelet of kubernetes $version"

# GOPATH mode: the source must sit at $GOPATH/src/k8s.io/kubernetes; vendor/ is used as is.
gopath="$work/gopath"
mkdir -p "$gopath/src/k8s.io"
mv src "$gopath/src/k8s.io/kubernetes"
export GOPATH="$gopath" GO111MODULE=off GOFLAGS="" GOPROXY=off GOCACHE="$work/gocache"
export CGO_ENABLED=0 # a static binary, like upstream's release kubelet
export PATH="/usr/lib/go/bin:$PATH"
cd "$gopath/src/k8s.io/kubernetes"
# The version the kubelet reports: Debian's "1.20.5+really1.20.2-..." is upstream 1.20.2.
upstream="${version%%-*}"
upstream="${upstream##*really}"
upstream="${upstream%%+*}"
minor="${upstream#*.}"
minor="${minor%%.*}"
vpkg=k8s.io/kubernetes/vendor/k8s.io/component-base/version
start=$SECONDS
go build -o "$work/kubelet" \
    -ldflags "-X $vpkg.gitVersion=v$upstream -X $vpkg.gitMajor=${upstream%%.*} -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean" \
    ./cmd/kubelet
log "built in $((SECONDS - start)) s"
"$work/kubelet" --version >&2

dest="$cache/kubelet-$version"
install -m 0755 "$work/kubelet" "$dest.tmp"
mv "$dest.tmp" "$dest"
touch "$dest.ok"
printf '%s\n' "$dest"
