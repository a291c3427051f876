//! One lock per dialogue: every change to a dialogue (a turn, an update, a
//! delete) runs alone, so history is never interleaved. Waiters queue in
//! arrival order (tokio's mutex is fair). Entries exist only while someone
//! holds or waits for them, so memory follows concurrency, not dialogue count.
//!
//! Replicas sharing a store also take a shared lock (`SharedLocks`) once
//! they hold the local one, so a turn waits for another replica's turn on
//! the same dialogue instead of failing when it commits.

use crate::dialogue::model::DialogueId;
use crate::dialogue::ports::{SharedLocks, StoreError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Entry = Arc<AsyncMutex<()>>;

#[derive(Default, Clone)]
pub struct DialogueLocks {
    entries: Arc<Mutex<HashMap<DialogueId, Entry>>>,
    shared: Option<Arc<dyn SharedLocks>>,
}

/// Held while a dialogue is being changed; released on drop.
pub struct DialogueGuard {
    id: DialogueId,
    entries: Arc<Mutex<HashMap<DialogueId, Entry>>>,
    guard: Option<OwnedMutexGuard<()>>,
    /// The claim across replicas, when they share one.
    shared: Option<Box<dyn Send + Sync>>,
}

impl DialogueLocks {
    /// Locks that also hold across the replicas sharing `shared`.
    pub fn shared_through(shared: Arc<dyn SharedLocks>) -> DialogueLocks {
        DialogueLocks {
            entries: Arc::default(),
            shared: Some(shared),
        }
    }

    pub async fn lock(&self, id: &DialogueId) -> Result<DialogueGuard, StoreError> {
        let entry = {
            let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id.clone()).or_default().clone()
        };
        // If this future is dropped while waiting, `entry` drops with it and
        // the map entry is cleaned up by the holder's release.
        let guard = entry.lock_owned().await;
        let mut held = DialogueGuard {
            id: id.clone(),
            entries: self.entries.clone(),
            guard: Some(guard),
            shared: None,
        };
        if let Some(shared) = &self.shared {
            held.shared = Some(shared.lock(id).await?);
        }
        Ok(held)
    }

    /// Dialogues currently locked or waited on.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for DialogueGuard {
    fn drop(&mut self) {
        drop(self.shared.take());
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        // Our guard keeps one reference and the map one: nobody else waits.
        if let Some(entry) = map.get(&self.id)
            && Arc::strong_count(entry) <= 2
        {
            map.remove(&self.id);
        }
        drop(self.guard.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn id(s: &str) -> DialogueId {
        DialogueId::parse(s).unwrap()
    }

    #[tokio::test]
    async fn a_second_locker_waits_for_the_first() {
        let locks = DialogueLocks::default();
        let first = locks.lock(&id("a")).await.unwrap();
        let second = {
            let locks = locks.clone();
            tokio::spawn(async move { locks.lock(&id("a")).await.unwrap() })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!second.is_finished(), "second lock must wait");
        // Other dialogues are not blocked.
        drop(locks.lock(&id("b")).await.unwrap());
        drop(first);
        drop(second.await.unwrap());
        assert!(
            locks.is_empty(),
            "entries are removed once nobody holds them"
        );
    }

    #[tokio::test]
    async fn an_abandoned_waiter_leaves_no_entry_behind() {
        let locks = DialogueLocks::default();
        let first = locks.lock(&id("a")).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(10), locks.lock(&id("a"))).await;
        assert!(waiting.is_err());
        drop(first);
        assert!(locks.is_empty());
    }
}
