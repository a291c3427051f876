//! The one place engine errors become gRPC statuses (AIP-193): the canonical
//! code, a message safe to show, and google.rpc details — ErrorInfo with a
//! stable reason always, BadRequest for bad fields, RetryInfo when a retry
//! may succeed. Internal details (paths, store messages) go to the log only.

use crate::backend::BackendError;
use crate::dialogue::EngineError;
use crate::store::StoreError;
use std::collections::HashMap;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// google.rpc.ErrorInfo domain of every dialogd error.
pub const ERROR_DOMAIN: &str = "dialogd";

/// RESOURCE_EXHAUSTED with RetryInfo and the `retry-after` (whole seconds)
/// and `x-ratelimit-remaining` metadata HTTP-minded clients look for.
pub fn resource_exhausted(message: &str, reason: &str, retry_after: Duration) -> Status {
    let mut details = ErrorDetails::new();
    details.set_retry_info(Some(retry_after));
    details.set_error_info(reason, ERROR_DOMAIN, std::collections::HashMap::new());
    let mut metadata = tonic::metadata::MetadataMap::new();
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    if let Ok(v) = secs.max(1).to_string().parse() {
        metadata.insert("retry-after", v);
    }
    metadata.insert(
        "x-ratelimit-remaining",
        tonic::metadata::MetadataValue::from_static("0"),
    );
    Status::with_error_details_and_metadata(
        tonic::Code::ResourceExhausted,
        message,
        details,
        metadata,
    )
}

impl From<EngineError> for Status {
    fn from(error: EngineError) -> Status {
        let mut details = ErrorDetails::new();
        details.set_error_info(error.reason(), ERROR_DOMAIN, HashMap::new());
        let (code, message) = match &error {
            EngineError::InvalidArgument(violations) => {
                for v in violations {
                    details.add_bad_request_violation(&v.field, &v.description);
                }
                (Code::InvalidArgument, error.to_string())
            }
            EngineError::NotFound(_) => (Code::NotFound, error.to_string()),
            EngineError::AlreadyExists(_) => (Code::AlreadyExists, error.to_string()),
            EngineError::FailedPrecondition { .. } => (Code::FailedPrecondition, error.to_string()),
            EngineError::Aborted(_) => (Code::Aborted, error.to_string()),
            EngineError::Backend(backend) => match backend {
                BackendError::RateLimited { retry_after, .. } => {
                    details.set_retry_info(Some(retry_after.unwrap_or(Duration::from_secs(1))));
                    (Code::ResourceExhausted, error.to_string())
                }
                BackendError::NoTarget { retry_after, .. } => {
                    details.set_retry_info(Some(*retry_after));
                    (Code::Unavailable, error.to_string())
                }
                BackendError::Unavailable { .. }
                | BackendError::Timeout { .. }
                | BackendError::InvalidReply { .. } => {
                    details.set_retry_info(Some(Duration::from_secs(1)));
                    (Code::Unavailable, error.to_string())
                }
                BackendError::ContextTooLong { .. } => {
                    (Code::FailedPrecondition, error.to_string())
                }
                BackendError::Deadline { .. } => (Code::DeadlineExceeded, error.to_string()),
                // A refused key or unknown upstream model is the service's
                // configuration, not the caller's fault.
                BackendError::Rejected {
                    status: 401 | 403 | 404,
                    ..
                } => (Code::Internal, error.to_string()),
                BackendError::Rejected { .. } => (Code::FailedPrecondition, error.to_string()),
            },
            EngineError::Store(store) => {
                tracing::error!(error = %store, "store operation failed");
                match store {
                    StoreError::Corrupt(_) => {
                        (Code::DataLoss, "a stored record is damaged".to_string())
                    }
                    _ => {
                        details.set_retry_info(Some(Duration::from_secs(1)));
                        (
                            Code::Unavailable,
                            "the store failed; the request was not applied".to_string(),
                        )
                    }
                }
            }
            EngineError::DeadlineExceeded => (Code::DeadlineExceeded, error.to_string()),
            EngineError::RateLimited {
                reason,
                message,
                retry_after,
            } => return resource_exhausted(message, reason, *retry_after),
            EngineError::ContentBlocked => {
                details.add_bad_request_violation("content", "contains blocked content");
                (Code::InvalidArgument, error.to_string())
            }
            EngineError::ShuttingDown => {
                details.set_retry_info(Some(Duration::from_secs(1)));
                (Code::Unavailable, error.to_string())
            }
        };
        Status::with_error_details(code, message, details)
    }
}

/// A status as one failed turn of a batch carries it (BatchConverse).
pub fn turn_error(status: &Status) -> crate::pb::dialogue::v1::TurnError {
    use crate::pb::dialogue::v1 as pb;
    pb::TurnError {
        code: status.code() as i32,
        message: status.message().to_owned(),
        reason: status
            .get_details_error_info()
            .map(|i| i.reason)
            .unwrap_or_default(),
        field_violations: status
            .get_details_bad_request()
            .map(|b| {
                b.field_violations
                    .into_iter()
                    .map(|v| pb::FieldViolation {
                        field: v.field,
                        description: v.description,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        retry_delay: status
            .get_details_retry_info()
            .and_then(|r| r.retry_delay)
            .map(pbjson_types::Duration::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_argument_names_every_field_and_a_reason() {
        let error = EngineError::InvalidArgument(vec![
            crate::dialogue::error::FieldViolation {
                field: "name".into(),
                description: "bad".into(),
            },
            crate::dialogue::error::FieldViolation {
                field: "content".into(),
                description: "empty".into(),
            },
        ]);
        let status = Status::from(error);
        assert_eq!(status.code(), Code::InvalidArgument);
        let details = status.get_error_details();
        let fields: Vec<_> = details
            .bad_request()
            .unwrap()
            .field_violations
            .iter()
            .map(|v| v.field.as_str())
            .collect();
        assert_eq!(fields, ["name", "content"]);
        assert_eq!(details.error_info().unwrap().reason, "INVALID_ARGUMENT");
    }

    #[test]
    fn store_failures_hide_their_detail() {
        let status = Status::from(EngineError::Store(StoreError::Io(
            "/secret/path: EIO".into(),
        )));
        assert_eq!(status.code(), Code::Unavailable);
        assert!(!status.message().contains("secret"));
        assert!(status.get_error_details().retry_info().is_some());
    }
}
