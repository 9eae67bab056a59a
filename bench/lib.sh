# The start the bench scripts share, sourced after `cd` to the repository root with
# $bench_name set (the script's name in its messages): die/log, root, cargo on PATH.

die() { printf '%s: error: %s\n' "$bench_name" "$*" >&2; exit 1; }
log() { printf '==> %s\n' "$*" >&2; }

((EUID == 0)) || die "containers need root: run 'sudo bash $0'"
if [[ -x "$HOME/.cargo/bin/cargo" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi
