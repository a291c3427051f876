//! The Redis store, for several replicas sharing one database. Same
//! guarantees as sled: O(1) turn append (RPUSH), an exchange committed
//! atomically and only on the turn count it was built on (a Lua script, so
//! two replicas can never interleave or lose a turn), idempotency records
//! with a TTL, owner indexes, erasure and audit events.
//!
//! Works on one Redis or a Redis Cluster. An owner's keys (its dialogues,
//! their turns and idempotency records, its index) carry the owner's key
//! as hash tag, so each script touches one slot and owners spread over the
//! shards. The expiry index and the audit log are single keys, written
//! apart from the scripts; the sweep repairs an expiry entry that a crash
//! left out of step. An optional prefix lets several deployments share a
//! database. Durability is Redis's: configure `appendonly yes` and
//! `appendfsync` as needed.

mod branches;
mod connection;
pub mod leases;
pub mod limits;
mod records;
mod rekey;
mod scripts;
mod sealed;
mod truncate;

pub use connection::{Connection, RedisConnection};
use scripts::{COMMIT, CREATE, ERASE, READ};

use super::sealing::Sealer;
use super::turn_codec::{decode_turn, encode_turn_text};
use crate::dialogue::model::{Dialogue, DialogueId, Owner, Time, Turn};
use crate::dialogue::ports::{
    DialogueCursor, DialogueStore, ExchangeCommit, IdempotencyRecord, StoreError, SweepReport,
};
use async_trait::async_trait;
use redis::AsyncCommands;
use std::sync::Arc;

fn encode<T: serde::Serialize>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(format!("cannot encode: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(raw: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(raw).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Nanoseconds as a fixed-width decimal, so lexical order is time order.
fn sortable(time: Time) -> String {
    format!("{:020}", u64::try_from(time.0).unwrap_or(0))
}

/// Cheap to clone: clones share the connection.
#[derive(Clone)]
pub struct RedisStore {
    redis: RedisConnection,
    create: Arc<redis::Script>,
    commit: Arc<redis::Script>,
    erase: Arc<redis::Script>,
    read: Arc<redis::Script>,
    /// Seals dialogue content before it is sent (`store::sealing`).
    sealer: Sealer,
}

impl RedisStore {
    pub fn new(redis: RedisConnection, sealer: Sealer) -> RedisStore {
        RedisStore {
            sealer,
            redis,
            create: Arc::new(redis::Script::new(CREATE)),
            commit: Arc::new(redis::Script::new(COMMIT)),
            erase: Arc::new(redis::Script::new(ERASE)),
            read: Arc::new(redis::Script::new(READ)),
        }
    }

    fn key(&self, name: &str) -> String {
        self.redis.key(name)
    }

    /// The connection (for tests working on the same keys).
    #[cfg(test)]
    pub fn connection(&self) -> RedisConnection {
        self.redis.clone()
    }

    fn dialogue_key(&self, id: &DialogueId, part: &str) -> String {
        self.redis.dialogue_key(id, part)
    }

    fn owner_index(&self, owner: &Owner) -> String {
        self.redis.owner_key(&owner.key(), "dialogues")
    }

    fn expiry(&self) -> String {
        self.key("expiry")
    }

    fn audit(&self) -> String {
        self.key("audit")
    }

    fn idempotency_prefix(&self, id: &DialogueId) -> String {
        self.dialogue_key(id, "i:")
    }

    fn index_member(dialogue: &Dialogue) -> String {
        format!(
            "{}|{}",
            sortable(dialogue.create_time),
            dialogue.id.as_str()
        )
    }

    fn expiry_score(at: Time) -> f64 {
        at.0 as f64 / 1e9
    }

    /// Puts `dialogue` in the expiry index when it expires. Runs before the
    /// dialogue is written: an entry without its dialogue is harmless (the
    /// sweep drops it), a dialogue missing from the index would never go.
    async fn index_expiry(&self, dialogue: &Dialogue) -> Result<(), StoreError> {
        if let Some(at) = dialogue.expire_time {
            let _: () = self
                .con()?
                .zadd(self.expiry(), dialogue.id.as_str(), Self::expiry_score(at))
                .await?;
        }
        Ok(())
    }

    fn con(&self) -> Result<Connection, StoreError> {
        self.redis.get()
    }

    async fn read_turns(
        &self,
        id: &DialogueId,
        from: isize,
        to: isize,
    ) -> Result<Vec<Turn>, StoreError> {
        let turns = self.dialogue_key(id, "turns");
        let raw: Vec<String> = self
            .read
            .key(self.dialogue_key(id, "head"))
            .key(&turns)
            .arg(from)
            .arg(to)
            .invoke_async(&mut self.con()?)
            .await?;
        raw.iter()
            .map(|r| decode_turn(self.open(&turns, r)?.as_bytes(), "turn"))
            .collect()
    }
}

#[async_trait]
impl DialogueStore for RedisStore {
    async fn create_dialogue(&self, dialogue: &Dialogue) -> Result<(), StoreError> {
        let id = &dialogue.id;
        let meta = self.dialogue_key(id, "meta");
        let created: i64 = self
            .create
            .key(&meta)
            .key(self.dialogue_key(id, "head"))
            .key(self.owner_index(&dialogue.owner))
            .arg(self.seal(&meta, encode(dialogue)?))
            .arg(dialogue.create_time.0)
            .arg(Self::index_member(dialogue))
            .arg(dialogue.fork.as_ref().map_or(0, |f| f.turns))
            .arg(
                dialogue
                    .latest_summary
                    .filter(|_| dialogue.fork.is_some())
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
            )
            .invoke_async(&mut self.con()?)
            .await?;
        if created == 1 {
            // After the script: an existing dialogue keeps its own expiry.
            self.index_expiry(dialogue).await?;
        }
        match created {
            1 => Ok(()),
            _ => Err(StoreError::AlreadyExists(id.resource_name())),
        }
    }

    async fn get_dialogue(&self, id: &DialogueId) -> Result<Option<Dialogue>, StoreError> {
        let meta_key = self.dialogue_key(id, "meta");
        let (meta, head): (Option<String>, std::collections::HashMap<String, String>) =
            redis::pipe()
                .get(&meta_key)
                .hgetall(self.dialogue_key(id, "head"))
                .query_async(&mut self.con()?)
                .await?;
        let Some(meta) = meta else { return Ok(None) };
        let mut dialogue: Dialogue = decode(&self.open(&meta_key, &meta)?, &id.resource_name())?;
        let number = |field: &str| head.get(field).and_then(|v| v.parse::<i64>().ok());
        dialogue.turn_count = number("n").and_then(|n| u64::try_from(n).ok()).unwrap_or(0);
        if let Some(t) = number("t") {
            dialogue.update_time = dialogue.update_time.max(Time(t));
        }
        dialogue.latest_summary = number("s").and_then(|s| u64::try_from(s).ok());
        dialogue.media_bytes = number("b").and_then(|b| u64::try_from(b).ok()).unwrap_or(0);
        Ok(Some(dialogue))
    }

    async fn update_dialogue(&self, dialogue: &Dialogue) -> Result<(), StoreError> {
        let id = &dialogue.id;
        let Some(old) = self.get_dialogue(id).await? else {
            return Err(StoreError::NotFound(id.resource_name()));
        };
        // A new expiry is indexed first and an old one dropped last, so a
        // crash in between leaves an entry the sweep corrects.
        if old.expire_time != dialogue.expire_time {
            self.index_expiry(dialogue).await?;
        }
        let meta = self.dialogue_key(id, "meta");
        let _: () = self
            .con()?
            .set(&meta, self.seal(&meta, encode(dialogue)?))
            .await?;
        if old.expire_time.is_some() && dialogue.expire_time.is_none() {
            let _: () = self.con()?.zrem(self.expiry(), id.as_str()).await?;
        }
        Ok(())
    }

    async fn delete_dialogue(&self, id: &DialogueId) -> Result<bool, StoreError> {
        let Some(dialogue) = self.get_dialogue(id).await? else {
            // No dialogue: drop a stale expiry entry, so sweeps stop
            // reporting it.
            let _: () = self.con()?.zrem(self.expiry(), id.as_str()).await?;
            return Ok(false);
        };
        let erased: i64 = self
            .erase
            .key(self.dialogue_key(id, "meta"))
            .key(self.dialogue_key(id, "head"))
            .key(self.dialogue_key(id, "turns"))
            .key(self.dialogue_key(id, "idem"))
            .key(self.owner_index(&dialogue.owner))
            .arg(Self::index_member(&dialogue))
            .arg(self.idempotency_prefix(id))
            .invoke_async(&mut self.con()?)
            .await?;
        let _: () = self.con()?.zrem(self.expiry(), id.as_str()).await?;
        self.erase_operations(id).await?;
        Ok(erased == 1)
    }

    async fn list_dialogues(
        &self,
        owner: &Owner,
        after: Option<&DialogueCursor>,
        limit: usize,
    ) -> Result<(Vec<Dialogue>, Option<DialogueCursor>), StoreError> {
        let max = match after {
            Some(c) => format!("({}|{}", sortable(c.create_time), c.id.as_str()),
            None => "+".to_owned(),
        };
        let now = Time::now();
        let mut dialogues = Vec::new();
        let mut max = max;
        // Expired entries are skipped, so read in pages until full.
        loop {
            let members: Vec<String> = self
                .con()?
                .zrevrangebylex_limit(self.owner_index(owner), &max, "-", 0, limit as isize + 1)
                .await?;
            let exhausted = members.len() <= limit;
            for member in &members {
                max = format!("({member}");
                let Some(id) = member
                    .split_once('|')
                    .and_then(|(_, id)| DialogueId::from_stored(id).ok())
                else {
                    continue;
                };
                let Some(dialogue) = self.get_dialogue(&id).await? else {
                    continue;
                };
                if dialogue.is_expired(now) {
                    continue;
                }
                if dialogues.len() == limit {
                    let cursor = dialogues.last().map(|d: &Dialogue| DialogueCursor {
                        create_time: d.create_time,
                        id: d.id.clone(),
                    });
                    return Ok((dialogues, cursor));
                }
                dialogues.push(dialogue);
            }
            if exhausted {
                return Ok((dialogues, None));
            }
        }
    }

    async fn list_turns(
        &self,
        id: &DialogueId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<Turn>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let from = isize::try_from(from).unwrap_or(isize::MAX);
        self.read_turns(id, from, from.saturating_add(limit as isize - 1))
            .await
    }

    async fn turns_before(
        &self,
        id: &DialogueId,
        before: u64,
        limit: usize,
    ) -> Result<Vec<Arc<Turn>>, StoreError> {
        if limit == 0 || before == 0 {
            return Ok(Vec::new());
        }
        let end = isize::try_from(before).unwrap_or(isize::MAX) - 1;
        let start = (end + 1).saturating_sub(limit as isize).max(0);
        let turns = self.read_turns(id, start, end).await?;
        Ok(turns.into_iter().rev().map(Arc::new).collect())
    }

    async fn commit_exchange(&self, commit: ExchangeCommit<'_>) -> Result<(), StoreError> {
        let id = commit.dialogue_id;
        let last_time = commit
            .turns
            .iter()
            .map(|t| t.create_time)
            .max()
            .unwrap_or(Time(0));
        let latest_summary = commit
            .turns
            .iter()
            .rev()
            .find(|t| t.summary.is_some())
            .map(|t| t.index.to_string())
            .unwrap_or_default();
        let request_id = commit.idempotency.map_or("", |r| r.request_id.as_str());
        let (meta, turns) = (
            self.dialogue_key(id, "meta"),
            self.dialogue_key(id, "turns"),
        );
        let idem = self.dialogue_key(id, &format!("i:{request_id}"));
        let (idem_json, idem_ttl_ms) = match commit.idempotency {
            Some(r) => {
                let ttl = (r.expire_time.0 - Time::now().0).max(1_000_000) / 1_000_000;
                (self.seal(&idem, encode(r)?), ttl)
            }
            None => (String::new(), 1),
        };
        let (create_json, member) = match commit.create {
            Some(d) => {
                self.index_expiry(d).await?;
                (self.seal(&meta, encode(d)?), Self::index_member(d))
            }
            None => (String::new(), String::new()),
        };
        let mut call = self.commit.prepare_invoke();
        call.key(&meta)
            .key(self.dialogue_key(id, "head"))
            .key(&turns)
            .key(self.redis.owner_key(id.owner_key(), "dialogues"))
            .key(&idem)
            .key(self.dialogue_key(id, "idem"))
            .arg(create_json)
            .arg(commit.expected_turn_count)
            .arg(last_time.0)
            .arg(latest_summary)
            .arg(idem_json)
            .arg(idem_ttl_ms)
            .arg(request_id)
            .arg(member)
            .arg(commit.media_bytes());
        for turn in commit.turns {
            call.arg(self.seal(&turns, encode_turn_text(turn)?));
        }
        let outcome: String = call.invoke_async(&mut self.con()?).await?;
        match outcome.as_str() {
            "OK" => Ok(()),
            "EXISTS" => Err(StoreError::AlreadyExists(id.resource_name())),
            "MISSING" => Err(StoreError::NotFound(id.resource_name())),
            _ => Err(StoreError::Conflict(id.resource_name())),
        }
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
        let key = self.dialogue_key(id, &format!("i:{request_id}"));
        let raw: Option<String> = self.con()?.get(&key).await?;
        raw.map(|r| decode(&self.open(&key, &r)?, "idempotency record"))
            .transpose()
    }

    /// Idempotency records expire by themselves (Redis TTLs).
    async fn sweep_expired(&self, now: Time) -> Result<SweepReport, StoreError> {
        let due: Vec<String> = self
            .con()?
            .zrangebyscore_limit(self.expiry(), "-inf", now.0 as f64 / 1e9, 0, 10_000)
            .await?;
        let mut report = SweepReport::default();
        for raw in due {
            let dialogue = match DialogueId::from_stored(&raw) {
                Ok(id) => self.get_dialogue(&id).await?,
                Err(_) => None,
            };
            // The index may be out of step with the dialogue (see
            // `index_expiry`): report what really expired, fix the rest.
            match dialogue {
                Some(d) if d.is_expired(now) => report.expired_dialogues.push(d.id),
                Some(Dialogue {
                    expire_time: Some(at),
                    ..
                }) => {
                    let _: () = self
                        .con()?
                        .zadd(self.expiry(), &raw, Self::expiry_score(at))
                        .await?;
                }
                _ => {
                    let _: () = self.con()?.zrem(self.expiry(), &raw).await?;
                }
            }
        }
        Ok(report)
    }

    /// Writes are acknowledged by Redis; its persistence settings decide
    /// when they reach disk.
    async fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
