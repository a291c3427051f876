# Shared by the bench scripts (sourced): the mock upstream and dialogd
# configured as in the scenarios — auth off on loopback, response cache,
# stream and in-flight limits off, models `mock` (the mock upstream) and
# `echo`. Both write into $work, which the caller creates and removes.

# Starts `dialogd-bench mock-upstream` (16 tokens) on $1 (default: any
# free port); sets $mock to its address.
start_mock() {
  "$bench" mock-upstream --listen "${1:-127.0.0.1:0}" --tokens 16 > "$work/mock.out" 2>&1 &
  for _ in $(seq 50); do grep -q "listening on" "$work/mock.out" && break; sleep 0.1; done
  mock=$(sed -n 's/.*listening on //p' "$work/mock.out")
}

# Starts dialogd binary $1 routed to $mock; sets $server (pid) and $addr.
# Env: DEFAULT_MODEL (mock), DURABILITY (sync), METRICS_LISTEN (metrics
# off unless set), DIALOGD_WRAPPER (a command or function that runs the
# binary, e.g. under valgrind; it must exec, so $server is dialogd).
start_dialogd() {
  local metrics="enabled = false"
  [ -n "${METRICS_LISTEN:-}" ] && metrics="enabled = true
listen = \"$METRICS_LISTEN\""
  cat > "$work/dialogd.toml" <<TOML
default_model = "${DEFAULT_MODEL:-mock}"
[server]
listen = "127.0.0.1:0"
[store]
data_dir = "$work/data"
durability = "${DURABILITY:-sync}"
[metrics]
$metrics
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
[[models]]
name = "echo"
backend = "echo"
[backends.mock]
kind = "openai"
base_url = "http://$mock/v1"
TOML
  ${DIALOGD_WRAPPER:-} "$1" --config "$work/dialogd.toml" > "$work/dialogd.out" 2>/dev/null &
  server=$!
  for _ in $(seq 600); do grep -q "listening on" "$work/dialogd.out" && break; sleep 0.1; done
  addr=$(sed -n 's/^dialogd listening on //p' "$work/dialogd.out")
}
