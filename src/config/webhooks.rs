//! `[webhooks]`: callbacks of asynchronous turns (SubmitTurn).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    /// Environment variable holding the HMAC key callbacks are signed
    /// with; without it, SubmitTurn refuses callback URLs.
    pub secret_env: Option<String>,
    /// POSTs per callback before it is given up.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled each time, at most a minute.
    pub initial_backoff_ms: u64,
    /// How long one POST may take.
    pub timeout_secs: u64,
    /// Hosts callback URLs may name (exact, case-insensitive); empty: any.
    /// Set it in production, or callers can make the server POST to any
    /// address it reaches.
    pub allowed_hosts: Vec<String>,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        WebhookSettings {
            secret_env: None,
            max_attempts: 6,
            initial_backoff_ms: 500,
            timeout_secs: 10,
            allowed_hosts: Vec::new(),
        }
    }
}
