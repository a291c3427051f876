//! `[log]`, `[metrics]` and `[audit]`: what dialogd tells operators.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    /// A tracing filter: a level (`info`) or directives (`dialogd=debug,info`).
    pub level: String,
    /// `text` for people, `json` for log pipelines.
    pub format: LogFormat,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

impl LogSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        if tracing_subscriber::EnvFilter::try_new(&self.level).is_err() {
            return Err(format!(
                "log.level {:?} is not a level or filter",
                self.level
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSettings {
    /// Serve `/metrics` at all.
    pub enabled: bool,
    /// Where `/metrics` is served (plain HTTP, apart from the gRPC port).
    pub listen: SocketAddr,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsSettings {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// Days audit events are kept; older ones are erased by the sweeper.
    pub retention_days: u32,
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings { retention_days: 90 }
    }
}

impl AuditSettings {
    pub(super) fn validate(&self) -> Result<(), String> {
        if self.retention_days == 0 {
            return Err("audit.retention_days must be at least 1".into());
        }
        Ok(())
    }
}

/// `[tracing]`: OpenTelemetry traces over OTLP, off unless an endpoint
/// is set.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSettings {
    /// OTLP/HTTP collector, e.g. `http://otel-collector:4318` (the path
    /// `/v1/traces` is added when the URL has none).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans.
    pub service_name: String,
    /// Share of traces started here that are kept (0.0 to 1.0); a
    /// caller's `traceparent` decides for the traces it continues.
    pub sample_ratio: f64,
    /// Longest a finished span waits before it is sent, in milliseconds.
    pub export_delay_ms: u64,
}

impl Default for TracingSettings {
    fn default() -> Self {
        TracingSettings {
            otlp_endpoint: None,
            service_name: "dialogd".into(),
            sample_ratio: 1.0,
            export_delay_ms: 5000,
        }
    }
}

impl TracingSettings {
    /// The endpoint traces are posted to, if tracing is on.
    pub fn traces_url(&self) -> Result<Option<url::Url>, String> {
        let Some(raw) = &self.otlp_endpoint else {
            return Ok(None);
        };
        let mut url = url::Url::parse(raw)
            .map_err(|e| format!("tracing.otlp_endpoint: {raw:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err("tracing.otlp_endpoint must be an http(s) URL (OTLP/HTTP)".into());
        }
        if url.path() == "/" || url.path().is_empty() {
            url.set_path("/v1/traces");
        }
        Ok(Some(url))
    }

    pub(super) fn validate(&self) -> Result<(), String> {
        self.traces_url()?;
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return Err("tracing.sample_ratio must be 0.0 to 1.0".into());
        }
        if !(10..=60_000).contains(&self.export_delay_ms) {
            return Err("tracing.export_delay_ms must be 10 to 60000".into());
        }
        if self.service_name.trim().is_empty() {
            return Err("tracing.service_name must not be empty".into());
        }
        Ok(())
    }
}
