//! Gives every call a request ID — the caller's `x-request-id` when it is
//! sane, else a fresh one — runs the call inside a tracing span carrying
//! it, and echoes it in the response headers, so a caller can quote it and
//! an operator find its log lines and audit event. Being outermost, it also
//! looks the call's method up once (`Resolved`) for the layers inside.

use super::call::Resolved;
use std::future::Future;
use tracing::Instrument;

/// The call's request ID, for layers and handlers inside.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

impl RequestId {
    fn from_headers(headers: &http::HeaderMap) -> RequestId {
        let given = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()));
        RequestId(match given {
            Some(id) => id.to_owned(),
            None => format!("{:016x}", rand::random::<u64>()),
        })
    }
}

/// Assigns request IDs (see the module).
#[derive(Clone, Copy)]
pub struct RequestIds;

impl super::Around for RequestIds {
    fn around<B, E, Next, Fut>(
        &self,
        mut request: http::Request<B>,
        next: Next,
    ) -> super::LayerFuture<E>
    where
        B: Send + 'static,
        E: Send + 'static,
        Next: FnOnce(http::Request<B>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<super::Response, E>> + Send + 'static,
    {
        let id = RequestId::from_headers(request.headers());
        let call = Resolved::of(&request);
        // At error level so that the span is on whenever any logging is:
        // a warning logged at level "warn" still names its request.
        let span = tracing::error_span!(
            "rpc",
            request_id = %id.0,
            method = &*call.name
        );
        let header = http::HeaderValue::from_str(&id.0).ok();
        request.extensions_mut().insert(id);
        request.extensions_mut().insert(call);
        let response = next(request);
        Box::pin(
            async move {
                let mut response = response.await?;
                if let Some(value) = header {
                    response.headers_mut().insert("x-request-id", value);
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}
