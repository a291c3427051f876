//! The benchmark scenarios, each against a baseline measured in the same
//! run (the machine is noisy, so ratios are what to compare):
//!
//! a. a bare tonic echo server: the ceiling of this stack here;
//! b. Converse through dialogd (echo backend, durable group-committed
//!    history) at peak throughput, as a share of (a);
//! c. added latency through the mock HTTP upstream: dialogd+mock minus
//!    mock alone at the same open-loop rate;
//! d. ConverseStream time to first token against the mock alone, and
//!    tokens per second relayed;
//! e. turn latency on a dialogue of 10 turns vs one of 10,000;
//! f. a store of 1,000,000 turns: start-up time, RSS, disk size;
//! g. RSS with 1,000 concurrent streams;
//! h. the OpenAI path, stateless, against the mock alone (`openai_path`);
//! i. Converse with encryption at rest vs without (`encryption`).

mod encryption;
mod openai_path;

use crate::clients::{self, Upstream};
use crate::loadgen::{self, Mode, Report};
use crate::mock_upstream::MockSettings;
use crate::procs::{self, Proc};
use dialogd::pb::dialogue::v1::dialogue_service_client::DialogueServiceClient;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How long each measurement runs.
#[derive(Clone, Copy)]
pub struct Scale {
    pub warmup: Duration,
    pub duration: Duration,
    /// Turns in the store of scenario (f).
    pub store_turns: u64,
    /// Concurrent streams of scenario (g).
    pub streams: usize,
}

/// Workers and connections of the closed-loop (peak) runs.
const WORKERS: usize = 64;
const CONNECTIONS: usize = 8;
const MESSAGE: &str = "What is the weather like in Lisbon today, and should I bring a coat?";

/// A scratch directory removed when the run ends.
struct Scratch(PathBuf);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Bench {
    scale: Scale,
    dir: Scratch,
    dialogd: PathBuf,
    me: PathBuf,
    out: String,
}

fn pick(clients: &[DialogueServiceClient<Channel>], seq: u64) -> DialogueServiceClient<Channel> {
    clients[(seq % clients.len() as u64) as usize].clone()
}

impl Bench {
    pub fn new(scale: Scale) -> Result<Bench, String> {
        Ok(Bench {
            scale,
            dir: {
                let dir =
                    std::env::temp_dir().join(format!("dialogd-bench-{}", std::process::id()));
                std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
                Scratch(dir)
            },
            dialogd: procs::sibling("dialogd")?,
            me: std::env::current_exe().map_err(|e| e.to_string())?,
            out: String::new(),
        })
    }

    fn line(&mut self, text: impl AsRef<str>) {
        println!("{}", text.as_ref());
        let _ = writeln!(self.out, "{}", text.as_ref());
    }

    pub fn report(&self) -> &str {
        &self.out
    }

    async fn mock(&self, settings: MockSettings) -> Result<Proc, String> {
        let args = [
            "mock-upstream".to_string(),
            "--tokens".into(),
            settings.tokens.to_string(),
            "--token-delay-us".into(),
            settings.token_delay.as_micros().to_string(),
        ];
        Proc::spawn(&self.me, &args, "listening on ").await
    }

    /// dialogd on a fresh (or given) data dir, with the mock as model
    /// `mock` when given. Cache off: every turn is a real turn.
    async fn dialogd(
        &self,
        name: &str,
        mock: Option<SocketAddr>,
        data: Option<&Path>,
    ) -> Result<Proc, String> {
        self.dialogd_with(name, mock, data, "").await
    }

    /// `dialogd` with `extra` appended to its config.
    async fn dialogd_with(
        &self,
        name: &str,
        mock: Option<SocketAddr>,
        data: Option<&Path>,
        extra: &str,
    ) -> Result<Proc, String> {
        let data = data.map_or_else(|| self.dir.path().join(name), Path::to_path_buf);
        let mut config = format!(
            r#"default_model = "{default}"
[server]
listen = "127.0.0.1:0"
[store]
data_dir = "{data}"
durability = "sync"
[metrics]
enabled = false
[cache]
enabled = false
[limits]
max_streams_per_principal = 0
max_in_flight = 0
[log]
level = "warn"
[[models]]
name = "echo"
backend = "echo"
"#,
            default = if mock.is_some() { "mock" } else { "echo" },
            data = data.display(),
        );
        if let Some(addr) = mock {
            let _ = write!(
                config,
                "[[models]]\nname = \"mock\"\nbackend = \"mock\"\n[backends.mock]\nkind = \"openai\"\nbase_url = \"http://{addr}/v1\"\n"
            );
        }
        config.push_str(extra);
        let path = self.dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        Proc::spawn(
            &self.dialogd,
            &["--config".into(), path.display().to_string()],
            "dialogd listening on ",
        )
        .await
    }

    async fn closed_converse(&self, addr: SocketAddr, prefix: &str) -> Result<Report, String> {
        let clients = Arc::new(clients::connections(addr, CONNECTIONS).await?);
        let prefix = prefix.to_owned();
        let report = loadgen::run(
            Mode::Closed {
                concurrency: WORKERS,
            },
            self.scale.warmup,
            self.scale.duration,
            move |seq| {
                // Worker w talks to its own dialogues, 10 exchanges each.
                let workers = WORKERS as u64;
                let dialogue = clients::dialogue_of(&prefix, seq % workers, seq / workers);
                let request = clients::request(&dialogue, MESSAGE);
                clients::converse(pick(&clients, seq), request)
            },
        )
        .await;
        check(&report)?;
        Ok(report)
    }

    async fn open_converse(
        &self,
        addr: SocketAddr,
        rate: f64,
        prefix: &str,
    ) -> Result<Report, String> {
        let clients = Arc::new(clients::connections(addr, CONNECTIONS).await?);
        let prefix = prefix.to_owned();
        let report = loadgen::run(
            Mode::Open { rate },
            self.scale.warmup,
            self.scale.duration,
            move |seq| {
                let dialogue = clients::dialogue_of(&prefix, seq % 256, seq / 256);
                let request = clients::request(&dialogue, MESSAGE);
                clients::converse(pick(&clients, seq), request)
            },
        )
        .await;
        check(&report)?;
        Ok(report)
    }

    async fn open_upstream(
        &self,
        upstream: &Upstream,
        rate: f64,
        stream: bool,
    ) -> Result<Report, String> {
        let upstream = upstream.clone();
        let report = loadgen::run(
            Mode::Open { rate },
            self.scale.warmup,
            self.scale.duration,
            move |_| {
                let upstream = upstream.clone();
                async move {
                    if stream {
                        upstream.stream().await
                    } else {
                        upstream.unary().await
                    }
                }
            },
        )
        .await;
        check(&report)?;
        Ok(report)
    }

    /// (a) and (b).
    pub async fn throughput(&mut self) -> Result<f64, String> {
        self.line("\n## (a)/(b) Converse peak throughput: bare tonic echo vs dialogd (echo backend, durable history)\n");
        self.line(format!("closed loop, {WORKERS} workers over {CONNECTIONS} HTTP/2 connections, {}-byte message, a new dialogue every {} exchanges\n", MESSAGE.len(), clients::EXCHANGES_PER_DIALOGUE));
        let bare = Proc::spawn(&self.me, &["echo-server".into()], "listening on ").await?;
        let base = self.closed_converse(bare.addr, "bare").await?;
        bare.stop().await;
        let dialogd = self.dialogd("throughput", None, None).await?;
        let ours = self.closed_converse(dialogd.addr, "w").await?;
        dialogd.stop().await;
        self.line(
            "| server | turns/s | p50 ms | p99 ms | p99.9 ms |\n| --- | --- | --- | --- | --- |",
        );
        for (name, r) in [
            ("(a) bare tonic echo", &base),
            ("(b) dialogd, echo backend, sync store", &ours),
        ] {
            self.line(format!(
                "| {name} | {:.0} | {:.3} | {:.3} | {:.3} |",
                r.throughput(),
                r.ms(0.5),
                r.ms(0.99),
                r.ms(0.999)
            ));
        }
        let ratio = ours.throughput() / base.throughput();
        self.line(format!(
            "\n**dialogd / bare = {:.0}%** (target ≥ 25%)",
            ratio * 100.0
        ));
        Ok(ours.throughput())
    }

    /// (c).
    pub async fn added_latency(&mut self) -> Result<(), String> {
        self.line("\n## (c) Added latency through the HTTP mock upstream (dialogd+mock minus mock alone, same open-loop rate)\n");
        let mock = self
            .mock(MockSettings {
                tokens: 16,
                token_delay: Duration::ZERO,
            })
            .await?;
        let upstream = Upstream::new(mock.addr)?;
        let dialogd = self.dialogd("added", Some(mock.addr), None).await?;
        let peak = self.closed_converse(dialogd.addr, "peak").await?;
        self.line(format!(
            "dialogd+mock peak (closed loop): {:.0} turns/s\n",
            peak.throughput()
        ));
        self.line("| rate/s | mock p50 | mock p99 | mock p99.9 | dialogd+mock p50 | p99 | p99.9 | **added p50** | **added p99** | added p99.9 |");
        self.line("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
        for rate in [2000.0, (peak.throughput() / 4.0).round()] {
            let alone = self.open_upstream(&upstream, rate, false).await?;
            let through = self
                .open_converse(dialogd.addr, rate, &format!("r{rate}"))
                .await?;
            self.line(format!(
                "| {rate:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | **{:.3}** | **{:.3}** | {:.3} |",
                alone.ms(0.5), alone.ms(0.99), alone.ms(0.999),
                through.ms(0.5), through.ms(0.99), through.ms(0.999),
                through.ms(0.5) - alone.ms(0.5),
                through.ms(0.99) - alone.ms(0.99),
                through.ms(0.999) - alone.ms(0.999),
            ));
            if through.errors > 0 || alone.errors > 0 {
                self.line(format!(
                    "errors: mock {} dialogd {}",
                    alone.errors, through.errors
                ));
            }
        }
        self.line("\n(all figures in ms; targets: added p99 < 1 ms at 2,000/s and < 2 ms at a quarter of peak)");
        dialogd.stop().await;
        mock.stop().await;
        Ok(())
    }

    /// (d).
    pub async fn streaming(&mut self) -> Result<(), String> {
        self.line(
            "\n## (d) ConverseStream: time to first token vs the mock alone, tokens relayed\n",
        );
        let delay = Duration::from_millis(1);
        let mock = self
            .mock(MockSettings {
                tokens: 20,
                token_delay: delay,
            })
            .await?;
        let upstream = Upstream::new(mock.addr)?;
        let dialogd = self.dialogd("stream", Some(mock.addr), None).await?;
        let rate = 200.0;
        let alone = self.open_upstream(&upstream, rate, true).await?;
        let clients = Arc::new(clients::connections(dialogd.addr, CONNECTIONS).await?);
        let c = clients.clone();
        let through = loadgen::run(
            Mode::Open { rate },
            self.scale.warmup,
            self.scale.duration,
            move |seq| {
                clients::converse_stream(
                    pick(&c, seq),
                    clients::request(&format!("s-{}", seq % 256), MESSAGE),
                )
            },
        )
        .await;
        check(&through)?;
        self.line(format!(
            "open loop {rate:.0} streams/s, 20 tokens 1 ms apart\n"
        ));
        self.line("| | TTFT p50 ms | TTFT p99 ms | TTFT p99.9 ms |\n| --- | --- | --- | --- |");
        self.line(format!(
            "| mock alone (HTTP SSE) | {:.3} | {:.3} | {:.3} |",
            alone.ttft_ms(0.5),
            alone.ttft_ms(0.99),
            alone.ttft_ms(0.999)
        ));
        self.line(format!(
            "| dialogd ConverseStream | {:.3} | {:.3} | {:.3} |",
            through.ttft_ms(0.5),
            through.ttft_ms(0.99),
            through.ttft_ms(0.999)
        ));
        self.line(format!(
            "| **added** | **{:.3}** | **{:.3}** | {:.3} |",
            through.ttft_ms(0.5) - alone.ttft_ms(0.5),
            through.ttft_ms(0.99) - alone.ttft_ms(0.99),
            through.ttft_ms(0.999) - alone.ttft_ms(0.999)
        ));
        self.line("\n(target: added TTFT p99 < 0.5 ms)");
        dialogd.stop().await;
        mock.stop().await;
        // Relay throughput: 100 tokens back to back per stream, closed loop.
        let mock = self
            .mock(MockSettings {
                tokens: 100,
                token_delay: Duration::ZERO,
            })
            .await?;
        let dialogd = self.dialogd("relay", Some(mock.addr), None).await?;
        let clients = Arc::new(clients::connections(dialogd.addr, CONNECTIONS).await?);
        let relay = loadgen::run(
            Mode::Closed {
                concurrency: WORKERS,
            },
            self.scale.warmup,
            self.scale.duration,
            move |seq| {
                clients::converse_stream(
                    pick(&clients, seq),
                    clients::request(&format!("t-{}", seq % WORKERS as u64), MESSAGE),
                )
            },
        )
        .await;
        check(&relay)?;
        self.line(format!(
            "\nRelay: {:.0} tokens/s to clients ({:.0} streams/s of 100 tokens, {WORKERS} concurrent)",
            relay.tokens as f64 / relay.elapsed.as_secs_f64(),
            relay.throughput()
        ));
        dialogd.stop().await;
        mock.stop().await;
        Ok(())
    }

    /// (e).
    pub async fn dialogue_length(&mut self) -> Result<(), String> {
        self.line("\n## (e) Turn latency at dialogue length 10 vs 10,000 (echo backend, one turn at a time)\n");
        let dialogd = self.dialogd("length", None, None).await?;
        let clients = Arc::new(clients::connections(dialogd.addr, 1).await?);
        let fill_started = Instant::now();
        // 1,000 dialogues of 10 turns (16 callers at a time), and one of 10,000.
        let mut fill = tokio::task::JoinSet::new();
        for w in 0..16u64 {
            let c = clients.clone();
            fill.spawn(async move {
                for i in (w..5000).step_by(16) {
                    let request = clients::request(&format!("short-{}", i % 1000), MESSAGE);
                    clients::converse(pick(&c, i), request).await?;
                }
                Ok::<(), String>(())
            });
        }
        while let Some(done) = fill.join_next().await {
            done.map_err(|e| e.to_string())??;
        }
        for i in 0..5_000u64 {
            clients::converse(pick(&clients, i), clients::request("long", MESSAGE)).await?;
        }
        self.line(format!(
            "filled 1,000 dialogues of 10 turns and one of 10,000 in {:.1} s\n",
            fill_started.elapsed().as_secs_f64()
        ));
        // One turn on each short dialogue (10 -> 12 turns) against as many
        // on the long one (10,000 -> 12,000), one at a time, alternating so
        // both see the same machine.
        let mut short = loadgen::Report::empty();
        let mut long = loadgen::Report::empty();
        for i in 0..1000u64 {
            for (report, dialogue) in [
                (&mut short, format!("short-{i}")),
                (&mut long, "long".to_string()),
            ] {
                let sent = Instant::now();
                let result =
                    clients::converse(pick(&clients, i), clients::request(&dialogue, MESSAGE))
                        .await;
                report.add(sent.elapsed(), result);
            }
        }
        let (at_10, at_10k) = (short, long);
        check(&at_10)?;
        check(&at_10k)?;
        self.line("| dialogue | turns measured | p50 ms | p99 ms | p99.9 ms |\n| --- | --- | --- | --- | --- |");
        self.line(format!(
            "| 10 turns | {} | {:.3} | {:.3} | {:.3} |",
            at_10.ok,
            at_10.ms(0.5),
            at_10.ms(0.99),
            at_10.ms(0.999)
        ));
        self.line(format!(
            "| 10,000 turns | {} | {:.3} | {:.3} | {:.3} |",
            at_10k.ok,
            at_10k.ms(0.5),
            at_10k.ms(0.99),
            at_10k.ms(0.999)
        ));
        self.line(format!(
            "\n**p50 ratio 10,000 / 10 = {:.2}x, p99 ratio = {:.2}x** (target ≤ 1.2x)",
            at_10k.ms(0.5) / at_10.ms(0.5),
            at_10k.ms(0.99) / at_10.ms(0.99)
        ));
        dialogd.stop().await;
        Ok(())
    }

    /// (f).
    pub async fn big_store(&mut self) -> Result<(), String> {
        let turns = self.scale.store_turns;
        self.line(format!(
            "\n## (f) A store of {turns} turns: start-up, memory, disk\n"
        ));
        let data = self.dir.path().join("big");
        let started = Instant::now();
        let dialogues = crate::fill::fill_store(&data, turns).await?;
        self.line(format!(
            "written through the store API: {turns} turns in {dialogues} dialogues in {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        let dialogd = self.dialogd("big", None, Some(&data)).await?;
        let startup = dialogd.started_in;
        // Live: a turn on an existing dialogue works.
        let clients = clients::connections(dialogd.addr, 1).await?;
        let turn_started = Instant::now();
        clients::converse(clients[0].clone(), clients::request("filled-0", MESSAGE)).await?;
        let first_turn = turn_started.elapsed();
        let rss = dialogd.rss_mib();
        dialogd.stop().await;
        self.line("\n| start-up (spawn to listening) | first turn | RSS after | disk |\n| --- | --- | --- | --- |");
        self.line(format!(
            "| {:.0} ms | {:.1} ms | {rss:.0} MiB | {:.0} MiB |",
            startup.as_secs_f64() * 1000.0,
            first_turn.as_secs_f64() * 1000.0,
            procs::disk_usage(&data) as f64 / (1024.0 * 1024.0)
        ));
        Ok(())
    }

    /// (g).
    pub async fn many_streams(&mut self) -> Result<(), String> {
        let n = self.scale.streams;
        self.line(format!("\n## (g) Memory with {n} concurrent streams\n"));
        // 100 tokens 30 ms apart: each stream stays open ~3 s.
        let mock = self
            .mock(MockSettings {
                tokens: 100,
                token_delay: Duration::from_millis(30),
            })
            .await?;
        let dialogd = self.dialogd("streams", Some(mock.addr), None).await?;
        let idle = dialogd.rss_mib();
        let clients = Arc::new(clients::connections(dialogd.addr, CONNECTIONS).await?);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..n as u64 {
            let client = pick(&clients, i);
            tasks.spawn(clients::converse_stream(
                client,
                clients::request(&format!("g-{i}"), MESSAGE),
            ));
        }
        let mut peak: f64 = 0.0;
        for _ in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            peak = peak.max(dialogd.rss_mib());
        }
        let mut ok = 0;
        let mut failed = None;
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(_)) => ok += 1,
                Ok(Err(e)) => failed = Some(e),
                Err(e) => failed = Some(e.to_string()),
            }
        }
        dialogd.stop().await;
        mock.stop().await;
        self.line(format!(
            "| idle RSS | peak RSS with {n} streams open | streams completed |\n| --- | --- | --- |\n| {idle:.0} MiB | **{peak:.0} MiB** | {ok} |"
        ));
        if let Some(e) = failed {
            self.line(format!("\na stream failed: {e}"));
        }
        self.line("\n(target: RSS < 150 MB with 1,000 streams)");
        Ok(())
    }
}

fn check(report: &Report) -> Result<(), String> {
    if report.ok == 0 {
        return Err(format!(
            "no call succeeded: {}",
            report.first_error.as_deref().unwrap_or("?")
        ));
    }
    println!("    {}", report.summary());
    Ok(())
}
