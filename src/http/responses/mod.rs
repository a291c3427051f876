//! OpenAI's Responses API: `POST /v1/responses` (unary, and SSE in the
//! Responses event order), `GET /v1/responses/{id}` and
//! `GET /v1/responses/{id}/input_items`, over the one engine and store.
//!
//! A stored response (`store`, the default) is one exchange of a dialogue:
//! a new chain starts a dialogue (its system prompt: `instructions`), and
//! `previous_response_id` continues that dialogue — the chain's history is
//! the dialogue's turns, read from the store, and the exchange is committed
//! before `response.completed` is sent, so the response can be read and
//! chained at once. The dialogue is an ordinary one: gRPC, REST and the
//! other fronts read and continue it (`resp_{dialogue}~{turn}` names it).
//! `store: false` is stateless, like a chat completion without a dialogue.
//!
//! `previous_response_id` naming an older response starts a branch: a new
//! dialogue sharing the chain's turns up to it by reference (see
//! `engine::branches`). `DELETE` removes a chain's latest response (its
//! exchange); deleting an older one is refused (later ones build on it).

mod render;

pub use render::turn_items;
pub mod request;
mod stream;

use super::binding::Call;
use super::error::{self, ErrorShape};
use super::{Front, caller_of};
use crate::auth::Principal;
use crate::dialogue::model::{
    CompletionRequest, ContentPart, Dialogue, DialogueId, DialogueSpec, Expiration, PromptMessage,
    Role, Time, TurnRequest, TurnView,
};
use crate::engine::EngineError;
use crate::failure::{ErrorKind, Failure};
use axum::extract::Request;
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use render::Echo;
use request::ResponsesRequest;
use serde_json::{Value, json};
use tonic::Status;

fn openai_error(status: &Status) -> Response {
    error::response(ErrorShape::OpenAi, status).into_response()
}

fn failed_precondition(reason: &str, message: impl Into<String>) -> Status {
    Failure::new(ErrorKind::FailedPrecondition, reason, message).into()
}

fn not_found(id: &str) -> Status {
    Failure::new(
        ErrorKind::NotFound,
        "RESPONSE_NOT_FOUND",
        format!("no stored response {id:?}"),
    )
    .into()
}

/// `POST /v1/responses`.
pub async fn create(front: &Front, request: Request) -> Response {
    match create_inner(front, request).await {
        Ok(response) => response,
        Err(status) => openai_error(&status),
    }
}

async fn create_inner(front: &Front, request: Request) -> Result<Response, Status> {
    let caller = caller_of(&request)?;
    let body = super::read_body(request.into_body(), front.max_body).await?;
    let request = request::parse(&body)?;
    let created_at = Time::now().0 / 1_000_000_000;
    let mut echo = Echo {
        id: format!("resp_x{:032x}", rand::random::<u128>()),
        created_at,
        model: request.model.clone(),
        instructions: request.instructions.clone(),
        previous_response_id: request.previous_response_id.clone(),
        store: request.store,
        metadata: request.metadata.clone(),
        fields: request.echo.clone(),
    };
    let stream = request.stream;
    let store = request.store;
    let call = plan(front, caller, request).await?;
    let engine = &front.engine;
    if stream {
        let events = call.stream(engine);
        let events = crate::engine::started(events).await.map_err(Status::from)?;
        return Ok(Sse::new(stream::sse_events(events, echo, store)).into_response());
    }
    let outcome = call.run(engine).await.map_err(Status::from)?;
    if store {
        echo.id = render::response_id(&outcome.dialogue_id, outcome.assistant_turn.index);
    }
    echo.model = outcome.metadata.model.clone();
    let output = render::output(&outcome.assistant_turn, &echo.id);
    let body = render::response(
        &echo,
        "completed",
        output,
        Some(&outcome.usage),
        Some(outcome.finish_reason),
    );
    Ok(axum::Json(body).into_response())
}

/// What the engine runs for a request (see the module's comment).
async fn plan(front: &Front, caller: Principal, request: ResponsesRequest) -> Result<Call, Status> {
    let ResponsesRequest {
        model,
        instructions,
        input,
        params,
        previous_response_id,
        conversation,
        store,
        ..
    } = request;
    let (system, said): (Vec<PromptMessage>, Vec<PromptMessage>) =
        input.into_iter().partition(|m| m.role == Role::System);
    let mut system_prompt = instructions.clone().unwrap_or_default();
    for message in &system {
        if !system_prompt.is_empty() {
            system_prompt.push('\n');
        }
        system_prompt.push_str(&message.joined_text());
    }
    let previous = match &previous_response_id {
        Some(id) => Some(previous_response(front, &caller, id).await?),
        None => None,
    };
    if !store {
        // Nothing is kept; an earlier chain is read as the history.
        let mut history = Vec::new();
        if let Some((dialogue, turn)) = &previous {
            if system_prompt.is_empty() {
                system_prompt.clone_from(&dialogue.system_prompt);
            }
            history = front
                .engine
                .history_messages(&caller, &dialogue.id, turn + 1)
                .await
                .map_err(Status::from)?;
        }
        let mut messages = Vec::new();
        if !system_prompt.is_empty() {
            messages.push(PromptMessage::text(Role::System, system_prompt));
        }
        messages.extend(history);
        messages.extend(said);
        return Ok(Call::Stateless(CompletionRequest {
            caller,
            messages,
            params,
            deadline: None,
        }));
    }
    if said.iter().any(|m| m.role == Role::Assistant) {
        return Err(Failure::invalid(
            "input",
            "a stored response's input is its new turn: earlier turns come from previous_response_id (or send store: false with the whole history)",
        )
        .into());
    }
    let content: Vec<ContentPart> = said
        .into_iter()
        .flat_map(|m| m.content.into_vec())
        .collect();
    if content.is_empty() {
        return Err(Failure::invalid("input", "holds no user content or tool output").into());
    }
    if let Some(conversation) = conversation {
        let dialogue_id =
            DialogueId::parse(&conversation).map_err(|e| Failure::invalid("conversation", e))?;
        let (dialogue, _) = front
            .engine
            .get_dialogue(&caller, &dialogue_id, None, 0, TurnView::Basic)
            .await
            .map_err(Status::from)?;
        if let Some(instructions) = instructions.filter(|i| *i != dialogue.system_prompt) {
            if dialogue.turn_count > 0 || !system.is_empty() {
                return Err(failed_precondition(
                    "INSTRUCTIONS_FIXED",
                    "instructions: a conversation keeps the instructions of its first response; send the same (or none)",
                ));
            }
            // The conversation's first response sets its instructions.
            let spec = DialogueSpec {
                model: String::new(),
                system_prompt: instructions,
                labels: Default::default(),
                state: None,
                expiration: Expiration::Never,
            };
            let mask = crate::dialogue::model::UpdateMask {
                system_prompt: true,
                ..Default::default()
            };
            front
                .engine
                .update_dialogue(&caller, &dialogue_id, spec, mask)
                .await
                .map_err(Status::from)?;
        }
        return Ok(Call::Turn(TurnRequest {
            caller,
            dialogue_id,
            content,
            create_if_missing: None,
            params,
            request_id: None,
            deadline: None,
            resumable: false,
        }));
    }
    let (dialogue_id, create) = match previous {
        None => (
            DialogueId::generate(),
            Some(DialogueSpec {
                model,
                system_prompt,
                labels: Default::default(),
                state: None,
                expiration: Expiration::Never,
            }),
        ),
        Some((dialogue, turn)) => {
            if !system.is_empty() || instructions.is_some_and(|i| i != dialogue.system_prompt) {
                return Err(failed_precondition(
                    "INSTRUCTIONS_FIXED",
                    "instructions: a chain keeps the instructions of its first response; send the same (or none)",
                ));
            }
            if turn + 1 == dialogue.turn_count {
                (dialogue.id, None)
            } else {
                // An older response: a new chain sharing its history.
                let branch = front
                    .engine
                    .branch_dialogue(&caller, &dialogue.id, turn + 1, DialogueId::generate())
                    .await
                    .map_err(Status::from)?;
                (branch.id, None)
            }
        }
    };
    Ok(Call::Turn(TurnRequest {
        caller,
        dialogue_id,
        content,
        create_if_missing: create,
        params,
        request_id: None,
        deadline: None,
        resumable: false,
    }))
}

/// The chain a `previous_response_id` names and its reply turn; another
/// caller's, a removed one and a malformed ID are all NOT_FOUND.
async fn previous_response(
    front: &Front,
    caller: &Principal,
    id: &str,
) -> Result<(Dialogue, u64), Status> {
    let (dialogue_id, turn) = render::parse_response_id(id).ok_or_else(|| not_found(id))?;
    let lookup = |e: EngineError| match e {
        EngineError::NotFound(_) => not_found(id),
        other => Status::from(other),
    };
    let (dialogue, _) = front
        .engine
        .get_dialogue(caller, &dialogue_id, None, 0, TurnView::Basic)
        .await
        .map_err(lookup)?;
    if turn == 0 || turn >= dialogue.turn_count {
        return Err(not_found(id));
    }
    // A response names a reply; any other turn is not one.
    let read = front
        .engine
        .turns_from(caller, &dialogue_id, turn, 1, TurnView::Basic)
        .await
        .map_err(lookup)?;
    match read.first() {
        // A deleted (emptied) response is gone.
        Some(reply)
            if reply.index == turn
                && reply.role == Role::Assistant
                && !reply.content.is_empty() =>
        {
            Ok((dialogue, turn))
        }
        _ => Err(not_found(id)),
    }
}

/// The exchange a stored response is: its input turn and its reply.
async fn exchange(
    front: &Front,
    caller: Result<Principal, Status>,
    id: &str,
) -> Result<
    (
        Echo,
        crate::dialogue::model::Turn,
        crate::dialogue::model::Turn,
    ),
    Status,
> {
    let caller = caller?;
    let (dialogue_id, turn) = render::parse_response_id(id).ok_or_else(|| not_found(id))?;
    let lookup = |e: EngineError| match e {
        EngineError::NotFound(_) => not_found(id),
        other => Status::from(other),
    };
    let (dialogue, _) = front
        .engine
        .get_dialogue(&caller, &dialogue_id, None, 0, TurnView::Basic)
        .await
        .map_err(lookup)?;
    if turn == 0 || turn >= dialogue.turn_count {
        return Err(not_found(id));
    }
    let read = front
        .engine
        .turns_from(&caller, &dialogue_id, turn - 1, 2, TurnView::Full)
        .await
        .map_err(lookup)?;
    let [input, reply] = <[_; 2]>::try_from(read).map_err(|_| not_found(id))?;
    if reply.role != Role::Assistant || reply.index != turn || reply.content.is_empty() {
        return Err(not_found(id));
    }
    let echo = Echo {
        id: id.to_owned(),
        created_at: reply.create_time.0 / 1_000_000_000,
        model: reply.model.clone(),
        instructions: Some(dialogue.system_prompt).filter(|s| !s.is_empty()),
        // A branch's first responses follow its parent's.
        previous_response_id: (turn >= 3).then(|| match &dialogue.fork {
            Some(fork) if turn - 2 < fork.turns => render::response_id(&fork.parent, turn - 2),
            _ => render::response_id(&dialogue_id, turn - 2),
        }),
        store: true,
        metadata: Default::default(),
        fields: Default::default(),
    };
    Ok((echo, input, reply))
}

/// `GET /v1/responses/{id}`.
pub async fn get(front: &Front, id: &str, request: Request) -> Response {
    match exchange(front, caller_of(&request), id).await {
        Ok((echo, _, reply)) => {
            let output = render::output(&reply, id);
            let body = render::response(
                &echo,
                "completed",
                output,
                reply.usage.as_ref(),
                reply.finish_reason,
            );
            axum::Json(body).into_response()
        }
        Err(status) => openai_error(&status),
    }
}

/// `GET /v1/responses/{id}/input_items`: the input turn's items.
pub async fn input_items(front: &Front, id: &str, request: Request) -> Response {
    let (_, input, _) = match exchange(front, caller_of(&request), id).await {
        Ok(found) => found,
        Err(status) => return openai_error(&status),
    };
    let data = render::turn_items(&input);
    let first = data.first().map(|i| i["id"].clone()).unwrap_or(Value::Null);
    let last = data.last().map(|i| i["id"].clone()).unwrap_or(Value::Null);
    axum::Json(json!({"object": "list", "data": data, "first_id": first, "last_id": last, "has_more": false}))
        .into_response()
}

/// `DELETE /v1/responses/{id}`: removes the response's exchange from its
/// dialogue — the latest with its turns, an older one emptied in place
/// (later responses keep their IDs and no longer see it).
pub async fn delete(front: &Front, id: &str, request: Request) -> Response {
    let caller = caller_of(&request);
    drop(request);
    let deleted = async {
        let caller = caller?;
        let (dialogue_id, turn) = render::parse_response_id(id).ok_or_else(|| not_found(id))?;
        front
            .engine
            .delete_exchange(&caller, &dialogue_id, turn)
            .await
            .map_err(|e| match e {
                EngineError::NotFound(_) => not_found(id),
                other => Status::from(other),
            })
    };
    match deleted.await {
        Ok(()) => axum::Json(json!({"id": id, "object": "response.deleted", "deleted": true}))
            .into_response(),
        Err(status) => openai_error(&status),
    }
}
