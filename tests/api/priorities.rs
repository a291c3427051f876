//! Priorities of asynchronous turns: with one worker, a backlog of mixed
//! priorities runs high first, then normal, then low (each in arrival
//! order), every turn finishes, and the priority is kept in the stored
//! operation across a restart, where the backlog resumes in the same order.

use crate::helpers::*;
use crate::operations::{submit, wait_done};
use dialogd::pb::dialogue::v1 as pb;
use pb::OperationPriority as P;

fn with_priority(id: &str, text: &str, priority: P) -> pb::SubmitTurnRequest {
    pb::SubmitTurnRequest {
        priority: priority as i32,
        ..submit(id, text, "")
    }
}

/// One worker, turns ordered by priority alone (aging of an hour), the
/// echo backend taking `word_ms` per word.
async fn one_worker(word_ms: u64) -> TestApp {
    spawn_app_with(|s| {
        set_echo_delay(s, word_ms);
        s.operations.workers = 1;
        s.operations.aging_secs = 3600;
    })
    .await
}

/// Nanoseconds of an operation's last change (when it finished).
fn finished_at(op: &pb::Operation) -> i128 {
    let t = op.update_time.unwrap();
    i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos)
}

/// The operations' names, in the order they finished.
async fn finishing_order(app: &TestApp, names: &[(String, String)]) -> Vec<String> {
    let mut done = Vec::new();
    for (label, name) in names {
        let op = wait_done(&app.api, name).await;
        assert!(
            matches!(op.result, Some(pb::operation::Result::Response(_))),
            "{label}: {op:?}"
        );
        done.push((finished_at(&op), label.clone()));
    }
    done.sort();
    done.into_iter().map(|(_, label)| label).collect()
}

#[tokio::test]
async fn a_backlog_runs_high_priority_first_and_low_ones_still_finish() {
    let app = one_worker(200).await;
    // Holds the only worker for ~1.2 s while the backlog is submitted.
    let blocker = app
        .submit_turn(submit("blocker", "one two three four five", ""))
        .await
        .unwrap();
    let mut names = Vec::new();
    for round in 1..=3 {
        for (label, priority) in [("low", P::Low), ("normal", P::Normal), ("high", P::High)] {
            let label = format!("{label}-{round}");
            let op = app
                .submit_turn(with_priority(&label, "hi", priority))
                .await
                .unwrap();
            assert_eq!(op.priority(), priority);
            names.push((label, op.name));
        }
    }
    assert!(
        !app.get_operation(pb::GetOperationRequest {
            name: blocker.name.clone()
        })
        .await
        .unwrap()
        .done,
        "the backlog was submitted while the blocker ran"
    );
    let order = finishing_order(&app, &names).await;
    assert_eq!(
        order,
        [
            "high-1", "high-2", "high-3", "normal-1", "normal-2", "normal-3", "low-1", "low-2",
            "low-3"
        ]
    );
    // An unknown priority is refused, naming the field.
    let mut bad = submit("bad", "hi", "");
    bad.priority = 42;
    let refused = app.submit_turn(bad).await.unwrap_err();
    assert_eq!(violated_fields(&refused), ["priority"]);
}

#[tokio::test]
async fn the_priority_is_kept_across_a_restart_and_the_backlog_resumes_in_order() {
    let app = one_worker(300).await;
    app.submit_turn(submit("blocker", "one two three four", ""))
        .await
        .unwrap();
    let low = app
        .submit_turn(with_priority("low", "hi", P::Low))
        .await
        .unwrap();
    let high = app
        .submit_turn(with_priority("high", "hi", P::High))
        .await
        .unwrap();
    // A graceful stop lets the running turn finish and starts no other:
    // the two wait in the store for the next start.
    let app = app.restart().await;
    for (op, priority) in [(&low, P::Low), (&high, P::High)] {
        let now = app
            .get_operation(pb::GetOperationRequest {
                name: op.name.clone(),
            })
            .await
            .unwrap();
        assert_eq!(now.priority(), priority, "{}", op.name);
    }
    let names = [
        ("low".to_string(), low.name.clone()),
        ("high".to_string(), high.name.clone()),
    ];
    assert_eq!(finishing_order(&app, &names).await, ["high", "low"]);
}
