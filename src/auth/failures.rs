//! Brute force is not free: failed authentications are counted per client
//! address and per API key id tried, in one-minute windows. An address
//! over the limit is refused (RESOURCE_EXHAUSTED with the wait) before its
//! credentials are even checked; a wrong secret for a key id over the
//! limit is refused the same way. A right key is never locked out by
//! others' failures: credentials are checked before the key id's count,
//! and only the failing address is shut out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Past this many tracked keys, stale windows are dropped.
const SWEEP_AT: usize = 10_000;

pub struct AuthFailures {
    /// Failures allowed per window and key; 0 turns counting off.
    limit: u32,
    by_address: Mutex<HashMap<String, (Instant, u32)>>,
    by_key_id: Mutex<HashMap<String, (Instant, u32)>>,
    /// Set by the first failure: until then every call skips the locks.
    any_failed: AtomicBool,
}

impl AuthFailures {
    pub fn new(limit_per_minute: u32) -> AuthFailures {
        AuthFailures {
            limit: limit_per_minute,
            by_address: Mutex::default(),
            by_key_id: Mutex::default(),
            any_failed: AtomicBool::new(false),
        }
    }

    /// Whether any failure is being counted: until one is, nothing is
    /// blocked (callers skip naming the address).
    pub fn counting(&self) -> bool {
        self.limit != 0 && self.any_failed.load(Ordering::Acquire)
    }

    /// While `address` is over the limit: how long until it may try again.
    pub fn address_blocked(&self, address: &str) -> Option<Duration> {
        self.over(&self.by_address, address, Instant::now())
    }

    /// While `key_id` is over the limit (for a wrong secret only).
    pub fn key_blocked(&self, key_id: &str) -> Option<Duration> {
        self.over(&self.by_key_id, key_id, Instant::now())
    }

    /// Counts a failure of `address`, and of the key id it tried.
    pub fn failed(&self, address: &str, key_id: Option<&str>) {
        if self.limit == 0 {
            return;
        }
        self.any_failed.store(true, Ordering::Release);
        let now = Instant::now();
        count(&self.by_address, address, now);
        if let Some(id) = key_id {
            count(&self.by_key_id, id, now);
        }
    }

    fn over(
        &self,
        table: &Mutex<HashMap<String, (Instant, u32)>>,
        key: &str,
        now: Instant,
    ) -> Option<Duration> {
        if !self.counting() {
            return None;
        }
        let table = table.lock().unwrap_or_else(|p| p.into_inner());
        let (start, failures) = *table.get(key)?;
        let ends = start + WINDOW;
        (failures >= self.limit && now < ends).then(|| ends - now)
    }
}

fn count(table: &Mutex<HashMap<String, (Instant, u32)>>, key: &str, now: Instant) {
    let mut table = table.lock().unwrap_or_else(|p| p.into_inner());
    if table.len() >= SWEEP_AT {
        table.retain(|_, (start, _)| now < *start + WINDOW);
    }
    let entry = table.entry(key.to_owned()).or_insert((now, 0));
    if now >= entry.0 + WINDOW {
        *entry = (now, 0);
    }
    entry.1 = entry.1.saturating_add(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_over_the_limit_waits_out_its_window_and_others_do_not() {
        let failures = AuthFailures::new(3);
        for _ in 0..2 {
            failures.failed("10.0.0.1", Some("ci-bot"));
        }
        assert!(failures.address_blocked("10.0.0.1").is_none());
        failures.failed("10.0.0.1", Some("ci-bot"));
        let wait = failures.address_blocked("10.0.0.1").expect("blocked");
        assert!(wait <= WINDOW && wait > Duration::from_secs(50));
        assert!(failures.key_blocked("ci-bot").is_some());
        assert!(failures.address_blocked("10.0.0.2").is_none());
        assert!(AuthFailures::new(0).address_blocked("10.0.0.1").is_none());
    }
}
