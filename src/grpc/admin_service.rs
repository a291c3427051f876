//! `dialogue.v1.AdminService` handlers.

use super::convert;
use crate::audit::AuditFilter;
use crate::dialogue::EngineError;
use crate::dialogue::page_token;
use crate::pb::dialogue::v1 as pb;
use crate::pb::dialogue::v1::admin_service_server::AdminService;
use crate::store::DialogueStore;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AdminGrpc {
    store: Arc<dyn DialogueStore>,
}

impl AdminGrpc {
    pub fn new(store: Arc<dyn DialogueStore>) -> AdminGrpc {
        AdminGrpc { store }
    }
}

const AUDIT_SCOPE: &str = "audit";

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let req = request.into_inner();
        let filter = AuditFilter {
            from: req.start_time.as_ref().and_then(convert::time_from_pb),
            to: req.end_time.as_ref().and_then(convert::time_from_pb),
            principal: Some(req.principal).filter(|p| !p.is_empty()),
            action: Some(req.action).filter(|a| !a.is_empty()),
        };
        let size = match convert::page_size(req.page_size)? {
            0 => 100,
            n => n.min(1000),
        };
        let after = match req.page_token.as_str() {
            "" => None,
            token => Some(page_token::decode(token, AUDIT_SCOPE)?),
        };
        let (events, next) = self
            .store
            .list_audit(&filter, after.as_deref(), size)
            .await
            .map_err(EngineError::from)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: events
                .into_iter()
                .map(|e| pb::AuditEvent {
                    time: Some(convert::time_to_pb(e.time)),
                    request_id: e.request_id,
                    principal: e.principal,
                    tenant: e.tenant,
                    client_ip: e.client_ip,
                    action: e.action,
                    resource: e.resource,
                    status: e.status,
                    duration_ms: e.duration_ms,
                })
                .collect(),
            next_page_token: next
                .map(|k| page_token::encode(AUDIT_SCOPE, &k))
                .unwrap_or_default(),
        }))
    }
}
