//! The key ring of encryption at rest: every key id that may open
//! records, and the primary that seals (`store::sealing`) and wraps
//! per-dialogue keys (`store::dialogue_keys`).

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::KeyInit;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use std::collections::HashMap;

/// The keys: every id that may open records, and the one that seals.
pub struct KeyRing {
    primary: String,
    /// The primary's cipher, held apart so sealing cannot miss it.
    sealing: Aes256Gcm,
    keys: HashMap<String, Aes256Gcm>,
}

impl KeyRing {
    /// Reads `text` (`id:base64` entries) with `primary` sealing.
    pub fn parse(text: &str, primary: &str) -> Result<KeyRing, String> {
        let mut keys = HashMap::new();
        let entries = text
            .split([',', '\n'])
            .map(str::trim)
            .filter(|e| !e.is_empty() && !e.starts_with('#'));
        for entry in entries {
            let (id, material) = entry
                .split_once(':')
                .ok_or("each key is `id:base64 of 32 bytes`")?;
            let id = id.trim();
            if !crate::auth::keys::valid_id(id) || id.len() > 32 {
                return Err(format!("key id {id:?}: 1 to 32 of a-z, 0-9 and '-'"));
            }
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(material.trim())
                .or_else(|_| STANDARD_NO_PAD.decode(material.trim()))
                .map_err(|_| format!("key {id:?} is not base64"))?;
            let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| {
                format!("key {id:?} must be 32 bytes (AES-256), not {}", bytes.len())
            })?;
            if keys.insert(id.to_owned(), cipher).is_some() {
                return Err(format!("key {id:?} is listed twice"));
            }
        }
        let sealing = keys
            .get(primary)
            .cloned()
            .ok_or_else(|| format!("the primary key {primary:?} is not in the key ring"))?;
        Ok(KeyRing {
            primary: primary.to_owned(),
            sealing,
            keys,
        })
    }

    pub fn primary(&self) -> &str {
        &self.primary
    }

    pub fn primary_cipher(&self) -> &Aes256Gcm {
        &self.sealing
    }

    pub fn cipher(&self, id: &str) -> Option<&Aes256Gcm> {
        self.keys.get(id)
    }

    /// A new random key entry for a ring: `id:base64`.
    pub fn new_entry(id: &str) -> String {
        let key: [u8; 32] = rand::random();
        format!(
            "{id}:{}",
            base64::engine::general_purpose::STANDARD.encode(key)
        )
    }
}
