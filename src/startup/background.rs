//! Work a server does besides answering calls: the expiry and retention
//! sweeps, the TLS certificate reloads, and the `/metrics` endpoint.

use crate::audit::AuditLog;
use crate::dialogue::model::Time;
use crate::dialogue::ports::DialogueStore;
use crate::engine::Engine;
use crate::limits::RateLimits;
use crate::router::Router;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Erases expired dialogues, stale idempotency keys and audit events past
/// retention, and forgets idle rate limiter keys, every `interval`.
pub async fn sweep_until_stopped(
    engine: Arc<Engine>,
    audit: Arc<dyn AuditLog>,
    rate_limits: Arc<RateLimits>,
    audit_retention_days: u32,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        rate_limits.forget_idle();
        let cutoff = Time::now().saturating_add_secs(-i64::from(audit_retention_days) * 86_400);
        match audit.sweep_audit(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "erased audit events past retention"),
            Err(e) => tracing::warn!(error = %e, "audit retention sweep failed"),
        }
        match engine.sweep_expired().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(erased = n, "erased expired dialogues"),
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
        }
    }
}

/// What the `/metrics` endpoint reads at each scrape.
pub struct ScrapeSources {
    pub store: Arc<dyn DialogueStore>,
    pub router: Arc<Router>,
    pub rate_limits: Arc<RateLimits>,
    /// `(key id, expires)` of the API keys that expire (Unix seconds).
    pub key_expiries: Vec<(String, i64)>,
}

/// Serves `/metrics` on `listener` until `stop`; each scrape first
/// refreshes the gauges read at scrape time (store size, circuits, key
/// expiry).
pub fn serve_metrics(
    listener: TcpListener,
    sources: ScrapeSources,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let ScrapeSources {
        store,
        router,
        rate_limits,
        key_expiries,
    } = sources;
    // The recorder goes in now, before the server accepts calls: installed
    // by the spawned task, the first calls' metrics could go nowhere.
    let _ = crate::http::metrics_endpoint::handle();
    let refresh: crate::http::metrics_endpoint::Refresh = Arc::new(move || {
        if let Some(bytes) = store.size_on_disk() {
            crate::meter::store_size(bytes);
        }
        router.report_circuits();
        if let Some(limit) = rate_limits.adaptive_limit() {
            crate::meter::server_concurrency_limit(limit);
        }
        crate::meter::api_key_expiries(&key_expiries, Time::now().0 / 1_000_000_000);
    });
    tokio::spawn(crate::http::metrics_endpoint::serve(
        listener, refresh, stop,
    ))
}
