//! Tower layers around every gRPC service.

pub mod audit;
pub mod auth;
pub mod rate_limit;
