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
