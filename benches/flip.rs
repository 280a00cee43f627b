//! Flip benchmark: how long a flip from A to B takes under live traffic, and
//! how long clients stall because of it.
//!
//! Each round starts two fresh 3-broker librdkafka mock clusters (or uses
//! two real brokers, see `SWITCHYARD_BENCH_KAFKA` below) and a fresh
//! switchyard in front of them with sync mirroring A -> B, then runs paced
//! idempotent producers (and, unless `FLIP_CONSUMER=0`, one consumer group
//! member) through switchyard. Once every producer has its first round
//! acknowledged (the warm-up: connections, metadata, producer ids, the
//! mirror's per-partition writers) and half the records are acknowledged,
//! it flips to B in-process (`cutover::flip::run`), lets the traffic finish
//! on B, and checks that every acknowledged record was consumed (when there
//! is a consumer).
//!
//! What is measured, per round:
//! - the flip's duration and how long Produce and joins were held (the
//!   flip's own report), and each step's time;
//! - recovery: how long after the flip ended every producer had a record
//!   sent after the flip acknowledged. Clients reconnect after the flip
//!   (their sessions with A are closed) and look up metadata again; a
//!   producer that was pausing between rounds during a short flip meets
//!   that only with its next round, after the flip has ended;
//! - every acknowledged record's wait, from `send` to its delivery report,
//!   measured in the producer. "In the flip" are records that were waiting
//!   at some moment from the flip's start to the producers' recovery (sent
//!   before the recovery, acknowledged after the flip began); "outside" are
//!   all others after the warm-up. A producer waits for a round before it
//!   sends the next, so a stall holds one round (`FLIP_BATCH` records) per
//!   producer: the max is the longest stall, and the p99 shows it while the
//!   stalled rounds are more than 1% of the window's records.
//!
//! The summary prints the median over the rounds of each figure.
//!
//! Run with `cargo bench --bench flip`. Environment:
//! - `FLIP_ROUNDS` (default 3): rounds, each with fresh clusters and proxy.
//! - `FLIP_RECORDS` (default 12000): records per round, all producers
//!   together.
//! - `FLIP_PRODUCERS` (default 2): idempotent producers, each with its own
//!   keys.
//! - `FLIP_BATCH` (default 20) and `FLIP_PAUSE_MS` (default 10): a producer
//!   sends `FLIP_BATCH` records, waits for their acknowledgements, pauses
//!   `FLIP_PAUSE_MS`, and so on.
//! - `FLIP_CONSUMER`: 0 runs without a consumer group; 1 (the default on the
//!   mock clusters) commits asynchronously after every record; 2 (the
//!   default on real Kafka) auto-commits every 200 ms and on revocation.
//!   A real broker answers a connection's requests one at a time, so a
//!   commit per record queues thousands of OffsetCommits ahead of the
//!   member's heartbeats on its coordinator connection: on this 2-core
//!   machine the session timed out while the group read A's history, and
//!   the flip's group step waited its full 8 s for a revocation.
//! - `FLIP_HISTORY` (default 0 on the mock clusters, 2500 on real Kafka):
//!   records per partition (on average: keyed) written straight to A before
//!   switchyard starts. The group reads and commits them through switchyard
//!   before mirroring is turned on, so A's offsets run ahead of B's and the
//!   flip has to translate the group's positions.
//! - `SWITCHYARD_BENCH_KAFKA=1`: real Apache Kafka instead of the mock
//!   clusters: two one-broker KRaft clusters of the Kafka version the
//!   integration tests use, started once through the tests' harness
//!   (`tests/common/kafka.rs`; needs Java and, the first time, Maven) with
//!   the JVM options of Kafka's own start scripts (1 GiB heap, G1, full
//!   JIT). Every round has its own topic (replication factor 1, created in
//!   both clusters), group and switchyard.
//! - `RUST_LOG` (default `warn,switchyard::mirror=error`): log filter
//!   (stderr). Clients log their disconnections at the flip.
//!
//! Integrity is judged by content: once mirroring back (B -> A) has caught
//! up, A holds every record of the round, and each record the group read is
//! placed by where A stores it (with history, A's and B's offsets differ).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{env_or, median, Clusters, KafkaPair};

use anyhow::{bail, Context as _};
use switchyard::config::{ClusterName, MirrorMode};
use switchyard::cutover::flip::{self, Direction, Outcome};
use switchyard::demo::workload::{
    self, AckLatencies, AckStalls, AckStats, Commits, ProduceSpec, RecordRef, StoredIndex,
};
use switchyard::demo::{loopback_config, Duplicates};
use switchyard::mirror::client::ClusterClient;
use switchyard::Proxy;

const PARTITIONS: i32 = 6;
const KEYS_PER_PRODUCER: usize = 8;
/// Keys of the history written straight to A, spread over the partitions.
const HISTORY_KEYS: usize = 8 * PARTITIONS as usize;
const DEFAULT_LOG: &str = "warn,switchyard::mirror=error";
/// Bounds on the waits for conditions.
const JOIN_LIMIT: Duration = Duration::from_secs(30);
const TRAFFIC_LIMIT: Duration = Duration::from_secs(300);
const FLIP_STEPS: [&str; 7] = [
    "check", "fence", "groups", "drain", "settle", "switch", "unfence",
];

struct Settings {
    rounds: usize,
    records: usize,
    /// Records per partition written straight to A first.
    history: usize,
    producers: usize,
    batch: usize,
    pause: Duration,
    /// How the group member commits; `None`: no consumer.
    consumer: Option<Commits>,
}

/// One round's figures (milliseconds unless named otherwise).
struct Sample {
    flip_ms: f64,
    fenced_ms: f64,
    steps_ms: [f64; FLIP_STEPS.len()],
    stalls: AckStalls,
    /// From the flip's end until every producer had a record sent after
    /// the flip acknowledged.
    recovered_ms: f64,
    acknowledged: usize,
    acknowledged_before_flip: usize,
    history: usize,
    lost: usize,
    /// Duplicates consumed: the same record read again, and a second copy
    /// stored at another offset (a retried write that had landed; the mock
    /// cluster does not deduplicate idempotent producers).
    read_again: usize,
    stored_twice: usize,
    order_violations: usize,
}

/// Polls `condition` every 10 ms until it holds, or fails after `limit`.
async fn wait_until(
    limit: Duration,
    what: &str,
    mut condition: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !condition() {
        if Instant::now() >= deadline {
            bail!("gave up after {} s waiting for {what}", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// One round's topic and group, and where A and B are.
struct Names {
    topic: String,
    group: String,
    a: String,
    b: String,
}

fn run_round(
    rt: &tokio::runtime::Runtime,
    kafka: Option<&KafkaPair>,
    round: usize,
    settings: &Settings,
) -> anyhow::Result<Sample> {
    // Mock clusters are not Send: they stay on this thread, and the round's
    // async part runs here too (block_on).
    let clusters = Clusters::start(kafka, 3)?;
    let names = Names {
        topic: format!("flip-bench-{round}"),
        group: format!("flip-bench-group-{round}"),
        a: clusters.a(),
        b: clusters.b(),
    };
    clusters.create_topic(&names.topic, PARTITIONS)?;
    let state = tempfile::tempdir()?;
    let config = loopback_config(&names.a, Some(&names.b), state.path());
    let sample = rt.block_on(async {
        let history = write_history(&names, settings.history * PARTITIONS as usize).await?;
        let proxy = Proxy::start(config).await?;
        let result = traffic_and_flip(&proxy, settings, &names, history).await;
        proxy.shutdown(Duration::from_secs(2)).await;
        result
    });
    drop(clusters);
    sample
}

/// Writes `records` keyed records straight to A (not through switchyard).
async fn write_history(names: &Names, records: usize) -> anyhow::Result<Vec<RecordRef>> {
    if records == 0 {
        return Ok(Vec::new());
    }
    let spec = ProduceSpec {
        keys: HISTORY_KEYS,
        key_prefix: "history".into(),
        batch: 2000,
        compression: "lz4",
        ..ProduceSpec::new(&names.topic, records)
    };
    let acked = workload::produce(&names.a, &spec).await?;
    if acked.len() != records {
        bail!("history: {} of {records} records acknowledged", acked.len());
    }
    Ok(acked)
}

/// Each partition's end offset after `records` were written to it.
fn end_offsets(records: &[RecordRef]) -> std::collections::BTreeMap<i32, i64> {
    let mut ends = std::collections::BTreeMap::new();
    for r in records {
        let end = ends.entry(r.partition).or_insert(0);
        *end = (*end).max(r.offset + 1);
    }
    ends
}

async fn traffic_and_flip(
    proxy: &Proxy,
    settings: &Settings,
    names: &Names,
    history: Vec<RecordRef>,
) -> anyhow::Result<Sample> {
    let shared = proxy.shared().clone();
    let bootstrap = proxy.bootstrap_addr().to_string();

    let consumed = Arc::new(AtomicUsize::new(0));
    let target = Arc::new(AtomicUsize::new(0));
    let consumer = if let Some(commits) = settings.consumer {
        let (bootstrap, target, consumed) = (bootstrap.clone(), target.clone(), consumed.clone());
        let (topic, group) = (names.topic.clone(), names.group.clone());
        let consumer = tokio::spawn(async move {
            workload::consume_continuously(
                &bootstrap,
                &topic,
                &group,
                commits,
                target,
                consumed,
                Instant::now() + TRAFFIC_LIMIT,
            )
            .await
        });
        wait_until(JOIN_LIMIT, "the consumer to join its group", || {
            !shared
                .members
                .consuming(ClusterName::A, Instant::now() - Duration::from_secs(5))
                .is_empty()
        })
        .await?;
        Some(consumer)
    } else {
        None
    };
    if settings.consumer.is_some() && !history.is_empty() {
        // A committed position translates to B (the flip's readiness check)
        // when it is A's end as mirroring starts or a mirrored record's: the
        // group reads and commits the history before mirroring is turned on,
        // as in tests/real_cutover.rs.
        wait_until(TRAFFIC_LIMIT, "the group to read A's history", || {
            consumed.load(Ordering::Relaxed) >= history.len()
        })
        .await?;
        let ends = end_offsets(&history);
        let client = ClusterClient::new(
            ClusterName::A,
            names.a.split(',').map(str::to_owned).collect(),
            Duration::from_secs(10),
        );
        let deadline = Instant::now() + TRAFFIC_LIMIT;
        loop {
            let committed = client
                .committed_offsets(&names.group)
                .await
                .unwrap_or_default();
            if ends
                .iter()
                .all(|(&p, end)| committed.get(&(names.topic.clone(), p)) == Some(end))
            {
                break;
            }
            if Instant::now() >= deadline {
                bail!("the group did not commit A's history: {committed:?}, ends {ends:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    shared
        .set_mirror_mode(MirrorMode::Sync)
        .map_err(anyhow::Error::msg)?;

    let latencies: Vec<Arc<AckLatencies>> = (0..settings.producers)
        .map(|_| Arc::new(AckLatencies::default()))
        .collect();
    let progress: Vec<Arc<AtomicUsize>> = (0..settings.producers)
        .map(|_| Arc::new(AtomicUsize::new(0)))
        .collect();
    let producers: Vec<_> = progress
        .iter()
        .zip(&latencies)
        .enumerate()
        .map(|(n, (progress, latency))| {
            let share = settings.records / settings.producers
                + usize::from(n < settings.records % settings.producers);
            let prefix = format!("p{n}");
            let spec = ProduceSpec {
                idempotent: true,
                compression: if n % 2 == 0 { "lz4" } else { "none" },
                keys: KEYS_PER_PRODUCER,
                key_prefix: prefix.clone(),
                batch: settings.batch,
                pause: settings.pause,
                progress: Some(progress.clone()),
                latency: Some(latency.clone()),
                ..ProduceSpec::new(&names.topic, share)
            }
            .set("client.id", &prefix);
            let bootstrap = bootstrap.clone();
            tokio::spawn(async move { workload::produce(&bootstrap, &spec).await })
        })
        .collect();
    let produced = || -> usize { progress.iter().map(|p| p.load(Ordering::Relaxed)).sum() };

    wait_until(JOIN_LIMIT, "every producer's first acknowledgement", || {
        progress
            .iter()
            .all(|p| p.load(Ordering::Relaxed) >= settings.batch.min(settings.records / 2))
    })
    .await?;
    let steady = Instant::now();
    wait_until(TRAFFIC_LIMIT, "half the records to be acknowledged", || {
        produced() >= settings.records / 2
            && (settings.consumer.is_none() || consumed.load(Ordering::Relaxed) > history.len())
    })
    .await?;
    let acknowledged_before_flip = produced();
    let flip_started = Instant::now();
    let report = flip::run(&shared, Direction::Flip, false).await;
    let flip_ended = Instant::now();
    if report.outcome != Outcome::Flipped {
        bail!(
            "the flip did not happen ({:?}): {}",
            report.outcome,
            report.reasons.join("; ")
        );
    }
    if produced() >= settings.records {
        bail!("the producers were done before the flip; raise FLIP_RECORDS");
    }

    let mut acked: Vec<RecordRef> = Vec::with_capacity(settings.records);
    for producer in producers {
        acked.extend(producer.await.context("producer task")??);
    }
    target.store(history.len() + acked.len(), Ordering::Release);
    let integrity = match consumer {
        Some(consumer) => {
            let consumed = consumer.await.context("consumer task")??;
            wait_until(TRAFFIC_LIMIT, "mirroring back to A to catch up", || {
                shared.mirror().is_none_or(|m| m.lag_records() == 0)
            })
            .await?;
            let (a, topic) = (names.a.clone(), names.topic.clone());
            let in_a =
                tokio::task::spawn_blocking(move || workload::read_cluster(&a, &topic, PARTITIONS))
                    .await??;
            let stored = StoredIndex::of(&in_a);
            let mut all = history.clone();
            all.extend(acked.iter().cloned());
            Some((
                workload::check_against(&all, &consumed, &stored),
                Duplicates::by_stored_copies(&consumed, &stored),
            ))
        }
        None => None,
    };

    let per_producer: Vec<_> = latencies.iter().map(|l| l.samples()).collect();
    let recovered = workload::recovered_at(&per_producer, flip_ended)
        .unwrap_or(flip_ended)
        .max(flip_ended);
    let stalls = AckStalls::split(&per_producer.concat(), steady, (flip_started, recovered));
    let mut steps_ms = [f64::NAN; FLIP_STEPS.len()];
    for step in &report.steps {
        if let Some(i) = FLIP_STEPS.iter().position(|s| *s == step.step) {
            steps_ms[i] = step.ms as f64;
        }
    }
    Ok(Sample {
        flip_ms: report.duration_ms as f64,
        fenced_ms: report.fenced_ms as f64,
        steps_ms,
        stalls,
        recovered_ms: (recovered - flip_ended).as_secs_f64() * 1000.0,
        acknowledged: acked.len(),
        acknowledged_before_flip,
        history: history.len(),
        lost: integrity.as_ref().map_or(0, |(i, _)| i.lost),
        read_again: integrity.as_ref().map_or(0, |(_, d)| d.read_again),
        stored_twice: integrity.as_ref().map_or(0, |(_, d)| d.stored_twice),
        order_violations: integrity.as_ref().map_or(0, |(i, _)| i.order_violations),
    })
}

/// Summary row: name, and how to read it from a round's sample.
type Row = (&'static str, fn(&Sample) -> f64);

fn consumer_label(consumer: Option<Commits>) -> &'static str {
    match consumer {
        Some(Commits::EveryRecord) => "one consumer group member committing every record",
        Some(Commits::Auto) => "one consumer group member auto-committing every 200 ms",
        None => "no consumer",
    }
}

fn stats_line(s: &AckStats) -> String {
    format!(
        "p99 {:.0} ms, max {:.0} ms ({} records)",
        s.p99_ms, s.max_ms, s.records
    )
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let real_kafka = common::real_kafka();
    let settings = Settings {
        rounds: env_or("FLIP_ROUNDS", 3usize).max(1),
        records: env_or("FLIP_RECORDS", 12_000usize),
        history: env_or("FLIP_HISTORY", if real_kafka { 2500usize } else { 0 }),
        producers: env_or("FLIP_PRODUCERS", 2usize).max(1),
        batch: env_or("FLIP_BATCH", 20usize).max(1),
        pause: Duration::from_millis(env_or("FLIP_PAUSE_MS", 10u64)),
        consumer: match env_or("FLIP_CONSUMER", if real_kafka { 2u8 } else { 1 }) {
            0 => None,
            1 => Some(Commits::EveryRecord),
            2 => Some(Commits::Auto),
            other => bail!("FLIP_CONSUMER={other}: 0, 1 or 2"),
        },
    };
    if settings.records < 4 * settings.batch * settings.producers {
        bail!(
            "FLIP_RECORDS must be at least {} (four rounds per producer)",
            4 * settings.batch * settings.producers
        );
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;

    let kafka = real_kafka
        .then(|| KafkaPair::start(None))
        .transpose()
        .context("starting the Kafka clusters")?;
    let clusters = Clusters::describe(kafka.as_ref(), 3);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "switchyard flip: {} round(s), {} records per round from {} idempotent producer(s) \
         ({}-record rounds, {} ms apart), {}, sync mirroring, {clusters}, {} history records \
         per partition in A, {cpus} CPU(s)",
        settings.rounds,
        settings.records,
        settings.producers,
        settings.batch,
        settings.pause.as_millis(),
        consumer_label(settings.consumer),
        settings.history,
    );
    let started = Instant::now();
    let mut samples = Vec::new();
    for round in 0..settings.rounds {
        let s = run_round(&rt, kafka.as_ref(), round, &settings)
            .with_context(|| format!("round {round}"))?;
        eprintln!(
            "  round {round}: flip {:.0} ms (held {:.0} ms), steps {}; acks in the flip {}; \
             outside {}; producers recovered {:.0} ms after the flip; {} acknowledged ({} before the flip) \
             after {} history records, lost {}, duplicates {} read again + {} stored twice, order \
             violations {}",
            s.flip_ms,
            s.fenced_ms,
            FLIP_STEPS
                .iter()
                .zip(s.steps_ms)
                .map(|(name, ms)| format!("{name} {ms:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            stats_line(&s.stalls.during),
            stats_line(&s.stalls.outside),
            s.recovered_ms,
            s.acknowledged,
            s.acknowledged_before_flip,
            s.history,
            s.lost,
            s.read_again,
            s.stored_twice,
            s.order_violations,
        );
        samples.push(s);
    }
    let elapsed = started.elapsed();

    let med = |get: fn(&Sample) -> f64| median(samples.iter().map(get).collect());
    let rows: [Row; 9] = [
        ("flip duration ms", |s| s.flip_ms),
        ("produce held (fenced) ms", |s| s.fenced_ms),
        ("ack wait in the flip p99 ms", |s| s.stalls.during.p99_ms),
        ("ack wait in the flip max ms", |s| s.stalls.during.max_ms),
        ("ack wait outside p99 ms", |s| s.stalls.outside.p99_ms),
        ("ack wait outside max ms", |s| s.stalls.outside.max_ms),
        ("ack wait outside p50 ms", |s| s.stalls.outside.p50_ms),
        ("recovered after the flip ms", |s| s.recovered_ms),
        ("warm-up ack wait max ms", |s| s.stalls.warm_up.max_ms),
    ];
    println!();
    println!(
        "{clusters}, {cpus} CPU(s) shared by brokers, clients and switchyard; {} history records \
         per partition in A",
        settings.history
    );
    println!(
        "median of {} round(s); {} records per round, {} producer(s), {}",
        settings.rounds,
        settings.records,
        settings.producers,
        consumer_label(settings.consumer)
    );
    for (name, get) in rows {
        let per_round: Vec<String> = samples.iter().map(|s| format!("{:.0}", get(s))).collect();
        println!(
            "{name:<30}{:>8.0}   (rounds: {})",
            med(get),
            per_round.join(", ")
        );
    }
    let stall_ratio = med(|s| s.stalls.during.p99_ms) / med(|s| s.stalls.outside.p99_ms);
    println!("{:<30}{stall_ratio:>8.1}x", "in-flip p99 / outside p99");
    let steps: Vec<String> = FLIP_STEPS
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let m = median(samples.iter().map(|s| s.steps_ms[i]).collect());
            format!("{name} {m:.0}")
        })
        .collect();
    println!("{:<30}{}", "flip steps ms (median)", steps.join(", "));
    if settings.consumer.is_some() {
        let lost: usize = samples.iter().map(|s| s.lost).sum();
        let reordered: usize = samples.iter().map(|s| s.order_violations).sum();
        let duplicates: Vec<String> = samples
            .iter()
            .map(|s| format!("{}+{}", s.read_again, s.stored_twice))
            .collect();
        println!(
            "integrity: lost {lost}, order violations {reordered} (all rounds); duplicates per \
             round (read again + stored twice) {}",
            duplicates.join(", ")
        );
    }
    println!("total run time {:.1} s", elapsed.as_secs_f64());
    Ok(())
}
