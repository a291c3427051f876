//! Backup and restore of the embedded store: a backup is every record of
//! the tree at one moment (writes wait on the gate while it is copied), in
//! the checksummed format of `store::backup`; a restore fills an empty
//! data dir from one and makes its contents the manifest's new promise.

use super::SledStore;
use crate::config::StoreSettings;
use crate::dialogue::ports::StoreError;
use crate::store::backup::{self, BackupWriter};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        StoreError::Io(e.to_string())
    }
}

impl SledStore {
    /// Writes a backup of the whole store to `out`; returns the number of
    /// records. Blocking: run it on a blocking thread. Writes wait until
    /// it is done, so the copy is one moment of the store.
    pub fn export(&self, out: impl Write) -> Result<u64, StoreError> {
        let _alone = self.gate.blocking_write();
        let mut writer = BackupWriter::new(out)?;
        for entry in self.tree.iter() {
            let (key, value) = entry?;
            writer.pair(&key, &value)?;
        }
        Ok(writer.finish()?.1)
    }
}

impl crate::dialogue::ports::StoreExport for SledStore {
    fn export(&self, out: &mut dyn Write) -> Result<u64, StoreError> {
        SledStore::export(self, out)
    }
}

/// Writes a new backup file in `dir` with `produce`, atomically: it
/// appears under its final name only once complete and on disk.
pub fn write_backup_file(
    dir: &Path,
    produce: impl FnOnce(&mut File) -> Result<u64, String>,
) -> Result<(PathBuf, u64), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    // Never replace an earlier backup, even one of the same millisecond.
    while dir.join(format!("dialogd-{millis}.backup")).exists() {
        millis += 1;
    }
    let path = dir.join(format!("dialogd-{millis}.backup"));
    let partial = dir.join(format!(".dialogd-{millis}.backup.partial"));
    let result = (|| -> Result<u64, String> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&partial)
            .map_err(|e| e.to_string())?;
        let records = produce(&mut file)?;
        file.sync_all().map_err(|e| e.to_string())?;
        std::fs::rename(&partial, &path).map_err(|e| e.to_string())?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| e.to_string())?;
        Ok(records)
    })();
    match result {
        Ok(records) => Ok((path, records)),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(format!("cannot write a backup in {}: {e}", dir.display()))
        }
    }
}

/// Deletes all but the newest `keep` backup files in `dir`; returns what
/// it deleted. Names carry the time in milliseconds, so they sort by age.
pub fn prune_backups(dir: &Path, keep: usize) -> Result<Vec<PathBuf>, String> {
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("dialogd-") && n.ends_with(".backup"))
        })
        .collect();
    backups.sort_by_key(|path| {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        name.trim_start_matches("dialogd-")
            .trim_end_matches(".backup")
            .parse::<u128>()
            .unwrap_or(0)
    });
    let surplus = backups.len().saturating_sub(keep);
    let old: Vec<PathBuf> = backups.drain(..surplus).collect();
    for path in &old {
        std::fs::remove_file(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
    }
    Ok(old)
}

/// Backs up the (stopped) store of `settings` into a new file in `to`.
pub fn backup_offline(settings: &StoreSettings, to: &Path) -> Result<(PathBuf, u64), String> {
    let store = SledStore::open(settings).map_err(|e| e.to_string())?;
    write_backup_file(to, |file| store.export(file).map_err(|e| e.to_string()))
}

/// Fills the empty (or missing) data dir of `settings` from the backup
/// `from`; returns the number of records, and of dialogues dropped because
/// they were erased since (`SledStore::drop_shredded`). The file is
/// checked whole before anything is written.
pub fn restore(from: &Path, settings: &StoreSettings) -> Result<(u64, usize), String> {
    let open = || File::open(from).map_err(|e| format!("cannot read {}: {e}", from.display()));
    let records =
        backup::read(open()?, |_, _| Ok(())).map_err(|e| format!("{}: {e}", from.display()))?;
    let dir = &settings.data_dir;
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        return Err(format!(
            "data dir {} is not empty; restore into an empty or new directory (move this one aside)",
            dir.display()
        ));
    }
    let store = SledStore::open(settings).map_err(|e| e.to_string())?;
    let mut batch = sled::Batch::default();
    let mut in_batch = 0;
    backup::read(open()?, |key, value| {
        batch.insert(key, value);
        in_batch += 1;
        if in_batch == 1000 {
            store
                .tree
                .apply_batch(std::mem::take(&mut batch))
                .map_err(std::io::Error::other)?;
            in_batch = 0;
        }
        Ok(())
    })
    .map_err(|e| format!("{}: {e}", from.display()))?;
    store.tree.apply_batch(batch).map_err(|e| e.to_string())?;
    store.commits.settle()?;
    let erased = store.drop_shredded()?;
    Ok((records, erased))
}
