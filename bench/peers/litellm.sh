#!/usr/bin/env bash
# LiteLLM's proxy as the gateway under bench/peer_compare.sh, installed in a
# throwaway venv (pinned; not a project dependency) and routing model
# `mock` to the mock upstream. Versions 1.82.7, 1.82.8 and 1.107.0 were
# reported compromised; 1.102.4 is the newest this package index resolves.
#
#   bench/peers/litellm.sh            # WORKERS=1 VENV=/tmp/dialogd-peer-litellm PORT=14000
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venv=${VENV:-/tmp/dialogd-peer-litellm}
port=${PORT:-14000}
mock=${MOCK:-127.0.0.1:18090}
version=1.102.4
if ! "$venv/bin/pip" show litellm 2>/dev/null | grep -qx "Version: $version"; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "litellm[proxy]==$version"
fi
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/config.yaml" <<YAML
model_list:
  - model_name: mock
    litellm_params:
      model: openai/mock
      api_base: http://$mock/v1
      api_key: sk-dummy
litellm_settings:
  set_verbose: false
  callbacks: []
  success_callback: []
  failure_callback: []
  telemetry: false
general_settings:
  disable_spend_logs: true
  disable_error_logs: true
YAML
# The mock must answer before LiteLLM is asked anything.
bench=$root/target/release/dialogd-bench
. "$root/bench/lib.sh"
start_mock "$mock"
LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_LOG=ERROR DISABLE_SCHEMA_UPDATE=True \
  "$venv/bin/litellm" --config "$work/config.yaml" --host 127.0.0.1 --port "$port" \
  --num_workers "${WORKERS:-1}" --telemetry False > "$work/litellm.out" 2>&1 &
gateway=$!
for _ in $(seq 120); do curl -sf -o /dev/null "http://127.0.0.1:$port/health/liveliness" && break; sleep 0.5; done
GATEWAY_PID=$gateway MOCK=$mock "$root/bench/peer_compare.sh" "http://127.0.0.1:$port/v1" "litellm-$version-w${WORKERS:-1}"
