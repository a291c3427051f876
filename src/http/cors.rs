//! CORS, so browser apps on other origins can call gRPC-Web and the HTTP
//! routes: preflights are answered before authentication (they carry no
//! credentials), and the headers gRPC-Web clients read are exposed.

use http::{HeaderName, HeaderValue, Method};
use std::time::Duration;
use tower_http::cors::{AllowOrigin, CorsLayer};

const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "grpc-timeout",
    "x-grpc-web",
    "x-user-agent",
    "x-request-id",
    "x-dialogue-id",
];

const EXPOSED_HEADERS: &[&str] = &[
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "retry-after",
    "x-request-id",
    "x-dialogue-id",
    "x-ratelimit-remaining",
];

/// The layer for `origins` (`*` for any); `None` when the list is empty.
pub fn layer(origins: &[String]) -> Result<Option<CorsLayer>, String> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let parsed = origins
            .iter()
            .map(|o| {
                HeaderValue::from_str(o).map_err(|_| {
                    format!("server.cors_allowed_origins: {o:?} is not a valid origin")
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(parsed)
    };
    let names = |list: &'static [&'static str]| -> Vec<HeaderName> {
        list.iter().map(|h| HeaderName::from_static(h)).collect()
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers(names(ALLOWED_HEADERS))
            .expose_headers(names(EXPOSED_HEADERS))
            .max_age(Duration::from_secs(3600)),
    ))
}
