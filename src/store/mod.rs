//! The stores: the embedded sled database (one replica) and Redis (several
//! replicas), with wrappers that meter operations and keep busy dialogues'
//! recent turns in memory, and an in-memory store for tests. Each
//! implements the ports of its consumers: the engine's `DialogueStore`
//! (and, on Redis, its shared locks, slots and token ledger), `AuditLog`,
//! `OperationStore` and the shared request limiter.

pub mod backup;
pub mod dialogue_keys;
mod group_commit;
pub mod key_ring;
pub mod memory;
pub mod metered;
pub mod redis;
pub mod sealing;
pub mod sled;
#[cfg(test)]
mod suite;
pub mod tail_cache;
pub mod turn_codec;

pub use group_commit::GroupCommit;

use self::redis::RedisConnection;
use crate::audit::AuditLog;
use crate::config::{LimitSettings, StoreKind, StoreSettings};
use crate::dialogue::ports::OperationStore;
use crate::dialogue::ports::{
    DialogueStore, SharedLocks, SharedSlots, StoreError, StoreExport, TokenLedger,
};
use crate::limits::SharedRequestLimiter;
use metered::MeteredStore;
use std::sync::Arc;
use std::time::Duration;
use tail_cache::TailCachedStore;

/// Why the configured store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(
        "data dir {0} is in use by another process (its lock is held); stop that process or choose another --data-dir"
    )]
    Locked(String),
    #[error("data dir {dir} cannot be opened: {reason}")]
    Unusable { dir: String, reason: String },
    #[error(
        "data dir {dir} holds less than it promised: {what}. Refusing to serve a partial store: {recovery}; to serve what is left anyway, start with --accept-store-loss"
    )]
    Lost {
        dir: String,
        what: String,
        recovery: String,
    },
    #[error("cannot reach the Redis store: {0}")]
    Redis(StoreError),
    #[error("store encryption: {0}")]
    Keys(String),
}

/// Dialogue locks and stream slots held across replicas.
pub trait SharedLeases: SharedLocks + SharedSlots {}

impl<T: SharedLocks + SharedSlots> SharedLeases for T {}

/// What replicas sharing a store also share: locks, slots and limits.
pub struct Shared {
    pub leases: Arc<dyn SharedLeases>,
    pub tokens: Arc<dyn TokenLedger>,
    pub requests: Arc<dyn SharedRequestLimiter>,
}

/// The configured store, as each of its consumers sees it (metered).
pub struct Stores {
    pub dialogues: Arc<dyn DialogueStore>,
    pub audit: Arc<dyn AuditLog>,
    pub operations: Arc<dyn OperationStore>,
    /// Set with the Redis store: replicas share callers' limits through it.
    pub shared: Option<Shared>,
    /// Set with the embedded store: online backups.
    pub export: Option<Arc<dyn StoreExport>>,
    /// Set with the Redis store: whether it answers (readiness follows it).
    pub reachability: Option<tokio::sync::watch::Receiver<bool>>,
}

/// Opens the configured store. sled gets the recent-turns cache; Redis
/// does not: another replica may erase and recreate a dialogue, which a
/// local cache could not see.
pub async fn open(settings: &StoreSettings, limits: &LimitSettings) -> Result<Stores, OpenError> {
    match settings.kind {
        StoreKind::Sled => {
            let sled = self::sled::SledStore::open(settings)?;
            sled.check_keys(false).await?;
            let export: Arc<dyn StoreExport> = Arc::new(sled.clone());
            let dialogues: Arc<dyn DialogueStore> = match settings.history_cache_mb {
                0 => Arc::new(MeteredStore::new(sled.clone())),
                mb => Arc::new(MeteredStore::new(TailCachedStore::new(
                    sled.clone(),
                    mb << 20,
                ))),
            };
            let metered = Arc::new(MeteredStore::new(sled));
            Ok(Stores {
                dialogues,
                audit: metered.clone(),
                operations: metered,
                shared: None,
                export: Some(export),
                reachability: None,
            })
        }
        StoreKind::Redis => {
            let r = &settings.redis;
            let redis = RedisConnection::connect(r)
                .await
                .map_err(OpenError::Redis)?;
            let reachability = redis.reachability();
            if settings.encryption.dialogue_key_file.is_some() {
                return Err(OpenError::Keys(
                    "store.encryption.dialogue_key_file works with the embedded store only".into(),
                ));
            }
            let sealer =
                sealing::Sealer::from_settings(&settings.encryption).map_err(OpenError::Keys)?;
            let redis_store = self::redis::RedisStore::new(redis.clone(), sealer);
            redis_store
                .check_keys(false)
                .await
                .map_err(OpenError::Keys)?;
            let store = Arc::new(MeteredStore::new(redis_store));
            let lease_time = Duration::from_secs(r.lease_secs);
            let shared = Shared {
                leases: Arc::new(self::redis::leases::RedisLeases::new(
                    redis.clone(),
                    lease_time,
                )),
                tokens: Arc::new(self::redis::limits::SharedTokenBudget::new(
                    redis.clone(),
                    limits.tokens_per_minute,
                )),
                requests: Arc::new(self::redis::limits::SharedLimiter::new(
                    redis,
                    limits.requests_per_second,
                    limits.request_burst,
                )),
            };
            Ok(Stores {
                dialogues: store.clone(),
                audit: store.clone(),
                operations: store,
                shared: Some(shared),
                export: None,
                reachability: Some(reachability),
            })
        }
    }
}
