//! The audit log in sled: the events of one writer batch that lie within
//! `BATCH_SPAN` of its earliest share one key (`keys::audit` of that
//! earliest time), holding a JSON array (a lone event: a JSON object, as
//! stores written before batching hold). One sled insert per batch, not per
//! event: per-event inserts were ~6% of a stateless call's CPU.
//!
//! Listing reads a window `[from, to)`: a batch whose earliest event is at
//! or after `to` holds nothing before it, and one holding an event at or
//! after `from` starts no earlier than `from - BATCH_SPAN`; events are
//! filtered one by one. Events come in time order within a batch and
//! batches in the order of their earliest events. A page cursor is the
//! batch's key followed by the index (u32, big-endian) of the last event
//! returned from it.

use super::write_set::WriteSet;
use super::{SledStore, StoreError, decode, encode, keys};
use crate::audit::{AuditEvent, AuditFilter, AuditLog};
use crate::dialogue::model::Time;
use async_trait::async_trait;

/// How far the events sharing a key may lie apart (nanoseconds).
const BATCH_SPAN: i64 = 1_000_000_000;

/// The events `events` become, one key per group of nearby events.
fn grouped(events: &[AuditEvent]) -> Result<WriteSet, StoreError> {
    let mut sorted: Vec<&AuditEvent> = events.iter().collect();
    sorted.sort_by_key(|e| e.time);
    let mut set = WriteSet::default();
    let mut group: Vec<&AuditEvent> = Vec::new();
    for event in sorted {
        if let Some(first) = group.first()
            && event.time.0.saturating_sub(first.time.0) > BATCH_SPAN
        {
            set.insert(keys::audit(first.time), group_value(&group)?);
            group.clear();
        }
        group.push(event);
    }
    if let Some(first) = group.first() {
        set.insert(keys::audit(first.time), group_value(&group)?);
    }
    Ok(set)
}

fn group_value(group: &[&AuditEvent]) -> Result<Vec<u8>, StoreError> {
    if let [one] = group {
        return encode(one);
    }
    let mut out = vec![b'['];
    for (i, event) in group.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&encode(event)?);
    }
    out.push(b']');
    Ok(out)
}

/// The events one key holds.
fn events_of(value: &[u8]) -> Result<Vec<AuditEvent>, StoreError> {
    match value.first() {
        Some(b'[') => decode(value, "audit events"),
        _ => decode(value, "audit event").map(|e| vec![e]),
    }
}

/// Where a page starts: a key (inclusive) and how many of its events were
/// already returned. A cursor of a bare key (from before batching) resumes
/// after that key.
fn resume_at(cursor: &[u8]) -> (Vec<u8>, usize) {
    let key_len = keys::audit_from(Time(0)).len() + 8;
    match cursor.len() == key_len + 4 {
        true => {
            let (key, index) = cursor.split_at(key_len);
            let index = u32::from_be_bytes([index[0], index[1], index[2], index[3]]);
            (key.to_vec(), index as usize + 1)
        }
        false => {
            let mut key = cursor.to_vec();
            key.push(0);
            (key, 0)
        }
    }
}

fn cursor(key: &[u8], index: usize) -> Vec<u8> {
    let mut out = key.to_vec();
    out.extend_from_slice(&u32::try_from(index).unwrap_or(u32::MAX).to_be_bytes());
    out
}

#[async_trait]
impl AuditLog for SledStore {
    async fn append_audit(&self, event: &AuditEvent) -> Result<(), StoreError> {
        self.append_audit_batch(std::slice::from_ref(event))
            .await
            .map_err(|(_, e)| e)
    }

    async fn append_audit_batch(&self, events: &[AuditEvent]) -> Result<(), (usize, StoreError)> {
        let set = grouped(events).map_err(|e| (0, e))?;
        // One logged change, all of the batch or none of it; not waited on:
        // the log is written within the flush interval (`commits::Keeper`).
        // Each group has a key of its own, so it is applied at once.
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
        let (start, skip) = match after {
            Some(cursor) => resume_at(cursor),
            None => {
                let from = filter.from.map_or(0, |f| f.0.saturating_sub(BATCH_SPAN));
                (keys::audit_from(Time(from.max(0))), 0)
            }
        };
        let end = match filter.to {
            Some(to) => keys::audit_from(to),
            None => keys::prefix_end(keys::AUDIT),
        };
        let inside = |e: &AuditEvent| {
            filter.from.is_none_or(|from| e.time >= from)
                && filter.to.is_none_or(|to| e.time < to)
                && filter.matches(e)
        };
        let mut events = Vec::new();
        let mut last = None;
        for entry in self.tree.range(start.clone()..end) {
            let (key, value) = entry?;
            let already = if *key == *start { skip } else { 0 };
            for (i, event) in events_of(&value)?.into_iter().enumerate().skip(already) {
                if !inside(&event) {
                    continue;
                }
                if events.len() == limit {
                    return Ok((events, last));
                }
                events.push(event);
                last = Some(cursor(&key, i));
            }
        }
        Ok((events, None))
    }

    async fn sweep_audit(&self, before: Time) -> Result<u64, StoreError> {
        let wal = self.wal.clone();
        let removed = self
            .blocking(move |tree| {
                let mut batch = WriteSet::default();
                let mut removed = 0u64;
                for entry in tree.range(keys::AUDIT.to_vec()..keys::audit_from(before)) {
                    let (key, value) = entry?;
                    let events = events_of(&value)?;
                    let kept: Vec<&AuditEvent> =
                        events.iter().filter(|e| e.time >= before).collect();
                    removed += (events.len() - kept.len()) as u64;
                    match kept.is_empty() {
                        true => batch.remove(key),
                        // A group straddling `before` keeps its later events.
                        false => batch.insert(key, group_value(&kept)?),
                    }
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
