//! A model's last target is never ejected into total failure: random
//! failures keep it in service, a real outage cuts traffic to probes and
//! fails fast, and the cool-down brings it back.

use crate::backends::{openai, with_model};
use crate::helpers::*;
use crate::upstream::{FakeUpstream, Fault};
use dialogd::config::BreakerSettings;
use std::time::{Duration, Instant};
use tonic::Code;

/// One target, the default breaker (cool-down 1 s) and quick backoff.
async fn single_target(fake: &FakeUpstream) -> TestApp {
    spawn_app_with(|s| {
        with_model(s, vec![("openai", openai(fake, None))], &[("openai", 1)]);
        s.routing.breaker = BreakerSettings {
            cooldown_secs: 1,
            ..BreakerSettings::default()
        };
    })
    .await
}

/// A failed turn's code and ErrorInfo reason.
type Refusal = (Code, Option<String>);

/// `turns` turns spread over `workers` dialogues at once; each outcome
/// with how long it took.
async fn run_turns(
    app: &TestApp,
    tag: &str,
    workers: usize,
    turns: usize,
) -> Vec<(Result<(), Refusal>, Duration)> {
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let client = app.api.clone();
            let dialogue = format!("{tag}-{w}");
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for i in 0..turns / workers {
                    let mut request = converse_request(&dialogue, &format!("turn {i}"));
                    request.create_if_missing = true;
                    let started = Instant::now();
                    let outcome = client.converse_with(request).await;
                    let outcome = outcome
                        .map(|_| ())
                        .map_err(|e| (e.code(), error_reason(&e)));
                    outcomes.push((outcome, started.elapsed()));
                }
                outcomes
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_failures_on_the_only_target_do_not_eject_it() {
    let fake = FakeUpstream::start("gpt").await;
    fake.set_default(Fault::Flaky {
        status: 503,
        percent: 50,
    });
    let app = single_target(&fake).await;
    let outcomes = run_turns(&app, "flaky", 16, 1_000).await;
    let succeeded = outcomes.iter().filter(|(o, _)| o.is_ok()).count();
    let success = succeeded as f64 / outcomes.len() as f64;
    let amplification = fake.request_count() as f64 / outcomes.len() as f64;
    println!("50% 503: {success:.3} of turns succeeded at {amplification:.3}x upstream calls");
    assert!(success >= 0.55, "only {success:.3} of turns succeeded");
    assert!(
        amplification <= 1.25,
        "{amplification:.3} upstream calls per turn"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_is_cut_to_probes_fails_fast_and_recovers_within_the_cooldown() {
    let fake = FakeUpstream::start("gpt").await;
    fake.set_default(Fault::Status(503));
    let app = single_target(&fake).await;

    let outcomes = run_turns(&app, "down", 8, 400).await;
    assert!(outcomes.iter().all(|(o, _)| {
        o.as_ref()
            .is_err_and(|(code, _)| *code == Code::Unavailable)
    }));
    let upstream = fake.request_count();
    println!("100% outage: {upstream} upstream calls for 400 turns");
    // min_calls (20) trip the breaker, plus calls already in flight,
    // their retries and one probe per cool-down.
    assert!(upstream <= 60, "{upstream} upstream calls for 400 turns");
    let last: Vec<_> = outcomes.iter().rev().take(100).collect();
    let fast = last
        .iter()
        .filter(|(outcome, took)| {
            let no_backend = outcome
                .as_ref()
                .is_err_and(|(_, reason)| reason.as_deref() == Some("NO_BACKEND_AVAILABLE"));
            no_backend && *took < Duration::from_millis(50)
        })
        .count();
    assert!(
        fast >= 90,
        "only {fast} of the last 100 turns failed fast without a backend"
    );

    // The upstream is back: the first probe after the cool-down closes it.
    fake.set_default(Fault::None);
    let back = Instant::now();
    eventually(
        "a turn succeeding after the outage",
        Duration::from_secs(3),
        async || {
            let mut request = converse_request("back", "back?");
            request.create_if_missing = true;
            app.converse_with(request).await.is_ok()
        },
    )
    .await;
    println!(
        "recovered {:?} after the upstream came back",
        back.elapsed()
    );
    assert!(back.elapsed() <= Duration::from_millis(1_500));
    let outcomes = run_turns(&app, "up", 4, 40).await;
    assert!(outcomes.iter().all(|(o, _)| o.is_ok()));
}
