//! Turns: a ConverseRequest into a `TurnRequest`, and turns, outcomes and
//! stream events back into messages.

use super::{dialogue_id_from_name, dialogue_spec, time_to_pb};
use crate::auth::Principal;
use crate::dialogue::model::{
    CachePolicy, ContentPart, DialogueId, FinishReason, GenerationParams, ReplyMetadata, Role,
    StreamEvent, Turn, TurnOutcome, TurnRequest, Usage,
};
use crate::engine::EngineError;
use crate::failure::Violations;
use crate::grpc::pb::dialogue::v1 as pb;

fn content_from_pb(parts: Vec<pb::ContentPart>, v: &mut Violations) -> Vec<ContentPart> {
    parts
        .into_iter()
        .enumerate()
        .filter_map(|(i, part)| match part.kind {
            Some(pb::content_part::Kind::Text(text)) => Some(ContentPart::Text(text)),
            None => {
                v.add(format!("content[{i}]"), "has no content set");
                None
            }
        })
        .collect()
}

fn params_from_pb(g: Option<pb::GenerationConfig>) -> GenerationParams {
    let g = g.unwrap_or_default();
    let cache = match g.cache() {
        pb::CachePolicy::Unspecified => CachePolicy::Deterministic,
        pb::CachePolicy::Use => CachePolicy::Use,
        pb::CachePolicy::Bypass => CachePolicy::Bypass,
    };
    GenerationParams {
        model: g.model.filter(|m| !m.is_empty()),
        temperature: g.temperature,
        top_p: g.top_p,
        // Negative values become 0, which the engine rejects with the field.
        max_tokens: g.max_tokens.map(|m| u32::try_from(m).unwrap_or(0)),
        stop: g.stop,
        presence_penalty: g.presence_penalty,
        frequency_penalty: g.frequency_penalty,
        seed: g.seed,
        cache,
    }
}

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
    let content = content_from_pb(req.content, &mut v);
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
        params: params_from_pb(req.generation),
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

pub fn turn_to_pb(dialogue: &DialogueId, t: &Turn) -> pb::Turn {
    pb::Turn {
        name: format!("dialogues/{dialogue}/turns/{}", t.index),
        turn_id: t.index.to_string(),
        index: i64::try_from(t.index).unwrap_or(i64::MAX),
        role: role_to_pb(t.role) as i32,
        content: t
            .content
            .iter()
            .map(|p| match p {
                ContentPart::Text(text) => pb::ContentPart {
                    kind: Some(pb::content_part::Kind::Text(text.clone())),
                },
            })
            .collect(),
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
    }
}

pub fn outcome_to_pb(o: TurnOutcome) -> pb::ConverseResponse {
    pb::ConverseResponse {
        name: o.dialogue_id.resource_name(),
        dialogue_id: o.dialogue_id.to_string(),
        user_turn: Some(turn_to_pb(&o.dialogue_id, &o.user_turn)),
        turn: Some(turn_to_pb(&o.dialogue_id, &o.assistant_turn)),
        finish_reason: finish_to_pb(o.finish_reason) as i32,
        usage: Some(usage_to_pb(o.usage)),
        metadata: Some(metadata_to_pb(o.metadata)),
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
        StreamEvent::Delta { text, offset } => Event::Delta(pb::TextDelta {
            text,
            offset: i64::try_from(offset).unwrap_or(i64::MAX),
        }),
        StreamEvent::End(outcome) => {
            let o = *outcome;
            Event::End(pb::StreamEnd {
                user_turn: Some(turn_to_pb(&o.dialogue_id, &o.user_turn)),
                turn: Some(turn_to_pb(&o.dialogue_id, &o.assistant_turn)),
                finish_reason: finish_to_pb(o.finish_reason) as i32,
                usage: Some(usage_to_pb(o.usage)),
                metadata: Some(metadata_to_pb(o.metadata)),
            })
        }
    };
    pb::ConverseStreamResponse { event: Some(event) }
}
