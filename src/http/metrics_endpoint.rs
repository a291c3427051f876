//! The Prometheus scrape endpoint: one process-wide recorder (the `metrics`
//! facade allows one) rendered at `GET /metrics` on its own plain-HTTP
//! port, apart from gRPC, so scraping never competes with callers' auth
//! or limits.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Called before each render to refresh gauges read on demand.
pub type Refresh = Arc<dyn Fn() + Send + Sync>;

/// The process's recorder, installed on first use. Several servers in one
/// process (tests) share it.
pub fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            // The bucket list is a non-empty constant, so this cannot fail;
            // if it did, summaries would be exported instead of histograms.
            let builder = match builder.set_buckets(crate::meter::SECONDS_BUCKETS) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "histogram buckets refused");
                    PrometheusBuilder::new()
                }
            };
            // Similarities are not seconds: buckets where hits fall.
            let builder = match builder.set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Full(
                    crate::meter::SEMANTIC_SIMILARITY.to_owned(),
                ),
                crate::meter::SIMILARITY_BUCKETS,
            ) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "similarity buckets refused");
                    PrometheusBuilder::new()
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            crate::meter::describe();
            handle
        })
        .clone()
}

/// Serves `/metrics` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, refresh: Refresh, stop: CancellationToken) {
    let handle = handle();
    let upkeep = {
        let handle = handle.clone();
        let stop = stop.clone();
        // Histograms buffer samples until upkeep folds them in.
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = ticks.tick() => handle.run_upkeep(),
                }
            }
        })
    };
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            let refresh = refresh.clone();
            async move {
                refresh();
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
            }
        }),
    );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "the metrics endpoint failed");
    }
    let _ = upkeep.await;
}
