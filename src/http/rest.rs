//! REST/JSON for the dialogue resources, mirroring the proto (AIP-127
//! style): each route builds the gRPC request message from the path, the
//! query string and the body — JSON per the protobuf JSON mapping, through
//! serde generated from the same types (pbjson) — and calls the gRPC
//! service itself, so checks, conversions and errors are the gRPC ones.
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
use crate::grpc::DialogueGrpc;
use crate::pb::dialogue::v1 as pb;
use axum::extract::{Path, Request, State};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use pb::dialogue_service_server::DialogueService;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::convert::Infallible;
use tonic::Status;

/// The REST routes' state: the gRPC service they call, and the largest
/// body accepted (`server.max_request_bytes`, as for gRPC).
#[derive(Clone)]
pub struct Rest {
    pub service: DialogueGrpc,
    pub max_body: usize,
}

fn error_response(status: &Status) -> Response {
    error::response(ErrorShape::Google, status).into_response()
}

fn json_response<T: Serialize>(message: &T) -> Response {
    match serde_json::to_value(message) {
        Ok(json) => axum::Json(json).into_response(),
        Err(e) => error_response(&Status::internal(format!("cannot encode the answer: {e}"))),
    }
}

/// A gRPC request carrying `message` and the HTTP call's headers (as
/// metadata) and extensions (caller, audit notes).
fn grpc_request<T>(parts: http::request::Parts, message: T) -> tonic::Request<T> {
    tonic::Request::from_parts(
        tonic::metadata::MetadataMap::from_headers(parts.headers),
        parts.extensions,
        message,
    )
}

/// Builds a request message from the JSON body (whole, or under
/// `body_field`), the query string and the path's fields; pbjson accepts
/// both lowerCamelCase and proto field names, and numbers as strings.
async fn message<T: DeserializeOwned>(
    rest: &Rest,
    request: Request,
    body_field: Option<&str>,
    path_fields: &[(&str, String)],
) -> Result<(http::request::Parts, T), Status> {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, rest.max_body)
        .await
        .map_err(|_| {
            Status::invalid_argument(format!(
                "the body is unreadable or larger than {} bytes",
                rest.max_body
            ))
        })?;
    let body: Value = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(&bytes)
            .map_err(|e| Status::invalid_argument(format!("the body is not JSON: {e}")))?
    };
    let mut fields = match body_field {
        Some(field) => Map::from_iter([(field.to_owned(), body)]),
        None => match body {
            Value::Object(fields) => fields,
            _ => return Err(Status::invalid_argument("the body must be a JSON object")),
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
        .map_err(|e| Status::invalid_argument(format!("invalid request: {e}")))?;
    Ok((parts, message))
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

/// Runs one unary RPC on the message built from `request`.
async fn unary<Req, Resp, Fut>(
    rest: Rest,
    request: Request,
    body_field: Option<&str>,
    path_fields: &[(&str, String)],
    rpc: impl FnOnce(DialogueGrpc, tonic::Request<Req>) -> Fut,
) -> Response
where
    Req: DeserializeOwned,
    Resp: Serialize,
    Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
{
    let (parts, message) = match message::<Req>(&rest, request, body_field, path_fields).await {
        Ok(built) => built,
        Err(status) => return error_response(&status),
    };
    match rpc(rest.service, grpc_request(parts, message)).await {
        Ok(answer) => json_response(answer.get_ref()),
        Err(status) => error_response(&status),
    }
}

fn name(id: &str) -> String {
    format!("dialogues/{id}")
}

pub async fn create(State(rest): State<Rest>, request: Request) -> Response {
    unary(rest, request, Some("dialogue"), &[], async |s, r| {
        s.create_dialogue(r).await
    })
    .await
}

pub async fn list(State(rest): State<Rest>, request: Request) -> Response {
    unary(rest, request, None, &[], async |s, r| {
        s.list_dialogues(r).await
    })
    .await
}

pub async fn get(State(rest): State<Rest>, Path(id): Path<String>, request: Request) -> Response {
    unary(rest, request, None, &[("name", name(&id))], async |s, r| {
        s.get_dialogue(r).await
    })
    .await
}

pub async fn update(
    State(rest): State<Rest>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let (parts, mut message) =
        match message::<pb::UpdateDialogueRequest>(&rest, request, Some("dialogue"), &[]).await {
            Ok(built) => built,
            Err(status) => return error_response(&status),
        };
    // The path names the dialogue; a body naming another is refused.
    let dialogue = message.dialogue.get_or_insert_with(Default::default);
    if !dialogue.name.is_empty() && dialogue.name != name(&id) {
        return error_response(&Status::invalid_argument(
            "dialogue.name differs from the dialogue in the path",
        ));
    }
    dialogue.name = name(&id);
    match rest
        .service
        .update_dialogue(grpc_request(parts, message))
        .await
    {
        Ok(answer) => json_response(answer.get_ref()),
        Err(status) => error_response(&status),
    }
}

pub async fn delete(
    State(rest): State<Rest>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    unary(rest, request, None, &[("name", name(&id))], async |s, r| {
        s.delete_dialogue(r).await
    })
    .await
}

pub async fn list_turns(
    State(rest): State<Rest>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    unary(
        rest,
        request,
        None,
        &[("parent", name(&id))],
        async |s, r| s.list_turns(r).await,
    )
    .await
}

pub async fn batch_converse(State(rest): State<Rest>, request: Request) -> Response {
    unary(rest, request, None, &[], async |s, r| {
        s.batch_converse(r).await
    })
    .await
}

/// `POST /v1/dialogues/{id}:converse` and `...:converseStream` (custom
/// methods: the verb is part of the last path segment).
pub async fn custom_method(
    State(rest): State<Rest>,
    Path(segment): Path<String>,
    request: Request,
) -> Response {
    if let Some(id) = segment.strip_suffix(":converse") {
        let fields = [("name", name(id))];
        return unary(rest, request, None, &fields, async |s, r| {
            s.converse(r).await
        })
        .await;
    }
    let Some(id) = segment.strip_suffix(":converseStream") else {
        return error_response(&Status::not_found(format!(
            "no method POST /v1/dialogues/{segment} (use :converse or :converseStream)"
        )));
    };
    let fields = [("name", name(id))];
    let (parts, message) = match message::<pb::ConverseRequest>(&rest, request, None, &fields).await
    {
        Ok(built) => built,
        Err(status) => return error_response(&status),
    };
    let stream = match rest
        .service
        .converse_stream(grpc_request(parts, message))
        .await
    {
        Ok(answer) => answer.into_inner(),
        Err(status) => return error_response(&status),
    };
    // Each event is one ConverseStreamResponse as JSON; a failure is a
    // last `error` event in google.rpc's JSON shape.
    let events = stream.map(|item| -> Result<Event, Infallible> {
        Ok(match item {
            Ok(message) => match serde_json::to_string(&message) {
                Ok(json) => Event::default().data(json),
                Err(e) => Event::default().event("error").data(
                    error::body(ErrorShape::Google, &Status::internal(e.to_string())).to_string(),
                ),
            },
            Err(status) => Event::default()
                .event("error")
                .data(error::body(ErrorShape::Google, &status).to_string()),
        })
    });
    Sse::new(events).into_response()
}
