//! The cutover on real Apache Kafka: cluster A holds thousands of records
//! per partition before switchyard starts and its leaders have moved several
//! times, so offsets and leader epochs differ between A and B; live
//! idempotent and non-idempotent producers and a consumer group go through a
//! flip and a rollback.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::kafka::{metadata, ClusterSpec, KafkaCluster, KAFKA_3};
use common::real::{assert_mirrored_once, post_ok as post};
use common::*;
use switchyard::demo::workload::{consume_continuously, Commits};

/// A with three brokers (leaders can move) on Kafka 3.9, B with one on
/// Kafka 4: every flip here is also a version migration. Shared by the
/// tests of this file, each using its own topic and group.
fn clusters() -> &'static (KafkaCluster, KafkaCluster) {
    static CLUSTERS: OnceLock<(KafkaCluster, KafkaCluster)> = OnceLock::new();
    CLUSTERS.get_or_init(|| {
        let a = std::thread::spawn(|| KafkaCluster::start(ClusterSpec::new(3).version(KAFKA_3)));
        let b = KafkaCluster::start(ClusterSpec::new(1)).expect("cluster B starts");
        let a = a.join().unwrap().expect("cluster A starts");
        (a, b)
    })
}

const PARTITIONS: i32 = 4;
const HISTORY_PER_PARTITION: usize = 2500;

/// Writes history straight into A (not through switchyard): keys
/// "history-N", so they never mix with the live producers' keys.
async fn preload_history(a: &KafkaCluster, topic: &str) -> Vec<RecordRef> {
    let spec = ProduceSpec {
        keys: 16,
        key_prefix: "history".into(),
        batch: 2000,
        compression: "lz4",
        ..ProduceSpec::new(topic, HISTORY_PER_PARTITION * PARTITIONS as usize)
    };
    let acked = workload::produce(&a.bootstrap(), &spec).await.unwrap();
    assert_eq!(acked.len(), spec.records);
    acked
}

/// Each partition's leader epoch as a client sees it through switchyard.
fn presented_epochs(bootstrap: &str, topic: &str) -> std::collections::BTreeMap<i32, i32> {
    let answer = metadata(bootstrap, Some(&[topic])).unwrap();
    answer.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_epoch))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flip_and_rollback_under_load_with_history_and_moved_leaders() {
    let (a, b) = clusters();
    let topic = "rc-orders";
    let group = "rc-billing";
    a.create_topic(topic, PARTITIONS, 3, &[]).unwrap();
    let history = preload_history(a, topic).await;
    a.move_leaders(topic, 3).unwrap();
    let epochs_a = a.leaders(topic).unwrap();
    assert!(epochs_a.values().all(|(_, e)| *e >= 3), "{epochs_a:?}");

    let harness = start_proxy(a, Some(b)).await;
    let admin = harness.proxy.admin_addr();
    let bootstrap = harness.bootstrap();

    // The group reads A's history through switchyard before mirroring.
    let target = Arc::new(AtomicUsize::new(0));
    let consumed_count = Arc::new(AtomicUsize::new(0));
    let consumer = {
        let (bootstrap, target, consumed_count) =
            (bootstrap.clone(), target.clone(), consumed_count.clone());
        tokio::spawn(async move {
            consume_continuously(
                &bootstrap,
                topic,
                group,
                Commits::Auto,
                target,
                consumed_count,
                Instant::now() + Duration::from_secs(240),
            )
            .await
        })
    };
    let counter = consumed_count.clone();
    let history_len = history.len();
    wait_until(
        Duration::from_secs(90),
        "the group to read A's history",
        || {
            let counter = counter.clone();
            async move { counter.load(Ordering::Relaxed) >= history_len }
        },
    )
    .await;

    // ...and has committed it, so its position translates once mirroring
    // starts.
    let ends = common::real::end_offsets(a, topic, PARTITIONS);
    common::real::wait_for_commits(a, group, topic, &ends).await;

    post(admin, "/mirror", r#"{"mode":"sync"}"#).await;

    let produced = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = [
        ("p1", "lz4", true),
        ("p2", "zstd", true),
        ("p3", "gzip", false),
    ]
    .into_iter()
    .map(|(prefix, compression, idempotent)| {
        let spec = ProduceSpec {
            idempotent,
            compression,
            keys: 8,
            key_prefix: prefix.to_owned(),
            batch: 20,
            pause: Duration::from_millis(10),
            progress: Some(produced.clone()),
            ..ProduceSpec::new(topic, 4000)
        }
        .set("acks", "all");
        let bootstrap = bootstrap.clone();
        tokio::spawn(async move { workload::produce(&bootstrap, &spec).await })
    })
    .collect();

    let counter = produced.clone();
    wait_until(Duration::from_secs(90), "traffic before the flip", || {
        let counter = counter.clone();
        async move { counter.load(Ordering::Relaxed) >= 3000 }
    })
    .await;
    let epochs_before = presented_epochs(&bootstrap, topic);
    let (_, flipped, _) = common::real::move_when_mirrored(admin, "/flip").await;
    assert_eq!(flipped["outcome"], "flipped", "{flipped:#}");
    // Clients see B's epochs above every epoch A showed them.
    let epochs_on_b = presented_epochs(&bootstrap, topic);
    for (p, epoch) in &epochs_on_b {
        assert!(
            *epoch > epochs_before[p],
            "partition {p}: epoch went from {} to {epoch}",
            epochs_before[p]
        );
    }

    let counter = produced.clone();
    wait_until(
        Duration::from_secs(90),
        "traffic between flip and rollback",
        || {
            let counter = counter.clone();
            async move { counter.load(Ordering::Relaxed) >= 7000 }
        },
    )
    .await;
    let (_, rolled, _) = common::real::move_when_mirrored(admin, "/rollback").await;
    assert_eq!(rolled["outcome"], "flipped", "{rolled:#}");
    for (p, epoch) in presented_epochs(&bootstrap, topic) {
        assert!(
            epoch > epochs_on_b[&p],
            "partition {p}: back on A, epoch {epoch}"
        );
    }

    let mut live = Vec::new();
    for producer in producers {
        live.extend(producer.await.unwrap().expect("producer ran"));
    }
    assert_eq!(live.len(), 12_000, "every record acknowledged");
    target.store(history.len() + live.len(), Ordering::Release);
    let consumed = consumer.await.unwrap().expect("consumer ran");

    let mut all = history.clone();
    all.extend(live.iter().cloned());
    let report = check(&all, &consumed);
    eprintln!("flip {flipped:#}\nrollback {rolled:#}\nconsumer: {report:?}");
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(first_deliveries_in_key_order(&consumed), 0, "per-key order");

    // p3 is the producer that is not idempotent.
    assert_mirrored_once(admin, (a, b), topic, PARTITIONS, &live, |key| {
        key.starts_with("p3-")
    })
    .await;
    harness.stop().await;
}

/// Records read by the members of one group, in the order they arrived,
/// and the distinct (key, seq) among them.
#[derive(Default)]
struct GroupReads {
    distinct: HashSet<(String, u64)>,
    in_order: Vec<RecordRef>,
}

type Seen = Arc<std::sync::Mutex<GroupReads>>;

/// A group member with the given settings: reads `topic` until the group
/// (`seen`, shared by its members) has `target` distinct records (0: not
/// known yet) or `deadline` passes.
async fn consume_with(
    bootstrap: String,
    topic: &'static str,
    group: &'static str,
    settings: Vec<(&'static str, String)>,
    target: Arc<AtomicUsize>,
    seen: Seen,
    deadline: Instant,
) -> Vec<RecordRef> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;
    let mut config = workload::consumer_config(&bootstrap, group);
    config
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "200");
    for (k, v) in &settings {
        config.set(*k, v);
    }
    let consumer: StreamConsumer = config.create().unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let mut last_report = Instant::now();
    loop {
        if last_report.elapsed() > Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "member {settings:?}: {} records; assignment {:?}",
                out.len(),
                consumer.assignment().map(|a| a
                    .elements()
                    .iter()
                    .map(|e| (e.partition(), e.offset()))
                    .collect::<Vec<_>>())
            );
        }
        let wanted = target.load(Ordering::Acquire);
        if wanted > 0 && seen.lock().unwrap().distinct.len() >= wanted {
            break;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        let next = tokio::time::timeout(remaining.min(Duration::from_millis(500)), consumer.recv());
        if let Ok(Ok(message)) = next.await {
            let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
            let mut parts = value.splitn(3, '#');
            let key = parts.next().unwrap_or_default().to_owned();
            let seq: u64 = parts
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX);
            let record = RecordRef {
                key,
                seq,
                partition: message.partition(),
                offset: message.offset(),
            };
            let mut reads = seen.lock().unwrap();
            reads.distinct.insert((record.key.clone(), seq));
            reads.in_order.push(record.clone());
            out.push(record);
        }
    }
    eprintln!("member {settings:?} ends with {} records", out.len());
    workload::close_off_runtime(consumer).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_and_static_members_and_a_timestamp_reader_across_flip_and_rollback() {
    let (a, b) = clusters();
    let topic = "rc-coop";
    let group = "rc-coop-group";
    a.create_topic(topic, PARTITIONS, 3, &[]).unwrap();
    let history = preload_history(a, topic).await;
    a.move_leaders(topic, 2).unwrap();
    let harness = start_proxy(a, Some(b)).await;
    let admin = harness.proxy.admin_addr();
    let bootstrap = harness.bootstrap();

    // Two cooperative-sticky members, one of them static.
    let target = Arc::new(AtomicUsize::new(0));
    let seen: Seen = Arc::default();
    let member = |settings: Vec<(&'static str, String)>| {
        let (bootstrap, target, seen) = (bootstrap.clone(), target.clone(), seen.clone());
        tokio::spawn(consume_with(
            bootstrap,
            topic,
            group,
            settings,
            target,
            seen,
            Instant::now() + Duration::from_secs(240),
        ))
    };
    let cooperative = (
        "partition.assignment.strategy",
        "cooperative-sticky".to_owned(),
    );
    let members = [
        member(vec![
            cooperative.clone(),
            ("group.instance.id", "rc-static-1".to_owned()),
        ]),
        member(vec![cooperative]),
    ];
    let ends = common::real::end_offsets(a, topic, PARTITIONS);
    common::real::wait_for_commits(a, group, topic, &ends).await;
    post(admin, "/mirror", r#"{"mode":"sync"}"#).await;

    let produced = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = [("c1", "lz4", true, "all"), ("c2", "snappy", false, "1")]
        .into_iter()
        .map(|(prefix, compression, idempotent, acks)| {
            let spec = ProduceSpec {
                idempotent,
                compression,
                keys: 8,
                key_prefix: prefix.to_owned(),
                batch: 20,
                pause: Duration::from_millis(10),
                progress: Some(produced.clone()),
                ..ProduceSpec::new(topic, 3000)
            }
            .set("acks", acks);
            let bootstrap = bootstrap.clone();
            tokio::spawn(async move { workload::produce(&bootstrap, &spec).await })
        })
        .collect();
    let wait_produced = |at_least: usize, what: &'static str| {
        let produced = produced.clone();
        async move {
            wait_until(Duration::from_secs(120), what, || {
                let produced = produced.clone();
                async move { produced.load(Ordering::Relaxed) >= at_least }
            })
            .await
        }
    };
    wait_produced(1000, "traffic before the timestamp").await;
    let before_flip = chrono_millis();
    wait_produced(1500, "traffic before the flip").await;
    let (_, flipped, _) = common::real::move_when_mirrored(admin, "/flip").await;
    assert_eq!(flipped["outcome"], "flipped", "{flipped:#}");

    // A reader that starts on B from a time before the flip.
    let reader = {
        let bootstrap = bootstrap.clone();
        tokio::task::spawn_blocking(move || read_from_timestamp(&bootstrap, topic, before_flip))
    };
    wait_produced(3000, "traffic between flip and rollback").await;
    let (_, rolled, _) = common::real::move_when_mirrored(admin, "/rollback").await;
    assert_eq!(rolled["outcome"], "flipped", "{rolled:#}");

    let mut live = Vec::new();
    for producer in producers {
        live.extend(producer.await.unwrap().expect("producer ran"));
    }
    eprintln!(
        "producers done: {} acknowledged; the group has read {}",
        live.len(),
        seen.lock().unwrap().distinct.len()
    );
    assert_eq!(live.len(), 6000, "every record acknowledged");
    target.store(history.len() + live.len(), Ordering::Release);
    // Each member stops once the group as a whole has everything.
    for m in members {
        m.await.unwrap();
    }
    let consumed = std::mem::take(&mut seen.lock().unwrap().in_order);
    let mut all = history.clone();
    all.extend(live.iter().cloned());
    let report = check(&all, &consumed);
    eprintln!(
        "cooperative: flip {} ms, rollback {} ms, {report:?}",
        flipped["duration_ms"], rolled["duration_ms"]
    );
    assert_eq!(report.lost, 0, "{report:?}");
    assert_eq!(report.key_order_violations, 0, "{report:?}");

    // The reader got, per partition, A's records from the first one at or
    // after its timestamp on, in order.
    eprintln!("group done: {} records", consumed.len());
    let read = reader.await.unwrap();
    let stored = read_cluster(&a.bootstrap(), topic, PARTITIONS).unwrap();
    for p in 0..PARTITIONS {
        // From the first record at or after the timestamp on, every
        // record: timestamps of different producers interleave in a log.
        let from_a: Vec<String> = stored[&p]
            .iter()
            .skip_while(|r| r.timestamp.is_none_or(|t| t < before_flip))
            .filter_map(|r| r.value.as_deref())
            .map(common::real::record_id)
            .collect();
        let got = &read[&p];
        assert!(
            !got.is_empty(),
            "partition {p}: the timestamp reader read nothing"
        );
        assert!(
            got.len() <= from_a.len(),
            "partition {p}: read more than A holds"
        );
        assert_eq!(
            got[..],
            from_a[..got.len()],
            "partition {p}: records read from the timestamp"
        );
    }
    // c2 is the producer that is not idempotent.
    assert_mirrored_once(admin, (a, b), topic, PARTITIONS, &live, |key| {
        key.starts_with("c2-")
    })
    .await;
    harness.stop().await;
}

fn chrono_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Reads every partition from the first record at or after `timestamp` up
/// to where each partition ended when the reader started ("key#seq" per
/// record, in order).
fn read_from_timestamp(
    bootstrap: &str,
    topic: &str,
    timestamp: i64,
) -> std::collections::BTreeMap<i32, Vec<String>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Message, Offset, TopicPartitionList};
    let consumer: BaseConsumer = workload::consumer_config(bootstrap, "rc-timestamp-reader")
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    let mut ends = std::collections::BTreeMap::new();
    for p in 0..PARTITIONS {
        wanted
            .add_partition_offset(topic, p, Offset::Offset(timestamp))
            .unwrap();
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(20))
            .unwrap();
        ends.insert(p, high);
    }
    let positions = consumer
        .offsets_for_times(wanted, Duration::from_secs(20))
        .unwrap();
    for element in positions.elements() {
        if let Offset::Offset(from) = element.offset() {
            // Nothing at or after the timestamp yet: nothing to read there.
            if from >= ends[&element.partition()] {
                ends.remove(&element.partition());
            }
        }
    }
    consumer.assign(&positions).unwrap();
    let mut out: std::collections::BTreeMap<i32, Vec<String>> =
        (0..PARTITIONS).map(|p| (p, Vec::new())).collect();
    let mut last: std::collections::BTreeMap<i32, i64> = Default::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ends
        .iter()
        .any(|(p, end)| last.get(p).is_none_or(|o| o + 1 < *end))
    {
        assert!(
            Instant::now() < deadline,
            "the timestamp reader did not reach the end"
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message.unwrap();
        last.insert(message.partition(), message.offset());
        let value = String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned();
        out.get_mut(&message.partition())
            .unwrap()
            .push(value.split('#').take(2).collect::<Vec<_>>().join("#"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_producer_is_named_by_readiness_and_holds_the_flip_back() {
    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    let (a, b) = clusters();
    let topic = "rc-transactions";
    a.create_topic(topic, 1, 3, &[]).unwrap();
    let harness = start_proxy(a, Some(b)).await;
    let admin = harness.proxy.admin_addr();
    post(admin, "/mirror", r#"{"mode":"sync"}"#).await;
    let producer: FutureProducer = workload::producer_config(&harness.bootstrap())
        .set("transactional.id", "rc-payments-tx")
        .create()
        .unwrap();
    tokio::task::block_in_place(|| producer.init_transactions(Duration::from_secs(30))).unwrap();
    tokio::task::block_in_place(|| producer.begin_transaction()).unwrap();
    let refused = producer
        .send(
            FutureRecord::to(topic).key("k").payload("v"),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        refused.is_err(),
        "a transactional write while mirroring is refused"
    );
    let (status, body) = http_get(admin, "/readiness").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("rc-payments-tx") && body.contains("transactions are not mirrored"),
        "readiness names the transactional producer: {body}"
    );
    let (status, body) = http_post(admin, "/flip", "").await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("rc-payments-tx"), "{body}");
    let _ = tokio::task::spawn_blocking(move || drop(producer)).await;
    harness.stop().await;
}
