//! Black-box tests: each starts the real server on a random local port with
//! its own data dir and drives it with generated tonic clients.

mod helpers;
mod upstream;

mod backends;
mod cache;
mod concurrency;
mod converse;
mod dialogues;
mod durability;
mod metrics;
mod replicas;
mod security;
mod service;
mod streaming;
mod summaries;
mod tls;
