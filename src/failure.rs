//! A failure as callers are told it, whatever the protocol: its class
//! (google.rpc.Code's canonical codes, without a transport), a stable
//! reason, a message safe to show, the bad fields of the request and when a
//! retry may succeed. Every domain error becomes a `Failure`
//! (`From<EngineError>`, `From<AuthError>`, `From<Invalid>`); the transport
//! turns a `Failure` into its wire form in one place each (`grpc::status`,
//! then `http::error` for HTTP), and asynchronous turns store one as their
//! result.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// The canonical class of a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    Unauthenticated,
    FailedPrecondition,
    Aborted,
    ResourceExhausted,
    Unavailable,
    DeadlineExceeded,
    DataLoss,
    Internal,
    /// No such method.
    Unimplemented,
}

/// One bad field of a request: its path in the request and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

/// A request with bad fields, all of them named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid request: {}", describe(.0))]
pub struct Invalid(pub Vec<FieldViolation>);

impl Invalid {
    /// A request error naming one field.
    pub fn field(field: impl Into<String>, description: impl Into<String>) -> Invalid {
        let mut v = Violations::default();
        v.add(field, description);
        Invalid(v.0)
    }
}

fn describe(violations: &[FieldViolation]) -> String {
    violations
        .iter()
        .map(|v| format!("{}: {}", v.field, v.description))
        .collect::<Vec<_>>()
        .join("; ")
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

    /// Adds every field of `invalid`.
    pub fn extend(&mut self, invalid: Invalid) {
        self.0.extend(invalid.0);
    }

    /// `Ok(value)` when nothing was added, else all of them.
    pub fn into_result<T>(self, value: T) -> Result<T, Invalid> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(Invalid(self.0))
        }
    }
}

/// A failure as the caller learns it (see the module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub kind: ErrorKind,
    /// Stable, upper-snake reason (google.rpc.ErrorInfo, metric labels).
    pub reason: String,
    /// Safe to show: never a secret, a path or an upstream URL.
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<FieldViolation>,
    /// When a retry may succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Duration>,
    /// Refused by one of the caller's own limits: nothing of its quota is
    /// left until `retry_after`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub caller_limit: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Failure {
    pub fn new(kind: ErrorKind, reason: &str, message: impl Into<String>) -> Failure {
        Failure {
            kind,
            reason: reason.to_owned(),
            message: message.into(),
            violations: Vec::new(),
            retry_after: None,
            caller_limit: false,
        }
    }

    /// A request error naming one field.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Failure {
        Invalid::field(field, description).into()
    }

    /// A refusal by one of the caller's limits (RESOURCE_EXHAUSTED).
    pub fn limit(reason: &str, message: impl Into<String>, retry_after: Duration) -> Failure {
        Failure {
            caller_limit: true,
            ..Failure::new(ErrorKind::ResourceExhausted, reason, message).retry_after(retry_after)
        }
    }

    pub fn retry_after(mut self, after: Duration) -> Failure {
        self.retry_after = Some(after);
        self
    }

    pub fn with_violation(
        mut self,
        field: impl Into<String>,
        description: impl Into<String>,
    ) -> Failure {
        self.violations.push(FieldViolation {
            field: field.into(),
            description: description.into(),
        });
        self
    }
}

impl From<Invalid> for Failure {
    fn from(invalid: Invalid) -> Failure {
        Failure {
            violations: invalid.0.clone(),
            ..Failure::new(
                ErrorKind::InvalidArgument,
                "INVALID_ARGUMENT",
                invalid.to_string(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_collect_every_field_and_name_them_in_the_message() {
        let mut v = Violations::default();
        assert_eq!(v.into_result(7), Ok(7));
        v = Violations::default();
        v.add("name", "bad");
        v.add("content", "empty");
        let failure = Failure::from(v.into_result(()).unwrap_err());
        assert_eq!(failure.kind, ErrorKind::InvalidArgument);
        assert_eq!(
            failure.message,
            "invalid request: name: bad; content: empty"
        );
        let fields: Vec<&str> = failure
            .violations
            .iter()
            .map(|f| f.field.as_str())
            .collect();
        assert_eq!(fields, ["name", "content"]);
    }

    #[test]
    fn a_failure_survives_a_round_trip_through_json() {
        let failure = Failure::limit("STREAM_LIMIT", "too many", Duration::from_millis(1500));
        let json = serde_json::to_string(&failure).unwrap();
        assert_eq!(serde_json::from_str::<Failure>(&json).unwrap(), failure);
    }
}
