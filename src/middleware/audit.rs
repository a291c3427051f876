//! The audit layer: for every mutating call and every refused one
//! (UNAUTHENTICATED, PERMISSION_DENIED) it appends an `AuditEvent` with the
//! final status (learnt by `outcome::watch`; a call dropped before its end
//! records CANCELLED).

use super::call::Resolved;
use super::outcome::{self, OnEnd};
use super::request_id::RequestId;
use crate::audit::writer::AuditWriter;
use crate::audit::{AuditEvent, AuditNotes, redact};
use crate::dialogue::model::Time;
use std::future::Future;
use std::time::Instant;
use tonic::Code;

/// Audits calls through `writer` (see the module).
#[derive(Clone)]
pub struct Audit {
    writer: AuditWriter,
}

impl Audit {
    pub fn new(writer: AuditWriter) -> Audit {
        Audit { writer }
    }
}

/// Everything known of a call but its outcome.
struct Recorder {
    writer: AuditWriter,
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
        let notes = self.notes.take();
        let refused = matches!(code, Code::Unauthenticated | Code::PermissionDenied);
        if !self.mutating && !refused && !notes.security_refusal {
            return;
        }
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
        self.writer.submit(event);
    }
}

impl super::Around for Audit {
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
        let notes = AuditNotes::default();
        request.extensions_mut().insert(notes.clone());
        let call = Resolved::of(&request);
        let recorder = Recorder {
            writer: self.writer.clone(),
            notes,
            action: call.name.to_string(),
            mutating: call.mutating(),
            request_id: request
                .extensions()
                .get::<RequestId>()
                .map(|r| r.0.clone())
                .unwrap_or_default(),
            client_ip: super::client_address::ClientAddress::of(&request)
                .map(|a| a.to_string())
                .unwrap_or_default(),
            time: Time::now(),
            started: Instant::now(),
        };
        Box::pin(outcome::watch(
            next(request),
            OnEnd::new(move |code| recorder.finish(code)),
        ))
    }
}
