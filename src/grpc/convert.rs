//! Conversions between protobuf messages and engine types. Shape errors
//! (a malformed name, an unknown mask path, a NaN in `state`) are reported
//! here with the field's path; the engine checks the rules.

use crate::audit::AuditNotes;
use crate::auth::Principal;
use crate::dialogue::engine::EngineError;
use crate::dialogue::model::{
    CachePolicy, ContentPart, Dialogue, DialogueId, DialogueSpec, Expiration, FinishReason,
    GenerationParams, Owner, ReplyMetadata, Role, StreamEvent, Time, Turn, TurnOutcome,
    TurnRequest, UpdateMask, Usage,
};
use crate::failure::Violations;
use crate::pb::dialogue::v1 as pb;
use pbjson_types::value::Kind;
use serde_json::{Map, Value};

/// Deepest nesting accepted in `state` (JSON objects and lists).
const MAX_STATE_DEPTH: usize = 32;

/// Parses `dialogues/{dialogue_id}`.
pub fn dialogue_id_from_name(name: &str, field: &str) -> Result<DialogueId, EngineError> {
    let raw = name.strip_prefix("dialogues/").ok_or_else(|| {
        EngineError::invalid(
            field,
            format!("must look like dialogues/{{dialogue_id}}, got {name:?}"),
        )
    })?;
    DialogueId::parse(raw).map_err(|why| EngineError::invalid(field, format!("dialogue ID {why}")))
}

/// `dialogues/{dialogue_id}/turns/{turn_id}`: the dialogue and the turn's index.
pub fn turn_name(name: &str, field: &str) -> Result<(DialogueId, u64), EngineError> {
    let bad = || {
        EngineError::invalid(
            field,
            format!("must look like dialogues/{{dialogue_id}}/turns/{{turn_id}}, got {name:?}"),
        )
    };
    let (dialogue, turn) = name.rsplit_once("/turns/").ok_or_else(bad)?;
    let index = turn.parse::<u64>().map_err(|_| bad())?;
    Ok((dialogue_id_from_name(dialogue, field)?, index))
}

pub fn time_to_pb(t: Time) -> pbjson_types::Timestamp {
    pbjson_types::Timestamp {
        seconds: t.0.div_euclid(1_000_000_000),
        nanos: t.0.rem_euclid(1_000_000_000) as i32,
    }
}

pub fn time_from_pb(ts: &pbjson_types::Timestamp) -> Option<Time> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    let nanos = ts
        .seconds
        .checked_mul(1_000_000_000)?
        .checked_add(i64::from(ts.nanos))?;
    Some(Time(nanos))
}

fn json_from_pb(value: pbjson_types::Value, depth: usize) -> Result<Value, &'static str> {
    if depth > MAX_STATE_DEPTH {
        return Err("nests deeper than 32 levels");
    }
    Ok(match value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(b),
        Some(Kind::StringValue(s)) => Value::String(s),
        Some(Kind::NumberValue(n)) => {
            Value::Number(serde_json::Number::from_f64(n).ok_or("holds a NaN or infinite number")?)
        }
        Some(Kind::StructValue(s)) => Value::Object(object_from_pb(s, depth + 1)?),
        Some(Kind::ListValue(list)) => Value::Array(
            list.values
                .into_iter()
                .map(|v| json_from_pb(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
    })
}

fn object_from_pb(
    s: pbjson_types::Struct,
    depth: usize,
) -> Result<Map<String, Value>, &'static str> {
    s.fields
        .into_iter()
        .map(|(k, v)| Ok((k, json_from_pb(v, depth)?)))
        .collect()
}

fn json_to_pb(value: &Value) -> pbjson_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(0),
        Value::Bool(b) => Kind::BoolValue(*b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        Value::String(s) => Kind::StringValue(s.clone()),
        Value::Array(items) => Kind::ListValue(pbjson_types::ListValue {
            values: items.iter().map(json_to_pb).collect(),
        }),
        Value::Object(map) => Kind::StructValue(object_to_pb(map)),
    };
    pbjson_types::Value { kind: Some(kind) }
}

fn object_to_pb(map: &Map<String, Value>) -> pbjson_types::Struct {
    pbjson_types::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_pb(v)))
            .collect(),
    }
}

/// The caller-settable fields of a `Dialogue` message.
pub fn dialogue_spec(dialogue: pb::Dialogue, prefix: &str, v: &mut Violations) -> DialogueSpec {
    let state = dialogue.state.and_then(|s| match object_from_pb(s, 1) {
        Ok(map) => Some(map),
        Err(why) => {
            v.add(format!("{prefix}.state"), why);
            None
        }
    });
    let expiration = match dialogue.expiration {
        None => Expiration::Never,
        Some(pb::dialogue::Expiration::Ttl(d)) if d.nanos < 0 || d.seconds < 0 => {
            v.add(format!("{prefix}.ttl"), "must not be negative");
            Expiration::Never
        }
        Some(pb::dialogue::Expiration::Ttl(d)) => Expiration::Ttl(d.seconds),
        Some(pb::dialogue::Expiration::ExpireTime(ts)) => match time_from_pb(&ts) {
            Some(t) => Expiration::At(t),
            None => {
                v.add(format!("{prefix}.expire_time"), "is not a valid timestamp");
                Expiration::Never
            }
        },
    };
    DialogueSpec {
        model: dialogue.model,
        system_prompt: dialogue.system_prompt,
        labels: dialogue.labels.into_iter().collect(),
        state,
        expiration,
    }
}

/// The optional client-chosen ID of CreateDialogue.
pub fn optional_dialogue_id(raw: &str, field: &str, v: &mut Violations) -> Option<DialogueId> {
    if raw.is_empty() {
        return None;
    }
    DialogueId::parse(raw).map_err(|why| v.add(field, why)).ok()
}

pub fn update_mask(mask: Option<pbjson_types::FieldMask>) -> Result<UpdateMask, EngineError> {
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    if paths.is_empty() {
        return Err(EngineError::invalid(
            "update_mask",
            "is required: name the fields to replace (model, system_prompt, labels, state, ttl, expire_time, or *)",
        ));
    }
    let mut out = UpdateMask::default();
    let mut v = Violations::default();
    for path in &paths {
        match path.as_str() {
            "*" => {
                out = UpdateMask {
                    model: true,
                    system_prompt: true,
                    labels: true,
                    state: true,
                    expiration: true,
                }
            }
            "model" => out.model = true,
            "system_prompt" => out.system_prompt = true,
            "labels" => out.labels = true,
            "state" => out.state = true,
            "ttl" | "expire_time" => out.expiration = true,
            other => v.add(
                "update_mask",
                format!("{other:?} is not an updatable field"),
            ),
        }
    }
    Ok(v.into_result(out)?)
}

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

/// The caller's deadline from its `grpc-timeout` header (gRPC over HTTP/2:
/// up to 8 digits and a unit H, M, S, m, u or n), moved a little earlier:
/// tonic runs its own timer on the same header and answers CANCELLED, so
/// the engine must answer DEADLINE_EXCEEDED first.
pub fn deadline(metadata: &tonic::metadata::MetadataMap) -> Option<std::time::Instant> {
    let raw = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = raw.split_at_checked(raw.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let value: u64 = digits.parse().ok()?;
    let timeout = match unit {
        "H" => std::time::Duration::from_secs(value * 3600),
        "M" => std::time::Duration::from_secs(value * 60),
        "S" => std::time::Duration::from_secs(value),
        "m" => std::time::Duration::from_millis(value),
        "u" => std::time::Duration::from_micros(value),
        "n" => std::time::Duration::from_nanos(value),
        _ => return None,
    };
    let margin = (timeout / 20).min(std::time::Duration::from_millis(25));
    std::time::Instant::now().checked_add(timeout - margin)
}

/// The caller the auth layer admitted (it runs before every handler of a
/// protected method).
pub fn caller<T>(request: &tonic::Request<T>) -> Result<Principal, tonic::Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| tonic::Status::unauthenticated("no authenticated caller"))
}

/// Where a handler tells the audit layer which resource the call is on.
pub fn audit_notes<T>(request: &tonic::Request<T>) -> AuditNotes {
    request
        .extensions()
        .get::<AuditNotes>()
        .cloned()
        .unwrap_or_default()
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

/// A page size field: negative is an error, 0 means the default.
pub fn page_size(raw: i32) -> Result<usize, EngineError> {
    usize::try_from(raw).map_err(|_| EngineError::invalid("page_size", "must not be negative"))
}

pub fn dialogue_to_pb(d: &Dialogue, recent_turns: &[Turn]) -> pb::Dialogue {
    pb::Dialogue {
        name: d.id.resource_name(),
        dialogue_id: d.id.to_string(),
        model: d.model.clone(),
        system_prompt: d.system_prompt.clone(),
        labels: d
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        state: d.state.as_ref().map(object_to_pb),
        expiration: d
            .expire_time
            .map(|t| pb::dialogue::Expiration::ExpireTime(time_to_pb(t))),
        create_time: Some(time_to_pb(d.create_time)),
        update_time: Some(time_to_pb(d.update_time)),
        turn_count: i64::try_from(d.turn_count).unwrap_or(i64::MAX),
        recent_turns: recent_turns.iter().map(|t| turn_to_pb(&d.id, t)).collect(),
        owner: Some(pb::DialogueOwner {
            tenant: d.owner.tenant.clone(),
            principal: d.owner.principal.clone(),
        }),
    }
}

pub fn owner_from_pb(owner: pb::DialogueOwner) -> Owner {
    Owner {
        tenant: owner.tenant,
        principal: owner.principal,
    }
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

pub fn audit_event_to_pb(e: crate::audit::AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        time: Some(time_to_pb(e.time)),
        request_id: e.request_id,
        principal: e.principal,
        tenant: e.tenant,
        client_ip: e.client_ip,
        action: e.action,
        resource: e.resource,
        status: e.status,
        duration_ms: e.duration_ms,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_dialogue_resource_names() {
        assert_eq!(
            dialogue_id_from_name("dialogues/abc_1", "name")
                .unwrap()
                .as_str(),
            "abc_1"
        );
        for bad in ["abc", "dialogues/", "dialogues/a/b", "models/x"] {
            assert!(dialogue_id_from_name(bad, "name").is_err(), "{bad}");
        }
    }

    #[test]
    fn state_round_trips_and_rejects_non_finite_numbers() {
        let json =
            serde_json::json!({"step": 3.0, "tags": ["a", null, true], "nested": {"k": "v"}});
        let map = json.as_object().unwrap().clone();
        let pb_struct = object_to_pb(&map);
        assert_eq!(object_from_pb(pb_struct, 1).unwrap(), map);

        let nan = pbjson_types::Struct {
            fields: [(
                "x".to_string(),
                pbjson_types::Value {
                    kind: Some(Kind::NumberValue(f64::NAN)),
                },
            )]
            .into(),
        };
        assert!(object_from_pb(nan, 1).is_err());
    }

    #[test]
    fn timestamps_round_trip_including_before_the_epoch() {
        for t in [Time(0), Time(1_700_000_000_123_456_789), Time(-1)] {
            assert_eq!(time_from_pb(&time_to_pb(t)), Some(t));
        }
    }

    #[test]
    fn grpc_timeouts_become_deadlines() {
        let mut md = tonic::metadata::MetadataMap::new();
        assert!(deadline(&md).is_none());
        md.insert("grpc-timeout", "1500m".parse().unwrap());
        let d = deadline(&md).unwrap();
        let left = d - std::time::Instant::now();
        assert!(
            left <= std::time::Duration::from_millis(1500)
                && left > std::time::Duration::from_millis(1000)
        );
        for bad in ["", "m", "123456789S", "10x", "-1S"] {
            md.insert("grpc-timeout", bad.parse().unwrap());
            assert!(deadline(&md).is_none(), "{bad}");
        }
    }

    #[test]
    fn update_masks_accept_known_paths_only() {
        let mask = |paths: &[&str]| {
            update_mask(Some(pbjson_types::FieldMask {
                paths: paths.iter().map(|p| p.to_string()).collect(),
            }))
        };
        assert!(mask(&["state", "ttl"]).unwrap().expiration);
        assert!(mask(&["*"]).unwrap().model);
        assert!(mask(&[]).is_err());
        assert!(mask(&["turn_count"]).is_err());
    }
}
