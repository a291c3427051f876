//! Replaying the write-ahead log when the store opens (see `wal`): every
//! record of every segment, in order, applied over what sled recovered.
//! A torn record at the very end of the newest segment is a write that was
//! never acknowledged (the crash came before its `fdatasync` returned) and
//! is dropped; anything else that does not read back — a bad record with
//! intact ones after it, a missing segment, a bad header — means
//! acknowledged changes may be gone, and the store is refused.

use super::commits::Commits;
use super::opening::recovery;
use super::wal::{self, Mode, SEGMENT_HEADER, Wal, parse_record, segment_header, segments};
use crate::config::{Durability, StoreSettings};
use crate::store::OpenError;
use std::path::{Path, PathBuf};

/// Replays the log in `<data_dir>/wal` into `tree`, makes sled durable,
/// drops the replayed segments and starts a fresh one.
pub fn recover(
    settings: &StoreSettings,
    tree: &sled::Tree,
    commits: &Commits,
) -> Result<Wal, OpenError> {
    let dir = settings.data_dir.display().to_string();
    let unusable = |reason: String| OpenError::Unusable {
        dir: dir.clone(),
        reason,
    };
    let wal_dir = settings.data_dir.join("wal");
    let lost = |what: String| OpenError::Lost {
        dir: dir.clone(),
        what,
        recovery: recovery(&dir),
    };
    let from = commits.wal_from().map_err(&unusable)?;
    if let Some(first) = from
        && !wal::segment_path(&wal_dir, first).exists()
        && !settings.accept_loss
    {
        return Err(lost(format!(
            "its write-ahead log segment {} is missing (sled's files continue in it)",
            wal::segment_path(&wal_dir, first).display()
        )));
    }
    let replayed = replay(&wal_dir, tree, settings.accept_loss).map_err(lost)?;
    if replayed.records > 0 || replayed.torn_bytes > 0 {
        tracing::info!(
            records = replayed.records,
            torn_bytes = replayed.torn_bytes,
            "replayed the write-ahead log (a torn record at its end was never acknowledged)"
        );
    }
    // sled must hold the replayed records, and name the fresh segment as
    // its continuation, before the old segments go.
    let mode = match settings.durability {
        Durability::Sync => Mode::Sync,
        Durability::Relaxed => Mode::Relaxed,
    };
    let fresh = Wal::start(&wal_dir, replayed.next_seq, tree.clone(), mode).map_err(|e| {
        unusable(format!(
            "cannot start the write-ahead log in {}: {e}",
            wal_dir.display()
        ))
    })?;
    let mut old = replayed.segments;
    old.retain(|p| *p != wal::segment_path(&wal_dir, replayed.next_seq));
    commits
        .mark_wal_from(replayed.next_seq)
        .and_then(|()| commits.settle())
        .map_err(|e| unusable(format!("cannot flush the replayed log: {e}")))?;
    wal::remove(&wal_dir, &old)
        .map_err(|e| unusable(format!("cannot delete replayed log segments: {e}")))?;
    Ok(fresh)
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Records applied to the tree.
    pub records: u64,
    /// The sequence number the next record gets.
    pub next_seq: u64,
    /// The segments read; delete them once sled is flushed.
    pub segments: Vec<PathBuf>,
    /// Bytes of a torn (never acknowledged) record dropped at the end.
    pub torn_bytes: usize,
}

/// Applies every logged change in `dir` to `tree`. With `lenient` (the
/// operator accepted a loss), damage ends the replay instead of failing it.
pub fn replay(dir: &Path, tree: &sled::Tree, lenient: bool) -> Result<Replayed, String> {
    let found = segments(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut done = Replayed {
        next_seq: 1,
        ..Replayed::default()
    };
    match replay_segments(&found, tree, &mut done) {
        Ok(()) => {}
        Err(damage) if lenient => {
            tracing::error!(%damage, "replayed the write-ahead log up to the damage, as --accept-store-loss asks");
        }
        Err(damage) => return Err(damage),
    }
    done.segments = found;
    Ok(done)
}

fn replay_segments(
    found: &[PathBuf],
    tree: &sled::Tree,
    done: &mut Replayed,
) -> Result<(), String> {
    let mut expected: Option<u64> = None;
    for (i, path) in found.iter().enumerate() {
        let newest = i + 1 == found.len();
        let name = path.display();
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {name}: {e}"))?;
        let Some(first) = segment_header(&bytes) else {
            // A crash while the newest segment was being created leaves it
            // shorter than its header: nothing was ever logged to it.
            if newest && bytes.len() < SEGMENT_HEADER {
                return Ok(());
            }
            return Err(format!(
                "write-ahead log segment {name} has a damaged header"
            ));
        };
        if let Some(expected) = expected
            && first != expected
        {
            return Err(format!(
                "write-ahead log segment {name} starts at record {first}, but the one before ends at {}: a segment is missing",
                expected.saturating_sub(1)
            ));
        }
        let mut next = first;
        let mut at = SEGMENT_HEADER;
        while at < bytes.len() {
            match parse_record(&bytes[at..]) {
                Some((seq, set, len)) if seq == next => {
                    set.apply(tree)
                        .map_err(|e| format!("cannot replay into the store: {e}"))?;
                    done.records += 1;
                    next += 1;
                    done.next_seq = next;
                    at += len;
                }
                _ if newest && !intact_record_after(&bytes[at + 1..], next) => {
                    done.torn_bytes = bytes.len() - at;
                    break;
                }
                _ => {
                    return Err(format!(
                        "write-ahead log segment {name} is damaged at byte {at} (record {next})"
                    ));
                }
            }
        }
        expected = Some(next);
        done.next_seq = next;
    }
    Ok(())
}

/// Whether a whole record with a later sequence number lies anywhere in
/// `bytes`: then the bad bytes before it are damage, not a torn tail.
fn intact_record_after(bytes: &[u8], next: u64) -> bool {
    (0..bytes.len()).any(|at| {
        let seq = bytes
            .get(at + 8..at + 16)
            .and_then(|b| b.try_into().ok())
            .map_or(0, u64::from_le_bytes);
        seq >= next && seq - next < 1 << 32 && parse_record(&bytes[at..]).is_some()
    })
}
