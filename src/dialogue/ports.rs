//! The ports the engine owns: what it needs from a store, from locks and
//! stream slots shared by replicas, and from a token ledger — and the store
//! of asynchronous turns' records. Stores implement them (`store/`); the
//! engine names only these traits.
//!
//! A store: the engine serializes all changes to one dialogue, so
//! implementations need not lock per dialogue; they must make each call's
//! writes atomic (all or nothing after a crash) and, under
//! `Durability::Sync`, durable before the call returns.

use super::model::{Dialogue, DialogueId, Owner, Time, Turn};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0} already exists")]
    AlreadyExists(String),
    /// The stored state moved on since the caller read it.
    #[error("{0} changed concurrently")]
    Conflict(String),
    /// A stored record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The storage engine or disk failed.
    #[error("storage I/O failed: {0}")]
    Io(String),
    /// A store on the network (Redis) cannot be reached now.
    #[error("the store is unreachable: {0}")]
    Unreachable(String),
}

/// The answer to a request with an idempotency key, kept for a day so a
/// retried request returns its first result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub request_id: String,
    /// Index of the user turn; the assistant turn follows it.
    pub user_turn_index: u64,
    pub backend: String,
    pub expire_time: Time,
    /// `GenerationParams::digest` of the request: the same key with other
    /// settings (tools, response format, sampling) is a different request.
    /// Empty in records written before it existed (not compared then).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub settings_digest: String,
}

/// A completed exchange to store in one atomic write.
#[derive(Debug, Clone)]
pub struct ExchangeCommit<'a> {
    /// Set when the exchange also creates the dialogue (create_if_missing).
    pub create: Option<&'a Dialogue>,
    pub dialogue_id: &'a DialogueId,
    /// The dialogue's turn count the exchange was built on; a different
    /// stored count fails with `Conflict`.
    pub expected_turn_count: u64,
    /// In index order, following the stored ones.
    pub turns: &'a [&'a Turn],
    pub idempotency: Option<&'a IdempotencyRecord>,
}

impl ExchangeCommit<'_> {
    /// Bytes of the inline images the exchange adds to its dialogue.
    pub fn media_bytes(&self) -> u64 {
        self.turns
            .iter()
            .map(|t| super::content::media_bytes(&t.content))
            .sum()
    }
}

/// Where a ListDialogues page continues: after this dialogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogueCursor {
    pub create_time: Time,
    pub id: DialogueId,
}

/// What an expiry sweep found and removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired dialogues; the caller erases them under the dialogue's lock.
    pub expired_dialogues: Vec<DialogueId>,
    /// Idempotency records removed.
    pub idempotency_records_removed: u64,
}

#[async_trait]
pub trait DialogueStore: Send + Sync + 'static {
    /// Stores a new dialogue; `AlreadyExists` if the ID is taken. A branch
    /// (`fork` set) starts with `fork.turns` turns, none stored under its
    /// own ID: its own turns follow them, indexed after them.
    async fn create_dialogue(&self, dialogue: &Dialogue) -> Result<(), StoreError>;

    /// The dialogue with its current turn count, expired or not.
    async fn get_dialogue(&self, id: &DialogueId) -> Result<Option<Dialogue>, StoreError>;

    /// Replaces an existing dialogue's settings (not its turns).
    async fn update_dialogue(&self, dialogue: &Dialogue) -> Result<(), StoreError>;

    /// Erases a dialogue, its turns and idempotency records; false if absent.
    async fn delete_dialogue(&self, id: &DialogueId) -> Result<bool, StoreError>;

    /// `owner`'s dialogues newest first, starting after `after`; at most
    /// `limit`. Returns the cursor of the last one when more may follow.
    async fn list_dialogues(
        &self,
        owner: &Owner,
        after: Option<&DialogueCursor>,
        limit: usize,
    ) -> Result<(Vec<Dialogue>, Option<DialogueCursor>), StoreError>;

    /// Turns with index >= `from`, oldest first, at most `limit`.
    async fn list_turns(
        &self,
        id: &DialogueId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Turn>, StoreError>;

    /// Turns with index < `before`, newest first, at most `limit`. Shared
    /// (`Arc`): prompt building reads many and must not copy them.
    async fn turns_before(
        &self,
        id: &DialogueId,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Turn>>, StoreError>;

    /// Appends an exchange's turns atomically (see `ExchangeCommit`).
    async fn commit_exchange(&self, commit: ExchangeCommit<'_>) -> Result<(), StoreError>;

    /// Removes the dialogue's turns from index `keep` on (its last
    /// exchange), with the idempotency records that answer with them, if it
    /// still holds `expected_turn_count` turns (else `Conflict`).
    async fn truncate_turns(
        &self,
        id: &DialogueId,
        keep: u64,
        expected_turn_count: u64,
    ) -> Result<(), StoreError>;

    /// Gives a branch its own copy of the turns it borrows (`prefix`,
    /// indexes `0..fork.turns` in order) and stores `dialogue` (its settings
    /// with `fork` cleared), in one atomic write; `Conflict` unless the
    /// stored branch still borrows exactly `prefix.len()` turns.
    async fn adopt_prefix(
        &self,
        dialogue: &Dialogue,
        prefix: &[Arc<Turn>],
    ) -> Result<(), StoreError>;

    /// Rewrites some of the dialogue's own stored turns in place (same
    /// indexes; deleted items or responses), adjusting its image bytes, all
    /// or none; `NotFound` when an index is not an own turn's.
    async fn replace_turns(&self, id: &DialogueId, turns: &[Turn]) -> Result<(), StoreError>;

    async fn get_idempotency(
        &self,
        id: &DialogueId,
        request_id: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError>;

    /// Removes idempotency records that expired by `now` and reports expired
    /// dialogues.
    async fn sweep_expired(&self, now: Time) -> Result<SweepReport, StoreError>;

    /// Makes every acknowledged write durable (for shutdown).
    async fn flush(&self) -> Result<(), StoreError>;

    /// Bytes the store takes on disk, when it knows (for metrics).
    fn size_on_disk(&self) -> Option<u64> {
        None
    }
}

/// A dialogue lock that holds across replicas.
#[async_trait]
pub trait SharedLocks: Send + Sync + 'static {
    /// Waits until no other replica holds `id`; the returned claim holds
    /// it until dropped.
    async fn lock(&self, id: &DialogueId) -> Result<Box<dyn Send + Sync>, StoreError>;
}

/// Stream slots counted across the replicas sharing a store.
#[async_trait]
pub trait SharedSlots: Send + Sync + 'static {
    /// One of `max` slots of `caller`, held until the claim drops; `None`
    /// when all are taken.
    async fn try_open(
        &self,
        caller: &str,
        max: u32,
    ) -> Result<Option<Box<dyn Send + Sync>>, StoreError>;
}

/// Where callers' token budgets are kept: in this process, or shared by
/// replicas.
#[async_trait]
pub trait TokenLedger: Send + Sync {
    /// `Err(wait)` while the caller's budget is spent.
    async fn admit(&self, key: &str) -> Result<(), Duration>;
    /// Charges a finished turn's real usage (it may go below zero).
    async fn charge(&self, key: &str, tokens: u64);
}

/// A copy of the whole store at one moment, where the store can make one
/// (the embedded store; Redis is backed up with Redis' own tools).
pub trait StoreExport: Send + Sync + 'static {
    /// Writes a backup to `out` and returns the number of records.
    /// Blocking: run it on a blocking thread.
    fn export(&self, out: &mut dyn std::io::Write) -> Result<u64, StoreError>;
}

/// An operation record to store.
#[derive(Debug, Clone, Copy)]
pub struct OperationPut<'a> {
    pub id: &'a str,
    /// The dialogue its turn is on: erasing the dialogue erases it.
    pub dialogue: &'a DialogueId,
    /// Opaque to the store.
    pub record: &'a [u8],
    /// `None` while the operation is pending; once settled, when its
    /// record goes.
    pub expire_time: Option<Time>,
}

/// Where asynchronous turns (`crate::operations`) keep their records; a
/// record is opaque to the store.
#[async_trait]
pub trait OperationStore: Send + Sync + 'static {
    /// Stores a record, durably; while pending it is listed by
    /// `pending_operations`, once settled it is erased at its expire time
    /// (by the sweep, or the store's own TTL) or with its dialogue.
    async fn put_operation(&self, put: OperationPut<'_>) -> Result<(), StoreError>;

    async fn get_operation(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The records last put with `pending` (at start-up: work to resume).
    async fn pending_operations(&self) -> Result<Vec<Vec<u8>>, StoreError>;
}

/// Turns an image into text (OCR, or a model that can see) for models that
/// cannot see.
#[async_trait]
pub trait ImageReader: Send + Sync + 'static {
    /// Names the reader in the note saying where a text came from.
    fn name(&self) -> &str;

    async fn read(&self, image: &crate::dialogue::content::Image)
    -> Result<String, ImageReadError>;
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ImageReadError {
    /// This reader cannot take this image; the message is the caller's.
    #[error("{0}")]
    Unsupported(String),
    /// The reader failed; the detail is for the server log only.
    #[error("{0}")]
    Failed(String),
}
