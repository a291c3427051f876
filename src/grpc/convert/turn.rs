//! Turns: a ConverseRequest into a `TurnRequest`, and turns, outcomes and
//! stream events back into messages.

use super::content::{content_from_pb, content_to_pb};
use super::generation::params_from_pb;
use super::{dialogue_id_from_name, dialogue_spec, time_to_pb};
use crate::auth::Principal;
use crate::dialogue::model::{
    DialogueId, FinishReason, ReplyMetadata, Role, StreamEvent, TokenLogprob, Turn, TurnOutcome,
    TurnRequest, TurnView, Usage,
};
use crate::engine::EngineError;
use crate::failure::Violations;
use crate::grpc::pb::dialogue::v1 as pb;

pub fn turn_request(
    req: pb::ConverseRequest,
    caller: Principal,
    deadline: Option<std::time::Instant>,
) -> Result<TurnRequest, EngineError> {
    let mut v = Violations::default();
    let dialogue_id = match dialogue_id_from_name(&req.name, "name") {
        Ok(id) => Some(id),
        Err(EngineError::InvalidArgument(invalid)) => {
            v.extend(invalid);
            None
        }
        Err(e) => return Err(e),
    };
    let content = content_from_pb(req.content, "content", &mut v);
    let params = params_from_pb(req.generation, &mut v);
    let create_if_missing = req.create_if_missing.then(|| {
        dialogue_spec(
            req.dialogue_defaults.unwrap_or_default(),
            "dialogue_defaults",
            &mut v,
        )
    });
    let request = dialogue_id.map(|dialogue_id| TurnRequest {
        caller,
        dialogue_id,
        content,
        params,
        request_id: Some(req.request_id).filter(|r| !r.is_empty()),
        create_if_missing,
        deadline,
        resumable: req.resumable,
    });
    v.into_result(())?;
    request.ok_or_else(|| EngineError::invalid("name", "is required"))
}

fn role_to_pb(role: Role) -> pb::Role {
    match role {
        Role::User => pb::Role::User,
        Role::Assistant => pb::Role::Assistant,
        Role::System => pb::Role::System,
        Role::Tool => pb::Role::Tool,
    }
}

fn finish_to_pb(reason: FinishReason) -> pb::FinishReason {
    match reason {
        FinishReason::Stop => pb::FinishReason::Stop,
        FinishReason::Length => pb::FinishReason::Length,
        FinishReason::ContentFilter => pb::FinishReason::ContentFilter,
        FinishReason::ToolCalls => pb::FinishReason::ToolCalls,
    }
}

fn usage_to_pb(u: Usage) -> pb::Usage {
    let prompt = i64::try_from(u.prompt_tokens).unwrap_or(i64::MAX);
    let completion = i64::try_from(u.completion_tokens).unwrap_or(i64::MAX);
    pb::Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
    }
}

/// A turn as callers read it; `view` says whether inline image bytes come
/// with it.
pub fn turn_to_pb(dialogue: &DialogueId, t: &Turn, view: TurnView) -> pb::Turn {
    pb::Turn {
        name: format!("dialogues/{dialogue}/turns/{}", t.index),
        turn_id: t.index.to_string(),
        index: i64::try_from(t.index).unwrap_or(i64::MAX),
        role: role_to_pb(t.role) as i32,
        content: content_to_pb(&t.content, view),
        create_time: Some(time_to_pb(t.create_time)),
        finish_reason: t
            .finish_reason
            .map(finish_to_pb)
            .unwrap_or(pb::FinishReason::Unspecified) as i32,
        model: t.model.clone(),
        usage: t.usage.map(usage_to_pb),
        request_id: t.request_id.clone().unwrap_or_default(),
        summary: t.summary.map(|s| pb::TurnSummary {
            first_index: i64::try_from(s.first_index).unwrap_or(i64::MAX),
            last_index: i64::try_from(s.last_index).unwrap_or(i64::MAX),
        }),
        rule: t.rule.clone().unwrap_or_default(),
    }
}

fn metadata_to_pb(m: ReplyMetadata) -> pb::ResponseMetadata {
    pb::ResponseMetadata {
        latency_ms: m.latency_ms,
        model: m.model,
        backend: m.backend,
        cached: m.cached,
        replayed: m.replayed,
        attempts: i32::try_from(m.attempts).unwrap_or(i32::MAX),
        upstream_model: m.upstream_model,
        rule: m.rule,
    }
}

fn logprobs_to_pb(logprobs: Vec<TokenLogprob>) -> Vec<pb::TokenLogprob> {
    logprobs
        .into_iter()
        .map(|l| pb::TokenLogprob {
            token: l.token,
            logprob: l.logprob,
            top_logprobs: l
                .top
                .into_iter()
                .map(|t| pb::TopLogprob {
                    token: t.token,
                    logprob: t.logprob,
                })
                .collect(),
        })
        .collect()
}

/// A turn's outcome; its turns without inline image bytes (the caller sent
/// them, and reads them with the FULL view).
pub fn outcome_to_pb(o: TurnOutcome) -> pb::ConverseResponse {
    pb::ConverseResponse {
        name: o.dialogue_id.resource_name(),
        dialogue_id: o.dialogue_id.to_string(),
        user_turn: Some(turn_to_pb(&o.dialogue_id, &o.user_turn, TurnView::Basic)),
        turn: Some(turn_to_pb(
            &o.dialogue_id,
            &o.assistant_turn,
            TurnView::Basic,
        )),
        finish_reason: finish_to_pb(o.finish_reason) as i32,
        usage: Some(usage_to_pb(o.usage)),
        metadata: Some(metadata_to_pb(o.metadata)),
        logprobs: logprobs_to_pb(o.logprobs),
    }
}

pub fn event_to_pb(event: StreamEvent) -> pb::ConverseStreamResponse {
    use pb::converse_stream_response::Event;
    let event = match event {
        StreamEvent::Start {
            dialogue_id,
            turn_index,
            model,
        } => Event::Start(pb::StreamStart {
            name: dialogue_id.resource_name(),
            dialogue_id: dialogue_id.to_string(),
            turn_id: turn_index.to_string(),
            turn_index: i64::try_from(turn_index).unwrap_or(i64::MAX),
            model,
        }),
        StreamEvent::Delta {
            text,
            offset,
            logprobs,
        } => Event::Delta(pb::TextDelta {
            text,
            offset: i64::try_from(offset).unwrap_or(i64::MAX),
            logprobs: logprobs_to_pb(logprobs),
        }),
        StreamEvent::ToolCallDelta {
            index,
            id,
            name,
            arguments,
        } => Event::ToolCallDelta(pb::ToolCallDelta {
            index: i32::try_from(index).unwrap_or(i32::MAX),
            id: id.unwrap_or_default(),
            name: name.unwrap_or_default(),
            arguments,
        }),
        StreamEvent::End(outcome) => {
            let o = *outcome;
            Event::End(pb::StreamEnd {
                user_turn: Some(turn_to_pb(&o.dialogue_id, &o.user_turn, TurnView::Basic)),
                turn: Some(turn_to_pb(
                    &o.dialogue_id,
                    &o.assistant_turn,
                    TurnView::Basic,
                )),
                finish_reason: finish_to_pb(o.finish_reason) as i32,
                usage: Some(usage_to_pb(o.usage)),
                metadata: Some(metadata_to_pb(o.metadata)),
            })
        }
    };
    pb::ConverseStreamResponse { event: Some(event) }
}
