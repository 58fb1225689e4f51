#!/usr/bin/env bash
# Cold start of the CLI, the figure of issue 14: process start to a first finished image, against what 50
# more sampler steps cost (a warm 50-step generation), and peak RSS; medians of N fresh processes (default 15)
# (1-step and 51-step runs interleaved) after one warm-up run, for each configuration: the prompt cache warm (a prompt drawn before: no text
# encoder), no prompt cache (fp32 and int8 encoders). The load cache folder is the CLI's default.
#
#   scripts/coldstart.sh [N] [path of mirage]   (default: target/plain/release/mirage, the CLI without the
#                                                trainer: `cargo build --release --target-dir target/plain --bin mirage`)
# Measure with nothing else running: these are wall-clock times on a shared 2-core machine.
set -euo pipefail
n=${1:-15}
bin=${2:-target/plain/release/mirage}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
[ -x "$bin" ] || { echo "no $bin: cargo build --release --target-dir target/plain --bin mirage" >&2; exit 1; }

# one FLAGS... -> "ms rss_kb" of one fresh process.
one() {
    local t0 t1
    t0=$(date +%s%N)
    /usr/bin/time -f "%M" -o "$out/rss" "$bin" "$@" --quiet -o "$out/x.png" >/dev/null
    t1=$(date +%s%N)
    echo "$(((t1 - t0) / 1000000)) $(cat "$out/rss")"
}
median() { sort -n | awk '{v[NR]=$1; r[NR]=$2} END {m=int((NR+1)/2); printf "%d ms (min %d, max %d), peak RSS %.0f MB", v[m], v[1], v[NR], r[m]/1024}'; }

for config in "prompt cache warm|" "no prompt cache, fp32|--no-prompt-cache" "no prompt cache, int8|--no-prompt-cache --precision int8"; do
    name=${config%%|*}
    read -r -a flags <<<"${config#*|}"
    "$bin" "${flags[@]}" generate --count 1 --steps 1 --quiet -o "$out/x.png" >/dev/null 2>&1 # warm-up: caches, page cache
    : >"$out/one"
    : >"$out/many"
    # Interleaved, so that the machine's drift touches both alike.
    for _ in $(seq "$n"); do
        one "${flags[@]}" generate --count 1 --steps 1 >>"$out/one"
        one "${flags[@]}" generate --count 1 --steps 51 >>"$out/many"
    done
    a=$(median <"$out/one")
    b=$(median <"$out/many")
    d=$((${b%% ms*} - ${a%% ms*}))
    echo "$name: 1 step $a; 51 steps $b; 50 warm steps ~$d ms; cold start / warm 50 steps $(awk -v a="${a%% ms*}" -v d="$d" 'BEGIN {printf "%.2f", (d > 0 ? a / d : 0)}')"
done
