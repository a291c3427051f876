//! `dialogd store rekey` on the embedded store (stopped: the server holds
//! the data dir's lock): every record not sealed with the primary key —
//! sealed with an older one, or written before encryption — is sealed
//! again with it, through the log like any write. Afterwards the
//! key-check record lists only the primary, and the other keys can leave
//! the ring. With per-dialogue keys, records are sealed with their
//! dialogue's key instead, and the keys in the dialogue key file are
//! wrapped again with the primary.

use super::write_set::WriteSet;
use super::{SledStore, keys, opened};
use crate::dialogue::ports::StoreError;
use std::collections::HashMap;

/// Records re-sealed per logged change.
const BATCH: usize = 500;

impl SledStore {
    /// Seals again what is not sealed with the primary key; the number of
    /// records changed.
    pub async fn rekey(&self) -> Result<u64, String> {
        if !self.sealer.enabled() {
            return Err("store.encryption configures no key ring: nothing to seal with".into());
        }
        let failed = |e: StoreError| e.to_string();
        // An operation record is sealed with its dialogue's key, found
        // through the dialogue's entry of it, which goes with it.
        let mut entry_of_operation = HashMap::new();
        if self.sealer.dialogue_keys().is_some() {
            for entry in self.tree.scan_prefix(b"q/").keys() {
                let entry = entry.map_err(|e| e.to_string())?;
                if let Some(split) = entry.iter().position(|b| *b == 0) {
                    entry_of_operation.insert(entry[split + 1..].to_vec(), entry.clone());
                }
            }
        }
        let mut changed = 0;
        let mut batch = WriteSet::default();
        for entry in self.tree.iter() {
            let (key, value) = entry.map_err(|e| e.to_string())?;
            if !keys::is_sealed(&key) || !self.sealer.needs_rekey(&value) {
                continue;
            }
            // `write` seals the plain value with the primary key, or the
            // dialogue's.
            let plain = opened(&self.sealer, &key, &value)
                .map_err(failed)?
                .into_owned();
            if let Some(of_dialogue) = key
                .strip_prefix(b"o/")
                .and_then(|operation| entry_of_operation.get(operation))
            {
                batch.insert(of_dialogue.clone(), &[] as &[u8]);
            }
            batch.insert(key, plain);
            changed += 1;
            if changed % BATCH as u64 == 0 {
                self.write(std::mem::take(&mut batch))
                    .await
                    .map_err(failed)?;
            }
        }
        if !batch.is_empty() {
            self.write(batch).await.map_err(failed)?;
        }
        if let Some(vault) = self.sealer.dialogue_keys() {
            changed += vault.rewrap()?;
        }
        self.check_keys(true).await.map_err(|e| e.to_string())?;
        Ok(changed)
    }
}
