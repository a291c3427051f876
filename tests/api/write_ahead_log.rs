//! The store's write-ahead log seen from outside: a SIGKILLed server's
//! acknowledged turns come back from the log on the next start (sled is
//! flushed only at checkpoints now), and a damaged or missing log is
//! refused like any other damage.

use crate::helpers::*;
use crate::store_integrity::{Contents, contents, copy_dir, garble, try_start};
use std::path::Path;
use tempfile::TempDir;

/// A data dir whose server was killed right after acknowledging 10
/// dialogues of 3 exchanges; what it acknowledged.
async fn killed_store() -> (TempDir, Contents) {
    let dir = TempDir::new().unwrap();
    let server = try_start(dir.path(), &[]).await.unwrap();
    let api = Api::connect(server.addr).await;
    for d in 0..10 {
        for t in 0..3 {
            let mut request = converse_request(&format!("d{d}"), &format!("dialogue {d} turn {t}"));
            request.create_if_missing = true;
            api.converse_with(request).await.unwrap();
        }
    }
    let held = contents(server.addr).await;
    assert_eq!(held.len(), 10);
    server.kill().await;
    (dir, held)
}

fn newest_segment(dir: &Path) -> std::path::PathBuf {
    let mut found: Vec<_> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    found.sort();
    found.pop().expect("a log segment")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_store_comes_back_from_its_log() {
    let (dir, held) = killed_store().await;
    // The log holds the turns (sled alone has not been flushed since start).
    assert!(std::fs::metadata(newest_segment(dir.path())).unwrap().len() > 10_000);
    for _ in 0..2 {
        let server = try_start(dir.path(), &[]).await.unwrap();
        assert!(
            contents(server.addr).await == held,
            "turns lost after a kill"
        );
        server.kill().await;
    }
    // After a clean stop the log is checkpointed into sled and emptied.
    let server = try_start(dir.path(), &[]).await.unwrap();
    server.stop().await;
    assert_eq!(
        std::fs::metadata(newest_segment(dir.path())).unwrap().len(),
        24
    );
    let server = try_start(dir.path(), &[]).await.unwrap();
    assert!(contents(server.addr).await == held);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_missing_log_is_refused() {
    let (pristine, _) = killed_store().await;
    let garbled = TempDir::new().unwrap();
    copy_dir(pristine.path(), garbled.path());
    garble(&newest_segment(garbled.path()), |len| len / 2, 8);
    let Err(refused) = try_start(garbled.path(), &[]).await else {
        panic!("a garbled log was served")
    };
    assert!(
        refused.contains("write-ahead log segment") && refused.contains("is damaged at byte"),
        "{refused}"
    );
    assert!(refused.contains("dialogd store restore"), "{refused}");

    let missing = TempDir::new().unwrap();
    copy_dir(pristine.path(), missing.path());
    std::fs::remove_dir_all(missing.path().join("wal")).unwrap();
    let Err(refused) = try_start(missing.path(), &[]).await else {
        panic!("a store without its log was served")
    };
    assert!(
        refused.contains("is missing (sled's files continue in it)"),
        "{refused}"
    );
    // Told to accept the loss, it starts on what sled holds.
    let server = try_start(missing.path(), &["--accept-store-loss"])
        .await
        .unwrap();
    server.stop().await;
}
