//! Asynchronous turns (SubmitTurn, GetOperation, WatchOperation): a turn
//! is accepted at once as an operation, waits in priority order for one of
//! `operations.workers` (`queue`), runs through the engine like any
//! Converse, and its outcome is kept with the operation and POSTed to the
//! callback URL if one was given. Operations are stored (serde records in
//! the operation store), so a restart resumes the pending ones: their turn
//! carries the operation ID as its idempotency key, so one that was stored
//! before the restart is replayed, never run twice.

pub mod destinations;
mod queue;
mod record;
pub mod webhook;

pub use queue::Priority;

use crate::auth::Principal;
use crate::config::OperationSettings;
use crate::dialogue::model::{Owner, Time, TurnOutcome, TurnRequest};
use crate::dialogue::ports::{OperationPut, OperationStore, StoreError};
use crate::engine::{Engine, EngineError};
use crate::failure::Failure;
use queue::Queue;
use record::Record;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use webhook::Webhooks;

/// How often WatchOperation looks for a change (the record may be changed
/// by another replica, so it reads the store).
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// Where the callback of an operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallbackState {
    /// No callback URL was given.
    None,
    /// To be delivered once the turn is done.
    Pending,
    Delivered,
    /// Given up after the configured attempts.
    Failed,
}

/// How the turn of an operation ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OperationResult {
    Outcome(Box<TurnOutcome>),
    Failed(Failure),
}

/// An asynchronous turn: the public view, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// `op-` and 32 hex digits.
    pub id: String,
    pub done: bool,
    pub result: Option<OperationResult>,
    pub create_time: Time,
    pub update_time: Time,
    /// Empty without a callback.
    pub callback_url: String,
    pub callback_state: CallbackState,
    pub callback_attempts: u32,
    /// Records written before priorities are normal.
    #[serde(default)]
    pub priority: Priority,
}

impl Operation {
    /// The resource name, `operations/{id}`.
    pub fn name(&self) -> String {
        format!("operations/{}", self.id)
    }

    /// Done, and its callback (if any) delivered or given up.
    pub fn settled(&self) -> bool {
        self.done && self.callback_state != CallbackState::Pending
    }
}

/// The body POSTed to a callback URL for a settled operation: the API's
/// JSON form of the operation, which the transport renders.
pub type CallbackBody = Arc<dyn Fn(&Operation) -> Result<Vec<u8>, String> + Send + Sync>;

pub struct Operations {
    engine: Arc<Engine>,
    store: Arc<dyn OperationStore>,
    webhooks: Webhooks,
    callback_body: CallbackBody,
    /// The server's tasks: shutdown waits for running turns.
    tasks: TaskTracker,
    /// How long a settled operation's record is kept.
    retention_secs: i64,
    /// Turns waiting for a worker, in priority order.
    queue: Queue,
    /// Turns running at once, at most.
    workers: usize,
    /// Workers running now.
    running: AtomicUsize,
}

impl Operations {
    pub fn new(
        engine: Arc<Engine>,
        store: Arc<dyn OperationStore>,
        webhooks: Webhooks,
        callback_body: CallbackBody,
        tasks: TaskTracker,
        retention: Duration,
        settings: &OperationSettings,
    ) -> Arc<Operations> {
        Arc::new(Operations {
            engine,
            store,
            webhooks,
            callback_body,
            tasks,
            retention_secs: i64::try_from(retention.as_secs()).unwrap_or(i64::MAX),
            queue: Queue::new(Duration::from_secs(settings.aging_secs)),
            workers: settings.workers.max(1),
            running: AtomicUsize::new(0),
        })
    }

    /// Accepts a turn as a new operation and starts it; a bad turn or
    /// callback URL is refused now, not in the operation.
    pub async fn submit(
        self: &Arc<Self>,
        mut turn: TurnRequest,
        callback_url: Option<String>,
        priority: Priority,
    ) -> Result<Operation, EngineError> {
        if let Some(url) = &callback_url {
            self.webhooks.check_url(url)?;
        }
        let id = format!("op-{:032x}", rand::random::<u128>());
        if turn.request_id.is_none() {
            turn.request_id = Some(id.clone());
        }
        self.engine.check_turn_request(&turn)?;
        let now = Time::now();
        let operation = Operation {
            id: id.clone(),
            done: false,
            result: None,
            create_time: now,
            update_time: now,
            callback_state: match callback_url {
                None => CallbackState::None,
                Some(_) => CallbackState::Pending,
            },
            callback_url: callback_url.unwrap_or_default(),
            callback_attempts: 0,
            priority,
        };
        let record = Record::new(&turn, operation.clone());
        self.save(&record).await?;
        self.enqueue(record);
        Ok(operation)
    }

    /// Puts a saved operation in line and starts a worker if one is free.
    fn enqueue(self: &Arc<Self>, record: Record) {
        let arrival = record.operation.create_time.0;
        self.queue.push(record, arrival);
        self.start_workers();
    }

    /// Starts workers while turns wait and fewer than `workers` run. Not
    /// once the drain began: what waits then stays pending in the store and
    /// the next start resumes it.
    fn start_workers(self: &Arc<Self>) {
        loop {
            let running = self.running.load(Ordering::Acquire);
            if running >= self.workers || self.queue.is_empty() || self.tasks.is_closed() {
                return;
            }
            if self
                .running
                .compare_exchange(running, running + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.tasks.spawn(self.clone().work());
            }
        }
    }

    /// A worker: runs waiting turns, best first, until none wait.
    async fn work(self: Arc<Self>) {
        while !self.tasks.is_closed()
            && let Some(record) = self.queue.pop()
        {
            let waited = Time::now().0.saturating_sub(record.operation.create_time.0);
            let waited = Duration::from_nanos(u64::try_from(waited).unwrap_or(0));
            crate::meter::operation_waited(record.operation.priority.as_str(), waited);
            self.clone().run(record).await;
        }
        self.running.fetch_sub(1, Ordering::AcqRel);
        // A turn put in line while this worker was leaving found every
        // worker busy: start one for it.
        self.start_workers();
    }

    async fn save(&self, record: &Record) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record)
            .map_err(|e| StoreError::Io(format!("cannot encode an operation: {e}")))?;
        let dialogue = record.dialogue();
        let expire_time = record
            .operation
            .settled()
            .then(|| Time::now().saturating_add_secs(self.retention_secs));
        self.store
            .put_operation(OperationPut {
                id: &record.operation.id,
                dialogue: &dialogue,
                record: &bytes,
                expire_time,
            })
            .await
    }

    async fn load(&self, id: &str) -> Result<Option<Record>, StoreError> {
        let Some(bytes) = self.store.get_operation(id).await? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("operation {id}: {e}")))
    }

    /// The caller's operation `id`; someone else's is NOT_FOUND.
    pub async fn get(&self, caller: &Principal, id: &str) -> Result<Operation, EngineError> {
        match self.load(id).await? {
            Some(record) if record.owner_key == Owner::of(caller).key() => Ok(record.operation),
            _ => Err(EngineError::NotFound(format!("operations/{id}"))),
        }
    }

    /// The operation now and at each change, until it is settled.
    pub async fn watch(
        self: &Arc<Self>,
        caller: &Principal,
        id: &str,
    ) -> Result<mpsc::Receiver<Result<Operation, EngineError>>, EngineError> {
        let first = self.get(caller, id).await?;
        let (tx, rx) = mpsc::channel(8);
        let (operations, caller, id) = (self.clone(), caller.clone(), id.to_owned());
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(Ok(last.clone())).await.is_err() {
                return;
            }
            while !last.settled() {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(WATCH_EVERY) => {}
                }
                let now = operations.get(&caller, &id).await;
                let changed = now.as_ref().map_or(true, |op| *op != last);
                if changed && tx.send(now.clone()).await.is_err() {
                    return;
                }
                match now {
                    Ok(op) => last = op,
                    Err(_) => return,
                }
            }
        });
        Ok(rx)
    }

    /// At start-up: runs or delivers what a previous run left pending.
    pub async fn resume_pending(self: &Arc<Self>) -> Result<usize, StoreError> {
        let pending = self.store.pending_operations().await?;
        let mut resumed = 0;
        for bytes in pending {
            let Ok(record) = serde_json::from_slice::<Record>(&bytes) else {
                tracing::error!("a pending operation's record is unreadable; skipped");
                continue;
            };
            self.enqueue(record);
            resumed += 1;
        }
        Ok(resumed)
    }

    /// Runs the turn unless it is done, then delivers the callback unless
    /// settled, saving the record after each step. The delivery runs apart
    /// from the server's tasks, so its retries never hold up a shutdown
    /// (an undelivered callback stays pending and resumes at the next start).
    async fn run(self: Arc<Self>, mut record: Record) {
        match self.finish_turn(&mut record).await {
            Ok(()) if !record.operation.settled() => {
                tokio::spawn(async move {
                    if let Err(e) = self.deliver(&mut record).await {
                        let id = &record.operation.id;
                        tracing::warn!(operation = %id, error = %e, "callback state not saved");
                    }
                });
            }
            Ok(()) => {}
            // Left pending: the next start resumes it.
            Err(e) => {
                let id = &record.operation.id;
                tracing::warn!(operation = %id, error = %e, "operation interrupted");
            }
        }
    }

    async fn finish_turn(&self, record: &mut Record) -> Result<(), EngineError> {
        if record.operation.done {
            return Ok(());
        }
        let result = match self.engine.converse(record.turn_request()).await {
            Ok(outcome) => OperationResult::Outcome(Box::new(outcome)),
            // Not the turn's outcome: it resumes after the restart.
            Err(EngineError::ShuttingDown) => return Err(EngineError::ShuttingDown),
            Err(e) => OperationResult::Failed(Failure::from(e)),
        };
        let operation = &mut record.operation;
        operation.done = true;
        operation.result = Some(result);
        operation.update_time = Time::now();
        Ok(self.save(record).await?)
    }

    async fn deliver(&self, record: &mut Record) -> Result<(), StoreError> {
        let operation = &mut record.operation;
        let delivery = match (self.callback_body)(operation) {
            Ok(body) => {
                let url = &operation.callback_url;
                let attempts = operation.callback_attempts;
                self.webhooks
                    .deliver(url, &operation.name(), &body, attempts)
                    .await
            }
            Err(e) => {
                tracing::error!(operation = %operation.id, error = %e, "cannot render a callback");
                webhook::Delivery {
                    delivered: false,
                    attempts: operation.callback_attempts,
                }
            }
        };
        operation.callback_attempts = delivery.attempts;
        operation.callback_state = if delivery.delivered {
            CallbackState::Delivered
        } else {
            CallbackState::Failed
        };
        operation.update_time = Time::now();
        self.save(record).await
    }
}
