//! The dialogue engine: conversation rules, independent of transport,
//! storage engine and model protocol.

pub mod content_filter;
pub mod context;
pub mod engine;
pub mod error;
pub mod locks;
pub mod model;
pub mod page_token;
pub mod ports;
pub mod prompt;
pub mod quota;
pub mod reply_cache;
pub mod resumable;
pub mod tokenizer;
pub mod validate;

pub use engine::Engine;
pub use error::EngineError;
