//! Reloading what may change while serving — the TLS certificate, the
//! rules file — on SIGHUP and when its files change.

use crate::config::{Settings, read_rule_file, validate_rules};
use crate::engine::rules::RuleBook;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Calls `reload(forced)` every `every` (forced = false: reload only what
/// changed) and on each SIGHUP (forced = true), until `stop`.
pub async fn on_change_or_hangup(
    every: Duration,
    stop: CancellationToken,
    mut reload: impl FnMut(bool) + Send,
) {
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    // What is watched was loaded at start: the first check is one period
    // later (an immediate tick would pick up files replaced meanwhile, as
    // if a change had been asked for).
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        #[cfg(unix)]
        let hup = async {
            match hangup.as_mut() {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hup = std::future::pending::<Option<()>>();
        let forced = tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => false,
            _ = hup => true,
        };
        reload(forced);
    }
}

/// The rules file's reloads: what the book needs to take a new table.
pub struct RuleFileWatch {
    book: Arc<RuleBook>,
    path: PathBuf,
    models: Vec<String>,
    seen: Option<SystemTime>,
}

impl RuleFileWatch {
    /// Watches the rules file of `settings`, when there is one.
    pub fn of(settings: &Settings, book: Arc<RuleBook>) -> Option<RuleFileWatch> {
        let path = PathBuf::from(settings.rules.file.as_ref()?);
        Some(RuleFileWatch {
            book,
            seen: modified(&path),
            models: settings
                .chat_model_names()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            path,
        })
    }

    /// Puts the file's rules in force when it changed (or `forced`); a file
    /// that does not read or validate leaves the table in force on.
    pub fn reload(&mut self, forced: bool) {
        let stamp = modified(&self.path);
        if !forced && stamp == self.seen {
            return;
        }
        self.seen = stamp;
        let models: Vec<&str> = self.models.iter().map(String::as_str).collect();
        let loaded = read_rule_file(&self.path)
            .and_then(|rules| validate_rules(&rules, &models).map(|()| rules))
            .and_then(|rules| self.book.replace(&rules).map(|()| rules.len()));
        crate::meter::rule_reload(loaded.is_ok());
        match loaded {
            Ok(rules) => tracing::info!(rules, "rules file reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "rules file reload failed; the previous rules stay in force")
            }
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
