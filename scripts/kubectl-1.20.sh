#!/usr/bin/env bash
# Prints the path of Debian's kubectl 1.20 (the `kubernetes-client` package, what
# scripts/setup.sh installs on a machine without kubectl), unpacked from the package into a
# cache without installing it, so that the machine's own kubectl stays as it is. The
# kubectl_old test drives the agent's API with it.
#
#   bash scripts/kubectl-1.20.sh     -> /var/cache/rrun-kubectl/kubectl-1.20.x
#
# The cache is $RRUN_KUBECTL_CACHE (default /var/cache/rrun-kubectl).
set -euo pipefail
cache="${RRUN_KUBECTL_CACHE:-/var/cache/rrun-kubectl}"
for f in "$cache"/kubectl-1.20*; do
    [[ -x "$f" ]] && { echo "$f"; exit 0; }
done
mkdir -p "$cache"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# As root, apt warns that its _apt user cannot write the directory, and downloads anyway.
(cd "$work" && apt-get download -q kubernetes-client >&2 2>/dev/null) ||
    { echo "kubectl-1.20.sh: apt-get download kubernetes-client failed" >&2; exit 1; }
dpkg-deb -x "$work"/kubernetes-client_*.deb "$work/x"
version="$("$work/x/usr/bin/kubectl" version --client --short 2>/dev/null | sed -n 's/^Client Version: v//p')"
[[ "$version" == 1.20* ]] ||
    { echo "kubectl-1.20.sh: the package's kubectl is ${version:-unknown}, not 1.20" >&2; exit 1; }
install -m 0755 "$work/x/usr/bin/kubectl" "$cache/kubectl-$version.tmp"
mv "$cache/kubectl-$version.tmp" "$cache/kubectl-$version"
echo "$cache/kubectl-$version"
