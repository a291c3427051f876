//! Model backends: one file per protocol behind the `ModelBackend` trait.
//! The router picks a target per call; the engine only sees this trait.

mod anthropic;
mod call;
mod echo;
mod http;
mod openai;
pub mod roots;
mod tesseract;
mod timeouts;

/// The OpenAI stream decoder, public for the micro-benchmarks.
pub use http::SseDecoder;
pub use openai::ChunkDecoder;

pub use anthropic::AnthropicBackend;
pub use call::{ModelReply, ModelRequest, ReplyChunk, RequestBody, ToolCallChunk, ToolCalls};
pub use echo::EchoBackend;
pub use openai::OpenAiBackend;
pub use tesseract::Tesseract;
pub use timeouts::with_stream_timeouts;

use crate::config::BackendSettings;
use async_trait::async_trait;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<ReplyChunk, BackendError>> + Send>>;

/// Why a model call failed. Messages never contain API keys.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// Not reachable, reset, or a 5xx: another attempt may succeed.
    #[error("backend {backend} is unavailable: {detail}")]
    Unavailable { backend: String, detail: String },
    /// A time limit of the call passed (`phase` says which).
    #[error("backend {backend} timed out waiting for {phase}")]
    Timeout {
        backend: String,
        phase: &'static str,
    },
    /// The backend asked us to slow down (HTTP 429).
    #[error("backend {backend} is rate limiting")]
    RateLimited {
        backend: String,
        retry_after: Option<Duration>,
    },
    /// The prompt does not fit the upstream model's context window.
    #[error("the prompt is too long for the model at backend {backend}")]
    ContextTooLong { backend: String },
    /// The backend refused the call (a 4xx other than 429): a problem of
    /// configuration (key, model name) or of the request.
    #[error("backend {backend} refused the call (HTTP {status}): {detail}")]
    Rejected {
        backend: String,
        status: u16,
        detail: String,
    },
    /// The backend answered something that is not a valid reply.
    #[error("backend {backend} sent an invalid reply: {detail}")]
    InvalidReply { backend: String, detail: String },
    /// The turn's deadline (the client's grpc-timeout) passed.
    #[error("the deadline passed while calling model {model}")]
    Deadline { model: String },
    /// No target of the model could take the call (circuits open or
    /// rate-limited); `retry_after` is when one may be back.
    #[error("no backend of model {model} is available now")]
    NoTarget {
        model: String,
        retry_after: Duration,
    },
}

impl BackendError {
    /// Stable reason label for clients and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            BackendError::Unavailable { .. } => "BACKEND_UNAVAILABLE",
            BackendError::Timeout { .. } => "BACKEND_TIMEOUT",
            BackendError::RateLimited { .. } => "BACKEND_RATE_LIMITED",
            BackendError::ContextTooLong { .. } => "CONTEXT_TOO_LONG",
            BackendError::Rejected { .. } => "BACKEND_REJECTED",
            BackendError::InvalidReply { .. } => "BACKEND_INVALID_REPLY",
            BackendError::NoTarget { .. } => "NO_BACKEND_AVAILABLE",
            BackendError::Deadline { .. } => "DEADLINE_EXCEEDED",
        }
    }

    /// Whether the same call may succeed if tried again (here or on
    /// another target).
    pub fn is_retryable(&self) -> bool {
        match self {
            BackendError::Unavailable { .. }
            | BackendError::Timeout { .. }
            | BackendError::RateLimited { .. }
            | BackendError::InvalidReply { .. } => true,
            // A key or model name another target may not share.
            BackendError::Rejected { status, .. } => matches!(status, 401 | 403 | 404),
            BackendError::ContextTooLong { .. }
            | BackendError::NoTarget { .. }
            | BackendError::Deadline { .. } => false,
        }
    }

    /// Whether the failure says the target is unhealthy (feeds its breaker).
    pub fn is_target_failure(&self) -> bool {
        match self {
            BackendError::Unavailable { .. }
            | BackendError::Timeout { .. }
            | BackendError::InvalidReply { .. } => true,
            BackendError::Rejected { status, .. } => matches!(status, 401 | 403 | 404),
            _ => false,
        }
    }
}

#[async_trait]
pub trait ModelBackend: Send + Sync + 'static {
    /// Name of the backend in config.
    fn name(&self) -> &str;
    /// Protocol kind, for example `echo`.
    fn kind(&self) -> &'static str;
    /// Runs the call to completion.
    async fn complete(
        &self,
        model: &str,
        request: &ModelRequest,
    ) -> Result<ModelReply, BackendError>;
    /// Starts the call and streams the reply (with first-token and idle
    /// time limits applied).
    async fn stream(
        &self,
        model: &str,
        request: &ModelRequest,
    ) -> Result<ReplyStream, BackendError>;
    /// Whether the backend answers at all (ListModels probes it).
    async fn healthy(&self) -> bool;
    /// Vectors of `inputs`, in order (OpenAI's `/embeddings`); backends
    /// that serve none refuse.
    async fn embed(&self, model: &str, request: &EmbedRequest) -> Result<Embedded, BackendError> {
        let _ = (model, request);
        Err(BackendError::Rejected {
            backend: self.name().to_owned(),
            status: 400,
            detail: format!("a {} backend serves no embeddings", self.kind()),
        })
    }
}

/// Texts to turn into vectors.
#[derive(Debug, Clone)]
pub struct EmbedRequest {
    pub inputs: Vec<String>,
    /// Length of the vectors, for models that can shorten them.
    pub dimensions: Option<u32>,
}

/// Vectors of an `EmbedRequest`, in its order.
#[derive(Debug, Clone)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    /// Input tokens, when the backend reports them.
    pub prompt_tokens: Option<u64>,
}

/// An API key read from the environment. Its Debug form hides it, so it
/// cannot reach logs or errors by accident.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn from_env(var: Option<&str>) -> Option<ApiKey> {
        let value = std::env::var(var?).ok()?;
        (!value.is_empty()).then_some(ApiKey(value))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Why a backend could not be built.
#[derive(Debug, thiserror::Error)]
#[error("backend {name}: {detail}")]
pub struct BuildError {
    pub name: String,
    pub detail: String,
}

/// Builds the backend a config entry describes.
pub fn build(name: &str, settings: &BackendSettings) -> Result<Arc<dyn ModelBackend>, BuildError> {
    Ok(match settings {
        BackendSettings::Echo { delay_ms } => {
            Arc::new(EchoBackend::new(name, Duration::from_millis(*delay_ms)))
        }
        BackendSettings::Openai { .. } => Arc::new(OpenAiBackend::new(name, settings)?),
        BackendSettings::Anthropic { .. } => Arc::new(AnthropicBackend::new(name, settings)?),
    })
}
