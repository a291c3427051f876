//! dialogd: a gRPC dialogue service for LLM applications.
//!
//! Data flows one way: the transport (`grpc`, `http`, with `middleware`
//! around both) -> the engine (`engine`, over the domain model and ports
//! of `dialogue`) -> the store (`store`, behind those ports) and the router
//! (`router`) -> model backends (`backend`). `startup` wires them, `config`
//! types the settings, and `failure` is what every error becomes on its
//! way out.

pub mod audit;
pub mod auth;
pub mod backend;
pub mod cli;
pub mod config;
pub mod dialogue;
pub mod engine;
pub mod failure;
pub mod grpc;
pub mod http;
pub mod limits;
pub mod meter;
pub mod middleware;
pub mod operations;
pub mod router;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod tls;

/// Code generated from `proto/` (see `grpc::pb`).
pub use grpc::pb;
