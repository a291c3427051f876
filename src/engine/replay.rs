//! Answers from what is stored: a request repeating an earlier one's
//! idempotency key gets that request's result, and a streamed reply can be
//! re-attached to — live while it is still being generated, else replayed
//! from the store.

use super::{Engine, EngineError, Events};
use crate::auth::Principal;
use crate::dialogue::content::tool_calls;
use crate::dialogue::model::{
    DialogueId, FinishReason, Owner, ReplyMetadata, Role, StreamEvent, Time, Turn, TurnOutcome,
    TurnRequest,
};
use crate::dialogue::ports::{IdempotencyRecord, StoreError};
use std::time::Instant;
use tokio::sync::mpsc;

impl Engine {
    /// The stored result of an earlier request with the same key.
    pub(super) async fn replay(
        &self,
        request: &TurnRequest,
        record: IdempotencyRecord,
        started: Instant,
    ) -> Result<TurnOutcome, EngineError> {
        let id = &request.dialogue_id;
        let turns = self.store.list_turns(id, record.user_turn_index, 2).await?;
        let [user_turn, assistant_turn]: [Turn; 2] = turns.try_into().map_err(|_| {
            EngineError::Store(StoreError::Corrupt(format!(
                "turns of request_id {:?} in {} are missing",
                record.request_id,
                id.resource_name()
            )))
        })?;
        let other_settings =
            !record.settings_digest.is_empty() && record.settings_digest != request.params.digest();
        if user_turn.content != request.content || other_settings {
            return Err(EngineError::invalid(
                "request_id",
                "was already used for a different message or generation settings in this dialogue",
            ));
        }
        Ok(stored_outcome(
            id,
            user_turn,
            assistant_turn,
            record.backend,
            started.elapsed().as_secs_f64() * 1000.0,
        ))
    }

    /// Re-attaches to assistant turn `index` of the caller's dialogue `id`
    /// from byte `offset` of its text: the start, the text from there, then
    /// what follows live; a turn that finished is replayed from the store.
    pub async fn resume_stream(
        &self,
        caller: &Principal,
        id: &DialogueId,
        index: u64,
        offset: u64,
    ) -> Result<Events, EngineError> {
        let id = id.scoped_to(&Owner::of(caller));
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        let rest_of = |text: &str| match text.get(offset..) {
            Some(rest) => Ok(rest.to_owned()),
            None => Err(EngineError::invalid(
                "offset",
                format!(
                    "is not a character boundary within the {} bytes of text so far",
                    text.len()
                ),
            )),
        };
        let (tx, rx) = mpsc::channel(32);
        if let Some(live) = self.live.attach(&id, index) {
            let missed = rest_of(&live.text)?;
            self.tasks.spawn(live.forward(missed, offset as u64, tx));
            return Ok(rx);
        }
        // Not live (any more): the stored turn, if it is one.
        let dialogue = self.load(caller, &id, Time::now()).await?;
        let turns = self
            .history()
            .from(&dialogue, index.saturating_sub(1), 2)
            .await?;
        let [user_turn, assistant_turn]: [Turn; 2] =
            turns.try_into().map_err(|_| not_a_turn(&id, index))?;
        if index == 0 || assistant_turn.index != index || assistant_turn.role != Role::Assistant {
            return Err(not_a_turn(&id, index));
        }
        let missed = rest_of(&assistant_turn.text())?;
        let outcome = stored_outcome(&id, user_turn, assistant_turn, String::new(), 0.0);
        let events = stored_events(outcome, missed, offset as u64);
        self.tasks.spawn(async move {
            for event in events {
                if tx.send(Ok(event)).await.is_err() {
                    break;
                }
            }
        });
        Ok(rx)
    }
}

/// A stored exchange as a turn's outcome, marked replayed.
fn stored_outcome(
    id: &DialogueId,
    user_turn: Turn,
    assistant_turn: Turn,
    backend: String,
    latency_ms: f64,
) -> TurnOutcome {
    TurnOutcome {
        dialogue_id: id.clone(),
        finish_reason: assistant_turn.finish_reason.unwrap_or(FinishReason::Stop),
        usage: assistant_turn.usage.unwrap_or_default(),
        metadata: ReplyMetadata {
            latency_ms,
            model: assistant_turn.model.clone(),
            backend,
            cached: false,
            replayed: true,
            attempts: 0,
            upstream_model: String::new(),
            rule: assistant_turn.rule.clone().unwrap_or_default(),
        },
        user_turn,
        assistant_turn,
        logprobs: Vec::new(),
    }
}

fn not_a_turn(id: &DialogueId, index: u64) -> EngineError {
    EngineError::NotFound(format!(
        "{}/turns/{index} (no reply with that index is being generated or stored)",
        id.resource_name()
    ))
}

/// A replayed turn as a stream: start, the whole reply as one delta, its
/// tool calls whole, end.
pub(super) fn replay_events(outcome: TurnOutcome) -> Vec<StreamEvent> {
    let text = outcome.assistant_turn.text();
    stored_events(outcome, text, 0)
}

/// A stored turn as a stream: start, `text` (its reply from `offset`) as
/// one delta, one delta per tool call, end.
fn stored_events(outcome: TurnOutcome, text: String, offset: u64) -> Vec<StreamEvent> {
    let mut events = vec![StreamEvent::Start {
        dialogue_id: outcome.dialogue_id.clone(),
        turn_index: outcome.assistant_turn.index,
        model: outcome.metadata.model.clone(),
    }];
    if !text.is_empty() {
        events.push(StreamEvent::Delta {
            text,
            offset,
            logprobs: Vec::new(),
        });
    }
    let calls = tool_calls(&outcome.assistant_turn.content);
    for (index, call) in calls.enumerate() {
        events.push(StreamEvent::ToolCallDelta {
            index: u32::try_from(index).unwrap_or(u32::MAX),
            id: Some(call.id.clone()),
            name: Some(call.name.clone()),
            arguments: call.arguments.clone(),
        });
    }
    events.push(StreamEvent::End(Box::new(outcome)));
    events
}
