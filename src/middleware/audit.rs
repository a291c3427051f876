//! The audit layer, outermost: for every mutating call and every refused
//! one (UNAUTHENTICATED, PERMISSION_DENIED) it appends an `AuditEvent` with
//! the final status. Errors decided before the handler come as trailers-only
//! responses (status in the headers); otherwise the status arrives in the
//! body's trailers, at the end of a stream, so the body is watched (and a
//! body dropped before its end records CANCELLED).

use crate::audit::{AuditEvent, AuditNotes, redact};
use crate::auth::policy;
use crate::dialogue::model::Time;
use crate::store::DialogueStore;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::Code;
use tower::{Layer, Service};

#[derive(Clone)]
pub struct AuditLayer {
    store: Arc<dyn DialogueStore>,
}

impl AuditLayer {
    pub fn new(store: Arc<dyn DialogueStore>) -> AuditLayer {
        AuditLayer { store }
    }
}

impl<S> Layer<S> for AuditLayer {
    type Service = AuditService<S>;

    fn layer(&self, inner: S) -> AuditService<S> {
        AuditService {
            inner,
            store: self.store.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuditService<S> {
    inner: S,
    store: Arc<dyn DialogueStore>,
}

/// Everything known of a call but its outcome.
struct Recorder {
    store: Arc<dyn DialogueStore>,
    notes: AuditNotes,
    action: String,
    mutating: bool,
    request_id: String,
    client_ip: String,
    time: Time,
    started: Instant,
}

impl Recorder {
    fn finish(self, code: Code) {
        if !self.mutating && !matches!(code, Code::Unauthenticated | Code::PermissionDenied) {
            return;
        }
        let notes = self.notes.take();
        let event = AuditEvent {
            time: self.time,
            request_id: self.request_id,
            principal: redact(&notes.principal),
            tenant: redact(&notes.tenant),
            client_ip: self.client_ip,
            action: self.action,
            resource: redact(&notes.resource),
            status: format!("{code:?}"),
            duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
        };
        let store = self.store;
        tokio::spawn(async move {
            if let Err(e) = store.append_audit(&event).await {
                tracing::error!(error = %e, action = %event.action, "cannot append an audit event");
            }
        });
    }
}

/// A response body that records the call when its trailers pass by.
struct AuditedBody {
    inner: tonic::body::Body,
    recorder: Option<Recorder>,
}

impl AuditedBody {
    fn finish(&mut self, code: Code) {
        if let Some(r) = self.recorder.take() {
            r.finish(code);
        }
    }
}

impl Body for AuditedBody {
    type Data = Bytes;
    type Error = tonic::Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(|t| t.get("grpc-status")) {
                    let code = Code::from_bytes(code.as_bytes());
                    self.finish(code);
                }
            }
            Poll::Ready(Some(Err(status))) => {
                let code = status.code();
                self.finish(code);
            }
            Poll::Ready(None) => self.finish(Code::Ok),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        self.finish(Code::Cancelled);
    }
}

fn request_id(headers: &http::HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| format!("{:016x}", rand::random::<u64>()))
}

impl<S, B> Service<http::Request<B>> for AuditService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = super::LayerFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let notes = AuditNotes::default();
        request.extensions_mut().insert(notes.clone());
        let path = request.uri().path();
        let recorder = Recorder {
            store: self.store.clone(),
            notes,
            action: path.trim_start_matches('/').to_owned(),
            mutating: policy::is_mutating(path),
            request_id: request_id(request.headers()),
            client_ip: request
                .extensions()
                .get::<crate::tls::PeerInfo>()
                .and_then(|p| p.remote_addr)
                .map(|a| a.ip().to_string())
                .unwrap_or_default(),
            time: Time::now(),
            started: Instant::now(),
        };
        let mut inner = super::take_ready(&mut self.inner);
        let response = inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // Trailers-only: an error decided before any message.
            if let Some(code) = response.headers().get("grpc-status") {
                recorder.finish(Code::from_bytes(code.as_bytes()));
                return Ok(response);
            }
            if !recorder.mutating {
                return Ok(response);
            }
            Ok(response.map(|body| {
                tonic::body::Body::new(AuditedBody {
                    inner: body,
                    recorder: Some(recorder),
                })
            }))
        })
    }
}
