//! Sealing on the embedded store, with per-dialogue data keys when
//! configured (`store::dialogue_keys`): a change sealed with its
//! dialogues' keys, a key destroyed once its dialogue's erasure is on
//! disk, an erasure a crash interrupted finished at start, and the records
//! of dialogues erased since a backup dropped when it is restored.

use super::write_set::WriteSet;
use super::{SledStore, keys};
use crate::dialogue::model::DialogueId;
use crate::dialogue::ports::StoreError;
use crate::store::sealing::{SealError, Sealer};
use std::collections::HashSet;

impl SledStore {
    /// The per-dialogue data keys, if configured.
    pub fn dialogue_keys(
        &self,
    ) -> Option<&std::sync::Arc<crate::store::dialogue_keys::DialogueKeys>> {
        self.sealer.dialogue_keys()
    }

    /// `batch` with every dialogue-content value sealed: with its
    /// dialogue's data key (created and synced first if new) when
    /// per-dialogue keys are on, else with the ring's primary key.
    pub(super) async fn sealed(&self, batch: WriteSet) -> Result<WriteSet, StoreError> {
        if !self.sealer.enabled() {
            return Ok(batch);
        }
        let mut scopes = vec![None; batch.ops().len()];
        if let Some(vault) = self.sealer.dialogue_keys() {
            let keys_of: Vec<&[u8]> = batch.ops().iter().map(|(k, _)| k.as_ref()).collect();
            let mut missing = Vec::new();
            for (scope, (key, value)) in scopes.iter_mut().zip(batch.ops()) {
                if value.is_none() || !keys::is_sealed(key) {
                    continue;
                }
                if let Some(dialogue) = keys::dialogue_of(key, &keys_of) {
                    if vault.get(dialogue).is_none() && !missing.iter().any(|m| m == dialogue) {
                        missing.push(dialogue.to_owned());
                    }
                    *scope = Some(dialogue.to_owned());
                }
            }
            if !missing.is_empty() {
                let vault = vault.clone();
                tokio::task::spawn_blocking(move || {
                    missing.iter().try_for_each(|d| vault.ensure(d).map(drop))
                })
                .await
                .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
                .map_err(StoreError::Io)?;
            }
        }
        batch.try_map_values(|i, key, value| match keys::is_sealed(key) {
            true => self
                .sealer
                .seal_in(scopes[i].as_deref(), key, value.to_vec())
                .map(Into::into)
                .map_err(StoreError::from),
            false => Ok(value),
        })
    }

    /// Before erasing `id`: marks its key as being erased, so a crash
    /// midway finishes the erasure at the next start.
    pub(super) async fn begin_shredding(&self, id: &DialogueId) -> Result<(), StoreError> {
        let Some(vault) = self.sealer.dialogue_keys().cloned() else {
            return Ok(());
        };
        let id = id.as_str().to_owned();
        self.blocking(move |_| vault.mark_erasing(&id).map(drop).map_err(StoreError::Io))
            .await
    }

    /// After erasing `id`: once the erasure is on disk (in both durability
    /// modes — a key must not go before its records), destroys its key.
    pub(super) async fn finish_shredding(&self, id: &DialogueId) -> Result<(), StoreError> {
        let Some(vault) = self.sealer.dialogue_keys().cloned() else {
            return Ok(());
        };
        let (id, wal) = (id.as_str().to_owned(), self.wal.clone());
        self.blocking(move |_| {
            wal.sync().map_err(StoreError::Io)?;
            vault.destroy(&id).map(drop).map_err(StoreError::Io)
        })
        .await
    }

    /// At start: finishes every erasure a crash interrupted (blocking).
    pub(super) fn finish_erasures(&self) -> Result<(), String> {
        let Some(vault) = self.sealer.dialogue_keys() else {
            return Ok(());
        };
        for id in vault.erasing() {
            if let Ok(dialogue) = DialogueId::from_stored(&id)
                && let Some(erasure) = Self::erasure(&self.sealer, &self.tree, &dialogue)
                    .map_err(|e| format!("finishing the erasure of {id}: {e}"))?
            {
                self.wal.apply(erasure)?;
            }
            self.wal.sync()?;
            vault.destroy(&id)?;
            tracing::info!(dialogue = %id, "finished an erasure a stop interrupted");
        }
        Ok(())
    }

    /// Removes, from a just-restored store, every record of dialogues
    /// erased since the backup was taken (their keys are gone, so their
    /// records cannot be opened); the number of such dialogues (blocking).
    pub fn drop_shredded(&self) -> Result<usize, String> {
        let Some(vault) = self.sealer.dialogue_keys() else {
            return Ok(0);
        };
        let failed = |e: sled::Error| e.to_string();
        let mut gone: HashSet<Vec<u8>> = HashSet::new();
        for entry in self.tree.iter() {
            let (key, value) = entry.map_err(failed)?;
            let Some(dialogue) = Sealer::sealed_in_dialogue(&value) else {
                continue;
            };
            // Its key destroyed — or destroyed and a dialogue of the same
            // id created since, whose key does not open it. (The backup's
            // checksum has ruled out damage by then.)
            let shredded = vault.get(dialogue).is_none()
                || matches!(self.sealer.open(&key, &value), Err(SealError::Tampered(_)));
            if keys::is_sealed(&key) && shredded {
                gone.insert(dialogue.as_bytes().to_vec());
            }
        }
        if gone.is_empty() {
            return Ok(0);
        }
        let mut operations: HashSet<Vec<u8>> = HashSet::new();
        let mut batch = sled::Batch::default();
        for entry in self.tree.iter() {
            let (key, value) = entry.map_err(failed)?;
            if belongs_to(&key, &value, &gone, &mut operations) {
                batch.remove(key);
            }
        }
        // Operation records and pending marks, found through `q/` above.
        for operation in &operations {
            batch.remove([b"o/", operation.as_slice()].concat());
            batch.remove([keys::PENDING, operation.as_slice()].concat());
        }
        self.tree.apply_batch(batch).map_err(failed)?;
        self.commits.settle()?;
        Ok(gone.len())
    }
}

/// Whether the record `key` belongs to one of the dialogues `gone`;
/// collects the operations of theirs it names.
fn belongs_to(
    key: &[u8],
    value: &[u8],
    gone: &HashSet<Vec<u8>>,
    operations: &mut HashSet<Vec<u8>>,
) -> bool {
    let Some((prefix, rest)) = key.split_at_checked(2) else {
        return false;
    };
    let until_nul = |rest: &[u8]| rest.split(|b| *b == 0).next().map(<[u8]>::to_vec);
    match prefix {
        b"m/" | b"h/" => gone.contains(rest),
        b"t/" | b"i/" => until_nul(rest).is_some_and(|id| gone.contains(&id)),
        b"q/" => {
            let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            let ours = gone.contains(&rest[..split]);
            if ours && split < rest.len() {
                operations.insert(rest[split + 1..].to_vec());
            }
            ours
        }
        b"o/" => Sealer::sealed_in_dialogue(value).is_some_and(|d| gone.contains(d.as_bytes())),
        b"c/" => gone.contains(value),
        b"x/" => match keys::parse_expiry(key) {
            Some((keys::EXPIRY_DIALOGUE, id)) => gone.contains(id),
            Some((_, rest)) => until_nul(rest).is_some_and(|id| gone.contains(&id)),
            None => false,
        },
        _ => false,
    }
}

#[cfg(test)]
#[path = "shredding_tests.rs"]
mod tests;
