//! Authentication and scope checks for every call, in one place: the
//! method's rule comes from `auth::policy`, the caller from the
//! `authorization` metadata, and the `Principal` is handed to the handler in
//! the request's extensions. Ownership of dialogues is the engine's check.

use crate::audit::AuditNotes;
use crate::auth::policy::{self, Access};
use crate::auth::{AuthError, Authenticator, Principal, Role};
use crate::tls::{PeerInfo, certificate_subject};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::Status;
use tower::{Layer, Service};

/// `None` authenticator: `auth.mode = "none"`, every caller is local.
#[derive(Clone)]
pub struct AuthLayer {
    authenticator: Option<Arc<Authenticator>>,
    /// Set with mTLS: callers without a bearer credential are the subject
    /// of their client certificate, with these roles.
    client_cert_roles: Option<BTreeSet<Role>>,
}

impl AuthLayer {
    pub fn new(
        authenticator: Option<Arc<Authenticator>>,
        client_cert_roles: Option<BTreeSet<Role>>,
    ) -> AuthLayer {
        AuthLayer {
            authenticator,
            client_cert_roles,
        }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            authenticator: self.authenticator.clone(),
            client_cert_roles: self.client_cert_roles.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    authenticator: Option<Arc<Authenticator>>,
    client_cert_roles: Option<BTreeSet<Role>>,
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Status {
        match e {
            AuthError::Missing | AuthError::Invalid => Status::unauthenticated(e.to_string()),
            AuthError::MissingScope(_) => Status::permission_denied(e.to_string()),
            AuthError::ScopeNotGranted(_) => Status::invalid_argument(e.to_string()),
            AuthError::IssuanceDisabled => Status::failed_precondition(e.to_string()),
        }
    }
}

impl<S> AuthService<S> {
    /// The caller of a method needing `access`, or why not.
    fn admit(
        &self,
        access: Access,
        authorization: Option<&str>,
        peer: Option<&PeerInfo>,
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
            (None, Some(auth)) => auth.authenticate(authorization)?,
        };
        match access {
            Access::Scope(scope) if !principal.has_scope(scope) => {
                Err(AuthError::MissingScope(scope))
            }
            _ => Ok(Some(principal)),
        }
    }
}

impl<S, B> Service<http::Request<B>> for AuthService<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = super::LayerFuture<S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let access = policy::required(request.uri().path());
        let authorization = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self.admit(
            access,
            authorization,
            request.extensions().get::<PeerInfo>(),
        ) {
            Ok(principal) => {
                if let Some(p) = principal {
                    if let Some(notes) = request.extensions().get::<AuditNotes>() {
                        notes.set_caller(&p.id, &p.tenant);
                    }
                    request.extensions_mut().insert(p);
                }
                let mut inner = super::take_ready(&mut self.inner);
                Box::pin(inner.call(request))
            }
            Err(e) => {
                tracing::debug!(path = request.uri().path(), error = %e, "call refused");
                super::refuse(Status::from(e))
            }
        }
    }
}
