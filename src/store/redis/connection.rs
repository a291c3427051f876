//! The connection to Redis (one server or a cluster) and the deployment's
//! key scheme, shared by the store, the leases and the shared limits.

use crate::dialogue::model::DialogueId;
use crate::dialogue::ports::StoreError;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Io(format!("redis: {e}"))
    }
}

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

/// The connection and the deployment's key scheme; the store, the shared
/// limits and the leases all use it.
#[derive(Clone)]
pub struct RedisConnection {
    connection: Connection,
    prefix: String,
}

impl RedisConnection {
    /// Connects to the server at `url`, or to the cluster `cluster_nodes`
    /// belong to when there are any, and checks it answers; `prefix`
    /// namespaces keys.
    pub async fn connect(
        url: &str,
        cluster_nodes: &[String],
        prefix: &str,
    ) -> Result<RedisConnection, StoreError> {
        let mut connection = if cluster_nodes.is_empty() {
            Connection::Single(ConnectionManager::new(redis::Client::open(url)?).await?)
        } else {
            let client =
                redis::cluster::ClusterClient::new(cluster_nodes.iter().map(String::as_str))?;
            Connection::Cluster(client.get_async_connection().await?)
        };
        let _: String = redis::cmd("PING").query_async(&mut connection).await?;
        Ok(RedisConnection {
            connection,
            prefix: prefix.to_owned(),
        })
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

    pub fn get(&self) -> Connection {
        self.connection.clone()
    }
}
