//! The backup file: every key and value of the embedded store at one
//! moment, framed and checksummed, so a damaged or cut-short copy is
//! refused before anything is restored from it.
//!
//! ```text
//! "DIALOGD-BACKUP\n" version:u32
//! { key_len:u32 key value_len:u32 value }*
//! END:u32 (0xFFFF_FFFF) pairs:u64 crc32:u32   (CRC of every byte before it)
//! ```
//! Integers are little-endian.

use std::io::{self, Read, Write};

const MAGIC: &[u8] = b"DIALOGD-BACKUP\n";
const VERSION: u32 = 1;
const END: u32 = u32::MAX;
/// Largest key or value accepted when reading (sled's values are far
/// smaller; a bigger length means a damaged file).
const MAX_FIELD: u32 = 1 << 30;

/// Writes a backup to `out`, checksumming as it goes.
pub struct BackupWriter<W: Write> {
    out: W,
    crc: crc32fast::Hasher,
    pairs: u64,
}

impl<W: Write> BackupWriter<W> {
    pub fn new(out: W) -> io::Result<BackupWriter<W>> {
        let mut writer = BackupWriter {
            out,
            crc: crc32fast::Hasher::new(),
            pairs: 0,
        };
        writer.put(MAGIC)?;
        writer.put(&VERSION.to_le_bytes())?;
        Ok(writer)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.out.write_all(bytes)
    }

    fn field(&mut self, bytes: &[u8]) -> io::Result<()> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|l| *l < MAX_FIELD)
            .ok_or_else(|| io::Error::other("a record larger than 1 GiB"))?;
        self.put(&len.to_le_bytes())?;
        self.put(bytes)
    }

    pub fn pair(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.field(key)?;
        self.field(value)?;
        self.pairs += 1;
        Ok(())
    }

    /// Writes the trailer; returns the output and the number of pairs.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.put(&END.to_le_bytes())?;
        let pairs = self.pairs;
        self.put(&pairs.to_le_bytes())?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.flush()?;
        Ok((self.out, pairs))
    }
}

/// Why a backup cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a dialogd backup (bad header)")]
    NotABackup,
    #[error("backup version {0} is not supported")]
    Version(u32),
    #[error("the backup is damaged or cut short: {0}")]
    Damaged(String),
}

/// Reads a backup, handing each pair to `each`; checks the trailer's
/// count and CRC at the end. Callers that must not act on a damaged file
/// read it twice: once with a no-op `each` to check it.
pub fn read(
    input: impl Read,
    mut each: impl FnMut(Vec<u8>, Vec<u8>) -> io::Result<()>,
) -> Result<u64, BackupError> {
    let mut input = io::BufReader::new(input);
    let mut crc = crc32fast::Hasher::new();
    let mut take = |len: usize, crc: &mut crc32fast::Hasher| -> Result<Vec<u8>, BackupError> {
        let mut buf = vec![0u8; len];
        input.read_exact(&mut buf).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => BackupError::Damaged("it ends early".into()),
            _ => BackupError::Io(e),
        })?;
        crc.update(&buf);
        Ok(buf)
    };
    let u32_of = |b: Vec<u8>| u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    if take(MAGIC.len(), &mut crc).map_err(|_| BackupError::NotABackup)? != MAGIC {
        return Err(BackupError::NotABackup);
    }
    let version = u32_of(take(4, &mut crc)?);
    if version != VERSION {
        return Err(BackupError::Version(version));
    }
    let mut pairs = 0u64;
    loop {
        let len = u32_of(take(4, &mut crc)?);
        if len == END {
            break;
        }
        if len >= MAX_FIELD {
            return Err(BackupError::Damaged(format!("a key of {len} bytes")));
        }
        let key = take(len as usize, &mut crc)?;
        let len = u32_of(take(4, &mut crc)?);
        if len >= MAX_FIELD {
            return Err(BackupError::Damaged(format!("a value of {len} bytes")));
        }
        let value = take(len as usize, &mut crc)?;
        each(key, value)?;
        pairs += 1;
    }
    let count = take(8, &mut crc)?;
    let count = u64::from_le_bytes(count.try_into().unwrap_or_default());
    let expected = crc.finalize();
    let mut stored = [0u8; 4];
    input
        .read_exact(&mut stored)
        .map_err(|_| BackupError::Damaged("it ends early".into()))?;
    if u32::from_le_bytes(stored) != expected {
        return Err(BackupError::Damaged("checksum mismatch".into()));
    }
    if count != pairs {
        return Err(BackupError::Damaged(format!(
            "{pairs} records, the trailer says {count}"
        )));
    }
    if input.read(&mut [0u8; 1])? != 0 {
        return Err(BackupError::Damaged("bytes after the trailer".into()));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut writer = BackupWriter::new(Vec::new()).unwrap();
        writer.pair(b"m/a", b"{}").unwrap();
        writer.pair(b"t/a\0\0", &[7u8; 300]).unwrap();
        writer.finish().unwrap().0
    }

    #[test]
    fn a_backup_reads_back_pair_by_pair() {
        let mut seen = Vec::new();
        let count = read(&sample()[..], |k, v| {
            seen.push((k, v.len()));
            Ok(())
        })
        .unwrap();
        assert_eq!(count, 2);
        assert_eq!(seen, [(b"m/a".to_vec(), 2), (b"t/a\0\0".to_vec(), 300)]);
    }

    #[test]
    fn damage_anywhere_is_refused() {
        let good = sample();
        let none = |_: Vec<u8>, _: Vec<u8>| Ok(());
        assert!(matches!(
            read(&good[..good.len() - 10], none),
            Err(BackupError::Damaged(_))
        ));
        let mut flipped = good.clone();
        flipped[40] ^= 1;
        assert!(read(&flipped[..], none).is_err());
        assert!(matches!(
            read(&b"hello"[..], none),
            Err(BackupError::NotABackup)
        ));
    }
}
