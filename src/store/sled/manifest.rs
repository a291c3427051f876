//! The store's promise, kept outside sled's own files: the highest commit
//! sequence known to be on disk. Each flush writes the next sequence into
//! sled (`SEQ_KEY`) before flushing; after the flush the manifest records
//! it. A store whose files reach a lower sequence than its manifest has
//! lost data (a truncated or damaged `db`, an emptied data dir), and is
//! refused at start instead of being served partly or empty.
//!
//! Two slots (`dialogd.manifest.0` / `.1`) are written in turn, each a
//! fixed 28-byte record with a CRC, so a torn write damages one slot and
//! the other still holds the previous promise.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"DLGDMAN1";
const RECORD_LEN: usize = 28;

/// What the manifest says about a data dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Promise {
    /// No manifest: the data dir was never served by a dialogd that kept
    /// one (new, or from before manifests).
    None,
    /// The store held at least this commit sequence.
    AtLeast(u64),
    /// Manifest files exist but neither slot is readable.
    Damaged,
}

pub struct Manifest {
    slots: [PathBuf; 2],
    /// The slot the next write goes to.
    next: usize,
    /// The sequence last written.
    written: u64,
}

fn slot_paths(dir: &Path) -> [PathBuf; 2] {
    [
        dir.join("dialogd.manifest.0"),
        dir.join("dialogd.manifest.1"),
    ]
}

fn encode(seq: u64) -> [u8; RECORD_LEN] {
    let mut record = [0u8; RECORD_LEN];
    record[..8].copy_from_slice(MAGIC);
    record[8..16].copy_from_slice(&seq.to_le_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    record[16..24].copy_from_slice(&now.to_le_bytes());
    let crc = crc32fast::hash(&record[..24]);
    record[24..].copy_from_slice(&crc.to_le_bytes());
    record
}

fn decode(bytes: &[u8]) -> Option<u64> {
    if bytes.len() != RECORD_LEN || &bytes[..8] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes(bytes[24..28].try_into().ok()?);
    if crc32fast::hash(&bytes[..24]) != crc {
        return None;
    }
    Some(u64::from_le_bytes(bytes[8..16].try_into().ok()?))
}

/// Reads the promise of the data dir `dir`.
pub fn read(dir: &Path) -> std::io::Result<Promise> {
    let mut found_file = false;
    let mut best: Option<u64> = None;
    for path in slot_paths(dir) {
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut file) => {
                found_file = true;
                file.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        if let Some(seq) = decode(&bytes) {
            best = Some(best.map_or(seq, |b| b.max(seq)));
        }
    }
    Ok(match (found_file, best) {
        (false, _) => Promise::None,
        (true, Some(seq)) => Promise::AtLeast(seq),
        (true, None) => Promise::Damaged,
    })
}

impl Manifest {
    /// The manifest of `dir`, to be written from now on; `written` is the
    /// sequence it already holds (0 if none).
    pub fn new(dir: &Path, written: u64) -> Manifest {
        Manifest {
            slots: slot_paths(dir),
            next: 0,
            written,
        }
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Records `seq` durably (one fdatasync); a no-op if not newer.
    pub fn write(&mut self, seq: u64) -> std::io::Result<()> {
        if seq <= self.written && self.slots.iter().all(|p| p.exists()) {
            return Ok(());
        }
        let path = &self.slots[self.next];
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        file.write_all(&encode(seq))?;
        file.sync_data()?;
        if created {
            // A new file's name must be durable too.
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        self.next = 1 - self.next;
        self.written = self.written.max(seq);
        Ok(())
    }

    /// Writes `seq` to both slots, so no older promise remains (after a
    /// restore, or a start that accepted a loss).
    pub fn reset(&mut self, seq: u64) -> std::io::Result<()> {
        for _ in 0..2 {
            self.written = 0;
            self.write(seq)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_valid_slot_is_the_promise_and_a_torn_slot_is_survived() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), Promise::None);
        let mut manifest = Manifest::new(dir.path(), 0);
        manifest.write(5).unwrap();
        manifest.write(9).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Promise::AtLeast(9));
        // Tear the newest slot: the older promise still holds.
        std::fs::write(dir.path().join("dialogd.manifest.1"), b"DLGDMAN1garbage").unwrap();
        assert_eq!(read(dir.path()).unwrap(), Promise::AtLeast(5));
        std::fs::write(dir.path().join("dialogd.manifest.0"), b"junk").unwrap();
        assert_eq!(read(dir.path()).unwrap(), Promise::Damaged);
        manifest.reset(3).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Promise::AtLeast(3));
    }
}
