//! History survives restarts and crashes; a locked or damaged data dir is a
//! clear error, not a panic.

use crate::helpers::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempfile::TempDir;

#[tokio::test]
async fn history_is_intact_after_a_restart() {
    let app = spawn_app().await;
    app.create("kept").await;
    for i in 0..5 {
        app.converse("kept", &format!("turn {i}")).await.unwrap();
    }
    let before = app.all_turns("kept").await;
    let dialogue_before = app.get("kept", 0).await.unwrap();

    let app = app.restart().await;
    assert_eq!(app.all_turns("kept").await, before);
    let dialogue_after = app.get("kept", 0).await.unwrap();
    assert_eq!(dialogue_after.turn_count, 10);
    assert_eq!(dialogue_after.create_time, dialogue_before.create_time);
    // And the dialogue continues where it left off.
    let reply = app.converse("kept", "after restart").await.unwrap();
    assert_eq!(reply.user_turn.unwrap().index, 10);
}

/// SIGKILL the server in the middle of a burst of turns: every turn the
/// server acknowledged must be there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_turns_survive_a_sigkill() {
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(dir.path()).await;
    let channel = connect(server.addr).await;
    // (dialogue, message) pairs the server acknowledged.
    let acked: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let workers: Vec<_> = (0..24)
        .map(|w| {
            let client = Api::new(channel.clone());
            let acked = acked.clone();
            // Workers 0..16 have a dialogue each; 16..24 share one.
            let dialogue = if w < 16 {
                format!("crash-{w}")
            } else {
                "crash-shared".to_string()
            };
            tokio::spawn(async move {
                for n in 0.. {
                    let message = format!("w{w}-n{n}");
                    let mut request = converse_request(&dialogue, &message);
                    request.create_if_missing = true;
                    match client.converse_with(request).await {
                        Ok(_) => acked.lock().unwrap().push((dialogue.clone(), message)),
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    // Kill once a good number of turns went through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 600 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill9().await;
    for w in workers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 100,
        "only {} turns before the kill",
        acked.len()
    );

    let server = ServerProcess::start(dir.path()).await;
    let client = server.api().await;
    let mut stored: HashMap<String, Vec<String>> = HashMap::new();
    for dialogue in acked
        .iter()
        .map(|(d, _)| d.clone())
        .collect::<std::collections::HashSet<_>>()
    {
        let mut texts = Vec::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_turns(dialogd::pb::dialogue::v1::ListTurnsRequest {
                    parent: name(&dialogue),
                    page_size: 1000,
                    page_token: token,
                    view: 0,
                })
                .await
                .expect("acknowledged dialogue exists after the crash");
            for (i, turn) in page.turns.iter().enumerate() {
                assert_eq!(
                    turn.index as usize,
                    texts.len() + i,
                    "indexes are contiguous"
                );
            }
            texts.extend(page.turns.iter().map(turn_text));
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        // Whole exchanges only: a message is always followed by its reply.
        assert_eq!(texts.len() % 2, 0, "{dialogue} has a half-written exchange");
        for pair in texts.chunks(2) {
            assert_eq!(pair[1], format!("echo: {}", pair[0]));
        }
        stored.insert(dialogue, texts);
    }
    for (dialogue, message) in &acked {
        assert!(
            stored[dialogue].contains(message),
            "acknowledged turn {message} of {dialogue} lost in the crash"
        );
    }
    server.kill9().await;
}

#[tokio::test]
async fn a_data_dir_in_use_is_refused_with_a_clear_error() {
    if redis_store() {
        return; // sled's data-dir lock; the Redis run has none to hold.
    }
    let app = spawn_app().await;
    let output = tokio::process::Command::new(binary())
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(app.data_dir.path())
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("in use by another process"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Logs into a pipe (or a file) carry no colour codes.
    assert!(stderr.contains("dialogd stopped with an error"), "{stderr}");
    assert!(!stderr.contains('\x1b'), "{stderr:?}");
    // The running server is unaffected.
    app.create("still-fine").await;
}

#[tokio::test]
async fn a_damaged_data_dir_exits_with_an_error_instead_of_panicking() {
    let dir = TempDir::new().unwrap();
    std::fs::write(
        dir.path().join("conf"),
        b"this is not a sled config\0\x01\x02",
    )
    .unwrap();
    std::fs::write(dir.path().join("db"), vec![0xAB; 4096]).unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::process::Command::new(binary())
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .output(),
    )
    .await
    .expect("exits instead of hanging")
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot be opened"), "{stderr}");
}

#[tokio::test]
async fn bad_configuration_exits_with_status_2_and_names_the_problem() {
    let output = tokio::process::Command::new(binary())
        .args(["--config", "/nonexistent/dialogd.toml"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/dialogd.toml"));

    let output = tokio::process::Command::new(binary())
        .env("DIALOGD_STORE__DURABILITY", "sometimes")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .to_lowercase()
            .contains("durability")
    );
}

#[tokio::test]
async fn relaxed_durability_stores_turns_and_flushes_on_shutdown() {
    let app = spawn_app_with(|s| s.store.durability = dialogd::config::Durability::Relaxed).await;
    app.create("relaxed").await;
    app.converse("relaxed", "quick ack").await.unwrap();
    let settings = app.settings.clone();
    let app = app.restart().await;
    assert_eq!(settings.store.durability, app.settings.store.durability);
    assert_eq!(app.all_turns("relaxed").await.len(), 2);
}

/// A clean stop writes every queued audit event before the store closes:
/// 200 mutating calls answered, SIGTERM at once, and all 200 are in the
/// audit log after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_events_queued_at_a_clean_stop_are_written() {
    use crate::store_integrity::try_start;
    let dir = TempDir::new().unwrap();
    let server = try_start(dir.path(), &[]).await.unwrap();
    let api = Api::connect(server.addr).await;
    let calls: Vec<_> = (0..200)
        .map(|n| {
            let api = api.clone();
            tokio::spawn(async move {
                let mut request = converse_request(&format!("a{n}"), "audited");
                request.create_if_missing = true;
                api.converse_with(request).await.unwrap();
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap();
    }
    server.stop().await;
    let server = try_start(dir.path(), &[]).await.unwrap();
    let api = Api::connect(server.addr).await;
    let page = api
        .list_audit_events(dialogd::pb::dialogue::v1::ListAuditEventsRequest {
            action: "Converse".into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 200);
    server.stop().await;
}
