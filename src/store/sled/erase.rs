//! Finding what to erase: everything of one dialogue, and the expiry
//! sweep's due records. Both only read; the writes go through the log.

use super::keys;
use super::write_set::WriteSet;
use super::{SledStore, decode, opened};
use crate::dialogue::model::{DialogueId, Time};
use crate::dialogue::ports::{IdempotencyRecord, StoreError, SweepReport};
use crate::store::sealing::Sealer;

impl SledStore {
    /// The writes that erase everything of one dialogue, or None if it is
    /// gone (blocking: scans).
    pub(super) fn erasure(
        sealer: &Sealer,
        tree: &sled::Tree,
        id: &DialogueId,
    ) -> Result<Option<WriteSet>, StoreError> {
        let Some(dialogue) = Self::read_dialogue(sealer, tree, id)? else {
            return Ok(None);
        };
        let mut batch = WriteSet::default();
        let of_dialogue = keys::operations_of_prefix(id);
        for entry in tree.scan_prefix(&of_dialogue) {
            let (key, _) = entry?;
            let operation = String::from_utf8_lossy(&key[of_dialogue.len()..]).into_owned();
            batch.remove(keys::operation(&operation));
            batch.remove(keys::pending(&operation));
            batch.remove(key);
        }
        batch.remove(keys::meta(id));
        batch.remove(keys::head(id));
        batch.remove(keys::created(&dialogue.owner, dialogue.create_time, id));
        if let Some(at) = dialogue.expire_time {
            batch.remove(keys::expiry(
                at,
                keys::EXPIRY_DIALOGUE,
                id.as_str().as_bytes(),
            ));
        }
        for entry in tree.scan_prefix(keys::turn_prefix(id)).keys() {
            batch.remove(entry?);
        }
        for entry in tree.scan_prefix(keys::idempotency_prefix(id)) {
            let (key, value) = entry?;
            // A damaged record must not block erasure: drop it and move on.
            let value = opened(sealer, &key, &value);
            if let Ok(record) =
                value.and_then(|v| decode::<IdempotencyRecord>(&v, "idempotency record"))
            {
                let rest = &key[2..];
                batch.remove(keys::expiry(
                    record.expire_time,
                    keys::EXPIRY_IDEMPOTENCY,
                    rest,
                ));
            }
            batch.remove(key);
        }
        Ok(Some(batch))
    }

    /// What the expiry sweep finds due (dialogues are erased one by one
    /// by the engine) and the writes that remove the rest (blocking: scans).
    pub(super) fn sweep(
        tree: &sled::Tree,
        now: Time,
        max: usize,
    ) -> Result<(SweepReport, WriteSet), StoreError> {
        let mut report = SweepReport::default();
        let mut batch = WriteSet::default();
        for key in tree
            .range(keys::EXPIRY.to_vec()..keys::expiry_end(now))
            .keys()
            .take(max)
        {
            let key = key?;
            match keys::parse_expiry(&key) {
                Some((keys::EXPIRY_DIALOGUE, rest)) => {
                    match std::str::from_utf8(rest)
                        .ok()
                        .and_then(|s| DialogueId::from_stored(s).ok())
                    {
                        Some(id) => report.expired_dialogues.push(id),
                        None => batch.remove(key.clone()),
                    }
                }
                Some((keys::EXPIRY_OPERATION, rest)) => {
                    // rest: {dialogue id}\0{operation id}
                    if let Some(split) = rest.iter().position(|b| *b == 0) {
                        let operation = String::from_utf8_lossy(&rest[split + 1..]);
                        batch.remove(keys::operation(&operation));
                        batch.remove(keys::pending(&operation));
                    }
                    let mut of_dialogue = b"q/".to_vec();
                    of_dialogue.extend_from_slice(rest);
                    batch.remove(of_dialogue);
                    batch.remove(key.clone());
                }
                Some((keys::EXPIRY_IDEMPOTENCY, rest)) => {
                    let mut idem_key = b"i/".to_vec();
                    idem_key.extend_from_slice(rest);
                    batch.remove(idem_key);
                    batch.remove(key.clone());
                    report.idempotency_records_removed += 1;
                }
                _ => batch.remove(key.clone()),
            }
        }
        Ok((report, batch))
    }
}
