//! Leases in Redis, for what replicas must coordinate beyond a single
//! write: a named set of at most N holders, each holder's claim lapsing
//! unless it is renewed. A dialogue's lock is a lease of capacity 1, so a
//! turn on one replica waits for a turn on another instead of failing; a
//! caller's open streams are leases of capacity `max_streams_per_principal`.
//! A replica that dies holds nothing for longer than the lease time.
//!
//! Times are Redis's own clock (TIME inside the scripts).

use super::RedisConnection;
use crate::dialogue::model::DialogueId;
use crate::dialogue::ports::{SharedLocks, SharedSlots, StoreError};
use async_trait::async_trait;
use redis::AsyncCommands;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// KEYS: the lease set. ARGV: holder, capacity, lease time (ms).
/// Drops lapsed holders, then admits this one if there is room.
const ACQUIRE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
";

/// KEYS: the lease set. ARGV: holder, lease time (ms). 0 if the holder
/// lost its lease (it lapsed and someone else may hold it now).
const RENEW: &str = r"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// The longest pause between two tries for a held lock.
const MAX_POLL_PAUSE: Duration = Duration::from_millis(20);

#[derive(Clone)]
pub struct RedisLeases {
    redis: RedisConnection,
    lease_time: Duration,
    acquire: Arc<redis::Script>,
    renew: Arc<redis::Script>,
}

/// A held lease: renewed in the background while it lives, given back when
/// it drops.
pub struct Lease {
    renewer: JoinHandle<()>,
    release: Option<Release>,
}

impl RedisLeases {
    pub fn new(redis: RedisConnection, lease_time: Duration) -> RedisLeases {
        RedisLeases {
            redis,
            lease_time: lease_time.max(Duration::from_millis(100)),
            acquire: Arc::new(redis::Script::new(ACQUIRE)),
            renew: Arc::new(redis::Script::new(RENEW)),
        }
    }

    fn lease_ms(&self) -> u64 {
        u64::try_from(self.lease_time.as_millis()).unwrap_or(u64::MAX)
    }

    /// One of `capacity` places under `key` (a full key), or `None` if all
    /// are taken.
    ///
    /// Cancellation-safe: the script runs in a task of its own, so a caller
    /// that gives up (deadline, disconnect) after Redis admitted it but
    /// before claiming the place cannot leave it taken until it lapses —
    /// the unclaimed admission gives it back when it is dropped, whether
    /// the caller left before the answer was sent or after.
    pub async fn try_acquire(&self, key: &str, capacity: u32) -> Result<Option<Lease>, StoreError> {
        let holder = format!("{:032x}", rand::random::<u128>());
        let (answer, answered) = oneshot::channel();
        let leases = self.clone();
        let (key, task_key, task_holder) = (key.to_owned(), key.to_owned(), holder.clone());
        tokio::spawn(async move {
            let admitted: Result<i64, StoreError> = match leases.redis.get() {
                Err(e) => Err(e),
                Ok(mut connection) => leases
                    .acquire
                    .key(&task_key)
                    .arg(&task_holder)
                    .arg(capacity)
                    .arg(leases.lease_ms())
                    .invoke_async(&mut connection)
                    .await
                    .map_err(StoreError::from),
            };
            // An admission travels as `Unclaimed`: if the caller gave up
            // even after this send succeeded (its future dropped before it
            // read the answer), dropping the answer gives the place back.
            let _ = answer.send(admitted.map(|n| {
                (n == 1).then(|| {
                    Unclaimed(Some(Release {
                        redis: leases.redis.clone(),
                        key: task_key,
                        holder: task_holder,
                        lease_time: leases.lease_time,
                    }))
                })
            }));
        });
        let admitted = answered
            .await
            .map_err(|_| StoreError::Io("the lease task stopped".into()))??;
        Ok(admitted.map(|mut unclaimed| {
            unclaimed.0 = None;
            self.keep(key, holder)
        }))
    }

    /// The only place under `key`, waiting for it as long as it takes (the
    /// caller's deadline bounds the wait).
    pub async fn acquire_exclusive(&self, key: &str) -> Result<Lease, StoreError> {
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(lease) = self.try_acquire(key, 1).await? {
                return Ok(lease);
            }
            // Jitter, so waiters on several replicas do not retry in step.
            let jitter = Duration::from_micros(rand::random_range(0..=pause.as_micros() as u64));
            tokio::time::sleep(pause + jitter).await;
            pause = (pause * 2).min(MAX_POLL_PAUSE);
        }
    }

    /// Renews the lease three times per lease time until it drops.
    fn keep(&self, key: String, holder: String) -> Lease {
        let leases = self.clone();
        let (renew_key, renew_holder) = (key.clone(), holder.clone());
        let renewer = tokio::spawn(async move {
            loop {
                tokio::time::sleep(leases.lease_time / 3).await;
                let renewed: Result<i64, StoreError> = match leases.redis.get() {
                    Err(e) => Err(e),
                    Ok(mut connection) => leases
                        .renew
                        .key(&renew_key)
                        .arg(&renew_holder)
                        .arg(leases.lease_ms())
                        .invoke_async(&mut connection)
                        .await
                        .map_err(StoreError::from),
                };
                match renewed {
                    Ok(1) => {}
                    Ok(_) => {
                        // Writes stay safe: commits check the turn count.
                        tracing::warn!(key = %renew_key, "a lease lapsed before it was renewed");
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot renew a lease; retrying"),
                }
            }
        });
        Lease {
            renewer,
            release: Some(Release {
                redis: self.redis.clone(),
                key,
                holder,
                lease_time: self.lease_time,
            }),
        }
    }
}

/// Gives a lease back, retrying while Redis is away; after the lease time
/// there is nothing left to give back (it lapsed).
async fn give_back(redis: RedisConnection, key: String, holder: String, lease_time: Duration) {
    let until = tokio::time::Instant::now() + lease_time;
    loop {
        let released: Result<(), StoreError> = match redis.get() {
            Err(e) => Err(e),
            Ok(mut connection) => connection
                .zrem(&key, &holder)
                .await
                .map_err(StoreError::from),
        };
        match released {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() + GIVE_BACK_PAUSE >= until => {
                tracing::warn!(error = %e, "cannot give a lease back; it lapses");
                return;
            }
            Err(_) => tokio::time::sleep(GIVE_BACK_PAUSE).await,
        }
    }
}

/// Pause between tries to give a lease back while Redis is away.
const GIVE_BACK_PAUSE: Duration = Duration::from_millis(100);

/// What giving a place back needs.
struct Release {
    redis: RedisConnection,
    key: String,
    holder: String,
    lease_time: Duration,
}

impl Release {
    fn spawn(self) {
        // Outside a runtime (process exit) the lease simply lapses.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(give_back(
                self.redis,
                self.key,
                self.holder,
                self.lease_time,
            ));
        }
    }
}

/// A place Redis admitted that no caller has claimed yet.
struct Unclaimed(Option<Release>);

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if let Some(release) = self.0.take() {
            release.spawn();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
        if let Some(release) = self.release.take() {
            release.spawn();
        }
    }
}

#[async_trait]
impl SharedLocks for RedisLeases {
    async fn lock(&self, id: &DialogueId) -> Result<Box<dyn Send + Sync>, StoreError> {
        let key = self.redis.dialogue_key(id, "lock");
        Ok(Box::new(self.acquire_exclusive(&key).await?))
    }
}

#[async_trait]
impl SharedSlots for RedisLeases {
    async fn try_open(
        &self,
        caller: &str,
        max: u32,
    ) -> Result<Option<Box<dyn Send + Sync>>, StoreError> {
        let key = self.redis.key(&format!("streams:{caller}"));
        Ok(self
            .try_acquire(&key, max)
            .await?
            .map(|lease| Box::new(lease) as Box<dyn Send + Sync>))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn leases(lease_time: Duration) -> RedisLeases {
        let prefix = format!("test-{:016x}:", rand::random::<u64>());
        let redis = RedisConnection::connect(&RedisConnection::settings(
            "redis://127.0.0.1:6379",
            &[],
            &prefix,
        ))
        .await
        .expect("a redis-server on 127.0.0.1:6379 (.ci/run starts one)");
        RedisLeases::new(redis, lease_time)
    }

    #[tokio::test]
    async fn a_held_lease_is_renewed_past_its_lease_time_and_given_back_on_drop() {
        let leases = leases(Duration::from_millis(300)).await;
        let key = leases.redis.key("lease");
        let held = leases.try_acquire(&key, 1).await.unwrap().unwrap();
        tokio::time::sleep(Duration::from_millis(1000)).await;
        assert!(
            leases.try_acquire(&key, 1).await.unwrap().is_none(),
            "still held after three lease times"
        );
        drop(held);
        let again =
            tokio::time::timeout(Duration::from_millis(200), leases.acquire_exclusive(&key)).await;
        assert!(
            again.is_ok(),
            "given back at once, not after the lease time"
        );
    }

    #[tokio::test]
    async fn capacity_counts_holders() {
        let leases = leases(Duration::from_secs(5)).await;
        let key = leases.redis.key("slots");
        let one = leases.try_acquire(&key, 2).await.unwrap();
        let two = leases.try_acquire(&key, 2).await.unwrap();
        assert!(one.is_some() && two.is_some());
        assert!(leases.try_acquire(&key, 2).await.unwrap().is_none());
    }
}
