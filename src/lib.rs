//! dialogd: a gRPC dialogue service for LLM applications.
//!
//! Data flows one way: `grpc` (transport) -> `dialogue` (engine) -> `store`
//! (durable history) and `router` -> `backend` (model calls).

pub mod audit;
pub mod auth;
pub mod backend;
pub mod chat_client;
pub mod config;
pub mod dialogue;
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

/// Code generated from `proto/` by build.rs.
pub mod pb {
    /// Package `dialogue.v1`.
    pub mod dialogue {
        #[allow(clippy::large_enum_variant)]
        pub mod v1 {
            tonic::include_proto!("dialogue.v1");
            // serde per the protobuf JSON mapping, for the REST routes.
            include!(concat!(env!("OUT_DIR"), "/dialogue.v1.serde.rs"));

            /// Encoded descriptor set of the `dialogue.v1` protos, served by reflection.
            pub const FILE_DESCRIPTOR_SET: &[u8] =
                include_bytes!(concat!(env!("OUT_DIR"), "/dialogue_descriptor.bin"));
        }
    }
}
