//! Per-principal limits that depend on turns, not requests: how many
//! streams a caller may have open, and how many tokens it may spend a minute
//! (a bucket refilled continuously; a turn is admitted while the bucket is
//! above zero and charged its real usage afterwards, so it may go below).

use crate::dialogue::ports::{SharedSlots, TokenLedger};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Open streams per principal.
#[derive(Clone)]
pub struct StreamSlots {
    max: u32,
    open: Arc<Mutex<HashMap<String, u32>>>,
    shared: Option<Arc<dyn SharedSlots>>,
}

/// One open stream; the slot frees when it drops.
pub struct StreamSlot {
    key: String,
    open: Arc<Mutex<HashMap<String, u32>>>,
    _shared: Option<Box<dyn Send + Sync>>,
}

impl StreamSlots {
    /// `max` 0 means unlimited.
    pub fn new(max: u32) -> StreamSlots {
        StreamSlots {
            max,
            open: Arc::default(),
            shared: None,
        }
    }

    /// Counts slots across the replicas sharing `shared` as well.
    pub fn shared_through(mut self, shared: Arc<dyn SharedSlots>) -> StreamSlots {
        self.shared = Some(shared);
        self
    }

    pub async fn try_open(&self, key: &str) -> Option<StreamSlot> {
        let mut slot = self.try_open_here(key)?;
        if let (Some(shared), true) = (&self.shared, self.max > 0) {
            match shared.try_open(key, self.max).await {
                Ok(Some(claim)) => slot._shared = Some(claim),
                Ok(None) => return None,
                // Redis unreachable: serve rather than refuse every stream.
                Err(e) => {
                    tracing::warn!(error = %e, "shared stream slots unavailable; counting here only")
                }
            }
        }
        Some(slot)
    }

    /// A slot counted in this process.
    fn try_open_here(&self, key: &str) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(key.to_owned()).or_insert(0);
        if self.max > 0 && *count >= self.max {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            key: key.to_owned(),
            open: self.open.clone(),
            _shared: None,
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Tokens per minute per principal.
pub struct TokenBudget {
    per_minute: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl TokenBudget {
    /// `None` for 0 (unlimited).
    pub fn new(per_minute: u64) -> Option<TokenBudget> {
        (per_minute > 0).then(|| TokenBudget {
            per_minute: per_minute as f64,
            buckets: Mutex::default(),
        })
    }

    fn refilled<'a>(
        &self,
        buckets: &'a mut HashMap<String, Bucket>,
        key: &str,
        now: Instant,
    ) -> &'a mut Bucket {
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.per_minute,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_minute / 60.0).min(self.per_minute);
        bucket.at = now;
        bucket
    }

    /// `Err(wait)` while the caller's bucket is empty.
    pub fn admit(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let bucket = self.refilled(&mut buckets, key, now);
        if bucket.tokens > 0.0 {
            return Ok(());
        }
        let deficit = 1.0 - bucket.tokens;
        Err(Duration::from_secs_f64(deficit * 60.0 / self.per_minute))
    }

    pub fn charge(&self, key: &str, tokens: u64, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        self.refilled(&mut buckets, key, now).tokens -= tokens as f64;
    }
}

#[async_trait::async_trait]
impl TokenLedger for TokenBudget {
    async fn admit(&self, key: &str) -> Result<(), Duration> {
        TokenBudget::admit(self, key, Instant::now())
    }

    async fn charge(&self, key: &str, tokens: u64) {
        TokenBudget::charge(self, key, tokens, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stream_slots_are_per_key_and_freed_on_drop() {
        let slots = StreamSlots::new(2);
        let a1 = slots.try_open("a").await.unwrap();
        let _a2 = slots.try_open("a").await.unwrap();
        assert!(slots.try_open("a").await.is_none());
        assert!(
            slots.try_open("b").await.is_some(),
            "others are not affected"
        );
        drop(a1);
        assert!(slots.try_open("a").await.is_some());
    }

    #[test]
    fn token_budgets_refuse_when_spent_and_refill_over_time() {
        let budget = TokenBudget::new(600).unwrap();
        let t0 = Instant::now();
        assert!(budget.admit("a", t0).is_ok());
        budget.charge("a", 700, t0);
        let wait = budget.admit("a", t0).unwrap_err();
        // 101 tokens short at 10 tokens/s: about 10 s.
        assert!(
            wait > Duration::from_secs(9) && wait < Duration::from_secs(11),
            "{wait:?}"
        );
        assert!(budget.admit("b", t0).is_ok(), "budgets are per caller");
        assert!(budget.admit("a", t0 + Duration::from_secs(11)).is_ok());
        assert!(TokenBudget::new(0).is_none());
    }
}
