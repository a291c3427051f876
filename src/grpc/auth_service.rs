//! `dialogue.v1.AuthService` handlers.

use crate::auth::{AuthError, Authenticator};
use crate::failure::Failure;
use crate::grpc::pb::dialogue::v1 as pb;
use crate::grpc::pb::dialogue::v1::auth_service_server::AuthService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AuthGrpc {
    /// `None` when auth.mode = "none": there is nothing to issue tokens for.
    authenticator: Option<Arc<Authenticator>>,
}

impl AuthGrpc {
    pub fn new(authenticator: Option<Arc<Authenticator>>) -> AuthGrpc {
        AuthGrpc { authenticator }
    }
}

#[tonic::async_trait]
impl AuthService for AuthGrpc {
    async fn issue_token(
        &self,
        request: Request<pb::IssueTokenRequest>,
    ) -> Result<Response<pb::IssueTokenResponse>, Status> {
        if let Some(notes) = request.extensions().get::<crate::audit::AuditNotes>() {
            notes.set_resource(&format!("clients/{}", request.get_ref().client_id));
        }
        let client = crate::middleware::client_address::ClientAddress::of_grpc(&request);
        let req = request.into_inner();
        if !matches!(req.grant_type.as_str(), "" | "client_credentials") {
            return Err(Failure::invalid("grant_type", "must be client_credentials").into());
        }
        let authenticator = self
            .authenticator
            .as_ref()
            .ok_or(AuthError::IssuanceDisabled)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let issued = authenticator.issue_token(
            &req.client_id,
            &req.client_secret,
            &req.scopes,
            client,
            now,
        )?;
        Ok(Response::new(pb::IssueTokenResponse {
            access_token: issued.access_token,
            token_type: "Bearer".into(),
            expires_in: i64::try_from(issued.expires_in_secs).unwrap_or(i64::MAX),
            scopes: issued
                .scopes
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
        }))
    }
}
