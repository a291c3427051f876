//! `dialogd chat`, the terminal client, driven like a person piping lines
//! into it, against a real server process.

use crate::helpers::*;
use dialogd::pb::dialogue::v1 as pb;
use std::process::Stdio;
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

async fn chat(args: &[&str], input: &str) -> std::process::Output {
    let mut child = tokio::process::Command::new(binary())
        .arg("chat")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    tokio::time::timeout(std::time::Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("dialogd chat ends with its input")
        .unwrap()
}

#[tokio::test]
async fn dialogd_chat_streams_each_line_as_a_turn_of_one_dialogue() {
    let dir = TempDir::new().unwrap();
    let server = ServerProcess::start(dir.path()).await;
    let addr = format!("http://{}", server.addr);
    let out = chat(
        &["--addr", &addr, "--dialogue", "from-cli"],
        "hello there\n\nsecond line\n",
    )
    .await;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("echo: hello there\n[FINISH_REASON_STOP, "),
        "{stdout}"
    );
    assert!(
        stdout.contains("echo: second line\n[FINISH_REASON_STOP, "),
        "{stdout}"
    );
    let turns = server
        .api()
        .await
        .list_turns(pb::ListTurnsRequest {
            parent: name("from-cli"),
            ..Default::default()
        })
        .await
        .unwrap()
        .turns;
    assert_eq!(turns.len(), 4, "blank lines are not turns");

    // A failing turn is reported and makes the exit status non-zero.
    let out = chat(
        &[
            "--addr",
            &addr,
            "--dialogue",
            "bad",
            "--model",
            "no-such-model",
        ],
        "hi\n",
    )
    .await;
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("InvalidArgument"), "{stderr}");

    // The bare host:port the bundled examples use works too.
    let bare = server.addr.to_string();
    let out = chat(&["--addr", &bare, "--dialogue", "bare"], "plain address\n").await;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("echo: plain address"));
    server.kill9().await;

    // Nobody there: the error says what was tried.
    let out = chat(&["--addr", &bare, "--dialogue", "gone"], "anyone?\n").await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot connect to http://{bare} (from --addr {bare})"
        )),
        "{stderr}"
    );
}

/// Server flags before a subcommand would configure nothing it reads:
/// refused (exit 2) with the flags named, never silently ignored.
#[test]
fn server_flags_before_a_subcommand_are_refused() {
    // Exit 2 with stderr holding each of `expected`.
    let refused = |args: &[&str], expected: &[&str]| {
        let out = std::process::Command::new(binary())
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            expected.iter().all(|e| stderr.contains(e)),
            "{args:?}: {stderr}"
        );
    };
    for args in [
        &["--listen", "127.0.0.1:0", "chat"][..],
        &["--log-level", "debug", "keygen", "--id", "k"][..],
        &[
            "--data-dir",
            "/tmp/x",
            "--accept-store-loss",
            "store",
            "newkey",
            "--id",
            "k",
        ][..],
    ] {
        refused(args, &[args[0], "not read by"]);
    }
    // So is a config given to store commands that open no store.
    let dir = TempDir::new().unwrap();
    let config = dir.path().join("dialogd.toml");
    std::fs::write(&config, "").unwrap();
    let config = config.to_str().unwrap();
    refused(
        &["--config", config, "store", "newkey", "--id", "k"],
        &["--config is not read"],
    );
    refused(
        &[
            "--config",
            config,
            "store",
            "backup",
            "--addr",
            "127.0.0.1:1",
            "--to",
            "/tmp/b",
        ],
        &["--config is not read"],
    );
}
