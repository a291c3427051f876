//! Retry pacing: exponential backoff with full jitter, and a retry budget
//! so retries add at most a fixed share of load (retry storms make an
//! outage worse).

use std::sync::Mutex;
use std::time::Duration;

/// Delay before retry number `retry` (0-based): uniformly random in
/// `[0, min(max, base * 2^retry)]` ("full jitter").
pub fn backoff(retry: u32, base: Duration, max: Duration) -> Duration {
    let ceiling = base
        .saturating_mul(2u32.saturating_pow(retry.min(16)))
        .min(max);
    ceiling.mul_f64(rand::random::<f64>())
}

/// A token bucket: each call deposits `ratio` tokens (up to `reserve`),
/// each retry spends one. Over time retries stay under `ratio` of calls;
/// the reserve allows a few retries when traffic is low.
pub struct RetryBudget {
    ratio: f64,
    reserve: f64,
    balance: Mutex<f64>,
}

impl RetryBudget {
    pub fn new(ratio: f64, reserve: u32) -> RetryBudget {
        let reserve = f64::from(reserve.max(1));
        RetryBudget {
            ratio,
            reserve,
            balance: Mutex::new(reserve),
        }
    }

    pub fn on_call(&self) {
        let mut balance = self.balance.lock().unwrap_or_else(|p| p.into_inner());
        *balance = (*balance + self.ratio).min(self.reserve);
    }

    /// Spends one token for a retry; false when the budget is exhausted.
    pub fn try_retry(&self) -> bool {
        let mut balance = self.balance.lock().unwrap_or_else(|p| p.into_inner());
        if *balance >= 1.0 {
            *balance -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_its_growing_capped_ceiling() {
        let base = Duration::from_millis(100);
        let max = Duration::from_millis(1000);
        for retry in 0..20 {
            let ceiling = (base * 2u32.pow(retry.min(10))).min(max);
            for _ in 0..50 {
                assert!(backoff(retry, base, max) <= ceiling);
            }
        }
    }

    #[test]
    fn retries_are_limited_to_the_ratio_once_the_reserve_is_spent() {
        let budget = RetryBudget::new(0.2, 2);
        let mut retries = 0;
        for _ in 0..100 {
            budget.on_call();
            if budget.try_retry() {
                retries += 1;
            }
        }
        // The reserve (2) plus 20% of 100 calls, give or take rounding.
        assert!((20..=22).contains(&retries), "{retries} retries");
    }
}
