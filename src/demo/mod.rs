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

// The demo's traffic.
const TOPIC: &str = "orders";
const PARTITIONS: i32 = 6;
const GROUP: &str = "demo-group";
/// Idempotent producers, each with its own keys and compression.
const PRODUCERS: [(&str, &str); 2] = [("p1", "lz4"), ("p2", "none")];
const KEYS_PER_PRODUCER: usize = 8;
/// Each producer sends rounds of `ROUND` records and waits for their
/// acknowledgements, then pauses `PAUSE` before the next round.
const ROUND: usize = 25;
const PAUSE: Duration = Duration::from_millis(10);
/// Bounds on the waits for conditions; never fixed sleeps.
const JOIN_LIMIT: Duration = Duration::from_secs(30);
const TRAFFIC_LIMIT: Duration = Duration::from_secs(180);
const MIRROR_LIMIT: Duration = Duration::from_secs(60);

/// Live traffic through switchyard with sync mirroring, a flip from A to B
/// in the middle of it, traffic carrying on against B, and an integrity
/// check of everything the producers had acknowledged.
pub async fn run(records: usize) -> anyhow::Result<DemoReport> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use crate::config::ClusterName;
    use crate::cutover::flip::{self, Direction};
    use workload::{AckLatencies, AckStalls, Commits};

    anyhow::ensure!(
        records >= 2 * ROUND * PRODUCERS.len(),
        "--records must be at least {}",
        2 * ROUND * PRODUCERS.len()
    );
    let cluster_a = start_cluster(3, &[(TOPIC, PARTITIONS)])?;
    let cluster_b = start_cluster(3, &[(TOPIC, PARTITIONS)])?;
    let state = tempfile_dir()?;
    let config = loopback_config(
        &cluster_a.bootstrap_servers(),
        Some(&cluster_b.bootstrap_servers()),
        &state,
    );
    let proxy = Proxy::start(config).await?;
    let shared = proxy.shared().clone();
    shared
        .set_mirror_mode(crate::config::MirrorMode::Sync)
        .map_err(anyhow::Error::msg)?;
    let bootstrap = proxy.bootstrap_addr().to_string();
    println!("cluster A: {}", cluster_a.bootstrap_servers());
    println!("cluster B: {}", cluster_b.bootstrap_servers());
    println!(
        "switchyard: {bootstrap} (admin http://{}), mirroring A -> B in sync mode",
        proxy.admin_addr()
    );

    // The consumer group first: it reads everything from the beginning.
    let consumed = Arc::new(AtomicUsize::new(0));
    let target = Arc::new(AtomicUsize::new(0));
    let consumer = {
        let (bootstrap, target, consumed) = (bootstrap.clone(), target.clone(), consumed.clone());
        tokio::spawn(async move {
            workload::consume_continuously(
                &bootstrap,
                TOPIC,
                GROUP,
                Commits::EveryRecord,
                target,
                consumed,
                Instant::now() + TRAFFIC_LIMIT,
            )
            .await
        })
    };
    wait_until(JOIN_LIMIT, "the consumer to join its group", || {
        !shared
            .members
            .consuming(ClusterName::A, Instant::now() - Duration::from_secs(5))
            .is_empty()
    })
    .await?;
    println!(
        "consumer group {GROUP} joined; starting {} producers",
        PRODUCERS.len()
    );

    let latencies: Vec<Arc<AckLatencies>> = PRODUCERS
        .iter()
        .map(|_| Arc::new(AckLatencies::default()))
        .collect();
    let per_producer: Vec<Arc<AtomicUsize>> = PRODUCERS
        .iter()
        .map(|_| Arc::new(AtomicUsize::new(0)))
        .collect();
    let started = Instant::now();
    let producers: Vec<_> = PRODUCERS
        .iter()
        .zip(per_producer.iter().zip(&latencies))
        .enumerate()
        .map(|(n, ((prefix, compression), (progress, latency)))| {
            // An even share each; the first producers take the remainder.
            let share = records / PRODUCERS.len() + usize::from(n < records % PRODUCERS.len());
            let spec = ProduceSpec {
                compression,
                idempotent: true,
                keys: KEYS_PER_PRODUCER,
                key_prefix: (*prefix).to_owned(),
                batch: ROUND,
                pause: PAUSE,
                progress: Some(progress.clone()),
                latency: Some(latency.clone()),
                ..ProduceSpec::new(TOPIC, share)
            }
            .set("client.id", prefix);
            let bootstrap = bootstrap.clone();
            tokio::spawn(async move { workload::produce(&bootstrap, &spec).await })
        })
        .collect();

    let produced = || -> usize { per_producer.iter().map(|p| p.load(Ordering::Relaxed)).sum() };
    // Warm-up: until every producer has its first round acknowledged, the
    // clients are still connecting and looking up metadata, and the mirror
    // is starting its per-partition writers.
    wait_until(JOIN_LIMIT, "every producer's first acknowledgement", || {
        per_producer
            .iter()
            .all(|p| p.load(Ordering::Relaxed) >= ROUND)
    })
    .await?;
    let steady = Instant::now();
    // The flip, once half the records are acknowledged and the consumer is
    // reading.
    let half = records / 2;
    wait_until(TRAFFIC_LIMIT, "half the records to be acknowledged", || {
        produced() >= half && consumed.load(Ordering::Relaxed) > 0
    })
    .await?;
    let acknowledged_before_flip = produced();
    println!("flipping to cluster B with {acknowledged_before_flip} records acknowledged ...");
    let flip_started = Instant::now();
    let flip = flip::run(&shared, Direction::Flip, false).await;
    let flip_ended = Instant::now();
    let acknowledged_at_flip_end = produced();
    println!(
        "flip {:?} in {} ms; traffic carries on against cluster {}",
        flip.outcome,
        flip.duration_ms,
        shared.primary()
    );

    let mut acked = Vec::with_capacity(records);
    for producer in producers {
        acked.extend(producer.await??);
    }
    let traffic_seconds = started.elapsed().as_secs_f64();
    let tail = Instant::now();
    target.store(acked.len(), Ordering::Release);
    let consumed = consumer.await??;
    let consume_tail_seconds = tail.elapsed().as_secs_f64();

    // Whatever was written last is mirrored before the clusters are compared.
    wait_until(MIRROR_LIMIT, "the mirror to catch up", || {
        shared.mirror().is_none_or(|m| m.lag_records() == 0)
    })
    .await?;
    let seen = addresses_seen_by_client(&bootstrap)?;
    let real = real_broker_addresses(&[&cluster_a, &cluster_b]);
    let leaked = seen.iter().filter(|a| real.contains(a)).count();
    let mirror = compare_clusters(&proxy, &cluster_a, &cluster_b, TOPIC, PARTITIONS)?;
    let ended_on = shared.primary();
    // The flip disturbs producers until each has had a record sent after
    // it acknowledged: waits up to then count as the flip's.
    let per_producer: Vec<_> = latencies.iter().map(|l| l.samples()).collect();
    let recovered = workload::recovered_at(&per_producer, flip_ended)
        .unwrap_or(flip_ended)
        .max(flip_ended);
    let samples: Vec<_> = per_producer.concat();
    let ack_wait = AckStalls::split(&samples, steady, (flip_started, recovered));
    proxy.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&state);
    Ok(DemoReport {
        records,
        producers: PRODUCERS.len(),
        acknowledged_before_flip,
        acknowledged_during_flip: acknowledged_at_flip_end - acknowledged_before_flip,
        acknowledged_after_flip: acked.len().saturating_sub(acknowledged_at_flip_end),
        flip,
        ended_on,
        ack_wait,
        recovered_ms: (recovered - flip_ended).as_secs_f64() * 1000.0,
        mirror,
        traffic_seconds,
        consume_tail_seconds,
        brokers_seen_by_clients: seen,
        real_brokers_leaked: leaked,
        integrity: workload::check(&acked, &consumed),
        duplicates: Duplicates::of(&consumed),
    })
}

/// Polls `condition` every 20 ms until it holds, or fails after `limit`.
async fn wait_until(
    limit: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !condition() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "gave up after {} s waiting for {what}",
            limit.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Reads the topic straight from both clusters and checks that they hold
/// the same records, byte-equal and in order, each one's offset in the
/// cluster it was written to translated to its offset in the other.
fn compare_clusters(
    proxy: &Proxy,
    a: &Cluster,
    b: &Cluster,
    topic: &str,
    partitions: i32,
) -> anyhow::Result<MirrorCheck> {
    use crate::config::ClusterName;
    use crate::translate::Translated;
    let in_a = workload::read_cluster(&a.bootstrap_servers(), topic, partitions)?;
    let in_b = workload::read_cluster(&b.bootstrap_servers(), topic, partitions)?;
    let shared = proxy.shared();
    let segments = |from: ClusterName, partition: i32| {
        shared
            .mirror_from(from)
            .and_then(|m| m.translation().partition(topic, partition))
    };
    // "a" in a translation table is the cluster mirrored from.
    let maps = |segments: &Option<crate::translate::PartitionSegments>, from: i64, to: i64| {
        segments
            .as_ref()
            .is_some_and(|s| s.contains_a(from) && s.a_to_b(from) == Translated::Offset(to))
    };
    let mut check = MirrorCheck {
        identical: true,
        ..MirrorCheck::default()
    };
    for partition in 0..partitions {
        let (left, right) = (&in_a[&partition], &in_b[&partition]);
        check.records_in_a += left.len();
        check.records_in_b += right.len();
        check.identical &= left.len() == right.len();
        let (a_to_b, b_to_a) = (
            segments(ClusterName::A, partition),
            segments(ClusterName::B, partition),
        );
        for (x, y) in left.iter().zip(right) {
            let same = (&x.key, &x.value, &x.headers, x.timestamp)
                == (&y.key, &y.value, &y.headers, y.timestamp);
            if maps(&a_to_b, x.offset, y.offset) {
                check.written_to_a += 1;
            } else if maps(&b_to_a, y.offset, x.offset) {
                check.written_to_b += 1;
            } else {
                check.identical = false;
            }
            check.identical &= same;
        }
    }
    Ok(check)
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

