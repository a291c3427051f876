//! `dialogd store backup | restore | verify`: a backup taken from a running
//! server while it serves (or from a stopped data dir) restores to the
//! same dialogues; damaged backups and damaged stores are named, never
//! half restored.

use crate::helpers::*;
use crate::store_integrity::{Contents, contents, filled_store, try_start};
use dialogd::pb::dialogue::v1 as pb;
use dialogd::pb::dialogue::v1::admin_service_client::AdminServiceClient;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tempfile::TempDir;
use tonic::Code;

async fn store_command(args: &[&str]) -> Output {
    tokio::process::Command::new(binary())
        .arg("store")
        .args(args)
        .output()
        .await
        .unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The one backup file in `dir`.
fn backup_in(dir: &Path) -> PathBuf {
    let files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert!(files[0].extension().unwrap() == "backup");
    files[0].clone()
}

/// Restores `backup` into a new dir, checks it with `verify`, serves it
/// and returns what it holds.
async fn restored(backup: &Path) -> Contents {
    let target = TempDir::new().unwrap();
    let data = target.path().join("restored");
    let out = store_command(&["restore", "--from", path(backup), "--data-dir", path(&data)]).await;
    assert!(out.status.success(), "{out:?}");
    let out = store_command(&["verify", "--data-dir", path(&data)]).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("ok\n"),
        "{out:?}"
    );
    let server = try_start(&data, &[]).await.unwrap();
    let held = contents(server.addr).await;
    server.stop().await;
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_online_backup_taken_under_load_restores_to_the_same_dialogues() {
    let (dir, before) = filled_store().await;
    let server = try_start(dir.path(), &[]).await.unwrap();
    // Turns keep arriving on other dialogues while the backup is taken.
    let busy = Arc::new(AtomicBool::new(true));
    let writer = {
        let busy = busy.clone();
        let api = Api::connect(server.addr).await;
        tokio::spawn(async move {
            let mut n = 0;
            while busy.load(Ordering::SeqCst) {
                let mut request = converse_request(&format!("w{}", n % 5), &format!("w {n}"));
                request.create_if_missing = true;
                api.converse_with(request).await.unwrap();
                n += 1;
            }
            n
        })
    };
    let backups = TempDir::new().unwrap();
    let addr = server.addr.to_string();
    let out = store_command(&["backup", "--addr", &addr, "--to", path(backups.path())]).await;
    busy.store(false, Ordering::SeqCst);
    let written = writer.await.unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(written > 0);
    let after = contents(server.addr).await;
    server.stop().await;

    let held = restored(&backup_in(backups.path())).await;
    for (id, turns) in &before {
        assert_eq!(&held[id], turns, "{id} restored as it was");
    }
    // Dialogues written during the backup: whole exchanges, each a prefix
    // of what the server went on to hold.
    for (id, turns) in held.iter().filter(|(id, _)| id.starts_with('w')) {
        assert_eq!(turns.len() % 2, 0, "{id}: whole exchanges only");
        assert_eq!(turns[..], after[id][..turns.len()], "{id}");
    }
}

#[tokio::test]
async fn an_offline_backup_restores_to_the_same_dialogues() {
    let (dir, before) = filled_store().await;
    let backups = TempDir::new().unwrap();
    let out = store_command(&[
        "backup",
        "--data-dir",
        path(dir.path()),
        "--to",
        path(backups.path()),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(restored(&backup_in(backups.path())).await, before);
}

#[tokio::test]
async fn damaged_backups_and_busy_targets_are_refused_before_anything_is_written() {
    let (dir, _) = filled_store().await;
    let backups = TempDir::new().unwrap();
    let out = store_command(&[
        "backup",
        "--data-dir",
        path(dir.path()),
        "--to",
        path(backups.path()),
    ])
    .await;
    assert!(out.status.success(), "{out:?}");
    let backup = backup_in(backups.path());

    // Into a data dir that holds a store.
    let out = store_command(&[
        "restore",
        "--from",
        path(&backup),
        "--data-dir",
        path(dir.path()),
    ])
    .await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not empty"),
        "{out:?}"
    );

    // From a file cut short.
    let cut = backups.path().join("cut.backup");
    let bytes = std::fs::read(&backup).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let target = backups.path().join("never");
    let out = store_command(&["restore", "--from", path(&cut), "--data-dir", path(&target)]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("damaged or cut short"),
        "{out:?}"
    );
    assert!(!target.exists(), "nothing written");
}

#[tokio::test]
async fn verify_names_what_is_wrong_with_a_damaged_store() {
    let (dir, _) = filled_store().await;
    let out = store_command(&["verify", "--data-dir", path(dir.path())]).await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("40 dialogues, 480 turns"), "{stdout}");

    let db = dir.path().join("db");
    let len = std::fs::metadata(&db).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let out = store_command(&["verify", "--data-dir", path(dir.path())]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds less than it promised") || stderr.contains("damaged"),
        "{stderr}"
    );
    assert!(stderr.contains("dialogd store restore"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[tokio::test]
async fn export_store_streams_the_embedded_store_and_names_what_redis_lacks() {
    let app = spawn_app().await;
    app.create("exported").await;
    let mut admin = AdminServiceClient::new(app.channel.clone());
    let result = admin.export_store(pb::ExportStoreRequest {}).await;
    if redis_store() {
        let Err(err) = result else {
            panic!("ExportStore served with Redis")
        };
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains("Redis"), "{}", err.message());
        return;
    }
    let mut stream = result.unwrap().into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.message().await.unwrap() {
        bytes.extend_from_slice(&chunk.data);
    }
    assert!(bytes.starts_with(b"DIALOGD-BACKUP\n"));
    let needle = b"exported";
    assert!(bytes.windows(needle.len()).any(|w| w == needle));
}

#[tokio::test]
async fn keep_prunes_all_but_the_newest_backups() {
    let (dir, before) = filled_store().await;
    let backups = TempDir::new().unwrap();
    let mut outputs = Vec::new();
    for _ in 0..3 {
        let out = store_command(&[
            "backup",
            "--data-dir",
            path(dir.path()),
            "--to",
            path(backups.path()),
            "--keep",
            "2",
        ])
        .await;
        assert!(out.status.success(), "{out:?}");
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let mut files: Vec<_> = std::fs::read_dir(backups.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(
        outputs[2].contains("removed the older backup"),
        "{outputs:?}"
    );
    assert_eq!(restored(files.last().unwrap()).await, before);
}
