//! Removing a dialogue's last exchange (a deleted response): its turns,
//! the idempotency records that answer with them, and their share of the
//! head's counts, in one batch.

use super::write_set::WriteSet;
use super::{SledStore, decode, keys, opened};
use crate::dialogue::content::media_bytes;
use crate::dialogue::model::DialogueId;
use crate::dialogue::ports::{IdempotencyRecord, StoreError};
use crate::store::turn_codec::decode_turn;

impl SledStore {
    pub(super) async fn truncate(
        &self,
        id: &DialogueId,
        keep: u64,
        expected_turn_count: u64,
    ) -> Result<(), StoreError> {
        let head = Self::read_head(&self.tree, id)?
            .ok_or_else(|| StoreError::NotFound(id.resource_name()))?;
        if head.turn_count != expected_turn_count || keep > head.turn_count {
            return Err(StoreError::Conflict(id.resource_name()));
        }
        let mut batch = WriteSet::default();
        let mut removed_media = 0;
        let end = keys::prefix_end(&keys::turn_prefix(id));
        for entry in self.tree.range(keys::turn(id, keep)..end) {
            let (key, value) = entry?;
            let turn = decode_turn(&opened(&self.sealer, &key, &value)?, "turn")?;
            removed_media += media_bytes(&turn.content);
            batch.remove(key);
        }
        for entry in self.tree.scan_prefix(keys::idempotency_prefix(id)) {
            let (key, value) = entry?;
            let record: IdempotencyRecord =
                decode(&opened(&self.sealer, &key, &value)?, "idempotency record")?;
            if record.user_turn_index >= keep {
                batch.remove(keys::expiry(
                    record.expire_time,
                    keys::EXPIRY_IDEMPOTENCY,
                    &key[2..],
                ));
                batch.remove(key);
            }
        }
        let head = keys::Head {
            turn_count: keep,
            last_turn_time: head.last_turn_time,
            latest_summary: head.latest_summary.filter(|i| *i < keep),
            media_bytes: head.media_bytes.saturating_sub(removed_media),
        };
        batch.insert(keys::head(id).as_slice(), &keys::encode_head(&head)[..]);
        self.write(batch).await
    }
}
