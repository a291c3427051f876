//! Servers under test run as their own processes (as in production), each
//! announcing its address on stdout; memory is read from /proc.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

pub struct Proc {
    pub child: tokio::process::Child,
    pub addr: SocketAddr,
    /// From spawn to the address line.
    pub started_in: Duration,
}

impl Proc {
    /// Starts `program args` and waits for a stdout line `{prefix}ADDR`.
    pub async fn spawn(program: &Path, args: &[String], prefix: &str) -> Result<Proc, String> {
        let began = Instant::now();
        let mut child = tokio::process::Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
                .await
                .map_err(|_| format!("{} did not start in time", program.display()))?
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{} exited before listening", program.display()))?;
            if let Some(addr) = line.strip_prefix(prefix) {
                break addr.trim().parse().map_err(|e| format!("{line:?}: {e}"))?;
            }
        };
        let started_in = began.elapsed();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Proc {
            child,
            addr,
            started_in,
        })
    }

    /// Resident memory now, in MiB.
    pub fn rss_mib(&self) -> f64 {
        let Some(pid) = self.child.id() else {
            return 0.0;
        };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A binary built beside this one (`cargo build --release --bins`).
pub fn sibling(name: &str) -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let path = me.with_file_name(name);
    if path.exists() {
        Ok(path)
    } else {
        Err(format!(
            "{} not found: build it first (cargo build --release --bins)",
            path.display()
        ))
    }
}

/// Bytes under `dir`, recursively.
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
