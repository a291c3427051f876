//! Removing a dialogue's last exchange (a deleted response) on Redis: the
//! turns are read and the idempotency records picked here, then one script
//! trims them away only if the dialogue still holds the expected turns.

use super::RedisStore;
use crate::dialogue::content::media_bytes;
use crate::dialogue::model::DialogueId;
use crate::dialogue::ports::{IdempotencyRecord, StoreError};
use redis::AsyncCommands;

/// KEYS: head, turns, idempotency set. ARGV: expected count, turns to
/// keep, image bytes removed, idempotency key prefix, then the request IDs
/// whose records go.
const TRUNCATE: &str = r"
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '-1')
if n ~= tonumber(ARGV[1]) then return 'CONFLICT' end
local keep = tonumber(ARGV[2])
local o = math.max(n - redis.call('LLEN', KEYS[2]), 0)
if keep - o <= 0 then redis.call('DEL', KEYS[2]) else redis.call('LTRIM', KEYS[2], 0, keep - o - 1) end
redis.call('HSET', KEYS[1], 'n', keep)
if ARGV[3] ~= '0' then redis.call('HINCRBY', KEYS[1], 'b', -tonumber(ARGV[3])) end
local s = redis.call('HGET', KEYS[1], 's')
if s and s ~= '' and tonumber(s) >= keep then redis.call('HSET', KEYS[1], 's', '') end
for i = 5, #ARGV do
  redis.call('DEL', ARGV[4] .. ARGV[i])
  redis.call('SREM', KEYS[3], ARGV[i])
end
return 'OK'
";

impl RedisStore {
    pub(super) async fn truncate(
        &self,
        id: &DialogueId,
        keep: u64,
        expected_turn_count: u64,
    ) -> Result<(), StoreError> {
        let removed = self
            .read_turns(id, keep as isize, expected_turn_count as isize)
            .await?;
        let removed_media: u64 = removed.iter().map(|t| media_bytes(&t.content)).sum();
        let request_ids: Vec<String> = self.con()?.smembers(self.dialogue_key(id, "idem")).await?;
        let mut dropped = Vec::new();
        for request_id in request_ids {
            let key = self.dialogue_key(id, &format!("i:{request_id}"));
            let record: Option<String> = self.con()?.get(&key).await?;
            let answers_removed = record
                .and_then(|r| {
                    let plain = self.open(&key, &r).ok()?;
                    serde_json::from_str::<IdempotencyRecord>(&plain).ok()
                })
                .is_none_or(|r| r.user_turn_index >= keep);
            if answers_removed {
                dropped.push(request_id);
            }
        }
        let script = redis::Script::new(TRUNCATE);
        let mut call = script.prepare_invoke();
        call.key(self.dialogue_key(id, "head"))
            .key(self.dialogue_key(id, "turns"))
            .key(self.dialogue_key(id, "idem"))
            .arg(expected_turn_count)
            .arg(keep)
            .arg(removed_media)
            .arg(self.dialogue_key(id, "i:"));
        for request_id in &dropped {
            call.arg(request_id);
        }
        let outcome: String = call.invoke_async(&mut self.con()?).await?;
        match outcome.as_str() {
            "OK" => Ok(()),
            _ => Err(StoreError::Conflict(id.resource_name())),
        }
    }
}
