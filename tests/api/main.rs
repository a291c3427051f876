//! Black-box tests: each starts the real server on a random local port with
//! its own data dir and drives it with generated tonic clients.

mod helpers;
mod process;
mod rich;
// Shared with the store suite, which uses all of it.
#[allow(dead_code)]
#[path = "../support/redis_cluster.rs"]
mod redis_cluster;
mod upstream;

mod adaptive;
mod anthropic_front;
mod backends;
mod bad_input;
mod batch;
mod branches;
mod breaker;
mod cache;
mod chat_command;
mod compression;
mod concurrency;
mod conversation_items;
mod converse;
mod dialogues;
mod durability;
mod encryption;
mod http_front;
mod image_text;
mod key_lifecycle;
mod media;
mod metrics;
mod openapi;
mod operations;
mod outbound;
mod priorities;
mod redis_outage;
mod replicas;
mod replicas_on_a_cluster;
mod rpc_table;
mod rules;
mod security;
mod semantic;
mod service;
mod shredding;
mod store_backup;
mod store_integrity;
mod streaming;
mod summaries;
mod tls;
mod tools;
mod traces;
mod websocket;
mod write_ahead_log;
