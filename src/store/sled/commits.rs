//! Commit sequences: every flush of sled first writes the next sequence
//! into sled, then flushes, so the sequence on disk says how far the files
//! reach. The keeper thread records the flushed sequence in the manifest
//! (at most once a second, and at close), writes the log on a timer,
//! checkpoints (flushes sled and drops the log it
//! covers), and makes a last checkpoint when the store closes.

use super::manifest::Manifest;
use super::wal::Wal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Where the commit sequence lives: sled's default tree, apart from the
/// dialogues' tree.
pub const SEQ_KEY: &[u8] = b"dialogd/commit_seq";

/// The first record of the write-ahead log segment that continues where
/// sled's files end; that segment must exist when the store opens.
const WAL_FROM_KEY: &[u8] = b"dialogd/wal_from";

/// The commit sequence sled's files reach (0: none written).
pub fn sequence_on_disk(db: &sled::Db) -> sled::Result<u64> {
    Ok(db
        .get(SEQ_KEY)?
        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
        .map_or(0, u64::from_be_bytes))
}

pub struct Commits {
    db: sled::Db,
    /// Serializes sequence write + flush, so the sequence on disk only grows.
    flushing: Mutex<u64>,
    /// The highest sequence known flushed.
    flushed: AtomicU64,
    manifest: Mutex<Manifest>,
}

impl Commits {
    /// `last` is the highest sequence already used (on disk or promised).
    pub fn new(db: sled::Db, last: u64, manifest: Manifest) -> Commits {
        Commits {
            db,
            flushing: Mutex::new(last),
            flushed: AtomicU64::new(0),
            manifest: Mutex::new(manifest),
        }
    }

    /// Writes the next sequence and flushes everything written so far.
    pub fn flush(&self) -> Result<(), String> {
        let mut last = self.flushing.lock().unwrap_or_else(|p| p.into_inner());
        let seq = *last + 1;
        self.db
            .insert(SEQ_KEY, &seq.to_be_bytes())
            .map_err(|e| e.to_string())?;
        *last = seq;
        self.db.flush().map_err(|e| e.to_string())?;
        self.flushed.fetch_max(seq, Ordering::AcqRel);
        Ok(())
    }

    /// Notes (for the next flush) the log segment that continues sled.
    pub fn mark_wal_from(&self, first_seq: u64) -> Result<(), String> {
        self.db
            .insert(WAL_FROM_KEY, &first_seq.to_be_bytes())
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// The log segment sled's files say continues them (None: a store
    /// written before the log existed).
    pub fn wal_from(&self) -> Result<Option<u64>, String> {
        let value = self.db.get(WAL_FROM_KEY).map_err(|e| e.to_string())?;
        Ok(value
            .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    /// Brings the manifest up to the flushed sequence.
    pub fn record(&self) -> std::io::Result<()> {
        let seq = self.flushed.load(Ordering::Acquire);
        let mut manifest = self.manifest.lock().unwrap_or_else(|p| p.into_inner());
        if seq > manifest.written() {
            manifest.write(seq)?;
        }
        Ok(())
    }

    /// Flushes and records: the store and its manifest agree.
    pub fn settle(&self) -> Result<(), String> {
        self.flush()?;
        self.record()
            .map_err(|e| format!("cannot write the manifest: {e}"))
    }

    /// Rewrites both manifest slots to the flushed sequence (after a loss
    /// was accepted, or a restore).
    pub fn reset_manifest(&self) -> std::io::Result<()> {
        let seq = self.flushed.load(Ordering::Acquire);
        let mut manifest = self.manifest.lock().unwrap_or_else(|p| p.into_inner());
        manifest.reset(seq)
    }
}

/// Makes sled hold everything logged so far, then drops the log segments
/// that are no longer needed (see `wal`).
pub fn checkpoint(wal: &Wal, commits: &Commits) -> Result<(), String> {
    let (first_seq, done) = wal.rotate()?;
    commits.mark_wal_from(first_seq)?;
    commits.settle()?;
    wal.remove_done(&done)
}

/// The keeper thread; dropping it makes a last checkpoint and stops it.
pub struct Keeper {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How often the manifest catches up with the flushed sequence.
const RECORD_EVERY: Duration = Duration::from_secs(1);
/// A checkpoint once the log's segment grows past this size...
const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;
/// ...or this long after the last one, if anything was logged: the log
/// replayed at start stays short.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

impl Keeper {
    /// Starts the keeper; it also writes the log to disk every
    /// `flush_every` (what makes changes nobody waits for durable:
    /// relaxed turns, audit events).
    pub fn start(
        commits: Arc<Commits>,
        wal: Arc<Wal>,
        flush_every: Duration,
    ) -> std::io::Result<Keeper> {
        let (stop, stopped) = mpsc::channel::<()>();
        let tick = flush_every.min(RECORD_EVERY);
        let thread = std::thread::Builder::new()
            .name("dialogd-manifest".into())
            .spawn(move || {
                let mut last_flush = Instant::now();
                let mut last_checkpoint = Instant::now();
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    if last_flush.elapsed() >= flush_every {
                        last_flush = Instant::now();
                        if let Err(e) = wal.sync() {
                            tracing::error!(error = %e, "store flush failed");
                        }
                    }
                    if wal.segment_bytes() >= CHECKPOINT_BYTES
                        || (last_checkpoint.elapsed() >= CHECKPOINT_EVERY && wal.has_records())
                    {
                        last_checkpoint = Instant::now();
                        if let Err(e) = checkpoint(&wal, &commits) {
                            tracing::error!(error = %e, "store checkpoint failed");
                        }
                    }
                    if let Err(e) = commits.record() {
                        tracing::error!(error = %e, "cannot write the store manifest");
                    }
                }
                if let Err(e) = checkpoint(&wal, &commits) {
                    tracing::error!(error = %e, "last store checkpoint failed");
                }
            })?;
        Ok(Keeper {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
