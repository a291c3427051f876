//! Wires everything together: opens the store, builds the engine, binds the
//! listener (port 0 works, see `local_addr`), serves until told to stop, then
//! drains and flushes. `parts` builds the domain parts from settings,
//! `services` what the port serves, `background` the work beside it.

mod background;
mod connections;
mod parts;
mod reload;
mod services;

use crate::audit::AuditLog;
use crate::audit::writer::AuditWriter;
use crate::auth::Authenticator;
use crate::config::Settings;
use crate::dialogue::ports::{DialogueStore, OperationStore, StoreError, StoreExport};
use crate::engine::Engine;
use crate::engine::rules::RuleBook;
use crate::limits::RateLimits;
use crate::operations::Operations;
use crate::router::Router;
use crate::store::{OpenError, Stores};
use crate::tls::{self, ReloadingCert};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a stopping server waits for queued audit events to be written
/// (longer only when the store is away; what is left is counted as lost).
const AUDIT_DRAIN: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error(transparent)]
    Backend(#[from] crate::backend::BuildError),
    #[error("cannot set up authentication: {0}")]
    Auth(String),
    #[error("cannot build the content filter: {0}")]
    ContentFilter(String),
    #[error("cannot set up TLS: {0}")]
    Tls(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build server reflection: {0}")]
    Reflection(String),
    #[error("cannot set up webhooks: {0}")]
    Webhooks(String),
    #[error("cannot set up CORS: {0}")]
    Cors(String),
    #[error("cannot load the traffic rules: {0}")]
    Rules(String),
    #[error("the gRPC server failed: {0}")]
    Serve(String),
    #[error("flushing the store at shutdown failed: {0}")]
    Flush(StoreError),
}

pub struct Application {
    settings: Settings,
    /// The served certificate and the TLS acceptor, when TLS is on.
    tls: Option<(Arc<ReloadingCert>, TlsAcceptor)>,
    /// `None` when auth.mode = "none".
    authenticator: Option<Arc<Authenticator>>,
    listener: TcpListener,
    local_addr: SocketAddr,
    /// The `/metrics` listener, when metrics are on.
    metrics: Option<(TcpListener, SocketAddr)>,
    engine: Arc<Engine>,
    /// The traffic rules in force (the engine reads the same book).
    rules: Arc<RuleBook>,
    router: Arc<Router>,
    /// Streamed turns and operations; shutdown waits for them.
    tasks: TaskTracker,
    /// What the engine keeps dialogues in (flushed at shutdown).
    dialogue_store: Arc<dyn DialogueStore>,
    audit: Arc<dyn AuditLog>,
    operations: Arc<dyn OperationStore>,
    /// Online backups (the embedded store only).
    export: Option<Arc<dyn StoreExport>>,
    /// Whether a store on the network answers (Redis).
    reachability: Option<tokio::sync::watch::Receiver<bool>>,
    rate_limits: Arc<RateLimits>,
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartupError> {
    let bound = async {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        Ok((listener, local))
    };
    bound
        .await
        .map_err(|source| StartupError::Bind { addr, source })
}

impl Application {
    /// Opens the store and binds the listeners; nothing is served yet.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let Stores {
            dialogues: dialogue_store,
            audit,
            operations,
            shared,
            export,
            reachability,
        } = crate::store::open(&settings.store, &settings.limits).await?;
        let authenticator = parts::authenticator(&settings)?;
        let router = Arc::new(Router::from_settings(&settings)?);
        tokio::task::spawn_blocking(crate::dialogue::tokenizer::warm_up);
        let tasks = TaskTracker::new();
        let (engine, rate_limits, rules) = parts::engine(
            &settings,
            dialogue_store.clone(),
            router.clone(),
            shared,
            tasks.clone(),
        )?;
        let (listener, local_addr) = bind(settings.server.listen).await?;
        let metrics = match settings.metrics.enabled {
            false => None,
            true => Some(bind(settings.metrics.listen).await?),
        };
        let tls = match &settings.server.tls {
            None => None,
            Some(t) => {
                let cert = Arc::new(
                    ReloadingCert::load(&t.cert_file, &t.key_file).map_err(StartupError::Tls)?,
                );
                let config = tls::server_config(t, cert.clone()).map_err(StartupError::Tls)?;
                Some((cert, TlsAcceptor::from(config)))
            }
        };
        Ok(Application {
            tls,
            settings,
            authenticator,
            listener,
            local_addr,
            metrics,
            engine: Arc::new(engine),
            rules,
            router,
            tasks,
            dialogue_store,
            audit,
            operations,
            export,
            reachability,
            rate_limits: Arc::new(rate_limits),
        })
    }

    /// Where `/metrics` is served, when metrics are on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr)| *addr)
    }

    /// The bound address (the real port when the config said 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` resolves, then: health NOT_SERVING, stop
    /// accepting, let in-flight calls and streams finish (bounded by
    /// `server.drain_timeout_secs`), flush the store.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), StartupError> {
        let Application {
            tls,
            settings,
            authenticator,
            listener,
            local_addr,
            metrics,
            engine,
            rules,
            router,
            tasks,
            dialogue_store,
            audit,
            operations,
            export,
            reachability,
            rate_limits,
        } = self;
        let webhooks = crate::operations::webhook::Webhooks::from_settings(&settings.webhooks)
            .map_err(StartupError::Webhooks)?;
        let operations = Operations::new(
            engine.clone(),
            operations,
            webhooks,
            crate::grpc::convert::callback_body(),
            tasks.clone(),
            Duration::from_secs(settings.store.operation_retention_hours * 3600),
            &settings.operations,
        );
        let stop = CancellationToken::new();
        let (routes, health) = services::routes(
            &settings,
            services::Backing {
                engine: engine.clone(),
                router: router.clone(),
                operations: operations.clone(),
                authenticator: authenticator.clone(),
                audit: audit.clone(),
                export,
                rate_limits: rate_limits.clone(),
                rules: rules.clone(),
                stop: stop.clone(),
            },
        )?;
        health.serving().await;
        let readiness = reachability.map(|r| tokio::spawn(health.clone().follow(r)));
        let sweeper = tokio::spawn(background::sweep_until_stopped(
            engine.clone(),
            audit.clone(),
            rate_limits.clone(),
            settings.audit.retention_days,
            Duration::from_secs(settings.store.sweep_interval_secs),
            stop.clone(),
        ));
        let reloader = tls
            .as_ref()
            .zip(settings.server.tls.as_ref())
            .map(|((cert, _), t)| {
                let every = Duration::from_secs(t.reload_check_secs);
                let cert = cert.clone();
                let reload = move |forced| tls::reload_logged(&cert, forced);
                tokio::spawn(reload::on_change_or_hangup(every, stop.clone(), reload))
            });
        let rule_reloader = reload::RuleFileWatch::of(&settings, rules).map(|mut watch| {
            let every = Duration::from_secs(settings.rules.reload_check_secs);
            let reload = move |forced| watch.reload(forced);
            tokio::spawn(reload::on_change_or_hangup(every, stop.clone(), reload))
        });
        // Metrics outlive the drain, so a scrape can watch it.
        let metrics_stop = CancellationToken::new();
        let metrics_server = metrics.map(|(listener, _)| {
            let sources = background::ScrapeSources {
                store: dialogue_store.clone(),
                router: router.clone(),
                rate_limits: rate_limits.clone(),
                key_expiries: key_expiries(&settings.auth),
            };
            background::serve_metrics(listener, sources, metrics_stop.clone())
        });
        // What a previous run left pending goes on (turns run, callbacks sent).
        match operations.resume_pending().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(operations = n, "resumed pending operations"),
            Err(e) => tracing::error!(error = %e, "cannot read pending operations"),
        }
        let incoming = tls::incoming(listener, tls.map(|(_, acceptor)| acceptor));
        let (audit_writer, audit_stop) = AuditWriter::start(audit);
        let layers = services::Layers {
            authenticator,
            audit: audit_writer,
            rate_limits,
        };
        let cut = CancellationToken::new();
        let stopping = connections::Stopping {
            stop: stop.clone(),
            cut: cut.clone(),
        };
        let mut server = services::serve(&settings, routes, layers, incoming, stopping)?;
        tracing::info!(%local_addr, "serving gRPC");

        tokio::select! {
            _ = shutdown => {}
            result = &mut server => {
                stop.cancel();
                metrics_stop.cancel();
                let detail = match result {
                    Ok(Ok(())) => "stopped unexpectedly".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                return Err(StartupError::Serve(detail));
            }
        }

        if let Some(follower) = readiness {
            follower.abort();
            let _ = follower.await;
        }
        health.not_serving().await;
        stop.cancel();
        tasks.close();
        let drain = Duration::from_secs(settings.server.drain_timeout_secs);
        tracing::info!(
            drain_timeout_secs = drain.as_secs(),
            "draining in-flight calls"
        );
        let drained = tokio::time::timeout(drain, async {
            let _ = (&mut server).await;
            tasks.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                streams = tasks.len(),
                "drain timeout passed; cutting the remaining turns (they end UNAVAILABLE and are not stored)"
            );
            engine.cut_running_turns();
            let _ = tokio::time::timeout(Duration::from_secs(1), tasks.wait()).await;
            // Connections still open are cut; their tasks end (and drop
            // their handles on the store) before the store is flushed.
            cut.cancel();
            if tokio::time::timeout(Duration::from_secs(1), &mut server)
                .await
                .is_err()
            {
                server.abort();
                let _ = server.await;
            }
        }
        let _ = sweeper.await;
        for reloader in [reloader, rule_reloader].into_iter().flatten() {
            let _ = reloader.await;
        }
        metrics_stop.cancel();
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        // Calls are over: the audit queue is complete; write it out.
        audit_stop.finish(AUDIT_DRAIN).await;
        dialogue_store.flush().await.map_err(StartupError::Flush)?;
        tracing::info!("stopped; store flushed");
        Ok(())
    }
}

/// The expiry times of the API keys that have one (validated at load).
fn key_expiries(auth: &crate::config::AuthSettings) -> Vec<(String, i64)> {
    auth.api_keys
        .iter()
        .filter_map(|k| Some((k.id.clone(), k.limits().ok()?.expires?)))
        .collect()
}
