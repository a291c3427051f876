//! gRPC transport: the only code that knows tonic types. Handlers convert,
//! call the engine, convert back.

pub mod admin_service;
pub mod auth_service;
pub mod backup_client;
pub mod chat_client;
pub mod codec;
pub mod convert;
pub mod dialogue_calls;
pub mod dialogue_service;
pub mod model_service;
pub mod pb;
pub mod status;

pub use admin_service::AdminGrpc;
pub use auth_service::AuthGrpc;
pub use dialogue_service::DialogueGrpc;
pub use model_service::ModelGrpc;

/// The URL of a server given as `host:port` (plain HTTP/2, as the bundled
/// examples write it) or as an `http://` / `https://` URL.
pub fn endpoint(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    }
}
