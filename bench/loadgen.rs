//! The load generator: open-loop (a fixed arrival rate, latency measured
//! from each request's *scheduled* start, so a slow server cannot hide its
//! queueing — no coordinated omission) and closed-loop (N workers back to
//! back, for peak throughput). Latencies go into HDR histograms.

use hdrhistogram::Histogram;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Requests start at this rate per second, whatever the answers do.
    Open { rate: f64 },
    /// This many workers, each sending its next request when the last ends.
    Closed { concurrency: usize },
}

/// What one call saw besides its total latency.
#[derive(Default, Clone, Copy)]
pub struct Observed {
    /// Time from sending to the first token (streams).
    pub first_token: Option<Duration>,
    /// Tokens (stream deltas) received.
    pub tokens: u64,
}

/// A finished run.
pub struct Report {
    pub ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
    /// Total latency per call, in microseconds.
    pub latency: Histogram<u64>,
    /// Time to first token per call, in microseconds (streams).
    pub first_token: Histogram<u64>,
    pub tokens: u64,
}

impl Report {
    /// A report filled call by call (see `add`).
    pub fn empty() -> Report {
        Report {
            ok: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latency: histogram(),
            first_token: histogram(),
            tokens: 0,
        }
    }

    pub fn add(&mut self, took: Duration, result: Result<Observed, String>) {
        self.elapsed += took;
        match result {
            Ok(_) => {
                self.ok += 1;
                let _ = self.latency.record((took.as_micros() as u64).max(1));
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Latency at `q` (0..1) in milliseconds.
    pub fn ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn ttft_ms(&self, q: f64) -> f64 {
        self.first_token.value_at_quantile(q) as f64 / 1000.0
    }

    pub fn summary(&self) -> String {
        format!(
            "{:.0}/s ok={} err={} mean={:.3}ms p50={:.3}ms p90={:.3}ms p99={:.3}ms p99.9={:.3}ms max={:.3}ms",
            self.throughput(),
            self.ok,
            self.errors,
            self.latency.mean() / 1000.0,
            self.ms(0.5),
            self.ms(0.9),
            self.ms(0.99),
            self.ms(0.999),
            self.latency.max() as f64 / 1000.0
        )
    }
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).unwrap_or_else(|_| Histogram::new(3).unwrap())
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    tokens: u64,
}

struct Shared {
    latency: Mutex<Histogram<u64>>,
    first_token: Mutex<Histogram<u64>>,
    tally: Mutex<Tally>,
}

impl Shared {
    fn record(&self, lag: Duration, took: Duration, result: Result<Observed, String>) {
        match result {
            Ok(seen) => {
                let micros = (lag + took).as_micros() as u64;
                let _ = self.latency.lock().unwrap().record(micros.max(1));
                if let Some(first) = seen.first_token {
                    let micros = (lag + first).as_micros() as u64;
                    let _ = self.first_token.lock().unwrap().record(micros.max(1));
                }
                let mut t = self.tally.lock().unwrap();
                t.ok += 1;
                t.tokens += seen.tokens;
            }
            Err(e) => {
                let mut t = self.tally.lock().unwrap();
                t.errors += 1;
                t.first_error.get_or_insert(e);
            }
        }
    }
}

/// Runs `call(seq)` under `mode` for `duration` after `warmup` (whose calls
/// are not recorded).
pub async fn run<F, Fut>(mode: Mode, warmup: Duration, duration: Duration, call: F) -> Report
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Observed, String>> + Send + 'static,
{
    let call = Arc::new(call);
    let shared = Arc::new(Shared {
        latency: Mutex::new(histogram()),
        first_token: Mutex::new(histogram()),
        tally: Mutex::new(Tally::default()),
    });
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    match mode {
        Mode::Closed { concurrency } => {
            let workers: Vec<_> = (0..concurrency as u64)
                .map(|w| {
                    let call = call.clone();
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let mut seq = w;
                        loop {
                            let sent = Instant::now();
                            if sent >= end {
                                return;
                            }
                            let result = call(seq).await;
                            if sent >= measure_from {
                                shared.record(Duration::ZERO, sent.elapsed(), result);
                            }
                            seq += concurrency as u64;
                        }
                    })
                })
                .collect();
            for w in workers {
                let _ = w.await;
            }
        }
        Mode::Open { rate } => {
            let interval = Duration::from_secs_f64(1.0 / rate);
            let mut tasks = tokio::task::JoinSet::new();
            let mut seq = 0u64;
            loop {
                let scheduled = start + interval.mul_f64(seq as f64);
                if scheduled >= end {
                    break;
                }
                tokio::time::sleep_until(scheduled).await;
                let call = call.clone();
                let shared = shared.clone();
                tasks.spawn(async move {
                    let sent = Instant::now();
                    let lag = sent.saturating_duration_since(scheduled);
                    let result = call(seq).await;
                    if scheduled >= measure_from {
                        shared.record(lag, sent.elapsed(), result);
                    }
                });
                // Reap finished calls so the set stays small.
                while tasks.try_join_next().is_some() {}
                seq += 1;
            }
            while tasks.join_next().await.is_some() {}
        }
    }
    let elapsed = duration.max(
        Instant::now()
            .saturating_duration_since(measure_from)
            .min(duration),
    );
    let tally = std::mem::take(&mut *shared.tally.lock().unwrap());
    let latency = shared.latency.lock().unwrap().clone();
    let first_token = shared.first_token.lock().unwrap().clone();
    Report {
        ok: tally.ok,
        errors: tally.errors,
        first_error: tally.first_error,
        elapsed,
        latency,
        first_token,
        tokens: tally.tokens,
    }
}
