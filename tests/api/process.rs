//! The dialogd binary as a child process, for crash and process-level
//! tests.

use crate::helpers::Api;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The dialogd binary running as a child process, for crash and
/// process-level tests.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    /// Where it serves `/metrics`.
    pub metrics_addr: SocketAddr,
}

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_dialogd"))
}

impl ServerProcess {
    /// Starts `dialogd` on a free port with `data_dir`; waits for its
    /// "listening" line (no sleeps, no fixed ports).
    pub async fn start(data_dir: &Path) -> ServerProcess {
        Self::start_with(data_dir, &[]).await
    }

    /// Like `start`, with extra command-line arguments (e.g. `--config`).
    pub async fn start_with(data_dir: &Path, extra: &[&str]) -> ServerProcess {
        Self::start_with_env(data_dir, extra, &[]).await
    }

    /// Like `start_with`, with extra environment variables.
    pub async fn start_with_env(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> ServerProcess {
        let mut child = tokio::process::Command::new(binary())
            .envs(env.iter().copied())
            .args(["--listen", "127.0.0.1:0", "--log-level", "warn"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .args(extra)
            .arg("--data-dir")
            .arg(data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("dialogd starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let mut lines = BufReader::new(stdout).lines();
        let mut line = async || {
            tokio::time::timeout(Duration::from_secs(30), lines.next_line())
                .await
                .expect("dialogd prints its addresses in time")
                .expect("stdout readable")
                .expect("an address line")
        };
        let first = line().await;
        let addr = first
            .strip_prefix("dialogd listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .parse()
            .expect("an address");
        let second = line().await;
        let metrics_addr = second
            .strip_prefix("dialogd metrics on http://")
            .and_then(|s| s.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("unexpected second line {second:?}"))
            .parse()
            .expect("a metrics address");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServerProcess {
            child,
            addr,
            metrics_addr,
        }
    }

    /// One helper per RPC, on this process.
    pub async fn api(&self) -> Api {
        Api::connect(self.addr).await
    }

    pub async fn kill9(mut self) {
        self.child.start_kill().expect("SIGKILL sent");
        let _ = self.child.wait().await;
    }
}
