//! Asynchronous turns (SubmitTurn, GetOperation, WatchOperation): a turn
//! is accepted at once as an operation, runs through the engine like any
//! Converse, and its outcome is kept with the operation and POSTed to the
//! callback URL if one was given. Operations are stored (opaque records in
//! the dialogue store), so a restart resumes the pending ones: their turn
//! carries the operation ID as its idempotency key, so one that was stored
//! before the restart is replayed, never run twice.

pub mod webhook;

/// Where operation records are kept (the stores implement it); a record is
/// opaque to the store.
#[async_trait::async_trait]
pub trait OperationStore: Send + Sync + 'static {
    /// Stores a record, durably; while `pending` it is listed by
    /// `pending_operations`.
    async fn put_operation(&self, id: &str, record: &[u8], pending: bool)
    -> Result<(), StoreError>;

    async fn get_operation(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The records last put with `pending` (at start-up: work to resume).
    async fn pending_operations(&self) -> Result<Vec<Vec<u8>>, StoreError>;
}

use crate::auth::{Principal, Role};
use crate::dialogue::engine::{Engine, EngineError};
use crate::dialogue::model::{Owner, Time};
use crate::dialogue::ports::StoreError;
use crate::failure::Failure;
use crate::grpc::convert;
use crate::pb::dialogue::v1 as pb;
use pb::CallbackState;
use prost::Message;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;
use tonic::Status;
use webhook::Webhooks;

/// How often WatchOperation looks for a change (the record may be changed
/// by another replica, so it reads the store).
const WATCH_EVERY: Duration = Duration::from_millis(100);

/// What is stored per operation.
#[derive(Serialize, Deserialize)]
struct Record {
    /// `Owner::key()` of the submitter: only it reads the operation.
    owner_key: String,
    principal: String,
    tenant: String,
    roles: Vec<Role>,
    /// The turn, as submitted (protobuf).
    turn: Vec<u8>,
    /// The public view (protobuf `Operation`).
    operation: Vec<u8>,
}

pub struct Operations {
    engine: Arc<Engine>,
    store: Arc<dyn OperationStore>,
    webhooks: Webhooks,
    /// The server's tasks: shutdown waits for running turns.
    tasks: TaskTracker,
}

fn stored(e: StoreError) -> Status {
    Status::from(EngineError::from(e))
}

fn operation_id(name: &str) -> Result<&str, Status> {
    name.strip_prefix("operations/")
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .ok_or_else(|| {
            EngineError::invalid(
                "name",
                format!("must look like operations/{{id}}, got {name:?}"),
            )
            .into()
        })
}

impl Operations {
    pub fn new(
        engine: Arc<Engine>,
        store: Arc<dyn OperationStore>,
        webhooks: Webhooks,
        tasks: TaskTracker,
    ) -> Arc<Operations> {
        Arc::new(Operations {
            engine,
            store,
            webhooks,
            tasks,
        })
    }

    /// Accepts a turn as a new operation and starts it.
    pub async fn submit(
        self: &Arc<Self>,
        caller: Principal,
        request: pb::SubmitTurnRequest,
    ) -> Result<pb::Operation, Status> {
        let mut turn = request
            .turn
            .ok_or_else(|| Status::from(EngineError::invalid("turn", "is required")))?;
        let callback_url = request.callback_url;
        if !callback_url.is_empty() {
            let url = reqwest::Url::parse(&callback_url).map_err(|e| {
                Status::from(EngineError::invalid(
                    "callback_url",
                    format!("is not a URL: {e}"),
                ))
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(EngineError::invalid("callback_url", "must be http or https").into());
            }
            if !self.webhooks.allows(url.host_str().unwrap_or("")) {
                return Err(EngineError::invalid(
                    "callback_url",
                    "names a host outside webhooks.allowed_hosts",
                )
                .into());
            }
            if !self.webhooks.enabled() {
                return Err(Status::failed_precondition(
                    "callbacks need a signing secret: set webhooks.secret_env",
                ));
            }
        }
        let id = format!("op-{:032x}", rand::random::<u128>());
        if turn.request_id.is_empty() {
            turn.request_id = id.clone();
        }
        // Refuse a bad turn now, not in the operation.
        let checked = convert::turn_request(turn.clone(), caller.clone(), None)?;
        self.engine.check_turn_request(&checked)?;
        let now = convert::time_to_pb(Time::now());
        let operation = pb::Operation {
            name: format!("operations/{id}"),
            done: false,
            result: None,
            create_time: Some(now),
            update_time: Some(now),
            callback_state: if callback_url.is_empty() {
                CallbackState::None
            } else {
                CallbackState::Pending
            } as i32,
            callback_url,
            callback_attempts: 0,
        };
        let record = Record {
            owner_key: Owner::of(&caller).key(),
            principal: caller.id.clone(),
            tenant: caller.tenant.clone(),
            roles: caller.roles.iter().copied().collect(),
            turn: turn.encode_to_vec(),
            operation: operation.encode_to_vec(),
        };
        self.save(&id, &record, true).await?;
        self.tasks.spawn(self.clone().run(id, record));
        Ok(operation)
    }

    async fn save(&self, id: &str, record: &Record, pending: bool) -> Result<(), Status> {
        let bytes = serde_json::to_vec(record)
            .map_err(|e| Status::internal(format!("cannot encode an operation: {e}")))?;
        self.store
            .put_operation(id, &bytes, pending)
            .await
            .map_err(stored)
    }

    async fn load(&self, id: &str) -> Result<Option<Record>, Status> {
        let Some(bytes) = self.store.get_operation(id).await.map_err(stored)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| stored(StoreError::Corrupt(format!("operation {id}: {e}"))))
    }

    /// The caller's operation `name`; someone else's is NOT_FOUND.
    pub async fn get(&self, caller: &Principal, name: &str) -> Result<pb::Operation, Status> {
        let id = operation_id(name)?;
        match self.load(id).await? {
            Some(record) if record.owner_key == Owner::of(caller).key() => decode_view(&record),
            _ => Err(Status::not_found(format!("{name} not found"))),
        }
    }

    /// The operation now and at each change, until it is settled.
    pub async fn watch(
        self: &Arc<Self>,
        caller: &Principal,
        name: &str,
    ) -> Result<mpsc::Receiver<Result<pb::Operation, Status>>, Status> {
        let first = self.get(caller, name).await?;
        let (tx, rx) = mpsc::channel(8);
        let (operations, caller, name) = (self.clone(), caller.clone(), name.to_owned());
        tokio::spawn(async move {
            let mut last = first;
            if tx.send(Ok(last.clone())).await.is_err() {
                return;
            }
            while !settled(&last) {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(WATCH_EVERY) => {}
                }
                let now = operations.get(&caller, &name).await;
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
            let Ok(view) = decode_view(&record) else {
                continue;
            };
            let Some(id) = view.name.strip_prefix("operations/").map(str::to_owned) else {
                continue;
            };
            let operations = self.clone();
            self.tasks.spawn(operations.run(id, record));
            resumed += 1;
        }
        Ok(resumed)
    }

    /// Runs the turn unless it is done, then delivers the callback unless
    /// settled, saving the record after each step. The delivery runs apart
    /// from the engine's tasks, so its retries never hold up a shutdown
    /// (an undelivered callback stays pending and resumes at the next start).
    async fn run(self: Arc<Self>, id: String, mut record: Record) {
        match self.finish_turn(&id, &mut record).await {
            Ok(view) if !settled(&view) => {
                tokio::spawn(async move {
                    if let Err(e) = self.deliver(&id, &mut record, view).await {
                        tracing::warn!(operation = %id, error = %e.message(), "callback state not saved");
                    }
                });
            }
            Ok(_) => {}
            // Left pending: the next start resumes it.
            Err(e) => {
                tracing::warn!(operation = %id, error = %e.message(), "operation interrupted")
            }
        }
    }

    async fn finish_turn(&self, id: &str, record: &mut Record) -> Result<pb::Operation, Status> {
        let mut view = decode_view(record)?;
        if !view.done {
            let turn = pb::ConverseRequest::decode(record.turn.as_slice())
                .map_err(|e| stored(StoreError::Corrupt(format!("operation {id}: {e}"))))?;
            let caller = Principal::new(
                record.principal.clone(),
                record.tenant.clone(),
                record.roles.iter().copied().collect(),
                None,
            );
            let turn = convert::turn_request(turn, caller, None)?;
            let result = match self.engine.converse(turn).await {
                Ok(outcome) => pb::operation::Result::Response(convert::outcome_to_pb(outcome)),
                // Not the turn's outcome: it resumes after the restart.
                Err(EngineError::ShuttingDown) => return Err(Status::unavailable("shutting down")),
                Err(e) => {
                    pb::operation::Result::Error(crate::grpc::status::turn_error(&Failure::from(e)))
                }
            };
            view.done = true;
            view.result = Some(result);
            view.update_time = Some(convert::time_to_pb(Time::now()));
            record.operation = view.encode_to_vec();
            self.save(id, record, !settled(&view)).await?;
        }
        Ok(view)
    }

    async fn deliver(
        &self,
        id: &str,
        record: &mut Record,
        mut view: pb::Operation,
    ) -> Result<(), Status> {
        let body = serde_json::to_vec(&view)
            .map_err(|e| Status::internal(format!("cannot encode an operation: {e}")))?;
        let delivery = self
            .webhooks
            .deliver(
                &view.callback_url,
                &view.name,
                &body,
                u32::try_from(view.callback_attempts).unwrap_or(0),
            )
            .await;
        view.callback_attempts = i32::try_from(delivery.attempts).unwrap_or(i32::MAX);
        view.callback_state = if delivery.delivered {
            CallbackState::Delivered
        } else {
            CallbackState::Failed
        } as i32;
        view.update_time = Some(convert::time_to_pb(Time::now()));
        record.operation = view.encode_to_vec();
        self.save(id, record, false).await
    }
}

fn decode_view(record: &Record) -> Result<pb::Operation, Status> {
    pb::Operation::decode(record.operation.as_slice())
        .map_err(|e| stored(StoreError::Corrupt(format!("an operation: {e}"))))
}

/// Done, and its callback (if any) delivered or given up.
fn settled(op: &pb::Operation) -> bool {
    op.done && op.callback_state() != CallbackState::Pending
}
