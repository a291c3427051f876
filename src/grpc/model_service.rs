//! `dialogue.v1.ModelService` handlers.

use crate::grpc::pb::dialogue::v1 as pb;
use crate::grpc::pb::dialogue::v1::model_service_server::ModelService;
use crate::router::{CircuitState, Router};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct ModelGrpc {
    router: Arc<Router>,
}

impl ModelGrpc {
    pub fn new(router: Arc<Router>) -> ModelGrpc {
        ModelGrpc { router }
    }
}

#[tonic::async_trait]
impl ModelService for ModelGrpc {
    async fn list_models(
        &self,
        _request: Request<pb::ListModelsRequest>,
    ) -> Result<Response<pb::ListModelsResponse>, Status> {
        let router = &self.router;
        let reachable = router.probe_backends().await;
        let models = router
            .models()
            .iter()
            .map(|route| pb::Model {
                name: format!("models/{}", route.name),
                model_id: route.name.clone(),
                context_tokens: i64::from(route.context_tokens),
                is_default: route.name == router.default_model(),
                targets: route
                    .targets
                    .iter()
                    .map(|t| pb::ModelTarget {
                        backend: t.backend.name().to_owned(),
                        backend_kind: t.backend.kind().to_owned(),
                        upstream_model: t.upstream_model.clone(),
                        weight: i32::try_from(t.weight).unwrap_or(i32::MAX),
                        circuit_state: circuit_to_pb(t.circuit_state()) as i32,
                        reachable: reachable.get(t.backend.name()).copied().unwrap_or(false),
                        capabilities: t
                            .capabilities
                            .iter()
                            .map(|c| c.as_str().to_owned())
                            .collect(),
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListModelsResponse { models }))
    }
}

fn circuit_to_pb(state: CircuitState) -> pb::CircuitState {
    match state {
        CircuitState::Closed => pb::CircuitState::Closed,
        CircuitState::Open => pb::CircuitState::Open,
        CircuitState::HalfOpen => pb::CircuitState::HalfOpen,
    }
}
