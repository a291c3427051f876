//! Two dialogd processes sharing one real Redis (or a real Redis Cluster,
//! in `redis_cluster.rs`): a dialogue started on one continues on the
//! other; turns sent to both at once wait for each other, so they never
//! interleave, go missing or fail; callers' limits hold across both.

use crate::helpers::*;
use dialogd::pb::dialogue::v1 as pb;
use dialogd::pb::dialogue::v1::dialogue_service_client::DialogueServiceClient;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tonic::Code;
use tonic::transport::Channel;

/// Where the replicas keep their state: `store.redis` settings.
pub struct SharedRedis {
    /// `url = ...` or `cluster_nodes = [...]`, one per line.
    pub connection: String,
    pub prefix: String,
}

impl SharedRedis {
    /// The redis-server on 127.0.0.1:6379, under a fresh key prefix.
    pub fn local() -> SharedRedis {
        SharedRedis {
            connection: "url = \"redis://127.0.0.1:6379\"".into(),
            prefix: format!("test-{:016x}:", rand::random::<u64>()),
        }
    }
}

/// A replica on `redis` with the echo backend; `extra` is added to its
/// config (it may start with keys of `[store.redis]`).
pub async fn replica(dir: &TempDir, name: &str, redis: &SharedRedis, extra: &str) -> ServerProcess {
    replica_with_echo_delay(dir, name, redis, extra, 1).await
}

pub async fn replica_with_echo_delay(
    dir: &TempDir,
    name: &str,
    redis: &SharedRedis,
    extra: &str,
    echo_delay_ms: u64,
) -> ServerProcess {
    let config = dir.path().join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[store]\nkind = \"redis\"\n[store.redis]\n{}\nkey_prefix = \"{}\"\n{extra}\n[backends.echo]\nkind = \"echo\"\ndelay_ms = {echo_delay_ms}\n",
            redis.connection, redis.prefix
        ),
    )
    .unwrap();
    ServerProcess::start_with(
        &dir.path().join(name),
        &["--config", config.to_str().unwrap()],
    )
    .await
}

async fn client(server: &ServerProcess) -> Api {
    server.api().await
}

/// A plain gRPC client, for answers whose metadata is the point.
async fn raw_client(server: &ServerProcess) -> DialogueServiceClient<Channel> {
    DialogueServiceClient::connect(format!("http://{}", server.addr))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_dialogues_without_interleaving_or_losing_turns() {
    two_replicas_share_a_dialogue(&SharedRedis::local()).await;
}

/// A dialogue continued across replicas, then 16 turns sent to both at
/// once: each waits its turn (none fails), and every one is stored once,
/// its reply right after it.
pub async fn two_replicas_share_a_dialogue(redis: &SharedRedis) {
    let dir = TempDir::new().unwrap();
    let (a, b) = (
        replica(&dir, "a", redis, "").await,
        replica(&dir, "b", redis, "").await,
    );
    let (on_a, on_b) = (client(&a).await, client(&b).await);

    // Started on one, continued on the other.
    on_a.create_dialogue(pb::CreateDialogueRequest {
        dialogue: Some(pb::Dialogue {
            dialogue_id: "shared".into(),
            ..Default::default()
        }),
    })
    .await
    .unwrap();
    on_a.converse_with(converse_request("shared", "hello from a"))
        .await
        .unwrap();
    let reply = on_b
        .converse_with(converse_request("shared", "hello from b"))
        .await
        .unwrap();
    assert_eq!(reply.turn.unwrap().index, 3);

    // Both replicas at once, several callers each.
    let mut calls = Vec::new();
    for i in 0..16 {
        let client = if i % 2 == 0 {
            on_a.clone()
        } else {
            on_b.clone()
        };
        calls.push(tokio::spawn(async move {
            client
                .converse_with(converse_request("shared", &format!("message {i}")))
                .await
        }));
    }
    for call in calls {
        call.await
            .unwrap()
            .expect("a turn waits for the other replica's");
    }
    // Every turn is there once, each reply right after its message.
    let turns = on_b
        .list_turns(pb::ListTurnsRequest {
            parent: name("shared"),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .turns;
    assert_eq!(turns.len(), 4 + 32);
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
    let count = |c: Api| async move {
        c.get_dialogue(pb::GetDialogueRequest {
            name: name("shared"),
            ..Default::default()
        })
        .await
        .unwrap()
        .turn_count
    };
    assert_eq!((count(on_a).await, count(on_b).await), (36, 36));
    a.kill9().await;
    b.kill9().await;
}

#[tokio::test]
async fn replicas_share_each_callers_request_rate() {
    let dir = TempDir::new().unwrap();
    let redis = SharedRedis::local();
    let limits = "[limits]\nrequests_per_second = 1\nrequest_burst = 6\n";
    let (a, b) = (
        replica(&dir, "a", &redis, limits).await,
        replica(&dir, "b", &redis, limits).await,
    );
    let (on_a, on_b) = (raw_client(&a).await, raw_client(&b).await);
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
    let redis = SharedRedis::local();
    let limits = "[limits]\ntokens_per_minute = 10\n";
    let (a, b) = (
        replica(&dir, "a", &redis, limits).await,
        replica(&dir, "b", &redis, limits).await,
    );
    let (on_a, on_b) = (client(&a).await, client(&b).await);
    let long = "one two three four five six seven eight nine ten eleven twelve";
    let mut first = converse_request("spend", long);
    first.create_if_missing = true;
    // Admitted with budget left; its real usage overdraws the minute.
    let spent = on_a.converse_with(first).await.unwrap();
    assert!(spent.usage.unwrap().total_tokens > 10);
    // The other replica knows: the caller's budget is spent everywhere.
    let refused = on_b
        .converse_with(converse_request("spend", "again"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert!(refused.message().contains("token budget"), "{refused:?}");
    assert!(refused.metadata().get("retry-after").is_some());
    a.kill9().await;
    b.kill9().await;
}

/// Opens a stream of a long reply and waits for its first event, so its
/// slot is taken; the stream stays open while the caller keeps it.
async fn open_stream(
    client: &Api,
    id: &str,
) -> Result<tonic::Streaming<pb::ConverseStreamResponse>, tonic::Status> {
    let mut request = converse_request(id, &"word ".repeat(200));
    request.create_if_missing = true;
    let mut stream = client.converse_stream(request).await?;
    stream.message().await?;
    Ok(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_each_callers_stream_slots_and_a_dead_replicas_lapse() {
    let dir = TempDir::new().unwrap();
    let redis = SharedRedis::local();
    let config = "lease_secs = 1\n[limits]\nmax_streams_per_principal = 2\n";
    // 50 ms a word: a 200-word reply streams for ten seconds.
    let (a, b) = (
        replica_with_echo_delay(&dir, "a", &redis, config, 50).await,
        replica_with_echo_delay(&dir, "b", &redis, config, 50).await,
    );
    let (on_a, on_b) = (client(&a).await, client(&b).await);
    let first = open_stream(&on_a, "s1").await.unwrap();
    let _second = open_stream(&on_b, "s2").await.unwrap();
    // Two open, one on each replica: a third is refused on either.
    for c in [&on_a, &on_b] {
        let refused = open_stream(c, "s3").await.unwrap_err();
        assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
        assert_eq!(error_reason(&refused).as_deref(), Some("STREAM_LIMIT"));
    }
    // A stream the client drops gives its slot back at once.
    drop(first);
    let reopened = wait_for_stream(&on_b, "s3", Duration::from_secs(2)).await;
    // A replica that dies with its streams open holds their slots only
    // for the lease time (1 s).
    let _fourth = open_stream(&on_a, "s4").await.unwrap_err();
    drop(reopened);
    let _held = wait_for_stream(&on_a, "s5", Duration::from_secs(2)).await;
    a.kill9().await;
    let died = Instant::now();
    let _after = wait_for_stream(&on_b, "s6", Duration::from_secs(4)).await;
    eprintln!(
        "a dead replica's slot was free again after {:?}",
        died.elapsed()
    );
    b.kill9().await;
}

/// Opens a stream, retrying while the caller's slots are all taken, for at
/// most `within`.
async fn wait_for_stream(
    client: &Api,
    id: &str,
    within: Duration,
) -> tonic::Streaming<pb::ConverseStreamResponse> {
    let start = Instant::now();
    loop {
        match open_stream(client, id).await {
            Ok(stream) => return stream,
            Err(s) if s.code() == Code::ResourceExhausted && start.elapsed() < within => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(s) => panic!("no slot for {id} within {within:?}: {s:?}"),
        }
    }
}
