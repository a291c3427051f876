//! `dialogd store rekey` on Redis (one server or a cluster, each master
//! scanned), online: every sealed record whose key is not the primary
//! (and every record written before encryption) is sealed again with the
//! primary, each by a compare-and-set script, so a server writing the
//! same record meanwhile wins and nothing is lost.
//! Settled TTLs are kept. Afterwards the key-check record lists only the
//! primary, and the other keys can leave the ring.

use super::RedisStore;
use crate::dialogue::ports::StoreError;
use redis::AsyncCommands;

/// Sets a string to ARGV[2] if it still holds ARGV[1], keeping its TTL.
const SWAP_STRING: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0";

/// Sets list element ARGV[1] to ARGV[3] if it still holds ARGV[2].
const SWAP_ELEMENT: &str = r"
if redis.call('LINDEX', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('LSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0";

/// What a key (without the deployment prefix) holds, for rekeying.
#[derive(PartialEq)]
enum Holds {
    /// A dialogue's settings, an idempotency record or an operation.
    SealedString,
    /// A dialogue's turns.
    SealedList,
    Other,
}

fn holds(name: &str) -> Holds {
    let of_dialogue = name.contains("}:d:");
    if name.starts_with("op:") || (of_dialogue && (name.ends_with(":meta") || name.contains(":i:")))
    {
        Holds::SealedString
    } else if of_dialogue && name.ends_with(":turns") {
        Holds::SealedList
    } else {
        Holds::Other
    }
}

impl RedisStore {
    /// Seals again what is not sealed with the primary key; the number of
    /// records changed. On a cluster every master is scanned, reached with
    /// the scheme and credentials of `cluster_seed` (a configured node).
    pub async fn rekey(&self, cluster_seed: Option<&str>) -> Result<u64, String> {
        if !self.sealer.enabled() {
            return Err("store.encryption configures no key ring: nothing to seal with".into());
        }
        let failed = |e: StoreError| e.to_string();
        let mut con = self.con().map_err(failed)?;
        let pattern = format!("{}*", self.redis.prefix());
        let keys = match &con {
            super::Connection::Single(_) => scan(&mut con, &pattern).await?,
            // A cluster's keys are scanned master by master.
            super::Connection::Cluster(_) => {
                let nodes: String = redis::cmd("CLUSTER")
                    .arg("NODES")
                    .query_async(&mut con)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut keys = Vec::new();
                for address in masters(&nodes) {
                    let url = node_url(cluster_seed, &address)?;
                    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
                    let mut node = client
                        .get_multiplexed_async_connection()
                        .await
                        .map_err(|e| format!("cluster node {address}: {e}"))?;
                    keys.extend(scan(&mut node, &pattern).await?);
                }
                keys
            }
        };
        let (swap_string, swap_element) = (
            redis::Script::new(SWAP_STRING),
            redis::Script::new(SWAP_ELEMENT),
        );
        let mut changed = 0;
        for key in keys {
            let name = key.strip_prefix(self.redis.prefix()).unwrap_or(&key);
            match holds(name) {
                Holds::Other => {}
                Holds::SealedString => {
                    let Some(old): Option<String> =
                        con.get(&key).await.map_err(|e| e.to_string())?
                    else {
                        continue;
                    };
                    if !self.sealer.needs_rekey(old.as_bytes()) {
                        continue;
                    }
                    let plain = self.open(&key, &old).map_err(failed)?.into_owned();
                    let new = self.seal(&key, plain);
                    let swapped: i64 = swap_string
                        .key(&key)
                        .arg(&old)
                        .arg(&new)
                        .invoke_async(&mut con)
                        .await
                        .map_err(|e| e.to_string())?;
                    changed += u64::try_from(swapped).unwrap_or(0);
                }
                Holds::SealedList => {
                    let items: Vec<String> =
                        con.lrange(&key, 0, -1).await.map_err(|e| e.to_string())?;
                    for (i, old) in items.iter().enumerate() {
                        if !self.sealer.needs_rekey(old.as_bytes()) {
                            continue;
                        }
                        let plain = self.open(&key, old).map_err(failed)?.into_owned();
                        let new = self.seal(&key, plain);
                        let swapped: i64 = swap_element
                            .key(&key)
                            .arg(i)
                            .arg(old)
                            .arg(&new)
                            .invoke_async(&mut con)
                            .await
                            .map_err(|e| e.to_string())?;
                        changed += u64::try_from(swapped).unwrap_or(0);
                    }
                }
            }
        }
        self.check_keys(true).await?;
        Ok(changed)
    }
}

/// Every key matching `pattern` on one server.
async fn scan<C: redis::aio::ConnectionLike + Send>(
    con: &mut C,
    pattern: &str,
) -> Result<Vec<String>, String> {
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await
            .map_err(|e| e.to_string())?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// The `host:port` of each master serving slots, from `CLUSTER NODES`.
fn masters(nodes: &str) -> Vec<String> {
    nodes
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = fields.get(2)?;
            let serving = flags.split(',').any(|f| f == "master")
                && !flags.contains("fail")
                && fields.len() > 8;
            let address = fields.get(1)?.split(['@', ',']).next()?;
            serving.then(|| address.to_owned())
        })
        .collect()
}

/// A node's URL with the scheme and credentials of a configured node.
fn node_url(seed: Option<&str>, address: &str) -> Result<String, String> {
    let seed = seed.unwrap_or("redis://127.0.0.1");
    let mut url = url::Url::parse(seed).map_err(|e| format!("store.redis.cluster_nodes: {e}"))?;
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("a cluster node without a port: {address}"))?;
    url.set_host(Some(host)).map_err(|e| e.to_string())?;
    url.set_port(port.parse().ok())
        .map_err(|()| format!("a cluster node with a bad port: {address}"))?;
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_masters_are_read_from_cluster_nodes() {
        let nodes = "a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460\n\
                     b2 127.0.0.1:30002@40002,host master - 0 0 2 connected 5461-10922\n\
                     c3 127.0.0.1:30004@40004 slave a1 0 0 1 connected\n\
                     d4 127.0.0.1:30003@40003 master,fail - 0 0 3 disconnected 10923-16383\n";
        assert_eq!(masters(nodes), ["127.0.0.1:30001", "127.0.0.1:30002"]);
        assert_eq!(
            node_url(Some("redis://:pw@10.0.0.1:7000"), "10.0.0.2:7001").unwrap(),
            "redis://:pw@10.0.0.2:7001"
        );
    }

    #[test]
    fn record_kinds_are_told_by_their_names() {
        assert!(holds("{o1}:d:chat:meta") == Holds::SealedString);
        assert!(holds("{o1}:d:chat:i:req-1") == Holds::SealedString);
        assert!(holds("op:abc") == Holds::SealedString);
        assert!(holds("{o1}:d:chat:turns") == Holds::SealedList);
        for other in [
            "{o1}:d:chat:head",
            "{o1}:d:chat:idem",
            "{o1}:dialogues",
            "audit",
            "keycheck",
        ] {
            assert!(holds(other) == Holds::Other, "{other}");
        }
    }
}
