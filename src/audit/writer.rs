//! Writing audit events off the request path without losing them
//! silently: calls hand their event to one writer task through a bounded
//! queue; the writer appends whatever has queued up as one batch, in
//! order, and when the store refuses (Redis away) it keeps the batch and
//! retries with backoff while new events queue behind it. An event that
//! cannot wait (the queue is full, or the store stayed away past
//! `RETRY_FOR`) is counted in `dialogd_audit_events_lost_total` and logged
//! with its action and time. On a clean shutdown the writer drains the
//! queue before the store is flushed.
//!
//! One writer instead of a task per event: the event's spawn and the
//! concurrent inserts at the end of the audit key range (every call's
//! event lands in the same place) cost ~11 µs per stateless OpenAI call
//! (BENCHMARKS.md).

use crate::audit::{AuditEvent, AuditLog};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Most events waiting at once.
pub const MAX_PENDING: usize = 10_000;
/// How long a batch is retried before it is given up.
pub const RETRY_FOR: Duration = Duration::from_secs(300);
/// Most events appended in one store call.
const MAX_BATCH: usize = 256;
const FIRST_PAUSE: Duration = Duration::from_millis(200);
const LONGEST_PAUSE: Duration = Duration::from_secs(5);

/// Hands events to the writer; cheap to clone.
#[derive(Clone)]
pub struct AuditWriter {
    queue: mpsc::Sender<AuditEvent>,
    pending: Arc<AtomicUsize>,
}

/// Stops the writer once it has written what is queued.
pub struct WriterStop {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    pending: Arc<AtomicUsize>,
}

impl AuditWriter {
    /// Starts the writer task on the current runtime.
    pub fn start(log: Arc<dyn AuditLog>) -> (AuditWriter, WriterStop) {
        let (queue, events) = mpsc::channel(MAX_PENDING);
        let pending = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(log, events, pending.clone(), stop.clone()));
        let writer = AuditWriter {
            queue,
            pending: pending.clone(),
        };
        (
            writer,
            WriterStop {
                stop,
                task,
                pending,
            },
        )
    }

    /// Queues `event` for the writer.
    pub fn submit(&self, event: AuditEvent) {
        // Counted before it is queued, so the writer never subtracts an
        // event not yet counted.
        self.pending.fetch_add(1, Ordering::AcqRel);
        let refused = match self.queue.try_send(event) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(event)) => {
                (event, "buffer_full", "the audit queue is full")
            }
            Err(mpsc::error::TrySendError::Closed(event)) => {
                (event, "store_gone", "the audit writer has stopped")
            }
        };
        self.pending.fetch_sub(1, Ordering::AcqRel);
        lost(&refused.0, refused.1, refused.2);
    }
}

impl WriterStop {
    /// Lets the writer write what is queued (waiting at most `within`),
    /// then stops it.
    pub async fn finish(self, within: Duration) {
        self.stop.cancel();
        let mut task = self.task;
        if tokio::time::timeout(within, &mut task).await.is_err() {
            task.abort();
            let left = self
                .pending
                .load(Ordering::Acquire)
                .min(MAX_PENDING + MAX_BATCH);
            for _ in 0..left {
                crate::meter::audit_lost("store_gone");
            }
            tracing::error!(
                events = left,
                "audit events not written before shutdown (the store stayed away)"
            );
        }
    }
}

async fn run(
    log: Arc<dyn AuditLog>,
    mut events: mpsc::Receiver<AuditEvent>,
    pending: Arc<AtomicUsize>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut stopping = false;
    loop {
        let first = tokio::select! {
            biased;
            event = events.recv() => event,
            () = stop.cancelled(), if !stopping => {
                // Take no more; what is queued is still received.
                stopping = true;
                events.close();
                continue;
            }
        };
        let Some(first) = first else {
            return;
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match events.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        write(&*log, &batch, &pending).await;
        pending.fetch_sub(batch.len(), Ordering::AcqRel);
        batch.clear();
    }
}

/// Appends `batch`, retrying what is not yet appended while the store is
/// away (see the module).
async fn write(log: &dyn AuditLog, batch: &[AuditEvent], pending: &AtomicUsize) {
    let give_up = tokio::time::Instant::now() + RETRY_FOR;
    let mut pause = FIRST_PAUSE;
    let mut waited = false;
    let mut left = batch;
    loop {
        match log.append_audit_batch(left).await {
            Ok(()) => {
                if waited {
                    crate::meter::audit_pending(
                        pending.load(Ordering::Acquire).saturating_sub(batch.len()),
                    );
                }
                return;
            }
            Err((written, e)) => {
                left = &left[written.min(left.len())..];
                if tokio::time::Instant::now() >= give_up {
                    for event in left {
                        lost(event, "store_gone", &e.to_string());
                    }
                    return;
                }
                if !waited {
                    tracing::warn!(error = %e, events = left.len(), "audit events kept until the store takes them");
                    waited = true;
                }
                crate::meter::audit_pending(pending.load(Ordering::Acquire));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(LONGEST_PAUSE);
            }
        }
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
