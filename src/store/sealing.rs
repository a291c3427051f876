//! Encryption at rest: record values sealed with AES-256-GCM before they
//! reach either store. A sealed value is text (Redis values are strings):
//! `\x01s1:{key id}:{base64(nonce ‖ ciphertext ‖ tag)}`, the nonce random
//! per record; the record's key (without a deployment prefix) is the
//! associated data, so a sealed value moved under another key — another
//! dialogue's, another tenant's — fails authentication instead of being
//! served there. A value without the prefix is a record written before
//! encryption was turned on: read as it is, sealed by `store rekey`.
//!
//! The key ring comes from a file or an environment variable, never the
//! config file: entries `id:base64(32 bytes)`, one per line or
//! comma-separated; the config's `primary` names the key new writes use.
//! The store keeps a key-check record (`KeyCheck`): per key id in use, a
//! value sealed with it, so a missing or wrong key is a start-up error,
//! not a stream of damaged reads.

use super::dialogue_keys::{self, DialogueKeys};
pub use super::key_ring::KeyRing;
use aes_gcm::Nonce;
use aes_gcm::aead::{Aead, Payload};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

const PREFIX: &[u8] = b"\x01s1:";
/// A value sealed with its dialogue's data key: `\x01d1:{dialogue id}:{base64}`.
const DIALOGUE_PREFIX: &[u8] = b"\x01d1:";
const NONCE_LEN: usize = 12;

/// Why a sealed value could not be opened (or a key ring not read).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SealError {
    #[error("record {0} is sealed with key {1:?}, which the key ring does not hold")]
    UnknownKey(String, String),
    #[error(
        "record {0} fails authentication: tampered with, moved, or sealed with another key of the same id"
    )]
    Tampered(String),
    #[error("record {0} is encrypted, but no key ring is configured (store.encryption)")]
    NoKeyRing(String),
    #[error("record {0} is not a well-formed sealed value")]
    Malformed(String),
    #[error("record {0} belongs to an erased dialogue: its data key was destroyed")]
    Shredded(String),
    #[error(
        "record {0} is sealed with a per-dialogue key, but store.encryption.dialogue_key_file is not set"
    )]
    NoDialogueKeys(String),
}

impl From<SealError> for crate::dialogue::ports::StoreError {
    fn from(e: SealError) -> Self {
        crate::dialogue::ports::StoreError::Corrupt(e.to_string())
    }
}

/// Seals and opens record values; without a key ring it passes them
/// through (and refuses sealed ones). Cheap to clone.
#[derive(Clone, Default)]
pub struct Sealer {
    ring: Option<Arc<KeyRing>>,
    /// Per-dialogue data keys (`dialogue_keys`), when configured.
    dialogue_keys: Option<Arc<DialogueKeys>>,
}

/// A record key as errors show it (`\0` separators as `/`).
fn readable(aad: &[u8]) -> String {
    String::from_utf8_lossy(aad).replace('\0', "/")
}

impl Sealer {
    /// The sealer `settings` configure: a clear error for a missing file
    /// or variable, a malformed key, or a primary not in the ring.
    pub fn from_settings(settings: &crate::config::EncryptionSettings) -> Result<Sealer, String> {
        let ring = match settings.key_ring_text()? {
            None => None,
            Some((text, primary)) => Some(
                KeyRing::parse(&text, &primary).map_err(|e| format!("store.encryption: {e}"))?,
            ),
        };
        Ok(Sealer::new(ring))
    }

    pub fn new(ring: Option<KeyRing>) -> Sealer {
        Sealer {
            ring: ring.map(Arc::new),
            dialogue_keys: None,
        }
    }

    /// This sealer with per-dialogue data keys kept in `path` (the ring
    /// wraps them).
    pub fn with_dialogue_keys(mut self, path: &std::path::Path) -> Result<Sealer, String> {
        let ring = self.ring.clone().ok_or(
            "store.encryption.dialogue_key_file needs a key ring (key_file or keys_env) to wrap the keys",
        )?;
        self.dialogue_keys = Some(Arc::new(DialogueKeys::open(path, ring)?));
        Ok(self)
    }

    pub fn dialogue_keys(&self) -> Option<&Arc<DialogueKeys>> {
        self.dialogue_keys.as_ref()
    }

    /// `plain` sealed for the record `aad` of `dialogue`: with the
    /// dialogue's data key when per-dialogue keys are on (it must exist:
    /// `DialogueKeys::ensure`), else with the primary key.
    pub fn seal_in(
        &self,
        dialogue: Option<&str>,
        aad: &[u8],
        plain: Vec<u8>,
    ) -> Result<Vec<u8>, SealError> {
        let (Some(keys), Some(dialogue)) = (&self.dialogue_keys, dialogue) else {
            return Ok(self.seal(aad, plain));
        };
        let key = keys
            .get(dialogue)
            .ok_or_else(|| SealError::Shredded(readable(aad)))?;
        let sealed = dialogue_keys::seal_with_key(&key, aad, &plain);
        let mut out = Vec::with_capacity(
            DIALOGUE_PREFIX.len() + dialogue.len() + 1 + sealed.len() * 4 / 3 + 4,
        );
        out.extend_from_slice(DIALOGUE_PREFIX);
        out.extend_from_slice(dialogue.as_bytes());
        out.push(b':');
        out.extend_from_slice(STANDARD_NO_PAD.encode(&sealed).as_bytes());
        Ok(out)
    }

    /// Opens a value sealed with a dialogue's data key (`rest`: what
    /// follows the prefix).
    fn open_in_dialogue(&self, aad: &[u8], rest: &[u8]) -> Result<Vec<u8>, SealError> {
        let keys = self
            .dialogue_keys
            .as_ref()
            .ok_or_else(|| SealError::NoDialogueKeys(readable(aad)))?;
        let malformed = || SealError::Malformed(readable(aad));
        let colon = rest.iter().position(|b| *b == b':').ok_or_else(malformed)?;
        let dialogue = std::str::from_utf8(&rest[..colon]).map_err(|_| malformed())?;
        let key = keys
            .get(dialogue)
            .ok_or_else(|| SealError::Shredded(readable(aad)))?;
        let sealed = STANDARD_NO_PAD
            .decode(&rest[colon + 1..])
            .map_err(|_| malformed())?;
        dialogue_keys::open_with_key(&key, aad, &sealed)
            .ok_or_else(|| SealError::Tampered(readable(aad)))
    }

    /// The dialogue whose data key sealed `stored`, if one did.
    pub fn sealed_in_dialogue(stored: &[u8]) -> Option<&str> {
        let rest = stored.strip_prefix(DIALOGUE_PREFIX)?;
        let colon = rest.iter().position(|b| *b == b':')?;
        std::str::from_utf8(&rest[..colon]).ok()
    }

    pub fn enabled(&self) -> bool {
        self.ring.is_some()
    }

    /// The key id new writes use, if sealing.
    pub fn primary(&self) -> Option<&str> {
        self.ring.as_deref().map(KeyRing::primary)
    }

    /// `plain` sealed for the record `aad` with the primary key.
    pub fn seal(&self, aad: &[u8], plain: Vec<u8>) -> Vec<u8> {
        match &self.ring {
            None => plain,
            Some(ring) => seal_with(ring, aad, &plain),
        }
    }

    /// `seal` of text (Redis values are strings; sealed values are text).
    pub fn seal_text(&self, aad: &[u8], plain: String) -> String {
        match &self.ring {
            None => plain,
            Some(_) => String::from_utf8(self.seal(aad, plain.into_bytes())).unwrap_or_default(),
        }
    }

    /// The plain value of the record `aad` as stored (`stored` itself when
    /// it was never sealed).
    pub fn open<'a>(&self, aad: &[u8], stored: &'a [u8]) -> Result<Cow<'a, [u8]>, SealError> {
        if let Some(rest) = stored.strip_prefix(DIALOGUE_PREFIX) {
            return self.open_in_dialogue(aad, rest).map(Cow::Owned);
        }
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(Cow::Borrowed(stored));
        };
        let ring = self
            .ring
            .as_deref()
            .ok_or_else(|| SealError::NoKeyRing(readable(aad)))?;
        let malformed = || SealError::Malformed(readable(aad));
        let colon = rest.iter().position(|b| *b == b':').ok_or_else(malformed)?;
        let key_id = std::str::from_utf8(&rest[..colon]).map_err(|_| malformed())?;
        let cipher = ring
            .cipher(key_id)
            .ok_or_else(|| SealError::UnknownKey(readable(aad), key_id.to_owned()))?;
        let sealed = STANDARD_NO_PAD
            .decode(&rest[colon + 1..])
            .map_err(|_| malformed())?;
        if sealed.len() < NONCE_LEN {
            return Err(malformed());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| malformed())?;
        cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map(Cow::Owned)
            .map_err(|_| SealError::Tampered(readable(aad)))
    }

    /// `open` of a text value.
    pub fn open_text<'a>(&self, aad: &[u8], stored: &'a str) -> Result<Cow<'a, str>, SealError> {
        match self.open(aad, stored.as_bytes())? {
            Cow::Borrowed(_) => Ok(Cow::Borrowed(stored)),
            Cow::Owned(bytes) => String::from_utf8(bytes)
                .map(Cow::Owned)
                .map_err(|_| SealError::Malformed(readable(aad))),
        }
    }

    /// Whether `stored` needs sealing again for the ring to lose its other
    /// keys: never sealed, or sealed with a key that is not the primary.
    pub fn needs_rekey(&self, stored: &[u8]) -> bool {
        let Some(primary) = self.primary() else {
            return false;
        };
        // A data key's wrapping is renewed in the key file (`rewrap`).
        if stored.starts_with(DIALOGUE_PREFIX) {
            return false;
        }
        if self.dialogue_keys.is_some() {
            return true;
        }
        match stored.strip_prefix(PREFIX) {
            None => true,
            Some(rest) => !rest.starts_with(format!("{primary}:").as_bytes()),
        }
    }
}

/// `plain` sealed with the ring's primary key.
fn seal_with(ring: &KeyRing, aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let nonce: [u8; NONCE_LEN] = rand::random();
    let key_id = ring.primary();
    // AES-GCM encryption fails only for messages over 64 GiB; records are
    // bounded far below (request and record size limits).
    let ciphertext = ring
        .primary_cipher()
        .encrypt(&Nonce::from(nonce), Payload { msg: plain, aad })
        .unwrap_or_default();
    let mut sealed = Vec::with_capacity(NONCE_LEN + ciphertext.len());
    sealed.extend_from_slice(&nonce);
    sealed.extend_from_slice(&ciphertext);
    let mut out = Vec::with_capacity(PREFIX.len() + key_id.len() + 1 + sealed.len() * 4 / 3 + 4);
    out.extend_from_slice(PREFIX);
    out.extend_from_slice(key_id.as_bytes());
    out.push(b':');
    out.extend_from_slice(STANDARD_NO_PAD.encode(&sealed).as_bytes());
    out
}

/// The key-check record: for each key id records may be sealed with, a
/// value sealed with that key (JSON, no secrets).
pub const KEY_CHECK_AAD: &[u8] = b"dialogd key check";
const CANARY: &[u8] = b"dialogd";

#[derive(serde::Serialize, serde::Deserialize, Default)]
struct KeyCheck {
    keys: BTreeMap<String, String>,
    /// Whether records may be sealed with per-dialogue keys, which then
    /// cannot be read without the dialogue key file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    dialogue_keys: bool,
}

impl Sealer {
    /// Checks the store's key-check record against the ring: every key in
    /// use must be held and be the same key. Returns the record to write
    /// (the primary added, or `only_primary` after a rekey), if it changes.
    pub fn check_keys(
        &self,
        stored: Option<&[u8]>,
        only_primary: bool,
    ) -> Result<Option<Vec<u8>>, String> {
        let check: KeyCheck = match stored {
            None => KeyCheck::default(),
            Some(bytes) => serde_json::from_slice(bytes)
                .map_err(|e| format!("the store's key-check record is unreadable: {e}"))?,
        };
        let Some(ring) = &self.ring else {
            return match check.keys.keys().next() {
                None => Ok(None),
                Some(_) => Err(format!(
                    "the store is encrypted (keys {}), but store.encryption configures no key ring",
                    check.keys.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
            };
        };
        for (id, sealed) in &check.keys {
            // Each entry must be sealed, and with the key it names.
            let names_its_key = sealed
                .as_bytes()
                .strip_prefix(PREFIX)
                .is_some_and(|rest| rest.starts_with(format!("{id}:").as_bytes()));
            if !names_its_key {
                return Err(format!(
                    "the store's key-check entry for key {id:?} is damaged"
                ));
            }
            match self.open(KEY_CHECK_AAD, sealed.as_bytes()) {
                Ok(plain) if plain.as_ref() == CANARY => {}
                Ok(_)
                | Err(SealError::Tampered(_))
                | Err(SealError::Malformed(_))
                | Err(SealError::Shredded(_))
                | Err(SealError::NoDialogueKeys(_)) => {
                    return Err(format!(
                        "key {id:?} of the key ring is not the key the store's records were sealed with"
                    ));
                }
                Err(SealError::UnknownKey(..)) | Err(SealError::NoKeyRing(_)) => {
                    return Err(format!(
                        "records are sealed with key {id:?}, which the key ring does not hold: add it back (and run `dialogd store rekey` before retiring it)"
                    ));
                }
            }
        }
        if check.dialogue_keys && self.dialogue_keys.is_none() {
            return Err("records are sealed with per-dialogue keys: set store.encryption.dialogue_key_file to the dialogue key file".into());
        }
        let primary = ring.primary().to_owned();
        let mut next = KeyCheck {
            dialogue_keys: check.dialogue_keys || self.dialogue_keys.is_some(),
            ..KeyCheck::default()
        };
        if !only_primary {
            next.keys = check.keys.clone();
        }
        let canary = check.keys.get(&primary).cloned().unwrap_or_else(|| {
            String::from_utf8(seal_with(ring, KEY_CHECK_AAD, CANARY)).unwrap_or_default()
        });
        next.keys.insert(primary, canary);
        if stored.is_some()
            && next.keys.keys().eq(check.keys.keys())
            && next.dialogue_keys == check.dialogue_keys
        {
            return Ok(None);
        }
        serde_json::to_vec(&next)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
#[path = "sealing_tests.rs"]
mod tests;
