//! Logging — a tracing subscriber whose level and format come from config
//! — and, when configured, OpenTelemetry traces (`traces`).

pub mod traces;

use crate::config::{LogFormat, LogSettings, TracingSettings};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

pub use traces::TraceGuard;

/// Installs the global subscriber (logs only); later calls (tests) are
/// ignored.
pub fn init(settings: &LogSettings) {
    let _ = install(settings, None);
}

/// Installs logs and, if `tracing` asks for them, exported traces posted
/// with the client `http_client` makes; the guard flushes the traces when
/// dropped.
pub fn init_with_traces<C>(
    log: &LogSettings,
    tracing: &TracingSettings,
    http_client: impl FnOnce() -> Result<C, String>,
) -> Result<Option<TraceGuard>, String>
where
    C: opentelemetry_http::HttpClient + 'static,
{
    let guard = traces::provider(tracing, http_client)?;
    install(log, guard.as_ref()).map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(guard)
}

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

fn install(settings: &LogSettings, traces: Option<&TraceGuard>) -> Result<(), String> {
    let filter = EnvFilter::try_new(&settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let logs: Boxed = match settings.format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(colour())
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .json()
            .flatten_event(true)
            .with_filter(filter)
            .boxed(),
    };
    // The exported spans are dialogd's own (target `dialogd::otel`),
    // whatever the log level.
    let mut layers = vec![logs];
    layers.extend(traces.map(|guard| {
        tracing_opentelemetry::layer()
            .with_tracer(guard.tracer())
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(traces::TARGET, tracing::Level::INFO),
            )
            .boxed()
    }));
    tracing_subscriber::registry()
        .with(layers)
        .try_init()
        .map_err(|e| e.to_string())
}

/// Colour only for a person at a terminal: never into a file or a pipe,
/// never when `NO_COLOR` is set (https://no-color.org).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}
