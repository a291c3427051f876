//! The per-principal request rate kept in Redis, for replicas sharing the
//! Redis store: N replicas must not grant a caller N times its rate. Same
//! GCRA as the in-process limiter (a rate per second plus a burst), run as
//! one Lua script on Redis's own clock so replicas' clocks do not matter.

use crate::store::StoreError;
use redis::aio::ConnectionManager;
use std::sync::Arc;
use std::time::Duration;

/// KEYS: the caller's key. ARGV: emission interval (µs), burst.
/// Returns {1, remaining} when admitted, {0, wait µs} when not.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next_tat = tat + interval
local limit = now + interval * burst
if next_tat > limit then return {0, next_tat - limit} end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return {1, math.floor((limit - next_tat) / interval)}
";

pub struct SharedLimiter {
    connection: ConnectionManager,
    prefix: String,
    interval_us: u64,
    burst: u32,
    script: Arc<redis::Script>,
}

/// A limiter's answer for one call.
pub enum Admission {
    /// Admitted; this many more calls fit the burst now.
    Admitted { remaining: u32 },
    /// Refused; retry after this long.
    Refused { retry_after: Duration },
}

impl SharedLimiter {
    pub async fn connect(
        url: &str,
        prefix: &str,
        requests_per_second: u32,
        burst: u32,
    ) -> Result<SharedLimiter, StoreError> {
        let client = redis::Client::open(url)?;
        let connection = ConnectionManager::new(client).await?;
        Ok(SharedLimiter {
            connection,
            prefix: format!("{prefix}{{dialogd}}:rate:"),
            interval_us: 1_000_000 / u64::from(requests_per_second.max(1)),
            burst: if burst == 0 {
                requests_per_second
            } else {
                burst
            }
            .max(1),
            script: Arc::new(redis::Script::new(GCRA)),
        })
    }

    pub async fn check(&self, key: &str) -> Result<Admission, StoreError> {
        let (admitted, value): (i64, i64) = self
            .script
            .key(format!("{}{key}", self.prefix))
            .arg(self.interval_us)
            .arg(self.burst)
            .invoke_async(&mut self.connection.clone())
            .await?;
        let value = u64::try_from(value).unwrap_or(0);
        Ok(match admitted {
            1 => Admission::Admitted {
                remaining: u32::try_from(value).unwrap_or(u32::MAX),
            },
            _ => Admission::Refused {
                retry_after: Duration::from_micros(value).max(Duration::from_millis(1)),
            },
        })
    }
}
