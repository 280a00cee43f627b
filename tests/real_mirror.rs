//! Mirroring into real Apache Kafka when things go wrong: the mirror
//! cluster goes away under sync mode.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use common::kafka::{ClusterSpec, KafkaCluster, KAFKA_3, KAFKA_4};
use common::*;

/// A (Kafka 3, the line users migrate from) and B (Kafka 4), one broker
/// each; shared by the tests of this file that kill no broker, each with
/// topics of its own.
fn clusters() -> &'static (KafkaCluster, KafkaCluster) {
    static CLUSTERS: OnceLock<(KafkaCluster, KafkaCluster)> = OnceLock::new();
    CLUSTERS.get_or_init(|| {
        let a = std::thread::spawn(|| KafkaCluster::start(ClusterSpec::new(1).version(KAFKA_3)));
        let b =
            KafkaCluster::start(ClusterSpec::new(1).version(KAFKA_4)).expect("cluster B starts");
        let a = a.join().unwrap().expect("cluster A starts");
        (a, b)
    })
}

async fn post(admin: std::net::SocketAddr, path: &str, body: &str) -> serde_json::Value {
    let (status, text) = http_post(admin, path, body).await;
    let json: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path} answered {text}"));
    assert_eq!(status, 200, "{path}: {json:#}");
    json
}

async fn status(admin: std::net::SocketAddr) -> serde_json::Value {
    let (_, text) = http_get(admin, "/status").await;
    serde_json::from_str(&text).unwrap()
}

/// Record values per partition, in offset order.
fn values(stored: &BTreeMap<i32, Vec<StoredRecord>>) -> BTreeMap<i32, Vec<Vec<u8>>> {
    stored
        .iter()
        .map(|(p, records)| (*p, records.iter().filter_map(|r| r.value.clone()).collect()))
        .collect()
}

/// Both clusters hold every acknowledged record exactly once, and in the
/// same order per partition. Returns how many records each holds.
fn assert_each_once_in_the_same_order(
    a: &KafkaCluster,
    b: &KafkaCluster,
    topic: &str,
    partitions: i32,
    acked: &[RecordRef],
) -> usize {
    let in_a = values(&read_cluster(&a.bootstrap(), topic, partitions).unwrap());
    let in_b = values(&read_cluster(&b.bootstrap(), topic, partitions).unwrap());
    for (name, stored) in [("A", &in_a), ("B", &in_b)] {
        let mut seen: HashMap<&Vec<u8>, usize> = HashMap::new();
        for v in stored.values().flatten() {
            *seen.entry(v).or_default() += 1;
        }
        let twice: Vec<String> = seen
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(v, n)| format!("{} x{n}", String::from_utf8_lossy(&v[..v.len().min(16)])))
            .collect();
        assert!(
            twice.is_empty(),
            "{topic}: {name} stores records twice: {twice:?}"
        );
        for r in acked {
            let value = workload::record_value(&r.key, r.seq).into_bytes();
            assert!(
                seen.contains_key(&value),
                "{topic}: {}#{} acknowledged but not in {name}",
                r.key,
                r.seq
            );
        }
    }
    for p in 0..partitions {
        assert!(
            in_a[&p] == in_b[&p],
            "{topic}-{p}: A and B differ in content or order"
        );
    }
    in_b.values().map(Vec::len).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_acknowledges_from_the_journal_while_b_is_down_and_stores_each_record_once() {
    let a = &clusters().0;
    // This test kills B's only broker: a cluster of its own.
    let mut b = KafkaCluster::start(ClusterSpec::new(1)).expect("cluster B starts");
    let topic = "rm-sync-down";
    const PARTITIONS: i32 = 3;
    a.create_topic(topic, PARTITIONS, 1, &[]).unwrap();
    b.create_topic(topic, PARTITIONS, 1, &[]).unwrap();
    let harness = start_proxy_with(a, Some(&b), |config| {
        config.mirror.sync_timeout_ms = 300;
        config.mirror.gap_timeout_ms = 2_000;
    })
    .await;
    let admin = harness.proxy.admin_addr();
    post(admin, "/mirror", r#"{"mode":"sync"}"#).await;

    // A non-idempotent producer (acks=1, retries as configured by default)
    // writes while B is down: a retriable error would make it write the
    // same records again.
    let producer = |prefix: &str, records: usize| {
        ProduceSpec {
            idempotent: false,
            keys: 6,
            key_prefix: prefix.to_owned(),
            batch: 10,
            ..ProduceSpec::new(topic, records)
        }
        .set("acks", "1")
        .set("message.timeout.ms", "20000")
    };
    let before = workload::produce(&harness.bootstrap(), &producer("up", 30))
        .await
        .unwrap();
    assert_eq!(before.len(), 30);
    b.kill_broker(1);
    let during = workload::produce(&harness.bootstrap(), &producer("down", 150))
        .await
        .unwrap();
    assert_eq!(
        during.len(),
        150,
        "every record written while B is down is acknowledged"
    );

    let (_, metrics) = http_get(admin, "/metrics").await;
    let timeouts = metric_value(&metrics, "switchyard_mirror_sync_timeouts_total", &[]);
    assert!(timeouts > 0.0, "sync timeouts are counted");
    let lag = status(admin).await["mirroring"]["lag_records"]
        .as_i64()
        .unwrap();
    assert!(lag > 0, "B is down: the records wait for it");
    let journal = harness.state.path().join("mirror-journal-a-to-b.log");
    assert!(
        std::fs::metadata(&journal).unwrap().len() > 0,
        "what was acknowledged unconfirmed is in the journal"
    );

    b.restart_broker(1).unwrap();
    wait_for_mirror_lag_zero(admin).await;
    let mut acked = before;
    acked.extend(during);
    let stored = assert_each_once_in_the_same_order(a, &b, topic, PARTITIONS, &acked);
    assert_eq!(stored, acked.len());
    eprintln!("sync timeouts: {timeouts}, records stored once in A and B: {stored}");
    harness.stop().await;
}
