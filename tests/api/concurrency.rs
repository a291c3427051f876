//! Concurrent turns on one dialogue are serialized: history never
//! interleaves and nothing is lost.

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_turns_on_one_dialogue_never_interleave() {
    let app = spawn_app_with(|s| set_echo_delay(s, 2)).await;
    app.create("busy").await;
    let calls: Vec<_> = (0..24)
        .map(|i| {
            let client = app.api.clone();
            tokio::spawn(async move {
                let message = format!("message {i}");
                if i % 2 == 0 {
                    client
                        .converse_with(converse_request("busy", &message))
                        .await
                        .map(|_| ())
                } else {
                    let mut stream = client
                        .converse_stream(converse_request("busy", &message))
                        .await?;
                    while stream.message().await?.is_some() {}
                    Ok(())
                }
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let turns = app.all_turns("busy").await;
    assert_eq!(turns.len(), 48);
    let mut seen = std::collections::HashSet::new();
    for (i, pair) in turns.chunks(2).enumerate() {
        let (user, reply) = (&pair[0], &pair[1]);
        assert_eq!((user.index, reply.index), (2 * i as i64, 2 * i as i64 + 1));
        assert_eq!(user.role, dialogd::pb::dialogue::v1::Role::User as i32);
        assert_eq!(
            turn_text(reply),
            format!("echo: {}", turn_text(user)),
            "reply follows its own message"
        );
        assert!(seen.insert(turn_text(user)), "each message stored once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn different_dialogues_proceed_in_parallel() {
    // 8 dialogues x 5 words x 50 ms: ~250 ms if parallel, ~2 s if serialized.
    let app = spawn_app_with(|s| set_echo_delay(s, 50)).await;
    for i in 0..8 {
        app.create(&format!("p{i}")).await;
    }
    let started = std::time::Instant::now();
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let client = app.api.clone();
            tokio::spawn(async move {
                client
                    .converse_with(converse_request(&format!("p{i}"), "a b c d"))
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
}
