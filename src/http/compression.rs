//! Compressed HTTP bodies: requests with `Content-Encoding` gzip, deflate
//! or zstd are decompressed before a handler reads them (so the body limit,
//! `server.max_request_bytes`, bounds the *decompressed* size: no zip
//! bombs), and responses are compressed when the caller's
//! `Accept-Encoding` asks. Server-sent event streams, gRPC and images are
//! left as they are (tower-http's default predicate), so streamed tokens
//! are never held back in a compressor's buffer.

use super::{Front, dispatch, refusal};
use crate::failure::Failure;
use axum::body::Body;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use tower::ServiceBuilder;
use tower_http::compression::CompressionLayer;
use tower_http::decompression::{DecompressionBody, RequestDecompressionLayer};

/// Encodings a request body may arrive in.
const ACCEPTED: [&str; 4] = ["gzip", "deflate", "zstd", "identity"];

/// The HTTP front behind request decompression and response compression.
pub fn front_service(
    front: Front,
) -> impl tower::Service<Request, Response = Response, Error = Infallible, Future = impl Send + 'static>
+ Clone
+ Send
+ Sync
+ 'static {
    let inner = ServiceBuilder::new()
        .layer(CompressionLayer::new())
        .layer(RequestDecompressionLayer::new())
        .service_fn(move |request: http::Request<DecompressionBody<Body>>| {
            let front = front.clone();
            // Boxed at once: the handler's future is kilobytes, and every
            // layer above would otherwise move it (~200 KB copied per call).
            let handled = Box::pin(dispatch(front, request.map(Body::new)));
            async move { Ok::<_, Infallible>(handled.await) }
        });
    tower::service_fn(move |request: Request| {
        let mut inner = inner.clone();
        async move {
            if let Some(refused) = unaccepted_encoding(&request) {
                return Ok(refused);
            }
            use tower::{Service, ServiceExt};
            let response = inner.ready().await?.call(request).await?;
            Ok(response.into_response())
        }
    })
}

/// A clear refusal, in the route's error shape, of a body encoded in a
/// way dialogd cannot read (tower-http's own answer is a bare 415).
fn unaccepted_encoding(request: &Request) -> Option<Response> {
    let header = request.headers().get(http::header::CONTENT_ENCODING)?;
    let readable = header.to_str().ok().is_some_and(|value| {
        value
            .split(',')
            .map(|coding| coding.trim().to_ascii_lowercase())
            .all(|coding| ACCEPTED.contains(&coding.as_str()))
    });
    if readable {
        return None;
    }
    let failure = Failure::invalid(
        "Content-Encoding",
        format!(
            "{:?} is not accepted; send one of {}",
            String::from_utf8_lossy(header.as_bytes()),
            ACCEPTED.join(", ")
        ),
    );
    let path = request.uri().path().to_owned();
    Some(refusal(request.headers(), &path, failure).into_response())
}
