//! Conversions between protobuf messages and engine types, one file per
//! resource: shape errors (a malformed name, an unknown mask path, a NaN in
//! `state`) are reported here with the field's path; the engine checks the
//! rules. This file: names, times, deadlines and what the layers put in a
//! request's extensions.

mod content;
mod dialogue;
mod generation;
mod json;
mod operation;
mod turn;

pub use dialogue::{
    dialogue_spec, dialogue_to_pb, optional_dialogue_id, owner_from_pb, update_mask,
};
pub use operation::{callback_body, operation_id, operation_to_pb, priority_from_pb};
pub use turn::{event_to_pb, outcome_to_pb, turn_request, turn_to_pb};

use crate::dialogue::model::{DialogueId, Time, TurnView};
use crate::engine::EngineError;
use crate::grpc::pb::dialogue::v1 as pb;

/// A read's `view` (AIP-157): BASIC unless FULL is asked for.
pub fn turn_view(raw: i32, field: &str) -> Result<TurnView, EngineError> {
    match pb::TurnView::try_from(raw) {
        Ok(pb::TurnView::Unspecified | pb::TurnView::Basic) => Ok(TurnView::Basic),
        Ok(pb::TurnView::Full) => Ok(TurnView::Full),
        Err(_) => Err(EngineError::invalid(
            field,
            format!("{raw} is not a TurnView"),
        )),
    }
}

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

/// The caller's deadline from its `grpc-timeout` header, moved a little
/// earlier: the layers cut the call at the header's own time
/// (`middleware::deadline`), so the engine answers first and stores nothing
/// half done.
pub fn deadline(headers: &http::HeaderMap) -> Option<std::time::Instant> {
    let timeout = crate::middleware::protocol::grpc_timeout(headers)?;
    let margin = (timeout / 20).min(std::time::Duration::from_millis(25));
    std::time::Instant::now().checked_add(timeout - margin)
}

/// A page size field: negative is an error, 0 means the default.
pub fn page_size(raw: i32) -> Result<usize, EngineError> {
    usize::try_from(raw).map_err(|_| EngineError::invalid("page_size", "must not be negative"))
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
    fn timestamps_round_trip_including_before_the_epoch() {
        for t in [Time(0), Time(1_700_000_000_123_456_789), Time(-1)] {
            assert_eq!(time_from_pb(&time_to_pb(t)), Some(t));
        }
    }

    #[test]
    fn grpc_timeouts_become_deadlines() {
        let mut md = http::HeaderMap::new();
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
}
