//! `dialogd store rekey` on Redis, online: every sealed record whose key
//! is not the primary (and every record written before encryption) is
//! sealed again with the primary, each by a compare-and-set script, so a
//! server writing the same record meanwhile wins and nothing is lost.
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
    /// records changed. One Redis server only: a cluster's keys would
    /// have to be scanned node by node.
    pub async fn rekey(&self) -> Result<u64, String> {
        if !self.sealer.enabled() {
            return Err("store.encryption configures no key ring: nothing to seal with".into());
        }
        let failed = |e: StoreError| e.to_string();
        let mut con = self.con().map_err(failed)?;
        if matches!(con, super::Connection::Cluster(_)) {
            return Err("rekey on a Redis Cluster is not supported yet: run it against each shard's keys with a single-node URL".into());
        }
        let pattern = format!("{}*", self.redis.prefix());
        let mut keys: Vec<String> = Vec::new();
        {
            let mut iter: redis::AsyncIter<String> =
                con.scan_match(&pattern).await.map_err(|e| e.to_string())?;
            while let Some(key) = iter.next_item().await {
                keys.push(key.map_err(|e| e.to_string())?);
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

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
