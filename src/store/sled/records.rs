//! The audit log and the operation records in sled, beside the
//! dialogues in the same tree (see `keys`).

use super::write_set::WriteSet;
use super::{SledStore, decode, encode, keys};
use crate::audit::{AuditEvent, AuditFilter, AuditLog};
use crate::dialogue::model::Time;
use crate::dialogue::ports::{OperationPut, OperationStore, StoreError};
use async_trait::async_trait;

#[async_trait]
impl AuditLog for SledStore {
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.append_audit_batch(std::slice::from_ref(event))
            .await
            .map_err(|(_, e)| e)
    }

    async fn append_audit_batch(&self, events: &[AuditEvent]) -> Result<(), (usize, StoreError)> {
        let mut set = WriteSet::default();
        for event in events {
            set.insert(keys::audit(event.time), encode(event).map_err(|e| (0, e))?);
        }
        // One logged change, all of the batch or none of it; not waited on:
        // the log is written within the flush interval (`commits::Keeper`).
        // Each event has a key of its own, so it is applied at once.
        let _open = self.gate.read().await;
        self.wal
            .apply_independent(set)
            .map_err(|e| (0, StoreError::Io(e)))
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<AuditEvent>, Option<Vec<u8>>), StoreError> {
        let start = match after {
            Some(cursor) => {
                let mut k = cursor.to_vec();
                k.push(0);
                k
            }
            None => keys::audit_from(filter.from.unwrap_or(Time(0))),
        };
        let end = match filter.to {
            Some(to) => keys::audit_from(to),
            None => keys::prefix_end(keys::AUDIT),
        };
        let mut events = Vec::new();
        let mut last_key = None;
        for entry in self.tree.range(start..end) {
            let (key, value) = entry?;
            let event: AuditEvent = decode(&value, "audit event")?;
            if !filter.matches(&event) {
                continue;
            }
            if events.len() == limit {
                return Ok((events, last_key));
            }
            events.push(event);
            last_key = Some(key.to_vec());
        }
        Ok((events, None))
    }

    async fn sweep_audit(&self, before: Time) -> Result<u64, StoreError> {
        let wal = self.wal.clone();
        let removed = self
            .blocking(move |tree| {
                let mut batch = WriteSet::default();
                let mut removed = 0;
                for key in tree
                    .range(keys::AUDIT.to_vec()..keys::audit_from(before))
                    .keys()
                {
                    batch.remove(key?);
                    removed += 1;
                }
                wal.apply(batch).map_err(StoreError::Io)?;
                Ok(removed)
            })
            .await?;
        // In sync mode the removals reach the tree once they are durable.
        self.durable().await?;
        Ok(removed)
    }
}

#[async_trait]
impl OperationStore for SledStore {
    async fn put_operation(&self, put: OperationPut<'_>) -> Result<(), StoreError> {
        let mut batch = WriteSet::default();
        batch.insert(keys::operation(put.id), put.record);
        let of_dialogue = keys::operation_of(put.dialogue, put.id);
        match put.expire_time {
            None => batch.insert(keys::pending(put.id), &[] as &[u8]),
            Some(at) => {
                batch.remove(keys::pending(put.id));
                batch.insert(
                    keys::expiry(at, keys::EXPIRY_OPERATION, &of_dialogue[2..]),
                    &[] as &[u8],
                );
            }
        }
        batch.insert(of_dialogue, &[] as &[u8]);
        self.write(batch).await
    }

    async fn get_operation(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(keys::operation(id))?.map(|v| v.to_vec()))
    }

    async fn pending_operations(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut records = Vec::new();
        for entry in self.tree.scan_prefix(keys::PENDING) {
            let (key, _) = entry?;
            let id = String::from_utf8_lossy(&key[keys::PENDING.len()..]).into_owned();
            if let Some(record) = self.tree.get(keys::operation(&id))? {
                records.push(record.to_vec());
            }
        }
        Ok(records)
    }
}
