//! The one place gRPC statuses become HTTP errors. Every error on the HTTP
//! front is first the same `tonic::Status` gRPC callers get (engine errors
//! through `grpc::status`, refusals from the middleware), then shaped for
//! its protocol: OpenAI's error JSON on the OpenAI routes, google.rpc's
//! JSON form (AIP-193) elsewhere. RESOURCE_EXHAUSTED and UNAVAILABLE carry
//! `Retry-After`.

use crate::middleware::protocol::{code_name, http_status};
use crate::middleware::read_deadline::REQUEST_READ_TIMEOUT;
use axum::http::HeaderValue;
use serde_json::json;
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// Which JSON shape errors take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorShape {
    /// `{"error": {"message", "type", "param", "code"}}`.
    OpenAi,
    /// `{"error": {"code", "message", "status", "details"}}`.
    Google,
    /// `{"type": "error", "error": {"type", "message"}}`.
    Anthropic,
}

impl ErrorShape {
    /// The shape callers of `path` expect.
    pub fn for_path(path: &str) -> ErrorShape {
        if path == "/v1/messages" || path.starts_with("/v1/messages/") {
            ErrorShape::Anthropic
        } else if path.starts_with("/v1/chat/")
            || path == "/v1/responses"
            || path.starts_with("/v1/responses/")
            || path == "/v1/conversations"
            || path.starts_with("/v1/conversations/")
            || path == "/v1/models"
            || path.starts_with("/v1/models/")
        {
            ErrorShape::OpenAi
        } else {
            ErrorShape::Google
        }
    }
}

/// OpenAI's `type` for a code.
fn openai_type(code: Code) -> &'static str {
    match code {
        Code::Unauthenticated => "authentication_error",
        Code::PermissionDenied => "permission_error",
        Code::NotFound => "not_found_error",
        Code::ResourceExhausted => "rate_limit_error",
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            "invalid_request_error"
        }
        _ => "server_error",
    }
}

/// Anthropic's error `type` for a code.
fn anthropic_type(code: Code) -> &'static str {
    match code {
        Code::Unauthenticated => "authentication_error",
        Code::PermissionDenied => "permission_error",
        Code::NotFound => "not_found_error",
        Code::ResourceExhausted => "rate_limit_error",
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            "invalid_request_error"
        }
        Code::Unavailable => "overloaded_error",
        _ => "api_error",
    }
}

/// Whole seconds to wait before retrying, when the status says.
fn retry_after_secs(status: &Status) -> Option<u64> {
    let from_metadata = status
        .metadata()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    from_metadata.or_else(|| {
        let delay = status.get_details_retry_info()?.retry_delay?;
        Some((delay.as_secs() + u64::from(delay.subsec_nanos() > 0)).max(1))
    })
}

/// The error body alone (also sent as the last event of a failed SSE
/// stream).
pub fn body(shape: ErrorShape, status: &Status) -> serde_json::Value {
    let reason = status.get_details_error_info().map(|i| i.reason);
    let bad_fields: Vec<(String, String)> = status
        .get_details_bad_request()
        .map(|b| {
            b.field_violations
                .into_iter()
                .map(|v| (v.field, v.description))
                .collect()
        })
        .unwrap_or_default();
    match shape {
        ErrorShape::OpenAi => json!({
            "error": {
                "message": status.message(),
                "type": openai_type(status.code()),
                "param": bad_fields.first().map(|(field, _)| field),
                "code": reason.map(|r| r.to_ascii_lowercase()),
            }
        }),
        ErrorShape::Anthropic => {
            let message = match bad_fields.first() {
                Some((field, _)) if !status.message().contains(field.as_str()) => {
                    format!("{field}: {}", status.message())
                }
                _ => status.message().to_owned(),
            };
            json!({
                "type": "error",
                "error": {"type": anthropic_type(status.code()), "message": message},
            })
        }
        ErrorShape::Google => {
            let mut details = Vec::new();
            if let Some(reason) = reason {
                details.push(json!({
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": reason,
                    "domain": crate::grpc::status::ERROR_DOMAIN,
                }));
            }
            if !bad_fields.is_empty() {
                let violations: Vec<_> = bad_fields
                    .iter()
                    .map(|(field, description)| json!({"field": field, "description": description}))
                    .collect();
                details.push(json!({
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": violations,
                }));
            }
            json!({
                "error": {
                    "code": http_status(status.code()).as_u16(),
                    "message": status.message(),
                    "status": code_name(status.code()),
                    "details": details,
                }
            })
        }
    }
}

/// The whole HTTP answer for `status`.
pub fn response(shape: ErrorShape, status: &Status) -> http::Response<tonic::body::Body> {
    let json = body(shape, status).to_string();
    let mut response = http::Response::new(tonic::body::Body::new(http_body_util::Full::new(
        bytes::Bytes::from(json),
    )));
    *response.status_mut() = match status.get_details_error_info() {
        Some(info) if info.reason == REQUEST_READ_TIMEOUT => http::StatusCode::REQUEST_TIMEOUT,
        _ => http_status(status.code()),
    };
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(secs) = retry_after_secs(status)
        && matches!(status.code(), Code::ResourceExhausted | Code::Unavailable)
    {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
    }
    for name in ["x-ratelimit-limit", "x-ratelimit-remaining", "x-request-id"] {
        if let Some(v) = status.metadata().get(name).and_then(|v| v.to_str().ok())
            && let Ok(v) = HeaderValue::from_str(v)
        {
            headers.insert(name, v);
        }
    }
    response
}
