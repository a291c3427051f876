//! Crypto-shredding, seen from outside: with per-dialogue data keys
//! (`store.encryption.dialogue_key_file`), erasing a dialogue destroys its
//! key, so a backup taken before the erasure no longer yields it — while a
//! copy of the key file from before the erasure (the control) still does.

use crate::encryption::{
    CANARY, config_file, encrypted, fill, holds_canary, new_key, raw_store, ring_file, start_on,
    store_command, try_start_on,
};
use crate::helpers::*;
use dialogd::config::{Settings, StoreKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tempfile::TempDir;
use tonic::Code;

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Restores `backup` into a new data dir whose dialogue keys are in
/// `dialogue_keys`; the app started on it and the restore's output.
async fn restore_with(
    settings: &Settings,
    ring: &Path,
    backup: &Path,
    dialogue_keys: &Path,
) -> (TestApp, String) {
    let dir = Arc::new(TempDir::new().unwrap());
    let mut target = settings.clone();
    target.store.data_dir = dir.path().join("data");
    target.store.encryption.dialogue_key_file = Some(dialogue_keys.to_path_buf());
    let config_dir = TempDir::new().unwrap();
    let config = config_file(config_dir.path(), &target, ring, "k1");
    let data_dir = target.store.data_dir.display().to_string();
    let out = store_command(
        &config,
        &[
            "restore",
            "--from",
            backup.to_str().unwrap(),
            "--data-dir",
            &data_dir,
        ],
    );
    let store = target.store.clone();
    let app = start_on(&dir, move |s| s.store = store).await;
    (app, out)
}

#[tokio::test]
async fn erasing_a_dialogue_destroys_its_key_so_no_backup_yields_it() {
    let keys = TempDir::new().unwrap();
    let ring = ring_file(keys.path(), "ring", &[&new_key("k1")]);
    let dialogue_keys = keys.path().join("dialogue-keys");
    let shredding = |s: &mut Settings| {
        s.store.kind = StoreKind::Sled;
        encrypted(s, &ring, "k1");
        s.store.encryption.dialogue_key_file = Some(dialogue_keys.clone());
    };
    let dir = Arc::new(TempDir::new().unwrap());
    let mut app = start_on(&dir, shredding).await;
    fill(&app, "gone").await;
    fill(&app, "kept").await;
    assert!(!holds_canary(&raw_store(&app.settings)));
    let key_file = std::fs::read(&dialogue_keys).unwrap();
    assert!(contains(&key_file, "~gone") && contains(&key_file, "~kept"));
    app.stop().await.unwrap();

    // A backup while both exist, and (for the control) the key file then.
    let config = config_file(keys.path(), &app.settings, &ring, "k1");
    let backups = keys.path().join("backups");
    let data_dir = app.settings.store.data_dir.display().to_string();
    store_command(
        &config,
        &[
            "backup",
            "--data-dir",
            &data_dir,
            "--to",
            backups.to_str().unwrap(),
        ],
    );
    let backup: PathBuf = std::fs::read_dir(&backups)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(!holds_canary(&std::fs::read(&backup).unwrap()));
    let keys_before = keys.path().join("dialogue-keys.before");
    std::fs::copy(&dialogue_keys, &keys_before).unwrap();

    // Erasure: the dialogue is gone and so is its key, from the file too.
    let mut app = start_on(&dir, shredding).await;
    app.api.delete("gone").await.unwrap();
    let status = app.api.get("gone", 0).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let key_file = std::fs::read(&dialogue_keys).unwrap();
    assert!(!contains(&key_file, "~gone"), "the key is overwritten");
    assert!(contains(&key_file, "~kept"));
    assert_eq!(app.api.all_turns("kept").await.len(), 4);
    // A new dialogue of the same id gets a new key, which does not open
    // the old one's records either.
    app.api.create("gone").await;
    let settings = app.settings.clone();
    app.stop().await.unwrap();

    // The old backup, restored with today's keys: "gone" cannot be opened,
    // so its records are dropped; "kept" is whole.
    let (mut restored, out) = restore_with(&settings, &ring, &backup, &dialogue_keys).await;
    assert!(out.contains("dropped 1 dialogue(s)"), "{out}");
    let status = restored.api.get("gone", 0).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let listed = restored
        .api
        .list_dialogues(dialogd::pb::dialogue::v1::ListDialoguesRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.dialogues.len(), 1, "only kept is listed");
    let turns = restored.api.all_turns("kept").await;
    assert_eq!(turns.len(), 4);
    assert!(turn_text(&turns[0]).contains(CANARY));
    restored.stop().await.unwrap();

    // The control: the same backup with the key file from before the
    // erasure yields "gone" — only the destroyed key made the difference.
    let (mut control, out) = restore_with(&settings, &ring, &backup, &keys_before).await;
    assert!(!out.contains("dropped"), "{out}");
    let turns = control.api.all_turns("gone").await;
    assert_eq!(turns.len(), 4);
    assert!(turn_text(&turns[0]).contains(CANARY));
    control.stop().await.unwrap();
}

#[tokio::test]
async fn per_dialogue_keys_need_their_file_and_a_ring() {
    let keys = TempDir::new().unwrap();
    let ring = ring_file(keys.path(), "ring", &[&new_key("k1")]);
    let dialogue_keys = keys.path().join("dialogue-keys");
    let dir = Arc::new(TempDir::new().unwrap());
    let mut app = start_on(&dir, |s| {
        s.store.kind = StoreKind::Sled;
        encrypted(s, &ring, "k1");
        s.store.encryption.dialogue_key_file = Some(dialogue_keys.clone());
    })
    .await;
    fill(&app, "d").await;
    app.stop().await.unwrap();

    // Records sealed with dialogue keys cannot be read without the file.
    let err = try_start_on(&dir, |s| {
        s.store.kind = StoreKind::Sled;
        encrypted(s, &ring, "k1");
    })
    .await;
    assert!(err.contains("dialogue_key_file"), "{err}");

    // The config refuses it on Redis, without a ring, inside the data dir.
    for (customize, expected) in [
        (
            Box::new(|s: &mut Settings| {
                s.store.kind = StoreKind::Redis;
                encrypted(s, &ring, "k1");
            }) as Box<dyn Fn(&mut Settings)>,
            "embedded store only",
        ),
        (Box::new(|_: &mut Settings| {}), "needs a key ring"),
        (
            Box::new(|s: &mut Settings| {
                encrypted(s, &ring, "k1");
                s.store.encryption.dialogue_key_file = Some(s.store.data_dir.join("keys"));
            }),
            "outside store.data_dir",
        ),
    ] {
        let mut settings = test_settings(dir.path());
        settings.store.kind = StoreKind::Sled;
        customize(&mut settings);
        let file = &mut settings.store.encryption.dialogue_key_file;
        file.get_or_insert_with(|| dialogue_keys.clone());
        let err = settings.validate().err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains(expected)),
            "{expected}: {err:?}"
        );
    }
}
