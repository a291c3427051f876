//! `spawn_app()` and friends: a fresh server per test, clients, and one
//! helper per RPC (`Api`). Logs are silenced unless TEST_LOG is set.

#![allow(dead_code)]

pub use crate::process::{ServerProcess, binary};

use dialogd::config::{BackendSettings, Durability, LogFormat, LogSettings, Settings};
use dialogd::pb::dialogue::v1 as pb;
use dialogd::pb::dialogue::v1::admin_service_client::AdminServiceClient;
use dialogd::pb::dialogue::v1::auth_service_client::AuthServiceClient;
use dialogd::pb::dialogue::v1::dialogue_service_client::DialogueServiceClient;
use dialogd::pb::dialogue::v1::model_service_client::ModelServiceClient;
use dialogd::startup::{Application, StartupError};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Once;
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

static TRACING: Once = Once::new();

pub struct TestApp {
    /// One helper per RPC, on this server.
    pub api: Api,
    pub addr: SocketAddr,
    pub settings: Settings,
    pub dialogues: DialogueServiceClient<Channel>,
    pub models: ModelServiceClient<Channel>,
    pub channel: Channel,
    /// Kept so the data dir lives as long as the app (and across restarts).
    pub data_dir: std::sync::Arc<TempDir>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), StartupError>>>,
}

/// Settings for a test: random port, fresh data dir, fast sweeps.
pub fn test_settings(data_dir: &Path) -> Settings {
    let mut settings = Settings::default();
    settings.server.listen = "127.0.0.1:0".parse().unwrap();
    settings.metrics.listen = "127.0.0.1:0".parse().unwrap();
    settings.server.drain_timeout_secs = 10;
    settings.store.data_dir = data_dir.to_path_buf();
    if redis_store() {
        // The whole suite again on Redis: each data dir maps to its own
        // key prefix (a restart on the same dir finds the same data).
        settings.store.kind = dialogd::config::StoreKind::Redis;
        settings.store.redis.key_prefix = format!(
            "test-{:016x}:",
            data_dir
                .to_string_lossy()
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b))
                    .wrapping_mul(0x100_0000_01b3))
        );
    }
    settings.store.durability = Durability::Sync;
    settings.store.cache_capacity_mb = 16;
    settings.log = LogSettings {
        level: "info".into(),
        format: LogFormat::Text,
    };
    settings
}

pub fn set_echo_delay(settings: &mut Settings, delay_ms: u64) {
    settings
        .backends
        .insert("echo".into(), BackendSettings::Echo { delay_ms });
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(customize: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = std::sync::Arc::new(TempDir::new().unwrap());
    let mut settings = test_settings(dir.path());
    customize(&mut settings);
    start(settings, dir).await
}

/// A new server on an existing data dir (after a previous one stopped).
pub async fn spawn_app_on(data_dir: std::sync::Arc<TempDir>) -> TestApp {
    start(test_settings(data_dir.path()), data_dir).await
}

pub async fn start(settings: Settings, data_dir: std::sync::Arc<TempDir>) -> TestApp {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            dialogd::telemetry::init(&LogSettings {
                level: "debug".into(),
                format: LogFormat::Text,
            });
        }
    });
    // After an in-process stop, tonic's per-connection tasks may hold the
    // previous server's store (and the data dir's lock) for a moment longer;
    // a new process never meets this, so only that error is retried, briefly.
    let mut tries = 0;
    let app = loop {
        match Application::build(settings.clone()).await {
            Err(StartupError::Store(dialogd::store::OpenError::Locked(_))) if tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => break other.expect("server starts"),
        }
    };
    let addr = app.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until_stopped(async {
        let _ = stopped.await;
    }));
    let channel = connect(addr).await;
    TestApp {
        api: Api::new(channel.clone()),
        addr,
        settings,
        dialogues: DialogueServiceClient::new(channel.clone()),
        models: ModelServiceClient::new(channel.clone()),
        channel,
        data_dir,
        stop: Some(stop),
        server: Some(server),
    }
}

pub async fn connect(addr: SocketAddr) -> Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("client connects")
}

pub fn text(s: &str) -> pb::ContentPart {
    pb::ContentPart {
        kind: Some(pb::content_part::Kind::Text(s.into())),
    }
}

pub fn turn_text(turn: &pb::Turn) -> String {
    turn.content
        .iter()
        .map(|p| match &p.kind {
            Some(pb::content_part::Kind::Text(t)) => t.as_str(),
            _ => "",
        })
        .collect()
}

pub fn name(id: &str) -> String {
    format!("dialogues/{id}")
}

pub fn converse_request(id: &str, message: &str) -> pb::ConverseRequest {
    pb::ConverseRequest {
        name: name(id),
        content: vec![text(message)],
        ..Default::default()
    }
}

/// Waits until `state` holds, checking every 20 ms; fails naming `what`
/// after `within`. Tests wait on a state this way, never on a sleep.
pub async fn eventually(what: &str, within: Duration, mut state: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !state().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Field paths of the BadRequest detail of an INVALID_ARGUMENT status.
pub fn violated_fields(status: &tonic::Status) -> Vec<String> {
    use tonic_types::StatusExt;
    status
        .get_details_bad_request()
        .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
        .unwrap_or_default()
}

pub fn error_reason(status: &tonic::Status) -> Option<String> {
    use tonic_types::StatusExt;
    status.get_details_error_info().map(|i| i.reason)
}

impl std::ops::Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// One helper per RPC of the server behind a channel: each takes the
/// request message (or a `tonic::Request` with metadata, e.g. credentials)
/// and returns the answer's message or the status. The conveniences below
/// them build the usual requests.
#[derive(Clone)]
pub struct Api {
    channel: Channel,
}

/// A unary RPC helper on the client `$client`.
macro_rules! unary {
    ($client:ident, $rpc:ident, $request:ty => $answer:ty) => {
        unary!($client, $rpc as $rpc, $request => $answer);
    };
    ($client:ident, $rpc:ident as $helper:ident, $request:ty => $answer:ty) => {
        pub async fn $helper(
            &self,
            request: impl tonic::IntoRequest<$request>,
        ) -> Result<$answer, tonic::Status> {
            $client::new(self.channel.clone())
                .$rpc(request)
                .await
                .map(tonic::Response::into_inner)
        }
    };
}

/// A server-streaming RPC helper on the client `$client`.
macro_rules! streaming {
    ($client:ident, $rpc:ident, $request:ty => $message:ty) => {
        pub async fn $rpc(
            &self,
            request: impl tonic::IntoRequest<$request>,
        ) -> Result<tonic::Streaming<$message>, tonic::Status> {
            $client::new(self.channel.clone())
                .$rpc(request)
                .await
                .map(tonic::Response::into_inner)
        }
    };
}

impl Api {
    pub fn new(channel: Channel) -> Api {
        Api { channel }
    }

    /// The helpers of the server at `addr` (plain HTTP/2).
    pub async fn connect(addr: SocketAddr) -> Api {
        Api::new(connect(addr).await)
    }

    unary!(DialogueServiceClient, create_dialogue, pb::CreateDialogueRequest => pb::Dialogue);
    unary!(DialogueServiceClient, get_dialogue, pb::GetDialogueRequest => pb::Dialogue);
    unary!(DialogueServiceClient, list_dialogues, pb::ListDialoguesRequest => pb::ListDialoguesResponse);
    unary!(DialogueServiceClient, update_dialogue, pb::UpdateDialogueRequest => pb::Dialogue);
    unary!(DialogueServiceClient, delete_dialogue, pb::DeleteDialogueRequest => pbjson_types::Empty);
    unary!(DialogueServiceClient, list_turns, pb::ListTurnsRequest => pb::ListTurnsResponse);
    unary!(DialogueServiceClient, converse as converse_with, pb::ConverseRequest => pb::ConverseResponse);
    streaming!(DialogueServiceClient, converse_stream, pb::ConverseRequest => pb::ConverseStreamResponse);
    unary!(DialogueServiceClient, batch_converse, pb::BatchConverseRequest => pb::BatchConverseResponse);
    streaming!(DialogueServiceClient, resume_stream, pb::ResumeStreamRequest => pb::ConverseStreamResponse);
    unary!(DialogueServiceClient, submit_turn, pb::SubmitTurnRequest => pb::Operation);
    unary!(DialogueServiceClient, get_operation, pb::GetOperationRequest => pb::Operation);
    streaming!(DialogueServiceClient, watch_operation, pb::GetOperationRequest => pb::Operation);
    unary!(ModelServiceClient, list_models, pb::ListModelsRequest => pb::ListModelsResponse);
    unary!(AuthServiceClient, issue_token, pb::IssueTokenRequest => pb::IssueTokenResponse);
    unary!(AdminServiceClient, list_audit_events, pb::ListAuditEventsRequest => pb::ListAuditEventsResponse);
    unary!(AdminServiceClient, list_rules, pb::ListRulesRequest => pb::ListRulesResponse);

    pub async fn create(&self, id: &str) -> pb::Dialogue {
        self.create_with(pb::Dialogue {
            dialogue_id: id.into(),
            ..Default::default()
        })
        .await
        .expect("create succeeds")
    }

    pub async fn create_with(&self, dialogue: pb::Dialogue) -> Result<pb::Dialogue, tonic::Status> {
        self.create_dialogue(pb::CreateDialogueRequest {
            dialogue: Some(dialogue),
        })
        .await
    }

    pub async fn get(&self, id: &str, last_turns: i32) -> Result<pb::Dialogue, tonic::Status> {
        self.get_dialogue(pb::GetDialogueRequest {
            name: name(id),
            last_turns,
            ..Default::default()
        })
        .await
    }

    pub async fn delete(&self, id: &str) -> Result<(), tonic::Status> {
        self.delete_dialogue(pb::DeleteDialogueRequest { name: name(id) })
            .await
            .map(|_| ())
    }

    pub async fn converse(
        &self,
        id: &str,
        message: &str,
    ) -> Result<pb::ConverseResponse, tonic::Status> {
        self.converse_with(converse_request(id, message)).await
    }

    /// Every turn of a dialogue, following page tokens.
    pub async fn all_turns(&self, id: &str) -> Vec<pb::Turn> {
        let mut turns = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .list_turns(pb::ListTurnsRequest {
                    parent: name(id),
                    page_size: 1000,
                    page_token: token,
                    view: 0,
                })
                .await
                .expect("list turns");
            turns.extend(page.turns);
            if page.next_page_token.is_empty() {
                return turns;
            }
            token = page.next_page_token;
        }
    }

    /// Collects a stream's events until it ends; the error if it failed.
    pub async fn stream(
        &self,
        request: impl tonic::IntoRequest<pb::ConverseRequest>,
    ) -> (
        Vec<pb::converse_stream_response::Event>,
        Option<tonic::Status>,
    ) {
        let mut events = Vec::new();
        let mut stream = match self.converse_stream(request).await {
            Ok(stream) => stream,
            Err(status) => return (events, Some(status)),
        };
        loop {
            match stream.message().await {
                Ok(Some(msg)) => events.extend(msg.event),
                Ok(None) => return (events, None),
                Err(status) => return (events, Some(status)),
            }
        }
    }
}

impl TestApp {
    /// Graceful stop: signals shutdown and waits for the drain to finish.
    pub async fn stop(&mut self) -> Result<(), StartupError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let stopped = match self.server.take() {
            Some(server) => server.await.expect("server task"),
            None => Ok(()),
        };
        self.until_store_released().await;
        stopped
    }

    /// Waits (up to 10 s) until the embedded store's files are no longer
    /// locked. The server's own connection and stream tasks have let go by
    /// the time it stops (`service::after_a_stop_no_connection_holds_the_store`);
    /// a callback delivery (operations) runs detached by design, so a stop
    /// never waits on a slow webhook, and may hold the store a moment longer.
    async fn until_store_released(&self) {
        let store = &self.settings.store;
        if store.kind != dialogd::config::StoreKind::Sled {
            return;
        }
        let files = [
            Some(store.data_dir.join("db")),
            store.encryption.dialogue_key_file.clone(),
        ];
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        for file in files.into_iter().flatten() {
            while let Ok(open) = std::fs::File::open(&file) {
                if open.try_lock().is_ok() || std::time::Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    /// Starts the server again on the same data dir (and a new port).
    pub async fn restart(mut self) -> TestApp {
        self.stop().await.expect("clean stop");
        let dir = self.data_dir.clone();
        start(self.settings.clone(), dir).await
    }

    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub fn take_server(&mut self) -> JoinHandle<Result<(), StartupError>> {
        self.server.take().expect("server running")
    }
}

/// Whether this run exercises the Redis store (`DIALOGD_TEST_STORE=redis`)
/// instead of sled.
pub fn redis_store() -> bool {
    std::env::var("DIALOGD_TEST_STORE").is_ok_and(|s| s == "redis")
}

/// A reqwest client builder for plain-HTTP calls to the server (reqwest is
/// built without a default TLS crypto provider; install ring's).
pub fn plain_http() -> reqwest::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}
