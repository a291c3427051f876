//! A throwaway Redis Cluster for tests: three masters on free local ports,
//! started from the machine's redis-server and joined with redis-cli
//! (both from Debian's redis-server package, which `.ci/run` ensures).
//! Shared by the store suite and the API tests through `#[path]`.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisCluster {
    servers: Vec<Child>,
    ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

/// A port free for the node and for its cluster bus (port + 10000).
fn free_port_pair() -> u16 {
    loop {
        let port = 20_000 + rand::random::<u16>() % 10_000;
        let free = |p: u16| TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs (Debian package redis-tools)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "redis cluster: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_node(dir: &Path, port: u16) -> Child {
    Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--cluster-enabled",
            "yes",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--cluster-config-file")
        .arg(dir.join(format!("nodes-{port}.conf")))
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server runs")
}

impl RedisCluster {
    /// Starts three masters and waits until the cluster serves all slots.
    pub fn start() -> RedisCluster {
        let dir = tempfile::TempDir::new().expect("a temp dir");
        let ports: Vec<u16> = (0..3).map(|_| free_port_pair()).collect();
        let servers = ports.iter().map(|&p| start_node(dir.path(), p)).collect();
        for &port in &ports {
            wait_until("a node answers", || {
                redis_cli(port, &["ping"]).trim() == "PONG"
            });
        }
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addresses.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let created = redis_cli(ports[0], &create);
        assert!(created.contains("All 16384 slots covered"), "{created}");
        for &port in &ports {
            wait_until("every node sees the cluster ok", || {
                redis_cli(port, &["cluster", "info"]).contains("cluster_state:ok")
            });
        }
        RedisCluster {
            servers,
            ports,
            _dir: dir,
        }
    }

    /// `redis://` addresses of the nodes.
    pub fn nodes(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect()
    }

    /// How many keys each node holds.
    pub fn keys_per_node(&self) -> Vec<u64> {
        self.ports
            .iter()
            .map(|&p| redis_cli(p, &["dbsize"]).trim().parse().unwrap_or(0))
            .collect()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}
