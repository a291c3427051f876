//! Dialogues: the caller-settable fields (with `state` as a JSON object),
//! update masks, and the resource as callers read it.

use super::json::{object_from_pb, object_to_pb};
use super::{time_from_pb, time_to_pb, turn_to_pb};
use crate::dialogue::model::{
    Dialogue, DialogueId, DialogueSpec, Expiration, Owner, Turn, TurnView, UpdateMask,
};
use crate::engine::EngineError;
use crate::failure::Violations;
use crate::grpc::pb::dialogue::v1 as pb;

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

pub fn dialogue_to_pb(d: &Dialogue, recent_turns: &[Turn], view: TurnView) -> pb::Dialogue {
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
        recent_turns: recent_turns
            .iter()
            .map(|t| turn_to_pb(&d.id, t, view))
            .collect(),
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
