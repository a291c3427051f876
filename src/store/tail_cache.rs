//! A store wrapper keeping each busy dialogue's most recent turns in
//! memory, so building a turn's prompt does not read and decode its history
//! from disk every time: a turn on a 10,000-turn dialogue costs what one on
//! a 10-turn dialogue does.
//!
//! A tail is a run of consecutive stored turns. Turns never change once
//! stored, so any range inside a tail is served from it; a committed
//! exchange extends the tail only when it follows the tail's last turn
//! (the store's own turn-count check guarantees it does); erasing a
//! dialogue drops its tail. Tails are bounded in turns each and in bytes
//! overall (least recently used dialogues leave first). Within one process
//! this is exact; several processes sharing a store must validate tails
//! against the stored turn count (see the Redis store).

use crate::dialogue::model::{Dialogue, DialogueId, Owner, Time, Turn};
use crate::dialogue::ports::{
    DialogueCursor, DialogueStore, ExchangeCommit, IdempotencyRecord, StoreError, SweepReport,
};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// Most turns kept per dialogue: well past what a context window holds.
const MAX_TAIL_TURNS: usize = 2048;

/// Consecutive turns of one dialogue, oldest first.
#[derive(Default)]
struct Tail {
    turns: VecDeque<Arc<Turn>>,
    /// Approximate bytes held, for the cache's weight.
    bytes: u64,
}

/// Bytes a turn holds: its text, calls, results and inline images.
fn turn_bytes(turn: &Turn) -> u64 {
    crate::dialogue::content::answer_bytes(&turn.content, true) as u64 + 160
}

impl Tail {
    fn first_index(&self) -> Option<u64> {
        self.turns.front().map(|t| t.index)
    }

    fn end_index(&self) -> Option<u64> {
        self.turns.back().map(|t| t.index + 1)
    }

    /// Turns with index < `before`, newest first, at most `limit` — if the
    /// tail holds all of them.
    fn before(&self, before: u64, limit: usize) -> Option<Vec<Arc<Turn>>> {
        let (first, end) = (self.first_index()?, self.end_index()?);
        if before > end || before < first {
            return None;
        }
        let available = (before - first) as usize;
        // The range must not reach below the tail, unless it starts at 0.
        if available < limit && first > 0 {
            return None;
        }
        let upto = (before - first) as usize;
        let from = upto.saturating_sub(limit);
        Some(self.turns.range(from..upto).rev().cloned().collect())
    }

    fn push_back(&mut self, turn: Turn) {
        self.bytes += turn_bytes(&turn);
        self.turns.push_back(Arc::new(turn));
        while self.turns.len() > MAX_TAIL_TURNS {
            if let Some(old) = self.turns.pop_front() {
                self.bytes -= turn_bytes(&old);
            }
        }
    }

    /// Adds older turns (newest first, ending right below the tail).
    fn extend_front(&mut self, newest_first: &[Arc<Turn>]) {
        for turn in newest_first {
            if self.turns.len() >= MAX_TAIL_TURNS {
                break;
            }
            self.bytes += turn_bytes(turn);
            self.turns.push_front(turn.clone());
        }
    }
}

type Shared = Arc<Mutex<Tail>>;

fn lock(tail: &Shared) -> MutexGuard<'_, Tail> {
    tail.lock().unwrap_or_else(|p| p.into_inner())
}

/// A cached tail with its weight when (re)inserted: the cache needs an
/// entry's weight to stay fixed while it holds it.
#[derive(Clone)]
struct Entry {
    tail: Shared,
    weight: u64,
}

#[derive(Clone)]
struct TailWeight;

impl quick_cache::Weighter<DialogueId, Entry> for TailWeight {
    fn weight(&self, _id: &DialogueId, entry: &Entry) -> u64 {
        entry.weight
    }
}

pub struct TailCachedStore<S> {
    inner: S,
    tails: quick_cache::sync::Cache<DialogueId, Entry, TailWeight>,
}

impl<S: DialogueStore> TailCachedStore<S> {
    pub fn new(inner: S, max_bytes: u64) -> TailCachedStore<S> {
        let estimated_dialogues = (max_bytes / (64 * 1024)).max(64) as usize;
        TailCachedStore {
            inner,
            tails: quick_cache::sync::Cache::with_weighter(
                estimated_dialogues,
                max_bytes.max(1),
                TailWeight,
            ),
        }
    }

    /// (Re-)inserts a tail with its current weight.
    fn reweigh(&self, id: &DialogueId, tail: Shared) {
        let weight = lock(&tail).bytes.max(1);
        self.tails.insert(id.clone(), Entry { tail, weight });
    }

    fn tail(&self, id: &DialogueId) -> Option<Shared> {
        self.tails.get(id).map(|e| e.tail)
    }
}

#[async_trait]
impl<S: DialogueStore> DialogueStore for TailCachedStore<S> {
    async fn create_dialogue(&self, dialogue: &Dialogue) -> Result<(), StoreError> {
        self.inner.create_dialogue(dialogue).await
    }

    async fn get_dialogue(&self, id: &DialogueId) -> Result<Option<Dialogue>, StoreError> {
        self.inner.get_dialogue(id).await
    }

    async fn update_dialogue(&self, dialogue: &Dialogue) -> Result<(), StoreError> {
        self.inner.update_dialogue(dialogue).await
    }

    async fn adopt_prefix(
        &self,
        dialogue: &Dialogue,
        prefix: &[Arc<Turn>],
    ) -> Result<(), StoreError> {
        // The tail may hold the branch's own turns only; start afresh.
        self.tails.remove(&dialogue.id);
        let adopted = self.inner.adopt_prefix(dialogue, prefix).await;
        self.tails.remove(&dialogue.id);
        adopted
    }

    async fn replace_turns(&self, id: &DialogueId, turns: &[Turn]) -> Result<(), StoreError> {
        self.tails.remove(id);
        let replaced = self.inner.replace_turns(id, turns).await;
        self.tails.remove(id);
        replaced
    }

    async fn truncate_turns(
        &self,
        id: &DialogueId,
        keep: u64,
        expected_turn_count: u64,
    ) -> Result<(), StoreError> {
        self.tails.remove(id);
        let truncated = self
            .inner
            .truncate_turns(id, keep, expected_turn_count)
            .await;
        self.tails.remove(id);
        truncated
    }

    async fn delete_dialogue(&self, id: &DialogueId) -> Result<bool, StoreError> {
        // Dropped first and again after: a reader racing the erase must
        // not leave a tail of erased turns behind.
        self.tails.remove(id);
        let erased = self.inner.delete_dialogue(id).await;
        self.tails.remove(id);
        erased
    }

    async fn list_dialogues(
        &self,
        owner: &Owner,
        after: Option<&DialogueCursor>,
        limit: usize,
    ) -> Result<(Vec<Dialogue>, Option<DialogueCursor>), StoreError> {
        self.inner.list_dialogues(owner, after, limit).await
    }

    async fn list_turns(
        &self,
        id: &DialogueId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Turn>, StoreError> {
        self.inner.list_turns(id, from, limit).await
    }

    async fn turns_before(
        &self,
        id: &DialogueId,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Turn>>, StoreError> {
        if let Some(tail) = self.tail(id)
            && let Some(hit) = lock(&tail).before(before, limit)
        {
            return Ok(hit);
        }
        let read = self.inner.turns_before(id, before, limit).await?;
        // Keep what was read when it joins the tail (or starts one).
        let Some(newest) = read.first().map(|t| t.index) else {
            return Ok(read);
        };
        let contiguous = read.windows(2).all(|w| w[1].index + 1 == w[0].index);
        if contiguous && newest + 1 == before {
            let tail = self.tail(id);
            let joined = match &tail {
                Some(tail) => {
                    let mut t = lock(tail);
                    match t.first_index() {
                        Some(first) if first == before => {
                            t.extend_front(&read);
                            true
                        }
                        _ => false,
                    }
                }
                None => {
                    let mut fresh = Tail::default();
                    fresh.extend_front(&read);
                    self.reweigh(id, Arc::new(Mutex::new(fresh)));
                    false
                }
            };
            if joined && let Some(tail) = tail {
                self.reweigh(id, tail);
            }
        }
        Ok(read)
    }

    async fn commit_exchange(&self, commit: ExchangeCommit<'_>) -> Result<(), StoreError> {
        let id = commit.dialogue_id;
        let follows = commit.expected_turn_count;
        let turns: Vec<Turn> = commit.turns.iter().map(|t| (*t).clone()).collect();
        let created = commit.create.is_some();
        self.inner.commit_exchange(commit).await?;
        match self.tail(id) {
            Some(tail) => {
                let extended = {
                    let mut t = lock(&tail);
                    if t.end_index() == Some(follows) {
                        turns.into_iter().for_each(|turn| t.push_back(turn));
                        true
                    } else {
                        false
                    }
                };
                if extended {
                    self.reweigh(id, tail);
                } else {
                    self.tails.remove(id);
                }
            }
            // A new dialogue's whole history is this exchange.
            None if created && follows == 0 => {
                let mut fresh = Tail::default();
                turns.into_iter().for_each(|turn| fresh.push_back(turn));
                self.reweigh(id, Arc::new(Mutex::new(fresh)));
            }
            None => {}
        }
        Ok(())
    }

    async fn get_idempotency(
        &self,
        id: &DialogueId,
        request_id: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.get_idempotency(id, request_id).await
    }

    async fn sweep_expired(&self, now: Time) -> Result<SweepReport, StoreError> {
        self.inner.sweep_expired(now).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.inner.size_on_disk()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Durability, StoreSettings};
    use crate::dialogue::model::{ContentPart, Role};
    use crate::store::sled::SledStore;

    fn turn(index: u64) -> Turn {
        Turn {
            index,
            role: if index.is_multiple_of(2) {
                Role::User
            } else {
                Role::Assistant
            },
            content: vec![ContentPart::Text(format!("turn {index}"))],
            create_time: Time(1),
            finish_reason: None,
            model: String::new(),
            usage: None,
            request_id: None,
            tokens: 2,
            summary: None,
            added: false,
            rule: None,
        }
    }

    fn dialogue(id: &str) -> Dialogue {
        Dialogue {
            id: DialogueId::parse(id).unwrap(),
            owner: Owner::default(),
            model: "echo".into(),
            system_prompt: String::new(),
            labels: Default::default(),
            state: None,
            expire_time: None,
            create_time: Time(1),
            update_time: Time(1),
            turn_count: 0,
            latest_summary: None,
            media_bytes: 0,
            system_prompt_tokens: 0,
            fork: None,
            branches: Vec::new(),
        }
    }

    async fn append(store: &dyn DialogueStore, d: &Dialogue, from: u64) {
        let (a, b) = (turn(from), turn(from + 1));
        store
            .commit_exchange(ExchangeCommit {
                create: (from == 0).then_some(d),
                dialogue_id: &d.id,
                expected_turn_count: from,
                turns: &[&a, &b],
                idempotency: None,
            })
            .await
            .unwrap();
    }

    fn indices(turns: &[Arc<Turn>]) -> Vec<u64> {
        turns.iter().map(|t| t.index).collect()
    }

    #[tokio::test]
    async fn every_range_answers_as_the_store_does() {
        let dir = tempfile::TempDir::new().unwrap();
        let settings = StoreSettings {
            data_dir: dir.path().to_path_buf(),
            durability: Durability::Relaxed,
            ..StoreSettings::default()
        };
        let cached = TailCachedStore::new(SledStore::open(&settings).unwrap(), 1 << 20);
        let d = dialogue("t");
        for from in (0..40).step_by(2) {
            append(&cached, &d, from).await;
        }
        // Compare with the store beneath, for every range, twice (cold
        // then warm), including ranges below and across the tail.
        for _ in 0..2 {
            for before in 0..=41 {
                for limit in [1, 3, 8, 40, 100] {
                    let got = cached.turns_before(&d.id, before, limit).await.unwrap();
                    let want = cached
                        .inner
                        .turns_before(&d.id, before, limit)
                        .await
                        .unwrap();
                    assert_eq!(
                        indices(&got),
                        indices(&want),
                        "before {before} limit {limit}"
                    );
                }
            }
        }
        // Appends extend the tail; erasure empties it.
        append(&cached, &d, 40).await;
        let newest = cached.turns_before(&d.id, 42, 3).await.unwrap();
        assert_eq!(indices(&newest), [41, 40, 39]);
        assert!(cached.delete_dialogue(&d.id).await.unwrap());
        assert!(cached.turns_before(&d.id, 42, 3).await.unwrap().is_empty());
        assert!(cached.tails.get(&d.id).is_none());
    }
}
