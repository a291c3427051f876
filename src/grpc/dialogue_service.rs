//! `dialogue.v1.DialogueService` handlers.

use super::convert;
use crate::dialogue::engine::{Engine, EngineError};
use crate::failure::{Failure, Violations};
use crate::operations::Operations;
use crate::pb::dialogue::v1 as pb;
use crate::pb::dialogue::v1::dialogue_service_server::DialogueService;
use futures_util::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct DialogueGrpc {
    engine: Arc<Engine>,
    operations: Arc<Operations>,
}

impl DialogueGrpc {
    pub fn new(engine: Arc<Engine>, operations: Arc<Operations>) -> DialogueGrpc {
        DialogueGrpc { engine, operations }
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::ConverseStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DialogueService for DialogueGrpc {
    async fn create_dialogue(
        &self,
        request: Request<pb::CreateDialogueRequest>,
    ) -> Result<Response<pb::Dialogue>, Status> {
        let caller = convert::caller(&request)?;
        let notes = convert::audit_notes(&request);
        let dialogue = request.into_inner().dialogue.unwrap_or_default();
        let mut v = Violations::default();
        let id =
            convert::optional_dialogue_id(&dialogue.dialogue_id, "dialogue.dialogue_id", &mut v);
        let spec = convert::dialogue_spec(dialogue, "dialogue", &mut v);
        let spec = v.into_result(spec)?;
        let created = self.engine.create_dialogue(&caller, id, spec).await?;
        notes.set_resource(&created.id.resource_name());
        Ok(Response::new(convert::dialogue_to_pb(&created, &[])))
    }

    async fn get_dialogue(
        &self,
        request: Request<pb::GetDialogueRequest>,
    ) -> Result<Response<pb::Dialogue>, Status> {
        let caller = convert::caller(&request)?;
        let req = request.into_inner();
        let id = convert::dialogue_id_from_name(&req.name, "name")?;
        let last_turns = usize::try_from(req.last_turns)
            .ok()
            .filter(|&n| n <= 1000)
            .ok_or_else(|| {
                crate::dialogue::engine::EngineError::invalid("last_turns", "must be 0 to 1000")
            })?;
        let owner = req.owner.map(convert::owner_from_pb);
        let (dialogue, turns) = self
            .engine
            .get_dialogue(&caller, &id, owner.as_ref(), last_turns)
            .await?;
        Ok(Response::new(convert::dialogue_to_pb(&dialogue, &turns)))
    }

    async fn list_dialogues(
        &self,
        request: Request<pb::ListDialoguesRequest>,
    ) -> Result<Response<pb::ListDialoguesResponse>, Status> {
        let caller = convert::caller(&request)?;
        let req = request.into_inner();
        let page = self
            .engine
            .list_dialogues(&caller, convert::page_size(req.page_size)?, &req.page_token)
            .await?;
        Ok(Response::new(pb::ListDialoguesResponse {
            dialogues: page
                .items
                .iter()
                .map(|d| convert::dialogue_to_pb(d, &[]))
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn update_dialogue(
        &self,
        request: Request<pb::UpdateDialogueRequest>,
    ) -> Result<Response<pb::Dialogue>, Status> {
        let caller = convert::caller(&request)?;
        let name = request
            .get_ref()
            .dialogue
            .as_ref()
            .map_or("", |d| d.name.as_str());
        convert::audit_notes(&request).set_resource(name);
        let req = request.into_inner();
        let mask = convert::update_mask(req.update_mask)?;
        let dialogue = req.dialogue.unwrap_or_default();
        let id = convert::dialogue_id_from_name(&dialogue.name, "dialogue.name")?;
        let mut v = Violations::default();
        let spec = convert::dialogue_spec(dialogue, "dialogue", &mut v);
        let spec = v.into_result(spec)?;
        let updated = self
            .engine
            .update_dialogue(&caller, &id, spec, mask)
            .await?;
        Ok(Response::new(convert::dialogue_to_pb(&updated, &[])))
    }

    async fn delete_dialogue(
        &self,
        request: Request<pb::DeleteDialogueRequest>,
    ) -> Result<Response<pbjson_types::Empty>, Status> {
        let caller = convert::caller(&request)?;
        convert::audit_notes(&request).set_resource(&request.get_ref().name);
        let id = convert::dialogue_id_from_name(&request.into_inner().name, "name")?;
        self.engine.delete_dialogue(&caller, &id).await?;
        Ok(Response::new(pbjson_types::Empty {}))
    }

    async fn list_turns(
        &self,
        request: Request<pb::ListTurnsRequest>,
    ) -> Result<Response<pb::ListTurnsResponse>, Status> {
        let caller = convert::caller(&request)?;
        let req = request.into_inner();
        let id = convert::dialogue_id_from_name(&req.parent, "parent")?;
        let page = self
            .engine
            .list_turns(
                &caller,
                &id,
                convert::page_size(req.page_size)?,
                &req.page_token,
            )
            .await?;
        Ok(Response::new(pb::ListTurnsResponse {
            turns: page
                .items
                .iter()
                .map(|t| convert::turn_to_pb(&id, t))
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }

    async fn converse(
        &self,
        request: Request<pb::ConverseRequest>,
    ) -> Result<Response<pb::ConverseResponse>, Status> {
        let caller = convert::caller(&request)?;
        convert::audit_notes(&request).set_resource(&request.get_ref().name);
        let deadline = convert::deadline(request.metadata());
        let turn = convert::turn_request(request.into_inner(), caller, deadline)?;
        let outcome = self.engine.converse(turn).await?;
        Ok(Response::new(convert::outcome_to_pb(outcome)))
    }

    async fn batch_converse(
        &self,
        request: Request<pb::BatchConverseRequest>,
    ) -> Result<Response<pb::BatchConverseResponse>, Status> {
        let caller = convert::caller(&request)?;
        let deadline = convert::deadline(request.metadata());
        let requests = request.into_inner().requests;
        let entries = requests
            .into_iter()
            .map(|r| convert::turn_request(r, caller.clone(), deadline))
            .collect();
        let results = self
            .engine
            .converse_batch(entries)
            .await?
            .into_iter()
            .map(|outcome| pb::BatchConverseResult {
                result: Some(match outcome {
                    Ok(o) => pb::batch_converse_result::Result::Response(convert::outcome_to_pb(o)),
                    Err(e) => pb::batch_converse_result::Result::Error(
                        crate::grpc::status::turn_error(&Failure::from(e)),
                    ),
                }),
            })
            .collect();
        Ok(Response::new(pb::BatchConverseResponse { results }))
    }

    async fn submit_turn(
        &self,
        request: Request<pb::SubmitTurnRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = convert::caller(&request)?;
        let notes = convert::audit_notes(&request);
        let req = request.into_inner();
        let turn = req
            .turn
            .ok_or_else(|| EngineError::invalid("turn", "is required"))?;
        notes.set_resource(&turn.name);
        let turn = convert::turn_request(turn, caller, None)?;
        let callback_url = Some(req.callback_url).filter(|url| !url.is_empty());
        let operation = self.operations.submit(turn, callback_url).await?;
        Ok(Response::new(convert::operation_to_pb(&operation)))
    }

    async fn get_operation(
        &self,
        request: Request<pb::GetOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = convert::caller(&request)?;
        let id = convert::operation_id(&request.get_ref().name)?;
        let operation = self.operations.get(&caller, id).await?;
        Ok(Response::new(convert::operation_to_pb(&operation)))
    }

    type WatchOperationStream = Pin<Box<dyn Stream<Item = Result<pb::Operation, Status>> + Send>>;

    async fn watch_operation(
        &self,
        request: Request<pb::GetOperationRequest>,
    ) -> Result<Response<Self::WatchOperationStream>, Status> {
        let caller = convert::caller(&request)?;
        let id = convert::operation_id(&request.get_ref().name)?;
        let changes = self.operations.watch(&caller, id).await?;
        let changes = ReceiverStream::new(changes).map(|change| {
            change
                .map(|op| convert::operation_to_pb(&op))
                .map_err(Status::from)
        });
        Ok(Response::new(Box::pin(changes)))
    }

    type ResumeStreamStream = EventStream;

    async fn resume_stream(
        &self,
        request: Request<pb::ResumeStreamRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = convert::caller(&request)?;
        let req = request.into_inner();
        let (id, index) = convert::turn_name(&req.name, "name")?;
        let offset = u64::try_from(req.offset)
            .map_err(|_| EngineError::invalid("offset", "must not be negative"))?;
        let events = self
            .engine
            .resume_stream(&caller, &id, index, offset)
            .await?;
        let events = ReceiverStream::new(events)
            .map(|event| event.map(convert::event_to_pb).map_err(Status::from));
        Ok(Response::new(Box::pin(events)))
    }

    type ConverseStreamStream = EventStream;

    async fn converse_stream(
        &self,
        request: Request<pb::ConverseRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = convert::caller(&request)?;
        convert::audit_notes(&request).set_resource(&request.get_ref().name);
        let deadline = convert::deadline(request.metadata());
        let turn = convert::turn_request(request.into_inner(), caller, deadline)?;
        let events = ReceiverStream::new(self.engine.converse_stream(turn))
            .map(|event| event.map(convert::event_to_pb).map_err(Status::from));
        Ok(Response::new(Box::pin(events)))
    }
}
