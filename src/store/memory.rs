//! A store in this process's memory, for tests: the engine's unit tests run
//! against it, and it keeps the same contract as sled and Redis (the store
//! suite runs on it too). Nothing survives the process.

use crate::audit::{AuditEvent, AuditFilter, AuditLog};
use crate::dialogue::model::{Dialogue, DialogueId, Owner, Time, Turn};
use crate::dialogue::ports::{
    DialogueCursor, DialogueStore, ExchangeCommit, IdempotencyRecord, StoreError, SweepReport,
};
use crate::dialogue::ports::{OperationPut, OperationStore};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

struct Stored {
    dialogue: Dialogue,
    /// By index: a branch's start after the turns it borrows.
    turns: BTreeMap<u64, Arc<Turn>>,
    idempotency: HashMap<String, IdempotencyRecord>,
}

impl Stored {
    /// A new dialogue's record: no turns of its own yet (a branch counts
    /// the ones it borrows), whatever `dialogue` says.
    fn new(dialogue: &Dialogue) -> Stored {
        let borrowed = dialogue.fork.as_ref().map(|f| f.turns);
        Stored {
            dialogue: Dialogue {
                turn_count: borrowed.unwrap_or(0),
                latest_summary: dialogue.latest_summary.filter(|_| borrowed.is_some()),
                media_bytes: 0,
                ..dialogue.clone()
            },
            turns: BTreeMap::new(),
            idempotency: HashMap::new(),
        }
    }
}

#[derive(Default)]
struct State {
    dialogues: HashMap<DialogueId, Stored>,
    /// Keyed by (time, sequence) so equal times keep their order.
    audit: BTreeMap<(Time, u64), AuditEvent>,
    audit_sequence: u64,
    /// Records and whether they are pending.
    /// Record, dialogue, expire time (`None`: pending).
    operations: HashMap<String, (Vec<u8>, DialogueId, Option<Time>)>,
}

/// See the module.
#[derive(Default, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn cursor_key(d: &Dialogue) -> (std::cmp::Reverse<Time>, DialogueId) {
    (std::cmp::Reverse(d.create_time), d.id.clone())
}

#[async_trait]
impl DialogueStore for MemoryStore {
    async fn create_dialogue(&self, dialogue: &Dialogue) -> Result<(), StoreError> {
        let mut state = self.state();
        if state.dialogues.contains_key(&dialogue.id) {
            return Err(StoreError::AlreadyExists(dialogue.id.resource_name()));
        }
        state
            .dialogues
            .insert(dialogue.id.clone(), Stored::new(dialogue));
        Ok(())
    }

    async fn get_dialogue(&self, id: &DialogueId) -> Result<Option<Dialogue>, StoreError> {
        Ok(self.state().dialogues.get(id).map(|s| s.dialogue.clone()))
    }

    async fn update_dialogue(&self, dialogue: &Dialogue) -> Result<(), StoreError> {
        let mut state = self.state();
        let stored = state
            .dialogues
            .get_mut(&dialogue.id)
            .ok_or_else(|| StoreError::NotFound(dialogue.id.resource_name()))?;
        let previous = &stored.dialogue;
        stored.dialogue = Dialogue {
            turn_count: previous.turn_count,
            latest_summary: previous.latest_summary,
            media_bytes: previous.media_bytes,
            ..dialogue.clone()
        };
        Ok(())
    }

    async fn delete_dialogue(&self, id: &DialogueId) -> Result<bool, StoreError> {
        let mut state = self.state();
        state
            .operations
            .retain(|_, (_, dialogue, _)| dialogue != id);
        Ok(state.dialogues.remove(id).is_some())
    }

    async fn list_dialogues(
        &self,
        owner: &Owner,
        after: Option<&DialogueCursor>,
        limit: usize,
    ) -> Result<(Vec<Dialogue>, Option<DialogueCursor>), StoreError> {
        let now = Time::now();
        let after = after.map(|c| (std::cmp::Reverse(c.create_time), c.id.clone()));
        let mut mine: Vec<Dialogue> = self
            .state()
            .dialogues
            .values()
            .map(|s| &s.dialogue)
            .filter(|d| &d.owner == owner && !d.is_expired(now))
            .filter(|d| after.as_ref().is_none_or(|a| cursor_key(d) > *a))
            .cloned()
            .collect();
        mine.sort_by_key(cursor_key);
        let more = mine.len() > limit;
        mine.truncate(limit);
        let next = mine.last().filter(|_| more).map(|d| DialogueCursor {
            create_time: d.create_time,
            id: d.id.clone(),
        });
        Ok((mine, next))
    }

    async fn list_turns(
        &self,
        id: &DialogueId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Turn>, StoreError> {
        let state = self.state();
        let Some(stored) = state.dialogues.get(id) else {
            return Ok(Vec::new());
        };
        Ok(stored
            .turns
            .range(from..)
            .take(limit)
            .map(|(_, t)| Turn::clone(t))
            .collect())
    }

    async fn turns_before(
        &self,
        id: &DialogueId,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Turn>>, StoreError> {
        let state = self.state();
        let Some(stored) = state.dialogues.get(id) else {
            return Ok(Vec::new());
        };
        Ok(stored
            .turns
            .range(..before)
            .rev()
            .take(limit)
            .map(|(_, t)| t.clone())
            .collect())
    }

    async fn commit_exchange(&self, commit: ExchangeCommit<'_>) -> Result<(), StoreError> {
        let mut state = self.state();
        let id = commit.dialogue_id;
        if let Some(created) = commit.create {
            if state.dialogues.contains_key(id) {
                return Err(StoreError::AlreadyExists(id.resource_name()));
            }
            state.dialogues.insert(id.clone(), Stored::new(created));
        }
        let stored = state
            .dialogues
            .get_mut(id)
            .ok_or_else(|| StoreError::NotFound(id.resource_name()))?;
        if stored.dialogue.turn_count != commit.expected_turn_count {
            return Err(StoreError::Conflict(id.resource_name()));
        }
        for turn in commit.turns {
            if turn.summary.is_some() {
                stored.dialogue.latest_summary = Some(turn.index);
            }
            stored.turns.insert(turn.index, Arc::new(Turn::clone(turn)));
        }
        stored.dialogue.turn_count += commit.turns.len() as u64;
        stored.dialogue.media_bytes += commit.media_bytes();
        if let Some(last) = commit.turns.last() {
            stored.dialogue.update_time = last.create_time;
        }
        if let Some(record) = commit.idempotency {
            stored
                .idempotency
                .insert(record.request_id.clone(), record.clone());
        }
        Ok(())
    }

    async fn truncate_turns(
        &self,
        id: &DialogueId,
        keep: u64,
        expected_turn_count: u64,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let stored = state
            .dialogues
            .get_mut(id)
            .ok_or_else(|| StoreError::NotFound(id.resource_name()))?;
        if stored.dialogue.turn_count != expected_turn_count {
            return Err(StoreError::Conflict(id.resource_name()));
        }
        let removed = stored.turns.split_off(&keep);
        let media: u64 = removed
            .values()
            .map(|t| crate::dialogue::content::media_bytes(&t.content))
            .sum();
        stored.dialogue.turn_count = keep;
        stored.dialogue.media_bytes = stored.dialogue.media_bytes.saturating_sub(media);
        stored.dialogue.latest_summary = stored.dialogue.latest_summary.filter(|i| *i < keep);
        stored.idempotency.retain(|_, r| r.user_turn_index < keep);
        Ok(())
    }

    async fn adopt_prefix(
        &self,
        dialogue: &Dialogue,
        prefix: &[Arc<Turn>],
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let stored = state
            .dialogues
            .get_mut(&dialogue.id)
            .ok_or_else(|| StoreError::NotFound(dialogue.id.resource_name()))?;
        if stored.dialogue.fork.as_ref().map(|f| f.turns) != Some(prefix.len() as u64) {
            return Err(StoreError::Conflict(dialogue.id.resource_name()));
        }
        for turn in prefix {
            stored.turns.insert(turn.index, turn.clone());
        }
        let previous = &stored.dialogue;
        stored.dialogue = Dialogue {
            turn_count: previous.turn_count,
            latest_summary: previous.latest_summary,
            media_bytes: previous.media_bytes
                + prefix
                    .iter()
                    .map(|t| crate::dialogue::content::media_bytes(&t.content))
                    .sum::<u64>(),
            ..dialogue.clone()
        };
        Ok(())
    }

    async fn replace_turns(&self, id: &DialogueId, turns: &[Turn]) -> Result<(), StoreError> {
        let mut state = self.state();
        let missing = |i: u64| StoreError::NotFound(format!("{}/turns/{i}", id.resource_name()));
        let stored = state
            .dialogues
            .get_mut(id)
            .ok_or_else(|| missing(turns.first().map_or(0, |t| t.index)))?;
        if let Some(absent) = turns.iter().find(|t| !stored.turns.contains_key(&t.index)) {
            return Err(missing(absent.index));
        }
        let media = |t: &Turn| crate::dialogue::content::media_bytes(&t.content);
        for turn in turns {
            let old = stored.turns.insert(turn.index, Arc::new(turn.clone()));
            let before = old.map_or(0, |t| media(&t));
            stored.dialogue.media_bytes =
                (stored.dialogue.media_bytes + media(turn)).saturating_sub(before);
        }
        Ok(())
    }

    async fn get_idempotency(
        &self,
        id: &DialogueId,
        request_id: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let state = self.state();
        Ok(state
            .dialogues
            .get(id)
            .and_then(|s| s.idempotency.get(request_id).cloned()))
    }

    async fn sweep_expired(&self, now: Time) -> Result<SweepReport, StoreError> {
        let mut state = self.state();
        let mut report = SweepReport::default();
        state
            .operations
            .retain(|_, (.., expire)| expire.is_none_or(|at| at > now));
        for (id, stored) in state.dialogues.iter_mut() {
            let before = stored.idempotency.len();
            stored.idempotency.retain(|_, r| r.expire_time > now);
            report.idempotency_records_removed += (before - stored.idempotency.len()) as u64;
            if stored.dialogue.is_expired(now) {
                report.expired_dialogues.push(id.clone());
            }
        }
        Ok(report)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl AuditLog for MemoryStore {
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut state = self.state();
        state.audit_sequence += 1;
        let key = (event.time, state.audit_sequence);
        state.audit.insert(key, event.clone());
        Ok(())
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<AuditEvent>, Option<Vec<u8>>), StoreError> {
        let after = match after {
            None => None,
            Some(raw) => {
                let bytes: [u8; 16] = raw
                    .try_into()
                    .map_err(|_| StoreError::Corrupt("an audit cursor".into()))?;
                let (time, sequence) = bytes.split_at(8);
                let time = i64::from_be_bytes(time.try_into().unwrap_or_default());
                let sequence = u64::from_be_bytes(sequence.try_into().unwrap_or_default());
                Some((Time(time), sequence))
            }
        };
        let state = self.state();
        let mut page = Vec::new();
        let mut last = None;
        for (key, event) in &state.audit {
            if after.is_some_and(|a| *key <= a)
                || filter.from.is_some_and(|from| event.time < from)
                || filter.to.is_some_and(|to| event.time >= to)
                || !filter.matches(event)
            {
                continue;
            }
            if page.len() == limit {
                let cursor = last.map(|(time, sequence): (Time, u64)| {
                    [time.0.to_be_bytes(), sequence.to_be_bytes()].concat()
                });
                return Ok((page, cursor));
            }
            page.push(event.clone());
            last = Some(*key);
        }
        Ok((page, None))
    }

    async fn sweep_audit(&self, before: Time) -> Result<u64, StoreError> {
        let mut state = self.state();
        let kept = state.audit.split_off(&(before, 0));
        let removed = state.audit.len() as u64;
        state.audit = kept;
        Ok(removed)
    }
}

#[async_trait]
impl OperationStore for MemoryStore {
    async fn put_operation(&self, put: OperationPut<'_>) -> Result<(), StoreError> {
        self.state().operations.insert(
            put.id.to_owned(),
            (put.record.to_vec(), put.dialogue.clone(), put.expire_time),
        );
        Ok(())
    }

    async fn get_operation(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state().operations.get(id).map(|(r, ..)| r.clone()))
    }

    async fn pending_operations(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .state()
            .operations
            .values()
            .filter(|(.., expire)| expire.is_none())
            .map(|(r, ..)| r.clone())
            .collect())
    }
}
