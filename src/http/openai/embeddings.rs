//! OpenAI-compatible `POST /v1/embeddings`: `input` as a text or a list of
//! texts (token arrays are refused), `encoding_format` `float` or `base64`,
//! `dimensions`; `user` is accepted and ignored, as on chat completions.

use super::{engine_error, openai_error};
use crate::auth::{AuthError, Principal};
use crate::engine::embeddings::{EmbeddingOutcome, EmbeddingRequest};
use crate::http::Front;
use crate::http::request_json::{Obj, invalid};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use tonic::Status;

struct Parsed {
    model: String,
    inputs: Vec<String>,
    dimensions: Option<u32>,
    base64: bool,
}

fn parse(body: &[u8]) -> Result<Parsed, Status> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid("body", format!("is not valid JSON: {e}")))?;
    let request = Obj::new(&value, "")?;
    request.only(&["model", "input", "encoding_format", "dimensions", "user"])?;
    let model = request.required_str("model")?.to_owned();
    let inputs = match request.get("input") {
        Some(Value::String(text)) => vec![text.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(text) => Ok(text.clone()),
                _ => Err(invalid(
                    &format!("input[{i}]"),
                    "must be a text (token arrays are not accepted)",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(invalid(
                "input",
                "must be a text or a list of texts (token arrays are not accepted)",
            ));
        }
        None => return Err(invalid("input", "is required")),
    };
    let base64 = match request.str("encoding_format")? {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(invalid(
                "encoding_format",
                format!("must be float or base64, not {other:?}"),
            ));
        }
    };
    Ok(Parsed {
        model,
        inputs,
        dimensions: request.u32("dimensions")?,
        base64,
    })
}

pub async fn embeddings(front: &Front, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Some(caller) = parts.extensions.get::<Principal>().cloned() else {
        return openai_error(&Status::from(AuthError::Missing));
    };
    let parsed = match crate::http::read_body(body, front.max_body).await {
        Ok(body) => parse(&body),
        Err(status) => Err(status),
    };
    let parsed = match parsed {
        Ok(p) => p,
        Err(status) => return openai_error(&status),
    };
    let base64 = parsed.base64;
    let outcome = front
        .engine
        .embed(EmbeddingRequest {
            caller,
            model: parsed.model,
            inputs: parsed.inputs,
            dimensions: parsed.dimensions,
            deadline: None,
        })
        .await;
    match outcome {
        Ok(outcome) => axum::Json(reply_body(outcome, base64)).into_response(),
        Err(e) => engine_error(e),
    }
}

fn reply_body(outcome: EmbeddingOutcome, base64: bool) -> Value {
    let data: Vec<Value> = outcome
        .vectors
        .into_iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = match base64 {
                // OpenAI's base64 form: the floats' little-endian bytes.
                true => {
                    let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
                }
                false => json!(vector),
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": outcome.model,
        "usage": {"prompt_tokens": outcome.prompt_tokens, "total_tokens": outcome.prompt_tokens},
    })
}
