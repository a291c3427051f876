//! (i) The cost of encryption at rest on Converse: dialogd with durable
//! history, plain, with a one-key ring (`store.encryption`) and with
//! per-dialogue keys (`dialogue_key_file`), in the same run — peak
//! throughput (closed loop) and latency at a fixed open-loop rate.

use super::Bench;

impl Bench {
    pub async fn encryption(&mut self) -> Result<(), String> {
        self.line("\n## (i) Encryption at rest: Converse, echo backend, durable history, plain vs sealed vs per-dialogue keys\n");
        let key_file = self.dir.path().join("store-keys");
        std::fs::write(&key_file, dialogd::store::sealing::KeyRing::new_entry("k1"))
            .map_err(|e| e.to_string())?;
        let sealed_config = format!(
            "[store.encryption]\nkey_file = \"{}\"\nprimary = \"k1\"\n",
            key_file.display()
        );
        let keyed_config = format!(
            "{sealed_config}dialogue_key_file = \"{}\"\n",
            self.dir.path().join("dialogue-keys").display()
        );
        let mut rows = Vec::new();
        for (name, extra) in [
            ("plain", String::new()),
            ("sealed", sealed_config),
            ("dialogue_keys", keyed_config),
        ] {
            let server = self.dialogd_with(name, None, None, &extra).await?;
            let peak = self.closed_converse(server.addr, name).await?;
            let rate = 500.0;
            let paced = self
                .open_converse(server.addr, rate, &format!("{name}-open"))
                .await?;
            server.stop().await;
            rows.push((name, peak, paced));
        }
        self.line("| store | peak turns/s | p50 ms at 500/s | p99 ms at 500/s |\n| --- | --- | --- | --- |");
        for (name, peak, paced) in &rows {
            self.line(format!(
                "| {name} | {:.0} | {:.3} | {:.3} |",
                peak.throughput(),
                paced.ms(0.5),
                paced.ms(0.99)
            ));
        }
        if let [(_, plain, plain_paced), others @ ..] = &rows[..] {
            for (name, peak, paced) in others {
                self.line(format!(
                    "\n**{name} / plain peak = {:.0}%**; p50 at 500/s {:+.3} ms, p99 {:+.3} ms",
                    peak.throughput() / plain.throughput() * 100.0,
                    paced.ms(0.5) - plain_paced.ms(0.5),
                    paced.ms(0.99) - plain_paced.ms(0.99),
                ));
            }
        }
        Ok(())
    }
}
