//! dialogd's own write-ahead log in front of sled.
//!
//! Why: in sled 0.34 every `apply_batch` writes sled's log buffer out twice
//! (it "rolls" it before and after the batch, through a thread pool that
//! wakes all its idle threads for each job), and every `flush` does the
//! same again: two to three disk writes and ~15 thread switches per turn.
//! Here each change is one record appended to an in-memory buffer and then
//! applied to sled's tree key by key (no sled batch); the group-commit
//! flusher writes the buffer with one `write` and one `fdatasync` for
//! every change that came before it. sled itself is flushed only at a
//! checkpoint, after which the log segments it covers are deleted.
//!
//! Crash safety: records are applied in the order they are logged (one
//! lock covers both), and every write is a blind insert or removal, so
//! replaying the log's records in order over whatever sled recovered
//! yields the state after the last logged change — a change is atomic
//! across a crash because its record is (a CRC covers it). In-process,
//! readers that read several keys take `view()`, so they never see half
//! of a change (a large change — erasing a 10,000-turn dialogue — holds
//! them off for the milliseconds its removals take).
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

/// The log of one open store.
pub struct Wal {
    dir: PathBuf,
    pending: Mutex<Pending>,
    segment: Mutex<Segment>,
    view: RwLock<()>,
    /// Set once a write to the file failed: records after the lost ones
    /// could not be replayed in order, so no later change is accepted.
    failed: OnceLock<String>,
}

/// Records logged but not yet written to the file.
struct Pending {
    buf: Vec<u8>,
    next_seq: u64,
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
    pub fn start(dir: &Path, next_seq: u64) -> std::io::Result<Wal> {
        let segment = Segment::create(dir, next_seq)?;
        Ok(Wal {
            dir: dir.to_path_buf(),
            pending: Mutex::new(Pending {
                buf: Vec::with_capacity(64 * 1024),
                next_seq,
            }),
            segment: Mutex::new(segment),
            view: RwLock::new(()),
            failed: OnceLock::new(),
        })
    }

    /// Logs `set` and applies it to `tree`, both under one lock, so the
    /// log's order is the tree's order. Durable after the next `sync`.
    pub fn apply(&self, set: &WriteSet, tree: &sled::Tree) -> Result<(), String> {
        let payload = encode(set);
        let _exclusive = self.view.write().unwrap_or_else(|p| p.into_inner());
        let mut pending = lock(&self.pending);
        if let Some(e) = self.failed.get() {
            return Err(format!(
                "the write-ahead log failed earlier ({e}); restart dialogd"
            ));
        }
        let seq = pending.next_seq;
        pending.next_seq += 1;
        append_record(&mut pending.buf, seq, &payload);
        set.apply(tree).map_err(|e| e.to_string())
    }

    /// Held by readers of several keys, so they see whole changes only.
    pub fn view(&self) -> RwLockReadGuard<'_, ()> {
        self.view.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes every logged record to the file and waits until it is on
    /// disk. Only one sync runs at a time.
    pub fn sync(&self) -> Result<(), String> {
        let mut segment = lock(&self.segment);
        let buf = std::mem::take(&mut lock(&self.pending).buf);
        self.write_out(&mut segment, buf)
    }

    fn write_out(&self, segment: &mut Segment, mut buf: Vec<u8>) -> Result<(), String> {
        if let Some(e) = self.failed.get() {
            return Err(format!(
                "the write-ahead log failed earlier ({e}); restart dialogd"
            ));
        }
        if buf.is_empty() {
            return Ok(());
        }
        let written = segment
            .file
            .write_all(&buf)
            .and_then(|()| segment.file.sync_data());
        if let Err(e) = written {
            let e = format!("cannot write {}: {e}", segment.path.display());
            let _ = self.failed.set(e.clone());
            return Err(e);
        }
        segment.bytes += buf.len() as u64;
        // Hand the (cleared) allocation back, unless records arrived.
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

    /// Closes the current segment (its records written and synced) and
    /// opens the next; returns the next's first sequence number and the
    /// segments that are now complete. They may be deleted once sled is
    /// flushed: every record in them was applied to the tree before this
    /// returned.
    pub fn rotate(&self) -> Result<(u64, Vec<PathBuf>), String> {
        let mut segment = lock(&self.segment);
        let (buf, next_seq) = {
            let mut pending = lock(&self.pending);
            (std::mem::take(&mut pending.buf), pending.next_seq)
        };
        self.write_out(&mut segment, buf)?;
        let next = Segment::create(&self.dir, next_seq).map_err(|e| {
            let e = format!("cannot start a write-ahead log segment: {e}");
            let _ = self.failed.set(e.clone());
            e
        })?;
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
