//! A store wrapper that times every operation for
//! `dialogd_store_operation_duration_seconds`, whatever store is inside.

use crate::audit::{AuditEvent, AuditFilter, AuditLog};
use crate::dialogue::model::{Dialogue, DialogueId, Owner, Time, Turn};
use crate::dialogue::ports::{
    DialogueCursor, DialogueStore, ExchangeCommit, IdempotencyRecord, StoreError, SweepReport,
};
use crate::dialogue::ports::{OperationPut, OperationStore};
use async_trait::async_trait;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

pub struct MeteredStore<S> {
    inner: S,
}

impl<S> MeteredStore<S> {
    pub fn new(inner: S) -> MeteredStore<S> {
        MeteredStore { inner }
    }
}

async fn timed<T>(operation: &'static str, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let out = work.await;
    crate::meter::store_operation(operation, started.elapsed());
    out
}

#[async_trait]
impl<S: DialogueStore> DialogueStore for MeteredStore<S> {
    async fn create_dialogue(&self, dialogue: &Dialogue) -> Result<(), StoreError> {
        timed("create_dialogue", self.inner.create_dialogue(dialogue)).await
    }

    async fn get_dialogue(&self, id: &DialogueId) -> Result<Option<Dialogue>, StoreError> {
        timed("get_dialogue", self.inner.get_dialogue(id)).await
    }

    async fn update_dialogue(&self, dialogue: &Dialogue) -> Result<(), StoreError> {
        timed("update_dialogue", self.inner.update_dialogue(dialogue)).await
    }

    async fn delete_dialogue(&self, id: &DialogueId) -> Result<bool, StoreError> {
        timed("delete_dialogue", self.inner.delete_dialogue(id)).await
    }

    async fn adopt_prefix(
        &self,
        dialogue: &Dialogue,
        prefix: &[Arc<Turn>],
    ) -> Result<(), StoreError> {
        timed("adopt_prefix", self.inner.adopt_prefix(dialogue, prefix)).await
    }

    async fn replace_turns(&self, id: &DialogueId, turns: &[Turn]) -> Result<(), StoreError> {
        timed("replace_turns", self.inner.replace_turns(id, turns)).await
    }

    async fn truncate_turns(
        &self,
        id: &DialogueId,
        keep: u64,
        expected_turn_count: u64,
    ) -> Result<(), StoreError> {
        timed(
            "truncate_turns",
            self.inner.truncate_turns(id, keep, expected_turn_count),
        )
        .await
    }

    async fn list_dialogues(
        &self,
        owner: &Owner,
        after: Option<&DialogueCursor>,
        limit: usize,
    ) -> Result<(Vec<Dialogue>, Option<DialogueCursor>), StoreError> {
        timed(
            "list_dialogues",
            self.inner.list_dialogues(owner, after, limit),
        )
        .await
    }

    async fn list_turns(
        &self,
        id: &DialogueId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Turn>, StoreError> {
        timed("list_turns", self.inner.list_turns(id, from, limit)).await
    }

    async fn turns_before(
        &self,
        id: &DialogueId,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Turn>>, StoreError> {
        timed("turns_before", self.inner.turns_before(id, before, limit)).await
    }

    async fn commit_exchange(&self, commit: ExchangeCommit<'_>) -> Result<(), StoreError> {
        timed("commit_exchange", self.inner.commit_exchange(commit)).await
    }

    async fn get_idempotency(
        &self,
        id: &DialogueId,
        request_id: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        timed(
            "get_idempotency",
            self.inner.get_idempotency(id, request_id),
        )
        .await
    }

    async fn sweep_expired(&self, now: Time) -> Result<SweepReport, StoreError> {
        timed("sweep_expired", self.inner.sweep_expired(now)).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        timed("flush", self.inner.flush()).await
    }

    fn size_on_disk(&self) -> Option<u64> {
        self.inner.size_on_disk()
    }
}

#[async_trait]
impl<S: AuditLog> AuditLog for MeteredStore<S> {
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        timed("append_audit", self.inner.append_audit(event)).await
    }

    async fn append_audit_batch(&self, events: &[AuditEvent]) -> Result<(), (usize, StoreError)> {
        timed("append_audit", self.inner.append_audit_batch(events)).await
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<AuditEvent>, Option<Vec<u8>>), StoreError> {
        timed("list_audit", self.inner.list_audit(filter, after, limit)).await
    }

    async fn sweep_audit(&self, before: Time) -> Result<u64, StoreError> {
        timed("sweep_audit", self.inner.sweep_audit(before)).await
    }
}

#[async_trait]
impl<S: OperationStore> OperationStore for MeteredStore<S> {
    async fn put_operation(&self, put: OperationPut<'_>) -> Result<(), StoreError> {
        timed("put_operation", self.inner.put_operation(put)).await
    }

    async fn get_operation(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        timed("get_operation", self.inner.get_operation(id)).await
    }

    async fn pending_operations(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        timed("pending_operations", self.inner.pending_operations()).await
    }
}
