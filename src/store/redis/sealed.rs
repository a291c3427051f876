//! Encryption at rest on Redis (`store::sealing`): values sealed before
//! they are sent, opened when read, the record's key without the
//! deployment prefix as associated data, and the key-check record.

use super::RedisStore;
use crate::dialogue::ports::StoreError;
use redis::AsyncCommands;
use std::borrow::Cow;

/// The key-check record's name.
const KEY_CHECK: &str = "keycheck";

impl RedisStore {
    /// A record's associated data: its key without the deployment prefix,
    /// so a sealed value opens only under its own name.
    pub(super) fn aad<'a>(&self, key: &'a str) -> &'a [u8] {
        key.strip_prefix(self.redis.prefix())
            .unwrap_or(key)
            .as_bytes()
    }

    /// `plain`, sealed for `key` when encryption is on.
    pub(super) fn seal(&self, key: &str, plain: String) -> String {
        self.sealer.seal_text(self.aad(key), plain)
    }

    /// The plain value of `stored`, read from `key`.
    pub(super) fn open<'a>(&self, key: &str, stored: &'a str) -> Result<Cow<'a, str>, StoreError> {
        Ok(self.sealer.open_text(self.aad(key), stored)?)
    }

    /// Checks the key ring against the key-check record, as the sled
    /// store does (see `SledStore::check_keys`).
    pub async fn check_keys(&self, only_primary: bool) -> Result<(), String> {
        let key = self.key(KEY_CHECK);
        let failed = |e: StoreError| e.to_string();
        let stored: Option<Vec<u8>> = self
            .con()
            .map_err(failed)?
            .get(&key)
            .await
            .map_err(|e| e.to_string())?;
        let update = self.sealer.check_keys(stored.as_deref(), only_primary)?;
        if let Some(record) = update {
            let _: () = self
                .con()
                .map_err(failed)?
                .set(&key, record)
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}
