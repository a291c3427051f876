//! REST/JSON for the dialogue resources, mirroring the proto (AIP-127
//! style): each route builds the request message from the path, the query
//! string and the body — JSON per the protobuf JSON mapping, through serde
//! generated from the same types (pbjson) — and runs the same dialogue call
//! as gRPC (`grpc::dialogue_calls`), so checks, conversions and errors are
//! the gRPC ones.
//!
//! | route | RPC |
//! |---|---|
//! | `POST /v1/dialogues` (body: a Dialogue) | CreateDialogue |
//! | `GET /v1/dialogues?pageSize=&pageToken=` | ListDialogues |
//! | `GET /v1/dialogues/{id}?lastTurns=` | GetDialogue |
//! | `PATCH /v1/dialogues/{id}?updateMask=` (body: a Dialogue) | UpdateDialogue |
//! | `DELETE /v1/dialogues/{id}` | DeleteDialogue |
//! | `GET /v1/dialogues/{id}/turns?pageSize=&pageToken=` | ListTurns |
//! | `POST /v1/dialogues/{id}:converse` (body: a ConverseRequest) | Converse |
//! | `POST /v1/dialogues/{id}:converseStream` | ConverseStream, as Server-Sent Events |
//! | `POST /v1/dialogues:batchConverse` (body: a BatchConverseRequest) | BatchConverse |

use super::error::{self, ErrorShape};
use super::{Front, Response};
use crate::failure::Failure;
use crate::grpc::dialogue_calls::CallContext;
use crate::grpc::pb::dialogue::v1 as pb;
use crate::middleware::rpc_table::Rpc;
use axum::extract::Request;
use axum::response::IntoResponse;
use axum::response::sse::{Event, Sse};
use futures_util::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::convert::Infallible;
use tonic::Status;

fn error_response(status: &Status) -> Response {
    error::response(ErrorShape::Google, status).into_response()
}

fn json_response<T: Serialize>(message: &T) -> Response {
    match super::json_mapping::to_json(message) {
        Ok(json) => axum::Json(json).into_response(),
        Err(e) => error_response(
            &Failure::new(
                crate::failure::ErrorKind::Internal,
                "ENCODING_FAILED",
                format!("cannot encode the answer: {e}"),
            )
            .into(),
        ),
    }
}

/// A request with a body of bad JSON or the wrong shape.
fn bad_body(description: impl Into<String>) -> Status {
    Failure::invalid("body", description).into()
}

/// The call's context and its request message, built from the JSON body
/// (whole, or under `body_field`), the query string and `path_fields`;
/// pbjson accepts lowerCamelCase and proto field names, numbers as strings.
async fn call<T: DeserializeOwned>(
    front: &Front,
    request: Request,
    body_field: Option<&str>,
    path_fields: &[(&str, String)],
) -> Result<(CallContext, T), Status> {
    let (parts, body) = request.into_parts();
    let cx = CallContext::new(&parts.headers, &parts.extensions)?;
    let bytes = super::read_body(body, front.max_body).await?;
    let body: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(&bytes).map_err(|e| bad_body(format!("is not JSON: {e}")))?
    };
    let mut fields = match body_field {
        Some(field) => Map::from_iter([(field.to_owned(), body)]),
        None => match body {
            Value::Object(fields) => fields,
            _ => return Err(bad_body("must be a JSON object")),
        },
    };
    let query = parts.uri.query().unwrap_or("");
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = match key.as_ref() {
            "updateMask" | "update_mask" => field_mask(&value),
            _ => Value::String(value.into_owned()),
        };
        fields.insert(key.into_owned(), value);
    }
    for (key, value) in path_fields {
        fields.insert((*key).to_owned(), Value::String(value.clone()));
    }
    let message = serde_json::from_value(Value::Object(fields))
        .map_err(|e| bad_body(format!("is not a valid request: {e}")))?;
    Ok((cx, message))
}

/// A FieldMask as the JSON mapping writes it ("systemPrompt,state"), in
/// the message form pbjson-types reads (`paths` in proto field names).
fn field_mask(joined: &str) -> Value {
    let snake = |path: &str| {
        path.chars().fold(String::new(), |mut out, c| {
            if c.is_ascii_uppercase() {
                out.push('_');
                out.push(c.to_ascii_lowercase());
            } else {
                out.push(c);
            }
            out
        })
    };
    let paths: Vec<Value> = joined
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| Value::String(snake(p.trim())))
        .collect();
    serde_json::json!({ "paths": paths })
}

/// The answer of a unary call, as JSON or the error.
fn answer<T: Serialize>(result: Result<T, Status>) -> Response {
    match result {
        Ok(message) => json_response(&message),
        Err(status) => error_response(&status),
    }
}

/// How a route builds its request message: the field its body fills
/// (`None`: the body is the whole message) and the field its `{id}` names
/// (as `dialogues/{id}`); the rest come from the query string. The
/// OpenAPI document is generated from the same shapes.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub body: Option<&'static str>,
    pub id: Option<&'static str>,
}

const WHOLE: Shape = Shape {
    body: None,
    id: None,
};
const DIALOGUE_BODY: Shape = Shape {
    body: Some("dialogue"),
    id: None,
};
const NAMED: Shape = Shape {
    body: None,
    id: Some("name"),
};
const PARENT: Shape = Shape {
    body: None,
    id: Some("parent"),
};

/// The shape of each REST route's method.
pub fn shape(rpc: Rpc) -> Option<Shape> {
    Some(match rpc {
        Rpc::CreateDialogue => DIALOGUE_BODY,
        Rpc::UpdateDialogue => Shape {
            body: Some("dialogue"),
            id: Some("dialogue.name"),
        },
        Rpc::ListDialogues | Rpc::BatchConverse => WHOLE,
        Rpc::GetDialogue | Rpc::DeleteDialogue | Rpc::Converse | Rpc::ConverseStream => NAMED,
        Rpc::ListTurns => PARENT,
        _ => return None,
    })
}

/// Builds the call as `shape` says, then runs it.
macro_rules! unary {
    ($front:expr, $request:expr, $shape:expr, $id:expr, $method:ident) => {
        answer(
            async {
                let path: Vec<(&str, String)> = $shape
                    .id
                    .map(|field| (field, name($id)))
                    .into_iter()
                    .collect();
                let (cx, message) = call($front, $request, $shape.body, &path).await?;
                $front.dialogues.$method(&cx, message).await
            }
            .await,
        )
    };
}

fn name(id: &str) -> String {
    format!("dialogues/{id}")
}

pub async fn create(front: &Front, request: Request) -> Response {
    unary!(front, request, DIALOGUE_BODY, "", create_dialogue)
}

pub async fn list(front: &Front, request: Request) -> Response {
    unary!(front, request, WHOLE, "", list_dialogues)
}

pub async fn get(front: &Front, id: &str, request: Request) -> Response {
    unary!(front, request, NAMED, id, get_dialogue)
}

pub async fn delete(front: &Front, id: &str, request: Request) -> Response {
    unary!(front, request, NAMED, id, delete_dialogue)
}

pub async fn list_turns(front: &Front, id: &str, request: Request) -> Response {
    unary!(front, request, PARENT, id, list_turns)
}

pub async fn converse(front: &Front, id: &str, request: Request) -> Response {
    unary!(front, request, NAMED, id, converse)
}

pub async fn batch_converse(front: &Front, request: Request) -> Response {
    unary!(front, request, WHOLE, "", batch_converse)
}

/// The path names the dialogue; a body naming another is refused.
pub async fn update(front: &Front, id: &str, request: Request) -> Response {
    answer(
        async {
            let (cx, mut message) =
                call::<pb::UpdateDialogueRequest>(front, request, DIALOGUE_BODY.body, &[]).await?;
            let dialogue = message.dialogue.get_or_insert_with(Default::default);
            if !dialogue.name.is_empty() && dialogue.name != name(id) {
                let why = "differs from the dialogue in the path";
                return Err(Failure::invalid("dialogue.name", why).into());
            }
            dialogue.name = name(id);
            front.dialogues.update_dialogue(&cx, message).await
        }
        .await,
    )
}

/// ConverseStream as Server-Sent Events: each event is one
/// ConverseStreamResponse as JSON; a failure is a last `error` event in
/// google.rpc's JSON shape.
pub async fn converse_stream(front: &Front, id: &str, request: Request) -> Response {
    let fields = [("name", name(id))];
    let stream = match call::<pb::ConverseRequest>(front, request, NAMED.body, &fields).await {
        Ok((cx, message)) => front.dialogues.converse_stream(&cx, message).await,
        Err(status) => Err(status),
    };
    let stream = match stream {
        Ok(stream) => stream,
        Err(status) => return error_response(&status),
    };
    let error_event = |status: &Status| {
        Event::default()
            .event("error")
            .data(error::body(ErrorShape::Google, status).to_string())
    };
    let events = stream.map(move |item| -> Result<Event, Infallible> {
        Ok(match item {
            Ok(message) => match super::json_mapping::to_json(&message) {
                Ok(json) => Event::default().data(json.to_string()),
                Err(e) => error_event(
                    &Failure::new(
                        crate::failure::ErrorKind::Internal,
                        "ENCODING_FAILED",
                        e.to_string(),
                    )
                    .into(),
                ),
            },
            Err(status) => error_event(&status),
        })
    });
    Sse::new(events).into_response()
}
