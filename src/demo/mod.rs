//! `switchyard demo`: two clusters (in-process ones, or two the user
//! already has), live traffic through the proxy, a flip from A to B in the
//! middle of it, and an integrity report.

pub mod existing;
mod report;
mod stored;
pub mod workload;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::config::Config;
use crate::proxy::{Proxy, Shared};
use existing::{Existing, RunNames};
pub use report::{print_report, ClusterKind, DemoReport, Duplicates, MirrorCheck};
use workload::{ProduceSpec, StoredIndex, StoredRecord};

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
/// request made by a real client (one without a group: the clusters behind
/// the proxy may be someone else's).
pub fn addresses_seen_by_client(bootstrap: &str) -> anyhow::Result<Vec<String>> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .create()?;
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
/// How long the demo's clients get to leave their group through switchyard
/// once the traffic ended early.
const CLIENTS_STOP_LIMIT: Duration = Duration::from_secs(30);

/// Which clusters the demo runs against.
#[derive(Debug, Clone)]
pub enum Clusters {
    /// Two in-process clusters of three brokers each, started and stopped
    /// by the demo.
    InProcess,
    /// Two clusters the user already has, by bootstrap servers.
    Existing { a: String, b: String },
}

/// What one run works with, wherever the clusters are.
#[derive(Debug, Clone)]
struct Setup {
    kind: ClusterKind,
    a: String,
    b: String,
    topic: String,
    group: String,
    /// Every real broker address of both clusters: clients must see none.
    real_brokers: Vec<String>,
}

/// Live traffic through switchyard with sync mirroring, a flip from A to B
/// in the middle of it, traffic carrying on against B, and an integrity
/// check of everything the producers had acknowledged.
pub async fn run(records: usize, clusters: Clusters) -> anyhow::Result<DemoReport> {
    anyhow::ensure!(
        records >= 2 * ROUND * PRODUCERS.len(),
        "--records must be at least {}",
        2 * ROUND * PRODUCERS.len()
    );
    let interrupted = interrupt_on_ctrl_c();
    match clusters {
        Clusters::InProcess => {
            let cluster_a = start_cluster(3, &[(TOPIC, PARTITIONS)])?;
            let cluster_b = start_cluster(3, &[(TOPIC, PARTITIONS)])?;
            let setup = Setup {
                kind: ClusterKind::InProcess,
                a: cluster_a.bootstrap_servers(),
                b: cluster_b.bootstrap_servers(),
                topic: TOPIC.into(),
                group: GROUP.into(),
                real_brokers: real_broker_addresses(&[&cluster_a, &cluster_b]),
            };
            println!("cluster A: {}", setup.a);
            println!("cluster B: {}", setup.b);
            drive(records, setup, &interrupted).await
        }
        Clusters::Existing { a, b } => run_on_existing(records, a, b, &interrupted).await,
    }
}

/// The demo on the user's clusters: its own topic and group, removed from
/// both clusters at the end whatever happened in between.
async fn run_on_existing(
    records: usize,
    a: String,
    b: String,
    interrupted: &CancellationToken,
) -> anyhow::Result<DemoReport> {
    let clusters = [
        Existing {
            label: "A",
            bootstrap: a,
        },
        Existing {
            label: "B",
            bootstrap: b,
        },
    ];
    let names = RunNames::unique();
    println!("cluster A: {} (existing)", clusters[0].bootstrap);
    println!("cluster B: {} (existing)", clusters[1].bootstrap);
    // Until the names are known to be free, nothing is created, so there is
    // nothing to clean up either.
    let real_brokers = until_interrupted(
        interrupted,
        existing::check_names_are_free(&clusters, &names),
    )
    .await?;
    println!(
        "topic and consumer group of this run: {} (topic created in A with {PARTITIONS} \
         partitions, copied to B by the mirror; both removed from both clusters at the end)",
        names.topic
    );
    let outcome = async {
        until_interrupted(
            interrupted,
            existing::create_topic(&clusters[0], &names.topic, PARTITIONS, JOIN_LIMIT),
        )
        .await?;
        let setup = Setup {
            kind: ClusterKind::Existing,
            a: clusters[0].bootstrap.clone(),
            b: clusters[1].bootstrap.clone(),
            topic: names.topic.clone(),
            group: names.group.clone(),
            real_brokers,
        };
        drive(records, setup, interrupted).await
    }
    .await;
    println!(
        "removing topic and group {} from both clusters ...",
        names.topic
    );
    let mut left_behind = Vec::new();
    for cleanup in existing::clean_up(&clusters, &names).await {
        println!(
            "  cluster {}: topic {}, group {}",
            cleanup.label, cleanup.topic, cleanup.group
        );
        left_behind.extend(cleanup.left_behind(&names));
    }
    let mut report = outcome?;
    report.left_behind = left_behind;
    Ok(report)
}

/// Cancelled at the first Ctrl-C, so that the run stops its clients and
/// switchyard and cleans up after itself; a second Ctrl-C exits at once.
fn interrupt_on_ctrl_c() -> CancellationToken {
    let interrupted = CancellationToken::new();
    let cancel = interrupted.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        eprintln!("interrupted: stopping the demo (Ctrl-C again to exit at once)");
        cancel.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    interrupted
}

async fn until_interrupted<T>(
    interrupted: &CancellationToken,
    work: impl Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::select! {
        result = work => result,
        _ = interrupted.cancelled() => Err(anyhow::anyhow!("interrupted")),
    }
}

/// Starts switchyard in front of the clusters, runs the traffic and the
/// flip, and stops switchyard again however the traffic ended: nothing of
/// the run may still reach the clusters once this returns.
async fn drive(
    records: usize,
    setup: Setup,
    interrupted: &CancellationToken,
) -> anyhow::Result<DemoReport> {
    let state = tempfile_dir()?;
    let config = loopback_config(&setup.a, Some(&setup.b), &state);
    let proxy = match Proxy::start(config).await {
        Ok(proxy) => proxy,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&state);
            return Err(e.into());
        }
    };
    let bootstrap = proxy.bootstrap_addr().to_string();
    println!(
        "switchyard: {bootstrap} (admin http://{}), mirroring A -> B in sync mode",
        proxy.admin_addr()
    );
    // A task of its own, so that a panic in it still stops the proxy
    // below; dropping the handle (when interrupted) ends the task and with
    // it the clients it started.
    let clients = TaskTracker::new();
    let traffic = AbortOnDropHandle::new(tokio::spawn(traffic(
        records,
        proxy.shared().clone(),
        bootstrap,
        setup,
        clients.clone(),
    )));
    let outcome = until_interrupted(interrupted, async {
        traffic
            .await
            .unwrap_or_else(|e| Err(anyhow::anyhow!("the demo's traffic stopped: {e}")))
    })
    .await;
    // A consumer leaves its group as it is dropped, and waits for the
    // group's coordinator to answer, which it reaches through switchyard:
    // the proxy stays up until every client is gone.
    clients.close();
    if tokio::time::timeout(CLIENTS_STOP_LIMIT, clients.wait())
        .await
        .is_err()
    {
        eprintln!(
            "the demo's clients did not stop within {} s; stopping switchyard anyway",
            CLIENTS_STOP_LIMIT.as_secs()
        );
    }
    proxy.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&state);
    outcome
}

/// The consumer group, the producers, the flip half-way, and the checks.
/// Every client runs in a task of `clients`, aborted if this ends early.
async fn traffic(
    records: usize,
    shared: Arc<Shared>,
    bootstrap: String,
    setup: Setup,
    clients: TaskTracker,
) -> anyhow::Result<DemoReport> {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::config::ClusterName;
    use crate::cutover::flip::{self, Direction};
    use workload::{AckLatencies, AckStalls, Commits};

    shared
        .set_mirror_mode(crate::config::MirrorMode::Sync)
        .map_err(anyhow::Error::msg)?;

    // The consumer group first: it reads everything from the beginning.
    let consumed = Arc::new(AtomicUsize::new(0));
    let target = Arc::new(AtomicUsize::new(0));
    let consumer = {
        let (bootstrap, target, consumed) = (bootstrap.clone(), target.clone(), consumed.clone());
        let (topic, group) = (setup.topic.clone(), setup.group.clone());
        AbortOnDropHandle::new(clients.spawn(async move {
            workload::consume_continuously(
                &bootstrap,
                &topic,
                &group,
                Commits::EveryRecord,
                target,
                consumed,
                Instant::now() + TRAFFIC_LIMIT,
            )
            .await
        }))
    };
    wait_until(JOIN_LIMIT, "the consumer to join its group", || {
        !shared
            .members
            .consuming(ClusterName::A, Instant::now() - Duration::from_secs(5))
            .is_empty()
    })
    .await?;
    println!(
        "consumer group {} joined; starting {} producers",
        setup.group,
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
                ..ProduceSpec::new(&setup.topic, share)
            }
            .set("client.id", prefix);
            let bootstrap = bootstrap.clone();
            AbortOnDropHandle::new(
                clients.spawn(async move { workload::produce(&bootstrap, &spec).await }),
            )
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
    let seen = {
        let bootstrap = bootstrap.clone();
        tokio::task::spawn_blocking(move || addresses_seen_by_client(&bootstrap)).await??
    };
    let leaked = seen
        .iter()
        .filter(|a| setup.real_brokers.contains(a))
        .count();
    let (in_a, in_b) = {
        let setup = setup.clone();
        let read = move |bootstrap: &str| {
            workload::read_cluster_as(bootstrap, &setup.group, &setup.topic, PARTITIONS)
        };
        tokio::task::spawn_blocking(move || anyhow::Ok((read(&setup.a)?, read(&setup.b)?)))
            .await??
    };
    let mirror = compare_clusters(&shared, &in_a, &in_b, &setup.topic);
    let ended_on = shared.primary();
    // Records are placed by what they hold, in the copy of the cluster the
    // clients ended on: the group read some from A and the rest from B,
    // and the two clusters' offsets agree only if both logs started
    // together (in-process clusters: yes; the user's clusters: not
    // necessarily).
    let stored = StoredIndex::of(match ended_on {
        ClusterName::A => &in_a,
        ClusterName::B => &in_b,
    });
    // The flip disturbs producers until each has had a record sent after
    // it acknowledged: waits up to then count as the flip's.
    let per_producer: Vec<_> = latencies.iter().map(|l| l.samples()).collect();
    let recovered = workload::recovered_at(&per_producer, flip_ended)
        .unwrap_or(flip_ended)
        .max(flip_ended);
    let samples: Vec<_> = per_producer.concat();
    let ack_wait = AckStalls::split(&samples, steady, (flip_started, recovered));
    Ok(DemoReport {
        clusters: setup.kind,
        topic: setup.topic.clone(),
        group: setup.group.clone(),
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
        integrity: workload::check_against(&acked, &consumed, &stored),
        duplicates: Duplicates::by_stored_copies(&consumed, &stored),
        left_behind: Vec::new(),
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

/// Checks that both clusters hold the same records, byte-equal and in the
/// same order per partition, each one's offset in the cluster it was
/// written to translated to its offset in the other by the mirror that
/// copied it. Nothing here assumes the two clusters' offsets are equal.
fn compare_clusters(
    shared: &Shared,
    in_a: &std::collections::BTreeMap<i32, Vec<StoredRecord>>,
    in_b: &std::collections::BTreeMap<i32, Vec<StoredRecord>>,
    topic: &str,
) -> MirrorCheck {
    use crate::config::ClusterName;
    use crate::translate::Translated;
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
        identical: in_a.len() == in_b.len(),
        ..MirrorCheck::default()
    };
    let empty = Vec::new();
    for (&partition, left) in in_a {
        let right = in_b.get(&partition).unwrap_or(&empty);
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
    check
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("switchyard-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
