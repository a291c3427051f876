//! `dialogue.v1.DialogueService`: each handler reads the call's context
//! from the gRPC request and runs the dialogue call (`dialogue_calls`).

use super::dialogue_calls::{CallContext, DialogueCalls, Messages};
use crate::grpc::pb::dialogue::v1 as pb;
use crate::grpc::pb::dialogue::v1::dialogue_service_server::DialogueService;
use tonic::{Request, Response, Status};

#[derive(Clone)]
pub struct DialogueGrpc {
    calls: DialogueCalls,
}

impl DialogueGrpc {
    pub fn new(calls: DialogueCalls) -> DialogueGrpc {
        DialogueGrpc { calls }
    }
}

/// The call's context and message.
fn parts<T>(request: Request<T>) -> Result<(CallContext, T), Status> {
    let cx = CallContext::new(request.metadata().as_ref(), request.extensions())?;
    Ok((cx, request.into_inner()))
}

type Events = Messages<pb::ConverseStreamResponse>;

#[tonic::async_trait]
impl DialogueService for DialogueGrpc {
    async fn create_dialogue(
        &self,
        request: Request<pb::CreateDialogueRequest>,
    ) -> Result<Response<pb::Dialogue>, Status> {
        let (cx, req) = parts(request)?;
        Ok(Response::new(self.calls.create_dialogue(&cx, req).await?))
    }

    async fn get_dialogue(
        &self,
        request: Request<pb::GetDialogueRequest>,
    ) -> Result<Response<pb::Dialogue>, Status> {
        let (cx, req) = parts(request)?;
        Ok(Response::new(self.calls.get_dialogue(&cx, req).await?))
    }

    async fn list_dialogues(
        &self,
        request: Request<pb::ListDialoguesRequest>,
    ) -> Result<Response<pb::ListDialoguesResponse>, Status> {
        let (cx, req) = parts(request)?;
        Ok(Response::new(self.calls.list_dialogues(&cx, req).await?))
    }

    async fn update_dialogue(
        &self,
        request: Request<pb::UpdateDialogueRequest>,
    ) -> Result<Response<pb::Dialogue>, Status> {
        let (cx, req) = parts(request)?;
        Ok(Response::new(self.calls.update_dialogue(&cx, req).await?))
    }

    async fn delete_dialogue(
        &self,
        request: Request<pb::DeleteDialogueRequest>,
    ) -> Result<Response<pbjson_types::Empty>, Status> {
        let (cx, req) = parts(request)?;
        Ok(Response::new(self.calls.delete_dialogue(&cx, req).await?))
    }

    async fn list_turns(
        &self,
        request: Request<pb::ListTurnsRequest>,
    ) -> Result<Response<pb::ListTurnsResponse>, Status> {
        let (cx, req) = parts(request)?;
        Ok(Response::new(self.calls.list_turns(&cx, req).await?))
    }

    async fn converse(
        &self,
        request: Request<pb::ConverseRequest>,
    ) -> Result<Response<pb::ConverseResponse>, Status> {
        let (cx, req) = parts(request)?;
        Ok(Response::new(self.calls.converse(&cx, req).await?))
    }

    type ConverseStreamStream = Events;

    async fn converse_stream(
        &self,
        request: Request<pb::ConverseRequest>,
    ) -> Result<Response<Events>, Status> {
        let (cx, req) = parts(request)?;
        Ok(Response::new(self.calls.converse_stream(&cx, req).await?))
    }

    async fn batch_converse(
        &self,
        request: Request<pb::BatchConverseRequest>,
    ) -> Result<Response<pb::BatchConverseResponse>, Status> {
        let (cx, req) = parts(request)?;
        Ok(Response::new(self.calls.batch_converse(&cx, req).await?))
    }

    type ResumeStreamStream = Events;

    async fn resume_stream(
        &self,
        request: Request<pb::ResumeStreamRequest>,
    ) -> Result<Response<Events>, Status> {
        let (cx, req) = parts(request)?;
        Ok(Response::new(self.calls.resume_stream(&cx, req).await?))
    }

    async fn submit_turn(
        &self,
        request: Request<pb::SubmitTurnRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let (cx, req) = parts(request)?;
        Ok(Response::new(self.calls.submit_turn(&cx, req).await?))
    }

    async fn get_operation(
        &self,
        request: Request<pb::GetOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let (cx, req) = parts(request)?;
        Ok(Response::new(self.calls.get_operation(&cx, req).await?))
    }

    type WatchOperationStream = Messages<pb::Operation>;

    async fn watch_operation(
        &self,
        request: Request<pb::GetOperationRequest>,
    ) -> Result<Response<Self::WatchOperationStream>, Status> {
        let (cx, req) = parts(request)?;
        Ok(Response::new(self.calls.watch_operation(&cx, req).await?))
    }
}
