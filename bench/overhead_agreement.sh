#!/usr/bin/env bash
# Does dialogd_gateway_overhead_seconds agree with the latency a client
# sees added? Same open-loop rate against the mock alone, then through
# dialogd (stateless OpenAI path); compares the client's mean added latency
# with the metric's mean over the same calls.
#
#   cargo build --release --bins
#   bench/overhead_agreement.sh [rate] [seconds]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
rate=${1:-500}
secs=${2:-8}
bench=$root/target/release/dialogd-bench
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
metrics_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
. "$root/bench/lib.sh"
start_mock
METRICS_LISTEN=127.0.0.1:$metrics_port start_dialogd "$root/target/release/dialogd"
overhead() {
  curl -s "http://127.0.0.1:$metrics_port/metrics" \
    | awk '/^dialogd_gateway_overhead_seconds_(sum|count)\{kind="unary"\}/ {print $2}' | tr '\n' ' '
}
alone=$("$bench" load --target "$mock" --openai --rate "$rate" --seconds "$secs")
read -r sum0 count0 <<< "$(overhead)" || true
through=$("$bench" load --target "$addr" --openai --rate "$rate" --seconds "$secs")
read -r sum1 count1 <<< "$(overhead)"
echo "mock alone:    $alone"
echo "through dialogd: $through"
mean() { sed -n 's/.*mean=\([0-9.]*\)ms.*/\1/p' <<< "$1"; }
awk -v a="$(mean "$alone")" -v t="$(mean "$through")" -v s0="${sum0:-0}" -v c0="${count0:-0}" \
    -v s1="$sum1" -v c1="$count1" 'BEGIN {
  added = t - a; metric = (s1 - s0) / (c1 - c0) * 1000
  printf "client-measured added mean: %.3f ms; dialogd_gateway_overhead mean: %.3f ms over %d calls (metric/client = %.0f%%)\n",
    added, metric, c1 - c0, metric / added * 100 }'
