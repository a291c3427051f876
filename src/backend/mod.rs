//! Model backends: one file per protocol behind the `ModelBackend` trait.
//! The router picks a backend per model; the engine only sees this trait.

mod echo;

pub use echo::EchoBackend;

use crate::config::BackendSettings;
use crate::dialogue::model::{FinishReason, GenerationParams, Role, Usage};
use async_trait::async_trait;
use futures_util::Stream;
use std::pin::Pin;
use std::sync::Arc;

/// One message of the prompt sent to a model.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptMessage {
    pub role: Role,
    pub text: String,
}

/// A model call: the prompt, already fitted to the context window.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    /// Model name as the backend knows it.
    pub upstream_model: String,
    pub messages: Vec<PromptMessage>,
    pub params: GenerationParams,
}

/// A complete reply.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelReply {
    pub text: String,
    pub finish_reason: FinishReason,
    /// Token counts, when the backend reports them.
    pub usage: Option<Usage>,
}

/// A piece of a streamed reply; `Finished` comes last.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplyChunk {
    Text(String),
    Finished {
        finish_reason: FinishReason,
        usage: Option<Usage>,
    },
}

pub type ReplyStream = Pin<Box<dyn Stream<Item = Result<ReplyChunk, BackendError>> + Send>>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    /// The backend could not be reached or failed (retrying may help).
    #[error("backend {backend} is unavailable: {detail}")]
    Unavailable { backend: String, detail: String },
    /// The backend answered something that is not a valid reply.
    #[error("backend {backend} sent an invalid reply: {detail}")]
    InvalidReply { backend: String, detail: String },
}

impl BackendError {
    /// Stable reason label for clients and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            BackendError::Unavailable { .. } => "BACKEND_UNAVAILABLE",
            BackendError::InvalidReply { .. } => "BACKEND_INVALID_REPLY",
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
    async fn complete(&self, request: &ModelRequest) -> Result<ModelReply, BackendError>;
    /// Starts the call and streams the reply.
    async fn stream(&self, request: &ModelRequest) -> Result<ReplyStream, BackendError>;
    /// Whether the backend can take calls now.
    async fn healthy(&self) -> bool;
}

/// Builds the backend a config entry describes.
pub fn build(name: &str, settings: &BackendSettings) -> Arc<dyn ModelBackend> {
    match settings {
        BackendSettings::Echo { delay_ms } => Arc::new(EchoBackend::new(
            name,
            std::time::Duration::from_millis(*delay_ms),
        )),
    }
}
