//! The dialogue calls on protobuf messages: convert the request into
//! domain types, call the engine (or the operations), convert back. The
//! gRPC service and the REST routes both run these, each having read the
//! call's context (caller, audit notes, deadline) from its own request.

use super::convert;
use crate::audit::AuditNotes;
use crate::auth::{AuthError, Principal};
use crate::dialogue::model::TurnView;
use crate::engine::{Engine, EngineError, Events};
use crate::failure::{Failure, Violations};
use crate::grpc::pb::dialogue::v1 as pb;
use crate::operations::Operations;
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

/// A stream of a call's messages.
pub type Messages<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// What a call knows besides its message.
pub struct CallContext {
    pub caller: Principal,
    /// Where the call tells the audit layer which resource it is on.
    pub notes: AuditNotes,
    /// When the caller stops waiting (`grpc-timeout`), if it said.
    pub deadline: Option<Instant>,
}

impl CallContext {
    /// From a call's headers and the extensions the layers set.
    pub fn new(
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
    ) -> Result<CallContext, AuthError> {
        Ok(CallContext {
            caller: extensions
                .get::<Principal>()
                .cloned()
                .ok_or(AuthError::Missing)?,
            notes: extensions.get::<AuditNotes>().cloned().unwrap_or_default(),
            deadline: convert::deadline(headers),
        })
    }
}

#[derive(Clone)]
pub struct DialogueCalls {
    engine: Arc<Engine>,
    operations: Arc<Operations>,
    /// Request-rate limits: a batch pays one request per turn.
    limits: Arc<crate::limits::RateLimits>,
}

impl DialogueCalls {
    pub fn new(
        engine: Arc<Engine>,
        operations: Arc<Operations>,
        limits: Arc<crate::limits::RateLimits>,
    ) -> DialogueCalls {
        DialogueCalls {
            engine,
            operations,
            limits,
        }
    }

    pub async fn create_dialogue(
        &self,
        cx: &CallContext,
        req: pb::CreateDialogueRequest,
    ) -> Result<pb::Dialogue, Status> {
        let dialogue = req.dialogue.unwrap_or_default();
        let mut v = Violations::default();
        let id =
            convert::optional_dialogue_id(&dialogue.dialogue_id, "dialogue.dialogue_id", &mut v);
        let spec = convert::dialogue_spec(dialogue, "dialogue", &mut v);
        let spec = v.into_result(spec)?;
        let created = self.engine.create_dialogue(&cx.caller, id, spec).await?;
        cx.notes.set_resource(&created.id.resource_name());
        Ok(convert::dialogue_to_pb(&created, &[], TurnView::Basic))
    }

    pub async fn get_dialogue(
        &self,
        cx: &CallContext,
        req: pb::GetDialogueRequest,
    ) -> Result<pb::Dialogue, Status> {
        let id = convert::dialogue_id_from_name(&req.name, "name")?;
        let last_turns = usize::try_from(req.last_turns)
            .ok()
            .filter(|&n| n <= 1000)
            .ok_or_else(|| EngineError::invalid("last_turns", "must be 0 to 1000"))?;
        let view = convert::turn_view(req.view, "view")?;
        let owner = req.owner.map(convert::owner_from_pb);
        let (dialogue, turns) = self
            .engine
            .get_dialogue(&cx.caller, &id, owner.as_ref(), last_turns, view)
            .await?;
        Ok(convert::dialogue_to_pb(&dialogue, &turns, view))
    }

    pub async fn list_dialogues(
        &self,
        cx: &CallContext,
        req: pb::ListDialoguesRequest,
    ) -> Result<pb::ListDialoguesResponse, Status> {
        let page_size = convert::page_size(req.page_size)?;
        let page = self
            .engine
            .list_dialogues(&cx.caller, page_size, &req.page_token)
            .await?;
        Ok(pb::ListDialoguesResponse {
            dialogues: page
                .items
                .iter()
                .map(|d| convert::dialogue_to_pb(d, &[], TurnView::Basic))
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        })
    }

    pub async fn update_dialogue(
        &self,
        cx: &CallContext,
        req: pb::UpdateDialogueRequest,
    ) -> Result<pb::Dialogue, Status> {
        let dialogue = req.dialogue.unwrap_or_default();
        cx.notes.set_resource(&dialogue.name);
        let mask = convert::update_mask(req.update_mask)?;
        let id = convert::dialogue_id_from_name(&dialogue.name, "dialogue.name")?;
        let mut v = Violations::default();
        let spec = convert::dialogue_spec(dialogue, "dialogue", &mut v);
        let spec = v.into_result(spec)?;
        let updated = self
            .engine
            .update_dialogue(&cx.caller, &id, spec, mask)
            .await?;
        Ok(convert::dialogue_to_pb(&updated, &[], TurnView::Basic))
    }

    pub async fn delete_dialogue(
        &self,
        cx: &CallContext,
        req: pb::DeleteDialogueRequest,
    ) -> Result<pbjson_types::Empty, Status> {
        cx.notes.set_resource(&req.name);
        let id = convert::dialogue_id_from_name(&req.name, "name")?;
        self.engine.delete_dialogue(&cx.caller, &id).await?;
        Ok(pbjson_types::Empty {})
    }

    pub async fn list_turns(
        &self,
        cx: &CallContext,
        req: pb::ListTurnsRequest,
    ) -> Result<pb::ListTurnsResponse, Status> {
        let id = convert::dialogue_id_from_name(&req.parent, "parent")?;
        let page_size = convert::page_size(req.page_size)?;
        let view = convert::turn_view(req.view, "view")?;
        let page = self
            .engine
            .list_turns(&cx.caller, &id, page_size, &req.page_token, view)
            .await?;
        Ok(pb::ListTurnsResponse {
            turns: page
                .items
                .iter()
                .map(|t| convert::turn_to_pb(&id, t, view))
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        })
    }

    pub async fn converse(
        &self,
        cx: &CallContext,
        req: pb::ConverseRequest,
    ) -> Result<pb::ConverseResponse, Status> {
        cx.notes.set_resource(&req.name);
        let turn = convert::turn_request(req, cx.caller.clone(), cx.deadline)?;
        let outcome = self.engine.converse(turn).await?;
        Ok(convert::outcome_to_pb(outcome))
    }

    /// Counts one more request of the caller (a turn over a WebSocket,
    /// whose upgrade was counted at the door).
    pub async fn charge_turn(&self, cx: &CallContext) -> Result<(), Status> {
        let key = crate::limits::caller_key(&cx.caller.tenant, &cx.caller.id);
        self.limits.charge_more(&key, 1).await.map_err(Status::from)
    }

    pub async fn converse_stream(
        &self,
        cx: &CallContext,
        req: pb::ConverseRequest,
    ) -> Result<Messages<pb::ConverseStreamResponse>, Status> {
        cx.notes.set_resource(&req.name);
        let turn = convert::turn_request(req, cx.caller.clone(), cx.deadline)?;
        event_messages(self.engine.converse_stream(turn)).await
    }

    pub async fn batch_converse(
        &self,
        cx: &CallContext,
        req: pb::BatchConverseRequest,
    ) -> Result<pb::BatchConverseResponse, Status> {
        // One request per turn: the call itself was counted at the door.
        let turns = req.requests.len();
        if (2..=crate::engine::MAX_BATCH).contains(&turns) {
            let key = crate::limits::caller_key(&cx.caller.tenant, &cx.caller.id);
            self.limits
                .charge_more(&key, (turns - 1) as u32)
                .await
                .map_err(Status::from)?;
        }
        let entries = req
            .requests
            .into_iter()
            .map(|r| convert::turn_request(r, cx.caller.clone(), cx.deadline))
            .collect();
        let results = self
            .engine
            .converse_batch(entries)
            .await?
            .into_iter()
            .map(|outcome| pb::BatchConverseResult {
                result: Some(match outcome {
                    Ok(o) => pb::batch_converse_result::Result::Response(convert::outcome_to_pb(o)),
                    Err(e) => pb::batch_converse_result::Result::Error(super::status::turn_error(
                        &Failure::from(e),
                    )),
                }),
            })
            .collect();
        Ok(pb::BatchConverseResponse { results })
    }

    pub async fn resume_stream(
        &self,
        cx: &CallContext,
        req: pb::ResumeStreamRequest,
    ) -> Result<Messages<pb::ConverseStreamResponse>, Status> {
        let (id, index) = convert::turn_name(&req.name, "name")?;
        let offset = u64::try_from(req.offset)
            .map_err(|_| EngineError::invalid("offset", "must not be negative"))?;
        let events = self
            .engine
            .resume_stream(&cx.caller, &id, index, offset)
            .await?;
        event_messages(events).await
    }

    pub async fn submit_turn(
        &self,
        cx: &CallContext,
        req: pb::SubmitTurnRequest,
    ) -> Result<pb::Operation, Status> {
        let turn = req
            .turn
            .ok_or_else(|| EngineError::invalid("turn", "is required"))?;
        cx.notes.set_resource(&turn.name);
        let turn = convert::turn_request(turn, cx.caller.clone(), None)?;
        let callback_url = Some(req.callback_url).filter(|url| !url.is_empty());
        let priority = convert::priority_from_pb(req.priority)?;
        let operation = self.operations.submit(turn, callback_url, priority).await?;
        Ok(convert::operation_to_pb(&operation))
    }

    pub async fn get_operation(
        &self,
        cx: &CallContext,
        req: pb::GetOperationRequest,
    ) -> Result<pb::Operation, Status> {
        let id = convert::operation_id(&req.name)?;
        let operation = self.operations.get(&cx.caller, id).await?;
        Ok(convert::operation_to_pb(&operation))
    }

    pub async fn watch_operation(
        &self,
        cx: &CallContext,
        req: pb::GetOperationRequest,
    ) -> Result<Messages<pb::Operation>, Status> {
        let id = convert::operation_id(&req.name)?;
        let changes = self.operations.watch(&cx.caller, id).await?;
        let changes = ReceiverStream::new(changes).map(|change| {
            change
                .map(|op| convert::operation_to_pb(&op))
                .map_err(Status::from)
        });
        Ok(Box::pin(changes))
    }
}

/// A streamed turn's events as the messages of a stream.
/// A turn's events as messages, once it started (a refusal before that is
/// the call's error, not a stream).
async fn event_messages(events: Events) -> Result<Messages<pb::ConverseStreamResponse>, Status> {
    let messages = crate::engine::started(events)
        .await?
        .map(|event| event.map(convert::event_to_pb).map_err(Status::from));
    Ok(Box::pin(messages))
}
