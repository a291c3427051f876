//! Per-caller limits kept in Redis, for replicas sharing the Redis store:
//! N replicas must not grant a caller N times its limits. The request rate
//! is the same GCRA as the in-process limiter (a rate per second plus a
//! burst); the token budget the same bucket refilled per minute. Both run as
//! Lua scripts on Redis's own clock, so replicas' clocks do not matter.

use super::RedisConnection;
use crate::dialogue::ports::{StoreError, TokenLedger};
use crate::limits::{Admission, SharedRequestLimiter};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// KEYS: the caller's key. ARGV: emission interval (µs), burst, cost
/// (requests counted at once). Returns {1, remaining} when admitted,
/// {0, wait µs} when not.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next_tat = tat + interval * tonumber(ARGV[3])
local limit = now + interval * burst
if next_tat > limit then return {0, next_tat - limit} end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
return {1, math.floor((limit - next_tat) / interval)}
";

pub struct SharedLimiter {
    redis: RedisConnection,
    interval_us: u64,
    burst: u32,
    script: Arc<redis::Script>,
}

impl SharedLimiter {
    pub fn new(redis: RedisConnection, requests_per_second: u32, burst: u32) -> SharedLimiter {
        SharedLimiter {
            redis,
            interval_us: 1_000_000 / u64::from(requests_per_second.max(1)),
            burst: if burst == 0 {
                requests_per_second
            } else {
                burst
            }
            .max(1),
            script: Arc::new(redis::Script::new(GCRA)),
        }
    }
}

#[async_trait]
impl SharedRequestLimiter for SharedLimiter {
    async fn check(&self, key: &str, cost: u32) -> Result<Admission, StoreError> {
        let (admitted, value): (i64, i64) = self
            .script
            .key(self.redis.key(&format!("rate:{key}")))
            .arg(self.interval_us)
            .arg(self.burst)
            .arg(cost.max(1))
            .invoke_async(&mut self.redis.get()?)
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

/// KEYS: the caller's bucket. ARGV: tokens per minute, tokens to spend
/// (0 to look). Returns the tokens left after spending, as a string.
const TOKEN_BUCKET: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local per_minute = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or per_minute
local at = tonumber(state[2]) or now
tokens = math.min(per_minute, tokens + (now - at) * per_minute / 60) - tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 120)
return tostring(tokens)
";

/// The tokens-per-minute budget of each caller, shared by the replicas.
pub struct SharedTokenBudget {
    redis: RedisConnection,
    per_minute: u64,
    script: Arc<redis::Script>,
}

impl SharedTokenBudget {
    pub fn new(redis: RedisConnection, per_minute: u64) -> SharedTokenBudget {
        SharedTokenBudget {
            redis,
            per_minute,
            script: Arc::new(redis::Script::new(TOKEN_BUCKET)),
        }
    }

    async fn spend(&self, key: &str, tokens: u64) -> Result<f64, StoreError> {
        let left: String = self
            .script
            .key(self.redis.key(&format!("tokens:{key}")))
            .arg(self.per_minute)
            .arg(tokens)
            .invoke_async(&mut self.redis.get()?)
            .await?;
        left.parse()
            .map_err(|_| StoreError::Corrupt(format!("token bucket holds {left:?}")))
    }
}

#[async_trait]
impl TokenLedger for SharedTokenBudget {
    async fn admit(&self, key: &str) -> Result<(), Duration> {
        match self.spend(key, 0).await {
            Ok(left) if left > 0.0 => Ok(()),
            Ok(left) => Err(Duration::from_secs_f64(
                (1.0 - left) * 60.0 / self.per_minute as f64,
            )),
            // Redis unreachable: serve rather than refuse everyone.
            Err(e) => {
                tracing::warn!(error = %e, "shared token budget unavailable; not limiting");
                Ok(())
            }
        }
    }

    async fn charge(&self, key: &str, tokens: u64) {
        if let Err(e) = self.spend(key, tokens).await {
            tracing::warn!(error = %e, "cannot charge the shared token budget");
        }
    }
}
