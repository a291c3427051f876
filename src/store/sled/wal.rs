//! dialogd's own write-ahead log in front of sled.
//!
//! Why: in sled 0.34 every `apply_batch` writes sled's log buffer out twice
//! (it "rolls" it before and after the batch, through a thread pool that
//! wakes all its idle threads for each job), and every `flush` does the
//! same again: two to three disk writes and ~15 thread switches per turn.
//! Here each change is one record appended to an in-memory buffer; the
//! group-commit flusher writes the buffer with one `write` and one
//! `fdatasync` for every change that came before it. sled itself is
//! flushed only at a checkpoint, after which the log segments it covers
//! are deleted.
//!
//! Crash safety: sled may write its own buffers to disk at any moment, so
//! a change must not reach sled's tree before its record is in the file —
//! otherwise a crash could keep part of a change the log never saw (a
//! turn without its dialogue's head). In `Mode::Sync` a change is applied
//! after the `fdatasync` that made its record durable, in log order, by
//! whoever synced (its writer is still waiting for durability then); in
//! `Mode::Relaxed` (nobody waits) the record is handed to the OS with a
//! `write` and the change applied at once, which survives a killed
//! process. Every write is a blind insert or removal, so replaying the
//! log's records in order over whatever sled recovered yields the state
//! after the last logged change; a change is atomic across a crash
//! because its record is (a CRC covers it). In-process, readers that read
//! several keys take `view()`, so they never see half of a change.
//!
//! On disk: `<data_dir>/wal/<first seq, 20 digits>.wal`, each a header
//! (`MAGIC`, first sequence number) and records `[len u32][crc u32][seq
//! u64][payload]`, all little-endian, sequence numbers consecutive.

use super::write_set::WriteSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock, RwLock, RwLockReadGuard};

pub const MAGIC: &[u8; 16] = b"dialogd-wal-v1\n\0";
pub const SEGMENT_HEADER: usize = MAGIC.len() + 8;
const HEADER: usize = SEGMENT_HEADER;
const RECORD_HEADER: usize = 16;

/// When a logged change reaches the tree (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Once its record is on disk; writers wait for that (group commit).
    Sync,
    /// At once, after its record is written to the file (not synced).
    Relaxed,
}

/// The log of one open store.
pub struct Wal {
    dir: PathBuf,
    tree: sled::Tree,
    mode: Mode,
    pending: Mutex<Pending>,
    segment: Mutex<Segment>,
    view: RwLock<()>,
    /// Set once a write to the file failed: records after the lost ones
    /// could not be replayed in order, so no later change is accepted.
    failed: OnceLock<String>,
}

/// Records logged but not yet written to the file, and (in sync mode) the
/// changes they carry, applied once the records are durable.
struct Pending {
    buf: Vec<u8>,
    next_seq: u64,
    unapplied: Vec<WriteSet>,
}

struct Segment {
    file: File,
    path: PathBuf,
    bytes: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Wal {
    /// Starts a fresh segment in `dir` whose first record is `next_seq`;
    /// the caller has replayed and checkpointed any older segments.
    pub fn start(dir: &Path, next_seq: u64, tree: sled::Tree, mode: Mode) -> std::io::Result<Wal> {
        let segment = Segment::create(dir, next_seq)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            tree,
            mode,
            pending: Mutex::new(Pending {
                buf: Vec::with_capacity(64 * 1024),
                next_seq,
                unapplied: Vec::new(),
            }),
            segment: Mutex::new(segment),
            view: RwLock::new(()),
            failed: OnceLock::new(),
        })
    }

    fn check(&self) -> Result<(), String> {
        match self.failed.get() {
            Some(e) => Err(format!(
                "the write-ahead log failed earlier ({e}); restart dialogd"
            )),
            None => Ok(()),
        }
    }

    /// Logs `set`. In sync mode it reaches the tree with the `sync` that
    /// makes it durable (the caller waits for that); in relaxed mode its
    /// record is written to the file and it is applied before this returns.
    pub fn apply(&self, set: WriteSet) -> Result<(), String> {
        let payload = encode(&set);
        match self.mode {
            Mode::Sync => {
                let mut pending = lock(&self.pending);
                self.check()?;
                let seq = pending.next_seq;
                pending.next_seq += 1;
                append_record(&mut pending.buf, seq, &payload);
                pending.unapplied.push(set);
                Ok(())
            }
            Mode::Relaxed => {
                let mut segment = lock(&self.segment);
                let _exclusive = self.view.write().unwrap_or_else(|p| p.into_inner());
                let buf = {
                    let mut pending = lock(&self.pending);
                    self.check()?;
                    let seq = pending.next_seq;
                    pending.next_seq += 1;
                    append_record(&mut pending.buf, seq, &payload);
                    std::mem::take(&mut pending.buf)
                };
                self.write(&mut segment, buf)?;
                self.apply_now(&set)
            }
        }
    }

    /// Logs `set` and applies it at once, in both modes: only for changes
    /// whose keys no other change writes (audit events), where a crash that
    /// keeps some of an unlogged change keeps a few whole, unacknowledged
    /// events and nothing inconsistent. Durable after the next `sync`.
    pub fn apply_independent(&self, set: WriteSet) -> Result<(), String> {
        if self.mode == Mode::Relaxed {
            return self.apply(set);
        }
        let payload = encode(&set);
        let _exclusive = self.view.write().unwrap_or_else(|p| p.into_inner());
        {
            let mut pending = lock(&self.pending);
            self.check()?;
            let seq = pending.next_seq;
            pending.next_seq += 1;
            append_record(&mut pending.buf, seq, &payload);
        }
        self.apply_now(&set)
    }

    fn apply_now(&self, set: &WriteSet) -> Result<(), String> {
        set.apply(&self.tree).map_err(|e| {
            // Its record is (or will be) in the log: later records must
            // not be applied over a tree that misses it.
            let e = format!("cannot apply a logged change to the store: {e}");
            let _ = self.failed.set(e.clone());
            e
        })
    }

    /// Held by readers of several keys, so they see whole changes only.
    pub fn view(&self) -> RwLockReadGuard<'_, ()> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes every logged record to the file, waits until it is on disk
    /// and applies the changes that waited for that. Only one sync runs at
    /// a time.
    pub fn sync(&self) -> Result<(), String> {
        let mut segment = lock(&self.segment);
        match self.mode {
            Mode::Sync => self.sync_and_apply(&mut segment).map(drop),
            Mode::Relaxed => {
                let buf = std::mem::take(&mut lock(&self.pending).buf);
                self.write(&mut segment, buf)?;
                // Relaxed writers append while the disk syncs.
                let file = segment.file.try_clone();
                drop(segment);
                file.and_then(|f| f.sync_data())
                    .map_err(|e| self.fail(format!("cannot sync the write-ahead log: {e}")))
            }
        }
    }

    /// Writes and syncs the pending records, then applies their changes
    /// in log order (under the exclusive view: whole changes only).
    /// Returns the sequence number of the first record it did not cover.
    fn sync_and_apply(&self, segment: &mut Segment) -> Result<u64, String> {
        let (buf, unapplied, next_seq) = {
            let mut pending = lock(&self.pending);
            let unapplied = std::mem::take(&mut pending.unapplied);
            (
                std::mem::take(&mut pending.buf),
                unapplied,
                pending.next_seq,
            )
        };
        self.write(segment, buf)?;
        segment
            .file
            .sync_data()
            .map_err(|e| self.fail(format!("cannot sync {}: {e}", segment.path.display())))?;
        if !unapplied.is_empty() {
            let _exclusive = self.view.write().unwrap_or_else(|p| p.into_inner());
            for set in &unapplied {
                self.apply_now(set)?;
            }
        }
        Ok(next_seq)
    }

    fn fail(&self, e: String) -> String {
        let _ = self.failed.set(e.clone());
        e
    }

    /// Appends `buf` to the segment's file (not synced) and hands the
    /// (cleared) allocation back for the next records.
    fn write(&self, segment: &mut Segment, mut buf: Vec<u8>) -> Result<(), String> {
        self.check()?;
        if buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = segment.file.write_all(&buf) {
            return Err(self.fail(format!("cannot write {}: {e}", segment.path.display())));
        }
        segment.bytes += buf.len() as u64;
        buf.clear();
        let mut pending = lock(&self.pending);
        if pending.buf.is_empty() && pending.buf.capacity() < buf.capacity() {
            pending.buf = buf;
        }
        Ok(())
    }

    /// Deletes segments `rotate` returned, once sled covers them.
    pub fn remove_done(&self, done: &[PathBuf]) -> Result<(), String> {
        remove(&self.dir, done)
            .map_err(|e| format!("cannot delete old write-ahead log segments: {e}"))
    }

    /// Bytes in the current segment.
    pub fn segment_bytes(&self) -> u64 {
        lock(&self.segment).bytes
    }

    /// Whether anything was logged since the segment began.
    pub fn has_records(&self) -> bool {
        let segment = lock(&self.segment);
        segment.bytes > HEADER as u64 || !lock(&self.pending).buf.is_empty()
    }

    /// Closes the current segment (its records written, synced and
    /// applied) and opens the next; returns the next's first sequence
    /// number and the segments that are now complete. They may be deleted
    /// once sled is flushed: every record in them is in the tree.
    pub fn rotate(&self) -> Result<(u64, Vec<PathBuf>), String> {
        let mut segment = lock(&self.segment);
        // Records logged from here on belong to the next segment.
        let next_seq = self.sync_and_apply(&mut segment)?;
        let next = Segment::create(&self.dir, next_seq)
            .map_err(|e| self.fail(format!("cannot start a write-ahead log segment: {e}")))?;
        *segment = next;
        let current = segment.path.clone();
        let mut done = segments(&self.dir).map_err(|e| e.to_string())?;
        done.retain(|p| *p != current);
        Ok((next_seq, done))
    }
}

impl Segment {
    fn create(dir: &Path, first_seq: u64) -> std::io::Result<Segment> {
        std::fs::create_dir_all(dir)?;
        let path = segment_path(dir, first_seq);
        let mut file = File::options()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        file.write_all(MAGIC)?;
        file.write_all(&first_seq.to_le_bytes())?;
        file.sync_all()?;
        File::open(dir)?.sync_all()?;
        Ok(Segment {
            file,
            path,
            bytes: HEADER as u64,
        })
    }
}

pub fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}.wal"))
}

/// The segment files in `dir`, oldest first.
pub fn segments(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wal") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Deletes segments sled now covers, oldest first (so a crash midway
/// leaves a contiguous tail), and makes the deletions durable.
pub fn remove(dir: &Path, done: &[PathBuf]) -> std::io::Result<()> {
    for path in done {
        std::fs::remove_file(path)?;
    }
    if !done.is_empty() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

fn append_record(buf: &mut Vec<u8>, seq: u64, payload: &[u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(payload);
    buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(payload);
}

fn encode(set: &WriteSet) -> Vec<u8> {
    let size: usize = set
        .ops()
        .iter()
        .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, |v| 4 + v.len()))
        .sum();
    let mut out = Vec::with_capacity(4 + size);
    out.extend_from_slice(&(set.ops().len() as u32).to_le_bytes());
    for (key, value) in set.ops() {
        out.push(u8::from(value.is_some()));
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        if let Some(value) = value {
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
    }
    out
}

pub(super) fn decode(mut bytes: &[u8]) -> Option<WriteSet> {
    fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = bytes.split_at_checked(n)?;
        *bytes = rest;
        Some(head)
    }
    fn take_u32(bytes: &mut &[u8]) -> Option<usize> {
        let b = take(bytes, 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    let count = take_u32(&mut bytes)?;
    let mut set = WriteSet::default();
    for _ in 0..count {
        let kind = *take(&mut bytes, 1)?.first()?;
        let key_len = take_u32(&mut bytes)?;
        let key = take(&mut bytes, key_len)?;
        match kind {
            0 => set.remove(key),
            1 => {
                let value_len = take_u32(&mut bytes)?;
                set.insert(key, take(&mut bytes, value_len)?);
            }
            _ => return None,
        }
    }
    bytes.is_empty().then_some(set)
}

/// One record parsed at the start of `bytes`: its sequence number, its
/// changes and its length, or None if no whole, intact record is there.
pub(super) fn parse_record(bytes: &[u8]) -> Option<(u64, WriteSet, usize)> {
    let header = bytes.get(..RECORD_HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let payload = bytes.get(RECORD_HEADER..RECORD_HEADER.checked_add(len)?)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(payload);
    if hasher.finalize() != crc {
        return None;
    }
    Some((seq, decode(payload)?, RECORD_HEADER + len))
}

pub(super) fn segment_header(bytes: &[u8]) -> Option<u64> {
    let header = bytes.get(..HEADER)?;
    (&header[..MAGIC.len()] == MAGIC)
        .then(|| u64::from_le_bytes(header[MAGIC.len()..].try_into().unwrap_or_default()))
}

#[cfg(test)]
#[path = "wal_tests.rs"]
mod tests;
