//! dialogd-bench: the benchmark harness (see BENCHMARKS.md).
//!
//!     cargo build --release --bins
//!     target/release/dialogd-bench run            # every scenario, ~3 min
//!     target/release/dialogd-bench run --quick    # shorter runs
//!
//! Its parts run alone too: `echo-server` (the bare tonic baseline),
//! `mock-upstream` (the fast OpenAI-shaped upstream) and `load` (the load
//! generator against a running dialogd).

mod clients;
mod echo_server;
mod fill;
mod loadgen;
mod mock_upstream;
mod procs;
mod scenarios;

use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "dialogd-bench", about = "Benchmark harness of dialogd")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the scenarios and prints a Markdown report.
    Run {
        /// Shorter measurements (1 s warm-up, 3 s each, 200,000 stored turns).
        #[arg(long)]
        quick: bool,
        /// Only these scenarios (a-i; a and b run together).
        #[arg(long, value_delimiter = ',')]
        only: Vec<char>,
        /// Also write the report here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// The bare tonic echo server (baseline a).
    EchoServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
    },
    /// The OpenAI-shaped mock upstream.
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 16)]
        tokens: usize,
        #[arg(long, default_value_t = 0)]
        token_delay_us: u64,
    },
    /// Load against a running dialogd (or echo server).
    Load {
        #[arg(long)]
        target: SocketAddr,
        /// Open loop at this many calls per second; closed loop if unset.
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 8)]
        connections: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// ConverseStream instead of Converse.
        #[arg(long)]
        stream: bool,
        /// Stateless `POST /v1/chat/completions` (HTTP/1.1 keep-alive,
        /// model `mock`) instead of gRPC Converse.
        #[arg(long)]
        openai: bool,
        /// Converse on this many dialogues that grow for the whole run
        /// (long histories) instead of a new dialogue every 10 exchanges.
        #[arg(long)]
        grow: Option<u64>,
    },
    /// Stateless chat completions against any OpenAI-compatible gateway
    /// (bench/peer_compare.sh runs the matrix with it).
    OpenaiLoad {
        /// e.g. http://127.0.0.1:4000/v1
        #[arg(long)]
        base_url: String,
        #[arg(long, default_value = "mock")]
        model: String,
        #[arg(long)]
        api_key: Option<String>,
        /// Open loop at this many requests per second; closed loop if unset.
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// SSE; reports the time to the first event.
        #[arg(long)]
        stream: bool,
    },
}

#[tokio::main]
async fn main() {
    // reqwest is built without a default crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let result = match Cli::parse().command {
        Command::EchoServer { listen } => echo_server::serve(listen).await,
        Command::MockUpstream {
            listen,
            tokens,
            token_delay_us,
        } => {
            let settings = mock_upstream::MockSettings {
                tokens: tokens.max(1),
                token_delay: Duration::from_micros(token_delay_us),
            };
            mock_upstream::serve(listen, settings).await
        }
        Command::Load {
            target,
            rate,
            concurrency,
            connections,
            seconds,
            stream,
            openai,
            grow,
        } => match openai {
            true => match clients::Upstream::new(target) {
                Ok(upstream) => load_openai(upstream, rate, concurrency, seconds, stream).await,
                Err(e) => Err(e),
            },
            false => {
                let calls = Calls { stream, grow };
                load(target, rate, concurrency, connections, seconds, calls).await
            }
        },
        Command::OpenaiLoad {
            base_url,
            model,
            api_key,
            rate,
            concurrency,
            seconds,
            stream,
        } => match clients::Upstream::at(&base_url, &model, api_key.as_deref()) {
            Ok(upstream) => load_openai(upstream, rate, concurrency, seconds, stream).await,
            Err(e) => Err(e),
        },
        Command::Run { quick, only, out } => run(quick, &only, out).await,
    };
    if let Err(e) = result {
        eprintln!("dialogd-bench: {e}");
        std::process::exit(1);
    }
}

/// The OpenAI path's load, as scenario (h) sends it.
async fn load_openai(
    upstream: clients::Upstream,
    rate: Option<f64>,
    concurrency: usize,
    seconds: u64,
    stream: bool,
) -> Result<(), String> {
    let mode = match rate {
        Some(rate) => loadgen::Mode::Open { rate },
        None => loadgen::Mode::Closed { concurrency },
    };
    let report = loadgen::run(
        mode,
        Duration::from_secs(1),
        Duration::from_secs(seconds),
        move |_| {
            let upstream = upstream.clone();
            async move {
                match stream {
                    true => upstream.stream().await,
                    false => upstream.unary().await,
                }
            }
        },
    )
    .await;
    println!("{}", report.summary());
    if stream {
        println!(
            "first event p50={:.3}ms p99={:.3}ms",
            report.ttft_ms(0.5),
            report.ttft_ms(0.99)
        );
    }
    if let Some(e) = report.first_error {
        println!("first error: {e}");
    }
    Ok(())
}

/// What each Converse load call is.
struct Calls {
    stream: bool,
    grow: Option<u64>,
}

async fn load(
    target: SocketAddr,
    rate: Option<f64>,
    concurrency: usize,
    connections: usize,
    seconds: u64,
    Calls { stream, grow }: Calls,
) -> Result<(), String> {
    let clients = Arc::new(clients::connections(target, connections).await?);
    let mode = match rate {
        Some(rate) => loadgen::Mode::Open { rate },
        None => loadgen::Mode::Closed { concurrency },
    };
    let report = loadgen::run(
        mode,
        Duration::from_secs(1),
        Duration::from_secs(seconds),
        move |seq| {
            let client = clients[(seq % clients.len() as u64) as usize].clone();
            let dialogue = match grow {
                Some(dialogues) => format!("grow-{}", seq % dialogues.max(1)),
                None => clients::dialogue_of("load", seq % 256, seq / 256),
            };
            let request = clients::request(&dialogue, "hello from dialogd-bench");
            async move {
                if stream {
                    clients::converse_stream(client, request).await
                } else {
                    clients::converse(client, request).await
                }
            }
        },
    )
    .await;
    println!("{}", report.summary());
    if stream {
        println!(
            "TTFT p50={:.3}ms p99={:.3}ms; {:.0} tokens/s",
            report.ttft_ms(0.5),
            report.ttft_ms(0.99),
            report.tokens as f64 / report.elapsed.as_secs_f64()
        );
    }
    if let Some(e) = report.first_error {
        println!("first error: {e}");
    }
    Ok(())
}

async fn run(quick: bool, only: &[char], out: Option<PathBuf>) -> Result<(), String> {
    let scale = if quick {
        scenarios::Scale {
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(3),
            store_turns: 200_000,
            streams: 1000,
        }
    } else {
        scenarios::Scale {
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(8),
            store_turns: 1_000_000,
            streams: 1000,
        }
    };
    let wanted = |c: char| only.is_empty() || only.contains(&c);
    let mut bench = scenarios::Bench::new(scale)?;
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "# dialogd-bench ({} mode, {cores} cores)",
        if quick { "quick" } else { "full" }
    );
    if wanted('a') || wanted('b') {
        bench.throughput().await?;
    }
    if wanted('c') {
        bench.added_latency().await?;
    }
    if wanted('d') {
        bench.streaming().await?;
    }
    if wanted('e') {
        bench.dialogue_length().await?;
    }
    if wanted('f') {
        bench.big_store().await?;
    }
    if wanted('g') {
        bench.many_streams().await?;
    }
    if wanted('h') {
        bench.openai_path().await?;
    }
    if wanted('i') {
        bench.encryption().await?;
    }
    if let Some(path) = out {
        std::fs::write(&path, bench.report()).map_err(|e| e.to_string())?;
    }
    Ok(())
}
