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

#[derive(Debug, Serialize)]
pub struct DemoReport {
    /// Records the producers were asked to send, all of them together.
    pub records: usize,
    pub producers: usize,
    /// Records acknowledged before the flip started, while it ran, and
    /// after it finished.
    pub acknowledged_before_flip: usize,
    pub acknowledged_during_flip: usize,
    pub acknowledged_after_flip: usize,
    pub flip: crate::cutover::flip::FlipReport,
    /// The cluster clients were served by at the end.
    pub ended_on: crate::config::ClusterName,
    /// How long producers waited for acknowledgements: over the whole run,
    /// while clients were connecting, for records waiting at some moment
    /// between the flip's start and the producers' recovery, and for the
    /// rest.
    pub ack_wait: workload::AckStalls,
    /// Milliseconds from the flip's end until every producer had a record
    /// sent after the flip acknowledged.
    pub recovered_ms: f64,
    pub mirror: MirrorCheck,
    /// Seconds from the first record sent to the last acknowledged.
    pub traffic_seconds: f64,
    /// Seconds the consumer needed after the last acknowledgement to have
    /// read everything.
    pub consume_tail_seconds: f64,
    pub brokers_seen_by_clients: Vec<String>,
    pub real_brokers_leaked: usize,
    pub integrity: IntegrityReport,
    /// The duplicates, by cause: the same stored record read again (the
    /// group moved before committing it), and a second copy of a record
    /// stored at another offset (a client retried a write that had
    /// landed).
    pub duplicates: Duplicates,
}

#[derive(Debug, Default, Serialize)]
pub struct Duplicates {
    pub read_again: usize,
    pub stored_twice: usize,
}

impl Duplicates {
    pub fn of(consumed: &[workload::RecordRef]) -> Duplicates {
        let mut positions = std::collections::HashSet::new();
        let mut copies: std::collections::HashMap<(&str, u64), usize> = Default::default();
        let mut duplicates = Duplicates::default();
        for r in consumed {
            if !positions.insert((r.partition, r.offset)) {
                duplicates.read_again += 1;
            } else {
                let n = copies.entry((r.key.as_str(), r.seq)).or_insert(0);
                *n += 1;
                if *n > 1 {
                    duplicates.stored_twice += 1;
                }
            }
        }
        duplicates
    }
}

impl DemoReport {
    /// Why the demo failed; empty when it passed. Duplicates are not among
    /// the reasons: a consumer group re-reads what it had read but not yet
    /// committed when it moves (at-least-once), a write the client retried
    /// after it had landed is stored twice by the in-process cluster, and
    /// the report counts both.
    pub fn failures(&self) -> Vec<String> {
        use crate::cutover::flip::Outcome;
        let i = &self.integrity;
        let mut failures = Vec::new();
        if i.lost > 0 {
            failures.push(format!(
                "{} acknowledged records were never consumed",
                i.lost
            ));
        }
        if i.order_violations > 0 {
            failures.push(format!(
                "{} records consumed out of order",
                i.order_violations
            ));
        }
        if i.acknowledged < self.records {
            failures.push(format!(
                "{} of {} records were not acknowledged",
                self.records - i.acknowledged,
                self.records
            ));
        }
        if self.flip.outcome != Outcome::Flipped {
            failures.push(format!(
                "the flip did not happen ({:?}): {}",
                self.flip.outcome,
                self.flip.reasons.join("; ")
            ));
        } else if self.acknowledged_after_flip == 0 {
            failures.push("no record was acknowledged after the flip".into());
        }
        if self.ended_on != self.flip.to {
            failures.push(format!("clients ended on cluster {}", self.ended_on));
        }
        if !self.mirror.identical {
            failures.push("cluster B does not hold exactly what cluster A holds".into());
        }
        if self.real_brokers_leaked > 0 {
            failures.push(format!(
                "clients saw {} real broker addresses",
                self.real_brokers_leaked
            ));
        }
        failures
    }

    pub fn passed(&self) -> bool {
        self.failures().is_empty()
    }
}

/// What the two clusters hold at the end, read straight from each.
#[derive(Debug, Default, Serialize)]
pub struct MirrorCheck {
    pub records_in_a: usize,
    pub records_in_b: usize,
    /// Records written to A by clients and mirrored into B.
    pub written_to_a: usize,
    /// Records written to B by clients (after the flip) and mirrored back
    /// into A.
    pub written_to_b: usize,
    /// Both clusters hold the same records byte-equal in the same order,
    /// and every record's offset in one maps to its offset in the other
    /// through the mirror that copied it.
    pub identical: bool,
}

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

pub fn print_report(report: &DemoReport) {
    let i = &report.integrity;
    let f = &report.flip;
    let w = &report.ack_wait;
    let m = &report.mirror;
    println!();
    println!("integrity report");
    println!(
        "  traffic               {} idempotent producers ({}-record rounds, {} ms apart), \
         consumer group {GROUP}, sync mirroring",
        report.producers,
        ROUND,
        PAUSE.as_millis()
    );
    println!("  records produced      {}", report.records);
    println!(
        "  acknowledged          {} ({} before the flip, {} during it, {} after it)",
        i.acknowledged,
        report.acknowledged_before_flip,
        report.acknowledged_during_flip,
        report.acknowledged_after_flip
    );
    println!("  consumed              {}", i.consumed);
    println!("  lost                  {}", i.lost);
    println!(
        "  duplicates            {} ({} read again after the group moved, {} stored twice)",
        i.duplicates, report.duplicates.read_again, report.duplicates.stored_twice
    );
    if report.duplicates.stored_twice > 0 {
        println!(
            "    stored twice        a client retried a write that had landed; the in-process \
             cluster does not deduplicate idempotent producers"
        );
    }
    println!(
        "  order violations      {} (per key {}, per partition {})",
        i.order_violations, i.key_order_violations, i.partition_order_violations
    );
    let outcome = match f.outcome {
        crate::cutover::flip::Outcome::Flipped => "flipped",
        crate::cutover::flip::Outcome::Refused => "REFUSED",
        crate::cutover::flip::Outcome::Aborted => "ABORTED",
    };
    println!(
        "  flip                  {outcome} {} -> {} in {} ms (Produce and joins held {} ms)",
        f.from, f.to, f.duration_ms, f.fenced_ms
    );
    if !f.steps.is_empty() {
        let steps: Vec<String> = f
            .steps
            .iter()
            .map(|s| format!("{} {} ms", s.step, s.ms))
            .collect();
        println!("    steps               {}", steps.join(", "));
    }
    for reason in &f.reasons {
        println!("    reason              {reason}");
    }
    println!(
        "  producers recovered   {:.0} ms after the flip ended (each had a record sent after \
         it acknowledged)",
        report.recovered_ms
    );
    let stats = |s: &workload::AckStats| {
        format!(
            "max {:.0} ms, p99 {:.0} ms, p50 {:.1} ms over {} records",
            s.max_ms, s.p99_ms, s.p50_ms, s.records
        )
    };
    println!("  producer ack wait     {}", stats(&w.all));
    println!(
        "    in the flip         {} (waiting between the flip's start and the producers' \
         recovery)",
        stats(&w.during)
    );
    println!("    the rest            {}", stats(&w.outside));
    println!(
        "    warm-up             {} (first round of each producer, while connecting)",
        stats(&w.warm_up)
    );
    println!("  clients ended on      cluster {}", report.ended_on);
    println!(
        "  records in A / B      {} / {} ({} written to A and mirrored to B, {} written to B \
         and mirrored back to A)",
        m.records_in_a, m.records_in_b, m.written_to_a, m.written_to_b
    );
    println!(
        "  B identical to A      {} (byte-equal, same order, every offset translated)",
        if m.identical { "yes" } else { "NO" }
    );
    println!(
        "  traffic time          {:.2} s (consumer done {:.2} s after the last acknowledgement)",
        report.traffic_seconds, report.consume_tail_seconds
    );
    println!(
        "  brokers clients saw   {} (real brokers among them: {})",
        report.brokers_seen_by_clients.join(", "),
        report.real_brokers_leaked
    );
    let failures = report.failures();
    if failures.is_empty() {
        println!("  verdict               PASS");
    } else {
        println!("  verdict               FAIL");
        for failure in failures {
            println!("    {failure}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClusterName;
    use crate::cutover::flip::{Direction, FlipReport, Outcome};

    fn passing() -> DemoReport {
        DemoReport {
            records: 100,
            producers: 2,
            acknowledged_before_flip: 50,
            acknowledged_during_flip: 0,
            acknowledged_after_flip: 50,
            flip: FlipReport {
                direction: Direction::Flip,
                from: ClusterName::A,
                to: ClusterName::B,
                outcome: Outcome::Flipped,
                forced: false,
                reasons: Vec::new(),
                steps: Vec::new(),
                groups: Vec::new(),
                duration_ms: 100,
                fenced_ms: 90,
            },
            ended_on: ClusterName::B,
            ack_wait: Default::default(),
            recovered_ms: 0.0,
            mirror: MirrorCheck {
                identical: true,
                ..MirrorCheck::default()
            },
            traffic_seconds: 1.0,
            consume_tail_seconds: 0.1,
            brokers_seen_by_clients: Vec::new(),
            real_brokers_leaked: 0,
            duplicates: Duplicates {
                read_again: 4,
                stored_twice: 0,
            },
            integrity: IntegrityReport {
                acknowledged: 100,
                consumed: 104,
                duplicates: 4,
                ..IntegrityReport::default()
            },
        }
    }

    #[test]
    fn duplicates_are_told_apart_by_offset() {
        let r = |key: &str, seq, partition, offset| workload::RecordRef {
            key: key.into(),
            seq,
            partition,
            offset,
        };
        let consumed = [
            r("k", 0, 0, 0),
            r("k", 1, 0, 1),
            r("k", 1, 0, 1), // the same record read again
            r("k", 1, 0, 2), // a second copy
            r("k", 2, 0, 3),
        ];
        let d = Duplicates::of(&consumed);
        assert_eq!((d.read_again, d.stored_twice), (1, 1));
    }

    #[test]
    fn duplicates_alone_pass_loss_reordering_or_no_flip_fail() {
        let report = passing();
        assert!(report.passed(), "{:?}", report.failures());

        let mut lost = passing();
        lost.integrity.lost = 1;
        assert!(!lost.passed());

        let mut reordered = passing();
        reordered.integrity.order_violations = 1;
        assert!(!reordered.passed());

        let mut refused = passing();
        refused.flip.outcome = Outcome::Refused;
        refused.ended_on = ClusterName::A;
        let failures = refused.failures();
        assert_eq!(failures.len(), 2, "{failures:?}");
        assert!(failures[0].contains("flip did not happen"));
    }
}
