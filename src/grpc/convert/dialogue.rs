//! Dialogues: the caller-settable fields (with `state` as a JSON object),
//! update masks, and the resource as callers read it.

use super::{time_from_pb, time_to_pb, turn_to_pb};
use crate::dialogue::model::{
    Dialogue, DialogueId, DialogueSpec, Expiration, Owner, Turn, UpdateMask,
};
use crate::engine::EngineError;
use crate::failure::Violations;
use crate::grpc::pb::dialogue::v1 as pb;
use pbjson_types::value::Kind;
use serde_json::{Map, Value};

/// Deepest nesting accepted in `state` (JSON objects and lists).
const MAX_STATE_DEPTH: usize = 32;

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

#[cfg(test)]
mod tests {
    use super::*;

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
