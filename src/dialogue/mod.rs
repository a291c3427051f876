//! Dialogues: the domain model every front and backend translates to and
//! from, the rules a request must pass, the ports the engine needs from a
//! store, and (in `engine/`) the engine that runs turns.

pub mod content_filter;
pub mod context;
pub mod engine;
pub mod model;
pub mod page_token;
pub mod ports;
pub mod tokenizer;
pub mod validate;
