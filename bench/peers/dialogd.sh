#!/usr/bin/env bash
# dialogd as the gateway under bench/peer_compare.sh: routes model `mock`
# to the mock upstream, configured as in the scenarios (auth off on
# loopback, durable store, response cache and limits off).
#
#   cargo build --release --bins
#   bench/peers/dialogd.sh [dialogd binary]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${1:-$root/target/release/dialogd}
mock=${MOCK:-127.0.0.1:18090}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/dialogd.toml" <<TOML
default_model = "mock"
[server]
listen = "127.0.0.1:0"
[store]
data_dir = "$work/data"
[metrics]
enabled = false
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
"$bin" --config "$work/dialogd.toml" > "$work/dialogd.out" 2>/dev/null &
server=$!
for _ in $(seq 100); do grep -q "listening on" "$work/dialogd.out" && break; sleep 0.1; done
addr=$(sed -n 's/^dialogd listening on //p' "$work/dialogd.out")
GATEWAY_PID=$server MOCK=$mock "$root/bench/peer_compare.sh" "http://$addr/v1" dialogd
