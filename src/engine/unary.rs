//! Turns answered in one piece: Converse, BatchConverse and stateless
//! completions. Each runs until it is committed, the caller's deadline
//! passes or the drain time ends.

use super::plan::{Plan, PlannedTurn};
use super::{Engine, EngineError, MAX_BATCH};
use crate::dialogue::model::{CompletionRequest, Owner, TurnOutcome, TurnRequest};

impl Engine {
    /// Runs one turn to completion and returns the stored reply.
    pub async fn converse(&self, mut request: TurnRequest) -> Result<TurnOutcome, EngineError> {
        request.dialogue_id = request.dialogue_id.scoped_to(&Owner::of(&request.caller));
        self.guarded(request.deadline, async {
            match self.prepare_turn(&request).await? {
                (Plan::Replay(outcome), _guard) => Ok(*outcome),
                (Plan::Run(planned), _guard) => self.execute_unary(planned).await,
            }
        })
        .await
    }

    /// Up to `MAX_BATCH` turns on distinct dialogues, run concurrently;
    /// one result per entry, in order (an entry may arrive already failed,
    /// e.g. unreadable). Errs only when the batch itself is malformed.
    pub async fn converse_batch(
        &self,
        entries: Vec<Result<TurnRequest, EngineError>>,
    ) -> Result<Vec<Result<TurnOutcome, EngineError>>, EngineError> {
        if entries.is_empty() || entries.len() > MAX_BATCH {
            return Err(EngineError::invalid(
                "requests",
                format!("must hold 1 to {MAX_BATCH} turns, not {}", entries.len()),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, entry) in entries.iter().enumerate() {
            if let Ok(turn) = entry
                && !seen.insert(turn.dialogue_id.scoped_to(&Owner::of(&turn.caller)))
            {
                return Err(EngineError::invalid(
                    format!("requests[{i}].name"),
                    "names a dialogue an earlier request of the batch names; its turns are not independent",
                ));
            }
        }
        let turns = entries
            .into_iter()
            .map(async |entry| self.converse(entry?).await);
        Ok(futures_util::future::join_all(turns).await)
    }

    /// A stateless completion: the caller's messages go to the model (with
    /// the same checks, limits, cache and metrics as a turn) and nothing is
    /// stored. The outcome's dialogue ID is a fresh completion ID.
    pub async fn complete(&self, request: CompletionRequest) -> Result<TurnOutcome, EngineError> {
        self.guarded(request.deadline, async {
            let planned = Box::new(self.plan_completion(request).await?);
            self.execute_unary(planned).await
        })
        .await
    }

    /// Gets the whole reply to a planned turn and commits it.
    async fn execute_unary(&self, planned: Box<PlannedTurn>) -> Result<TurnOutcome, EngineError> {
        let (reply, served) = self.reply_to(&planned).await?;
        self.commit(planned, reply, served).await
    }
}
