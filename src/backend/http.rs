//! What the HTTP backends share: one pooled HTTP/2-capable client per
//! backend, mapping HTTP failures to `BackendError`, and SSE decoding.
//! Only this file and the protocol files know reqwest.

use super::{ApiKey, BackendError, ReplyChunk, ReplyStream, with_stream_timeouts};
use crate::config::TimeoutSettings;
use eventsource_stream::{Event, Eventsource};
use futures_util::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use serde::de::DeserializeOwned;
use std::time::Duration;
use tokio::time::Instant;

/// Error text from an upstream is cut to this many bytes.
const MAX_DETAIL: usize = 300;

fn client(name: &str, timeouts: &TimeoutSettings) -> Result<reqwest::Client, super::BuildError> {
    // rustls needs a process-wide crypto provider; the first call installs ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    super::roots::with_trusted_roots(reqwest::Client::builder())
        .connect_timeout(Duration::from_millis(timeouts.connect_ms))
        .tcp_nodelay(true)
        .pool_idle_timeout(Duration::from_secs(90))
        // Pings keep slow streams alive through proxies and detect dead peers.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .http2_keep_alive_timeout(Duration::from_secs(10))
        .http2_keep_alive_while_idle(true)
        // Never follow a redirect: upstream URLs come from config only.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| super::BuildError {
            name: name.to_owned(),
            detail: format!("cannot build the HTTP client: {e}"),
        })
}

/// Text safe to show: the key (if any) removed, cut to a bounded length.
pub fn redact(text: &str, key: Option<&ApiKey>) -> String {
    let mut out = match key {
        Some(k) if !k.expose().is_empty() => text.replace(k.expose(), "***"),
        _ => text.to_owned(),
    };
    if out.len() > MAX_DETAIL {
        let mut cut = MAX_DETAIL;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// A transport failure (connect, reset, timeout of the whole request).
fn transport_error(backend: &str, e: &reqwest::Error, phase: &'static str) -> BackendError {
    if e.is_timeout() {
        return BackendError::Timeout {
            backend: backend.to_owned(),
            phase,
        };
    }
    BackendError::Unavailable {
        backend: backend.to_owned(),
        detail: describe(e),
    }
}

/// What went wrong with a request, without its URL: an upstream URL (and
/// whatever its query holds, a key included) never reaches a client. The
/// server log gets the URL with its query cut.
fn describe(e: &reqwest::Error) -> String {
    if let Some(url) = e.url() {
        let mut shown = url.clone();
        shown.set_query(None);
        let _ = shown.set_password(None);
        tracing::debug!(url = %shown, error = %e.to_string().replace(url.as_str(), shown.as_str()), "upstream request failed");
    }
    let mut detail = match e.url() {
        Some(url) => e.to_string().replace(&format!(" for url ({url})"), ""),
        None => e.to_string(),
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = format!("{detail}: {s}");
        source = s.source();
    }
    detail
}

/// Seconds (`retry-after: 2`) or milliseconds (`retry-after-ms: 1500`).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let read = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<f64>().ok();
    let delay = read("retry-after-ms")
        .map(|ms| ms / 1000.0)
        .or_else(|| read("retry-after"))?;
    (delay.is_finite() && delay >= 0.0).then(|| Duration::from_secs_f64(delay.min(3600.0)))
}

/// Maps a non-success response to an error (reads the body for a detail).
async fn status_error(
    backend: &str,
    response: reqwest::Response,
    key: Option<&ApiKey>,
) -> BackendError {
    let status = response.status();
    let retry = retry_after(response.headers());
    let body = response.text().await.unwrap_or_default();
    classify_status(backend, status.as_u16(), retry, &body, key)
}

pub fn classify_status(
    backend: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &str,
    key: Option<&ApiKey>,
) -> BackendError {
    let backend = backend.to_owned();
    let lower = body.to_ascii_lowercase();
    match status {
        429 => BackendError::RateLimited {
            backend,
            retry_after,
        },
        400 | 413 | 422
            if [
                "context_length_exceeded",
                "maximum context length",
                "prompt is too long",
                "too many tokens",
            ]
            .iter()
            .any(|needle| lower.contains(needle)) =>
        {
            BackendError::ContextTooLong { backend }
        }
        // Auth failures: the body may quote part of the key; say nothing of it.
        401 | 403 => BackendError::Rejected {
            backend,
            status,
            detail: "authentication failed; check the backend's API key".into(),
        },
        400..=499 => BackendError::Rejected {
            backend,
            status,
            detail: redact(body, key),
        },
        _ => BackendError::Unavailable {
            backend,
            detail: format!("HTTP {status}: {}", redact(body, key)),
        },
    }
}

/// The response body as Server-Sent Events; transport errors mid-stream
/// become `Unavailable`.
fn sse_events(
    backend: &str,
    response: reqwest::Response,
) -> impl Stream<Item = Result<Event, BackendError>> + Send + use<> {
    let backend = backend.to_owned();
    response.bytes_stream().eventsource().map(move |item| {
        item.map_err(|e| {
            let why = match &e {
                eventsource_stream::EventStreamError::Transport(e) => describe(e),
                other => other.to_string(),
            };
            BackendError::Unavailable {
                backend: backend.clone(),
                detail: format!("the stream broke: {why}"),
            }
        })
    })
}

/// A JSON body that failed to parse.
pub fn invalid_json(backend: &str, e: &serde_json::Error) -> BackendError {
    BackendError::InvalidReply {
        backend: backend.to_owned(),
        detail: format!("not the expected JSON: {e}"),
    }
}

/// Turns one protocol's SSE events into reply chunks.
pub trait SseDecoder: Send + 'static {
    /// The chunks one event's data adds; `None` once the protocol's own
    /// end-of-stream event arrives.
    fn decode(&mut self, data: &str) -> Result<Option<Vec<ReplyChunk>>, BackendError>;
    /// The closing chunk when the stream ended; an error if the reply never
    /// said how it finished (it was cut off).
    fn finished(&self) -> Result<ReplyChunk, BackendError>;
}

/// One configured HTTP backend: its client, headers (with the key) and
/// time limits. The protocol files build bodies and decode replies.
pub struct Endpoint {
    pub name: String,
    client: reqwest::Client,
    headers: HeaderMap,
    key: Option<ApiKey>,
    timeouts: TimeoutSettings,
}

impl Endpoint {
    /// An upstream URL of backend `name`, parsed once.
    pub fn url(name: &str, text: &str) -> Result<reqwest::Url, super::BuildError> {
        reqwest::Url::parse(text).map_err(|e| super::BuildError {
            name: name.to_owned(),
            detail: format!("its URL does not parse: {e}"),
        })
    }

    pub fn new(
        name: &str,
        headers: HeaderMap,
        key: Option<ApiKey>,
        timeouts: &TimeoutSettings,
    ) -> Result<Endpoint, super::BuildError> {
        Ok(Endpoint {
            name: name.to_owned(),
            client: client(name, timeouts)?,
            headers,
            key,
            timeouts: *timeouts,
        })
    }

    /// `url` is parsed once, when the backend is built: parsing it per
    /// call (url + idna) showed in the OpenAI path's profile.
    fn post<B: serde::Serialize + ?Sized>(
        &self,
        url: &reqwest::Url,
        body: &B,
    ) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .post(url.clone())
            .headers(self.headers.clone())
            .json(body);
        // The attempt's trace context, when traces are exported.
        for (name, value) in crate::telemetry::traces::outbound_headers() {
            request = request.header(name, value);
        }
        request
    }

    /// A unary call: the JSON reply, within `request_ms`.
    pub async fn post_json<T: DeserializeOwned, B: serde::Serialize + ?Sized>(
        &self,
        url: &reqwest::Url,
        body: &B,
    ) -> Result<T, BackendError> {
        let response = self
            .post(url, body)
            .timeout(Duration::from_millis(self.timeouts.request_ms))
            .send()
            .await
            .map_err(|e| transport_error(&self.name, &e, "the reply"))?;
        if !response.status().is_success() {
            return Err(status_error(&self.name, response, self.key.as_ref()).await);
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(&self.name, &e, "the reply"))?;
        serde_json::from_slice(&bytes).map_err(|e| invalid_json(&self.name, &e))
    }

    /// A streamed call decoded by `decoder`, with the first-token and idle
    /// limits applied.
    pub async fn post_sse<B: serde::Serialize + ?Sized>(
        &self,
        url: &reqwest::Url,
        body: &B,
        decoder: impl SseDecoder,
    ) -> Result<ReplyStream, BackendError> {
        let first_token_by = Instant::now() + Duration::from_millis(self.timeouts.first_token_ms);
        let response = tokio::time::timeout_at(first_token_by, self.post(url, body).send())
            .await
            .map_err(|_| BackendError::Timeout {
                backend: self.name.clone(),
                phase: "the response headers",
            })?
            .map_err(|e| transport_error(&self.name, &e, "the response headers"))?;
        if !response.status().is_success() {
            return Err(status_error(&self.name, response, self.key.as_ref()).await);
        }
        let events = Box::pin(sse_events(&self.name, response));
        let batches = futures_util::stream::unfold(
            (events, decoder, false),
            |(mut events, mut decoder, done)| async move {
                if done {
                    return None;
                }
                loop {
                    let last = match events.next().await {
                        None => decoder.finished().map(|c| vec![c]),
                        Some(Err(e)) => Err(e),
                        Some(Ok(event)) => match decoder.decode(&event.data) {
                            Ok(Some(chunks)) if chunks.is_empty() => continue,
                            Ok(Some(chunks)) => {
                                return Some((Ok(chunks), (events, decoder, false)));
                            }
                            Ok(None) => decoder.finished().map(|c| vec![c]),
                            Err(e) => Err(e),
                        },
                    };
                    // The stream's last item: the finish, or the error.
                    return Some((last, (events, decoder, true)));
                }
            },
        );
        let chunks = batches.flat_map(|batch: Result<Vec<ReplyChunk>, BackendError>| {
            let items: Vec<Result<ReplyChunk, BackendError>> = match batch {
                Ok(chunks) => chunks.into_iter().map(Ok).collect(),
                Err(e) => vec![Err(e)],
            };
            futures_util::stream::iter(items)
        });
        Ok(with_stream_timeouts(
            Box::pin(chunks),
            &self.name,
            first_token_by,
            Duration::from_millis(self.timeouts.idle_ms),
        ))
    }

    /// A cheap GET that answers 2xx when the backend is up.
    pub async fn probe(&self, url: &reqwest::Url) -> bool {
        let probe = self
            .client
            .get(url.clone())
            .headers(self.headers.clone())
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        matches!(probe, Ok(r) if r.status().is_success())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_right_errors() {
        let e = classify_status("b", 429, Some(Duration::from_secs(2)), "", None);
        assert!(
            matches!(e, BackendError::RateLimited { retry_after: Some(d), .. } if d == Duration::from_secs(2))
        );
        let e = classify_status(
            "b",
            400,
            None,
            r#"{"error":{"code":"context_length_exceeded"}}"#,
            None,
        );
        assert!(matches!(e, BackendError::ContextTooLong { .. }));
        let e = classify_status("b", 503, None, "overloaded", None);
        assert!(matches!(e, BackendError::Unavailable { .. }) && e.is_retryable());
        let e = classify_status("b", 400, None, "bad temperature", None);
        assert!(matches!(e, BackendError::Rejected { status: 400, .. }) && !e.is_retryable());
    }

    #[test]
    fn keys_never_reach_error_details() {
        let key = ApiKey("sk-secret-123".into());
        let e = classify_status(
            "b",
            401,
            None,
            "Incorrect API key provided: sk-secret-123",
            Some(&key),
        );
        assert!(!e.to_string().contains("sk-secret"));
        let e = classify_status("b", 500, None, "echoing sk-secret-123 back", Some(&key));
        assert!(!e.to_string().contains("sk-secret"), "{e}");
        assert_eq!(format!("{key:?}"), "ApiKey(***)");
    }

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(250)));
        h.clear();
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn long_details_are_cut_on_a_char_boundary() {
        let text = "é".repeat(400);
        let out = redact(&text, None);
        assert!(out.len() <= MAX_DETAIL + 3);
    }
}
