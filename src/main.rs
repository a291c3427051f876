use clap::Parser;
use dialogd::config::{FlagOverrides, Settings};
use dialogd::startup::Application;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// dialogd: a gRPC dialogue service for LLM applications.
///
/// Settings come from built-in defaults, then the TOML file given with
/// --config, then DIALOGD_* environment variables (nested keys joined by
/// "__", e.g. DIALOGD_STORE__DURABILITY=relaxed), then these flags.
/// README.md lists every key.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// TOML config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to serve gRPC on [default: 127.0.0.1:50051; port 0 picks a free one].
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Directory of the embedded store [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Log level or filter, e.g. info or dialogd=debug [default: info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Address to serve Prometheus /metrics on [default: 127.0.0.1:9090].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Creates an API key: prints the key once, and the [[auth.api_keys]]
    /// entry (with only the key's hash) to paste into the config.
    Keygen {
        /// The key's public id: lowercase letters, digits and '-'.
        #[arg(long)]
        id: String,
        /// The tenant whose dialogues the key reaches.
        #[arg(long)]
        tenant: String,
        /// Comma-separated roles: user, admin, auditor.
        #[arg(long, default_value = "user")]
        roles: String,
    },
    /// Chats with a running dialogd: each line is a turn of one dialogue
    /// (created if missing), the reply streams back.
    Chat {
        /// The server.
        #[arg(long, default_value = "http://127.0.0.1:50051")]
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
}

/// `dialogd chat` (see `chat_client`).
fn chat(options: dialogd::chat_client::ChatOptions) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dialogd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dialogd::chat_client::run(options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("dialogd chat: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints a new key and its config entry; the key is not stored anywhere.
fn keygen(id: &str, tenant: &str, roles: &str) -> ExitCode {
    if !dialogd::auth::keys::valid_id(id) {
        eprintln!("dialogd: --id must be 1 to 64 of a-z, 0-9 and '-'");
        return ExitCode::from(2);
    }
    let roles: Vec<&str> = roles.split(',').map(str::trim).collect();
    if let Some(bad) = roles
        .iter()
        .find(|r| dialogd::auth::Role::parse(r).is_none())
    {
        eprintln!("dialogd: unknown role {bad:?} (user, admin, auditor)");
        return ExitCode::from(2);
    }
    let (key, secret) = dialogd::auth::keys::generate(id);
    let roles_toml: Vec<String> = roles.iter().map(|r| format!("{r:?}")).collect();
    println!("# API key for {id} (shown once; give it to the client, keep it secret):");
    println!("# {key}");
    println!();
    println!("[[auth.api_keys]]");
    println!("id = {id:?}");
    println!("hash = {:?}", dialogd::auth::keys::hash_for_config(&secret));
    println!("tenant = {tenant:?}");
    println!("roles = [{}]", roles_toml.join(", "));
    ExitCode::SUCCESS
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Keygen { id, tenant, roles }) => return keygen(&id, &tenant, &roles),
        Some(Command::Chat {
            addr,
            dialogue,
            key,
            model,
        }) => {
            return chat(dialogd::chat_client::ChatOptions {
                addr,
                dialogue: dialogue.unwrap_or_else(|| format!("chat-{:08x}", rand::random::<u32>())),
                key: key.or_else(|| std::env::var("DIALOGD_API_KEY").ok()),
                model,
            });
        }
        None => {}
    }
    let flags = FlagOverrides {
        listen: cli.listen,
        data_dir: cli.data_dir,
        log_level: cli.log_level,
        metrics_listen: cli.metrics_listen,
    };
    let settings = match Settings::load(cli.config.as_deref(), &flags) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dialogd: {e}");
            return ExitCode::from(2);
        }
    };
    dialogd::telemetry::init(&settings.log);
    for key in dialogd::config::ignored_env_keys() {
        tracing::warn!(%key, "environment variable ignored: it names no configuration key");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("dialogd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let app = Application::build(settings).await?;
        // Scripts and tests read this line to learn the port when --listen used port 0.
        println!("dialogd listening on {}", app.local_addr());
        if let Some(addr) = app.metrics_addr() {
            println!("dialogd metrics on http://{addr}/metrics");
        }
        app.run_until_stopped(dialogd::shutdown::signal()).await
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
