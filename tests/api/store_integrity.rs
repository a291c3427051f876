//! A damaged store is never served as an empty or partial one: every kind
//! of damage either stops the start with one clear error naming the data
//! dir and the recovery command, or leaves every dialogue intact. Backups
//! restore to the same dialogues.

use crate::helpers::*;
use dialogd::pb::dialogue::v1 as pb;
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// Every dialogue's turns, by dialogue ID.
pub type Contents = BTreeMap<String, Vec<pb::Turn>>;

/// A running dialogd child, or why it would not start.
pub struct Started {
    child: tokio::process::Child,
    pub addr: SocketAddr,
}

impl Started {
    /// SIGTERM, then waits for the exit (a clean shutdown).
    pub async fn stop(mut self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("stops in time")
            .unwrap();
        assert!(exit.success(), "{exit:?}");
    }

    /// SIGKILL: what a crash leaves on disk.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }
}

/// Starts dialogd on `dir`: the server, or its stderr if it exited.
pub async fn try_start(dir: &Path, extra: &[&str]) -> Result<Started, String> {
    let mut child = tokio::process::Command::new(binary())
        .args(["--listen", "127.0.0.1:0", "--log-level", "error"])
        .args(["--metrics-listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("dialogd runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stderr = child.stderr.take().unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("starts or exits in time")
        .unwrap();
    let Some(first) = first else {
        let mut text = String::new();
        stderr.read_to_string(&mut text).await.unwrap();
        let status = child.wait().await.unwrap();
        assert!(!status.success(), "exited 0 without serving: {text}");
        return Err(text);
    };
    let addr = first
        .strip_prefix("dialogd listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    tokio::spawn(async move {
        let mut sink = Vec::new();
        let _ = stderr.read_to_end(&mut sink).await;
    });
    Ok(Started { child, addr })
}

/// Every dialogue the server holds, with its turns.
pub async fn contents(addr: SocketAddr) -> Contents {
    let api = Api::connect(addr).await;
    let mut all = Contents::new();
    let mut token = String::new();
    loop {
        let page = api
            .list_dialogues(pb::ListDialoguesRequest {
                page_size: 100,
                page_token: token,
            })
            .await
            .unwrap();
        for dialogue in page.dialogues {
            let id = dialogue.name.trim_start_matches("dialogues/").to_owned();
            let turns = api.all_turns(&id).await;
            all.insert(id, turns);
        }
        if page.next_page_token.is_empty() {
            return all;
        }
        token = page.next_page_token;
    }
}

/// A data dir holding 40 dialogues of 6 exchanges with 1 KiB messages
/// (about 0.5 MB), stopped cleanly; and what it holds.
pub async fn filled_store() -> (TempDir, Contents) {
    let dir = TempDir::new().unwrap();
    let server = try_start(dir.path(), &[]).await.unwrap();
    let api = Api::connect(server.addr).await;
    for d in 0..40 {
        for t in 0..6 {
            let message = format!("dialogue {d} turn {t} {}", "x".repeat(1024));
            let mut request = converse_request(&format!("d{d:02}"), &message);
            request.create_if_missing = true;
            api.converse_with(request).await.unwrap();
        }
    }
    let held = contents(server.addr).await;
    assert_eq!(held.len(), 40);
    server.stop().await;
    (dir, held)
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn truncate(path: &Path, len: impl FnOnce(u64) -> u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let size = file.metadata().unwrap().len();
    file.set_len(len(size)).unwrap();
}

pub fn garble(path: &Path, at: impl FnOnce(u64) -> u64, bytes: usize) {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let size = file.metadata().unwrap().len();
    let offset = at(size);
    let mut old = vec![0u8; bytes];
    file.seek(SeekFrom::Start(offset)).unwrap();
    let n = file.read(&mut old).unwrap();
    let noise: Vec<u8> = old[..n].iter().map(|b| !b ^ 0x5A).collect();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&noise).unwrap();
}

type Damage = (&'static str, fn(&Path));

fn damages() -> Vec<Damage> {
    vec![
        ("db truncated to 4 KiB", |d| {
            truncate(&d.join("db"), |_| 4096)
        }),
        ("db truncated to half", |d| {
            truncate(&d.join("db"), |s| s / 2)
        }),
        ("db minus its last 64 KiB", |d| {
            truncate(&d.join("db"), |s| s.saturating_sub(64 * 1024))
        }),
        ("garbage over the db's head", |d| {
            garble(&d.join("db"), |_| 0, 4096)
        }),
        ("garbage in the db's middle", |d| {
            garble(&d.join("db"), |s| s / 2, 4096)
        }),
        ("garbled conf", |d| garble(&d.join("conf"), |s| s / 3, 6)),
        ("missing conf", |d| {
            std::fs::remove_file(d.join("conf")).unwrap()
        }),
        ("sled's files emptied (manifest kept)", |d| {
            for entry in std::fs::read_dir(d).unwrap() {
                let path: PathBuf = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                if !name.starts_with("dialogd.manifest") {
                    if path.is_dir() {
                        std::fs::remove_dir_all(&path).unwrap();
                    } else {
                        std::fs::remove_file(&path).unwrap();
                    }
                }
            }
        }),
    ]
}

/// Each damage, each started twice: refused with the clear error, or
/// every dialogue intact. Zero silent losses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damage_is_refused_loudly_or_leaves_every_dialogue_intact() {
    let (pristine, held) = filled_store().await;
    let mut outcomes = Vec::new();
    for (name, damage) in damages() {
        let case = TempDir::new().unwrap();
        copy_dir(pristine.path(), case.path());
        damage(case.path());
        for attempt in 1..=2 {
            match try_start(case.path(), &[]).await {
                Err(stderr) => {
                    // The first line is dialogd's (its log of the error), never
                    // a dependency's panic.
                    let first = stderr.lines().next().unwrap_or_default();
                    assert!(
                        first.contains("dialogd stopped with an error")
                            && first.contains("data dir"),
                        "{name}: the first line is not dialogd's error: {stderr}"
                    );
                    let error = stderr
                        .lines()
                        .find(|l| l.starts_with("dialogd: data dir"))
                        .unwrap_or_else(|| panic!("{name}: no error line: {stderr}"));
                    assert!(
                        error.contains(&case.path().display().to_string()),
                        "{error}"
                    );
                    assert!(error.contains("dialogd store restore"), "{error}");
                    assert!(!stderr.contains("earlier than 0.29"), "{stderr}");
                    outcomes.push(format!("{name} (start {attempt}): refused"));
                }
                Ok(server) => {
                    let now = contents(server.addr).await;
                    assert!(
                        now == held,
                        "{name} (start {attempt}): served a partial store"
                    );
                    outcomes.push(format!("{name} (start {attempt}): intact"));
                    server.stop().await;
                }
            }
        }
    }
    println!("{}", outcomes.join("\n"));
}

#[tokio::test]
async fn an_emptied_store_starts_only_when_told_to_accept_the_loss() {
    let (dir, _) = filled_store().await;
    damages()
        .into_iter()
        .find(|(name, _)| name.starts_with("sled's files emptied"))
        .unwrap()
        .1(dir.path());
    let Err(refused) = try_start(dir.path(), &[]).await else {
        panic!("an emptied store started")
    };
    assert!(refused.contains("hold no dialogd data at all"), "{refused}");
    assert!(refused.contains("--accept-store-loss"), "{refused}");
    let server = try_start(dir.path(), &["--accept-store-loss"])
        .await
        .unwrap();
    assert!(contents(server.addr).await.is_empty());
    let api = Api::connect(server.addr).await;
    let mut request = converse_request("fresh", "starting over");
    request.create_if_missing = true;
    api.converse_with(request).await.unwrap();
    server.stop().await;
    // The accepted state is the new promise: the next start is normal.
    let server = try_start(dir.path(), &[]).await.unwrap();
    assert_eq!(contents(server.addr).await.len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn a_new_data_dir_starts_silently() {
    let dir = TempDir::new().unwrap();
    let server = try_start(&dir.path().join("new"), &[]).await.unwrap();
    assert!(contents(server.addr).await.is_empty());
    server.stop().await;
}

/// SIGTERM the moment the server says it listens: always a clean stop
/// (the handler is installed before the line is printed), never a kill.
#[tokio::test]
async fn a_sigterm_right_after_start_is_a_clean_stop() {
    let dir = TempDir::new().unwrap();
    for _ in 0..10 {
        try_start(dir.path(), &[]).await.unwrap().stop().await;
    }
}
