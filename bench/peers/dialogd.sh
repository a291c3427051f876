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
. "$root/bench/lib.sh"
start_dialogd "$bin"
GATEWAY_PID=$server MOCK=$mock "$root/bench/peer_compare.sh" "http://$addr/v1" dialogd
