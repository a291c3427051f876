//! What the port serves: the gRPC services (with health and reflection),
//! the HTTP front behind them, and the layers every call passes.

use super::StartupError;
use crate::audit::AuditLog;
use crate::audit::writer::AuditWriter;
use crate::auth::Authenticator;
use crate::auth::failures::AuthFailures;
use crate::auth::networks::Networks;
use crate::config::Settings;
use crate::dialogue::ports::StoreExport;
use crate::engine::Engine;
use crate::engine::rules::RuleBook;
use crate::grpc::dialogue_calls::DialogueCalls;
use crate::grpc::pb::dialogue::v1 as pb;
use crate::grpc::pb::dialogue::v1::admin_service_server::AdminServiceServer;
use crate::grpc::pb::dialogue::v1::auth_service_server::AuthServiceServer;
use crate::grpc::pb::dialogue::v1::dialogue_service_server::DialogueServiceServer;
use crate::grpc::pb::dialogue::v1::model_service_server::ModelServiceServer;
use crate::grpc::{AdminGrpc, AuthGrpc, DialogueGrpc, ModelGrpc};
use crate::limits::RateLimits;
use crate::middleware::audit::Audit;
use crate::middleware::auth::Authentication;
use crate::middleware::client_address::ClientAddresses;
use crate::middleware::deadline::GrpcDeadline;
use crate::middleware::drain::EndWatchesOnDrain;
use crate::middleware::metrics::RpcMetrics;
use crate::middleware::rate_limit::RateLimiting;
use crate::middleware::read_deadline::ReadDeadlineLayer;
use crate::middleware::request_id::RequestIds;
use crate::middleware::traces::Traces;
use crate::middleware::{AroundLayer, Refuse};
use crate::operations::Operations;
use crate::router::Router;
use crate::tls::Conn;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;

/// The services' health, reported SERVING now and NOT_SERVING at shutdown.
/// The dialogue and model services (readiness) are also NOT_SERVING while
/// the store cannot be reached; the server as a whole (`""`, liveness)
/// stays SERVING then, so the replica is taken out of rotation, not
/// restarted.
#[derive(Clone)]
pub struct Health(HealthReporter);

impl Health {
    pub async fn serving(&self) {
        self.0
            .set_serving::<DialogueServiceServer<DialogueGrpc>>()
            .await;
        self.0.set_serving::<ModelServiceServer<ModelGrpc>>().await;
    }

    /// Readiness follows the store's reachability until aborted.
    pub async fn follow(self, mut reachable: tokio::sync::watch::Receiver<bool>) {
        while reachable.changed().await.is_ok() {
            let up = *reachable.borrow_and_update();
            match up {
                true => self.serving().await,
                false => {
                    self.0
                        .set_not_serving::<DialogueServiceServer<DialogueGrpc>>()
                        .await;
                    self.0
                        .set_not_serving::<ModelServiceServer<ModelGrpc>>()
                        .await;
                }
            }
        }
    }

    pub async fn not_serving(&self) {
        self.0
            .set_service_status("", tonic_health::ServingStatus::NotServing)
            .await;
        self.0
            .set_not_serving::<DialogueServiceServer<DialogueGrpc>>()
            .await;
        self.0
            .set_not_serving::<ModelServiceServer<ModelGrpc>>()
            .await;
    }
}

/// A generated gRPC server that reads gzip, deflate and zstd messages and
/// answers in the first of them the caller accepts (`grpc-accept-encoding`).
/// The decompressed size stays bound by `max_decoding_message_size`.
macro_rules! compressed {
    ($server:expr) => {{
        use tonic::codec::CompressionEncoding::{Deflate, Gzip, Zstd};
        $server
            .accept_compressed(Gzip)
            .accept_compressed(Deflate)
            .accept_compressed(Zstd)
            .send_compressed(Gzip)
            .send_compressed(Zstd)
            .send_compressed(Deflate)
    }};
}

/// What the services call.
pub struct Backing {
    pub engine: Arc<Engine>,
    pub router: Arc<Router>,
    pub operations: Arc<Operations>,
    pub authenticator: Option<Arc<Authenticator>>,
    pub audit: Arc<dyn AuditLog>,
    /// Online backups (the embedded store only).
    pub export: Option<Arc<dyn StoreExport>>,
    pub rate_limits: Arc<RateLimits>,
    /// The traffic rules in force (listed to admins).
    pub rules: Arc<RuleBook>,
    /// Cancelled when the drain starts.
    pub stop: CancellationToken,
}

/// Every gRPC service, and the HTTP front behind them for what they do
/// not serve.
pub fn routes(
    settings: &Settings,
    backing: Backing,
) -> Result<(tonic::service::Routes, Health), StartupError> {
    let Backing {
        engine,
        router,
        operations,
        authenticator,
        audit,
        export,
        rate_limits,
        rules,
        stop,
    } = backing;
    let max_request = settings.server.max_request_bytes;
    let (health, health_service) = tonic_health::server::health_reporter();
    // Both reflection versions describe every service served, each other
    // included.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc error details (ErrorInfo, BadRequest, RetryInfo…),
            // so reflection clients can decode the details of a status.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .include_reflection_service(false)
    };
    let reflection_error =
        |e: tonic_reflection::server::Error| StartupError::Reflection(e.to_string());
    let dialogue_calls = DialogueCalls::new(engine.clone(), operations, rate_limits);
    let mut grpc = tonic::service::Routes::builder();
    grpc.add_service(health_service)
        .add_service(reflection().build_v1().map_err(reflection_error)?)
        .add_service(reflection().build_v1alpha().map_err(reflection_error)?)
        .add_service(compressed!(
            DialogueServiceServer::new(DialogueGrpc::new(dialogue_calls.clone()))
                .max_decoding_message_size(max_request)
        ))
        .add_service(compressed!(
            ModelServiceServer::new(ModelGrpc::new(router.clone()))
                .max_decoding_message_size(max_request)
        ))
        .add_service(compressed!(AuthServiceServer::new(AuthGrpc::new(
            authenticator
        ))))
        .add_service(compressed!(AdminServiceServer::new(AdminGrpc::new(
            audit, export, rules,
        ))));
    let front = crate::http::Front {
        engine,
        models: router,
        dialogues: dialogue_calls,
        max_body: max_request,
        stop,
        websocket_send_timeout: Duration::from_millis(settings.server.websocket_send_timeout_ms),
    };
    Ok((crate::http::router(grpc.routes(), front), Health(health)))
}

/// Serves `routes` on `incoming` behind the layers, outermost first,
/// until `stop` is cancelled (see `connections`).
pub fn serve(
    settings: &Settings,
    routes: tonic::service::Routes,
    layers: Layers,
    incoming: ReceiverStream<std::io::Result<Conn>>,
    stopping: super::connections::Stopping,
) -> Result<JoinHandle<Result<(), String>>, StartupError> {
    let cors = crate::http::cors::layer(&settings.server.cors_allowed_origins)
        .map_err(StartupError::Cors)?;
    let client_cert_roles = settings
        .server
        .tls
        .as_ref()
        .filter(|t| t.client_ca_file.is_some())
        .map(|t| t.client_cert_roles.iter().copied().collect());
    let refuse: Refuse = Arc::new(crate::http::refusal);
    let networks =
        |field: &str, raw: &[String]| Networks::parse(field, raw).map_err(StartupError::Auth);
    let trusted_proxies = networks("auth.trusted_proxies", &settings.auth.trusted_proxies)?;
    // Without trusted proxies the connection's address is the caller's:
    // no layer needed to work it out.
    let client_addresses =
        (!trusted_proxies.is_empty()).then(|| AroundLayer(ClientAddresses::new(trusted_proxies)));
    let service = tower::ServiceBuilder::new()
        // Outermost: CORS preflights are answered before anything (they
        // carry no credentials), and gRPC-Web becomes gRPC before our layers.
        .option_layer(cors)
        .layer(ReadDeadlineLayer(Duration::from_secs(
            settings.server.request_read_timeout_secs,
        )))
        .layer(crate::http::grpc_web::GrpcWebOnly)
        .layer(AroundLayer(RequestIds))
        .option_layer(client_addresses)
        .option_layer(crate::telemetry::traces::enabled().then_some(AroundLayer(Traces)))
        .layer(AroundLayer(EndWatchesOnDrain(stopping.stop.clone())))
        .layer(AroundLayer(GrpcDeadline))
        .layer(AroundLayer(RpcMetrics))
        .layer(AroundLayer(Audit::new(layers.audit)))
        .layer(AroundLayer(Authentication::new(
            layers.authenticator,
            client_cert_roles,
            Arc::new(AuthFailures::new(settings.auth.max_failures_per_minute)),
            networks("auth.allowed_networks", &settings.auth.allowed_networks)?,
            refuse.clone(),
        )))
        .layer(AroundLayer(RateLimiting::new(layers.rate_limits, refuse)))
        .service(routes.prepare());
    // Room for any header dialogd reads, so an oversized credential reaches
    // the auth layer (UNAUTHENTICATED, audited) instead of h2's own refusal
    // (a 431 without a gRPC status, or GOAWAY).
    Ok(super::connections::serve(
        incoming,
        service,
        MAX_HEADER_LIST_BYTES,
        stopping,
    ))
}

/// Largest HTTP/2 header block accepted: 64 KiB.
const MAX_HEADER_LIST_BYTES: u32 = 64 * 1024;

/// What the layers around every call need.
pub struct Layers {
    pub authenticator: Option<Arc<Authenticator>>,
    pub audit: AuditWriter,
    pub rate_limits: Arc<RateLimits>,
}
