//! Delivering a finished operation to its callback URL: a JSON POST signed
//! with HMAC-SHA256 over the body, retried with exponential backoff until a
//! 2xx answer or the attempts run out.

use crate::config::WebhookSettings;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::time::Duration;

/// The header carrying `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "x-dialogd-signature";
/// The header naming the operation.
pub const OPERATION_HEADER: &str = "x-dialogd-operation";

pub struct Webhooks {
    client: reqwest::Client,
    secret: Option<Vec<u8>>,
    max_attempts: u32,
    initial_backoff: Duration,
    allowed_hosts: Vec<String>,
}

/// How a delivery ended.
pub struct Delivery {
    pub delivered: bool,
    pub attempts: u32,
}

impl Webhooks {
    pub fn from_settings(settings: &WebhookSettings) -> Result<Webhooks, String> {
        let secret = match &settings.secret_env {
            None => None,
            Some(var) => Some(
                std::env::var(var)
                    .map_err(|_| format!("webhooks.secret_env names {var}, which is not set"))?
                    .into_bytes(),
            ),
        };
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(settings.timeout_secs.max(1)))
            // A callback answers where it was asked; no redirects followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        Ok(Webhooks {
            client,
            secret,
            max_attempts: settings.max_attempts.max(1),
            initial_backoff: Duration::from_millis(settings.initial_backoff_ms),
            allowed_hosts: settings
                .allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        })
    }

    /// Whether callbacks may go to `host` (`webhooks.allowed_hosts`).
    pub fn allows(&self, host: &str) -> bool {
        self.allowed_hosts.is_empty() || self.allowed_hosts.contains(&host.to_ascii_lowercase())
    }

    /// Whether callbacks can be signed (a secret is configured).
    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// `sha256=<hex>` of `body`.
    pub fn signature(&self, body: &[u8]) -> Option<String> {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_ref()?).ok()?;
        mac.update(body);
        let digest = mac.finalize().into_bytes();
        Some(format!(
            "sha256={}",
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ))
    }

    /// POSTs `body` to `url` until it is taken, after `done` earlier
    /// attempts (a delivery resumed after a restart goes on counting).
    pub async fn deliver(&self, url: &str, operation: &str, body: &[u8], done: u32) -> Delivery {
        let Some(signature) = self.signature(body) else {
            return Delivery {
                delivered: false,
                attempts: done,
            };
        };
        let mut attempts = done;
        while attempts < self.max_attempts {
            if attempts > 0 {
                let backoff = self.initial_backoff * 2u32.saturating_pow(attempts - 1);
                tokio::time::sleep(backoff.min(Duration::from_secs(60))).await;
            }
            attempts += 1;
            let sent = self
                .client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, &signature)
                .header(OPERATION_HEADER, operation)
                .body(body.to_vec())
                .send()
                .await;
            match sent {
                Ok(answer) if answer.status().is_success() => {
                    return Delivery {
                        delivered: true,
                        attempts,
                    };
                }
                Ok(answer) => {
                    tracing::warn!(operation, status = %answer.status(), attempts, "callback refused")
                }
                Err(e) => tracing::warn!(operation, error = %e, attempts, "callback failed"),
            }
        }
        Delivery {
            delivered: false,
            attempts,
        }
    }
}
