//! The connection to Redis (one server or a cluster) and the deployment's
//! key scheme, shared by the store, the leases and the shared limits.

use crate::config::RedisSettings;
use crate::dialogue::model::DialogueId;
use crate::dialogue::ports::StoreError;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// A connection to one Redis server or to a Redis Cluster; both multiplex
/// and reconnect by themselves, and clones share them.
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Connection {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// Whether Redis answers, as the health check last saw it.
struct Reachability {
    reachable: AtomicBool,
    changes: watch::Sender<bool>,
}

/// The connection and the deployment's key scheme; the store, the shared
/// limits and the leases all use it.
#[derive(Clone)]
pub struct RedisConnection {
    connection: Connection,
    prefix: String,
    reachability: Arc<Reachability>,
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_refusal()
            || e.is_connection_dropped()
        {
            StoreError::Unreachable(format!("redis: {e}"))
        } else {
            StoreError::Io(format!("redis: {e}"))
        }
    }
}

impl RedisConnection {
    /// Connects to the server at `url`, or to the cluster `cluster_nodes`
    /// belong to when there are any, checks it answers, and starts the
    /// health check; `key_prefix` namespaces keys.
    ///
    /// Reconnection is bounded: one attempt per call, each within
    /// `connect_timeout_ms`, so no call queues behind seconds of backoff;
    /// the health check retries every `health_check_ms`.
    pub async fn connect(settings: &RedisSettings) -> Result<RedisConnection, StoreError> {
        let connect_timeout = Duration::from_millis(settings.connect_timeout_ms);
        let command_timeout = Duration::from_millis(settings.command_timeout_ms);
        let mut connection = if settings.cluster_nodes.is_empty() {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(command_timeout))
                .set_number_of_retries(0)
                .set_min_delay(Duration::from_millis(10))
                .set_max_delay(Duration::from_millis(100));
            let client = redis::Client::open(settings.url.as_str())?;
            Connection::Single(ConnectionManager::new_with_config(client, config).await?)
        } else {
            let client = redis::cluster::ClusterClient::builder(
                settings.cluster_nodes.iter().map(String::as_str),
            )
            .connection_timeout(connect_timeout)
            .response_timeout(command_timeout)
            .retries(1)
            .max_retry_wait(100)
            .build()?;
            Connection::Cluster(client.get_async_connection().await?)
        };
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        let (changes, _) = watch::channel(true);
        let reachability = Arc::new(Reachability {
            reachable: AtomicBool::new(true),
            changes,
        });
        tokio::spawn(check_health(
            connection.clone(),
            Arc::downgrade(&reachability),
            Duration::from_millis(settings.health_check_ms),
            connect_timeout + command_timeout,
        ));
        Ok(RedisConnection {
            connection,
            prefix: settings.key_prefix.clone(),
            reachability,
        })
    }

    /// Settings for tests: `url` (or `cluster_nodes`) under `prefix`.
    #[cfg(test)]
    pub fn settings(url: &str, cluster_nodes: &[String], prefix: &str) -> RedisSettings {
        RedisSettings {
            url: url.into(),
            cluster_nodes: cluster_nodes.to_vec(),
            key_prefix: prefix.into(),
            ..RedisSettings::default()
        }
    }

    /// Follows whether Redis is reachable (true: it is).
    pub fn reachability(&self) -> watch::Receiver<bool> {
        self.reachability.changes.subscribe()
    }

    /// The deployment's key prefix (`store.redis.key_prefix`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A key of its own (its own slot in a cluster).
    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// A key of the owner with `owner_key`: all of them share its hash tag,
    /// so one script may touch them together.
    pub fn owner_key(&self, owner_key: &str, name: &str) -> String {
        format!("{}{{{owner_key}}}:{name}", self.prefix)
    }

    /// A key of the dialogue `id` (in its owner's slot).
    pub fn dialogue_key(&self, id: &DialogueId, part: &str) -> String {
        self.owner_key(id.owner_key(), &format!("d:{}:{part}", id.public()))
    }

    /// The connection, or at once `Unreachable` while the health check
    /// cannot reach Redis: calls fail fast instead of queueing.
    pub fn get(&self) -> Result<Connection, StoreError> {
        if self.reachability.reachable.load(Ordering::Acquire) {
            Ok(self.connection.clone())
        } else {
            Err(StoreError::Unreachable("redis does not answer".into()))
        }
    }
}

const AWAY_PING: Duration = Duration::from_millis(50);

/// Pings Redis every `every` (while it is away, every 50 ms at most, so
/// its return is seen at once) until the connection's last clone is gone,
/// publishing each change of reachability.
async fn check_health(
    mut connection: Connection,
    reachability: Weak<Reachability>,
    every: Duration,
    patience: Duration,
) {
    let mut up = true;
    loop {
        let pause = if up { every } else { every.min(AWAY_PING) };
        tokio::time::sleep(pause).await;
        let ping = redis::cmd("PING");
        let answer = tokio::time::timeout(patience, ping.query_async::<String>(&mut connection));
        up = matches!(answer.await, Ok(Ok(_)));
        let Some(reachability) = reachability.upgrade() else {
            return;
        };
        if reachability.reachable.swap(up, Ordering::AcqRel) != up {
            match up {
                true => tracing::info!("redis answers again"),
                false => tracing::error!("redis does not answer; calls fail until it does"),
            }
            reachability.changes.send_replace(up);
        }
    }
}
