//! `switchyard demo`: two in-process clusters, live traffic through the
//! proxy, and an integrity report.

pub mod workload;

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use serde::Serialize;

use crate::config::Config;
use crate::proxy::Proxy;
use workload::{IntegrityReport, ProduceSpec};

pub type Cluster = MockCluster<'static, DefaultProducerContext>;

/// A cluster of `brokers` in-process brokers with `topic` pre-created.
pub fn start_cluster(brokers: i32, topics: &[(&str, i32)]) -> anyhow::Result<Cluster> {
    let cluster = MockCluster::new(brokers)?;
    for (topic, partitions) in topics {
        cluster.create_topic(topic, *partitions, brokers.min(3))?;
    }
    Ok(cluster)
}

/// A proxy config for clusters on loopback, every port kernel-chosen.
pub fn loopback_config(a: &str, b: Option<&str>, state_dir: &std::path::Path) -> Config {
    let b = b
        .map(|b| format!("[clusters.b]\nbootstrap = \"{b}\"\n"))
        .unwrap_or_default();
    let text = format!(
        r#"
[listen]
bootstrap = "127.0.0.1:0"
advertised_host = "127.0.0.1"
node_port_base = 0

[clusters.a]
bootstrap = "{a}"
{b}
[admin]
listen = "127.0.0.1:0"

[state]
dir = "{}"

[upstream]
request_timeout_ms = 10000
"#,
        state_dir.display()
    );
    Config::from_toml_str(&text).expect("loopback config is valid")
}

/// Every broker address a client learns through the proxy, from a metadata
/// request made by a real client.
pub fn addresses_seen_by_client(bootstrap: &str) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer = workload::consumer_config(bootstrap, "metadata-probe").create()?;
    let metadata = consumer.fetch_metadata(None, Duration::from_secs(10))?;
    Ok(metadata
        .brokers()
        .iter()
        .map(|b| format!("{}:{}", b.host(), b.port()))
        .collect())
}

/// The real broker addresses of in-process clusters.
pub fn real_broker_addresses(clusters: &[&Cluster]) -> Vec<String> {
    clusters
        .iter()
        .flat_map(|c| {
            c.bootstrap_servers()
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[derive(Debug, Serialize)]
pub struct DemoReport {
    pub records: usize,
    /// Records cluster B holds for the topic, read straight from B.
    pub mirrored_records: usize,
    /// B holds A's records byte-equal in A's order, and the translation
    /// table maps every A offset to the same record in B.
    pub mirror_identical: bool,
    pub produce_seconds: f64,
    pub consume_seconds: f64,
    pub brokers_seen_by_clients: Vec<String>,
    pub real_brokers_leaked: usize,
    pub integrity: IntegrityReport,
}

pub async fn run(records: usize) -> anyhow::Result<DemoReport> {
    let topic = "orders";
    let cluster_a = start_cluster(3, &[(topic, 6)])?;
    let cluster_b = start_cluster(3, &[(topic, 6)])?;
    let state = tempfile_dir()?;
    let config = loopback_config(
        &cluster_a.bootstrap_servers(),
        Some(&cluster_b.bootstrap_servers()),
        &state,
    );
    let proxy = Proxy::start(config).await?;
    proxy
        .shared()
        .set_mirror_mode(crate::config::MirrorMode::Sync)
        .map_err(anyhow::Error::msg)?;
    let bootstrap = proxy.bootstrap_addr().to_string();
    println!("cluster A: {}", cluster_a.bootstrap_servers());
    println!("cluster B: {}", cluster_b.bootstrap_servers());
    println!(
        "switchyard: {bootstrap} (admin http://{})",
        proxy.admin_addr()
    );

    let started = Instant::now();
    let spec = ProduceSpec {
        compression: "lz4",
        idempotent: true,
        ..ProduceSpec::new(topic, records)
    };
    let acked = workload::produce(&bootstrap, &spec).await?;
    let produce_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let consumed = workload::consume(
        &bootstrap,
        topic,
        "demo-group",
        acked.len(),
        Duration::from_secs(60),
        true,
    )
    .await?;
    let consume_seconds = started.elapsed().as_secs_f64();

    let seen = addresses_seen_by_client(&bootstrap)?;
    let real = real_broker_addresses(&[&cluster_a, &cluster_b]);
    let leaked = seen.iter().filter(|a| real.contains(a)).count();
    let (mirrored_records, mirror_identical) =
        compare_clusters(&proxy, &cluster_a, &cluster_b, topic, 6)?;
    proxy.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&state);
    Ok(DemoReport {
        records,
        mirrored_records,
        mirror_identical,
        produce_seconds,
        consume_seconds,
        brokers_seen_by_clients: seen,
        real_brokers_leaked: leaked,
        integrity: workload::check(&acked, &consumed),
    })
}

/// Reads the topic straight from both clusters and checks that B holds A's
/// records, byte-equal and in order, with every offset translated.
fn compare_clusters(
    proxy: &Proxy,
    a: &Cluster,
    b: &Cluster,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<(usize, bool)> {
    use crate::translate::Translated;
    let in_a = workload::read_cluster(&a.bootstrap_servers(), topic, partitions)?;
    let in_b = workload::read_cluster(&b.bootstrap_servers(), topic, partitions)?;
    let mirror = proxy.shared().mirror();
    let mut identical = true;
    let mut total = 0;
    for partition in 0..partitions {
        let (left, right) = (&in_a[&partition], &in_b[&partition]);
        total += right.len();
        let same = |x: &workload::StoredRecord, y: &workload::StoredRecord| {
            (&x.key, &x.value, &x.headers, x.timestamp)
                == (&y.key, &y.value, &y.headers, y.timestamp)
        };
        let segments = mirror.and_then(|m| m.translation().partition(topic, partition));
        identical &= left.len() == right.len()
            && left.iter().zip(right).all(|(x, y)| {
                same(x, y)
                    && segments
                        .as_ref()
                        .is_some_and(|s| s.a_to_b(x.offset) == Translated::Offset(y.offset))
            });
    }
    Ok((total, identical))
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

pub fn print_report(report: &DemoReport) {
    let i = &report.integrity;
    println!();
    println!("integrity report");
    println!("  records produced      {}", report.records);
    println!("  acknowledged          {}", i.acknowledged);
    println!("  consumed              {}", i.consumed);
    println!("  lost                  {}", i.lost);
    println!("  duplicates            {}", i.duplicates);
    println!("  order violations      {}", i.order_violations);
    println!("  mirrored into B       {}", report.mirrored_records);
    println!(
        "  B identical to A      {} (byte-equal, same order, every offset translated)",
        if report.mirror_identical { "yes" } else { "NO" }
    );
    println!("  produce time          {:.2} s", report.produce_seconds);
    println!("  consume time          {:.2} s", report.consume_seconds);
    println!(
        "  brokers clients saw   {} (real brokers among them: {})",
        report.brokers_seen_by_clients.join(", "),
        report.real_brokers_leaked
    );
    println!(
        "  verdict               {}",
        if i.is_clean()
            && report.real_brokers_leaked == 0
            && i.acknowledged == report.records
            && report.mirror_identical
        {
            "PASS"
        } else {
            "FAIL"
        }
    );
}
