//! Rewrites of stored turns: a branch adopting the turns it borrowed (its
//! parent is about to lose them) — the copies, its settings without the
//! fork and its image bytes in one batch — and one turn rewritten in place
//! (a deleted item).

use super::write_set::WriteSet;
use super::{SledStore, encode, keys};
use crate::dialogue::content::media_bytes;
use crate::dialogue::model::DialogueId;
use crate::dialogue::model::{Dialogue, Turn};
use crate::dialogue::ports::StoreError;
use crate::store::turn_codec::{decode_turn, encode_turn};
use std::sync::Arc;

impl SledStore {
    pub(super) async fn adopt(
        &self,
        dialogue: &Dialogue,
        prefix: &[Arc<Turn>],
    ) -> Result<(), StoreError> {
        let id = &dialogue.id;
        let stored = Self::read_dialogue(&self.sealer, &self.tree, id)?
            .ok_or_else(|| StoreError::NotFound(id.resource_name()))?;
        let head = Self::read_head(&self.tree, id)?
            .ok_or_else(|| StoreError::NotFound(id.resource_name()))?;
        if stored.fork.as_ref().map(|f| f.turns) != Some(prefix.len() as u64) {
            return Err(StoreError::Conflict(id.resource_name()));
        }
        let mut batch = WriteSet::default();
        let mut added_media = 0;
        for turn in prefix {
            batch.insert(keys::turn(id, turn.index), encode_turn(turn)?);
            added_media += media_bytes(&turn.content);
        }
        batch.insert(keys::meta(id), encode(dialogue)?);
        let head = keys::Head {
            media_bytes: head.media_bytes + added_media,
            ..head
        };
        batch.insert(keys::head(id).as_slice(), &keys::encode_head(&head)[..]);
        self.write(batch).await
    }

    pub(super) async fn replace(&self, id: &DialogueId, turns: &[Turn]) -> Result<(), StoreError> {
        let missing = |i: u64| StoreError::NotFound(format!("{}/turns/{i}", id.resource_name()));
        let mut head = Self::read_head(&self.tree, id)?
            .ok_or_else(|| missing(turns.first().map_or(0, |t| t.index)))?;
        let mut batch = WriteSet::default();
        for turn in turns {
            let key = keys::turn(id, turn.index);
            let old = self.tree.get(&key)?.ok_or_else(|| missing(turn.index))?;
            let old = decode_turn(&super::opened(&self.sealer, &key, &old)?, "turn")?;
            head.media_bytes = (head.media_bytes + media_bytes(&turn.content))
                .saturating_sub(media_bytes(&old.content));
            batch.insert(keys::turn(id, turn.index), encode_turn(turn)?);
        }
        batch.insert(keys::head(id).as_slice(), &keys::encode_head(&head)[..]);
        self.write(batch).await
    }
}
