//! Scenario (a)'s baseline: a bare tonic server answering Converse with a
//! reply of the same shape and size as dialogd's echo backend gives — no
//! store, no engine, no layers. The ceiling of this stack on this machine.

use dialogd::pb::dialogue::v1 as pb;
use dialogd::pb::dialogue::v1::dialogue_service_server::{DialogueService, DialogueServiceServer};
use std::net::SocketAddr;
use tonic::{Request, Response, Status};

struct BareEcho;

fn turn(index: i64, role: pb::Role, text: String) -> pb::Turn {
    pb::Turn {
        name: format!("dialogues/bench/turns/{index}"),
        turn_id: index.to_string(),
        index,
        role: role.into(),
        content: vec![pb::ContentPart {
            kind: Some(pb::content_part::Kind::Text(text)),
        }],
        create_time: Some(dialogd::grpc::convert::time_to_pb(
            dialogd::dialogue::model::Time::now(),
        )),
        model: "echo".into(),
        ..Default::default()
    }
}

#[tonic::async_trait]
impl DialogueService for BareEcho {
    async fn converse(
        &self,
        request: Request<pb::ConverseRequest>,
    ) -> Result<Response<pb::ConverseResponse>, Status> {
        let request = request.into_inner();
        let text = request
            .content
            .iter()
            .filter_map(|c| match &c.kind {
                Some(pb::content_part::Kind::Text(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect::<String>();
        let reply = format!("echo: {text}");
        Ok(Response::new(pb::ConverseResponse {
            name: request.name.clone(),
            dialogue_id: request.name.trim_start_matches("dialogues/").into(),
            user_turn: Some(turn(0, pb::Role::User, text)),
            turn: Some(turn(1, pb::Role::Assistant, reply)),
            finish_reason: pb::FinishReason::Stop.into(),
            usage: Some(pb::Usage {
                prompt_tokens: 4,
                completion_tokens: 5,
                total_tokens: 9,
            }),
            metadata: Some(pb::ResponseMetadata {
                model: "echo".into(),
                backend: "echo".into(),
                ..Default::default()
            }),
            logprobs: Vec::new(),
        }))
    }

    type ConverseStreamStream = tokio_stream::Empty<Result<pb::ConverseStreamResponse, Status>>;
    type ResumeStreamStream = tokio_stream::Empty<Result<pb::ConverseStreamResponse, Status>>;
    type WatchOperationStream = tokio_stream::Empty<Result<pb::Operation, Status>>;

    async fn submit_turn(
        &self,
        _: Request<pb::SubmitTurnRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        Err(Status::unimplemented("baseline serves Converse only"))
    }

    async fn get_operation(
        &self,
        _: Request<pb::GetOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        Err(Status::unimplemented("baseline serves Converse only"))
    }

    async fn watch_operation(
        &self,
        _: Request<pb::GetOperationRequest>,
    ) -> Result<Response<Self::WatchOperationStream>, Status> {
        Err(Status::unimplemented("baseline serves Converse only"))
    }

    async fn resume_stream(
        &self,
        _: Request<pb::ResumeStreamRequest>,
    ) -> Result<Response<Self::ResumeStreamStream>, Status> {
        Err(Status::unimplemented("baseline serves Converse only"))
    }

    async fn converse_stream(
        &self,
        _: Request<pb::ConverseRequest>,
    ) -> Result<Response<Self::ConverseStreamStream>, Status> {
        Err(Status::unimplemented("baseline serves Converse only"))
    }

    async fn create_dialogue(
        &self,
        _: Request<pb::CreateDialogueRequest>,
    ) -> Result<Response<pb::Dialogue>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn get_dialogue(
        &self,
        _: Request<pb::GetDialogueRequest>,
    ) -> Result<Response<pb::Dialogue>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn list_dialogues(
        &self,
        _: Request<pb::ListDialoguesRequest>,
    ) -> Result<Response<pb::ListDialoguesResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn update_dialogue(
        &self,
        _: Request<pb::UpdateDialogueRequest>,
    ) -> Result<Response<pb::Dialogue>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn batch_converse(
        &self,
        _: Request<pb::BatchConverseRequest>,
    ) -> Result<Response<pb::BatchConverseResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn delete_dialogue(
        &self,
        _: Request<pb::DeleteDialogueRequest>,
    ) -> Result<Response<pbjson_types::Empty>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn list_turns(
        &self,
        _: Request<pb::ListTurnsRequest>,
    ) -> Result<Response<pb::ListTurnsResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
}

/// Serves until the process is killed; prints `listening on ADDR` first.
pub async fn serve(listen: SocketAddr) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    tonic::transport::Server::builder()
        .add_service(DialogueServiceServer::new(BareEcho))
        .serve_with_incoming(
            // As dialogd does: small answers must not wait on Nagle.
            tokio_stream::StreamExt::map(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                |conn| {
                    if let Ok(tcp) = &conn {
                        let _ = tcp.set_nodelay(true);
                    }
                    conn
                },
            ),
        )
        .await
        .map_err(|e| e.to_string())
}
