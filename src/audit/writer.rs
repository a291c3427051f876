//! Writing audit events without losing them silently: an event the store
//! refuses (Redis away) waits in a bounded buffer and is retried with
//! backoff until the store takes it; one that cannot wait (the buffer is
//! full, or the store stayed away past `RETRY_FOR`) is counted in
//! `dialogd_audit_events_lost_total` and logged with its action and time.

use crate::audit::{AuditEvent, AuditLog};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Most events waiting at once.
pub const MAX_PENDING: usize = 10_000;
/// How long an event is retried before it is given up.
pub const RETRY_FOR: Duration = Duration::from_secs(300);
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

static PENDING: AtomicUsize = AtomicUsize::new(0);

/// Appends `event`, waiting for the store if it is away (see above).
pub async fn append(log: Arc<dyn AuditLog>, event: AuditEvent) {
    let Err(first) = log.append_audit(&event).await else {
        return;
    };
    if PENDING.fetch_add(1, Ordering::AcqRel) >= MAX_PENDING {
        PENDING.fetch_sub(1, Ordering::AcqRel);
        lost(&event, "buffer_full", &first.to_string());
        return;
    }
    crate::meter::audit_pending(PENDING.load(Ordering::Acquire));
    tracing::warn!(error = %first, action = %event.action, "audit event kept until the store takes it");
    let give_up = tokio::time::Instant::now() + RETRY_FOR;
    let mut pause = FIRST_PAUSE;
    let outcome = loop {
        tokio::time::sleep(pause).await;
        match log.append_audit(&event).await {
            Ok(()) => break Ok(()),
            Err(e) if tokio::time::Instant::now() >= give_up => break Err(e),
            Err(_) => pause = (pause * 2).min(LONGEST_PAUSE),
        }
    };
    let pending = PENDING.fetch_sub(1, Ordering::AcqRel) - 1;
    crate::meter::audit_pending(pending);
    if let Err(e) = outcome {
        lost(&event, "store_gone", &e.to_string());
    }
}

fn lost(event: &AuditEvent, reason: &'static str, error: &str) {
    crate::meter::audit_lost(reason);
    tracing::error!(
        error,
        reason,
        action = %event.action,
        time = event.time.0,
        principal = %event.principal,
        "an audit event was lost"
    );
}
