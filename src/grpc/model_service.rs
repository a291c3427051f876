//! `dialogue.v1.ModelService` handlers.

use crate::dialogue::Engine;
use crate::pb::dialogue::v1 as pb;
use crate::pb::dialogue::v1::model_service_server::ModelService;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ModelGrpc {
    engine: Arc<Engine>,
}

impl ModelGrpc {
    pub fn new(engine: Arc<Engine>) -> ModelGrpc {
        ModelGrpc { engine }
    }
}

#[tonic::async_trait]
impl ModelService for ModelGrpc {
    async fn list_models(
        &self,
        _request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let router = self.engine.router();
        let models = router
            .models()
            .iter()
            .map(|route| pb::Model {
                name: format!("models/{}", route.name),
                model_id: route.name.clone(),
                backend: route.backend.name().to_owned(),
                backend_kind: route.backend.kind().to_owned(),
                upstream_model: route.upstream_model.clone(),
                context_tokens: i64::from(route.context_tokens),
                is_default: route.name == router.default_model(),
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }
}
