//! Rewrites of stored turns: a branch adopting the turns it borrowed (its
//! parent is about to lose them; one script prepends the copies and stores
//! its settings), and one turn rewritten in place (a deleted item).

use super::scripts::{ADOPT, REPLACE};
use super::{RedisStore, encode};
use crate::dialogue::content::media_bytes;
use crate::dialogue::model::{Dialogue, DialogueId, Turn};
use crate::dialogue::ports::{DialogueStore, StoreError};
use crate::store::turn_codec::encode_turn_text;
use std::sync::Arc;

impl RedisStore {
    pub(super) async fn adopt(
        &self,
        dialogue: &Dialogue,
        prefix: &[Arc<Turn>],
    ) -> Result<(), StoreError> {
        let id = &dialogue.id;
        let script = redis::Script::new(ADOPT);
        let mut call = script.prepare_invoke();
        let (meta, turns) = (
            self.dialogue_key(id, "meta"),
            self.dialogue_key(id, "turns"),
        );
        call.key(&meta)
            .key(self.dialogue_key(id, "head"))
            .key(&turns)
            .arg(self.seal(&meta, encode(dialogue)?))
            .arg(prefix.len())
            .arg(prefix.iter().map(|t| media_bytes(&t.content)).sum::<u64>());
        for turn in prefix {
            call.arg(self.seal(&turns, encode_turn_text(turn)?));
        }
        let outcome: String = call.invoke_async(&mut self.con()?).await?;
        match outcome.as_str() {
            "OK" => Ok(()),
            "MISSING" => Err(StoreError::NotFound(id.resource_name())),
            _ => Err(StoreError::Conflict(id.resource_name())),
        }
    }

    pub(super) async fn replace(&self, id: &DialogueId, turns: &[Turn]) -> Result<(), StoreError> {
        let missing = |i: u64| StoreError::NotFound(format!("{}/turns/{i}", id.resource_name()));
        let first = turns.first().map_or(0, |t| t.index);
        let Some(count) = self.get_dialogue(id).await?.map(|d| d.turn_count) else {
            return Err(missing(first));
        };
        let script = redis::Script::new(REPLACE);
        let mut call = script.prepare_invoke();
        let turns_key = self.dialogue_key(id, "turns");
        call.key(self.dialogue_key(id, "head"))
            .key(&turns_key)
            .arg(count);
        let mut change = 0i128;
        for turn in turns {
            let index = isize::try_from(turn.index).unwrap_or(isize::MAX);
            let old = self.read_turns(id, index, index).await?;
            let old = old
                .first()
                .filter(|t| t.index == turn.index)
                .ok_or_else(|| missing(turn.index))?;
            change +=
                i128::from(media_bytes(&turn.content)) - i128::from(media_bytes(&old.content));
            call.arg(turn.index)
                .arg(self.seal(&turns_key, encode_turn_text(turn)?));
        }
        call.arg(change.to_string());
        let outcome: String = call.invoke_async(&mut self.con()?).await?;
        match outcome.as_str() {
            "OK" => Ok(()),
            "MISSING" => Err(missing(first)),
            _ => Err(StoreError::Conflict(id.resource_name())),
        }
    }
}
