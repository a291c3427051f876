//! (h) The OpenAI path, stateless: `POST /v1/chat/completions` over
//! HTTP/1.1 keep-alive, through dialogd to the mock and to the mock alone,
//! in the same run — peak (closed loop), added latency at fixed open-loop
//! rates (measured from each request's scheduled start), and SSE time to
//! first event. dialogd's own overhead metric is read beside the
//! client-measured figure.

use super::{Bench, WORKERS, check};
use crate::clients::Upstream;
use crate::loadgen::{self, Mode, Report};
use crate::mock_upstream::MockSettings;
use std::time::Duration;

impl Bench {
    async fn closed_openai(&self, upstream: &Upstream) -> Result<Report, String> {
        let upstream = upstream.clone();
        let report = loadgen::run(
            Mode::Closed {
                concurrency: WORKERS,
            },
            self.scale.warmup,
            self.scale.duration,
            move |_| {
                let upstream = upstream.clone();
                async move { upstream.unary().await }
            },
        )
        .await;
        check(&report)?;
        Ok(report)
    }

    /// (h).
    pub async fn openai_path(&mut self) -> Result<(), String> {
        self.line("\n## (h) OpenAI path, stateless: dialogd+mock vs the mock alone (HTTP/1.1 keep-alive)\n");
        let mock = self
            .mock(MockSettings {
                tokens: 16,
                token_delay: Duration::ZERO,
            })
            .await?;
        let alone = Upstream::new(mock.addr)?;
        let dialogd = self.dialogd("openai", Some(mock.addr), None).await?;
        let through = Upstream::new(dialogd.addr)?;

        let base = self.closed_openai(&alone).await?;
        let ours = self.closed_openai(&through).await?;
        self.line(format!("closed loop, {WORKERS} connections:\n"));
        self.line("| server | req/s | p50 ms | p99 ms |\n| --- | --- | --- | --- |");
        for (name, r) in [("mock alone", &base), ("dialogd+mock", &ours)] {
            self.line(format!(
                "| {name} | {:.0} | {:.3} | {:.3} |",
                r.throughput(),
                r.ms(0.5),
                r.ms(0.99)
            ));
        }
        self.line(format!(
            "\n**dialogd / mock = {:.1}%** (target: ≥ 20,000 req/s through dialogd)\n",
            ours.throughput() / base.throughput() * 100.0
        ));

        self.line("| rate/s | mock p50 | mock p99 | dialogd+mock p50 | p99 | **added p50** | **added p99** |");
        self.line("| --- | --- | --- | --- | --- | --- | --- |");
        for rate in [50.0, 2000.0] {
            let a = self.open_upstream(&alone, rate, false).await?;
            let t = self.open_upstream(&through, rate, false).await?;
            self.line(format!(
                "| {rate:.0} | {:.3} | {:.3} | {:.3} | {:.3} | **{:.3}** | **{:.3}** |",
                a.ms(0.5),
                a.ms(0.99),
                t.ms(0.5),
                t.ms(0.99),
                t.ms(0.5) - a.ms(0.5),
                t.ms(0.99) - a.ms(0.99),
            ));
        }
        self.line("\n(ms; targets: added p99 ≤ 0.3 ms at 50/s, ≤ 0.5 ms at 2,000/s)\n");

        let a = self.open_upstream(&alone, 50.0, true).await?;
        let t = self.open_upstream(&through, 50.0, true).await?;
        self.line("| SSE at 50/s | first event p50 ms | p99 ms |\n| --- | --- | --- |");
        for (name, r) in [("mock alone", &a), ("dialogd+mock", &t)] {
            self.line(format!(
                "| {name} | {:.3} | {:.3} |",
                r.ttft_ms(0.5),
                r.ttft_ms(0.99)
            ));
        }
        self.line(format!(
            "| **added** | **{:.3}** | **{:.3}** |\n\n(target: added p99 ≤ 0.3 ms)",
            t.ttft_ms(0.5) - a.ttft_ms(0.5),
            t.ttft_ms(0.99) - a.ttft_ms(0.99)
        ));
        dialogd.stop().await;
        mock.stop().await;
        Ok(())
    }
}
