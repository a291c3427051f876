//! Delivering a finished operation to its callback URL: a JSON POST signed
//! with HMAC-SHA256 over the body, retried with exponential backoff until a
//! 2xx answer or the attempts run out.

use super::destinations::{Destinations, InternalDestination, is_public};
use crate::config::WebhookSettings;
use crate::engine::EngineError;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::Arc;
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
    destinations: Destinations,
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
        let destinations = Destinations::new(&settings.allowed_hosts);
        let client = crate::backend::roots::with_trusted_roots(reqwest::Client::builder())
            .timeout(Duration::from_secs(settings.timeout_secs.max(1)))
            // A callback answers where it was asked; no redirects followed.
            .redirect(reqwest::redirect::Policy::none())
            // Names resolve to reachable addresses only, at connect time;
            // a proxy would resolve them itself, so none is used.
            .dns_resolver(Arc::new(destinations.clone()))
            .no_proxy()
            .build()
            .map_err(|e| format!("cannot build the webhook client: {e}"))?;
        Ok(Webhooks {
            client,
            secret,
            max_attempts: settings.max_attempts.max(1),
            initial_backoff: Duration::from_millis(settings.initial_backoff_ms),
            destinations,
        })
    }

    /// Whether callbacks may go to `url`: an http(s) URL of an allowed
    /// host (`webhooks.allowed_hosts`; without a list, any host whose
    /// address is public — an address literal is checked here, a name when
    /// it is called), with a secret to sign them.
    pub fn check_url(&self, url: &str) -> Result<(), EngineError> {
        const FIELD: &str = "callback_url";
        let url = url::Url::parse(url)
            .map_err(|e| EngineError::invalid(FIELD, format!("is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(EngineError::invalid(FIELD, "must be http or https"));
        }
        if self.secret.is_none() {
            return Err(EngineError::FailedPrecondition {
                reason: "CALLBACKS_NOT_CONFIGURED",
                message: "callbacks need a signing secret: set webhooks.secret_env".into(),
            });
        }
        let host = url.host_str().unwrap_or("").to_ascii_lowercase();
        if self.destinations.is_restricted() && !self.destinations.allows(&host) {
            return Err(EngineError::invalid(
                FIELD,
                "names a host outside webhooks.allowed_hosts",
            ));
        }
        // The URL parser reads 0x7f000001 and 2130706433 as 127.0.0.1 too.
        let literal = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(std::net::IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(std::net::IpAddr::V6(ip)),
            _ => None,
        };
        if literal.is_some_and(|ip| !is_public(ip)) && !self.destinations.allows(&host) {
            return Err(EngineError::invalid(
                FIELD,
                "names an internal address (loopback, private, link-local or metadata); list it in webhooks.allowed_hosts to allow it",
            ));
        }
        Ok(())
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
                Err(e) if refused_destination(&e) => {
                    tracing::warn!(operation, error = %e, "callback not sent: an internal destination");
                    break;
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

/// Whether a request failed because its host resolves only to addresses
/// callbacks may not reach (retrying cannot help).
fn refused_destination(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<InternalDestination>() {
            return true;
        }
        source = err.source();
    }
    false
}
