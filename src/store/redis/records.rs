//! The audit log and the operation records in Redis.

use super::{RedisStore, decode, encode, sortable};
use crate::audit::{AuditEvent, AuditFilter, AuditLog};
use crate::dialogue::model::{DialogueId, Time};
use crate::dialogue::ports::{OperationPut, OperationStore, StoreError};
use async_trait::async_trait;
use redis::AsyncCommands;

#[async_trait]
impl AuditLog for RedisStore {
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let member = format!("{}|{}", sortable(event.time), encode(event)?);
        let _: () = self.con()?.zadd(self.audit(), member, 0).await?;
        Ok(())
    }

    async fn list_audit(
        &self,
        filter: &AuditFilter,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<AuditEvent>, Option<Vec<u8>>), StoreError> {
        let mut min = match after {
            Some(cursor) => format!("({}", String::from_utf8_lossy(cursor)),
            None => format!("[{}", sortable(filter.from.unwrap_or(Time(0)))),
        };
        let max = match filter.to {
            Some(to) => format!("({}", sortable(to)),
            None => "+".to_owned(),
        };
        let mut events = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let members: Vec<String> = self
                .con()?
                .zrangebylex_limit(self.audit(), &min, &max, 0, 500)
                .await?;
            let exhausted = members.len() < 500;
            for member in members {
                min = format!("({member}");
                let Some((_, json)) = member.split_once('|') else {
                    continue;
                };
                let event: AuditEvent = decode(json, "audit event")?;
                if !filter.matches(&event) {
                    continue;
                }
                if events.len() == limit {
                    return Ok((events, last.map(String::into_bytes)));
                }
                events.push(event);
                last = Some(member);
            }
            if exhausted {
                return Ok((events, None));
            }
        }
    }

    async fn sweep_audit(&self, before: Time) -> Result<u64, StoreError> {
        let removed: u64 = self
            .con()?
            .zrembylex(self.audit(), "-", format!("({}", sortable(before)))
            .await?;
        Ok(removed)
    }
}

#[async_trait]
impl OperationStore for RedisStore {
    /// The record and the pending set are written apart (they need not
    /// share a slot): the id joins the set before its record is written and
    /// leaves it after, so a crash leaves at worst an id without a record
    /// (skipped) or a finished record still listed (the caller skips it).
    /// A settled record expires by Redis TTL; the dialogue's set of
    /// operations lets erasing the dialogue erase them.
    async fn put_operation(&self, put: OperationPut<'_>) -> Result<(), StoreError> {
        let mut con = self.con()?;
        let id = put.id;
        let (key, set) = (self.key(&format!("op:{id}")), self.key("ops:pending"));
        let record = self.sealer.seal(self.aad(&key), put.record.to_vec());
        let _: () = con.sadd(self.dialogue_key(put.dialogue, "ops"), id).await?;
        match put.expire_time {
            None => {
                let _: () = con.sadd(&set, id).await?;
                let _: () = con.set(&key, record).await?;
            }
            Some(at) => {
                let nanos = at.0.saturating_sub(Time::now().0);
                let ttl = u64::try_from(nanos / 1_000_000_000).unwrap_or(0).max(1);
                let _: () = con.set_ex(&key, record, ttl).await?;
                let _: () = con.srem(&set, id).await?;
            }
        }
        Ok(())
    }

    async fn get_operation(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(&format!("op:{id}"));
        let stored: Option<Vec<u8>> = self.con()?.get(&key).await?;
        match stored {
            None => Ok(None),
            Some(v) => Ok(Some(self.sealer.open(self.aad(&key), &v)?.into_owned())),
        }
    }

    async fn pending_operations(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let ids: Vec<String> = self.con()?.smembers(self.key("ops:pending")).await?;
        let mut records = Vec::new();
        for id in ids {
            match self.get_operation(&id).await? {
                Some(record) => records.push(record),
                None => {
                    let _: () = self.con()?.srem(self.key("ops:pending"), &id).await?;
                }
            }
        }
        Ok(records)
    }
}

impl RedisStore {
    /// Erases the operations of dialogue `id` (their records live in slots
    /// of their own, so one by one).
    pub(super) async fn erase_operations(&self, id: &DialogueId) -> Result<(), StoreError> {
        let set = self.dialogue_key(id, "ops");
        let operations: Vec<String> = self.con()?.smembers(&set).await?;
        for operation in &operations {
            let _: () = self
                .con()?
                .del(self.key(&format!("op:{operation}")))
                .await?;
            let _: () = self.con()?.srem(self.key("ops:pending"), operation).await?;
        }
        let _: () = self.con()?.del(&set).await?;
        Ok(())
    }
}
