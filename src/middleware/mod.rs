//! Tower layers around every gRPC service.

pub mod auth;
