//! Mirroring into real Apache Kafka when things go wrong: the mirror
//! cluster goes away under sync mode, the journal is replayed after the
//! translation log lost its tail, topics are created (or found) unlike the
//! primary's, and the mirror cluster refuses a batch for good.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::Duration;

use common::kafka::{ClusterSpec, KafkaCluster, KAFKA_3, KAFKA_4};
use common::*;
use kafka_protocol::messages::{ApiKey, DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

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

/// The mirror's status of one partition.
fn partition_status(status: &serde_json::Value, topic: &str, partition: i32) -> serde_json::Value {
    status["mirroring"]["partitions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["topic"] == topic && p["partition"] == partition)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
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

/// A topic's configuration as a cluster describes it.
fn topic_configs(cluster: &KafkaCluster, topic: &str) -> HashMap<String, String> {
    use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
    let request =
        DescribeConfigsRequest::default().with_resources(vec![DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_owned()))
            .with_configuration_keys(None)]);
    let addr = cluster.bootstrap().split(',').next().unwrap().to_owned();
    let response: DescribeConfigsResponse =
        common::kafka::call(&addr, ApiKey::DescribeConfigs, 1, &request).unwrap();
    let result = &response.results[0];
    assert_eq!(result.error_code, 0, "{:?}", result.error_message);
    result
        .configs
        .iter()
        .filter_map(|c| Some((c.name.to_string(), c.value.as_ref()?.to_string())))
        .collect()
}

/// Sets one configuration entry of a topic.
fn alter_topic_config(cluster: &KafkaCluster, topic: &str, name: &str, value: &str) {
    use kafka_protocol::messages::incremental_alter_configs_request::{
        AlterConfigsResource, AlterableConfig,
    };
    use kafka_protocol::messages::{
        IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
    };
    let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.to_owned()))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_string(name.to_owned()))
                .with_config_operation(0)
                .with_value(Some(StrBytes::from_string(value.to_owned())))]),
    ]);
    let addr = cluster.bootstrap().split(',').next().unwrap().to_owned();
    let response: IncrementalAlterConfigsResponse =
        common::kafka::call(&addr, ApiKey::IncrementalAlterConfigs, 0, &request).unwrap();
    assert_eq!(response.responses[0].error_code, 0, "{response:?}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_b_is_down_queued_batches_past_the_memory_limit_wait_in_the_journal() {
    let a = &clusters().0;
    // This test stops B's only broker: a cluster of its own.
    let mut b = KafkaCluster::start(ClusterSpec::new(1)).expect("cluster B starts");
    let topic = "rm-bounded";
    const PARTITIONS: i32 = 3;
    const LIMIT: u64 = 64 * 1024;
    a.create_topic(topic, PARTITIONS, 1, &[]).unwrap();
    b.create_topic(topic, PARTITIONS, 1, &[]).unwrap();
    let harness = start_proxy_with(a, Some(&b), |config| {
        config.mirror.max_queued_bytes = LIMIT;
    })
    .await;
    let admin = harness.proxy.admin_addr();
    post(admin, "/mirror", r#"{"mode":"async"}"#).await;
    b.kill_broker(1);

    // Sample what the mirror holds in memory while producers write far
    // more than the limit.
    let sampling = tokio_util::sync::CancellationToken::new();
    let sampler = {
        let sampling = sampling.clone();
        tokio::spawn(async move {
            let (mut most_in_memory, mut most_queued) = (0u64, 0u64);
            while !sampling.is_cancelled() {
                let mirroring = &status(admin).await["mirroring"];
                let held = mirroring["queued_bytes_in_memory"].as_u64().unwrap();
                most_in_memory = most_in_memory.max(held);
                most_queued = most_queued.max(mirroring["lag_bytes"].as_u64().unwrap());
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (most_in_memory, most_queued)
        })
    };
    let producers: Vec<_> = ["m1", "m2"]
        .into_iter()
        .map(|prefix| {
            let spec = ProduceSpec {
                idempotent: true,
                keys: 6,
                key_prefix: prefix.to_owned(),
                batch: 20,
                ..ProduceSpec::new(topic, 3000)
            }
            .set("acks", "all");
            let bootstrap = harness.bootstrap();
            tokio::spawn(async move { workload::produce(&bootstrap, &spec).await })
        })
        .collect();
    let mut acked = Vec::new();
    for producer in producers {
        acked.extend(producer.await.unwrap().expect("producer ran"));
    }
    assert_eq!(
        acked.len(),
        6000,
        "every record acknowledged while B is down"
    );
    sampling.cancel();
    let (most_in_memory, most_queued) = sampler.await.unwrap();
    // Batches are let go right after their journal write: the bound holds
    // up to the few being written at that moment.
    assert!(
        most_in_memory <= LIMIT + 32 * 1024,
        "{most_in_memory} bytes held in memory (limit {LIMIT})"
    );
    assert!(
        most_queued > 4 * LIMIT,
        "the test queued {most_queued} bytes, not far past the limit"
    );
    let (_, metrics) = http_get(admin, "/metrics").await;
    let spilled = metric_value(&metrics, "switchyard_mirror_spilled_batches_total", &[]);
    assert!(spilled > 0.0, "batches were let go from memory");

    // switchyard restarts while B is still down: the journal replays
    // without reading the batches into memory.
    let state = harness.state;
    harness.proxy.shutdown(Duration::from_secs(5)).await;
    // B's broker is down: its address, not the running ones.
    let mut config = loopback_config(&a.bootstrap(), Some(&b.broker_addr(1)), state.path());
    config.mirror.max_queued_bytes = LIMIT;
    let proxy = switchyard::Proxy::start(config).await.expect("restarts");
    let admin = proxy.admin_addr();
    let mirroring = &status(admin).await["mirroring"];
    assert!(
        mirroring["lag_bytes"].as_u64().unwrap() > 4 * LIMIT,
        "replayed: {mirroring}"
    );
    assert_eq!(
        mirroring["queued_bytes_in_memory"].as_u64().unwrap(),
        0,
        "replayed batches wait on disk"
    );

    // B back: what waited in the journal is read back and mirrored, each
    // record once, in A's order.
    b.restart_broker(1).unwrap();
    wait_for_mirror_lag_zero(admin).await;
    let stored = assert_each_once_in_the_same_order(a, &b, topic, PARTITIONS, &acked);
    assert_eq!(stored, acked.len());
    let held_after = status(admin).await["mirroring"]["queued_bytes_in_memory"]
        .as_u64()
        .unwrap();
    assert_eq!(held_after, 0, "nothing held once B has everything");
    eprintln!(
        "most held in memory {most_in_memory} B (limit {LIMIT}), most queued {most_queued} B, \
         {spilled} batches let go, {stored} records stored once in A and B"
    );
    proxy.shutdown(Duration::from_secs(5)).await;
    drop(state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_journal_finds_batches_already_in_b_instead_of_writing_them_again() {
    let (a, b) = clusters();
    let topic = "rm-replay";
    const PARTITIONS: i32 = 3;
    a.create_topic(topic, PARTITIONS, 1, &[]).unwrap();
    b.create_topic(topic, PARTITIONS, 1, &[]).unwrap();
    let harness = start_proxy(a, Some(b)).await;
    let admin = harness.proxy.admin_addr();
    post(admin, "/mirror", r#"{"mode":"async"}"#).await;

    // Many small batches from one idempotent producer: most of them older
    // than the five a broker remembers per producer.
    let spec = ProduceSpec {
        idempotent: true,
        keys: 12,
        batch: 3,
        ..ProduceSpec::new(topic, 360)
    }
    .set("linger.ms", "0");
    let acked = workload::produce(&harness.bootstrap(), &spec)
        .await
        .unwrap();
    assert_eq!(acked.len(), 360);
    wait_for_mirror_lag_zero(admin).await;
    for p in 0..PARTITIONS {
        let batches = stored_batches(&a.bootstrap(), topic, p).await.len();
        assert!(batches >= 30, "{topic}-{p}: {batches} batches");
    }

    // A crash that lost the translation log's unsynced tail, while the
    // journal still holds the batches.
    let state = harness.state;
    harness.proxy.shutdown(Duration::from_secs(5)).await;
    let journal = state.path().join("mirror-journal-a-to-b.log");
    let journaled = switchyard::mirror::journal::replay(&journal).unwrap().len();
    assert!(journaled > 0, "the journal holds the batches");
    let translation = state.path().join("translation-a-to-b.log");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&translation)
        .unwrap()
        .set_len(0)
        .unwrap();

    let config = loopback_config(&a.bootstrap(), Some(&b.bootstrap()), state.path());
    let proxy = switchyard::Proxy::start(config).await.unwrap();
    let admin = proxy.admin_addr();
    let ends: Vec<i64> = {
        let stored = read_cluster(&a.bootstrap(), topic, PARTITIONS).unwrap();
        (0..PARTITIONS)
            .map(|p| stored[&p].last().map_or(0, |r| r.offset + 1))
            .collect()
    };
    let ends_now = ends.clone();
    wait_until(
        Duration::from_secs(90),
        "the translation to cover every mirrored offset again",
        || {
            let ends = ends_now.clone();
            async move {
                let s = status(admin).await;
                s["mirroring"]["lag_records"] == 0
                    && (0..PARTITIONS).all(|p| {
                        partition_status(&s, topic, p)["translated_to"] == ends[p as usize]
                    })
            }
        },
    )
    .await;
    let s = status(admin).await;
    for p in 0..PARTITIONS {
        let partition = partition_status(&s, topic, p);
        assert_eq!(partition["translated_from"], 0, "{partition:#}");
        assert_eq!(
            partition["translated_to"], ends[p as usize],
            "{partition:#}"
        );
        assert_eq!(
            partition["translation_segments"], 1,
            "one run of offsets in both clusters: {partition:#}"
        );
        assert!(partition["stopped"].is_null(), "{partition:#}");
    }
    let stored = assert_each_once_in_the_same_order(a, b, topic, PARTITIONS, &acked);
    assert_eq!(stored, acked.len());
    eprintln!("journal entries replayed: {journaled}, records in B once each: {stored}");
    proxy.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_the_mirror_creates_gets_the_primarys_partitions_and_configuration() {
    let (a, b) = clusters();
    let topic = "rm-created";
    a.create_topic(
        topic,
        3,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("max.message.bytes", "2000000"),
            ("message.timestamp.type", "LogAppendTime"),
            ("retention.ms", "86400000"),
        ],
    )
    .unwrap();
    let harness = start_proxy(a, Some(b)).await;
    let admin = harness.proxy.admin_addr();
    post(admin, "/mirror", r#"{"mode":"sync"}"#).await;
    let acked = workload::produce(&harness.bootstrap(), &ProduceSpec::new(topic, 90))
        .await
        .unwrap();
    assert_eq!(acked.len(), 90);
    wait_for_mirror_lag_zero(admin).await;

    assert_eq!(b.leaders(topic).unwrap().len(), 3, "partitions in B");
    let configs = topic_configs(b, topic);
    for (name, value) in [
        ("cleanup.policy", "compact"),
        ("max.message.bytes", "2000000"),
        ("message.timestamp.type", "LogAppendTime"),
        ("retention.ms", "86400000"),
    ] {
        assert_eq!(
            configs.get(name).map(String::as_str),
            Some(value),
            "{name} in B"
        );
    }
    let stored = read_cluster(&b.bootstrap(), topic, 3).unwrap();
    assert_eq!(stored.values().map(Vec::len).sum::<usize>(), 90);
    let readiness = status(admin).await["readiness"].clone();
    assert_eq!(readiness["ready"], true, "{readiness:#}");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_topics_laid_out_differently_in_b_and_the_flip_is_refused() {
    let (a, b) = clusters();
    let (partitions_topic, policy_topic) = ("rm-diff-partitions", "rm-diff-policy");
    a.create_topic(partitions_topic, 3, 1, &[]).unwrap();
    b.create_topic(partitions_topic, 2, 1, &[]).unwrap();
    a.create_topic(policy_topic, 2, 1, &[("cleanup.policy", "compact")])
        .unwrap();
    b.create_topic(policy_topic, 2, 1, &[("cleanup.policy", "delete")])
        .unwrap();
    let harness = start_proxy(a, Some(b)).await;
    let admin = harness.proxy.admin_addr();
    post(admin, "/mirror", r#"{"mode":"async"}"#).await;
    for topic in [partitions_topic, policy_topic] {
        let acked = workload::produce(&harness.bootstrap(), &ProduceSpec::new(topic, 30))
            .await
            .unwrap();
        assert_eq!(acked.len(), 30);
    }
    let expected = [
        "topic rm-diff-partitions: partition count is 3 in cluster a but 2 in cluster b",
        "topic rm-diff-policy: cleanup.policy is compact in cluster a but delete in cluster b",
    ];
    let mut readiness = serde_json::Value::Null;
    for _ in 0..100 {
        let (code, text) = http_get(admin, "/readiness").await;
        assert_eq!(code, 200, "{text}");
        readiness = serde_json::from_str(&text).unwrap();
        let reasons = readiness["reasons"].to_string();
        if expected.iter().all(|e| reasons.contains(e)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(readiness["ready"], false, "{readiness:#}");
    let reasons = readiness["reasons"].to_string();
    for e in expected {
        assert!(reasons.contains(e), "readiness names {e:?}: {readiness:#}");
    }
    let (code, text) = http_post(admin, "/flip", "").await;
    assert_eq!(code, 409, "{text}");
    for e in expected {
        assert!(text.contains(e), "the refused flip names {e:?}: {text}");
    }
    assert_eq!(status(admin).await["primary"], "a");
    harness.stop().await;
}

/// Writes records of `size` bytes to one partition with librdkafka.
async fn produce_to_partition(
    bootstrap: &str,
    topic: &str,
    partition: i32,
    values: &[Vec<u8>],
) -> Vec<i64> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = workload::producer_config(bootstrap)
        .set("acks", "all")
        .create()
        .unwrap();
    let mut offsets = Vec::new();
    for value in values {
        let record = FutureRecord::<(), _>::to(topic)
            .partition(partition)
            .payload(value);
        let delivery = producer
            .send(record, Duration::from_secs(20))
            .await
            .unwrap_or_else(|(e, _)| panic!("{topic}-{partition}: {e}"));
        offsets.push(delivery.offset);
    }
    offsets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_b_refuses_for_good_stops_its_partition_only_and_holds_the_flip() {
    let (a, b) = clusters();
    let topic = "rm-too-large";
    a.create_topic(topic, 2, 1, &[]).unwrap();
    b.create_topic(topic, 2, 1, &[("max.message.bytes", "1000")])
        .unwrap();
    let harness = start_proxy(a, Some(b)).await;
    let admin = harness.proxy.admin_addr();
    let bootstrap = harness.bootstrap();
    post(admin, "/mirror", r#"{"mode":"async"}"#).await;

    let large = vec![b'L'; 5000];
    let small = |tag: &str, n: usize| -> Vec<Vec<u8>> {
        (0..n).map(|i| format!("{tag}-{i}").into_bytes()).collect()
    };
    produce_to_partition(&bootstrap, topic, 0, std::slice::from_ref(&large)).await;
    produce_to_partition(&bootstrap, topic, 0, &small("behind", 3)).await;
    produce_to_partition(&bootstrap, topic, 1, &small("other", 10)).await;

    wait_until(
        Duration::from_secs(60),
        "partition 0 to stop and partition 1 to be mirrored",
        || async move {
            let s = status(admin).await;
            let stopped = partition_status(&s, topic, 0)["stopped"].to_string();
            let other = partition_status(&s, topic, 1);
            stopped.contains("MESSAGE_TOO_LARGE")
                && other["lag_records"] == 0
                && other["translated_to"] == 10
        },
    )
    .await;
    let s = status(admin).await;
    let stopped = partition_status(&s, topic, 0);
    eprintln!("stopped partition: {stopped:#}");
    assert_eq!(
        stopped["lag_records"], 4,
        "the batches stay queued: {stopped:#}"
    );
    assert!(partition_status(&s, topic, 1)["stopped"].is_null());
    let in_b = values(&read_cluster(&b.bootstrap(), topic, 2).unwrap());
    assert_eq!(
        in_b[&1],
        small("other", 10),
        "the other partition is mirrored"
    );
    assert!(in_b[&0].is_empty(), "nothing of partition 0 skipped ahead");
    let (_, metrics) = http_get(admin, "/metrics").await;
    assert!(
        metric_value(
            &metrics,
            "switchyard_mirror_stopped_partitions",
            &["cluster=\"b\""]
        ) >= 1.0,
        "stopped partitions are a metric"
    );

    let (code, text) = http_get(admin, "/readiness").await;
    assert_eq!(code, 200);
    assert!(
        text.contains("rm-too-large-0") && text.contains("MESSAGE_TOO_LARGE"),
        "readiness names the stopped partition: {text}"
    );
    let (code, text) = http_post(admin, "/flip", "").await;
    assert_eq!(code, 409, "{text}");
    assert!(text.contains("MESSAGE_TOO_LARGE"), "{text}");

    // Once B takes such batches, switching mirroring on again resumes it.
    alter_topic_config(b, topic, "max.message.bytes", "1048588");
    post(admin, "/mirror", r#"{"mode":"async"}"#).await;
    wait_for_mirror_lag_zero(admin).await;
    let in_a = values(&read_cluster(&a.bootstrap(), topic, 2).unwrap());
    let in_b = values(&read_cluster(&b.bootstrap(), topic, 2).unwrap());
    assert_eq!(in_a, in_b, "B holds what A holds, in order");
    assert_eq!(in_b[&0].len(), 4);
    assert!(partition_status(&status(admin).await, topic, 0)["stopped"].is_null());
    harness.stop().await;
}
