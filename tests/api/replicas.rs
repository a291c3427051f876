//! Two dialogd processes sharing one real Redis: a dialogue started on one
//! continues on the other, and turns sent to both at once never interleave
//! or go missing (a turn that loses the race answers ABORTED and is simply
//! sent again, as a client would).

use crate::helpers::*;
use dialogd::pb::dialogue::v1 as pb;
use dialogd::pb::dialogue::v1::dialogue_service_client::DialogueServiceClient;
use std::collections::HashSet;
use tempfile::TempDir;
use tonic::Code;
use tonic::transport::Channel;

async fn replica(dir: &TempDir, name: &str, prefix: &str) -> ServerProcess {
    replica_with(dir, name, prefix, "").await
}

async fn replica_with(dir: &TempDir, name: &str, prefix: &str, extra: &str) -> ServerProcess {
    let config = dir.path().join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[store]\nkind = \"redis\"\nredis = {{ url = \"redis://127.0.0.1:6379\", key_prefix = \"{prefix}\" }}\n[backends.echo]\nkind = \"echo\"\ndelay_ms = 1\n{extra}"
        ),
    )
    .unwrap();
    ServerProcess::start_with(
        &dir.path().join(name),
        &["--config", config.to_str().unwrap()],
    )
    .await
}

async fn client(server: &ServerProcess) -> DialogueServiceClient<Channel> {
    DialogueServiceClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap()
}

/// Sends `message` until it is stored (ABORTED means another replica's
/// turn won the race; nothing of this one was stored).
async fn converse_until_stored(client: &mut DialogueServiceClient<Channel>, message: &str) -> u32 {
    let mut lost_races = 0;
    loop {
        match client.converse(converse_request("shared", message)).await {
            Ok(_) => return lost_races,
            Err(s) if s.code() == Code::Aborted => lost_races += 1,
            Err(s) => panic!("{message}: {s:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_dialogues_without_interleaving_or_losing_turns() {
    let dir = TempDir::new().unwrap();
    let prefix = format!("test-{:016x}:", rand::random::<u64>());
    let (a, b) = (
        replica(&dir, "a", &prefix).await,
        replica(&dir, "b", &prefix).await,
    );
    let (mut on_a, mut on_b) = (client(&a).await, client(&b).await);

    // Started on one, continued on the other.
    on_a.create_dialogue(pb::CreateDialogueRequest {
        dialogue: Some(pb::Dialogue {
            dialogue_id: "shared".into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    on_a.converse(converse_request("shared", "hello from a"))
        .await
        .unwrap();
    let reply = on_b
        .converse(converse_request("shared", "hello from b"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.turn.unwrap().index, 3);

    // Both replicas at once, several callers each.
    let mut calls = Vec::new();
    for i in 0..16 {
        let mut client = if i % 2 == 0 {
            on_a.clone()
        } else {
            on_b.clone()
        };
        calls.push(tokio::spawn(async move {
            converse_until_stored(&mut client, &format!("message {i}")).await
        }));
    }
    let mut lost_races = 0;
    for call in calls {
        lost_races += call.await.unwrap();
    }

    eprintln!("turns that lost a race between the replicas and were resent: {lost_races}");
    // Every turn is there once, each reply right after its message.
    let turns = on_b
        .list_turns(pb::ListTurnsRequest {
            parent: name("shared"),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .turns;
    assert_eq!(turns.len(), 4 + 32, "lost races: {lost_races}");
    let mut seen = HashSet::new();
    for (i, pair) in turns.chunks(2).enumerate() {
        let (user, reply) = (turn_text(&pair[0]), turn_text(&pair[1]));
        assert_eq!(reply, format!("echo: {user}"), "pair {i} interleaved");
        assert_eq!(pair[0].index, 2 * i as i64);
        assert!(seen.insert(user.clone()), "{user} stored twice");
    }
    for i in 0..16 {
        assert!(seen.contains(&format!("message {i}")), "message {i} lost");
    }
    // Both see the same dialogue.
    let count = |mut c: DialogueServiceClient<Channel>| async move {
        c.get_dialogue(pb::GetDialogueRequest {
            name: name("shared"),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .turn_count
    };
    assert_eq!((count(on_a).await, count(on_b).await), (36, 36));
    a.kill9().await;
    b.kill9().await;
}

#[tokio::test]
async fn replicas_share_each_callers_request_rate() {
    let dir = TempDir::new().unwrap();
    let prefix = format!("test-{:016x}:", rand::random::<u64>());
    let limits = "[limits]\nrequests_per_second = 1\nrequest_burst = 6\n";
    let (a, b) = (
        replica_with(&dir, "a", &prefix, limits).await,
        replica_with(&dir, "b", &prefix, limits).await,
    );
    let (on_a, on_b) = (client(&a).await, client(&b).await);
    let list = |mut c: DialogueServiceClient<Channel>| async move {
        c.list_dialogues(pb::ListDialoguesRequest::default()).await
    };
    // The burst of 6 is spent across both replicas, not 6 on each.
    for i in 0..6 {
        let answer = list(if i % 2 == 0 {
            on_a.clone()
        } else {
            on_b.clone()
        })
        .await
        .unwrap();
        let left = answer.metadata().get("x-ratelimit-remaining").unwrap();
        assert_eq!(left.to_str().unwrap(), (5 - i).to_string());
    }
    for c in [on_a.clone(), on_b.clone()] {
        let refused = list(c).await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(refused.metadata().get("retry-after").is_some());
    }
    // One second later one more call fits again.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    list(on_b).await.unwrap();
    a.kill9().await;
    b.kill9().await;
}

#[tokio::test]
async fn replicas_share_each_callers_token_budget() {
    let dir = TempDir::new().unwrap();
    let prefix = format!("test-{:016x}:", rand::random::<u64>());
    let limits = "[limits]\ntokens_per_minute = 10\n";
    let (a, b) = (
        replica_with(&dir, "a", &prefix, limits).await,
        replica_with(&dir, "b", &prefix, limits).await,
    );
    let (mut on_a, mut on_b) = (client(&a).await, client(&b).await);
    let long = "one two three four five six seven eight nine ten eleven twelve";
    let mut first = converse_request("spend", long);
    first.create_if_missing = true;
    // Admitted with budget left; its real usage overdraws the minute.
    let spent = on_a.converse(first).await.unwrap().into_inner();
    assert!(spent.usage.unwrap().total_tokens > 10);
    // The other replica knows: the caller's budget is spent everywhere.
    let refused = on_b
        .converse(converse_request("spend", "again"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("token budget"), "{refused:?}");
    assert!(refused.metadata().get("retry-after").is_some());
    a.kill9().await;
    b.kill9().await;
}
