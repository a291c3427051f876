//! What is stored per operation: its submitter, its turn as submitted and
//! its public view, as one JSON record.

use super::Operation;
use crate::auth::{Principal, Role};
use crate::dialogue::model::{
    ContentPart, DialogueId, DialogueSpec, GenerationParams, Owner, TurnRequest,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub(super) struct Record {
    /// `Owner::key()` of the submitter: only it reads the operation.
    pub owner_key: String,
    principal: String,
    tenant: String,
    roles: Vec<Role>,
    turn: SubmittedTurn,
    pub operation: Operation,
}

/// A turn as it was submitted (its caller is the record's).
#[derive(Serialize, Deserialize)]
struct SubmittedTurn {
    dialogue_id: DialogueId,
    content: Vec<ContentPart>,
    params: GenerationParams,
    request_id: Option<String>,
    create_if_missing: Option<DialogueSpec>,
}

impl Record {
    pub fn new(turn: &TurnRequest, operation: Operation) -> Record {
        let caller = &turn.caller;
        Record {
            owner_key: Owner::of(caller).key(),
            principal: caller.id.clone(),
            tenant: caller.tenant.clone(),
            roles: caller.roles.iter().copied().collect(),
            turn: SubmittedTurn {
                dialogue_id: turn.dialogue_id.clone(),
                content: turn.content.clone(),
                params: turn.params.clone(),
                request_id: turn.request_id.clone(),
                create_if_missing: turn.create_if_missing.clone(),
            },
            operation,
        }
    }

    /// The stored dialogue the turn is on (scoped to its submitter).
    pub fn dialogue(&self) -> DialogueId {
        let turn = self.turn_request();
        turn.dialogue_id.scoped_to(&Owner::of(&turn.caller))
    }

    /// The turn to run, as its submitter.
    pub fn turn_request(&self) -> TurnRequest {
        let caller = Principal::new(
            self.principal.clone(),
            self.tenant.clone(),
            self.roles.iter().copied().collect(),
            None,
        );
        let turn = &self.turn;
        TurnRequest {
            caller,
            dialogue_id: turn.dialogue_id.clone(),
            content: turn.content.clone(),
            params: turn.params.clone(),
            request_id: turn.request_id.clone(),
            create_if_missing: turn.create_if_missing.clone(),
            deadline: None,
            resumable: false,
        }
    }
}

#[cfg(test)]
impl Record {
    /// A record of an empty turn, for the queue's tests.
    pub fn for_test(id: &str, priority: super::Priority) -> Record {
        let caller = Principal::new("p".into(), "t".into(), [Role::User].into(), None);
        let turn = TurnRequest {
            caller,
            dialogue_id: DialogueId::generate(),
            content: Vec::new(),
            params: GenerationParams::default(),
            request_id: None,
            create_if_missing: None,
            deadline: None,
            resumable: false,
        };
        let now = crate::dialogue::model::Time::now();
        Record::new(
            &turn,
            Operation {
                id: id.into(),
                done: false,
                result: None,
                create_time: now,
                update_time: now,
                callback_url: String::new(),
                callback_state: super::CallbackState::None,
                callback_attempts: 0,
                priority,
            },
        )
    }
}
