//! OpenAI's Conversations API over dialogues: a conversation *is* a
//! dialogue (`conv_…` is its ID; `metadata` its labels), with the same
//! owner rules, expiry, erasure and audit; its items are its turns read as
//! Responses items (a user turn's text and images as a `message`, its tool
//! results as `function_call_output`s; a reply's text as a `message`, its
//! calls as `function_call`s). `responses.create(conversation=…)` appends
//! to it, and gRPC, REST and the other fronts continue it as any dialogue.
//!
//! Items are added by responses: `POST …/items` and initial `items` are
//! refused (a turn without its reply is not stored), as is deleting an
//! item other than through its response (`DELETE /v1/responses/{id}`).

use super::error::{self, ErrorShape};
use super::request_json::{Obj, invalid};
use super::responses::turn_items as render_items;
use super::{Front, caller_of};
use crate::auth::Principal;
use crate::dialogue::model::{DialogueId, DialogueSpec, Expiration, TurnView, UpdateMask};
use crate::failure::{ErrorKind, Failure};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
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
            if body.array("items")?.is_some_and(|items| !items.is_empty()) {
                return Err(Failure::new(
                    ErrorKind::FailedPrecondition,
                    "ITEMS_NEED_A_RESPONSE",
                    "items: a conversation's items are added by its responses; send them as input to responses.create(conversation=…)",
                )
                .into());
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

/// `GET /v1/conversations/{id}/items?limit=&order=&after=`.
pub async fn list_items(front: &Front, id: &str, request: Request) -> Response {
    let query: Map<String, Value> = request
        .uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|pair| pair.split_once('='))
                .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let caller = caller_of(&request);
    drop(request);
    answer(
        async {
            let caller = caller?;
            let limit = match query.get("limit").and_then(Value::as_str) {
                None => 20,
                Some(n) => n
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=100).contains(n))
                    .ok_or_else(|| invalid("limit", "must be 1 to 100"))?,
            };
            let descending = match query.get("order").and_then(Value::as_str) {
                None | Some("desc") => true,
                Some("asc") => false,
                Some(_) => return Err(invalid("order", "must be asc or desc")),
            };
            if query.contains_key("after") || query.contains_key("include") {
                return Err(invalid("after", "paging by item is not supported yet; raise limit (up to 100)"));
            }
            let dialogue = conversation_id(id)?;
            let (found, _) = front
                .engine
                .get_dialogue(&caller, &dialogue, None, 0, TurnView::Basic)
                .await
                .map_err(Status::from)?;
            // Newest first: the last turns that can hold `limit` items (a
            // turn holds one or more); oldest first: the first ones.
            let from = match descending {
                true => found.turn_count.saturating_sub(limit as u64),
                false => 0,
            };
            let scope = format!("{}/turns", dialogue.resource_name());
            let token = match from {
                0 => String::new(),
                n => crate::dialogue::page_token::encode(&scope, &n.to_be_bytes()),
            };
            let page = front
                .engine
                .list_turns(&caller, &dialogue, limit, &token, TurnView::Basic)
                .await
                .map_err(Status::from)?;
            let mut data: Vec<Value> = page.items.iter().flat_map(render_items).collect();
            let listed = from + page.items.len() as u64;
            let has_more = data.len() > limit
                || match descending {
                    true => from > 0,
                    false => listed < found.turn_count,
                };
            if descending {
                data.reverse();
            }
            data.truncate(limit);
            let first = data.first().map(|i| i["id"].clone()).unwrap_or(Value::Null);
            let last = data.last().map(|i| i["id"].clone()).unwrap_or(Value::Null);
            Ok(json!({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": has_more}))
        }
        .await,
    )
}

/// `GET /v1/conversations/{id}/items/{item_id}`: `msg_{turn}` names the
/// message of a turn.
pub async fn get_item(front: &Front, id: &str, item: &str, request: Request) -> Response {
    let caller = caller_of(&request);
    drop(request);
    answer(
        async {
            let caller = caller?;
            let not_found = || -> Status {
                Failure::new(
                    ErrorKind::NotFound,
                    "ITEM_NOT_FOUND",
                    format!("no item {item:?} in conversation {id:?}"),
                )
                .into()
            };
            let index: u64 = item
                .strip_prefix("msg_")
                .and_then(|n| n.parse().ok())
                .ok_or_else(not_found)?;
            let dialogue = conversation_id(id)?;
            let scope = format!("{}/turns", dialogue.resource_name());
            let token = crate::dialogue::page_token::encode(&scope, &index.to_be_bytes());
            let page = front
                .engine
                .list_turns(&caller, &dialogue, 1, &token, TurnView::Basic)
                .await
                .map_err(Status::from)?;
            page.items
                .iter()
                .filter(|t| t.index == index)
                .flat_map(render_items)
                .find(|i| i["id"] == item)
                .ok_or_else(not_found)
        }
        .await,
    )
}

/// What adds or removes single items: refused, naming the way that works.
pub fn items_changed_refused(what: &str) -> Response {
    openai_error(
        &Failure::new(
            ErrorKind::FailedPrecondition,
            "ITEMS_NEED_A_RESPONSE",
            format!("{what}: a conversation's items change with its responses — add them as input to responses.create(conversation=…), remove the latest with DELETE /v1/responses/{{id}}"),
        )
        .into(),
    )
}
