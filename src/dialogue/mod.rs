//! Dialogues: the domain model every front and backend translates to and
//! from, the rules a request must pass, and the ports the engine needs from
//! a store. The engine that runs turns is `crate::engine`.

pub mod content;
pub mod content_filter;
pub mod context;
pub mod generation;
mod id;
mod message;
pub mod model;
pub mod page_token;
pub mod ports;
pub mod tokenizer;
pub mod validate;
