//! A front's call as the engine sees it: stateless (the request's
//! messages are the prompt, nothing is stored), or a turn of a stored
//! dialogue named by `X-Dialogue-Id` (or the body's `dialogue_id`): the
//! messages after the last assistant message are the turn, history comes
//! from the store, and a missing dialogue is created with the request's
//! system message as its system prompt. The OpenAI and Anthropic fronts
//! share it, so a dialogue continues across them.

use super::request_json::invalid;
use crate::auth::Principal;
use crate::dialogue::model::{
    CompletionRequest, ContentPart, DialogueId, DialogueSpec, Expiration, GenerationParams,
    PromptMessage, Role, TurnOutcome, TurnRequest,
};
use crate::engine::{Engine, EngineError, Events};
use axum::http::{HeaderMap, HeaderValue};
use std::sync::Arc;
use tonic::Status;

/// Names the stored dialogue a call belongs to.
pub const DIALOGUE_HEADER: &str = "x-dialogue-id";

/// What the engine is asked to do for one request.
pub enum Call {
    Stateless(CompletionRequest),
    Turn(TurnRequest),
}

/// The call of a front's request: `messages` (system ones included) for
/// `model`, bound to the dialogue named by `X-Dialogue-Id` or
/// `body_dialogue` if any.
pub fn plan(
    caller: Principal,
    headers: &HeaderMap,
    body_dialogue: Option<String>,
    model: String,
    messages: Vec<PromptMessage>,
    params: GenerationParams,
) -> Result<Call, Status> {
    let dialogue = headers
        .get(DIALOGUE_HEADER)
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| invalid(DIALOGUE_HEADER, "must be ASCII"))?
        .or(body_dialogue);
    let Some(dialogue) = dialogue else {
        return Ok(Call::Stateless(CompletionRequest {
            caller,
            messages,
            params,
            deadline: None,
        }));
    };
    let dialogue_id =
        DialogueId::parse(&dialogue).map_err(|e| invalid("dialogue_id", e.to_string()))?;
    let system_prompt = messages
        .iter()
        .find(|m| m.role == Role::System)
        .map(PromptMessage::joined_text)
        .unwrap_or_default();
    // The turn: what follows the last assistant message (the user's
    // message, or the results of that message's tool calls).
    let after = messages
        .iter()
        .rposition(|m| m.role == Role::Assistant)
        .map_or(0, |i| i + 1);
    let content: Vec<ContentPart> = messages[after..]
        .iter()
        .filter(|m| m.role != Role::System)
        .flat_map(|m| m.content.iter().cloned())
        .collect();
    if content.is_empty() {
        return Err(invalid(
            "messages",
            "must end with a user message or tool results",
        ));
    }
    Ok(Call::Turn(TurnRequest {
        caller,
        dialogue_id,
        content,
        create_if_missing: Some(DialogueSpec {
            model,
            system_prompt,
            labels: Default::default(),
            state: None,
            expiration: Expiration::Never,
        }),
        params,
        request_id: None,
        deadline: None,
        resumable: false,
    }))
}

impl Call {
    /// Runs the call to its outcome.
    pub async fn run(self, engine: &Engine) -> Result<TurnOutcome, EngineError> {
        match self {
            Call::Stateless(r) => engine.complete(r).await,
            Call::Turn(r) => engine.converse(r).await,
        }
    }

    /// Runs the call as a stream of events.
    pub fn stream(self, engine: &Arc<Engine>) -> Events {
        match self {
            Call::Stateless(r) => engine.complete_stream(r),
            Call::Turn(r) => engine.converse_stream(r),
        }
    }

    /// What a bound call answers with: its dialogue's ID.
    pub fn dialogue_header(&self) -> Option<HeaderValue> {
        match self {
            Call::Turn(t) => HeaderValue::from_str(t.dialogue_id.public()).ok(),
            Call::Stateless(_) => None,
        }
    }
}
