//! The metric catalog: every series dialogd exports is named and recorded
//! here, so names, labels and units stay consistent. Labels only ever take
//! bounded values (method names from the proto, configured models and
//! targets, fixed reasons) — never a dialogue, user or request ID.
//!
//! Names follow Prometheus conventions (base units, `_total` counters) and
//! the gRPC server metrics of go-grpc-prometheus; model-call series mirror
//! the OpenTelemetry GenAI semantic conventions (`gen_ai_*`).

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

pub const RPC_STARTED: &str = "grpc_server_started_total";
pub const RPC_HANDLED: &str = "grpc_server_handled_total";
pub const RPC_DURATION: &str = "grpc_server_handling_seconds";
pub const RPC_IN_FLIGHT: &str = "grpc_server_in_flight";
pub const STREAMS_IN_FLIGHT: &str = "dialogd_streams_in_flight";
pub const GATEWAY_OVERHEAD: &str = "dialogd_gateway_overhead_seconds";
pub const BACKEND_DURATION: &str = "gen_ai_client_operation_duration_seconds";
pub const TIME_TO_FIRST_TOKEN: &str = "gen_ai_server_time_to_first_token_seconds";
pub const TIME_PER_OUTPUT_TOKEN: &str = "gen_ai_server_time_per_output_token_seconds";
pub const TOKENS: &str = "gen_ai_client_token_usage_total";
pub const BACKEND_RETRIES: &str = "dialogd_backend_retries_total";
pub const CIRCUIT_STATE: &str = "dialogd_backend_circuit_state";
pub const CONCURRENCY_LIMIT: &str = "dialogd_backend_concurrency_limit";
pub const SERVER_CONCURRENCY_LIMIT: &str = "dialogd_server_concurrency_limit";
pub const API_KEY_EXPIRES: &str = "dialogd_api_key_expires_timestamp_seconds";
pub const API_KEY_EARLIEST_EXPIRY: &str = "dialogd_api_key_earliest_expiry_days";
pub const RATE_LIMITED: &str = "dialogd_rate_limited_total";
pub const CACHE_LOOKUPS: &str = "dialogd_cache_lookups_total";
pub const CACHE_ENTRIES: &str = "dialogd_cache_entries";
pub const SEMANTIC_LOOKUPS: &str = "dialogd_semantic_cache_lookups_total";
pub const SEMANTIC_SIMILARITY: &str = "dialogd_semantic_cache_hit_similarity";
pub const STORE_DURATION: &str = "dialogd_store_operation_duration_seconds";
pub const STORE_SIZE: &str = "dialogd_store_size_bytes";
pub const AUDIT_PENDING: &str = "dialogd_audit_events_pending";
pub const AUDIT_LOST: &str = "dialogd_audit_events_lost_total";
pub const RULE_HITS: &str = "dialogd_rule_hits_total";
pub const RULE_RELOADS: &str = "dialogd_rule_reloads_total";
pub const OPERATIONS_QUEUED: &str = "dialogd_operations_queued";
pub const OPERATION_WAIT: &str = "dialogd_operation_queue_seconds";

/// Histogram buckets in seconds, 10 µs to 2 minutes: fits the gateway's own
/// microseconds as well as a long generation.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Buckets of the semantic cache hits' similarity.
pub const SIMILARITY_BUCKETS: &[f64] = &[
    0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.97, 0.98, 0.99, 0.995, 1.0,
];

/// Explains every series on /metrics (HELP lines).
pub fn describe() {
    describe_counter!(RPC_STARTED, "RPCs started, by method.");
    describe_counter!(
        RPC_HANDLED,
        "RPCs completed, by method and gRPC status code."
    );
    describe_histogram!(
        RPC_DURATION,
        metrics::Unit::Seconds,
        "Time to handle an RPC."
    );
    describe_gauge!(RPC_IN_FLIGHT, "RPCs being handled now, by method.");
    describe_gauge!(STREAMS_IN_FLIGHT, "Streaming turns running now.");
    describe_histogram!(
        GATEWAY_OVERHEAD,
        metrics::Unit::Seconds,
        "Time of a one-turn call spent in dialogd itself: from the request's arrival to the end of its response, minus waiting on the model backend (and, streaming, on the client)."
    );
    describe_histogram!(
        BACKEND_DURATION,
        metrics::Unit::Seconds,
        "Duration of one model backend call (one attempt), by model, target and outcome."
    );
    describe_histogram!(
        TIME_TO_FIRST_TOKEN,
        metrics::Unit::Seconds,
        "Time from sending a streamed model call to its first chunk."
    );
    describe_histogram!(
        TIME_PER_OUTPUT_TOKEN,
        metrics::Unit::Seconds,
        "Time between streamed chunks after the first (inter-token latency)."
    );
    describe_counter!(
        TOKENS,
        "Tokens sent to (input) and received from (output) models."
    );
    describe_counter!(
        BACKEND_RETRIES,
        "Model calls attempted again after a failure."
    );
    describe_gauge!(
        CIRCUIT_STATE,
        "Circuit breaker per model and target: 0 closed, 1 half-open, 2 open."
    );
    describe_gauge!(
        CONCURRENCY_LIMIT,
        "Adaptive limit of calls in flight per model and target (refreshed at every scrape)."
    );
    describe_gauge!(
        SERVER_CONCURRENCY_LIMIT,
        "Adaptive limit of the server's calls in flight (refreshed at every scrape)."
    );
    describe_gauge!(
        API_KEY_EXPIRES,
        "When each API key with an `expires` time expires (Unix seconds), by key id."
    );
    describe_gauge!(
        API_KEY_EARLIEST_EXPIRY,
        "Days until the earliest API key expiry (negative: a configured key has expired); refreshed at every scrape."
    );
    describe_counter!(RATE_LIMITED, "Calls refused by a limit, by reason.");
    describe_counter!(
        CACHE_LOOKUPS,
        "Response cache lookups, by result (hit, miss)."
    );
    describe_gauge!(CACHE_ENTRIES, "Replies held by the response cache.");
    describe_counter!(
        SEMANTIC_LOOKUPS,
        "Semantic cache lookups, by result (hit, miss, error: the embedding failed)."
    );
    describe_histogram!(
        SEMANTIC_SIMILARITY,
        "Cosine similarity of the prompts of semantic cache hits."
    );
    describe_histogram!(
        STORE_DURATION,
        metrics::Unit::Seconds,
        "Duration of a store operation, by operation."
    );
    describe_gauge!(STORE_SIZE, "Bytes the store takes on disk.");
    describe_gauge!(
        AUDIT_PENDING,
        "Audit events waiting for the store to take them (it was unreachable)."
    );
    describe_counter!(
        AUDIT_LOST,
        "Audit events that could not be written, by reason (buffer_full, store_gone)."
    );
    describe_counter!(
        RULE_HITS,
        "Requests a traffic rule decided, by rule name and action (route, reply, refuse)."
    );
    describe_gauge!(
        OPERATIONS_QUEUED,
        "Asynchronous turns waiting for a worker."
    );
    describe_histogram!(
        OPERATION_WAIT,
        metrics::Unit::Seconds,
        "Time an asynchronous turn waited for a worker, by priority (high, normal, low)."
    );
    describe_counter!(
        RULE_RELOADS,
        "Reloads of the rules file, by result (ok, failed: the previous table stays)."
    );
}

/// Counts an RPC as started and in flight until the returned guard drops:
/// whatever ends the call (answer, error, cancellation) releases it once.
pub fn rpc_started(service: &'static str, method: &'static str) -> InFlight {
    let labels = [("grpc_service", service), ("grpc_method", method)];
    counter!(RPC_STARTED, &labels).increment(1);
    let in_flight = gauge!(RPC_IN_FLIGHT, &labels);
    in_flight.increment(1.0);
    InFlight(in_flight)
}

/// `code` as gRPC spells it (`NOT_FOUND`).
pub fn rpc_handled(
    service: &'static str,
    method: &'static str,
    code: &'static str,
    took: Duration,
) {
    counter!(RPC_HANDLED, "grpc_service" => service, "grpc_method" => method, "grpc_code" => code)
        .increment(1);
    histogram!(RPC_DURATION, "grpc_service" => service, "grpc_method" => method)
        .record(took.as_secs_f64());
}

/// A gauge raised while this value lives.
pub struct InFlight(metrics::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Counts a streaming turn as running until the guard drops.
pub fn stream_started() -> InFlight {
    let streams = gauge!(STREAMS_IN_FLIGHT);
    streams.increment(1.0);
    InFlight(streams)
}

/// How a turn was delivered, for the overhead histogram.
#[derive(Debug, Clone, Copy)]
pub enum TurnKind {
    Unary,
    Stream,
}

/// What a call's turns report to the transport, which measures the call
/// from arrival to the end of its response: so the overhead histogram
/// counts parsing, serialization and scheduling too, minus the time the
/// turn waited on models (and, streaming, on the client).
#[derive(Default)]
pub struct CallTiming {
    /// Turns reported (0: none; more than one: a batch).
    turns: AtomicU8,
    /// 1: unary, 2: stream (of the last turn reported).
    kind: AtomicU8,
    waited_ns: AtomicU64,
    /// Told the call's own time (None: a batch, not measured) when it
    /// ends: the server's adaptive limit learns from it.
    on_overhead: std::sync::Mutex<Option<OverheadSink>>,
}

/// Takes a call's own time when it ends.
pub type OverheadSink = Box<dyn FnOnce(Option<Duration>) + Send>;

tokio::task_local! {
    static CALL_TIMING: Arc<CallTiming>;
}

impl CallTiming {
    /// Runs `call` with `self` as the timing its turns report to.
    pub async fn scope<T>(self: Arc<Self>, call: impl std::future::Future<Output = T>) -> T {
        CALL_TIMING.scope(self, call).await
    }

    /// The timing of the call this task serves, to carry into a task it
    /// spawns for the call (a streamed turn).
    pub fn current() -> Option<Arc<CallTiming>> {
        CALL_TIMING.try_with(Arc::clone).ok()
    }

    /// Tells `sink` the call's own time when it ends.
    pub fn on_overhead(&self, sink: OverheadSink) {
        *self.on_overhead.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    /// Records the call's overhead once it ended after `elapsed`, when
    /// exactly one turn ran in it (a call without turns is all overhead,
    /// for the `on_overhead` sink).
    pub fn finish(&self, elapsed: Duration) {
        let sink = self
            .on_overhead
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let own = match self.turns.load(Ordering::Acquire) {
            0 => Some(elapsed),
            1 => {
                let kind = match self.kind.load(Ordering::Acquire) {
                    2 => TurnKind::Stream,
                    _ => TurnKind::Unary,
                };
                let waited = Duration::from_nanos(self.waited_ns.load(Ordering::Acquire));
                let own = elapsed.saturating_sub(waited);
                gateway_overhead(kind, own);
                Some(own)
            }
            _ => None,
        };
        if let Some(sink) = sink {
            sink(own);
        }
    }
}

/// A finished turn: the transport's call timing takes its waiting time
/// when the call has one; otherwise (a WebSocket's turns, a call without
/// the metrics layer) the engine's own measure, `took` minus `waited`.
pub fn turn_finished(kind: TurnKind, took: Duration, waited: Duration) {
    match CallTiming::current() {
        Some(timing) => {
            timing.turns.fetch_add(1, Ordering::AcqRel);
            let code = match kind {
                TurnKind::Unary => 1,
                TurnKind::Stream => 2,
            };
            timing.kind.store(code, Ordering::Release);
            let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
            timing.waited_ns.fetch_add(nanos, Ordering::AcqRel);
        }
        None => gateway_overhead(kind, took.saturating_sub(waited)),
    }
}

pub fn gateway_overhead(kind: TurnKind, overhead: Duration) {
    let kind = match kind {
        TurnKind::Unary => "unary",
        TurnKind::Stream => "stream",
    };
    histogram!(GATEWAY_OVERHEAD, "kind" => kind).record(overhead.as_secs_f64());
}

/// One attempt of a model call: which model and target, how it ended.
pub fn backend_call(model: &str, target: &str, ok: bool, took: Duration) {
    let outcome = if ok { "ok" } else { "error" };
    histogram!(
        BACKEND_DURATION,
        "gen_ai_request_model" => model.to_owned(),
        "target" => target.to_owned(),
        "outcome" => outcome
    )
    .record(took.as_secs_f64());
}

pub fn time_to_first_token(model: &str, target: &str, took: Duration) {
    histogram!(TIME_TO_FIRST_TOKEN, "gen_ai_request_model" => model.to_owned(), "target" => target.to_owned())
        .record(took.as_secs_f64());
}

pub fn time_per_output_token(model: &str, target: &str, gap: Duration) {
    histogram!(TIME_PER_OUTPUT_TOKEN, "gen_ai_request_model" => model.to_owned(), "target" => target.to_owned())
        .record(gap.as_secs_f64());
}

pub fn tokens(model: &str, input: u64, output: u64) {
    for (kind, n) in [("input", input), ("output", output)] {
        counter!(TOKENS, "gen_ai_request_model" => model.to_owned(), "gen_ai_token_type" => kind)
            .increment(n);
    }
}

pub fn backend_retry(model: &str, target: &str) {
    counter!(BACKEND_RETRIES, "gen_ai_request_model" => model.to_owned(), "target" => target.to_owned())
        .increment(1);
}

/// `value`: 0 closed, 1 half-open, 2 open (see `describe`).
pub fn circuit_state(model: &str, target: &str, value: f64) {
    gauge!(CIRCUIT_STATE, "gen_ai_request_model" => model.to_owned(), "target" => target.to_owned())
        .set(value);
}

/// A refusal by a limit; `reason` is one of a fixed set (requests, tokens,
/// streams, overloaded).
pub fn rate_limited(reason: &'static str) {
    counter!(RATE_LIMITED, "reason" => reason).increment(1);
}

pub fn cache_lookup(hit: bool) {
    let result = if hit { "hit" } else { "miss" };
    counter!(CACHE_LOOKUPS, "result" => result).increment(1);
}

pub fn cache_entries(n: u64) {
    gauge!(CACHE_ENTRIES).set(n as f64);
}

pub fn store_operation(operation: &'static str, took: Duration) {
    histogram!(STORE_DURATION, "operation" => operation).record(took.as_secs_f64());
}

pub fn store_size(bytes: u64) {
    gauge!(STORE_SIZE).set(bytes as f64);
}

pub fn audit_pending(n: usize) {
    gauge!(AUDIT_PENDING).set(n as f64);
}

/// An audit event given up; `reason` is buffer_full or store_gone.
pub fn audit_lost(reason: &'static str) {
    counter!(AUDIT_LOST, "reason" => reason).increment(1);
}

/// A request decided by the rule `rule` (a configured, bounded name).
pub fn rule_hit(rule: &str, action: &'static str) {
    counter!(RULE_HITS, "rule" => rule.to_owned(), "action" => action).increment(1);
}

pub fn rule_reload(ok: bool) {
    let result = if ok { "ok" } else { "failed" };
    counter!(RULE_RELOADS, "result" => result).increment(1);
}

pub fn operations_queued(n: usize) {
    gauge!(OPERATIONS_QUEUED).set(n as f64);
}

/// An asynchronous turn of `priority` starts after waiting `waited`.
pub fn operation_waited(priority: &'static str, waited: Duration) {
    histogram!(OPERATION_WAIT, "priority" => priority).record(waited.as_secs_f64());
}

pub fn concurrency_limit(model: &str, target: &str, limit: usize) {
    gauge!(CONCURRENCY_LIMIT, "gen_ai_request_model" => model.to_owned(), "target" => target.to_owned())
        .set(limit as f64);
}

/// A semantic cache lookup: the hit's similarity, or a miss.
pub fn semantic_lookup(hit: Option<f32>) {
    match hit {
        Some(similarity) => {
            counter!(SEMANTIC_LOOKUPS, "result" => "hit").increment(1);
            histogram!(SEMANTIC_SIMILARITY).record(f64::from(similarity));
        }
        None => counter!(SEMANTIC_LOOKUPS, "result" => "miss").increment(1),
    }
}

/// A semantic cache lookup that could not embed the prompt.
pub fn semantic_lookup_failed() {
    counter!(SEMANTIC_LOOKUPS, "result" => "error").increment(1);
}

pub fn server_concurrency_limit(limit: usize) {
    gauge!(SERVER_CONCURRENCY_LIMIT).set(limit as f64);
}

/// Key expiry times (`(key id, Unix seconds)`) as seen at `now`.
pub fn api_key_expiries(expiries: &[(String, i64)], now: i64) {
    for (key_id, expires) in expiries {
        gauge!(API_KEY_EXPIRES, "key_id" => key_id.clone()).set(*expires as f64);
    }
    if let Some(earliest) = expiries.iter().map(|(_, t)| *t).min() {
        gauge!(API_KEY_EARLIEST_EXPIRY).set((earliest - now) as f64 / 86_400.0);
    }
}
