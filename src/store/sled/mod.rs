//! The embedded default store on sled 0.34.
//!
//! Reads and writes hit sled's in-memory structures and take microseconds,
//! so they run inline on the async runtime; every change is logged to
//! dialogd's own write-ahead log (`wal`), which the group-commit thread
//! writes to disk, and long scans (erasing a dialogue, the expiry sweep)
//! run on the blocking pool.

mod audit;
mod branches;
mod commits;
mod erase;
pub mod export;
mod keys;
mod manifest;
pub mod opening;
mod records;
mod rekey;
mod shredding;
mod truncate;
pub mod verify;
mod wal;
mod wal_replay;
mod write_set;

use super::sealing::Sealer;
use super::turn_codec::{decode_turn, encode_turn};
use super::{GroupCommit, OpenError};
use crate::config::{Durability, StoreSettings};
use crate::dialogue::model::{Dialogue, DialogueId, Owner, Time, Turn};
use crate::dialogue::ports::{
    DialogueCursor, DialogueStore, ExchangeCommit, IdempotencyRecord, StoreError, SweepReport,
};
use async_trait::async_trait;
use commits::{Commits, Keeper};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;
use wal::Wal;
use write_set::WriteSet;

/// Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    /// Logs every change before it is applied to `tree`.
    wal: Arc<Wal>,
    /// Present in `Durability::Sync`: acknowledges writes once logged.
    group_commit: Option<Arc<GroupCommit>>,
    /// Commit sequences and the manifest.
    commits: Arc<Commits>,
    /// Keeps the manifest current; stopped (after a last flush) with the
    /// last clone. Declared after `group_commit`, so it flushes last.
    _keeper: Arc<Keeper>,
    /// Writes hold it shared; a backup holds it alone, so it copies one
    /// moment of the store.
    gate: Arc<tokio::sync::RwLock<()>>,
    /// Seals dialogue content before it is logged (`store::sealing`).
    sealer: Sealer,
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Io(format!("encoding a record: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// The plain value stored under `key` (see `store::sealing`).
fn opened<'a>(sealer: &Sealer, key: &[u8], value: &'a [u8]) -> Result<Cow<'a, [u8]>, StoreError> {
    sealer.open(key, value).map_err(StoreError::from)
}

impl SledStore {
    /// Opens (or creates) the store in `settings.data_dir`, refusing files
    /// that hold less than the manifest promised (see `opening`).
    pub fn open(settings: &StoreSettings) -> Result<SledStore, OpenError> {
        let sealer = Sealer::from_settings(&settings.encryption).map_err(OpenError::Keys)?;
        let (db, commits) = opening::open(settings)?;
        let sealer = match &settings.encryption.dialogue_key_file {
            None => sealer,
            Some(path) => sealer.with_dialogue_keys(path).map_err(OpenError::Keys)?,
        };
        let unusable = |reason: String| OpenError::Unusable {
            dir: settings.data_dir.display().to_string(),
            reason,
        };
        let tree = db
            .open_tree("dialogd.v1")
            .map_err(|e| unusable(e.to_string()))?;
        let wal = Arc::new(wal_replay::recover(settings, &tree, &commits)?);
        let group_commit = match settings.durability {
            Durability::Relaxed => None,
            Durability::Sync => {
                let log = wal.clone();
                let gc = GroupCommit::start(Box::new(move || log.sync()))
                    .map_err(|e| unusable(format!("cannot start the flusher thread: {e}")))?;
                Some(Arc::new(gc))
            }
        };
        // The keeper writes the log on this period in both modes: it is
        // what makes changes nobody waits for (relaxed turns, audit
        // events) durable.
        let flush_every = Duration::from_millis(settings.flush_interval_ms);
        let keeper = Keeper::start(commits.clone(), wal.clone(), flush_every)
            .map_err(|e| unusable(format!("cannot start the manifest thread: {e}")))?;
        let store = SledStore {
            db,
            tree,
            wal,
            group_commit,
            commits,
            _keeper: Arc::new(keeper),
            gate: Arc::new(tokio::sync::RwLock::new(())),
            sealer,
        };
        store.finish_erasures().map_err(unusable)?;
        Ok(store)
    }

    /// Checks the key ring against the store's key-check record (a missing
    /// or wrong key stops the start) and records the primary key's use;
    /// `only_primary` after a rekey, when no other key is in use.
    pub async fn check_keys(&self, only_primary: bool) -> Result<(), OpenError> {
        let stored = self
            .tree
            .get(keys::KEY_CHECK)
            .map_err(|e| OpenError::Keys(e.to_string()))?;
        let update = self
            .sealer
            .check_keys(stored.as_deref(), only_primary)
            .map_err(OpenError::Keys)?;
        if let Some(record) = update {
            let mut batch = WriteSet::default();
            batch.insert(keys::KEY_CHECK, record);
            self.write(batch)
                .await
                .map_err(|e| OpenError::Keys(e.to_string()))?;
        }
        Ok(())
    }

    /// Logs and applies a change and, in sync mode, waits until it is on
    /// disk.
    async fn write(&self, batch: WriteSet) -> Result<(), StoreError> {
        let batch = self.sealed(batch).await?;
        {
            let _open = self.gate.read().await;
            self.wal.apply(batch).map_err(StoreError::Io)?;
        }
        self.durable().await
    }

    /// In sync mode, waits until every change applied so far is on disk.
    async fn durable(&self) -> Result<(), StoreError> {
        match &self.group_commit {
            Some(gc) => gc.wait_durable().await.map_err(StoreError::Io),
            None => Ok(()),
        }
    }

    fn read_head(tree: &sled::Tree, id: &DialogueId) -> Result<Option<keys::Head>, StoreError> {
        match tree.get(keys::head(id))? {
            None => Ok(None),
            Some(v) => keys::decode_head(&v)
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt(format!("head of {}", id.resource_name()))),
        }
    }

    fn read_dialogue(
        sealer: &Sealer,
        tree: &sled::Tree,
        id: &DialogueId,
    ) -> Result<Option<Dialogue>, StoreError> {
        let key = keys::meta(id);
        let Some(meta) = tree.get(&key)? else {
            return Ok(None);
        };
        let mut dialogue: Dialogue = decode(&opened(sealer, &key, &meta)?, &id.resource_name())?;
        if let Some(head) = Self::read_head(tree, id)? {
            dialogue.turn_count = head.turn_count;
            dialogue.update_time = dialogue.update_time.max(head.last_turn_time);
            dialogue.latest_summary = head.latest_summary;
            dialogue.media_bytes = head.media_bytes;
        }
        Ok(Some(dialogue))
    }

    fn insert_creation(batch: &mut WriteSet, dialogue: &Dialogue) -> Result<(), StoreError> {
        let id = &dialogue.id;
        batch.insert(keys::meta(id), encode(dialogue)?);
        batch.insert(
            keys::head(id).as_slice(),
            // A branch counts the turns it borrows.
            &keys::encode_head(&keys::Head {
                turn_count: dialogue.fork.as_ref().map_or(0, |f| f.turns),
                last_turn_time: dialogue.create_time,
                latest_summary: dialogue.latest_summary.filter(|_| dialogue.fork.is_some()),
                media_bytes: 0,
            })[..],
        );
        batch.insert(
            keys::created(&dialogue.owner, dialogue.create_time, id),
            id.as_str().as_bytes(),
        );
        if let Some(at) = dialogue.expire_time {
            batch.insert(
                keys::expiry(at, keys::EXPIRY_DIALOGUE, id.as_str().as_bytes()),
                &[][..],
            );
        }
        Ok(())
    }

    fn collect_turns(
        &self,
        iter: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
        limit: usize,
    ) -> Result<Vec<Turn>, StoreError> {
        iter.take(limit)
            .map(|entry| {
                let (key, value) = entry?;
                decode_turn(&opened(&self.sealer, &key, &value)?, "turn")
            })
            .collect()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&sled::Tree) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let tree = self.tree.clone();
        let gate = self.gate.clone();
        tokio::task::spawn_blocking(move || {
            let _open = gate.blocking_read();
            work(&tree)
        })
        .await
        .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
    }
}

#[async_trait]
impl DialogueStore for SledStore {
    async fn create_dialogue(&self, dialogue: &Dialogue) -> Result<(), StoreError> {
        if self.tree.contains_key(keys::meta(&dialogue.id))? {
            return Err(StoreError::AlreadyExists(dialogue.id.resource_name()));
        }
        let mut batch = WriteSet::default();
        Self::insert_creation(&mut batch, dialogue)?;
        self.write(batch).await
    }

    async fn get_dialogue(&self, id: &DialogueId) -> Result<Option<Dialogue>, StoreError> {
        let _whole = self.wal.view();
        Self::read_dialogue(&self.sealer, &self.tree, id)
    }

    async fn update_dialogue(&self, dialogue: &Dialogue) -> Result<(), StoreError> {
        let id = &dialogue.id;
        let old = Self::read_dialogue(&self.sealer, &self.tree, id)?
            .ok_or_else(|| StoreError::NotFound(id.resource_name()))?;
        let mut batch = WriteSet::default();
        batch.insert(keys::meta(id), encode(dialogue)?);
        if old.expire_time != dialogue.expire_time {
            if let Some(at) = old.expire_time {
                batch.remove(keys::expiry(
                    at,
                    keys::EXPIRY_DIALOGUE,
                    id.as_str().as_bytes(),
                ));
            }
            if let Some(at) = dialogue.expire_time {
                batch.insert(
                    keys::expiry(at, keys::EXPIRY_DIALOGUE, id.as_str().as_bytes()),
                    &[][..],
                );
            }
        }
        self.write(batch).await
    }

    async fn delete_dialogue(&self, id: &DialogueId) -> Result<bool, StoreError> {
        self.begin_shredding(id).await?;
        let (owned, wal, sealer) = (id.clone(), self.wal.clone(), self.sealer.clone());
        // Found and logged on the blocking pool: a long dialogue's erasure
        // is thousands of removals. In relaxed mode they are applied there
        // too; in sync mode by the thread whose sync makes them durable
        // (log order), which holds other writers' acknowledgements that
        // long.
        let erased = self
            .blocking(move |tree| match Self::erasure(&sealer, tree, &owned)? {
                None => Ok(false),
                Some(erasure) => wal.apply(erasure).map(|()| true).map_err(StoreError::Io),
            })
            .await?;
        if erased {
            self.durable().await?;
        }
        self.finish_shredding(id).await?;
        Ok(erased)
    }

    async fn list_dialogues(
        &self,
        owner: &Owner,
        after: Option<&DialogueCursor>,
        limit: usize,
    ) -> Result<(Vec<Dialogue>, Option<DialogueCursor>), StoreError> {
        let prefix = keys::created_prefix(owner);
        let start = match after {
            // Just after the cursor's key: append a byte no ID ends with.
            Some(c) => {
                let mut k = keys::created(owner, c.create_time, &c.id);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let now = Time::now();
        let mut dialogues = Vec::new();
        let mut more = false;
        let _whole = self.wal.view();
        for entry in self.tree.range(start..keys::prefix_end(&prefix)).values() {
            let raw = entry?;
            let Some(id) = std::str::from_utf8(&raw)
                .ok()
                .and_then(|s| DialogueId::from_stored(s).ok())
            else {
                continue;
            };
            let Some(dialogue) = Self::read_dialogue(&self.sealer, &self.tree, &id)? else {
                continue;
            };
            if dialogue.is_expired(now) {
                continue;
            }
            if dialogues.len() == limit {
                more = true;
                break;
            }
            dialogues.push(dialogue);
        }
        let cursor = more
            .then(|| dialogues.last())
            .flatten()
            .map(|d| DialogueCursor {
                create_time: d.create_time,
                id: d.id.clone(),
            });
        Ok((dialogues, cursor))
    }

    async fn list_turns(
        &self,
        id: &DialogueId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Turn>, StoreError> {
        let range = keys::turn(id, from)..keys::prefix_end(&keys::turn_prefix(id));
        let _whole = self.wal.view();
        self.collect_turns(self.tree.range(range), limit)
    }

    async fn turns_before(
        &self,
        id: &DialogueId,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Turn>>, StoreError> {
        let range = keys::turn_prefix(id)..keys::turn(id, before);
        let _whole = self.wal.view();
        let turns = self.collect_turns(self.tree.range(range).rev(), limit)?;
        Ok(turns.into_iter().map(Arc::new).collect())
    }

    async fn commit_exchange(&self, commit: ExchangeCommit<'_>) -> Result<(), StoreError> {
        let id = commit.dialogue_id;
        let mut batch = WriteSet::default();
        let head = match (commit.create, Self::read_head(&self.tree, id)?) {
            (Some(_), Some(_)) => return Err(StoreError::AlreadyExists(id.resource_name())),
            (None, None) => return Err(StoreError::NotFound(id.resource_name())),
            (Some(dialogue), None) => {
                Self::insert_creation(&mut batch, dialogue)?;
                keys::Head {
                    turn_count: 0,
                    last_turn_time: dialogue.create_time,
                    latest_summary: None,
                    media_bytes: 0,
                }
            }
            (None, Some(head)) => head,
        };
        let stored_count = head.turn_count;
        if stored_count != commit.expected_turn_count {
            return Err(StoreError::Conflict(id.resource_name()));
        }
        let mut last_time = Time(0);
        for turn in commit.turns {
            batch.insert(keys::turn(id, turn.index), encode_turn(turn)?);
            last_time = last_time.max(turn.create_time);
        }
        let new_head = keys::Head {
            turn_count: stored_count + commit.turns.len() as u64,
            last_turn_time: last_time,
            latest_summary: commit
                .turns
                .iter()
                .rev()
                .find(|t| t.summary.is_some())
                .map(|t| t.index)
                .or(head.latest_summary),
            media_bytes: head.media_bytes + commit.media_bytes(),
        };
        batch.insert(keys::head(id).as_slice(), &keys::encode_head(&new_head)[..]);
        if let Some(record) = commit.idempotency {
            let key = keys::idempotency(id, &record.request_id);
            batch.insert(
                keys::expiry(record.expire_time, keys::EXPIRY_IDEMPOTENCY, &key[2..]),
                &[][..],
            );
            batch.insert(key, encode(record)?);
        }
        self.write(batch).await
    }

    async fn adopt_prefix(
        &self,
        dialogue: &Dialogue,
        prefix: &[Arc<Turn>],
    ) -> Result<(), StoreError> {
        self.adopt(dialogue, prefix).await
    }

    async fn replace_turns(&self, id: &DialogueId, turns: &[Turn]) -> Result<(), StoreError> {
        self.replace(id, turns).await
    }

    async fn truncate_turns(
        &self,
        id: &DialogueId,
        keep: u64,
        expected_turn_count: u64,
    ) -> Result<(), StoreError> {
        self.truncate(id, keep, expected_turn_count).await
    }

    async fn get_idempotency(
        &self,
        id: &DialogueId,
        request_id: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let key = keys::idempotency(id, request_id);
        match self.tree.get(&key)? {
            None => Ok(None),
            Some(v) => decode(&opened(&self.sealer, &key, &v)?, "idempotency record").map(Some),
        }
    }

    async fn sweep_expired(&self, now: Time) -> Result<SweepReport, StoreError> {
        let wal = self.wal.clone();
        let (report, removed) = self
            .blocking(move |tree| {
                let (report, removals) = Self::sweep(tree, now, 10_000)?;
                let removed = !removals.is_empty();
                if removed {
                    wal.apply(removals).map_err(StoreError::Io)?;
                }
                Ok((report, removed))
            })
            .await?;
        if removed {
            self.durable().await?;
        }
        Ok(report)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let (commits, wal) = (self.commits.clone(), self.wal.clone());
        tokio::task::spawn_blocking(move || commits::checkpoint(&wal, &commits))
            .await
            .map_err(|e| StoreError::Io(format!("flush task failed: {e}")))?
            .map_err(StoreError::Io)
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.db.size_on_disk().ok()
    }
}
