#!/usr/bin/env bash
# Builds the cargo-fuzz targets in fuzz/ and runs each for a bounded number of inputs.
#
#   bash scripts/fuzz.sh [ITERATIONS]      # default 2000 runs per target
#   FUZZ_TARGETS="config_parse" bash scripts/fuzz.sh 100000
#   FUZZ_SECONDS=150 bash scripts/fuzz.sh 0   # 0 = no run limit, stop after FUZZ_SECONDS
#
# Exits non-zero if a target crashes (libFuzzer leaves the input in fuzz/artifacts/<target>/).
# cargo-fuzz needs nightly-only rustc flags (-Zsanitizer): on a stable toolchain they are
# unlocked with RUSTC_BOOTSTRAP=1. New corpus entries go to fuzz/corpus/<target>/ (not in
# git); fuzz/seeds/<target>/ holds the checked-in starting inputs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [[ -x "$HOME/.cargo/bin/cargo" && ":$PATH:" != *":$HOME/.cargo/bin:"* ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

runs="${1:-2000}"
[[ "$runs" =~ ^[0-9]+$ ]] || { echo "fuzz.sh: ITERATIONS must be a number, got $runs" >&2; exit 2; }
targets="${FUZZ_TARGETS:-config_parse cli_args mount_options small_parsers}"
seconds="${FUZZ_SECONDS:-0}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
cd fuzz
cargo fuzz build -O

# The targets' scratch files (config_parse's bundle) go to a temp dir of this run only.
scratch="$(mktemp -d /tmp/rrun-fuzz.XXXXXX)"
trap 'rm -rf "$scratch"' EXIT

status=0
for t in $targets; do
    mkdir -p "corpus/$t"
    # libFuzzer: -runs=-1 is "no limit".
    args=(-runs="$( ((runs > 0)) && echo "$runs" || echo -1)" -max_len=65536 -timeout=10 -print_final_stats=1)
    if ((seconds > 0)); then
        args+=(-max_total_time="$seconds")
    fi
    printf '\n==> fuzz %s (%s runs%s)\n' "$t" "$runs" "$( ((seconds > 0)) && echo ", at most ${seconds}s")"
    log="$(mktemp)"
    if TMPDIR="$scratch" cargo fuzz run -O "$t" "corpus/$t" "seeds/$t" -- "${args[@]}" >"$log" 2>&1; then
        grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added|peak_rss_mb)|^Done ' "$log" || true
    else
        status=1
        tail -n 60 "$log"
        echo "fuzz.sh: $t FAILED (crash input in fuzz/artifacts/$t/)" >&2
    fi
    rm -f "$log"
done
exit "$status"
