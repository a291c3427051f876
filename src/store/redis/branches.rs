//! A branch adopting the turns it borrowed (its parent is about to lose
//! them): one script prepends the copies and stores its settings.

use super::scripts::ADOPT;
use super::{RedisStore, encode};
use crate::dialogue::content::media_bytes;
use crate::dialogue::model::{Dialogue, Turn};
use crate::dialogue::ports::StoreError;
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
        call.key(self.dialogue_key(id, "meta"))
            .key(self.dialogue_key(id, "head"))
            .key(self.dialogue_key(id, "turns"))
            .arg(encode(dialogue)?)
            .arg(prefix.len())
            .arg(prefix.iter().map(|t| media_bytes(&t.content)).sum::<u64>());
        for turn in prefix {
            call.arg(encode_turn_text(turn)?);
        }
        let outcome: String = call.invoke_async(&mut self.con()?).await?;
        match outcome.as_str() {
            "OK" => Ok(()),
            "MISSING" => Err(StoreError::NotFound(id.resource_name())),
            _ => Err(StoreError::Conflict(id.resource_name())),
        }
    }
}
