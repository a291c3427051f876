//! The command line: serve (the default), `keygen`, `chat` and `store`. Flags that
//! set configuration keys are declared once, in `config::Flags`.

mod keygen;
mod rekey;
mod store;

use crate::config::{Flags, Settings};
use crate::startup::Application;
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// dialogd: a gRPC dialogue service for LLM applications.
///
/// Settings come from built-in defaults, then the TOML file given with
/// --config, then DIALOGD_* environment variables (nested keys joined by
/// "__", e.g. DIALOGD_STORE__DURABILITY=relaxed), then these flags.
/// README.md lists every key.
#[derive(Parser, Debug)]
#[command(name = "dialogd", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML config file.
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    #[command(flatten)]
    flags: Flags,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Creates an API key: prints the key once, and the [[auth.api_keys]]
    /// entry (with only the key's hash) to paste into the config. With
    /// --successor-of (and --config), a key for the same principal, tenant,
    /// roles and networks, for a rotation.
    Keygen {
        /// The key's public id: lowercase letters, digits and '-'
        /// [default with --successor-of: the old id dated today].
        #[arg(long)]
        id: Option<String>,
        /// The tenant whose dialogues the key reaches.
        #[arg(long, conflicts_with = "successor_of")]
        tenant: Option<String>,
        /// Comma-separated roles: user, admin, auditor.
        #[arg(long, default_value = "user", conflicts_with = "successor_of")]
        roles: String,
        /// Days until the key expires [default: never; 90 with --successor-of].
        #[arg(long)]
        valid_days: Option<u32>,
        /// The configured key id the new key succeeds.
        #[arg(long)]
        successor_of: Option<String>,
        /// Days the old key stays valid beside its successor (printed as
        /// the `expires` to set on it) [default: 14].
        #[arg(long)]
        overlap_days: Option<u32>,
    },
    /// Chats with a running dialogd: each line is a turn of one dialogue
    /// (created if missing), the reply streams back.
    Chat {
        /// The server: host:port, http://host:port or https://host:port.
        #[arg(long, default_value = "127.0.0.1:50051")]
        addr: String,
        /// The dialogue's ID [default: a new one].
        #[arg(long)]
        dialogue: Option<String>,
        /// API key or JWT [env: DIALOGD_API_KEY].
        #[arg(long)]
        key: Option<String>,
        /// Model of a dialogue this creates [default: the server's].
        #[arg(long)]
        model: Option<String>,
    },
    /// Checks, backs up and restores the embedded store.
    #[command(subcommand)]
    Store(store::StoreCommand),
}

/// Runs the command the arguments name.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let given = cli.flags.given();
    if let (Some(command), false) = (&cli.command, given.is_empty()) {
        let name = match command {
            Command::Keygen { .. } => "keygen",
            Command::Chat { .. } => "chat",
            Command::Store(_) => "store",
        };
        eprintln!(
            "dialogd {name}: {} configure the server and are not read by {name} (the store commands take their own --data-dir after the subcommand)",
            given.join(", ")
        );
        return ExitCode::from(2);
    }
    match cli.command {
        Some(Command::Keygen {
            id,
            tenant,
            roles,
            valid_days,
            successor_of,
            overlap_days,
        }) => {
            let settings = loaded_config(&cli.config, &cli.flags);
            let options = keygen::KeygenOptions {
                id,
                tenant,
                roles,
                valid_days,
                successor_of,
                overlap_days,
            };
            keygen::run(options, settings)
        }
        Some(Command::Chat { .. }) if cli.config.is_some() => {
            eprintln!("dialogd chat: --config is not read by chat (give --addr and --key)");
            ExitCode::from(2)
        }
        Some(Command::Chat {
            addr,
            dialogue,
            key,
            model,
        }) => chat(crate::grpc::chat_client::ChatOptions {
            addr,
            dialogue: dialogue.unwrap_or_else(|| format!("chat-{:08x}", rand::random::<u32>())),
            key: key.or_else(|| std::env::var("DIALOGD_API_KEY").ok()),
            model,
        }),
        Some(Command::Store(command)) => {
            store::run(command, loaded_config(&cli.config, &cli.flags))
        }
        None => serve(cli.config, &cli.flags),
    }
}

/// The settings of `--config`, if one was given (for the commands that
/// read the server's config: keygen's successors, the store's keys).
fn loaded_config(config: &Option<PathBuf>, flags: &Flags) -> Option<Result<Settings, String>> {
    config
        .as_deref()
        .map(|path| Settings::load(Some(path), flags).map_err(|e| e.to_string()))
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|e| {
        eprintln!("dialogd: cannot start the async runtime: {e}");
        ExitCode::FAILURE
    })
}

/// Serves until SIGTERM or Ctrl-C, then drains.
fn serve(config: Option<PathBuf>, flags: &Flags) -> ExitCode {
    let settings = match Settings::load(config.as_deref(), flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dialogd: {e}");
            return ExitCode::from(2);
        }
    };
    // Dropped last, after the runtime: flushes the spans still queued.
    // The exporter's client is made here, before the async runtime: a
    // blocking client must not be made (or dropped) inside it.
    let exporter_client = || crate::backend::roots::blocking_client(Duration::from_secs(10));
    let _traces =
        match crate::telemetry::init_with_traces(&settings.log, &settings.tracing, exporter_client)
        {
            Ok(guard) => guard,
            Err(e) => {
                eprintln!("dialogd: {e}");
                return ExitCode::from(2);
            }
        };
    for key in crate::config::ignored_env_keys() {
        tracing::warn!(%key, "environment variable ignored: it names no configuration key");
    }
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let result = runtime.block_on(async {
        let app = Application::build(settings).await?;
        // Listening for SIGTERM before saying we listen: a stop that comes
        // at once is a clean one.
        let stop = crate::shutdown::signal();
        // Scripts and tests read this line to learn the port when --listen used port 0.
        println!("dialogd listening on {}", app.local_addr());
        if let Some(addr) = app.metrics_addr() {
            println!("dialogd metrics on http://{addr}/metrics");
        }
        app.run_until_stopped(stop).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "dialogd stopped with an error");
            eprintln!("dialogd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `dialogd chat` (see `grpc::chat_client`).
fn chat(options: crate::grpc::chat_client::ChatOptions) -> ExitCode {
    let runtime = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match runtime.block_on(crate::grpc::chat_client::run(options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("dialogd chat: {e}");
            ExitCode::FAILURE
        }
    }
}
