//! A semantic cache of model replies: a reply is reused for a new prompt
//! whose newest message means the same as a cached prompt's — the cosine
//! similarity of their embeddings reaches the model's `threshold` — when
//! everything else is identical. "Everything else" is the namespace: the
//! tenant, the model, every generation parameter (tools and response
//! format included) and every earlier message, hashed as the exact-match
//! cache hashes a prompt; so a reply never crosses tenants, system prompts,
//! tools or conversations. Prompts with images, or whose newest message is
//! not the user's plain text, are not cached; nor are sampled requests
//! that did not opt in (as for the exact cache).
//!
//! The index is in this process: a brute-force scan of the namespace's
//! unit vectors (BENCHMARKS.md has its cost at 10k and 100k entries).
//! Entries expire after `ttl_secs`, at most `max_entries` per model are
//! kept (oldest out first), and erasing a dialogue erases its entries.

use super::reply_cache::{CacheKey, ReplyCache};
use crate::backend::{ModelReply, ModelRequest};
use crate::config::SemanticCacheSettings;
use crate::dialogue::model::{ContentPart, DialogueId, Role};
use crate::router::ModelRoute;
use std::collections::{HashMap, VecDeque};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// A prompt that may be answered from, or go into, the semantic cache.
#[derive(Debug, Clone)]
pub struct SemanticQuery {
    pub model: String,
    /// The embeddings model the text goes to.
    pub embedding_model: String,
    namespace: CacheKey,
    /// The newest message's text.
    pub text: String,
    dialogue: DialogueId,
}

/// A cached reply close enough to a query.
pub struct SemanticHit {
    pub reply: ModelReply,
    pub backend: String,
    pub similarity: f32,
}

pub struct SemanticCache {
    /// The models with a semantic cache, and its settings.
    models: HashMap<String, SemanticCacheSettings>,
    index: RwLock<Index>,
}

#[derive(Default)]
struct Index {
    spaces: HashMap<CacheKey, Vec<Entry>>,
    /// Per model, its entries oldest first: (namespace, entry id, expiry).
    order: HashMap<String, VecDeque<(CacheKey, u64, Instant)>>,
    next_id: u64,
}

struct Entry {
    id: u64,
    /// Unit length: a dot product is the cosine similarity.
    vector: Vec<f32>,
    reply: ModelReply,
    backend: String,
    dialogue: DialogueId,
    expires: Instant,
}

impl SemanticCache {
    /// The cache of the models that configure one; `None` when none does.
    pub fn new(models: HashMap<String, SemanticCacheSettings>) -> Option<SemanticCache> {
        (!models.is_empty()).then(|| SemanticCache {
            models,
            index: RwLock::default(),
        })
    }

    /// The query of a model call, when it may use the cache.
    pub fn query(
        &self,
        tenant: &str,
        route: &ModelRoute,
        request: &ModelRequest,
        dialogue: &DialogueId,
    ) -> Option<SemanticQuery> {
        let settings = self.models.get(&route.name)?;
        let (newest, earlier) = request.messages.split_last()?;
        let plain_user_text = newest.role == Role::User
            && newest
                .content
                .iter()
                .all(|p| matches!(p, ContentPart::Text(_)));
        let images = request
            .messages
            .iter()
            .flat_map(|m| &m.content)
            .any(|p| matches!(p, ContentPart::Image(_)));
        if !ReplyCache::applies_to(&request.params) || !plain_user_text || images {
            return None;
        }
        let text = crate::dialogue::content::join_text(&newest.content);
        if text.trim().is_empty() {
            return None;
        }
        let mut context = ModelRequest {
            messages: earlier.to_vec(),
            params: request.params.clone(),
        };
        // The newest message's place, without its words.
        context
            .messages
            .push(crate::dialogue::model::PromptMessage::text(Role::User, ""));
        Some(SemanticQuery {
            model: route.name.clone(),
            embedding_model: settings.embedding_model.clone(),
            namespace: ReplyCache::key(tenant, &route.name, &context),
            text,
            dialogue: dialogue.clone(),
        })
    }

    /// The closest live reply of the query's namespace, if close enough.
    pub fn lookup(&self, query: &SemanticQuery, vector: &[f32]) -> Option<SemanticHit> {
        let threshold = self.models.get(&query.model)?.threshold;
        let unit = unit(vector)?;
        let index = self.index.read().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let best = index
            .spaces
            .get(&query.namespace)?
            .iter()
            .filter(|e| e.expires > now && e.vector.len() == unit.len())
            .map(|e| (dot(&e.vector, &unit), e))
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let hit = best.filter(|(similarity, _)| *similarity >= threshold);
        crate::meter::semantic_lookup(hit.as_ref().map(|(s, _)| *s));
        hit.map(|(similarity, e)| SemanticHit {
            reply: e.reply.clone(),
            backend: e.backend.clone(),
            similarity,
        })
    }

    /// Keeps a model's reply to `query`, whose text embeds as `vector`.
    pub fn insert(&self, query: SemanticQuery, vector: &[f32], reply: ModelReply, backend: String) {
        let (Some(settings), Some(unit)) = (self.models.get(&query.model), unit(vector)) else {
            return;
        };
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        index.next_id += 1;
        let id = index.next_id;
        let expires = now + Duration::from_secs(settings.ttl_secs);
        index
            .spaces
            .entry(query.namespace)
            .or_default()
            .push(Entry {
                id,
                vector: unit,
                reply,
                backend,
                dialogue: query.dialogue,
                expires,
            });
        let order = index.order.entry(query.model).or_default();
        order.push_back((query.namespace, id, expires));
        // Oldest out: past the bound, or expired (one TTL per model, so
        // the expired ones are the oldest).
        let mut out = Vec::new();
        while order.len() > settings.max_entries || order.front().is_some_and(|o| o.2 <= now) {
            out.extend(order.pop_front());
        }
        for (space, id, _) in out {
            index.remove(space, |e| e.id == id);
        }
    }

    /// Erases every reply `dialogue` put in the cache.
    pub fn forget_dialogue(&self, dialogue: &DialogueId) {
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        let spaces: Vec<CacheKey> = index.spaces.keys().copied().collect();
        for space in spaces {
            index.remove(space, |e| &e.dialogue == dialogue);
        }
    }
}

impl Index {
    fn remove(&mut self, space: CacheKey, which: impl Fn(&Entry) -> bool) {
        if let Some(entries) = self.spaces.get_mut(&space) {
            entries.retain(|e| !which(e));
            if entries.is_empty() {
                self.spaces.remove(&space);
            }
        }
    }
}

/// `v` scaled to unit length; `None` for a zero vector.
pub fn unit(v: &[f32]) -> Option<Vec<f32>> {
    let norm = dot(v, v).sqrt();
    (norm > 0.0 && norm.is_finite()).then(|| v.iter().map(|x| x / norm).collect())
}

/// Dot product, in eight lanes the compiler vectorizes.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for ((lane, x), y) in lanes.iter_mut().zip(x).zip(y) {
            *lane += x * y;
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::dialogue::model::{FinishReason, GenerationParams, PromptMessage};

    fn cache(max_entries: usize) -> SemanticCache {
        let settings = SemanticCacheSettings {
            embedding_model: "e".into(),
            threshold: 0.9,
            ttl_secs: 3600,
            max_entries,
        };
        SemanticCache::new([("m".to_string(), settings)].into()).unwrap()
    }

    fn query(
        cache: &SemanticCache,
        tenant: &str,
        messages: &[(Role, &str)],
    ) -> Option<SemanticQuery> {
        let route = ModelRoute {
            name: "m".into(),
            context_tokens: 8192,
            max_history_turns: 10,
            summary: None,
            targets: Vec::new(),
            embeddings: false,
        };
        let request = ModelRequest {
            messages: messages
                .iter()
                .map(|(role, text)| PromptMessage::text(*role, *text))
                .collect(),
            params: GenerationParams {
                temperature: Some(0.0),
                ..Default::default()
            },
        };
        cache.query(tenant, &route, &request, &DialogueId::generate())
    }

    fn reply(text: &str) -> ModelReply {
        ModelReply::text(text.into(), FinishReason::Stop)
    }

    #[test]
    fn namespaces_keep_tenants_and_contexts_apart_and_the_bound_holds() {
        let c = cache(2);
        let q = query(
            &c,
            "acme",
            &[(Role::System, "be brief"), (Role::User, "hours?")],
        )
        .unwrap();
        c.insert(q.clone(), &[1.0, 0.0], reply("9 to 5"), "b".into());
        let close = [0.99, 0.1];
        assert_eq!(c.lookup(&q, &close).unwrap().reply.text, "9 to 5");
        assert!(c.lookup(&q, &[0.0, 1.0]).is_none(), "unrelated");
        let other_tenant = query(
            &c,
            "evil",
            &[(Role::System, "be brief"), (Role::User, "hours?")],
        )
        .unwrap();
        assert!(c.lookup(&other_tenant, &close).is_none());
        let other_system = query(
            &c,
            "acme",
            &[(Role::System, "be long"), (Role::User, "hours?")],
        )
        .unwrap();
        assert!(c.lookup(&other_system, &close).is_none());
        // Two more entries: the first (oldest) goes.
        c.insert(q.clone(), &[0.0, 1.0], reply("rain"), "b".into());
        c.insert(q.clone(), &[-1.0, 0.0], reply("no"), "b".into());
        assert!(c.lookup(&q, &close).is_none(), "evicted past max_entries");
        assert_eq!(c.lookup(&q, &[0.0, 1.0]).unwrap().reply.text, "rain");
    }

    #[test]
    fn only_plain_user_text_of_eligible_requests_is_cached() {
        let c = cache(10);
        assert!(query(&c, "t", &[(Role::Assistant, "hi")]).is_none());
        assert!(query(&c, "t", &[(Role::User, "  ")]).is_none());
        assert!(query(&c, "t", &[(Role::User, "hi")]).is_some());
    }

    #[test]
    fn dot_of_unit_vectors_is_the_cosine() {
        let a = unit(&[3.0, 4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]).unwrap();
        assert!((dot(&a, &a) - 1.0).abs() < 1e-6);
        let b = unit(&[0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]).unwrap();
        assert!(dot(&a, &b).abs() < 1e-6);
        assert!(unit(&[0.0; 4]).is_none());
    }
}
