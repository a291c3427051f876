//! The domain parts a server is made of, built from validated settings:
//! who may call, the engine over the opened stores, and the request limits.

use super::StartupError;
use crate::auth::jwt::{JwtIssuer, JwtVerifier};
use crate::auth::networks::Networks;
use crate::auth::{Authenticator, Principal, keys};
use crate::backend::Tesseract;
use crate::config::{AuthMode, AuthSettings, ImageTextSettings, Settings};
use crate::dialogue::content_filter::ContentFilter;
use crate::dialogue::ports::DialogueStore;
use crate::dialogue::ports::ImageReader;
use crate::engine::Engine;
use crate::engine::image_text::ModelReader;
use crate::engine::reply_cache::ReplyCache;
use crate::engine::rules::RuleBook;
use crate::engine::semantic_cache::SemanticCache;
use crate::limits::RateLimits;
use crate::router::Router;
use crate::store::Shared;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// The authenticator of `auth.mode = "required"`; `None` when auth is off.
pub fn authenticator(settings: &Settings) -> Result<Option<Arc<Authenticator>>, StartupError> {
    match settings.auth.mode {
        AuthMode::None => {
            tracing::warn!(
                listen = %settings.server.listen,
                "AUTHENTICATION IS OFF (auth.mode = \"none\"): every caller acts as the local principal with all roles. For local development only."
            );
            Ok(None)
        }
        AuthMode::Required => {
            let built = authenticator_of(&settings.auth).map_err(StartupError::Auth)?;
            Ok(Some(Arc::new(built)))
        }
    }
}

/// Keys and JWT keys of validated settings (hashes parse, files exist).
fn authenticator_of(settings: &AuthSettings) -> Result<Authenticator, String> {
    let mut authenticator = Authenticator::new(settings.token_ttl_secs);
    for k in &settings.api_keys {
        let hash = keys::parse_hash(&k.hash)
            .ok_or_else(|| format!("auth.api_keys {:?}: bad hash", k.id))?;
        let principal = Principal::new(
            k.principal.clone().unwrap_or_else(|| k.id.clone()),
            k.tenant.clone(),
            k.roles.iter().copied().collect(),
            k.scopes.as_ref().map(|s| s.iter().copied().collect()),
        );
        authenticator.add_key(k.id.clone(), hash, principal, k.limits()?);
    }
    for (principal, networks) in &settings.principal_networks {
        let field = format!("auth.principal_networks.{principal}");
        authenticator.restrict_principal(principal.clone(), Networks::parse(&field, networks)?);
    }
    let jwt = &settings.jwt;
    let secret = jwt
        .hs256_secret_env
        .as_deref()
        .and_then(|var| std::env::var(var).ok())
        .filter(|s| !s.is_empty());
    let mut verifier = JwtVerifier::new(
        &jwt.issuer,
        &jwt.audience,
        secret.as_deref().map(str::as_bytes),
    );
    for (path, algorithm) in [
        (&jwt.rs256_public_key_file, jsonwebtoken::Algorithm::RS256),
        (&jwt.es256_public_key_file, jsonwebtoken::Algorithm::ES256),
    ] {
        if let Some(path) = path {
            verifier
                .add_pem(path, algorithm)
                .map_err(|e| e.to_string())?;
        }
    }
    if let Some(path) = &jwt.jwks_file {
        verifier.add_jwks(path).map_err(|e| e.to_string())?;
    }
    let issuer = secret
        .as_deref()
        .map(|s| JwtIssuer::new(&jwt.issuer, &jwt.audience, s.as_bytes()));
    authenticator.set_jwt(jwt.any_key().then_some(verifier), issuer);
    Ok(authenticator)
}

/// The engine over `store`, the request limits and the traffic rules the
/// engine follows; with `shared` (Redis), callers' limits and dialogue
/// locks hold across replicas.
pub fn engine(
    settings: &Settings,
    store: Arc<dyn DialogueStore>,
    router: Arc<Router>,
    shared: Option<Shared>,
    tasks: TaskTracker,
) -> Result<(Engine, RateLimits, Arc<RuleBook>), StartupError> {
    let filter = ContentFilter::new(
        &settings.content_filter.blocked_terms,
        settings.content_filter.check_output,
    )
    .map_err(StartupError::ContentFilter)?;
    let cache = ReplyCache::new(&settings.cache);
    let limits = &settings.limits;
    let rules = settings
        .initial_rules()
        .map_err(|e| StartupError::Rules(e.to_string()))?;
    let source = settings.rules.file.as_deref().unwrap_or("config");
    let rules = Arc::new(RuleBook::new(&rules, source).map_err(StartupError::Rules)?);
    let mut engine = Engine::new(store, router.clone(), limits.clone(), filter, cache, tasks)
        .with_rules(rules.clone());
    if let Some(reader) = image_reader(settings, router) {
        engine = engine.with_image_reader(reader);
    }
    let semantic = settings
        .models
        .iter()
        .filter_map(|m| Some((m.name.clone(), m.semantic_cache.clone()?)))
        .collect();
    if let Some(cache) = SemanticCache::new(semantic) {
        engine = engine.with_semantic_cache(cache);
    }
    let mut rate_limits = RateLimits::new(
        limits.requests_per_second,
        limits.request_burst,
        limits.max_in_flight,
    )
    .with_adaptive_limit(&limits.adaptive_concurrency);
    if let Some(shared) = shared {
        engine = engine
            .with_token_ledger(shared.tokens)
            .with_shared_leases(shared.leases.clone(), shared.leases);
        rate_limits = rate_limits.shared_through(shared.requests);
    }
    Ok((engine, rate_limits, rules))
}

/// The `[image_text]` step, when configured.
fn image_reader(settings: &Settings, router: Arc<Router>) -> Option<Arc<dyn ImageReader>> {
    Some(match settings.image_text.as_ref()? {
        ImageTextSettings::Tesseract {
            command,
            languages,
            timeout_ms,
        } => Arc::new(Tesseract::new(
            command,
            languages,
            Duration::from_millis(*timeout_ms),
        )),
        ImageTextSettings::Model { model, instruction } => {
            Arc::new(ModelReader::new(router, model, instruction))
        }
    })
}
