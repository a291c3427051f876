//! `dialogue.v1.AdminService` handlers.

use super::convert;
use crate::audit::{self, AuditFilter, AuditLog};
use crate::grpc::pb::dialogue::v1 as pb;
use crate::grpc::pb::dialogue::v1::admin_service_server::AdminService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct AdminGrpc {
    log: Arc<dyn AuditLog>,
}

impl AdminGrpc {
    pub fn new(log: Arc<dyn AuditLog>) -> AdminGrpc {
        AdminGrpc { log }
    }
}

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
        let page_size = convert::page_size(req.page_size)?;
        let page =
            audit::list_events(self.log.as_ref(), &filter, page_size, &req.page_token).await?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: page
                .items
                .into_iter()
                .map(convert::audit_event_to_pb)
                .collect(),
            next_page_token: page.next_page_token.unwrap_or_default(),
        }))
    }
}
