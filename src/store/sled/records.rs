//! The operation records in sled, beside the dialogues in the same tree
//! (see `keys`).

use super::write_set::WriteSet;
use super::{SledStore, keys};
use crate::dialogue::ports::{OperationPut, OperationStore, StoreError};
use async_trait::async_trait;

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
        let key = keys::operation(id);
        match self.tree.get(&key)? {
            None => Ok(None),
            Some(v) => Ok(Some(super::opened(&self.sealer, &key, &v)?.into_owned())),
        }
    }

    async fn pending_operations(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut records = Vec::new();
        for entry in self.tree.scan_prefix(keys::PENDING) {
            let (key, _) = entry?;
            let id = String::from_utf8_lossy(&key[keys::PENDING.len()..]).into_owned();
            let key = keys::operation(&id);
            if let Some(record) = self.tree.get(&key)? {
                records.push(super::opened(&self.sealer, &key, &record)?.into_owned());
            }
        }
        Ok(records)
    }
}
