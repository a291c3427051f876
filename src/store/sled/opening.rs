//! Opening the data dir without ever serving a damaged store: sled's
//! `conf` is checked before sled reads it, sled's panics on damaged files
//! become one clear error, and the files must reach the commit sequence
//! the manifest promised (see `manifest`).

use super::commits::{Commits, sequence_on_disk};
use super::manifest::{self, Manifest, Promise};
use crate::config::StoreSettings;
use crate::store::OpenError;
use std::cell::{Cell, RefCell};
use std::path::Path;
use std::sync::{Arc, Once};

/// How to recover, for every refusal.
pub fn recovery(dir: &str) -> String {
    format!(
        "move {dir} aside and restore the latest backup with `dialogd store restore --from FILE --data-dir {dir}`; \
         `dialogd store verify --data-dir {dir}` reports what is damaged"
    )
}

/// Opens sled in `settings.data_dir` and checks it against its manifest.
pub fn open(settings: &StoreSettings) -> Result<(sled::Db, Arc<Commits>), OpenError> {
    let path = &settings.data_dir;
    let dir = path.display().to_string();
    let unusable = |reason: String| OpenError::Unusable {
        dir: dir.clone(),
        reason: format!("{reason}; {}", recovery(&dir)),
    };
    let promise =
        manifest::read(path).map_err(|e| unusable(format!("cannot read its manifest: {e}")))?;
    check_conf(path).map_err(&unusable)?;
    let config = sled::Config::new()
        .path(path)
        .cache_capacity(settings.cache_capacity_mb.saturating_mul(1024 * 1024))
        // No background flush: every change is durable through dialogd's
        // write-ahead log, and sled writing its buffer on a timer could
        // persist part of a change whose log record is not yet on disk.
        // sled's files move at dialogd's checkpoints (and when its buffer
        // fills), and only those advance the commit sequence.
        .flush_every_ms(None);
    let opened = catch_quietly(|| config.open()).map_err(|panic| {
        unusable(format!(
            "the store's files are damaged (sled could not read them: {panic})"
        ))
    })?;
    let db = opened.map_err(|e| match e {
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
            OpenError::Locked(dir.clone())
        }
        sled::Error::Corruption { .. } => unusable(format!("the store's files are damaged: {e}")),
        // Not damage: restoring a backup would not help.
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::PermissionDenied => {
            OpenError::Unusable {
                dir: dir.clone(),
                reason: "permission denied: the data dir must be writable by the user dialogd runs as (in a container, own the volume by that uid, e.g. Kubernetes fsGroup)".into(),
            }
        }
        other => unusable(other.to_string()),
    })?;
    let on_disk = catch_quietly(|| sequence_on_disk(&db))
        .map_err(|panic| unusable(format!("the store's files are damaged ({panic})")))?
        .map_err(|e| unusable(format!("the store's files are damaged: {e}")))?;
    let promised = match promise {
        Promise::AtLeast(seq) => seq,
        _ => 0,
    };
    let loss = match promise {
        Promise::AtLeast(seq) if on_disk < seq => Some(format!(
            "its manifest records commit {seq}, but its files reach only commit {on_disk}{}",
            if on_disk == 0 { " (they hold no dialogd data at all)" } else { " (the latest writes are missing)" }
        )),
        Promise::Damaged => Some(
            "both slots of its manifest (dialogd.manifest.0/.1) are damaged, so what it must hold cannot be checked".into(),
        ),
        _ => None,
    };
    if let Some(what) = &loss {
        if !settings.accept_loss {
            return Err(OpenError::Lost {
                dir: dir.clone(),
                what: what.clone(),
                recovery: recovery(&dir),
            });
        }
        tracing::error!(data_dir = %dir, loss = %what, "starting on a store that lost data, as --accept-store-loss asks");
    } else if promise == Promise::None
        && on_disk == 0
        && !db
            .open_tree("dialogd.v1")
            .map(|t| t.is_empty())
            .unwrap_or(true)
    {
        tracing::info!(data_dir = %dir, "the store has no manifest yet (written by an older dialogd); writing one");
    }
    let commits = Arc::new(Commits::new(
        db.clone(),
        on_disk.max(promised),
        Manifest::new(path, promised),
    ));
    commits
        .settle()
        .map_err(|e| unusable(format!("cannot write to it: {e}")))?;
    if loss.is_some() {
        commits
            .reset_manifest()
            .map_err(|e| unusable(format!("cannot write its manifest: {e}")))?;
    }
    Ok((db, commits))
}

/// sled's `conf` holds the storage parameters and a CRC. sled only warns
/// on a bad CRC and then misreads garbled bytes as "a sled version earlier
/// than 0.29"; dialogd refuses it, naming the file. A missing or empty
/// `conf` is rewritten by sled with the same parameters.
fn check_conf(dir: &Path) -> Result<(), String> {
    let path = dir.join("conf");
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if bytes.len() <= 8 {
        return Ok(());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32fast::hash(body) != expected || std::str::from_utf8(body).is_err() {
        return Err(format!(
            "its metadata file {} is damaged (checksum mismatch)",
            path.display()
        ));
    }
    Ok(())
}

/// A dependency's panic as part of dialogd's error: what and where.
fn describe(info: &std::panic::PanicHookInfo<'_>) -> String {
    let payload = info.payload();
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "an internal error".into());
    match info.location() {
        Some(at) => {
            let file = at.file();
            let file = file.find("sled-").map_or(file, |i| &file[i..]);
            format!("{what}, in {file}:{}", at.line())
        }
        None => what,
    }
}

thread_local! {
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Runs `work`, turning a panic into its message instead of letting the
/// panic hook print it: the operator's first line is dialogd's error.
pub fn catch_quietly<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                LAST_PANIC.with(|last| *last.borrow_mut() = Some(describe(info)));
            } else {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    QUIET.with(|q| q.set(false));
    result.map_err(|_| {
        LAST_PANIC
            .with(|last| last.borrow_mut().take())
            .unwrap_or_else(|| "a panic".into())
            .replace('\n', " ")
    })
}
