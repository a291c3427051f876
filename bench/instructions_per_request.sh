#!/usr/bin/env bash
# Instructions dialogd executes per request, counted by callgrind: unlike
# CPU time this does not move with the machine's noise (the same binary
# and load give the same count within a fraction of a percent), so it
# decides small A/B comparisons that cpu_per_request.sh cannot. Counts
# user-space instructions only (not the kernel's share, not waiting).
# Runs the mock upstream and dialogd (under valgrind) as the other scripts
# do; instrumentation starts after a warm-up; REQUESTS stateless OpenAI
# chat completions (or gRPC Converse turns, PATH_UNDER_TEST=converse) at a
# fixed rate (RATE, default 50/s). KEEP=dir keeps callgrind's files there
# for callgrind_annotate. For Converse, MODEL=mock goes through the mock
# upstream instead of the echo backend, and GROW=N sends every turn to one
# of N dialogues that grow for the whole run (long histories).
#
#   cargo build --release --bins
#   [PATH_UNDER_TEST=converse] bench/instructions_per_request.sh [dialogd binary] [requests]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/dialogd}
requests=${2:-1000}
rate=${RATE:-50}
bench=$root/target/release/dialogd-bench
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
. "$root/bench/lib.sh"
start_mock
path=${PATH_UNDER_TEST:-openai}
case $path in
  openai) default_model=mock ;;
  converse) default_model=${MODEL:-echo} ;;
  *) echo "PATH_UNDER_TEST is openai or converse" >&2; exit 2 ;;
esac
vg() { exec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/cg.%p" "$@"; }
DEFAULT_MODEL=$default_model DIALOGD_WRAPPER=vg start_dialogd "$bin"
load() { # seconds
  case $path in
    openai) "$bench" openai-load --base-url "http://$addr/v1" --rate "$rate" --concurrency 16 --seconds "$1" ;;
    converse) "$bench" load --target "$addr" --rate "$rate" --concurrency 16 --seconds "$1" ${GROW:+--grow "$GROW"} ;;
  esac
}
load 3 > /dev/null # warm-up: connections, caches, lazy statics
callgrind_control -i on "$server" > /dev/null 2>&1
out=$(load $((requests / rate)))
callgrind_control -d "$server" > /dev/null 2>&1
sleep 1
ok=$(sed -nE 's/.* ok=([0-9]+).*/\1/p' <<< "$out" | head -1)
instructions=$(cat "$work"/cg.* 2>/dev/null | sed -nE 's/^(summary|totals): ([0-9]+).*/\2/p' | awk '{n += $1} END {print n + 0}')
[ -n "${KEEP:-}" ] && cp "$work"/cg.* "$KEEP"/
echo "$out" | head -1
awk -v i="$instructions" -v n="$ok" 'BEGIN { printf "dialogd instructions per request: %.0f (%d requests)\n", i / n, n }'
