//! Encryption at rest, seen from outside: what reaches the data dir (or
//! Redis) holds no dialogue text, a key ring can rotate and lose its old
//! key after `dialogd store rekey`, and a damaged or moved record is
//! DATA_LOSS — never garbage.

use crate::helpers::*;
use crate::operations::{submit, wait_done};
use crate::process::binary;
use dialogd::config::{EncryptionSettings, Settings, StoreKind};
use dialogd::pb::dialogue::v1 as pb;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;
use tonic::Code;

pub(crate) const CANARY: &str = "CANARY-7f3a9c";

/// A key-ring file of `entries` (`id:base64`) in `dir`.
pub(crate) fn ring_file(dir: &Path, name: &str, entries: &[&str]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, entries.join("\n")).unwrap();
    path
}

pub(crate) fn new_key(id: &str) -> String {
    dialogd::store::sealing::KeyRing::new_entry(id)
}

pub(crate) fn encrypted(settings: &mut Settings, key_file: &Path, primary: &str) {
    settings.store.encryption = EncryptionSettings {
        key_file: Some(key_file.to_path_buf()),
        keys_env: None,
        primary: Some(primary.into()),
        dialogue_key_file: None,
    };
}

pub(crate) async fn start_on(dir: &Arc<TempDir>, customize: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings(dir.path());
    customize(&mut settings);
    start(settings, dir.clone()).await
}

pub(crate) async fn try_start_on(
    dir: &Arc<TempDir>,
    customize: impl FnOnce(&mut Settings),
) -> String {
    let mut settings = test_settings(dir.path());
    customize(&mut settings);
    match dialogd::startup::Application::build(settings).await {
        Ok(_) => String::new(),
        Err(e) => e.to_string(),
    }
}

/// A dialogue `id` whose every stored part carries the canary: system
/// prompt, state, a turn and its reply (echoed), an idempotency record and
/// an operation.
pub(crate) async fn fill(app: &TestApp, id: &str) {
    let mut state = pbjson_types::Struct::default();
    state.fields.insert(
        "note".into(),
        pbjson_types::Value {
            kind: Some(pbjson_types::value::Kind::StringValue(format!(
                "{CANARY} state"
            ))),
        },
    );
    app.api
        .create_with(pb::Dialogue {
            dialogue_id: id.into(),
            system_prompt: format!("{CANARY} system"),
            state: Some(state),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut turn = converse_request(id, &format!("{CANARY} message"));
    turn.request_id = "req-1".into();
    app.api.converse_with(turn).await.unwrap();
    let op = app
        .api
        .submit_turn(submit(id, &format!("{CANARY} queued"), ""))
        .await
        .unwrap();
    wait_done(&app.api, &op.name).await;
}

/// Everything stored: the data dir's files, or every value under the
/// app's Redis prefix.
pub(crate) fn raw_store(settings: &Settings) -> Vec<u8> {
    if settings.store.kind == StoreKind::Redis {
        let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
        let mut con = client.get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", settings.store.redis.key_prefix))
            .query(&mut con)
            .unwrap();
        let mut out = Vec::new();
        for key in keys {
            let dump: Vec<u8> = redis::cmd("DUMP").arg(&key).query(&mut con).unwrap();
            out.extend(dump);
        }
        return out;
    }
    let mut out = Vec::new();
    let mut dirs = vec![settings.store.data_dir.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                out.extend(std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

pub(crate) fn holds_canary(bytes: &[u8]) -> bool {
    bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes())
}

#[tokio::test]
async fn no_dialogue_text_reaches_the_store_and_all_of_it_reads_back() {
    // The control: without encryption the canary is there to be found.
    let plain_dir = Arc::new(TempDir::new().unwrap());
    let mut plain = start_on(&plain_dir, |_| {}).await;
    fill(&plain, "plain").await;
    plain.stop().await.unwrap();
    assert!(
        holds_canary(&raw_store(&plain.settings)),
        "the probe finds plain text"
    );

    let keys = TempDir::new().unwrap();
    let ring = ring_file(keys.path(), "ring", &[&new_key("k1")]);
    let dir = Arc::new(TempDir::new().unwrap());
    let mut app = start_on(&dir, |s| encrypted(s, &ring, "k1")).await;
    fill(&app, "secret").await;
    app.stop().await.unwrap();
    assert!(
        !holds_canary(&raw_store(&app.settings)),
        "plain text reached the store"
    );

    let app = start_on(&dir, |s| encrypted(s, &ring, "k1")).await;
    let dialogue = app.api.get("secret", 10).await.unwrap();
    assert!(dialogue.system_prompt.starts_with(CANARY));
    let texts: Vec<String> = app
        .api
        .all_turns("secret")
        .await
        .iter()
        .map(turn_text)
        .collect();
    assert!(
        texts.iter().filter(|t| t.contains(CANARY)).count() >= 4,
        "{texts:?}"
    );
    // The idempotency record answers a retry with the stored reply.
    let mut again = converse_request("secret", &format!("{CANARY} message"));
    again.request_id = "req-1".into();
    let replayed = app.api.converse_with(again).await.unwrap();
    assert!(replayed.metadata.unwrap().replayed);
}

/// A config file for the `dialogd store` commands: the app's store and
/// `ring` with `primary`.
/// Runs `dialogd --config {config} store {args}`, which must succeed; its
/// stdout.
pub(crate) fn store_command(config: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(binary())
        .args(["--config", config.to_str().unwrap(), "store"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn config_file(dir: &Path, settings: &Settings, ring: &Path, primary: &str) -> PathBuf {
    let store = &settings.store;
    let kind = if store.kind == StoreKind::Redis {
        "redis"
    } else {
        "sled"
    };
    let text = format!(
        "[store]\nkind = \"{kind}\"\ndata_dir = {:?}\n[store.redis]\nkey_prefix = {:?}\ncluster_nodes = {:?}\n[store.encryption]\nkey_file = {:?}\nprimary = {primary:?}\n",
        store.data_dir.display().to_string(),
        store.redis.key_prefix,
        store.redis.cluster_nodes,
        ring.display().to_string(),
    );
    let text = match &store.encryption.dialogue_key_file {
        Some(file) => format!(
            "{text}dialogue_key_file = {:?}\n",
            file.display().to_string()
        ),
        None => text,
    };
    let path = dir.join("dialogd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn a_rotated_ring_reads_old_records_and_rekey_lets_the_old_key_go() {
    let keys = TempDir::new().unwrap();
    let (k1, k2) = (new_key("k1"), new_key("k2"));
    let only_k1 = ring_file(keys.path(), "k1", &[&k1]);
    let both = ring_file(keys.path(), "both", &[&k1, &k2]);
    let only_k2 = ring_file(keys.path(), "k2", &[&k2]);
    let dir = Arc::new(TempDir::new().unwrap());

    let mut app = start_on(&dir, |s| encrypted(s, &only_k1, "k1")).await;
    fill(&app, "old").await;
    app.stop().await.unwrap();

    // k2 seals new records; k1 still opens the old ones.
    let mut app = start_on(&dir, |s| encrypted(s, &both, "k2")).await;
    assert_eq!(app.api.all_turns("old").await.len(), 4);
    fill(&app, "new").await;
    app.stop().await.unwrap();

    // Dropping k1 before a rekey is refused at start, naming it.
    let err = try_start_on(&dir, |s| encrypted(s, &only_k2, "k2")).await;
    assert!(
        err.contains("\"k1\"") && err.contains("does not hold"),
        "{err}"
    );

    let config = config_file(keys.path(), &app.settings, &both, "k2");
    let out = std::process::Command::new(binary())
        .args(["--config", config.to_str().unwrap(), "store", "rekey"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("sealed") && stdout.contains("\"k2\""),
        "{stdout}"
    );

    // The offline check opens every record with the config's keys.
    if app.settings.store.kind == StoreKind::Sled {
        let config = config_file(keys.path(), &app.settings, &only_k2, "k2");
        let data_dir = app.settings.store.data_dir.display().to_string();
        let out = std::process::Command::new(binary())
            .args(["--config", config.to_str().unwrap(), "store", "verify"])
            .args(["--data-dir", &data_dir])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains("ok"), "{stdout}");
    }
    let app = start_on(&dir, |s| encrypted(s, &only_k2, "k2")).await;
    for id in ["old", "new"] {
        let turns = app.api.all_turns(id).await;
        assert_eq!(turns.len(), 4, "{id}");
        assert!(turn_text(&turns[0]).contains(CANARY));
    }
    assert!(!holds_canary(&raw_store(&app.settings)));
}

#[tokio::test]
async fn a_wrong_or_missing_key_stops_the_start() {
    let keys = TempDir::new().unwrap();
    let right = ring_file(keys.path(), "right", &[&new_key("k1")]);
    let wrong = ring_file(keys.path(), "wrong", &[&new_key("k1")]);
    let dir = Arc::new(TempDir::new().unwrap());
    let mut app = start_on(&dir, |s| encrypted(s, &right, "k1")).await;
    fill(&app, "d").await;
    app.stop().await.unwrap();
    let err = try_start_on(&dir, |s| encrypted(s, &wrong, "k1")).await;
    assert!(err.contains("not the key"), "{err}");
    let err = try_start_on(&dir, |_| {}).await;
    assert!(err.contains("is encrypted"), "{err}");
    let missing = keys.path().join("nowhere");
    let err = try_start_on(&dir, |s| encrypted(s, &missing, "k1")).await;
    assert!(err.contains("key_file"), "{err}");
    let err = try_start_on(&dir, |s| encrypted(s, &right, "k9")).await;
    assert!(err.contains("primary"), "{err}");
}

/// Moves dialogue `from`'s sealed first turn over `to`'s first turn,
/// beneath the server (stopped, for sled).
fn move_first_turn(settings: &Settings, from: &str, to: &str) {
    if settings.store.kind == StoreKind::Redis {
        let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
        let mut con = client.get_connection().unwrap();
        let mut list = |id: &str| -> String {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*:d:{id}:turns", settings.store.redis.key_prefix))
                .query(&mut con)
                .unwrap();
            keys.into_iter().next().expect("the turns list")
        };
        let (source, target) = (list(from), list(to));
        let moved: Vec<u8> = redis::cmd("LINDEX")
            .arg(&source)
            .arg(0)
            .query(&mut con)
            .unwrap();
        let () = redis::cmd("LSET")
            .arg(&target)
            .arg(0)
            .arg(moved)
            .query(&mut con)
            .unwrap();
        return;
    }
    let db = sled::open(&settings.store.data_dir).unwrap();
    let tree = db.open_tree("dialogd.v1").unwrap();
    let turn_key = |id: &str| {
        tree.scan_prefix(b"t/")
            .keys()
            .map(Result::unwrap)
            .find(|k| {
                k.windows(id.len() + 1)
                    .any(|w| w == format!("{id}\0").as_bytes())
            })
            .expect("a turn")
    };
    let (source, target) = (turn_key(from), turn_key(to));
    let moved = tree.get(&source).unwrap().unwrap();
    tree.insert(target, moved).unwrap();
    db.flush().unwrap();
}

#[tokio::test]
async fn a_moved_or_tampered_record_is_data_loss_not_garbage() {
    let keys = TempDir::new().unwrap();
    let ring = ring_file(keys.path(), "ring", &[&new_key("k1")]);
    let dir = Arc::new(TempDir::new().unwrap());
    let mut app = start_on(&dir, |s| encrypted(s, &ring, "k1")).await;
    for id in ["alice-d", "bob-d"] {
        app.api.create(id).await;
        app.api
            .converse(id, &format!("{CANARY} {id}"))
            .await
            .unwrap();
    }
    app.stop().await.unwrap();
    // A turn of one dialogue copied into another: its seal names its place.
    move_first_turn(&app.settings, "alice-d", "bob-d");
    let app = start_on(&dir, |s| encrypted(s, &ring, "k1")).await;
    let status = app
        .api
        .list_turns(pb::ListTurnsRequest {
            parent: name("bob-d"),
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    assert!(!status.message().contains(CANARY));
    // The other dialogue is untouched.
    assert_eq!(app.api.all_turns("alice-d").await.len(), 2);
}

#[tokio::test]
async fn a_backup_of_an_encrypted_store_is_sealed_and_restores_with_the_keys() {
    let keys = TempDir::new().unwrap();
    let ring = ring_file(keys.path(), "ring", &[&new_key("k1")]);
    let sled = |s: &mut Settings| {
        s.store.kind = StoreKind::Sled;
        encrypted(s, &ring, "k1");
    };
    let dir = Arc::new(TempDir::new().unwrap());
    let mut app = start_on(&dir, sled).await;
    fill(&app, "kept").await;
    app.stop().await.unwrap();

    let config = config_file(keys.path(), &app.settings, &ring, "k1");
    let run = |args: &[&str]| store_command(&config, args);
    let backups = keys.path().join("backups");
    let data_dir = app.settings.store.data_dir.display().to_string();
    run(&[
        "backup",
        "--data-dir",
        &data_dir,
        "--to",
        backups.to_str().unwrap(),
    ]);
    let file = std::fs::read_dir(&backups)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(
        !holds_canary(&std::fs::read(&file).unwrap()),
        "the backup holds plain text"
    );

    let restored = Arc::new(TempDir::new().unwrap());
    let target = restored.path().join("data");
    run(&[
        "restore",
        "--from",
        file.to_str().unwrap(),
        "--data-dir",
        target.to_str().unwrap(),
    ]);
    let at_target = |s: &mut Settings| {
        sled(s);
        s.store.data_dir = target.clone();
    };
    let app = start_on(&restored, at_target).await;
    let turns = app.api.all_turns("kept").await;
    assert!(turn_text(&turns[0]).contains(CANARY));
    let mut app = app;
    app.stop().await.unwrap();
    let err = try_start_on(&restored, |s| {
        s.store.kind = StoreKind::Sled;
        s.store.data_dir = target.clone();
    })
    .await;
    assert!(err.contains("is encrypted"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_online_rekey_on_redis_loses_no_turn_written_meanwhile() {
    let keys = TempDir::new().unwrap();
    let (k1, k2) = (new_key("k1"), new_key("k2"));
    let only_k1 = ring_file(keys.path(), "k1", &[&k1]);
    let both = ring_file(keys.path(), "both", &[&k1, &k2]);
    let only_k2 = ring_file(keys.path(), "k2", &[&k2]);
    let prefix = format!("test-rekey-{:016x}:", rand::random::<u64>());
    let on_redis = |ring: PathBuf, primary: &'static str| {
        let prefix = prefix.clone();
        move |s: &mut Settings| {
            s.store.kind = StoreKind::Redis;
            s.store.redis.key_prefix = prefix;
            encrypted(s, &ring, primary);
        }
    };
    let dir = Arc::new(TempDir::new().unwrap());
    let mut app = start_on(&dir, on_redis(only_k1.clone(), "k1")).await;
    for d in 0..8 {
        app.api.create(&format!("d{d}")).await;
        for i in 0..5 {
            app.api
                .converse(&format!("d{d}"), &format!("{CANARY} {i}"))
                .await
                .unwrap();
        }
    }
    app.stop().await.unwrap();

    // Serving with k2 as primary while the rekey runs beside it.
    let app = start_on(&dir, on_redis(both.clone(), "k2")).await;
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (api, done) = (app.api.clone(), done.clone());
        // Turns go on until the rekey has finished (at least 10).
        tokio::spawn(async move {
            let mut written = 0;
            while written < 10 || !done.load(std::sync::atomic::Ordering::Acquire) {
                let d = format!("d{}", written % 8);
                api.converse(&d, &format!("{CANARY} during {written}"))
                    .await
                    .unwrap();
                written += 1;
            }
            written
        })
    };
    let config = config_file(keys.path(), &app.settings, &both, "k2");
    let rekey = tokio::process::Command::new(binary())
        .args(["--config", config.to_str().unwrap(), "store", "rekey"])
        .output()
        .await
        .unwrap();
    assert!(
        rekey.status.success(),
        "{}",
        String::from_utf8_lossy(&rekey.stderr)
    );
    done.store(true, std::sync::atomic::Ordering::Release);
    let written = writer.await.unwrap();
    let mut app = app;
    app.stop().await.unwrap();

    // k1 may go now; every turn, old and new, reads.
    let app = start_on(&dir, on_redis(only_k2, "k2")).await;
    let mut turns = 0;
    for d in 0..8 {
        turns += app.api.all_turns(&format!("d{d}")).await.len();
    }
    assert_eq!(turns, 8 * 5 * 2 + written * 2, "no turn lost or unreadable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rekey_on_a_redis_cluster_reaches_every_master() {
    let cluster = crate::redis_cluster::RedisCluster::start();
    let keys = TempDir::new().unwrap();
    let (k1, k2) = (new_key("k1"), new_key("k2"));
    let (only_k1, both, only_k2) = (
        ring_file(keys.path(), "k1", &[&k1]),
        ring_file(keys.path(), "both", &[&k1, &k2]),
        ring_file(keys.path(), "k2", &[&k2]),
    );
    let nodes = cluster.nodes();
    let on_cluster = |ring: PathBuf, primary: &'static str| {
        let nodes = nodes.clone();
        move |s: &mut Settings| {
            s.store.kind = StoreKind::Redis;
            s.store.redis.cluster_nodes = nodes;
            s.store.redis.key_prefix = "rekey:".into();
            encrypted(s, &ring, primary);
        }
    };
    let dir = Arc::new(TempDir::new().unwrap());
    let mut app = start_on(&dir, on_cluster(only_k1, "k1")).await;
    // Operations live in slots of their own: they spread over the masters.
    let mut operations = Vec::new();
    for d in 0..6 {
        let op = app
            .api
            .submit_turn(submit(&format!("c{d}"), &format!("{CANARY} {d}"), ""))
            .await
            .unwrap();
        wait_done(&app.api, &op.name).await;
        operations.push(op.name);
    }
    app.stop().await.unwrap();
    let holding = cluster.keys_per_node().iter().filter(|&&n| n > 0).count();
    assert!(
        holding >= 2,
        "records on several masters: {:?}",
        cluster.keys_per_node()
    );
    let app = start_on(&dir, on_cluster(both.clone(), "k2")).await;
    let config = config_file(keys.path(), &app.settings, &both, "k2");
    let mut app = app;
    app.stop().await.unwrap();
    let out = std::process::Command::new(binary())
        .args(["--config", config.to_str().unwrap(), "store", "rekey"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app = start_on(&dir, on_cluster(only_k2, "k2")).await;
    for name in &operations {
        let op = app
            .api
            .get_operation(pb::GetOperationRequest { name: name.clone() })
            .await
            .unwrap();
        let answered = matches!(op.result, Some(pb::operation::Result::Response(_)));
        assert!(op.done && answered, "{name}: {op:?}");
    }
    for d in 0..6 {
        assert_eq!(app.api.all_turns(&format!("c{d}")).await.len(), 2);
    }
}
