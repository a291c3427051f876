//! The engine's one error type. The transport maps it to a gRPC status in
//! one place (`grpc::status`); `reason()` is a stable label for clients
//! (google.rpc.ErrorInfo) and, later, metrics.

use crate::backend::BackendError;
use crate::store::StoreError;

/// One bad field of a request: its path in the request and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("invalid request: {}", describe(.0))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{message}")]
    FailedPrecondition {
        reason: &'static str,
        message: String,
    },
    #[error("another change to {0} won the race; retry")]
    Aborted(String),
    #[error("model backend failed: {0}")]
    Backend(BackendError),
    #[error("store failed: {0}")]
    Store(StoreError),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the deadline passed before the turn completed; nothing was stored")]
    DeadlineExceeded,
    /// A per-caller limit (open streams, tokens per minute) is reached.
    #[error("{message}")]
    RateLimited {
        reason: &'static str,
        message: String,
        retry_after: std::time::Duration,
    },
    /// The message holds a blocked term (which one is not said).
    #[error("the message contains blocked content")]
    ContentBlocked,
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
}

impl EngineError {
    /// A request error naming one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> EngineError {
        EngineError::InvalidArgument(vec![FieldViolation {
            field: field.into(),
            description: description.into(),
        }])
    }

    /// Stable, upper-snake reason for clients and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            EngineError::InvalidArgument(_) => "INVALID_ARGUMENT",
            EngineError::NotFound(_) => "NOT_FOUND",
            EngineError::AlreadyExists(_) => "ALREADY_EXISTS",
            EngineError::FailedPrecondition { reason, .. } => reason,
            EngineError::Aborted(_) => "CONCURRENT_CHANGE",
            EngineError::Backend(e) => e.reason(),
            EngineError::Store(_) => "STORE_FAILURE",
            EngineError::ShuttingDown => "SHUTTING_DOWN",
            EngineError::DeadlineExceeded => "DEADLINE_EXCEEDED",
            EngineError::ContentBlocked => "CONTENT_BLOCKED",
            EngineError::RateLimited { reason, .. } => reason,
        }
    }
}

impl From<BackendError> for EngineError {
    fn from(e: BackendError) -> Self {
        match e {
            BackendError::Deadline { .. } => EngineError::DeadlineExceeded,
            other => EngineError::Backend(other),
        }
    }
}

impl From<StoreError> for EngineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(what) => EngineError::NotFound(what),
            StoreError::AlreadyExists(what) => EngineError::AlreadyExists(what),
            StoreError::Conflict(what) => EngineError::Aborted(what),
            other => EngineError::Store(other),
        }
    }
}

/// Collects every bad field of a request before failing, so a client
/// learns all its mistakes in one round trip.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    pub fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
    }

    /// `Ok(value)` when nothing was added, else INVALID_ARGUMENT with all of them.
    pub fn into_result<T>(self, value: T) -> Result<T, EngineError> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(EngineError::InvalidArgument(self.0))
        }
    }
}
