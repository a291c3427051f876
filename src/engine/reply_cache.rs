//! An exact-match cache of model replies. The key is a hash of the tenant,
//! the public model, every generation parameter and the exact prompt, so a
//! reply is only ever served to the same tenant for the very same request.
//! Only deterministic requests use it (temperature 0 or a seed) unless a
//! request opts in. Entries expire after a TTL, the total text is bounded
//! (least recently used first out), and deleting a dialogue erases the
//! replies it produced.

use crate::backend::{ModelReply, ModelRequest};
use crate::config::CacheSettings;
use crate::dialogue::model::{CachePolicy, DialogueId, GenerationParams};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// 128 bits of SHA-256 over everything that shapes a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(u128);

#[derive(Debug, Clone)]
pub struct CachedReply {
    pub reply: ModelReply,
    pub backend: String,
    stored: Instant,
}

#[derive(Clone)]
struct TextWeight;

impl quick_cache::Weighter<CacheKey, Arc<CachedReply>> for TextWeight {
    fn weight(&self, _key: &CacheKey, value: &Arc<CachedReply>) -> u64 {
        // Text plus a fixed cost per entry, so tiny replies still count.
        value.reply.text.len() as u64 + 256
    }
}

pub struct ReplyCache {
    entries: quick_cache::sync::Cache<CacheKey, Arc<CachedReply>, TextWeight>,
    ttl: Duration,
    /// The keys each dialogue's turns stored, for erasure.
    by_dialogue: Mutex<HashMap<DialogueId, Vec<CacheKey>>>,
}

impl ReplyCache {
    /// `None` when the cache is off.
    pub fn new(settings: &CacheSettings) -> Option<ReplyCache> {
        if !settings.enabled || settings.max_bytes == 0 {
            return None;
        }
        let estimated_items = (settings.max_bytes / 1024).max(16);
        Some(ReplyCache {
            entries: quick_cache::sync::Cache::with_weighter(
                estimated_items,
                settings.max_bytes as u64,
                TextWeight,
            ),
            ttl: Duration::from_secs(settings.ttl_secs),
            by_dialogue: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a request may be answered from (and fill) the cache.
    pub fn applies_to(params: &GenerationParams) -> bool {
        match params.cache {
            CachePolicy::Bypass => false,
            CachePolicy::Use => true,
            CachePolicy::Deterministic => params.temperature == Some(0.0) || params.seed.is_some(),
        }
    }

    pub fn key(tenant: &str, model: &str, request: &ModelRequest) -> CacheKey {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(tenant.as_bytes());
        field(model.as_bytes());
        // Every parameter but the cache policy itself (the model is above):
        // tools, tool choice and response format included, as their stored
        // form (JSON) says them.
        let params = GenerationParams {
            cache: CachePolicy::Deterministic,
            model: None,
            ..request.params.clone()
        };
        field(&serde_json::to_vec(&params).unwrap_or_default());
        for m in &request.messages {
            field(&[m.role as u8]);
            // Every part: text, tool calls and results, images (by URL or
            // their bytes).
            field(&serde_json::to_vec(&m.content).unwrap_or_default());
        }
        let digest = h.finalize();
        let mut bits = [0u8; 16];
        bits.copy_from_slice(&digest[..16]);
        CacheKey(u128::from_be_bytes(bits))
    }

    pub fn get(&self, key: CacheKey) -> Option<Arc<CachedReply>> {
        let found = self
            .entries
            .get(&key)
            .filter(|e| e.stored.elapsed() < self.ttl);
        crate::meter::cache_lookup(found.is_some());
        found
    }

    /// Keeps `reply` for `key`, remembering that `dialogue` produced it.
    pub fn insert(&self, key: CacheKey, dialogue: &DialogueId, reply: ModelReply, backend: String) {
        self.entries.insert(
            key,
            Arc::new(CachedReply {
                reply,
                backend,
                stored: Instant::now(),
            }),
        );
        self.by_dialogue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(dialogue.clone())
            .or_default()
            .push(key);
        crate::meter::cache_entries(self.entries.len() as u64);
    }

    /// Erases every reply `dialogue` stored (a deleted dialogue leaves no
    /// text behind, even in the cache).
    pub fn forget_dialogue(&self, dialogue: &DialogueId) {
        let keys = self
            .by_dialogue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(dialogue);
        for key in keys.into_iter().flatten() {
            self.entries.remove(&key);
        }
        crate::meter::cache_entries(self.entries.len() as u64);
    }

    /// Drops index entries of replies already evicted or expired.
    pub fn prune(&self) {
        let mut index = self.by_dialogue.lock().unwrap_or_else(|p| p.into_inner());
        index.retain(|_, keys| {
            keys.retain(|k| {
                self.entries
                    .peek(k)
                    .is_some_and(|e| e.stored.elapsed() < self.ttl)
            });
            !keys.is_empty()
        });
        crate::meter::cache_entries(self.entries.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialogue::model::PromptMessage;
    use crate::dialogue::model::{FinishReason, Role};

    fn request(text: &str, temperature: Option<f32>) -> ModelRequest {
        ModelRequest {
            messages: vec![PromptMessage::text(Role::User, text)],
            params: GenerationParams {
                temperature,
                ..Default::default()
            },
        }
    }

    fn reply(text: &str) -> ModelReply {
        ModelReply::text(text.into(), FinishReason::Stop)
    }

    #[test]
    fn keys_differ_by_tenant_model_parameters_and_prompt() {
        let base = ReplyCache::key("t", "m", &request("hi", Some(0.0)));
        assert_eq!(base, ReplyCache::key("t", "m", &request("hi", Some(0.0))));
        assert_ne!(base, ReplyCache::key("u", "m", &request("hi", Some(0.0))));
        assert_ne!(base, ReplyCache::key("t", "n", &request("hi", Some(0.0))));
        assert_ne!(base, ReplyCache::key("t", "m", &request("hi!", Some(0.0))));
        assert_ne!(base, ReplyCache::key("t", "m", &request("hi", Some(0.5))));
        // Tools and response formats are part of the request.
        let mut with_tools = request("hi", Some(0.0));
        with_tools
            .params
            .tools
            .push(crate::dialogue::model::ToolSpec {
                name: "lookup".into(),
                description: String::new(),
                parameters: None,
                strict: false,
            });
        assert_ne!(base, ReplyCache::key("t", "m", &with_tools));
        let mut json = request("hi", Some(0.0));
        json.params.response_format = crate::dialogue::model::ResponseFormat::JsonObject;
        assert_ne!(base, ReplyCache::key("t", "m", &json));
        // Fields cannot run together.
        assert_ne!(
            ReplyCache::key("ab", "c", &request("x", None)),
            ReplyCache::key("a", "bc", &request("x", None))
        );
    }

    #[test]
    fn only_deterministic_or_opted_in_requests_apply() {
        let mut p = GenerationParams::default();
        assert!(!ReplyCache::applies_to(&p));
        p.temperature = Some(0.0);
        assert!(ReplyCache::applies_to(&p));
        p.temperature = Some(0.7);
        assert!(!ReplyCache::applies_to(&p));
        p.seed = Some(1);
        assert!(ReplyCache::applies_to(&p));
        p.cache = CachePolicy::Bypass;
        assert!(!ReplyCache::applies_to(&p));
        p.seed = None;
        p.cache = CachePolicy::Use;
        assert!(ReplyCache::applies_to(&p));
    }

    #[test]
    fn entries_expire_are_bounded_and_erased_with_their_dialogue() {
        let settings = CacheSettings {
            enabled: true,
            max_bytes: 4096,
            ttl_secs: 3600,
        };
        let cache = ReplyCache::new(&settings).unwrap();
        let d1 = DialogueId::parse("d1").unwrap();
        let k1 = ReplyCache::key("t", "m", &request("one", Some(0.0)));
        cache.insert(k1, &d1, reply("first"), "b".into());
        assert_eq!(cache.get(k1).unwrap().reply.text, "first");
        cache.forget_dialogue(&d1);
        assert!(cache.get(k1).is_none());
        // The byte bound holds: 100 replies of 1 KiB do not all stay.
        for i in 0..100 {
            let k = ReplyCache::key("t", "m", &request(&i.to_string(), Some(0.0)));
            cache.insert(k, &d1, reply(&"x".repeat(1024)), "b".into());
        }
        assert!(cache.entries.weight() <= 4096, "{}", cache.entries.weight());
        cache.prune();
        let indexed = cache.by_dialogue.lock().unwrap()[&d1].len();
        assert_eq!(indexed, cache.entries.len());
        // A zero TTL serves nothing.
        let expired = ReplyCache::new(&CacheSettings {
            ttl_secs: 0,
            ..settings
        })
        .unwrap();
        expired.insert(k1, &d1, reply("old"), "b".into());
        assert!(expired.get(k1).is_none());
    }
}
