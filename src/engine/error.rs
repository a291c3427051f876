//! The engine's one error type, and what callers are told of each
//! (`Failure`): the transport maps that to its wire form in one place.

use crate::backend::BackendError;
use crate::config::RefuseStatus;
use crate::dialogue::ports::StoreError;
use crate::failure::{ErrorKind, Failure, Invalid};
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    InvalidArgument(#[from] Invalid),
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
        retry_after: Duration,
    },
    /// The message holds a blocked term (which one is not said).
    #[error("the message contains blocked content")]
    ContentBlocked,
    /// A traffic rule refuses the request with its configured status.
    #[error("{message}")]
    RuleRefused {
        status: RefuseStatus,
        message: String,
        retry_after: Duration,
    },
}

impl EngineError {
    /// A request error naming one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> EngineError {
        EngineError::InvalidArgument(Invalid::field(field, description))
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
            EngineError::RuleRefused { .. } => "RULE_REFUSED",
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

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Failure {
        EngineError::from(e).into()
    }
}

/// What a caller is told of a backend's failure: a retry hint where
/// another attempt may succeed; a refused key or unknown upstream model is
/// the service's configuration, not the caller's fault.
fn backend_kind(error: &BackendError) -> (ErrorKind, Option<Duration>) {
    let retry_soon = Some(Duration::from_secs(1));
    match error {
        BackendError::RateLimited { retry_after, .. } => (
            ErrorKind::ResourceExhausted,
            Some(retry_after.unwrap_or(Duration::from_secs(1))),
        ),
        BackendError::NoTarget { retry_after, .. } => (ErrorKind::Unavailable, Some(*retry_after)),
        BackendError::Unavailable { .. }
        | BackendError::Timeout { .. }
        | BackendError::InvalidReply { .. } => (ErrorKind::Unavailable, retry_soon),
        BackendError::ContextTooLong { .. } => (ErrorKind::FailedPrecondition, None),
        BackendError::Deadline { .. } => (ErrorKind::DeadlineExceeded, None),
        BackendError::Rejected {
            status: 401 | 403 | 404,
            ..
        } => (ErrorKind::Internal, None),
        BackendError::Rejected { .. } => (ErrorKind::FailedPrecondition, None),
    }
}

impl From<EngineError> for Failure {
    fn from(error: EngineError) -> Failure {
        let reason = error.reason();
        let message = error.to_string();
        let plain = |kind| Failure::new(kind, reason, message.clone());
        match error {
            EngineError::InvalidArgument(invalid) => invalid.into(),
            EngineError::NotFound(_) => plain(ErrorKind::NotFound),
            EngineError::AlreadyExists(_) => plain(ErrorKind::AlreadyExists),
            EngineError::FailedPrecondition { .. } => plain(ErrorKind::FailedPrecondition),
            EngineError::Aborted(_) => plain(ErrorKind::Aborted),
            EngineError::Backend(backend) => match backend_kind(&backend) {
                (kind, Some(after)) => plain(kind).retry_after(after),
                (kind, None) => plain(kind),
            },
            // Internal details (paths, store messages) go to the log only.
            EngineError::Store(store) => {
                tracing::error!(error = %store, "store operation failed");
                match store {
                    StoreError::Corrupt(_) => {
                        Failure::new(ErrorKind::DataLoss, reason, "a stored record is damaged")
                    }
                    StoreError::Unreachable(_) => Failure::new(
                        ErrorKind::Unavailable,
                        "STORE_UNAVAILABLE",
                        "the store (Redis) cannot be reached; the request was not applied",
                    )
                    .retry_after(Duration::from_secs(1)),
                    _ => Failure::new(
                        ErrorKind::Unavailable,
                        reason,
                        "the store failed; the request was not applied",
                    )
                    .retry_after(Duration::from_secs(1)),
                }
            }
            EngineError::DeadlineExceeded => plain(ErrorKind::DeadlineExceeded),
            EngineError::RateLimited {
                reason,
                message,
                retry_after,
            } => Failure::limit(reason, message, retry_after),
            EngineError::ContentBlocked => plain(ErrorKind::InvalidArgument)
                .with_violation("content", "contains blocked content"),
            EngineError::ShuttingDown => {
                plain(ErrorKind::Unavailable).retry_after(Duration::from_secs(1))
            }
            EngineError::RuleRefused {
                status,
                retry_after,
                ..
            } => match status {
                RefuseStatus::InvalidArgument => {
                    plain(ErrorKind::InvalidArgument).with_violation("content", message.clone())
                }
                RefuseStatus::PermissionDenied => plain(ErrorKind::PermissionDenied),
                RefuseStatus::FailedPrecondition => plain(ErrorKind::FailedPrecondition),
                RefuseStatus::ResourceExhausted => {
                    plain(ErrorKind::ResourceExhausted).retry_after(retry_after)
                }
                RefuseStatus::Unavailable => plain(ErrorKind::Unavailable).retry_after(retry_after),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_every_field_and_a_reason() {
        let mut v = crate::failure::Violations::default();
        v.add("name", "bad");
        v.add("content", "empty");
        let error = EngineError::from(v.into_result(()).unwrap_err());
        let failure = Failure::from(error);
        assert_eq!(failure.kind, ErrorKind::InvalidArgument);
        let fields: Vec<_> = failure
            .violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["name", "content"]);
        assert_eq!(failure.reason, "INVALID_ARGUMENT");
    }

    #[test]
    fn store_failures_hide_their_detail() {
        let failure = Failure::from(EngineError::Store(StoreError::Io(
            "/secret/path: EIO".into(),
        )));
        assert_eq!(failure.kind, ErrorKind::Unavailable);
        assert!(!failure.message.contains("secret"));
        assert!(failure.retry_after.is_some());
    }
}
