//! `dialogue.v1.AdminService` handlers.

use super::convert;
use crate::audit::{self, AuditFilter, AuditLog};
use crate::dialogue::ports::StoreExport;
use crate::engine::rules::RuleBook;
use crate::failure::{ErrorKind, Failure};
use crate::grpc::pb::dialogue::v1 as pb;
use crate::grpc::pb::dialogue::v1::admin_service_server::AdminService;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct AdminGrpc {
    log: Arc<dyn AuditLog>,
    export: Option<Arc<dyn StoreExport>>,
    rules: Arc<RuleBook>,
}

impl AdminGrpc {
    pub fn new(
        log: Arc<dyn AuditLog>,
        export: Option<Arc<dyn StoreExport>>,
        rules: Arc<RuleBook>,
    ) -> AdminGrpc {
        AdminGrpc { log, export, rules }
    }
}

/// Size of the chunks a backup is streamed in.
const CHUNK_BYTES: usize = 256 * 1024;

/// Hands what the (blocking) export writes to the response stream in
/// chunks; a departed client makes the next write fail, which ends the
/// export and frees the store's writes.
struct ChunkSender {
    buffer: Vec<u8>,
    out: mpsc::Sender<Result<pb::ExportStoreChunk, Status>>,
}

impl ChunkSender {
    fn send(&mut self) -> std::io::Result<()> {
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK_BYTES));
        self.out
            .blocking_send(Ok(pb::ExportStoreChunk { data }))
            .map_err(|_| std::io::Error::other("the client left"))
    }
}

impl std::io::Write for ChunkSender {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buffer.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::ExportStoreChunk, Status>> + Send>>;

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

    async fn list_rules(
        &self,
        _request: Request<pb::ListRulesRequest>,
    ) -> Result<Response<pb::ListRulesResponse>, Status> {
        let rules = self.rules.list().into_iter().map(|r| pb::TrafficRule {
            name: r.name,
            action: r.action.to_owned(),
            definition_json: r.definition,
            hits: i64::try_from(r.hits).unwrap_or(i64::MAX),
        });
        Ok(Response::new(pb::ListRulesResponse {
            rules: rules.collect(),
            source: self.rules.source().to_owned(),
            load_time: Some(convert::time_to_pb(self.rules.loaded())),
        }))
    }

    type ExportStoreStream = ChunkStream;

    async fn export_store(
        &self,
        _request: Request<pb::ExportStoreRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let export = self.export.clone().ok_or_else(|| {
            Status::from(Failure::new(
                ErrorKind::FailedPrecondition,
                "STORE_EXPORT_UNSUPPORTED",
                "ExportStore backs up the embedded store; back the Redis store up with Redis' own tools (RDB or AOF)",
            ))
        })?;
        let (out, chunks) = mpsc::channel(4);
        tokio::task::spawn_blocking(move || {
            let mut sender = ChunkSender {
                buffer: Vec::with_capacity(CHUNK_BYTES),
                out: out.clone(),
            };
            match export.export(&mut sender) {
                Ok(records) => tracing::info!(records, "store exported"),
                Err(e) => {
                    tracing::error!(error = %e, "store export failed");
                    let _ = out.blocking_send(Err(Status::from(Failure::new(
                        ErrorKind::Internal,
                        "STORE_EXPORT_FAILED",
                        "the store could not be exported; see the server log",
                    ))));
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(chunks))))
    }
}
