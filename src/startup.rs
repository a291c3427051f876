//! Wires everything together: opens the store, builds the engine, binds the
//! listener (port 0 works, see `local_addr`), serves until told to stop, then
//! drains and flushes.

use crate::audit::AuditLog;
use crate::auth::Authenticator;
use crate::config::{AuthMode, Settings};
use crate::dialogue::content_filter::ContentFilter;
use crate::dialogue::engine::Engine;
use crate::dialogue::model::Time;
use crate::dialogue::ports::{DialogueStore, StoreError};
use crate::grpc::dialogue_calls::DialogueCalls;
use crate::grpc::{AdminGrpc, AuthGrpc, DialogueGrpc, ModelGrpc};
use crate::limits::RateLimits;
use crate::middleware::audit::Audit;
use crate::middleware::auth::Authentication;
use crate::middleware::metrics::RpcMetrics;
use crate::middleware::rate_limit::RateLimiting;
use crate::middleware::request_id::RequestIds;
use crate::middleware::{AroundLayer, Refuse};
use crate::operations::OperationStore;
use crate::pb::dialogue::v1 as pb;
use crate::pb::dialogue::v1::admin_service_server::AdminServiceServer;
use crate::pb::dialogue::v1::auth_service_server::AuthServiceServer;
use crate::pb::dialogue::v1::dialogue_service_server::DialogueServiceServer;
use crate::pb::dialogue::v1::model_service_server::ModelServiceServer;
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
use tonic::transport::Server;
use tonic_health::ServingStatus;

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
    router: Arc<Router>,
    /// Streamed turns and operations; shutdown waits for them.
    tasks: TaskTracker,
    /// What the engine keeps dialogues in (flushed at shutdown).
    dialogue_store: Arc<dyn DialogueStore>,
    audit: Arc<dyn AuditLog>,
    operations: Arc<dyn OperationStore>,
    rate_limits: Arc<RateLimits>,
}

impl Application {
    /// Opens the store and binds the listener; nothing is served yet.
    pub async fn build(settings: Settings) -> Result<Application, StartupError> {
        let Stores {
            dialogues: dialogue_store,
            audit,
            operations,
            shared,
        } = crate::store::open(&settings.store, &settings.limits).await?;
        let authenticator = match settings.auth.mode {
            AuthMode::None => {
                tracing::warn!(
                    listen = %settings.server.listen,
                    "AUTHENTICATION IS OFF (auth.mode = \"none\"): every caller acts as the local principal with all roles. For local development only."
                );
                None
            }
            AuthMode::Required => Some(Arc::new(
                Authenticator::from_settings(&settings.auth).map_err(StartupError::Auth)?,
            )),
        };
        let router = Arc::new(Router::from_settings(&settings)?);
        tokio::task::spawn_blocking(crate::dialogue::tokenizer::warm_up);
        let filter = ContentFilter::new(
            &settings.content_filter.blocked_terms,
            settings.content_filter.check_output,
        )
        .map_err(StartupError::ContentFilter)?;
        let cache = crate::dialogue::engine::reply_cache::ReplyCache::new(&settings.cache);
        let tasks = TaskTracker::new();
        let mut engine = Engine::new(
            dialogue_store.clone(),
            router.clone(),
            settings.limits.clone(),
            filter,
            cache,
            tasks.clone(),
        );
        let limits = &settings.limits;
        let mut rate_limits = RateLimits::new(
            limits.requests_per_second,
            limits.request_burst,
            limits.max_in_flight,
        );
        // Replicas sharing a store share each caller's limits and the
        // dialogue locks through it.
        if let Some(shared) = shared {
            engine = engine
                .with_token_ledger(shared.tokens)
                .with_shared_leases(shared.leases.clone(), shared.leases);
            rate_limits = rate_limits.shared_through(shared.requests);
        }
        let engine = Arc::new(engine);
        let addr = settings.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?;
        let metrics = match settings.metrics.enabled {
            false => None,
            true => {
                let addr = settings.metrics.listen;
                Some(
                    crate::http::metrics_endpoint::bind(addr)
                        .await
                        .map_err(|source| StartupError::Bind { addr, source })?,
                )
            }
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
            engine,
            router,
            tasks,
            dialogue_store,
            audit,
            operations,
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
            router,
            tasks,
            dialogue_store,
            audit,
            operations,
            rate_limits,
        } = self;
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<DialogueServiceServer<DialogueGrpc>>()
            .await;
        health.set_serving::<ModelServiceServer<ModelGrpc>>().await;
        // Both reflection versions describe every service served, each
        // other included.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                )
                .include_reflection_service(false)
        };
        let reflection_v1 = reflection()
            .build_v1()
            .map_err(|e| StartupError::Reflection(e.to_string()))?;
        let reflection_v1alpha = reflection()
            .build_v1alpha()
            .map_err(|e| StartupError::Reflection(e.to_string()))?;
        let max_request = settings.server.max_request_bytes;
        let webhooks = crate::operations::webhook::Webhooks::from_settings(&settings.webhooks)
            .map_err(StartupError::Webhooks)?;
        let operations = crate::operations::Operations::new(
            engine.clone(),
            operations,
            webhooks,
            crate::grpc::convert::callback_body(),
            tasks.clone(),
        );
        let dialogue_calls = DialogueCalls::new(engine.clone(), operations.clone());
        let dialogues = DialogueServiceServer::new(DialogueGrpc::new(dialogue_calls.clone()))
            .max_decoding_message_size(max_request);
        let models = ModelServiceServer::new(ModelGrpc::new(router.clone()))
            .max_decoding_message_size(max_request);

        let auth_service = AuthServiceServer::new(AuthGrpc::new(authenticator.clone()));
        let client_cert_roles = settings
            .server
            .tls
            .as_ref()
            .filter(|t| t.client_ca_file.is_some())
            .map(|t| t.client_cert_roles.iter().copied().collect());
        let admin_service = AdminServiceServer::new(AdminGrpc::new(audit.clone()));
        let stop = CancellationToken::new();
        let sweeper = tokio::spawn(sweep_until_stopped(
            engine.clone(),
            audit.clone(),
            rate_limits.clone(),
            settings.audit.retention_days,
            Duration::from_secs(settings.store.sweep_interval_secs),
            stop.clone(),
        ));
        let reloader = tls.as_ref().map(|(cert, _)| {
            let every = settings
                .server
                .tls
                .as_ref()
                .map_or(10, |t| t.reload_check_secs);
            tokio::spawn(tls::reload_until_stopped(
                cert.clone(),
                Duration::from_secs(every),
                stop.clone(),
            ))
        });
        // Metrics outlive the drain, so a scrape can watch it.
        let metrics_stop = CancellationToken::new();
        let metrics_server = metrics.map(|(listener, _)| {
            let (store, router) = (dialogue_store.clone(), router.clone());
            let refresh: crate::http::metrics_endpoint::Refresh = Arc::new(move || {
                if let Some(bytes) = store.size_on_disk() {
                    crate::meter::store_size(bytes);
                }
                router.report_circuits();
            });
            tokio::spawn(crate::http::metrics_endpoint::serve(
                listener,
                refresh,
                metrics_stop.clone(),
            ))
        });
        let mut grpc = tonic::service::Routes::builder();
        grpc.add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(dialogues)
            .add_service(models)
            .add_service(auth_service)
            .add_service(admin_service);
        let routes = crate::http::router(
            grpc.routes(),
            crate::http::Front {
                engine: engine.clone(),
                models: router.clone(),
                dialogues: dialogue_calls,
                max_body: max_request,
            },
        );
        let refuse: Refuse = Arc::new(crate::http::refusal);
        // What a previous run left pending goes on (turns run, callbacks sent).
        match operations.resume_pending().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(operations = n, "resumed pending operations"),
            Err(e) => tracing::error!(error = %e, "cannot read pending operations"),
        }
        let cors = crate::http::cors::layer(&settings.server.cors_allowed_origins)
            .map_err(StartupError::Cors)?;
        let incoming = tls::incoming(listener, tls.map(|(_, acceptor)| acceptor));
        let stop_serving = stop.clone();
        let mut server = tokio::spawn(
            Server::builder()
                .http2_keepalive_interval(Some(Duration::from_secs(30)))
                .http2_keepalive_timeout(Some(Duration::from_secs(10)))
                // HTTP/1.1 too: gRPC-Web and the HTTP front's callers.
                .accept_http1(true)
                // Outermost: CORS preflights are answered before anything
                // (they carry no credentials), and gRPC-Web becomes gRPC
                // before our layers.
                .layer(tower::util::option_layer(cors))
                .layer(crate::http::grpc_web::GrpcWebOnly)
                .layer(AroundLayer(RequestIds))
                .layer(AroundLayer(RpcMetrics))
                .layer(AroundLayer(Audit::new(audit)))
                .layer(AroundLayer(Authentication::new(
                    authenticator,
                    client_cert_roles,
                    refuse.clone(),
                )))
                .layer(AroundLayer(RateLimiting::new(rate_limits.clone(), refuse)))
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, stop_serving.cancelled_owned()),
        );
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

        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health
            .set_not_serving::<DialogueServiceServer<DialogueGrpc>>()
            .await;
        health
            .set_not_serving::<ModelServiceServer<ModelGrpc>>()
            .await;
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
            server.abort();
            let _ = server.await;
        }
        let _ = sweeper.await;
        if let Some(reloader) = reloader {
            let _ = reloader.await;
        }
        metrics_stop.cancel();
        if let Some(metrics_server) = metrics_server {
            let _ = metrics_server.await;
        }
        dialogue_store.flush().await.map_err(StartupError::Flush)?;
        tracing::info!("stopped; store flushed");
        Ok(())
    }
}

/// Erases expired dialogues and idempotency keys, and forgets idle rate
/// limiter keys, every `interval`.
async fn sweep_until_stopped(
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
