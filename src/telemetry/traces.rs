//! OpenTelemetry traces (`[tracing]`): spans exported over OTLP/HTTP, one
//! server span per call (RPC conventions) and one client span per model
//! call attempt (GenAI conventions: `gen_ai.operation.name`,
//! `gen_ai.request.model`, `gen_ai.usage.input_tokens`, …). A caller's W3C
//! `traceparent` is continued, and the attempt's context goes upstream in
//! a `traceparent` of its own. Off unless `tracing.otlp_endpoint` is set;
//! then, and only then, spans are made (`enabled`). Backend names appear
//! in spans, upstream URLs never.

use crate::config::TracingSettings;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of the spans exported (and only those).
pub const TARGET: &str = "dialogd::otel";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: without, none are made.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Flushes and stops the exporter when dropped (at the end of `serve`).
pub struct TraceGuard(SdkTracerProvider);

impl Drop for TraceGuard {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            eprintln!("dialogd: traces not all exported at shutdown: {e}");
        }
    }
}

/// The tracer provider `settings` ask for, if any, posting with the
/// client `http_client` makes (only called when tracing is on).
pub(super) fn provider<C>(
    settings: &TracingSettings,
    http_client: impl FnOnce() -> Result<C, String>,
) -> Result<Option<TraceGuard>, String>
where
    C: opentelemetry_http::HttpClient + 'static,
{
    let Some(url) = settings.traces_url()? else {
        return Ok(None);
    };
    let client = http_client().map_err(|e| format!("tracing: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(url.as_str())
        .with_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("tracing: cannot build the OTLP exporter: {e}"))?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_scheduled_delay(Duration::from_millis(settings.export_delay_ms))
                .build(),
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.service_name.clone())
        .build();
    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio)));
    let provider = SdkTracerProvider::builder()
        .with_span_processor(batch)
        .with_sampler(sampler)
        .with_resource(resource)
        .build();
    ENABLED.store(true, Ordering::Relaxed);
    Ok(Some(TraceGuard(provider)))
}

impl TraceGuard {
    pub(super) fn tracer(&self) -> opentelemetry_sdk::trace::Tracer {
        use opentelemetry::trace::TracerProvider as _;
        self.0.tracer("dialogd")
    }
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct Collect(Vec<(String, String)>);

impl Injector for Collect {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_owned(), value));
    }
}

/// The server span of a call named `name` (`package.Service/Method`),
/// continuing the caller's `traceparent` if it sent one.
pub fn server_span(name: &str, grpc: bool, headers: &http::HeaderMap) -> tracing::Span {
    let (service, method) = name.split_once('/').unwrap_or((name, ""));
    let span = tracing::info_span!(
        target: TARGET,
        "rpc",
        otel.name = %name,
        otel.kind = "server",
        rpc.system = if grpc { "grpc" } else { "http" },
        rpc.service = %service,
        rpc.method = %method,
        rpc.grpc.status_code = Empty,
        otel.status_code = Empty,
    );
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    let _ = span.set_parent(parent);
    span
}

/// Ends a server span with the call's gRPC status code.
pub fn record_status(span: &tracing::Span, code: i32) {
    span.record("rpc.grpc.status_code", code);
    if code != 0 {
        span.record("otel.status_code", "ERROR");
    }
}

/// The client span of one attempt at a model call (`operation`: `chat` or
/// `embeddings`) on `backend` (of kind `provider`).
pub fn model_call_span(
    operation: &'static str,
    model: &str,
    provider: &'static str,
    backend: &str,
    upstream_model: &str,
    attempt: u32,
) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "gen_ai",
        otel.name = %format_args!("{operation} {upstream_model}"),
        otel.kind = "client",
        gen_ai.operation.name = operation,
        gen_ai.provider.name = provider,
        gen_ai.request.model = %upstream_model,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.response.finish_reasons = Empty,
        dialogd.model = %model,
        dialogd.backend = %backend,
        dialogd.attempt = attempt,
        error.type = Empty,
        otel.status_code = Empty,
    )
}

/// Marks an attempt's span failed with `error_type` (a reason code).
pub fn record_error(span: &tracing::Span, error_type: &str) {
    span.record("error.type", error_type);
    span.record("otel.status_code", "ERROR");
}

/// Records a reply's usage on the current (attempt) span.
pub fn record_reply(
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    finish: &str,
    model: Option<&str>,
) {
    if !enabled() {
        return;
    }
    let span = tracing::Span::current();
    if let Some(n) = input_tokens {
        span.record("gen_ai.usage.input_tokens", n);
    }
    if let Some(n) = output_tokens {
        span.record("gen_ai.usage.output_tokens", n);
    }
    span.record("gen_ai.response.finish_reasons", finish);
    if let Some(model) = model {
        span.record("gen_ai.response.model", model);
    }
}

/// The W3C trace headers of the current span, for an outbound call.
pub fn outbound_headers() -> Vec<(String, String)> {
    if !enabled() {
        return Vec::new();
    }
    let mut headers = Collect(Vec::new());
    let cx = tracing::Span::current().context();
    TraceContextPropagator::new().inject_context(&cx, &mut headers);
    headers.0
}
