//! Mirror mode: what cluster A acknowledges lands in cluster B too, in the
//! same order, byte-equal, exactly once, with the offset correspondence known.

mod common;

use std::time::Duration;

use common::*;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use switchyard::translate::Translated;

const PARTITIONS: i32 = 4;

/// Same records, same order, per partition; and the translation table maps
/// every record of A to the same record in B.
fn assert_mirrored(harness: &Harness, a: &Cluster, b: &Cluster, topic: &str) -> usize {
    let in_a = read_cluster(&a.bootstrap_servers(), topic, PARTITIONS).unwrap();
    let in_b = read_cluster(&b.bootstrap_servers(), topic, PARTITIONS).unwrap();
    let mirror = harness.proxy.shared().mirror().unwrap();
    let mut total = 0;
    for partition in 0..PARTITIONS {
        let (left, right) = (&in_a[&partition], &in_b[&partition]);
        let strip = |r: &StoredRecord| {
            (
                r.key.clone(),
                r.value.clone(),
                r.headers.clone(),
                r.timestamp,
            )
        };
        let left_content: Vec<_> = left.iter().map(strip).collect();
        let right_content: Vec<_> = right.iter().map(strip).collect();
        assert_eq!(
            left_content.len(),
            right_content.len(),
            "{topic}-{partition}: record count"
        );
        assert!(
            left_content == right_content,
            "{topic}-{partition}: records differ"
        );
        if left.is_empty() {
            continue;
        }
        let segments = mirror
            .translation()
            .partition(topic, partition)
            .unwrap_or_else(|| panic!("{topic}-{partition}: no translation"));
        for (ra, rb) in left.iter().zip(right) {
            assert_eq!(
                segments.a_to_b(ra.offset),
                Translated::Offset(rb.offset),
                "{topic}-{partition}: A offset {} translates to B offset {}",
                ra.offset,
                rb.offset
            );
            assert_eq!(segments.b_to_a(rb.offset), Translated::Offset(ra.offset));
        }
        total += left.len();
    }
    total
}

async fn enable_sync(harness: &Harness) {
    let (status, body) =
        http_post(harness.proxy.admin_addr(), "/mirror", r#"{"mode":"sync"}"#).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mirror_holds_the_same_records_in_the_same_order() {
    let topics = [("orders", PARTITIONS), ("audit", PARTITIONS)];
    let a = start_cluster(3, &topics).unwrap();
    let b = start_cluster(3, &topics).unwrap();
    let harness = start_proxy(&a, Some(&b)).await;
    enable_sync(&harness).await;
    let bootstrap = harness.bootstrap();
    // One of B's brokers answers slowly: sync waits for its partitions hold
    // up their connections' answers while the answers behind them (other
    // partitions) must still reach the mirror in A's order.
    b.broker_round_trip_time(1, Duration::from_millis(150))
        .unwrap();

    // Several producers at once, idempotent and not, compressed and not,
    // all with headers; pipelining up to librdkafka's default in-flight.
    let specs = vec![
        ProduceSpec {
            idempotent: true,
            compression: "lz4",
            keys: 8,
            ..ProduceSpec::new("orders", 1500)
        },
        ProduceSpec {
            idempotent: false,
            compression: "none",
            keys: 8,
            ..ProduceSpec::new("orders", 1500)
        },
        ProduceSpec {
            idempotent: true,
            compression: "zstd",
            keys: 5,
            ..ProduceSpec::new("audit", 1000)
        },
        ProduceSpec {
            idempotent: false,
            compression: "gzip",
            keys: 5,
            batch: 100,
            ..ProduceSpec::new("audit", 1000)
        },
    ];
    let mut tasks = Vec::new();
    for (n, mut spec) in specs.into_iter().enumerate() {
        // Distinct keys per producer, so per-key order checks stay meaningful.
        spec.settings
            .push(("client.id".into(), format!("producer-{n}")));
        let bootstrap = bootstrap.clone();
        tasks.push(tokio::spawn(async move {
            workload::produce(&bootstrap, &spec).await
        }));
    }
    let mut acked = 0;
    for task in tasks {
        acked += task.await.unwrap().unwrap().len();
    }
    assert_eq!(acked, 5000);

    assert_eq!(assert_mirrored(&harness, &a, &b, "orders"), 3000);
    assert_eq!(assert_mirrored(&harness, &a, &b, "audit"), 2000);

    let (_, status) = http_get(harness.proxy.admin_addr(), "/status").await;
    let json: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(json["mirror"], "sync");
    assert_eq!(json["mirroring"]["lag_records"], 0, "{status}");
    assert_eq!(json["mirroring"]["divergent_records"], 0, "{status}");
    let (_, metrics) = http_get(harness.proxy.admin_addr(), "/metrics").await;
    assert!(
        metric_value(
            &metrics,
            "switchyard_mirror_batches_total",
            &["cluster=\"b\""]
        ) > 0.0
    );
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_outage_loses_nothing_and_retries_duplicate_nothing() {
    let a = start_cluster(3, &[("ledger", PARTITIONS)]).unwrap();
    let b = start_cluster(3, &[("ledger", PARTITIONS)]).unwrap();
    let harness = start_proxy_with(&a, Some(&b), |c| c.mirror.sync_timeout_ms = 1000).await;
    enable_sync(&harness).await;
    let bootstrap = harness.bootstrap();

    // B refuses writes for a while: sync acknowledgements time out, clients
    // retry, switchyard retries.
    b.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 40],
    );
    let spec = ProduceSpec {
        idempotent: true,
        keys: 8,
        ..ProduceSpec::new("ledger", 2000)
    }
    .set("retries", "1000000")
    .set("retry.backoff.ms", "100");
    let acked = workload::produce(&bootstrap, &spec).await.unwrap();
    assert_eq!(acked.len(), 2000);

    // Then B's leader for every partition goes down and comes back.
    for broker in 1..=3 {
        b.broker_down(broker).unwrap();
    }
    // Idempotent, so that the client's own retries of timed-out sync
    // acknowledgements do not duplicate records in A either (a
    // non-idempotent producer would write its retries to A, and the mirror
    // would carry exactly those duplicates to B).
    let more = ProduceSpec {
        idempotent: true,
        keys: 8,
        ..ProduceSpec::new("ledger", 300)
    }
    .set("retries", "1000000");
    let producing = tokio::spawn({
        let bootstrap = bootstrap.clone();
        async move { workload::produce(&bootstrap, &more).await }
    });
    let admin = harness.proxy.admin_addr();
    wait_until(
        Duration::from_secs(30),
        "the mirror to notice B is down",
        || async move {
            let (_, metrics) = http_get(admin, "/metrics").await;
            metric_value(&metrics, "switchyard_mirror_sync_timeouts_total", &[]) >= 1.0
        },
    )
    .await;
    for broker in 1..=3 {
        b.broker_up(broker).unwrap();
    }
    let later = producing.await.unwrap().unwrap();
    assert_eq!(later.len(), 300);

    wait_for_mirror_lag_zero(admin).await;
    // B holds exactly A's records, in A's order: nothing lost, and none of
    // switchyard's retries added a record. (A itself may hold duplicates:
    // the client retried timed-out sync acknowledgements, and librdkafka's
    // mock cluster only deduplicates transactional producers' retries; the
    // mirror carries A as it is.)
    let stored = assert_mirrored(&harness, &a, &b, "ledger");
    assert!(stored >= 2300);
    let mut all = acked.clone();
    all.extend(later);
    let consumed = workload::consume(
        &b.bootstrap_servers(),
        "ledger",
        "check-b",
        stored,
        Duration::from_secs(30),
        false,
    )
    .await
    .unwrap();
    let report = check(&all, &consumed);
    assert_eq!(report.lost, 0, "B read directly: {report:?}");
    assert_eq!(report.consumed, stored);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_admin_refuses_bad_requests_and_transactions_are_refused_while_mirroring() {
    let a = start_cluster(3, &[("t", 1)]).unwrap();
    let b = start_cluster(3, &[("t", 1)]).unwrap();
    let harness = start_proxy(&a, Some(&b)).await;
    let admin = harness.proxy.admin_addr();
    let (status, body) = http_post(admin, "/mirror", r#"{"mode":"sideways"}"#).await;
    assert_eq!(status, 400);
    assert!(body.contains("sideways"), "{body}");
    let (status, body) = http_post(admin, "/mirror", "not json").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = http_post(admin, "/mirror", r#"{"mode":"async","extra":1}"#).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("extra"), "{body}");
    enable_sync(&harness).await;

    use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
    let producer: FutureProducer = workload::producer_config(&harness.bootstrap())
        .set("transactional.id", "tx-1")
        .create()
        .unwrap();
    producer.init_transactions(Duration::from_secs(30)).unwrap();
    producer.begin_transaction().unwrap();
    let sent = producer
        .send(
            FutureRecord::to("t").key("k").payload("v"),
            Duration::from_secs(10),
        )
        .await;
    assert!(
        sent.is_err(),
        "a transactional write is refused while mirroring"
    );
    let in_a = read_cluster(&a.bootstrap_servers(), "t", 1).unwrap();
    assert!(in_a[&0].is_empty(), "nothing was written to A either");
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_missing_in_the_mirror_is_reported_and_its_records_held() {
    let a = start_cluster(3, &[("fresh", PARTITIONS)]).unwrap();
    let b = start_cluster(3, &[]).unwrap();
    let harness = start_proxy_with(&a, Some(&b), |c| c.mirror.sync_timeout_ms = 500).await;
    enable_sync(&harness).await;
    let admin = harness.proxy.admin_addr();
    let spec = ProduceSpec {
        idempotent: true,
        keys: 4,
        ..ProduceSpec::new("fresh", 200)
    }
    .set("retries", "1000000")
    .set("message.timeout.ms", "120000");
    let producing = tokio::spawn({
        let bootstrap = harness.bootstrap();
        async move { workload::produce(&bootstrap, &spec).await }
    });
    // B cannot create topics (no CreateTopics in this cluster): the status
    // says the topic is missing, and the writes wait.
    wait_until(
        Duration::from_secs(30),
        "status to report the missing topic",
        || async move {
            let (_, status) = http_get(admin, "/status").await;
            let json: serde_json::Value = serde_json::from_str(&status).unwrap();
            json["mirroring"]["partitions"]
                .as_array()
                .is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p["topic_missing"] == true && p["lag_records"].as_i64() > Some(0))
                })
        },
    )
    .await;
    assert!(
        !producing.is_finished(),
        "sync producers wait while the mirror cannot write"
    );
    // The operator creates it; everything held reaches B.
    b.create_topic("fresh", PARTITIONS, 3).unwrap();
    let acked = producing.await.unwrap().unwrap();
    assert_eq!(acked.len(), 200);
    wait_for_mirror_lag_zero(admin).await;
    let stored = assert_mirrored(&harness, &a, &b, "fresh");
    assert!(stored >= 200);
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_mirror_catches_up_from_its_journal_after_a_restart() {
    let a = start_cluster(3, &[("events", PARTITIONS)]).unwrap();
    let b = start_cluster(3, &[("events", PARTITIONS)]).unwrap();
    let first = start_proxy(&a, Some(&b)).await;
    let (status, body) =
        http_post(first.proxy.admin_addr(), "/mirror", r#"{"mode":"async"}"#).await;
    assert_eq!(status, 200, "{body}");

    // B is away: async acknowledgements do not wait for it.
    for broker in 1..=3 {
        b.broker_down(broker).unwrap();
    }
    let spec = ProduceSpec {
        idempotent: true,
        compression: "snappy",
        keys: 8,
        ..ProduceSpec::new("events", 1200)
    };
    let acked = workload::produce(&first.bootstrap(), &spec).await.unwrap();
    assert_eq!(
        acked.len(),
        1200,
        "acknowledged while the mirror cluster is down"
    );
    let (_, status) = http_get(first.proxy.admin_addr(), "/status").await;
    let json: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(
        json["mirroring"]["lag_records"].as_i64().unwrap() > 0,
        "{status}"
    );

    // switchyard restarts with the records only in its journal.
    let Harness { proxy, state } = first;
    proxy.shutdown(Duration::from_secs(2)).await;
    let config = loopback_config(
        &a.bootstrap_servers(),
        Some(&b.bootstrap_servers()),
        state.path(),
    );
    let proxy = switchyard::Proxy::start(config).await.unwrap();
    let second = Harness { proxy, state };
    assert_eq!(
        second.proxy.shared().route().mirror,
        switchyard::config::MirrorMode::Async,
        "the mirror mode survives the restart"
    );
    for broker in 1..=3 {
        b.broker_up(broker).unwrap();
    }
    let admin = second.proxy.admin_addr();
    wait_until(
        Duration::from_secs(60),
        "the journal to drain into B",
        || async move {
            let (_, status) = http_get(admin, "/status").await;
            let json: serde_json::Value = serde_json::from_str(&status).unwrap();
            let partitions = json["mirroring"]["partitions"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            json["mirroring"]["lag_records"] == 0
                && partitions
                    .iter()
                    .map(|p| {
                        p["translated_to"].as_i64().unwrap_or(0)
                            - p["translated_from"].as_i64().unwrap_or(0)
                    })
                    .sum::<i64>()
                    >= 1200
        },
    )
    .await;
    assert_eq!(assert_mirrored(&second, &a, &b, "events"), 1200);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_zero_records_are_mirrored_even_when_the_producer_hangs_up_at_once() {
    use bytes::BytesMut;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{ApiKey, ProduceRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use tokio::io::AsyncWriteExt;

    let a = start_cluster(1, &[("fire-and-forget", 1)]).unwrap();
    let b = start_cluster(1, &[("fire-and-forget", 1)]).unwrap();
    let harness = start_proxy(&a, Some(&b)).await;
    enable_sync(&harness).await;

    // 20 acks=0 Produce requests, pipelined on one connection that is reset
    // (RST, not FIN) right after the last one is sent: nobody waits for
    // anything, and the proxy's next read on it fails.
    let mut stream = tokio::net::TcpStream::connect(harness.proxy.bootstrap_addr())
        .await
        .unwrap();
    for n in 0..20i64 {
        let records: Vec<Record> = (0..5)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i,
                // The encoder keeps records in one batch while sequences
                // run on; the batch's base sequence stays -1 (no producer).
                sequence: i as i32 - 1,
                timestamp: 1_700_000_000_000 + n * 10 + i,
                key: Some(format!("k{n}").into()),
                value: Some(format!("request {n} record {i}").into()),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut batch = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut batch,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        let request = ProduceRequest::default()
            .with_acks(0)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("fire-and-forget")))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(0)
                    .with_records(Some(batch.freeze()))])]);
        stream
            .write_all(&request_frame(ApiKey::Produce, 7, n as i32, &request))
            .await
            .unwrap();
    }
    // Linger 0: close with RST. It discards nothing the proxy has read.
    #[allow(deprecated)]
    stream.set_linger(Some(Duration::ZERO)).unwrap();
    drop(stream);

    // What reached A (the reset may cut requests the proxy had not read
    // yet) reaches B too.
    let admin = harness.proxy.admin_addr();
    wait_until(
        Duration::from_secs(30),
        "A to hold what the proxy forwarded",
        || {
            let a_servers = a.bootstrap_servers();
            async move {
                let (_, metrics) = http_get(admin, "/metrics").await;
                let forwarded =
                    metric_value(&metrics, "switchyard_requests_total", &["api=\"Produce\""]);
                forwarded > 0.0
                    && read_cluster(&a_servers, "fire-and-forget", 1)
                        .is_ok_and(|r| r[&0].len() as f64 >= forwarded * 5.0)
            }
        },
    )
    .await;
    wait_for_mirror_lag_zero(admin).await;
    let stored = assert_mirrored_one(&harness, &a, &b, "fire-and-forget");
    assert!(stored >= 5, "at least one request reached A and B");
    harness.stop().await;
}

/// `assert_mirrored` for a one-partition topic.
fn assert_mirrored_one(harness: &Harness, a: &Cluster, b: &Cluster, topic: &str) -> usize {
    let in_a = read_cluster(&a.bootstrap_servers(), topic, 1).unwrap();
    let in_b = read_cluster(&b.bootstrap_servers(), topic, 1).unwrap();
    let strip = |r: &StoredRecord| (r.key.clone(), r.value.clone(), r.timestamp);
    let left: Vec<_> = in_a[&0].iter().map(strip).collect();
    let right: Vec<_> = in_b[&0].iter().map(strip).collect();
    assert!(left == right, "{topic}: B differs from A");
    let segments = harness
        .proxy
        .shared()
        .mirror()
        .unwrap()
        .translation()
        .partition(topic, 0)
        .unwrap();
    for (ra, rb) in in_a[&0].iter().zip(&in_b[&0]) {
        assert_eq!(segments.a_to_b(ra.offset), Translated::Offset(rb.offset));
    }
    left.len()
}
