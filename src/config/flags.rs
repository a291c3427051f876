//! The settings the command line can set, declared once: each flag is a
//! clap argument and, by its place in these structs, the key it sets (they
//! serialize in the shape of `Settings`, so figment layers them over file
//! and environment as they are).

use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Flags that set configuration keys; they win over file and environment.
#[derive(Debug, Default, Clone, clap::Args, Serialize)]
pub struct Flags {
    #[command(flatten)]
    pub server: ServerFlags,
    #[command(flatten)]
    pub store: StoreFlags,
    #[command(flatten)]
    pub log: LogFlags,
    #[command(flatten)]
    pub metrics: MetricsFlags,
}

impl Flags {
    /// The flags given, by name: they configure the server, so a
    /// subcommand refuses them rather than ignore them.
    pub fn given(&self) -> Vec<&'static str> {
        [
            ("--listen", self.server.listen.is_some()),
            ("--data-dir", self.store.data_dir.is_some()),
            ("--accept-store-loss", self.store.accept_loss),
            ("--log-level", self.log.level.is_some()),
            ("--metrics-listen", self.metrics.listen.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

#[derive(Debug, Default, Clone, clap::Args, Serialize)]
pub struct ServerFlags {
    /// Address to serve gRPC on [default: 127.0.0.1:50051; port 0 picks a free one].
    #[arg(long = "listen", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Default, Clone, clap::Args, Serialize)]
pub struct StoreFlags {
    /// Directory of the embedded store [default: ./data].
    #[arg(long = "data-dir", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Start on a data dir that holds less than its manifest promised
    /// (deliberately emptied, or damaged and accepted as is).
    #[arg(long = "accept-store-loss")]
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub accept_loss: bool,
}

#[derive(Debug, Default, Clone, clap::Args, Serialize)]
pub struct LogFlags {
    /// Log level or filter, e.g. info or dialogd=debug [default: info].
    #[arg(long = "log-level", value_name = "FILTER")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub level: Option<String>,
}

#[derive(Debug, Default, Clone, clap::Args, Serialize)]
pub struct MetricsFlags {
    /// Address to serve Prometheus /metrics on [default: 127.0.0.1:9090].
    #[arg(id = "metrics_listen", long = "metrics-listen", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
}
