//! `dialogd store rekey` and `dialogd store newkey`: the key ring's side
//! of encryption at rest (`store::sealing`).

use crate::config::{Settings, StoreKind};
use crate::store::sealing::KeyRing;

/// Prints a new key-ring entry for `id` (the key is stored nowhere else).
pub fn new_key(id: &str) -> Result<bool, String> {
    if !crate::auth::keys::valid_id(id) || id.len() > 32 {
        return Err("--id must be 1 to 32 of a-z, 0-9 and '-'".into());
    }
    println!("# A new AES-256 key for store.encryption's key ring (keep it secret;");
    println!("# losing it loses every record sealed with it). Add this line to the");
    println!("# key file (or the keys_env variable, comma-separated):");
    println!("{}", KeyRing::new_entry(id));
    Ok(true)
}

/// Seals every record of the configured store with the primary key.
pub fn rekey(settings: &Settings) -> Result<bool, String> {
    let store = &settings.store;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    let changed = runtime.block_on(async {
        match store.kind {
            StoreKind::Sled => {
                let sled = crate::store::sled::SledStore::open(store).map_err(|e| e.to_string())?;
                sled.check_keys(false).await.map_err(|e| e.to_string())?;
                sled.rekey().await
            }
            StoreKind::Redis => {
                let redis = crate::store::redis::RedisConnection::connect(&store.redis)
                    .await
                    .map_err(|e| e.to_string())?;
                let sealer = crate::store::sealing::Sealer::from_settings(&store.encryption)?;
                let redis = crate::store::redis::RedisStore::new(redis, sealer);
                redis.check_keys(false).await?;
                redis
                    .rekey(store.redis.cluster_nodes.first().map(String::as_str))
                    .await
            }
        }
    })?;
    let primary = store.encryption.primary.as_deref().unwrap_or_default();
    println!("sealed {changed} records again with key {primary:?}; no other key is in use now");
    Ok(true)
}
