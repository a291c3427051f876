//! The one place failures become gRPC statuses (AIP-193): the canonical
//! code of the failure's kind, its safe message, and google.rpc details —
//! ErrorInfo with the stable reason always, BadRequest for bad fields,
//! RetryInfo when a retry may succeed. A caller over one of its own limits
//! also gets the `retry-after` (whole seconds) and `x-ratelimit-remaining`
//! metadata HTTP-minded clients look for. Domain errors reach here as a
//! `Failure` (see `failure`).

use crate::auth::AuthError;
use crate::engine::EngineError;
use crate::failure::{ErrorKind, Failure, Invalid};
use crate::grpc::pb::dialogue::v1 as pb;
use std::collections::HashMap;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// google.rpc.ErrorInfo domain of every dialogd error.
pub const ERROR_DOMAIN: &str = "dialogd";

fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::Unimplemented => Code::Unimplemented,
    }
}

impl From<Failure> for Status {
    fn from(failure: Failure) -> Status {
        let mut details = ErrorDetails::new();
        details.set_error_info(&failure.reason, ERROR_DOMAIN, HashMap::new());
        for v in &failure.violations {
            details.add_bad_request_violation(&v.field, &v.description);
        }
        if let Some(after) = failure.retry_after {
            details.set_retry_info(Some(after));
        }
        let mut metadata = MetadataMap::new();
        if let (true, Some(after)) = (failure.caller_limit, failure.retry_after) {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            if let Ok(v) = secs.max(1).to_string().parse() {
                metadata.insert("retry-after", v);
            }
            metadata.insert("x-ratelimit-remaining", MetadataValue::from_static("0"));
        }
        Status::with_error_details_and_metadata(
            code(failure.kind),
            failure.message,
            details,
            metadata,
        )
    }
}

impl From<EngineError> for Status {
    fn from(error: EngineError) -> Status {
        Failure::from(error).into()
    }
}

impl From<Invalid> for Status {
    fn from(invalid: Invalid) -> Status {
        Failure::from(invalid).into()
    }
}

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Status {
        Failure::from(error).into()
    }
}

/// A failure as one failed turn of a batch or an operation carries it.
pub fn turn_error(failure: &Failure) -> pb::TurnError {
    pb::TurnError {
        code: code(failure.kind) as i32,
        message: failure.message.clone(),
        reason: failure.reason.clone(),
        field_violations: failure
            .violations
            .iter()
            .map(|v| pb::FieldViolation {
                field: v.field.clone(),
                description: v.description.clone(),
            })
            .collect(),
        retry_delay: failure.retry_after.map(pbjson_types::Duration::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bad_fields_and_the_reason_travel_as_details() {
        let status =
            Status::from(Failure::invalid("name", "bad").with_violation("content", "empty"));
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
    fn a_caller_limit_tells_when_to_retry_in_details_and_metadata() {
        let status = Status::from(Failure::limit(
            "RATE_LIMITED",
            "slow down",
            Duration::from_millis(1200),
        ));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.metadata().get("retry-after").unwrap(), "2");
        assert_eq!(status.metadata().get("x-ratelimit-remaining").unwrap(), "0");
        let retry = status.get_error_details().retry_info().unwrap().retry_delay;
        assert_eq!(retry, Some(Duration::from_millis(1200)));
    }
}
