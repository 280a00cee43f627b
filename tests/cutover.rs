//! The cutover: with mirroring on, one admin call moves live producers and
//! a consumer group from cluster A to cluster B (and back) without a lost
//! record, with per-partition order kept, and without reconfiguring a
//! client.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use switchyard::config::ClusterName;
use switchyard::demo::workload::{consume_continuously, Commits};
use switchyard::mirror::client::ClusterClient;

const PARTITIONS: i32 = 4;
const TOPIC: &str = "payments";
const GROUP: &str = "billing";

async fn enable_sync(admin: std::net::SocketAddr) {
    let (status, body) = http_post(admin, "/mirror", r#"{"mode":"sync"}"#).await;
    assert_eq!(status, 200, "{body}");
}

/// Two 3-broker clusters holding the topic, switchyard in front, mirroring
/// A to B in sync mode.
async fn mirrored_pair(
    adjust: impl FnOnce(&mut switchyard::Config),
) -> (Cluster, Cluster, Harness) {
    let topics = [(TOPIC, PARTITIONS)];
    let a = start_cluster(3, &topics).unwrap();
    let b = start_cluster(3, &topics).unwrap();
    let harness = start_proxy_with(&a, Some(&b), adjust).await;
    enable_sync(harness.proxy.admin_addr()).await;
    (a, b, harness)
}

async fn primary(admin: std::net::SocketAddr) -> String {
    let (_, body) = http_get(admin, "/status").await;
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    json["primary"].as_str().unwrap_or_default().to_owned()
}

/// POSTs a flip or rollback and returns (status, report).
async fn flip(admin: std::net::SocketAddr, path: &str, body: &str) -> (u16, serde_json::Value) {
    let (status, body) = http_post(admin, path, body).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{path} answered {body}"));
    (status, json)
}

/// Live traffic through the proxy: idempotent producers sending in paced
/// rounds, and one consumer group member committing as it reads.
struct Traffic {
    producers: Vec<tokio::task::JoinHandle<anyhow::Result<Vec<RecordRef>>>>,
    consumer: tokio::task::JoinHandle<anyhow::Result<Vec<RecordRef>>>,
    produced: Arc<AtomicUsize>,
    consumed: Arc<AtomicUsize>,
    target: Arc<AtomicUsize>,
}

/// Starts the consumer, waits until it is a member of its group, then
/// starts the producers.
async fn start_traffic(
    proxy: &switchyard::Proxy,
    per_producer: usize,
    commits: Commits,
    pause: Duration,
) -> Traffic {
    let bootstrap = proxy.bootstrap_addr().to_string();
    let produced = Arc::new(AtomicUsize::new(0));
    let consumed = Arc::new(AtomicUsize::new(0));
    let target = Arc::new(AtomicUsize::new(0));
    let consumer = {
        let bootstrap = bootstrap.clone();
        let (target, consumed) = (target.clone(), consumed.clone());
        tokio::spawn(async move {
            consume_continuously(
                &bootstrap,
                TOPIC,
                GROUP,
                commits,
                target,
                consumed,
                Instant::now() + Duration::from_secs(150),
            )
            .await
        })
    };
    let shared = proxy.shared().clone();
    wait_until(
        Duration::from_secs(30),
        "the consumer to join its group",
        || {
            let shared = shared.clone();
            async move {
                !shared
                    .members
                    .consuming(ClusterName::A, Instant::now() - Duration::from_secs(5))
                    .is_empty()
            }
        },
    )
    .await;
    let producers = [("lz4", "p1"), ("none", "p2")]
        .into_iter()
        .map(|(compression, prefix)| {
            // Distinct keys per producer: per-key order is per producer.
            let spec = ProduceSpec {
                idempotent: true,
                compression,
                keys: 8,
                key_prefix: prefix.to_owned(),
                batch: 20,
                pause,
                progress: Some(produced.clone()),
                ..ProduceSpec::new(TOPIC, per_producer)
            }
            .set("client.id", prefix);
            let bootstrap = bootstrap.to_owned();
            tokio::spawn(async move { workload::produce(&bootstrap, &spec).await })
        })
        .collect();
    Traffic {
        producers,
        consumer,
        produced,
        consumed,
        target,
    }
}

impl Traffic {
    /// Waits for the producers, tells the consumer how much to expect, and
    /// returns (acknowledged, consumed).
    async fn finish(self) -> (Vec<RecordRef>, Vec<RecordRef>) {
        let mut acked = Vec::new();
        for producer in self.producers {
            acked.extend(producer.await.unwrap().expect("producer ran"));
        }
        self.target.store(acked.len(), Ordering::Release);
        let consumed = self.consumer.await.unwrap().expect("consumer ran");
        (acked, consumed)
    }
}

async fn wait_for(counter: &AtomicUsize, at_least: usize, what: &str) {
    wait_until(Duration::from_secs(60), what, || async {
        counter.load(Ordering::Relaxed) >= at_least
    })
    .await;
}

/// The group's committed offsets on `cluster` are each partition's end: the
/// consumer committed everything it read there.
async fn assert_group_committed_to_end(cluster: &Cluster, name: ClusterName) {
    let client = ClusterClient::new(
        name,
        cluster
            .bootstrap_servers()
            .split(',')
            .map(str::to_owned)
            .collect(),
        Duration::from_secs(10),
    );
    let committed = client.committed_offsets(GROUP).await.unwrap();
    let stored = read_cluster(&cluster.bootstrap_servers(), TOPIC, PARTITIONS).unwrap();
    for partition in 0..PARTITIONS {
        let end = stored[&partition].last().map_or(0, |r| r.offset + 1);
        assert_eq!(
            committed.get(&(TOPIC.to_owned(), partition)).copied(),
            Some(end),
            "group {GROUP} on {name}: committed offset of {TOPIC}-{partition}"
        );
    }
}

/// Records a cluster holds more than once (same key and sequence).
fn stored_more_than_once(cluster: &Cluster) -> usize {
    let stored = read_cluster(&cluster.bootstrap_servers(), TOPIC, PARTITIONS).unwrap();
    let values: Vec<&Vec<u8>> = stored
        .values()
        .flatten()
        .filter_map(|r| r.value.as_ref())
        .collect();
    let distinct: std::collections::HashSet<_> = values.iter().collect();
    values.len() - distinct.len()
}

/// Records read in `consumed[range]` (before a move) at or after the offset
/// the group resumed from on the new primary: read but not committed when
/// the member revoked, so they may be delivered again. A and B offsets agree
/// in these tests (B was empty when mirroring began).
fn uncommitted_window(
    consumed: &[RecordRef],
    range: std::ops::Range<usize>,
    report: &serde_json::Value,
) -> usize {
    let resume = &report["groups"][0]["offsets"];
    consumed[range.start.min(consumed.len())..range.end.min(consumed.len())]
        .iter()
        .filter(|r| {
            let from = resume[format!("{TOPIC}-{}", r.partition)].as_i64();
            from.is_some_and(|from| r.offset >= from)
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flip_mid_stream_moves_producers_and_a_group_to_b_and_survives_a_restart() {
    let (a, b, harness) = mirrored_pair(|_| {}).await;
    let admin = harness.proxy.admin_addr();

    let traffic = start_traffic(
        &harness.proxy,
        6000,
        Commits::EveryRecord,
        Duration::from_millis(5),
    )
    .await;
    wait_for(
        &traffic.produced,
        2500,
        "records acknowledged before the flip",
    )
    .await;
    wait_for(&traffic.consumed, 500, "records consumed before the flip").await;

    let (status, report) = flip(admin, "/flip", "").await;
    assert_eq!(status, 200, "flip: {report:#}");
    assert_eq!(report["outcome"], "flipped");
    assert_eq!(report["to"], "b");
    let consumed_at_flip = traffic.consumed.load(Ordering::Relaxed);
    let produced_at_flip = traffic.produced.load(Ordering::Relaxed);
    assert!(produced_at_flip < 12_000, "the flip happened mid-stream");
    assert_eq!(primary(admin).await, "b");

    let (acked, consumed) = traffic.finish().await;
    assert_eq!(acked.len(), 12_000, "every record acknowledged");
    let report_after = check(&acked, &consumed);
    if report_after.lost > 0 {
        let seen: std::collections::HashSet<_> =
            consumed.iter().map(|r| (r.key.clone(), r.seq)).collect();
        let lost: Vec<_> = acked
            .iter()
            .filter(|r| !seen.contains(&(r.key.clone(), r.seq)))
            .collect();
        eprintln!("LOST {:?}", lost);
        let in_b = read_cluster(&b.bootstrap_servers(), TOPIC, PARTITIONS).unwrap();
        let in_a = read_cluster(&a.bootstrap_servers(), TOPIC, PARTITIONS).unwrap();
        for p in 0..PARTITIONS {
            eprintln!("partition {p}: A {} B {}", in_a[&p].len(), in_b[&p].len());
        }
        let mut by_p: std::collections::BTreeMap<i32, Vec<i64>> = Default::default();
        for r in &consumed {
            by_p.entry(r.partition).or_default().push(r.offset);
        }
        for (p, offs) in by_p {
            let mut jumps = vec![];
            for w in offs.windows(2) {
                if w[1] != w[0] + 1 {
                    jumps.push((w[0], w[1]));
                }
            }
            eprintln!("consumed p{p}: jumps {:?}", jumps);
        }
    }
    assert_eq!(report_after.lost, 0, "lost records: {report_after:?}");
    assert_eq!(first_deliveries_in_key_order(&consumed), 0, "per-key order");
    // Duplicates are bounded by what the member had read but not yet
    // committed when it revoked: records read before the flip at or after
    // the offset the group resumed from on B (A and B offsets agree here:
    // B was empty when mirroring began).
    let window = uncommitted_window(&consumed, 0..consumed_at_flip, &report);
    // A record stored twice is read twice. The in-process cluster stores a
    // client's retry of a write that had landed (a real broker refuses it by
    // its sequence, which switchyard keeps across the flip: see the
    // producer-id test below).
    let stored_twice = stored_more_than_once(&b);
    assert!(
        report_after.duplicates <= window + stored_twice,
        "duplicates beyond the uncommitted window of {window} \
         and {stored_twice} records stored twice: {report_after:?}"
    );
    eprintln!(
        "flip mid-stream: {} ms, clients held {} ms, {report_after:?}",
        report["duration_ms"], report["fenced_ms"]
    );

    // Everything after the flip was written to B (and mirrored back to A).
    wait_for_mirror_lag_zero(admin).await;
    let stored = assert_same_records(&a, &b, TOPIC, PARTITIONS, &acked, false);
    assert_eq!(stored, acked.len() + stored_twice);
    assert!(
        stored_twice <= acked.len() / 100,
        "{stored_twice} stored twice"
    );
    assert_group_committed_to_end(&b, ClusterName::B).await;
    let (_, status) = http_get(admin, "/status").await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["mirroring"]["target"], "a", "mirroring reversed");

    // A restart keeps clients on B: new records land in B first.
    let state = harness.state;
    harness.proxy.shutdown(Duration::from_secs(5)).await;
    let mut config = loopback_config(
        &a.bootstrap_servers(),
        Some(&b.bootstrap_servers()),
        state.path(),
    );
    config.mirror.sync_timeout_ms = 5000;
    let proxy = switchyard::Proxy::start(config).await.unwrap();
    assert_eq!(primary(proxy.admin_addr()).await, "b");
    let more = workload::produce(
        &proxy.bootstrap_addr().to_string(),
        &ProduceSpec {
            idempotent: true,
            ..ProduceSpec::new(TOPIC, 400)
        },
    )
    .await
    .unwrap();
    assert_eq!(more.len(), 400);
    wait_for_mirror_lag_zero(proxy.admin_addr()).await;
    let mut all = acked.clone();
    all.extend(more.iter().cloned());
    let stored = assert_same_records(&a, &b, TOPIC, PARTITIONS, &all, false);
    assert_eq!(stored, all.len() + stored_twice);
    assert_acknowledged_at(&b, TOPIC, PARTITIONS, &more);
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_after_a_flip_brings_everyone_back_to_a() {
    let (a, b, harness) = mirrored_pair(|_| {}).await;
    let admin = harness.proxy.admin_addr();

    let traffic = start_traffic(
        &harness.proxy,
        8000,
        Commits::Auto,
        Duration::from_millis(25),
    )
    .await;
    wait_for(
        &traffic.produced,
        2000,
        "records acknowledged before the flip",
    )
    .await;
    wait_for(&traffic.consumed, 300, "records consumed before the flip").await;
    let (status, report) = flip(admin, "/flip", "").await;
    assert_eq!(status, 200, "flip: {report:#}");
    // The member is parked until the switch and needs a rejoin after it:
    // what it read so far was read before the move.
    let consumed_at_flip = traffic.consumed.load(Ordering::Relaxed);

    // A second flip is refused: clients are on B already.
    let (status, again) = flip(admin, "/flip", "").await;
    assert_eq!(status, 409, "{again:#}");
    assert!(again["reasons"][0]
        .as_str()
        .unwrap()
        .contains("already on cluster b"));

    let produced = traffic.produced.load(Ordering::Relaxed);
    wait_for(
        &traffic.produced,
        produced + 2000,
        "records acknowledged on B",
    )
    .await;
    let consumed = traffic.consumed.load(Ordering::Relaxed);
    wait_for(&traffic.consumed, consumed + 300, "records consumed on B").await;
    let (status, back) = flip(admin, "/rollback", "").await;
    let consumed_at_rollback = traffic.consumed.load(Ordering::Relaxed);
    assert_eq!(status, 200, "rollback: {back:#}");
    assert_eq!(back["to"], "a");
    assert!(
        traffic.produced.load(Ordering::Relaxed) < 10_000,
        "rolled back mid-stream"
    );
    assert_eq!(primary(admin).await, "a");

    let (acked, consumed) = traffic.finish().await;
    assert_eq!(acked.len(), 16_000);
    let integrity = check(&acked, &consumed);
    if integrity.duplicates > 0 {
        let mut by_p: std::collections::BTreeMap<i32, Vec<i64>> = Default::default();
        for r in &consumed {
            by_p.entry(r.partition).or_default().push(r.offset);
        }
        for (p, offs) in by_p {
            let mut jumps = vec![];
            for w in offs.windows(2) {
                if w[1] != w[0] + 1 {
                    jumps.push((w[0], w[1]));
                }
            }
            eprintln!("consumed p{p}: jumps {:?}", jumps);
        }
    }
    assert_eq!(integrity.lost, 0, "{integrity:?}");
    assert_eq!(first_deliveries_in_key_order(&consumed), 0, "per-key order");
    // Auto-commit every 200 ms and on revocation: the window is what was
    // read and not committed before each move.
    let window = uncommitted_window(&consumed, 0..consumed_at_flip, &report)
        + uncommitted_window(&consumed, consumed_at_flip..consumed_at_rollback, &back);
    assert!(
        integrity.duplicates <= window,
        "duplicates beyond the uncommitted window of {window}: {integrity:?}"
    );
    eprintln!(
        "flip {} ms, rollback {} ms, {integrity:?}",
        report["duration_ms"], back["duration_ms"]
    );
    wait_for_mirror_lag_zero(admin).await;
    // Client retries after a lost acknowledgement (sync waits that timed
    // out under load) are stored again: the in-process cluster does not
    // deduplicate idempotent producers. They stay rare.
    let stored = assert_same_records(&a, &b, TOPIC, PARTITIONS, &acked, false);
    assert!(
        stored - acked.len() <= acked.len() / 100,
        "{stored} records stored for {} acknowledged",
        acked.len()
    );

    // Finalize is for the cluster clients moved to, not for A.
    let (status, body) = http_post(admin, "/finalize", "").await;
    assert_eq!(status, 409, "{body}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flip_while_b_is_down_or_failing_leaves_clients_on_a() {
    let (a, b, harness) = mirrored_pair(|c| {
        c.cutover.deadline_ms = 4000;
        c.cutover.group_wait_ms = 1000;
    })
    .await;
    let admin = harness.proxy.admin_addr();
    let bootstrap = harness.bootstrap();
    let first = workload::produce(
        &bootstrap,
        &ProduceSpec {
            idempotent: true,
            ..ProduceSpec::new(TOPIC, 500)
        },
    )
    .await
    .unwrap();
    wait_for_mirror_lag_zero(admin).await;

    // A bad request names its problem and changes nothing.
    let (status, body) = http_post(admin, "/flip", r#"{"forse": true}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("forse"), "{body}");
    let (status, body) = http_post(admin, "/finalize", r#"{"now": 1}"#).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(primary(admin).await, "a");

    // Mirroring is off: refused, with the reason.
    let (status, body) = http_post(admin, "/mirror", r#"{"mode":"off"}"#).await;
    assert_eq!(status, 200, "{body}");
    let (status, report) = flip(admin, "/flip", "").await;
    assert_eq!(status, 409, "{report:#}");
    assert!(report["reasons"][0].as_str().unwrap().contains("is off"));
    enable_sync(admin).await;

    // B down: refused before anything is held.
    for broker in 1..=3 {
        b.broker_down(broker).unwrap();
    }
    let (status, report) = flip(admin, "/flip", r#"{"force": true}"#).await;
    assert_eq!(status, 409, "{report:#}");
    assert_eq!(report["outcome"], "refused");
    assert!(
        report["reasons"][0].as_str().unwrap().contains("cluster b"),
        "{report:#}"
    );
    assert_eq!(primary(admin).await, "a");
    for broker in 1..=3 {
        b.broker_up(broker).unwrap();
    }

    // B answers metadata but the leader of one partition is gone: the
    // mirror cannot drain, so a forced flip is aborted at its deadline;
    // clients stay on A and keep being served.
    b.partition_leader(TOPIC, 0, Some(3)).unwrap();
    b.broker_down(3).unwrap();
    let during = {
        let bootstrap = bootstrap.clone();
        tokio::spawn(async move {
            workload::produce(
                &bootstrap,
                &ProduceSpec {
                    idempotent: true,
                    keys: 16,
                    ..ProduceSpec::new(TOPIC, 200)
                }
                .set("client.id", "during"),
            )
            .await
        })
    };
    wait_until(
        Duration::from_secs(30),
        "mirror lag while B refuses",
        || async { harness.proxy.shared().mirror().unwrap().lag_records() > 0 },
    )
    .await;
    wait_until(
        Duration::from_secs(30),
        "readiness to name the failing mirror",
        || async {
            let (_, body) = http_get(admin, "/readiness").await;
            body.contains("not yet in cluster b")
        },
    )
    .await;
    let (status, report) = flip(admin, "/flip", "").await;
    assert_eq!(
        status, 409,
        "not ready while B cannot take writes: {report:#}"
    );
    let (status, report) = flip(admin, "/flip", r#"{"force": true}"#).await;
    assert_eq!(status, 503, "{report:#}");
    assert_eq!(report["outcome"], "aborted");
    assert!(report["reasons"][0].as_str().unwrap().contains("drain"));
    assert_eq!(primary(admin).await, "a");
    assert!(!harness.proxy.shared().signals.is_fenced());

    // B recovers: everything catches up; nothing was lost on the way.
    b.broker_up(3).unwrap();
    let during = during.await.unwrap().unwrap();
    wait_for_mirror_lag_zero(admin).await;
    let mut all = first.clone();
    all.extend(during);
    let consumed = consume_continuously(
        &bootstrap,
        TOPIC,
        "after",
        Commits::Auto,
        Arc::new(AtomicUsize::new(all.len())),
        Arc::new(AtomicUsize::new(0)),
        Instant::now() + Duration::from_secs(60),
    )
    .await
    .unwrap();
    let integrity = check(&all, &consumed);
    assert_eq!(integrity.lost, 0, "{integrity:?}");
    assert_same_records(&a, &b, TOPIC, PARTITIONS, &all, false);
    // The same flip now goes through.
    let (status, report) = flip(admin, "/flip", "").await;
    assert_eq!(status, 200, "{report:#}");
    harness.stop().await;
}

/// Sequences are contiguous under one producer id: a broker that checks
/// them takes each batch in order and refuses a retry of any of them as a
/// duplicate. A batch stored again with the same producer id and sequence
/// (a client retry after a lost acknowledgement, which the in-process
/// cluster does not deduplicate) is exactly such a retry and is skipped.
/// Returns the producer id and the records a checking broker would hold.
fn assert_one_contiguous_producer(
    batches: &[switchyard::protocol::batch::BatchHeader],
) -> (i64, i32) {
    let first = batches.first().expect("batches stored");
    let mut next = first.base_sequence;
    let mut seen = std::collections::HashSet::new();
    let mut records = 0;
    for b in batches {
        if !seen.insert((b.producer_id, b.producer_epoch, b.base_sequence)) {
            continue;
        }
        records += b.records_count;
        assert_eq!(
            (b.producer_id, b.producer_epoch),
            (first.producer_id, first.producer_epoch),
            "one producer id for the whole partition: {batches:?}"
        );
        assert_eq!(b.base_sequence, next, "contiguous sequences: {batches:?}");
        next += b.records_count;
    }
    (first.producer_id, records)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producer_keeps_one_sequence_across_the_flip_in_both_clusters() {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    let a = start_cluster(3, &[("ledger", 1)]).unwrap();
    let b = start_cluster(3, &[("ledger", 1)]).unwrap();
    let harness = start_proxy(&a, Some(&b)).await;
    let admin = harness.proxy.admin_addr();
    enable_sync(admin).await;
    let producer: FutureProducer = workload::producer_config(&harness.bootstrap())
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let send = |n: usize| {
        let producer = producer.clone();
        async move {
            for i in 0..n {
                let value = format!("record-{i}");
                producer
                    .send(
                        FutureRecord::<(), _>::to("ledger").payload(&value),
                        Duration::from_secs(30),
                    )
                    .await
                    .expect("acknowledged");
            }
        }
    };
    send(20).await;
    let (status, report) = flip(admin, "/flip", "").await;
    assert_eq!(status, 200, "{report:#}");
    // The same producer instance (same producer id from A, sequences
    // continuing) now writes to B.
    send(20).await;
    producer.flush(Duration::from_secs(10)).unwrap();
    wait_for_mirror_lag_zero(admin).await;

    // B: the mirror's batches and the client's own after the flip share the
    // producer id the mirror uses for this client, sequences unbroken.
    let in_b = stored_batches(&b.bootstrap_servers(), "ledger", 0).await;
    let in_a = stored_batches(&a.bootstrap_servers(), "ledger", 0).await;
    let (b_id, in_b_records) = assert_one_contiguous_producer(&in_b);
    assert_eq!(in_b_records, 40, "{in_b:?}");
    // A: written back under the client's own id, continuing its sequences,
    // ready for a rollback.
    let (a_id, in_a_records) = assert_one_contiguous_producer(&in_a);
    assert_eq!(in_a_records, 40, "{in_a:?}");
    assert_ne!(a_id, b_id, "B's id is the mirror's, not the client's");
    assert_eq!(in_a[0].base_sequence, 0);

    // A producer started after the flip gets its id from B, through
    // switchyard, which makes sure it is not one of A's mapped ids.
    let late: FutureProducer = workload::producer_config(&harness.bootstrap())
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    late.send(
        FutureRecord::<(), _>::to("ledger").payload("late"),
        Duration::from_secs(30),
    )
    .await
    .expect("acknowledged");
    let in_b = stored_batches(&b.bootstrap_servers(), "ledger", 0).await;
    let last = in_b.last().unwrap();
    assert_eq!(last.records_count, 1);
    assert!(last.producer_id != a_id && last.producer_id != b_id);
    harness.stop().await;
}
