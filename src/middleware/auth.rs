//! Authentication and scope checks for every call, in one place: the
//! method's rule comes from the table of methods, the caller from the
//! `authorization` metadata, and the `Principal` is handed to the handler in
//! the request's extensions. Ownership of dialogues is the engine's check.

use super::Refuse;
use super::call::Resolved;
use super::client_address::ClientAddress;
use super::rpc_table::{Access, Rpc};
use crate::audit::AuditNotes;
use crate::auth::failures::AuthFailures;
use crate::auth::networks::Networks;
use crate::auth::{AuthError, Authenticator, Principal, Role};
use crate::failure::Failure;
use crate::tls::{PeerInfo, certificate_subject};
use std::collections::BTreeSet;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

/// `None` authenticator: `auth.mode = "none"`, every caller is local.
#[derive(Clone)]
pub struct Authentication {
    authenticator: Option<Arc<Authenticator>>,
    refuse: Refuse,
    /// Set with mTLS: callers without a bearer credential are the subject
    /// of their client certificate, with these roles.
    client_cert_roles: Option<BTreeSet<Role>>,
    failures: Arc<AuthFailures>,
    /// `auth.allowed_networks`: every call but health checks.
    allowed_networks: Arc<Networks>,
}

impl Authentication {
    pub fn new(
        authenticator: Option<Arc<Authenticator>>,
        client_cert_roles: Option<BTreeSet<Role>>,
        failures: Arc<AuthFailures>,
        allowed_networks: Networks,
        refuse: Refuse,
    ) -> Authentication {
        Authentication {
            authenticator,
            refuse,
            client_cert_roles,
            failures,
            allowed_networks: Arc::new(allowed_networks),
        }
    }
}

/// The refusal of a caller over the failed-authentication limit.
fn too_many_failures(wait: std::time::Duration) -> Failure {
    crate::meter::rate_limited("auth_failures");
    Failure::limit(
        "TOO_MANY_AUTH_FAILURES",
        "too many failed authentications; retry later",
        wait,
    )
}

/// The API key id a bearer credential names, if it is shaped like a key.
fn key_id(authorization: Option<&str>) -> Option<&str> {
    let (_, token) = authorization?.split_once(' ')?;
    crate::auth::keys::parse(token.trim()).map(|key| key.id)
}

impl Authentication {
    /// The caller of a method needing `access`, or why not.
    fn admit(
        &self,
        access: Access,
        authorization: Option<&str>,
        peer: Option<&PeerInfo>,
        client: Option<IpAddr>,
    ) -> Result<Option<Principal>, AuthError> {
        if access == Access::Public {
            return Ok(None);
        }
        let cert = peer.and_then(|p| p.client_cert.as_ref());
        let from_cert = match (&self.client_cert_roles, authorization, cert) {
            (Some(roles), None, Some(cert)) => certificate_subject(cert)
                .map(|(principal, tenant)| Principal::new(principal, tenant, roles.clone(), None)),
            _ => None,
        };
        let principal = match (from_cert, &self.authenticator) {
            (Some(p), _) => p,
            (None, None) => Principal::local(),
            (None, Some(auth)) => auth.authenticate(authorization, client)?,
        };
        // A client certificate's subject too is held to its principal's
        // networks (keys and tokens were checked before their secrets).
        if let Some(auth) = &self.authenticator
            && !auth.principal_admits(&principal.id, client)
        {
            return Err(AuthError::AddressNotAllowed);
        }
        match access {
            Access::Scope(scope) if !principal.has_scope(scope) => {
                Err(AuthError::MissingScope(scope))
            }
            _ => Ok(Some(principal)),
        }
    }
}

impl super::Around for Authentication {
    fn around<B, E, Next, Fut>(
        &self,
        mut request: http::Request<B>,
        next: Next,
    ) -> super::LayerFuture<E>
    where
        B: Send + 'static,
        E: Send + 'static,
        Next: FnOnce(http::Request<B>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<super::Response, E>> + Send + 'static,
    {
        let call = Resolved::of(&request);
        let access = call.access();
        // Anthropic's SDKs send the key as `x-api-key`, browsers opening a
        // WebSocket as a `dialogd.bearer.<token>` subprotocol: the same
        // credential.
        let api_key_header = request
            .headers()
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                request
                    .headers()
                    .get(http::header::SEC_WEBSOCKET_PROTOCOL)?
                    .to_str()
                    .ok()?
                    .split(',')
                    .find_map(|p| p.trim().strip_prefix("dialogd.bearer."))
            })
            .map(|key| format!("Bearer {key}"));
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .or(api_key_header.as_deref());
        let client = ClientAddress::of(&request);
        // Named only when needed: formatting it for every call costs more
        // than the rest of this check.
        let address = || client.map_or_else(|| "unknown".to_string(), |a| a.to_string());
        let notes = request.extensions().get::<AuditNotes>().cloned();
        let note_refusal = || {
            if let Some(notes) = &notes {
                notes.set_security_refusal();
            }
        };
        let health_check = matches!(call.rpc, Some(Rpc::HealthCheck | Rpc::HealthWatch));
        if !health_check && !self.allowed_networks.admits(client) {
            tracing::info!(address = %address(), call = %call.name, "call refused: address not in auth.allowed_networks");
            return super::refuse_now(&self.refuse, &request, AuthError::AddressNotAllowed.into());
        }
        if access != Access::Public
            && self.failures.counting()
            && let Some(wait) = self.failures.address_blocked(&address())
        {
            note_refusal();
            return super::refuse_now(&self.refuse, &request, too_many_failures(wait));
        }
        match self.admit(
            access,
            authorization,
            request.extensions().get::<PeerInfo>(),
            client,
        ) {
            Ok(principal) => {
                if let Some(p) = principal {
                    if let Some(notes) = request.extensions().get::<AuditNotes>() {
                        notes.set_caller(&p.id, &p.tenant);
                    }
                    request.extensions_mut().insert(p);
                }
                Box::pin(next(request))
            }
            Err(e) => {
                tracing::debug!(path = request.uri().path(), error = %e, "call refused");
                let invalid = matches!(e, AuthError::Invalid);
                let mut failure: Failure = e.into();
                if invalid {
                    // The limit applies from the next try on: the 20th
                    // failure is still UNAUTHENTICATED, the 21st refused.
                    let key_id = key_id(authorization);
                    let over = key_id.and_then(|id| self.failures.key_blocked(id));
                    self.failures.failed(&address(), key_id);
                    if let Some(wait) = over {
                        note_refusal();
                        failure = too_many_failures(wait);
                    }
                }
                super::refuse_now(&self.refuse, &request, failure)
            }
        }
    }
}
