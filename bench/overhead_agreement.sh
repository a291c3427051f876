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
"$bench" mock-upstream --tokens 16 > "$work/mock.out" 2>&1 &
for _ in $(seq 50); do grep -q "listening on" "$work/mock.out" && break; sleep 0.1; done
mock=$(sed -n 's/.*listening on //p' "$work/mock.out")
cat > "$work/dialogd.toml" <<TOML
default_model = "mock"
[server]
listen = "127.0.0.1:0"
[store]
data_dir = "$work/data"
[metrics]
enabled = true
listen = "127.0.0.1:$metrics_port"
[cache]
enabled = false
[limits]
max_streams_per_principal = 0
max_in_flight = 0
[log]
level = "warn"
[[models]]
name = "mock"
backend = "mock"
[backends.mock]
kind = "openai"
base_url = "http://$mock/v1"
TOML
"$root/target/release/dialogd" --config "$work/dialogd.toml" > "$work/dialogd.out" 2>/dev/null &
for _ in $(seq 100); do grep -q "listening on" "$work/dialogd.out" && break; sleep 0.1; done
addr=$(sed -n 's/^dialogd listening on //p' "$work/dialogd.out")
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
