//! Per-dialogue data keys (envelope encryption, crypto-shredding): each
//! dialogue's records are sealed with a key of its own, kept — wrapped by
//! the key ring's primary key — in a file outside the store. Erasing the
//! dialogue overwrites its key in place, so every copy of its records that
//! lingers (sled's freed segments, old log segments, backup files) can no
//! longer be opened by anyone, with or without the key ring.
//!
//! The file is an array of 256-byte slots; slot 0 is the header. A slot:
//!
//! ```text
//! [0] state (0 free, 1 live, 2 erasing)  [1] id length  [2..163] dialogue id
//! [163] wrapping key id length  [164..196] wrapping key id
//! [196..256] nonce(12) ‖ AES-256-GCM(data key)(32+16), AAD = "dialogd dialogue key\0" ‖ id
//! ```
//!
//! A key is written and synced before anything is sealed with it; erasure
//! marks the slot `erasing` (synced), removes the records durably, then
//! zeroes the slot (synced). A start finding an `erasing` slot finishes the
//! erasure (`SledStore::open`).

use super::key_ring::KeyRing;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

const SLOT: usize = 256;
const MAGIC: &[u8] = b"DIALOGD-DIALOGUE-KEYS v1\n";
const FREE: u8 = 0;
const LIVE: u8 = 1;
const ERASING: u8 = 2;
const ID_MAX: usize = 161;
const ID_AT: usize = 2;
const KEY_ID_AT: usize = 164;
const WRAPPED_AT: usize = 196;
const NONCE_LEN: usize = 12;
const WRAP_AAD: &[u8] = b"dialogd dialogue key\0";

/// One dialogue's key, unwrapped, and where it is kept.
#[derive(Clone)]
struct Entry {
    slot: u64,
    key: [u8; 32],
    wrapped_with: String,
    erasing: bool,
}

/// The file and its free slots; held while writing (and syncing).
struct Slots {
    file: File,
    free: Vec<u64>,
    /// Slots in the file, the header included.
    count: u64,
}

/// The data keys of every dialogue, loaded at start.
pub struct DialogueKeys {
    path: PathBuf,
    ring: Arc<KeyRing>,
    keys: RwLock<HashMap<String, Entry>>,
    slots: Mutex<Slots>,
}

impl DialogueKeys {
    /// Opens (or creates) the key file at `path`, unwrapping every key
    /// with `ring`: a key wrapped with a key the ring lacks, or failing
    /// authentication, stops the start naming the dialogue.
    pub fn open(path: &Path, ring: Arc<KeyRing>) -> Result<DialogueKeys, String> {
        let named = |e: std::io::Error| format!("dialogue key file {}: {e}", path.display());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(named)?;
        // One process owns the keys: another one destroying or reusing a
        // slot behind this one's back would lose dialogues.
        file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => format!(
                "dialogue key file {} is in use by another dialogd process",
                path.display()
            ),
            std::fs::TryLockError::Error(e) => named(e),
        })?;
        let bytes = std::fs::read(path).map_err(named)?;
        if bytes.is_empty() {
            let mut header = [0u8; SLOT];
            header[..MAGIC.len()].copy_from_slice(MAGIC);
            file.write_all_at(&header, 0).map_err(named)?;
            file.sync_all().map_err(named)?;
            if let Some(dir) = path.parent().and_then(|d| File::open(d).ok()) {
                dir.sync_all().map_err(named)?;
            }
        } else if !bytes.starts_with(MAGIC) {
            return Err(format!(
                "{} is not a dialogue key file (bad header)",
                path.display()
            ));
        }
        let mut keys = HashMap::new();
        let mut free = Vec::new();
        // A cut-short last slot is a key whose write never finished (so
        // nothing was sealed with it): its room is reused.
        let count = (bytes.len().max(SLOT) / SLOT) as u64;
        for (slot, raw) in bytes.chunks_exact(SLOT).enumerate().skip(1) {
            let slot = slot as u64;
            match decode_slot(raw, &ring) {
                Err(e) => return Err(format!("{} slot {slot}: {e}", path.display())),
                Ok(None) => free.push(slot),
                Ok(Some((id, mut entry))) => {
                    entry.slot = slot;
                    if keys.insert(id.clone(), entry).is_some() {
                        return Err(format!("{}: dialogue {id} has two keys", path.display()));
                    }
                }
            }
        }
        free.reverse();
        Ok(DialogueKeys {
            path: path.to_owned(),
            ring,
            keys: RwLock::new(keys),
            slots: Mutex::new(Slots { file, free, count }),
        })
    }

    /// The data key of `dialogue`, if it has one.
    pub fn get(&self, dialogue: &str) -> Option<[u8; 32]> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.get(dialogue).map(|e| e.key)
    }

    /// The key of `dialogue`, created and synced first if it has none
    /// (blocking: writes the file).
    pub fn ensure(&self, dialogue: &str) -> Result<[u8; 32], String> {
        if let Some(key) = self.get(dialogue) {
            return Ok(key);
        }
        if dialogue.len() > ID_MAX {
            return Err(format!("dialogue id longer than {ID_MAX} bytes"));
        }
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        // Another writer may have created it meanwhile.
        if let Some(key) = self.get(dialogue) {
            return Ok(key);
        }
        let entry = Entry {
            slot: slots.free.pop().unwrap_or(slots.count),
            key: rand::random(),
            wrapped_with: self.ring.primary().to_owned(),
            erasing: false,
        };
        let raw = encode_slot(dialogue, &entry, &self.ring);
        self.write_slot(&mut slots, entry.slot, &raw)?;
        let key = entry.key;
        self.keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dialogue.to_owned(), entry);
        Ok(key)
    }

    /// Marks the key of `dialogue` as being erased (synced), so a crash
    /// before `destroy` finishes the erasure at the next start. False if
    /// it has no key.
    pub fn mark_erasing(&self, dialogue: &str) -> Result<bool, String> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = keys.get_mut(dialogue) else {
            return Ok(false);
        };
        entry.erasing = true;
        let raw = encode_slot(dialogue, entry, &self.ring);
        let slot = entry.slot;
        drop(keys);
        self.write_slot(&mut slots, slot, &raw)?;
        Ok(true)
    }

    /// Destroys the key of `dialogue`: its slot zeroed and synced. Records
    /// sealed with it can no longer be opened.
    pub fn destroy(&self, dialogue: &str) -> Result<bool, String> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let Some(entry) = self
            .keys
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(dialogue)
        else {
            return Ok(false);
        };
        self.write_slot(&mut slots, entry.slot, &[0u8; SLOT])?;
        slots.free.push(entry.slot);
        Ok(true)
    }

    /// Dialogues whose erasure a crash interrupted.
    pub fn erasing(&self) -> Vec<String> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut ids: Vec<String> = keys
            .iter()
            .filter(|(_, e)| e.erasing)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Wraps again, with the primary key, every key wrapped with another,
    /// so that key can leave the ring; the number rewrapped.
    pub fn rewrap(&self) -> Result<u64, String> {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let primary = self.ring.primary().to_owned();
        let mut changed = 0;
        for (id, entry) in keys.iter_mut().filter(|(_, e)| e.wrapped_with != primary) {
            entry.wrapped_with = primary.clone();
            let raw = encode_slot(id, entry, &self.ring);
            slots
                .file
                .write_all_at(&raw, entry.slot * SLOT as u64)
                .map_err(|e| self.failed(e))?;
            changed += 1;
        }
        slots.file.sync_data().map_err(|e| self.failed(e))?;
        Ok(changed)
    }

    /// How many dialogues have a key.
    pub fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write_slot(&self, slots: &mut Slots, slot: u64, raw: &[u8; SLOT]) -> Result<(), String> {
        slots
            .file
            .write_all_at(raw, slot * SLOT as u64)
            .and_then(|()| slots.file.sync_data())
            .map_err(|e| self.failed(e))?;
        slots.count = slots.count.max(slot + 1);
        Ok(())
    }

    fn failed(&self, e: std::io::Error) -> String {
        format!("dialogue key file {}: {e}", self.path.display())
    }
}

/// `plain` sealed with a data key for the record `aad`.
pub fn seal_with_key(key: &[u8; 32], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = rand::random();
    // Fails only for messages over 64 GiB; records are far smaller.
    let ciphertext = Aes256Gcm::new(key.into())
        .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad })
        .unwrap_or_default();
    let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    sealed
}

/// The plain value of `sealed` (nonce ‖ ciphertext), or None if it fails
/// authentication.
pub fn open_with_key(key: &[u8; 32], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, msg) = sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    Aes256Gcm::new(key.into())
        .decrypt(&Nonce::from(nonce), Payload { msg, aad })
        .ok()
}

fn wrap_aad(id: &str) -> Vec<u8> {
    [WRAP_AAD, id.as_bytes()].concat()
}

fn encode_slot(id: &str, entry: &Entry, ring: &KeyRing) -> [u8; SLOT] {
    let mut raw = [0u8; SLOT];
    raw[0] = if entry.erasing { ERASING } else { LIVE };
    raw[1] = id.len() as u8;
    raw[ID_AT..ID_AT + id.len()].copy_from_slice(id.as_bytes());
    let key_id = entry.wrapped_with.as_bytes();
    raw[KEY_ID_AT - 1] = key_id.len() as u8;
    raw[KEY_ID_AT..KEY_ID_AT + key_id.len()].copy_from_slice(key_id);
    let nonce: [u8; NONCE_LEN] = rand::random();
    let aad = wrap_aad(id);
    let wrapped = ring
        .primary_cipher()
        .encrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &entry.key,
                aad: &aad,
            },
        )
        .unwrap_or_default();
    raw[WRAPPED_AT..WRAPPED_AT + NONCE_LEN].copy_from_slice(&nonce);
    raw[WRAPPED_AT + NONCE_LEN..].copy_from_slice(&wrapped);
    raw
}

fn decode_slot(raw: &[u8], ring: &KeyRing) -> Result<Option<(String, Entry)>, String> {
    let erasing = match raw[0] {
        FREE => return Ok(None),
        LIVE => false,
        ERASING => true,
        other => return Err(format!("unknown state {other}")),
    };
    let id_len = usize::from(raw[1]);
    let key_id_len = usize::from(raw[KEY_ID_AT - 1]);
    if id_len == 0 || id_len > ID_MAX || key_id_len == 0 || key_id_len > 32 {
        return Err("damaged (lengths out of range)".into());
    }
    let id = std::str::from_utf8(&raw[ID_AT..ID_AT + id_len])
        .map_err(|_| "damaged (id is not text)")?
        .to_owned();
    let key_id = std::str::from_utf8(&raw[KEY_ID_AT..KEY_ID_AT + key_id_len])
        .map_err(|_| "damaged (key id is not text)")?
        .to_owned();
    let cipher = ring.cipher(&key_id).ok_or_else(|| {
        format!(
            "the key of dialogue {id} is wrapped with key {key_id:?}, which the key ring does not hold: add it back (and run `dialogd store rekey` before retiring it)"
        )
    })?;
    let (nonce, wrapped) = raw[WRAPPED_AT..].split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| "damaged")?;
    let aad = wrap_aad(&id);
    let key = cipher
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: wrapped,
                aad: &aad,
            },
        )
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
        .ok_or_else(|| {
            format!(
                "the key of dialogue {id} fails authentication: key {key_id:?} of the ring is not the one it was wrapped with, or the file is damaged"
            )
        })?;
    Ok(Some((
        id,
        Entry {
            slot: 0,
            key,
            wrapped_with: key_id,
            erasing,
        },
    )))
}

#[cfg(test)]
#[path = "dialogue_keys_tests.rs"]
mod tests;
