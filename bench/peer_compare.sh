#!/usr/bin/env bash
# The OpenAI-path matrix against the mock upstream alone and through any
# OpenAI-compatible gateway, in one run: closed loop (64 connections),
# open loop at fixed rates (latency from each request's scheduled send
# time), SSE time to first event at 50/s, and the gateway's CPU per
# request. Added = gateway minus mock alone, same run, same generator
# (dialogd-bench openai-load: HTTP/1.1 keep-alive, reqwest).
#
#   cargo build --release --bins
#   bench/peer_compare.sh BASE_URL [LABEL]
#
# The gateway must already run and route model $MODEL (default mock) to
# http://$MOCK/v1 (default 127.0.0.1:18090); the mock is started here
# unless something answers there. bench/peers/dialogd.sh and
# bench/peers/litellm.sh start a gateway configured so, run this and stop
# it. Env: MODEL=mock API_KEY= MOCK=127.0.0.1:18090 SECS=10 RATES="50 2000"
# GATEWAY_PID= (default: whoever listens on BASE_URL's port; CPU is summed
# over that process and its children).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bench=$root/target/release/dialogd-bench
base=${1:?usage: bench/peer_compare.sh BASE_URL [LABEL]}
label=${2:-gateway}
model=${MODEL:-mock}
mock=${MOCK:-127.0.0.1:18090}
secs=${SECS:-10}
rates=${RATES:-50 2000}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT

answers() { curl -s -o /dev/null -m 5 -H 'content-type: application/json' -d "{\"model\":\"$model\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}" "$1/chat/completions" -w '%{http_code}' | grep -q 200; }
if ! answers "http://$mock/v1"; then
  . "$root/bench/lib.sh"
  start_mock "$mock"
fi
answers "http://$mock/v1" || { echo "the mock upstream does not answer on $mock" >&2; exit 1; }
answers "$base" || { echo "$base does not answer model $model with HTTP 200" >&2; exit 1; }

port=$(sed -E 's#^[a-z]+://[^:/]+:?([0-9]*).*#\1#' <<< "$base")
pid=${GATEWAY_PID:-$(ss -ltnpH "sport = :${port:-80}" 2>/dev/null | sed -nE 's/.*pid=([0-9]+).*/\1/p' | head -1)}
tree_cpu() { # user+system ticks of $pid and its descendants
  local all=$pid kids=$pid
  while kids=$(for k in $kids; do pgrep -P "$k" || true; done) && [ -n "$kids" ]; do all="$all $kids"; done
  for p in $all; do awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || true; done | awk '{n += $1} END {print n + 0}'
}

load() { # base, extra args...
  local url=$1; shift
  "$bench" openai-load --base-url "$url" --model "$model" ${API_KEY:+--api-key "$API_KEY"} --seconds "$secs" "$@"
}
field() { sed -nE "s/.*[ ^]$1=([0-9.]+).*/\1/p" <<< "$2" | head -1; }
rate_of() { sed -nE 's#^([0-9.]+)/s.*#\1#p' <<< "$1" | head -1; }
errors() { local e; e=$(field err "$1"); [ "${e:-0}" = 0 ] || echo "  ($e errors: $(sed -n 's/^first error: //p' <<< "$1"))"; }

declare -A out
for side in direct gateway; do
  url=$base; [ $side = direct ] && url="http://$mock/v1"
  before=0; [ $side = gateway ] && [ -n "$pid" ] && before=$(tree_cpu)
  r=$(load "$url" --concurrency 64)
  out[$side,closed]=$r
  if [ $side = gateway ] && [ -n "$pid" ]; then
    ticks=$(( $(tree_cpu) - before ))
    ok=$(field ok "$r")
    out[cpu]=$(awk -v t="$ticks" -v hz="$(getconf CLK_TCK)" -v n="$ok" 'BEGIN { if (n > 0) printf "%.0f", t / hz * 1e6 / n; else print "-" }')
  fi
  for rate in $rates; do out[$side,$rate]=$(load "$url" --rate "$rate"); done
  out[$side,sse]=$(load "$url" --rate 50 --stream)
done

echo "## OpenAI path: mock alone vs $label ($base), $(date -u +%F), ${secs}s per cell"
echo
echo "| | mock alone | $label | added |"
echo "| --- | --- | --- | --- |"
d=$(rate_of "${out[direct,closed]}"); g=$(rate_of "${out[gateway,closed]}")
echo "| closed loop, 64 connections, req/s | $d | $g$(errors "${out[gateway,closed]}") | $(awk -v d="$d" -v g="$g" 'BEGIN { printf "%.1f%% of the mock", 100 * g / d }') |"
for rate in $rates; do
  for q in p50 p99; do
    d=$(field $q "${out[direct,$rate]}"); g=$(field $q "${out[gateway,$rate]}")
    echo "| $rate/s $q ms | $d | $g$(errors "${out[gateway,$rate]}") | $(awk -v d="$d" -v g="$g" 'BEGIN { printf "%.3f", g - d }') |"
  done
done
for q in p50 p99; do
  d=$(sed -nE "s/^first event.* $q=([0-9.]+)ms.*/\1/p" <<< "${out[direct,sse]}")
  g=$(sed -nE "s/^first event.* $q=([0-9.]+)ms.*/\1/p" <<< "${out[gateway,sse]}")
  echo "| SSE first event at 50/s $q ms | $d | $g$(errors "${out[gateway,sse]}") | $(awk -v d="$d" -v g="$g" 'BEGIN { printf "%.3f", g - d }') |"
done
echo "| gateway CPU per request (closed loop) | | ${out[cpu]:-"- (no GATEWAY_PID)"} us | |"
