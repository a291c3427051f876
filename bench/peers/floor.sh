#!/usr/bin/env bash
# The stack's floor as the gateway under bench/peer_compare.sh: the bare
# hyper + reqwest forwarder (bench/floor_proxy.rs) in front of the mock.
# Run it and bench/peers/dialogd.sh back to back: what dialogd adds above
# the floor is its own work (auth, limits, audit, validation, translation).
#
#   cargo build --release --bins
#   bench/peers/floor.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
mock=${MOCK:-127.0.0.1:18090}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
"$root/target/release/dialogd-floor-proxy" --upstream "http://$mock/v1" > "$work/floor.out" 2>&1 &
proxy=$!
for _ in $(seq 50); do grep -q "listening on" "$work/floor.out" && break; sleep 0.1; done
addr=$(sed -n 's/.*listening on //p' "$work/floor.out")
GATEWAY_PID=$proxy MOCK=$mock "$root/bench/peer_compare.sh" "http://$addr/v1" floor
