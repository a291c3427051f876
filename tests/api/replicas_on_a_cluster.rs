//! Two dialogd processes on a real three-node Redis Cluster: the shared
//! dialogue scenario of `replicas.rs`, where every script, lock and index
//! must work across shards.

use crate::redis_cluster::RedisCluster;
use crate::replicas::{SharedRedis, two_replicas_share_a_dialogue};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_share_dialogues_on_a_redis_cluster() {
    let cluster = RedisCluster::start();
    let nodes: Vec<String> = cluster.nodes().iter().map(|n| format!("{n:?}")).collect();
    let redis = SharedRedis {
        connection: format!("cluster_nodes = [{}]", nodes.join(", ")),
        prefix: "test:".into(),
    };
    two_replicas_share_a_dialogue(&redis).await;
}
