//! OpenAI's Conversations API over dialogues: a conversation *is* a
//! dialogue (`conv_…` is its ID; `metadata` its labels), with the same
//! owner rules, expiry, erasure and audit; its items are its turns read as
//! Responses items (a user turn's text and images as a `message`, its tool
//! results as `function_call_output`s; a reply's text as a `message`, its
//! calls as `function_call`s). `responses.create(conversation=…)` appends
//! to it, and gRPC, REST and the other fronts continue it as any dialogue.
//!
//! Items may also be added without a model call (`POST …/items`, initial
//! `items`: see `items`). Deleting a single item is refused, naming the way
//! that works (`DELETE /v1/responses/{id}` for the latest exchange).

pub mod items;

use super::error::{self, ErrorShape};
use super::request_json::{Obj, invalid};
use super::responses;
use super::{Front, caller_of};
use crate::auth::Principal;
use crate::dialogue::model::{DialogueId, DialogueSpec, Expiration, TurnView, UpdateMask};
use crate::failure::{ErrorKind, Failure};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use tonic::Status;

fn openai_error(status: &Status) -> Response {
    error::response(ErrorShape::OpenAi, status).into_response()
}

fn answer(result: Result<Value, Status>) -> Response {
    match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(status) => openai_error(&status),
    }
}

fn conversation_id(id: &str) -> Result<DialogueId, Status> {
    DialogueId::parse(id).map_err(|e| invalid("conversation_id", e))
}

fn conversation(dialogue: &crate::dialogue::model::Dialogue) -> Value {
    json!({
        "id": dialogue.id.public(),
        "object": "conversation",
        "created_at": dialogue.create_time.0 / 1_000_000_000,
        "metadata": dialogue.labels,
    })
}

/// `metadata` as labels (string values only, as OpenAI's).
fn labels(body: &Obj) -> Result<BTreeMap<String, String>, Status> {
    let Some(metadata) = body.obj("metadata")? else {
        return Ok(BTreeMap::new());
    };
    metadata
        .map
        .iter()
        .map(|(key, value)| match value {
            Value::String(s) => Ok((key.clone(), s.clone())),
            _ => Err(invalid(&format!("metadata.{key}"), "must be a string")),
        })
        .collect()
}

async fn body_of(front: &Front, request: Request) -> Result<(Principal, Value), Status> {
    let caller = caller_of(&request)?;
    let bytes = super::read_body(request.into_body(), front.max_body).await?;
    let body = match bytes.is_empty() {
        true => json!({}),
        false => serde_json::from_slice(&bytes)
            .map_err(|e| invalid("body", format!("is not valid JSON: {e}")))?,
    };
    Ok((caller, body))
}

/// `POST /v1/conversations`.
pub async fn create(front: &Front, request: Request) -> Response {
    answer(
        async {
            let (caller, body) = body_of(front, request).await?;
            let body = Obj::new(&body, "")?;
            body.only(&["items", "metadata"])?;
            let initial = body.array("items")?.filter(|items| !items.is_empty());
            if let Some(items) = initial {
                // Refused before anything is created when malformed.
                responses::request::items(items, "items")?;
            }
            let spec = DialogueSpec {
                model: String::new(),
                system_prompt: String::new(),
                labels: labels(&body)?,
                state: None,
                expiration: Expiration::Never,
            };
            let id = DialogueId::parse(&format!("conv_{:032x}", rand::random::<u128>()))
                .map_err(|e| Status::from(Failure::new(ErrorKind::Internal, "BAD_ID", e)))?;
            let dialogue = front
                .engine
                .create_dialogue(&caller, Some(id), spec)
                .await
                .map_err(Status::from)?;
            if let Some(items) = initial
                && let Err(refused) = items::add(front, &caller, &dialogue.id, items).await
            {
                // All or nothing: a conversation whose items were refused goes.
                let _ = front.engine.delete_dialogue(&caller, &dialogue.id).await;
                return Err(refused);
            }
            Ok(conversation(&dialogue))
        }
        .await,
    )
}

/// `GET /v1/conversations/{id}`.
pub async fn get(front: &Front, id: &str, request: Request) -> Response {
    let caller = caller_of(&request);
    drop(request);
    answer(
        async {
            let (dialogue, _) = front
                .engine
                .get_dialogue(&caller?, &conversation_id(id)?, None, 0, TurnView::Basic)
                .await
                .map_err(Status::from)?;
            Ok(conversation(&dialogue))
        }
        .await,
    )
}

/// `POST /v1/conversations/{id}`: replaces its metadata.
pub async fn update(front: &Front, id: &str, request: Request) -> Response {
    answer(
        async {
            let (caller, body) = body_of(front, request).await?;
            let body = Obj::new(&body, "")?;
            body.only(&["metadata"])?;
            let spec = DialogueSpec {
                model: String::new(),
                system_prompt: String::new(),
                labels: labels(&body)?,
                state: None,
                expiration: Expiration::Never,
            };
            let mask = UpdateMask {
                labels: true,
                ..UpdateMask::default()
            };
            let dialogue = front
                .engine
                .update_dialogue(&caller, &conversation_id(id)?, spec, mask)
                .await
                .map_err(Status::from)?;
            Ok(conversation(&dialogue))
        }
        .await,
    )
}

/// `DELETE /v1/conversations/{id}`: erases the dialogue.
pub async fn delete(front: &Front, id: &str, request: Request) -> Response {
    let caller = caller_of(&request);
    drop(request);
    answer(
        async {
            front
                .engine
                .delete_dialogue(&caller?, &conversation_id(id)?)
                .await
                .map_err(Status::from)?;
            Ok(json!({"id": id, "object": "conversation.deleted", "deleted": true}))
        }
        .await,
    )
}
