//! Branches: a dialogue that starts from the first turns of another (a
//! Responses call continuing from an older response) shares those turns
//! by reference instead of copying them. Reads compose a branch's own
//! turns with its parent's (and theirs, up the line); a dialogue about to
//! lose turns a branch borrows — erased, expired, its last exchange removed
//! — first gives each such branch its own copy ("adoption").
//!
//! Cost model: creating a branch writes its settings and one entry in its
//! parent's list of branches, whatever the length of the shared history.
//! Reading a branch's history costs one settings read per ancestor the
//! read reaches into (prompt building reads newest first and stops at the
//! context budget, so usually none). Erasing a dialogue copies the turns
//! each live branch borrows from it, once. A branch of a line already
//! `MAX_DEPTH` deep, or of a dialogue with `MAX_BRANCHES` branches, is
//! created as a copy instead, which bounds both.
//!
//! Locks go parent before branch only (a branch never locks its parent),
//! so adoption under the parent's lock cannot deadlock.

use super::history::History;
use super::{Engine, EngineError};
use crate::auth::Principal;
use crate::dialogue::model::{
    Dialogue, DialogueId, ForkOrigin, Owner, PromptMessage, Role, Time, Turn,
};
use crate::dialogue::ports::{ExchangeCommit, StoreError};
use std::sync::Arc;

/// Ancestors a read may walk through before a new branch is a copy.
pub const MAX_DEPTH: usize = 8;
/// Branches one dialogue lends turns to before a new one is a copy.
pub const MAX_BRANCHES: usize = 256;

impl Engine {
    /// A new dialogue `new_id` of the caller holding the first `turns`
    /// turns of the caller's dialogue `id` (they must end with a reply),
    /// with its settings; later turns go to the branch alone.
    pub async fn branch_dialogue(
        &self,
        caller: &Principal,
        id: &DialogueId,
        turns: u64,
        new_id: DialogueId,
    ) -> Result<Dialogue, EngineError> {
        let owner = Owner::of(caller);
        let id = &id.scoped_to(&owner);
        let new_id = new_id.scoped_to(&owner);
        let now = Time::now();
        let _guard = self.locks.lock(id).await?;
        let mut parent = self.load(caller, id, now).await?;
        if turns == 0 || turns > parent.turn_count {
            return Err(EngineError::NotFound(format!(
                "{}/turns/{}",
                id.resource_name(),
                turns.saturating_sub(1)
            )));
        }
        // A branch ends where an exchange does: on a reply (or an item a
        // caller added), never on a turn still waiting for its answer.
        let last = self.history().before(&parent, turns, 1).await?;
        if !last
            .first()
            .is_some_and(|t| t.role == Role::Assistant || t.added)
        {
            return Err(EngineError::FailedPrecondition {
                reason: "NOT_AN_EXCHANGE_BOUNDARY",
                message: format!(
                    "{}/turns/{} is not a reply; a branch starts after one",
                    id.resource_name(),
                    turns - 1
                ),
            });
        }
        let mut branch = Dialogue {
            id: new_id,
            create_time: now,
            update_time: now,
            turn_count: turns,
            latest_summary: parent.latest_summary.filter(|&s| s < turns),
            media_bytes: 0,
            fork: Some(ForkOrigin {
                parent: parent.id.clone(),
                turns,
            }),
            branches: Vec::new(),
            ..parent.clone()
        };
        if parent.branches.len() >= MAX_BRANCHES {
            self.forget_erased_branches(&mut parent).await?;
        }
        if self.depth(&parent).await? >= MAX_DEPTH || parent.branches.len() >= MAX_BRANCHES {
            let prefix = self.history().from(&parent, 0, turns as usize).await?;
            branch.fork = None;
            branch.turn_count = 0;
            let refs: Vec<&Turn> = prefix.iter().collect();
            self.store
                .commit_exchange(ExchangeCommit {
                    create: Some(&branch),
                    dialogue_id: &branch.id,
                    expected_turn_count: 0,
                    turns: &refs,
                    idempotency: None,
                })
                .await?;
            branch.turn_count = turns;
            return Ok(branch);
        }
        // Listed before it exists: a crash in between leaves a stale name,
        // never a branch its parent does not know.
        parent.branches.push(branch.id.clone());
        self.store.update_dialogue(&parent).await?;
        self.store.create_dialogue(&branch).await?;
        Ok(branch)
    }

    /// The first `turns` turns of the caller's dialogue `id` as prompt
    /// messages (summaries left out), for a call that keeps nothing.
    pub async fn history_messages(
        &self,
        caller: &Principal,
        id: &DialogueId,
        turns: u64,
    ) -> Result<Vec<PromptMessage>, EngineError> {
        let id = &id.scoped_to(&Owner::of(caller));
        let dialogue = self.load(caller, id, Time::now()).await?;
        let read = usize::try_from(turns.min(dialogue.turn_count)).unwrap_or(usize::MAX);
        let history = self.history().from(&dialogue, 0, read).await?;
        Ok(history
            .into_iter()
            .filter(|t| t.summary.is_none() && !t.content.is_empty())
            .map(|t| PromptMessage {
                role: t.role,
                content: t.content.into(),
            })
            .collect())
    }

    /// Drops from `dialogue`'s list (it is locked by the caller) the names
    /// of branches since erased, adopted or reused: a full list is read
    /// once before a new branch must be a copy.
    async fn forget_erased_branches(&self, dialogue: &mut Dialogue) -> Result<(), EngineError> {
        let mut live = Vec::new();
        for id in std::mem::take(&mut dialogue.branches) {
            let borrows = self
                .store
                .get_dialogue(&id)
                .await?
                .and_then(|b| b.fork)
                .is_some_and(|f| f.parent == dialogue.id);
            if borrows {
                live.push(id);
            }
        }
        dialogue.branches = live;
        Ok(())
    }

    /// Ancestors above `dialogue`.
    async fn depth(&self, dialogue: &Dialogue) -> Result<usize, EngineError> {
        let mut depth = 0;
        let mut fork = dialogue.fork.clone();
        while let Some(origin) = fork {
            depth += 1;
            if depth >= MAX_DEPTH {
                break;
            }
            fork = self.ancestor(&origin).await?.fork;
        }
        Ok(depth)
    }

    async fn ancestor(&self, origin: &ForkOrigin) -> Result<Dialogue, StoreError> {
        self.history().ancestor(origin).await
    }

    /// Reads of history that follow branches to the turns they borrow.
    pub(super) fn history(&self) -> History<'_> {
        History(self.store.as_ref())
    }

    /// Gives every branch borrowing turns from index `keep` on of
    /// `dialogue` (locked by the caller) its own copy, and drops them
    /// from its list; the rest stay listed.
    pub(super) async fn release_branches(
        &self,
        dialogue: &mut Dialogue,
        keep: u64,
    ) -> Result<(), EngineError> {
        if dialogue.branches.is_empty() {
            return Ok(());
        }
        let mut still_borrowing = Vec::new();
        for branch_id in std::mem::take(&mut dialogue.branches) {
            let _guard = self.locks.lock(&branch_id).await?;
            let Some(branch) = self.store.get_dialogue(&branch_id).await? else {
                continue;
            };
            match &branch.fork {
                Some(f) if f.parent == dialogue.id && f.turns > keep => self.adopt(&branch).await?,
                Some(f) if f.parent == dialogue.id => still_borrowing.push(branch_id),
                // Erased and its name reused, or adopted already.
                _ => {}
            }
        }
        dialogue.branches = still_borrowing;
        self.store.update_dialogue(dialogue).await?;
        Ok(())
    }

    /// Copies the turns `branch` (locked by the caller) borrows into it.
    pub(super) async fn adopt(&self, branch: &Dialogue) -> Result<(), EngineError> {
        let Some(fork) = &branch.fork else {
            return Ok(());
        };
        let prefix = self.history().from(branch, 0, fork.turns as usize).await?;
        let prefix: Vec<Arc<Turn>> = prefix.into_iter().map(Arc::new).collect();
        let adopted = Dialogue {
            fork: None,
            ..branch.clone()
        };
        self.store.adopt_prefix(&adopted, &prefix).await?;
        Ok(())
    }
}
