//! BatchConverse: independent turns run together, results in order, each
//! with its own outcome; only a malformed batch fails as a whole.

use crate::helpers::*;
use dialogd::pb::dialogue::v1 as pb;
use pb::batch_converse_result::Result as Outcome;
use std::time::{Duration, Instant};
use tonic::Code;

fn creating(id: &str, text: &str) -> pb::ConverseRequest {
    let mut request = converse_request(id, text);
    request.create_if_missing = true;
    request
}

async fn batch(
    app: &TestApp,
    requests: Vec<pb::ConverseRequest>,
) -> Result<Vec<Outcome>, tonic::Status> {
    let results = app
        .batch_converse(pb::BatchConverseRequest { requests })
        .await?
        .results;
    Ok(results.into_iter().map(|r| r.result.unwrap()).collect())
}

#[tokio::test]
async fn each_turn_of_a_batch_has_its_own_outcome_in_request_order() {
    let app = spawn_app().await;
    let mut empty = creating("d-empty", "");
    empty.content.clear();
    let results = batch(
        &app,
        vec![
            creating("d-one", "first"),
            converse_request("d-missing", "nobody created me"),
            creating("d-two", "second"),
            empty,
        ],
    )
    .await
    .unwrap();
    assert_eq!(results.len(), 4);
    let Outcome::Response(one) = &results[0] else {
        panic!("{:?}", results[0])
    };
    assert_eq!(one.dialogue_id, "d-one");
    assert_eq!(turn_text(one.turn.as_ref().unwrap()), "echo: first");
    let Outcome::Error(missing) = &results[1] else {
        panic!("{:?}", results[1])
    };
    assert_eq!(missing.code, Code::NotFound as i32);
    assert_eq!(missing.reason, "NOT_FOUND");
    let Outcome::Response(two) = &results[2] else {
        panic!("{:?}", results[2])
    };
    assert_eq!(turn_text(two.turn.as_ref().unwrap()), "echo: second");
    let Outcome::Error(invalid) = &results[3] else {
        panic!("{:?}", results[3])
    };
    assert_eq!(invalid.code, Code::InvalidArgument as i32);
    assert_eq!(invalid.field_violations[0].field, "content");
    // What succeeded is stored; what failed is not.
    assert_eq!(app.all_turns("d-one").await.len(), 2);
    assert_eq!(app.all_turns("d-two").await.len(), 2);
    assert_eq!(
        app.get("d-missing", 0).await.unwrap_err().code(),
        Code::NotFound
    );
}

#[tokio::test]
async fn the_turns_of_a_batch_run_concurrently() {
    // 100 ms a word: each reply ("echo: a b") takes about 300 ms.
    let app = spawn_app_with(|s| set_echo_delay(s, 100)).await;
    let one = Instant::now();
    batch(&app, vec![creating("warm", "a b")]).await.unwrap();
    let single = one.elapsed();
    let requests = (0..16)
        .map(|i| creating(&format!("c-{i}"), "a b"))
        .collect();
    let started = Instant::now();
    let results = batch(&app, requests).await.unwrap();
    let all = started.elapsed();
    assert!(results.iter().all(|r| matches!(r, Outcome::Response(_))));
    // Sequential would take 16 single turns; allow a lot of noise.
    assert!(all < single * 6, "16 turns took {all:?}, one {single:?}");
    assert!(all >= Duration::from_millis(200));
}

#[tokio::test]
async fn a_malformed_batch_fails_as_a_whole() {
    let app = spawn_app().await;
    for (requests, field) in [
        (Vec::new(), "requests"),
        (
            (0..33).map(|i| creating(&format!("m-{i}"), "x")).collect(),
            "requests",
        ),
        (
            vec![
                creating("same", "a"),
                creating("other", "b"),
                creating("same", "c"),
            ],
            "requests[2].name",
        ),
    ] {
        let error = batch(&app, requests).await.unwrap_err();
        assert_eq!(error.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&error), vec![field.to_string()]);
    }
    // Nothing ran.
    assert_eq!(app.get("same", 0).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn a_batch_over_rest() {
    let app = spawn_app().await;
    let response = plain_http()
        .build()
        .unwrap()
        .post(format!("http://{}/v1/dialogues:batchConverse", app.addr))
        .json(&serde_json::json!({"requests": [
            {"name": "dialogues/r-a", "content": [{"text": "one"}], "createIfMissing": true},
            {"name": "dialogues/r-b", "content": [{"text": "two"}]}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.unwrap();
    let results = body["results"].as_array().unwrap();
    assert_eq!(
        results[0]["response"]["turn"]["content"][0]["text"],
        "echo: one"
    );
    assert_eq!(results[1]["error"]["reason"], "NOT_FOUND");
}

/// A batch costs one request per turn of the caller's rate limit: it may
/// not be used to get N turns for the price of one.
#[tokio::test]
async fn a_batch_pays_one_request_per_turn() {
    let app = spawn_app_with(|s| {
        s.limits.requests_per_second = 1;
        s.limits.request_burst = 10;
    })
    .await;
    let turns = |tag: &str, n: usize| {
        (0..n)
            .map(|i| creating(&format!("{tag}-{i}"), "hi"))
            .collect::<Vec<_>>()
    };
    // More turns than the whole burst can never pass: named, not retried.
    let err = batch(&app, turns("huge", 11)).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(violated_fields(&err), ["requests"]);
    // With the call above, 8 more make 9 of the 10 in the burst.
    let results = batch(&app, turns("paid", 8)).await.unwrap();
    assert!(results.iter().all(|r| matches!(r, Outcome::Response(_))));
    // 4 more do not fit: refused whole, before any turn runs.
    let err = batch(&app, turns("over", 4)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    use tonic_types::StatusExt;
    assert!(err.get_details_retry_info().is_some());
    // Nothing of it ran (asked once the rate allows a call again).
    eventually(
        "a call within the rate",
        Duration::from_secs(5),
        async || match app.get("over-0", 0).await {
            Err(e) if e.code() == Code::ResourceExhausted => false,
            Err(e) => {
                assert_eq!(e.code(), Code::NotFound);
                true
            }
            Ok(d) => panic!("a refused batch created {d:?}"),
        },
    )
    .await;
}
