//! Routing: which backend serves a public model name.

use crate::backend::{self, ModelBackend};
use crate::config::Settings;
use std::collections::HashMap;
use std::sync::Arc;

/// A public model and the backend that serves it.
#[derive(Clone)]
pub struct ModelRoute {
    pub name: String,
    pub upstream_model: String,
    pub context_tokens: u32,
    pub max_history_turns: usize,
    pub backend: Arc<dyn ModelBackend>,
}

pub struct Router {
    routes: Vec<ModelRoute>,
    by_name: HashMap<String, usize>,
    default_model: String,
}

impl Router {
    /// Builds every configured backend once and maps models onto them.
    /// `settings` must have passed `Settings::validate`.
    pub fn from_settings(settings: &Settings) -> Router {
        let backends: HashMap<&str, Arc<dyn ModelBackend>> = settings
            .backends
            .iter()
            .map(|(name, cfg)| (name.as_str(), backend::build(name, cfg)))
            .collect();
        let routes: Vec<ModelRoute> = settings
            .models
            .iter()
            .filter_map(|m| {
                let backend = backends.get(m.backend.as_str())?.clone();
                Some(ModelRoute {
                    name: m.name.clone(),
                    upstream_model: m.upstream_model.clone().unwrap_or_else(|| m.name.clone()),
                    context_tokens: m.context_tokens,
                    max_history_turns: m.max_history_turns,
                    backend,
                })
            })
            .collect();
        let by_name = routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();
        Router {
            routes,
            by_name,
            default_model: settings.default_model.clone(),
        }
    }

    pub fn route(&self, model: &str) -> Option<&ModelRoute> {
        self.by_name.get(model).map(|&i| &self.routes[i])
    }

    pub fn default_model(&self) -> &str {
        &self.default_model
    }

    /// Every model, in configuration order.
    pub fn models(&self) -> &[ModelRoute] {
        &self.routes
    }

    pub fn model_names(&self) -> Vec<&str> {
        self.routes.iter().map(|r| r.name.as_str()).collect()
    }
}
