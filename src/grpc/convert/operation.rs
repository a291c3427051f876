//! Operations: their names, the `Operation` message, and the callback body
//! (that message in the protobuf JSON mapping).

use super::{outcome_to_pb, time_to_pb};
use crate::engine::EngineError;
use crate::grpc::pb::dialogue::v1 as pb;
use crate::grpc::status::turn_error;
use crate::operations::{CallbackBody, CallbackState, Operation, OperationResult, Priority};
use std::sync::Arc;

/// The ID in `operations/{id}`.
pub fn operation_id(name: &str) -> Result<&str, EngineError> {
    name.strip_prefix("operations/")
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .ok_or_else(|| {
            EngineError::invalid(
                "name",
                format!("must look like operations/{{id}}, got {name:?}"),
            )
        })
}

fn callback_state_to_pb(state: CallbackState) -> pb::CallbackState {
    match state {
        CallbackState::None => pb::CallbackState::None,
        CallbackState::Pending => pb::CallbackState::Pending,
        CallbackState::Delivered => pb::CallbackState::Delivered,
        CallbackState::Failed => pb::CallbackState::Failed,
    }
}

pub fn operation_to_pb(op: &Operation) -> pb::Operation {
    pb::Operation {
        name: op.name(),
        done: op.done,
        result: op.result.as_ref().map(|result| match result {
            OperationResult::Outcome(outcome) => {
                pb::operation::Result::Response(outcome_to_pb(outcome.as_ref().clone()))
            }
            OperationResult::Failed(failure) => pb::operation::Result::Error(turn_error(failure)),
        }),
        create_time: Some(time_to_pb(op.create_time)),
        update_time: Some(time_to_pb(op.update_time)),
        callback_url: op.callback_url.clone(),
        callback_state: callback_state_to_pb(op.callback_state) as i32,
        callback_attempts: i32::try_from(op.callback_attempts).unwrap_or(i32::MAX),
        priority: match op.priority {
            Priority::High => pb::OperationPriority::High,
            Priority::Normal => pb::OperationPriority::Normal,
            Priority::Low => pb::OperationPriority::Low,
        } as i32,
    }
}

/// A SubmitTurn priority; unspecified is normal.
pub fn priority_from_pb(value: i32) -> Result<Priority, EngineError> {
    match pb::OperationPriority::try_from(value) {
        Ok(pb::OperationPriority::High) => Ok(Priority::High),
        Ok(pb::OperationPriority::Normal | pb::OperationPriority::Unspecified) => {
            Ok(Priority::Normal)
        }
        Ok(pb::OperationPriority::Low) => Ok(Priority::Low),
        Err(_) => Err(EngineError::invalid(
            "priority",
            format!("{value} is not an OperationPriority"),
        )),
    }
}

/// What a callback URL receives: the `Operation` message as JSON.
pub fn callback_body() -> CallbackBody {
    Arc::new(|op| serde_json::to_vec(&operation_to_pb(op)).map_err(|e| e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_names_carry_a_plain_id() {
        assert_eq!(operation_id("operations/op-1f").unwrap(), "op-1f");
        for bad in ["op-1", "operations/", "operations/a/b", "operations/x y"] {
            assert!(operation_id(bad).is_err(), "{bad}");
        }
    }
}
