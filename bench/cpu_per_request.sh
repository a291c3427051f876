#!/usr/bin/env bash
# CPU time dialogd spends per request, independent of how fast the
# (same-box) load generator is: dialogd's user+system time over the
# measured window divided by the requests answered in it, and its context
# switches per request. Runs the mock upstream and dialogd (sync store,
# cache off) from target/release. PATH_UNDER_TEST=openai (default) sends
# stateless OpenAI chat completions to the mock; =converse sends gRPC
# Converse turns to the echo backend (durable history, one dialogue per
# worker). PERF=file records a perf profile of dialogd over the window;
# DURABILITY=relaxed runs the store without per-turn flushes.
#
#   cargo build --release --bins
#   [PATH_UNDER_TEST=converse] [PERF=out.data] bench/cpu_per_request.sh [dialogd binary] [seconds]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release/dialogd}
secs=${2:-8}
bench=$root/target/release/dialogd-bench
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
. "$root/bench/lib.sh"
start_mock
path=${PATH_UNDER_TEST:-openai}
case $path in
  openai) default_model=mock load_flags=(--openai) ;;
  converse) default_model=echo load_flags=() ;;
  *) echo "PATH_UNDER_TEST is openai or converse" >&2; exit 2 ;;
esac
DEFAULT_MODEL=$default_model start_dialogd "$bin"
cpu() { awk '{print $14 + $15}' "/proc/$server/stat"; }
switches() { cat /proc/$server/task/*/status 2>/dev/null | awk '/ctxt_switches/ {n += $2} END {print n}'; }
"$bench" load --target "$addr" "${load_flags[@]}" --concurrency 64 --seconds "$secs" > "$work/load.out" &
load=$!
sleep 1 # the load generator's warm-up second, not counted in its report
before=$(cpu)
switched=$(switches)
if [ -n "${PERF:-}" ]; then
  perf record ${PERF_CALL_GRAPH:--g} -o "$PERF" -p "$server" -- sleep $((secs - 2)) > /dev/null 2>&1 &
fi
wait "$load"
after=$(cpu)
switched=$(( $(switches) - switched ))
cat "$work/load.out"
ok=$(sed -n 's/.*ok=\([0-9]*\).*/\1/p' "$work/load.out")
ticks=$(getconf CLK_TCK)
awk -v t=$((after - before)) -v hz="$ticks" -v n="$ok" \
  'BEGIN { printf "dialogd CPU per request: %.1f us (%d requests)\n", t / hz * 1e6 / n, n }'
awk -v s="$switched" -v n="$ok" 'BEGIN { printf "dialogd context switches per request: %.1f\n", s / n }'
