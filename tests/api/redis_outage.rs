//! Two replicas on a redis-server this test starts, kills and restarts:
//! calls fail fast and readiness drops while Redis is away, both replicas
//! recover as soon as it is back, a crashed replica's dialogues are free
//! again within the (short) lease, and calls cancelled while waiting for a
//! dialogue's lease leave nothing behind. No acknowledged turn is lost.

use crate::helpers::*;
use crate::replicas::{SharedRedis, replica_with_echo_delay};
use dialogd::pb::dialogue::v1 as pb;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// A redis-server of this test's own, persisting every write (AOF,
/// fsync always), so a restart keeps what it acknowledged.
struct OwnRedis {
    port: u16,
    dir: TempDir,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = OwnRedis {
            port,
            dir: TempDir::new().unwrap(),
            child: None,
        };
        redis.run();
        redis
    }

    fn run(&mut self) {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        self.child = Some(child);
        let started = Instant::now();
        while !self.answers() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server starts"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// PING answered.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn shared(&self) -> SharedRedis {
        SharedRedis {
            connection: format!("url = \"redis://127.0.0.1:{}\"", self.port),
            prefix: format!("outage-{:08x}:", rand::random::<u32>()),
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn readiness(addr: SocketAddr, service: &str) -> Option<i32> {
    let mut health = HealthClient::new(connect(addr).await);
    let request = tonic_health::pb::HealthCheckRequest {
        service: service.into(),
    };
    health
        .check(request)
        .await
        .ok()
        .map(|r| r.into_inner().status)
}

fn turn_request(
    dialogue: &str,
    text: &str,
    deadline: Duration,
) -> tonic::Request<pb::ConverseRequest> {
    let mut body = converse_request(dialogue, text);
    body.create_if_missing = true;
    let mut request = tonic::Request::new(body);
    request.set_timeout(deadline);
    request
}

/// Every (dialogue, message) pair in `acked` is stored, read through `api`.
async fn all_stored(api: &Api, acked: &[(String, String)]) {
    for (dialogue, message) in acked {
        let turns = api.all_turns(dialogue).await;
        assert!(
            turns.iter().any(|t| turn_text(t) == *message),
            "acknowledged turn {message:?} of {dialogue} lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_fails_fast_drops_readiness_and_recovers_at_once() {
    let mut redis = OwnRedis::start();
    let shared = redis.shared();
    let dir = TempDir::new().unwrap();
    let replicas = [
        replica_with_echo_delay(&dir, "a", &shared, "", 1).await,
        replica_with_echo_delay(&dir, "b", &shared, "", 1).await,
    ];
    let mut acked = Vec::new();
    for (i, replica) in replicas.iter().enumerate() {
        let api = replica.api().await;
        for n in 0..3 {
            let message = format!("before {i} {n}");
            let dialogue = format!("o{n}");
            api.converse_with(turn_request(&dialogue, &message, Duration::from_secs(5)))
                .await
                .unwrap();
            acked.push((dialogue, message));
        }
    }

    redis.kill();
    for replica in &replicas {
        eventually(
            "readiness NOT_SERVING",
            Duration::from_secs(3),
            async || {
                readiness(replica.addr, "dialogue.v1.DialogueService").await
                    == Some(ServingStatus::NotServing as i32)
            },
        )
        .await;
        assert_eq!(
            readiness(replica.addr, "").await,
            Some(ServingStatus::Serving as i32),
            "liveness stays SERVING"
        );
    }
    let mut slowest = Duration::ZERO;
    let mut during = Vec::new();
    for replica in &replicas {
        let api = replica.api().await;
        for n in 0..5 {
            let started = Instant::now();
            let mut request = turn_request(&format!("o{n}"), "during", Duration::from_secs(10));
            let id = format!("outage-{}-{n}", replica.addr.port());
            request
                .metadata_mut()
                .insert("x-request-id", id.parse().unwrap());
            during.push(id);
            let err = api.converse_with(request).await.unwrap_err();
            slowest = slowest.max(started.elapsed());
            assert_eq!(err.code(), Code::Unavailable, "{err:?}");
            assert_eq!(error_reason(&err).as_deref(), Some("STORE_UNAVAILABLE"));
            use tonic_types::StatusExt;
            assert!(err.get_details_retry_info().is_some());
        }
    }
    println!("slowest failure during the outage: {slowest:?}");
    assert!(slowest < Duration::from_millis(500), "{slowest:?}");

    redis.run();
    let back = Instant::now();
    let mut recovered = Vec::new();
    for (i, replica) in replicas.iter().enumerate() {
        let api = replica.api().await;
        let message = format!("after {i}");
        loop {
            let answer = api
                .converse_with(turn_request("o0", &message, Duration::from_secs(5)))
                .await;
            if answer.is_ok() {
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(5),
                "no recovery: {answer:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        recovered.push(back.elapsed());
        acked.push(("o0".to_string(), message));
        eventually("readiness SERVING", Duration::from_secs(2), async || {
            readiness(replica.addr, "dialogue.v1.DialogueService").await
                == Some(ServingStatus::Serving as i32)
        })
        .await;
    }
    println!("first turn after Redis answered again: {recovered:?}");
    // Measured: 73 and 82 ms. The bar is the 0.5 s the operators asked for.
    assert!(recovered[1] < Duration::from_millis(500), "{recovered:?}");
    all_stored(&replicas[1].api().await, &acked).await;
    // The calls refused during the outage were audited once Redis was back.
    let api = replicas[0].api().await;
    eventually(
        "the outage's audit events written",
        Duration::from_secs(5),
        async || {
            let page = api
                .list_audit_events(pb::ListAuditEventsRequest {
                    page_size: 1000,
                    ..Default::default()
                })
                .await
                .unwrap();
            let audited: Vec<_> = page
                .events
                .iter()
                .filter(|e| during.contains(&e.request_id))
                .collect();
            audited.len() == during.len() && audited.iter().all(|e| e.status == "Unavailable")
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crashed_replicas_dialogue_is_free_again_within_the_lease() {
    let redis = OwnRedis::start();
    let shared = redis.shared();
    let dir = TempDir::new().unwrap();
    // Slow replies, so the crash comes mid-turn, holding the dialogue's lease.
    let doomed = replica_with_echo_delay(&dir, "doomed", &shared, "", 300).await;
    let survivor = replica_with_echo_delay(&dir, "survivor", &shared, "", 1).await;
    let api = doomed.api().await;
    api.converse_with(turn_request("held", "first", Duration::from_secs(5)))
        .await
        .unwrap();
    let mut body = converse_request("held", "interrupted");
    body.request_id = "retry-me".into();
    let mut stream = api.converse_stream(body.clone()).await.unwrap();
    stream.message().await.unwrap().expect("the turn started");
    doomed.kill9().await;
    let crashed = Instant::now();

    // The caller retries with the same request_id on the survivor.
    let survivor_api = survivor.api().await;
    let reply = loop {
        let mut request = tonic::Request::new(body.clone());
        request.set_timeout(Duration::from_secs(10));
        match survivor_api.converse_with(request).await {
            Ok(reply) => break reply,
            Err(e) => {
                assert!(crashed.elapsed() < Duration::from_secs(5), "{e:?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let window = crashed.elapsed();
    println!("the crashed replica's dialogue served again after {window:?}");
    assert!(window < Duration::from_secs(3), "{window:?}");
    assert_eq!(turn_text(&reply.turn.unwrap()), "echo: interrupted");
    let turns = survivor_api.all_turns("held").await;
    assert_eq!(turns.len(), 4, "first exchange kept, the retried one once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn calls_cancelled_while_waiting_for_a_lease_leave_nothing_behind() {
    let mut redis = OwnRedis::start();
    let shared = redis.shared();
    let dir = TempDir::new().unwrap();
    // A long lease: one left behind would hold the dialogue for 30 s.
    // Generous Redis timeouts: this is about cancelled calls, and a busy
    // CI machine can take over a second to answer (seen once).
    let extra = "lease_secs = 30\ncommand_timeout_ms = 5000\nconnect_timeout_ms = 2000";
    let replicas = [
        replica_with_echo_delay(&dir, "a", &shared, extra, 20).await,
        replica_with_echo_delay(&dir, "b", &shared, extra, 20).await,
    ];
    let apis = [replicas[0].api().await, replicas[1].api().await];
    apis[0]
        .converse_with(turn_request("contended", "first", Duration::from_secs(5)))
        .await
        .unwrap();
    // Many callers with deadlines that run out while they wait for (or
    // just as they are granted) the dialogue's lease.
    let mut calls = Vec::new();
    for n in 0..200u64 {
        let client = apis[(n % 2) as usize].clone();
        let deadline = Duration::from_millis(1 + n % 40);
        calls.push(tokio::spawn(async move {
            client
                .converse_with(turn_request("contended", &format!("n{n}"), deadline))
                .await
                .map(|_| ())
        }));
    }
    let mut cancelled = 0;
    for call in calls {
        if call.await.unwrap().is_err() {
            cancelled += 1;
        }
    }
    println!("{cancelled} of 200 calls ran out of time");
    assert!(cancelled > 50);
    let free = async |api: &Api, what: &str| {
        let started = Instant::now();
        api.converse_with(turn_request("contended", what, Duration::from_secs(20)))
            .await
            .unwrap();
        started.elapsed()
    };
    // On a fresh connection: 200 streams reset on one HTTP/2 connection
    // may earn it a GOAWAY (h2's rapid-reset guard, "too_many_resets")
    // when the server is slow to accept them — a busy CI machine.
    let fresh = replicas[0].api().await;
    let waited = free(&fresh, "after the cancellations").await;
    println!("next turn waited {waited:?}");
    assert!(
        waited < Duration::from_secs(2),
        "a lease outlived its call: {waited:?}"
    );

    // Deadlines that expire during an outage leave nothing behind either.
    redis.kill();
    for n in 0..20u64 {
        let _ = apis[(n % 2) as usize]
            .converse_with(turn_request(
                "contended",
                "lost",
                Duration::from_millis(1 + n * 10),
            ))
            .await;
    }
    redis.run();
    let back = Instant::now();
    loop {
        let answer = apis[1]
            .converse_with(turn_request(
                "contended",
                "after the outage",
                Duration::from_secs(20),
            ))
            .await;
        if answer.is_ok() {
            break;
        }
        assert!(back.elapsed() < Duration::from_secs(5), "{answer:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("after the outage, served in {:?}", back.elapsed());
    assert!(back.elapsed() < Duration::from_secs(2));
}
