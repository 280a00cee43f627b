//! Idempotent producers across a flip on real Apache Kafka, where both
//! clusters allocate producer ids from 0 and check sequences: a producer id
//! one cluster issued never reaches the other unmapped, also when the
//! producer bumped its epoch itself or had not written since mirroring
//! began.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::kafka::{batch_headers, ClusterSpec, KafkaCluster};
use common::real::post_ok as post;
use common::*;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, MetadataResponse,
    ProduceRequest, ProduceResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::net::TcpStream;

/// Two fresh one-broker clusters: both issue producer ids 0, 1, 2, ...
fn clusters() -> &'static (KafkaCluster, KafkaCluster) {
    static CLUSTERS: OnceLock<(KafkaCluster, KafkaCluster)> = OnceLock::new();
    CLUSTERS.get_or_init(|| {
        let a = std::thread::spawn(|| KafkaCluster::start(ClusterSpec::new(1)));
        let b = KafkaCluster::start(ClusterSpec::new(1)).expect("cluster B starts");
        (a.join().unwrap().expect("cluster A starts"), b)
    })
}

fn idempotent_producer(bootstrap: &str) -> FutureProducer {
    workload::producer_config(bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "0")
        .create()
        .unwrap()
}

async fn send(producer: &FutureProducer, topic: &str, key: &str, from: u64, to: u64) {
    for seq in from..to {
        let value = workload::record_value(key, seq);
        producer
            .send(
                FutureRecord::to(topic)
                    .key(key)
                    .payload(&value)
                    .partition(0),
                Duration::from_secs(30),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("{key}#{seq} not acknowledged: {e}"));
    }
}

/// Which producer id each stored value of partition 0 was written under.
fn producer_of_each_value(cluster: &KafkaCluster, topic: &str) -> BTreeMap<String, (i64, i16)> {
    let headers = batch_headers(&cluster.bootstrap(), topic, 0).unwrap();
    let stored = read_cluster(&cluster.bootstrap(), topic, 1).unwrap();
    let mut out = BTreeMap::new();
    for record in &stored[&0] {
        let header = headers
            .iter()
            .find(|h| {
                h.base_offset <= record.offset
                    && record.offset <= h.base_offset + i64::from(h.last_offset_delta)
            })
            .expect("every record lies in a batch");
        let value = String::from_utf8(record.value.clone().unwrap()).unwrap();
        let id = value.split('#').take(2).collect::<Vec<_>>().join("#");
        assert!(
            out.insert(id.clone(), (header.producer_id, header.producer_epoch))
                .is_none(),
            "{id} stored twice"
        );
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_of_the_old_primary_is_mapped_even_when_its_producer_was_idle_while_mirroring() {
    let (a, b) = clusters();
    let topic = "rp-idle";
    a.create_topic(topic, 1, 1, &[]).unwrap();
    let harness = start_proxy(a, Some(b)).await;
    let admin = harness.proxy.admin_addr();
    let bootstrap = harness.bootstrap();

    // "early" gets its producer id from A and writes before mirroring.
    let early = idempotent_producer(&bootstrap);
    send(&early, topic, "early", 0, 5).await;
    post(admin, "/mirror", r#"{"mode":"sync"}"#).await;
    // "busy" writes while mirroring: the mirror maps it onto an id of B,
    // the first B hands out (B's ids start at 0, like A's).
    let busy = idempotent_producer(&bootstrap);
    send(&busy, topic, "busy", 0, 20).await;
    let flipped = post(admin, "/flip", "").await;
    assert_eq!(flipped["outcome"], "flipped", "{flipped:#}");

    // "early" writes to B for the first time, under its id from A.
    send(&early, topic, "early", 5, 10).await;
    send(&busy, topic, "busy", 20, 25).await;

    let in_b = producer_of_each_value(b, topic);
    let ids = |key: &str, range: std::ops::Range<u64>| -> BTreeSet<i64> {
        range
            .map(|s| {
                in_b.get(&format!("{key}#{s}"))
                    .unwrap_or_else(|| panic!("{key}#{s} acknowledged but not in B"))
                    .0
            })
            .collect()
    };
    let early_ids = ids("early", 5..10);
    let busy_ids = ids("busy", 0..25);
    assert_eq!(busy_ids.len(), 1, "one producer, one id in B: {busy_ids:?}");
    assert_eq!(early_ids.len(), 1, "{early_ids:?}");
    assert!(
        early_ids.is_disjoint(&busy_ids),
        "two producers share a producer id in B: early {early_ids:?}, busy {busy_ids:?}"
    );
    wait_for_mirror_lag_zero(admin).await;
    harness.stop().await;
}

/// A raw idempotent producer: its own id, epoch and sequences, as a client
/// library keeps them.
struct RawProducer {
    id: i64,
    epoch: i16,
}

async fn exchange_raw<Resp: Decodable>(
    addr: &str,
    api: ApiKey,
    version: i16,
    body: &impl kafka_protocol::protocol::Encodable,
) -> Resp {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let answer = exchange(&mut stream, api, version, 1, body)
        .await
        .expect("an answer");
    let mut buf = answer;
    Resp::decode(&mut buf, version).unwrap()
}

fn batch_of(producer: &RawProducer, sequence: i32, values: &[String]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            transactional: false,
            control: false,
            partition_leader_epoch: -1,
            producer_id: producer.id,
            producer_epoch: producer.epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: sequence + i as i32,
            timestamp: 1_700_000_000_000,
            key: Some(Bytes::from_static(b"bump")),
            value: Some(Bytes::from(v.clone())),
            headers: Default::default(),
            delete_horizon: false,
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .unwrap();
    buf.freeze()
}

/// A fresh idempotent producer id, asking again while the cluster's
/// coordinator loads.
async fn init_producer_id(addr: &str) -> InitProducerIdResponse {
    let request = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    for _ in 0..300 {
        let answer: InitProducerIdResponse =
            exchange_raw(addr, ApiKey::InitProducerId, 4, &request).await;
        if answer.error_code == 0 {
            return answer;
        }
        assert!(
            [14, 15, 16].contains(&answer.error_code),
            "InitProducerId: error {}",
            answer.error_code
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no producer id within 30 s");
}

/// The address of partition 0's leader as switchyard presents it.
async fn leader_through(bootstrap: &str, topic: &str) -> String {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let request =
        MetadataRequest::default().with_topics(Some(vec![MetadataRequestTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(topic.to_owned()))))]));
    let metadata: MetadataResponse = exchange_raw(bootstrap, ApiKey::Metadata, 9, &request).await;
    let leader = metadata.topics[0].partitions[0].leader_id;
    let broker = metadata
        .brokers
        .iter()
        .find(|b| b.node_id == leader)
        .unwrap();
    format!("{}:{}", broker.host, broker.port)
}

async fn produce_raw(bootstrap: &str, topic: &str, batch: Bytes) -> i16 {
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(batch))])]);
    let leader = leader_through(bootstrap, topic).await;
    let response: ProduceResponse = exchange_raw(&leader, ApiKey::Produce, 8, &request).await;
    let answer = &response.responses[0].partition_responses[0];
    if answer.error_code != 0 {
        eprintln!(
            "produce refused: {} {:?}",
            answer.error_code, answer.error_message
        );
    }
    answer.error_code
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_that_bumps_its_own_epoch_after_the_flip_keeps_its_mapped_id() {
    let (a, b) = clusters();
    let topic = "rp-bump";
    a.create_topic(topic, 1, 1, &[]).unwrap();
    // A's ids run ahead of B's, so an id of A that leaked into B would not
    // be mistaken for the mapped one.
    for _ in 0..5 {
        init_producer_id(&a.bootstrap()).await;
    }
    let harness = start_proxy(a, Some(b)).await;
    let admin = harness.proxy.admin_addr();
    let bootstrap = harness.bootstrap();
    post(admin, "/mirror", r#"{"mode":"sync"}"#).await;

    let init = init_producer_id(&bootstrap).await;
    let mut producer = RawProducer {
        id: init.producer_id.0,
        epoch: init.producer_epoch,
    };
    let values: Vec<String> = (0..5).map(|s| workload::record_value("bump", s)).collect();
    assert_eq!(
        produce_raw(&bootstrap, topic, batch_of(&producer, 0, &values[..3])).await,
        0
    );
    wait_for_mirror_lag_zero(admin).await;

    let flipped = post(admin, "/flip", "").await;
    assert_eq!(flipped["outcome"], "flipped", "{flipped:#}");
    // As Java and librdkafka do after UNKNOWN_PRODUCER_ID or an expired
    // batch: the same id, the next epoch, sequences from 0.
    producer.epoch += 1;
    assert_eq!(
        produce_raw(&bootstrap, topic, batch_of(&producer, 0, &values[3..])).await,
        0
    );

    let in_b = producer_of_each_value(b, topic);
    let (mapped_id, mapped_epoch) = in_b["bump#0"];
    assert_ne!(mapped_id, producer.id, "the A id itself reached B");
    for s in 0..3 {
        assert_eq!(in_b[&format!("bump#{s}")], (mapped_id, mapped_epoch));
    }
    for s in 3..5 {
        assert_eq!(
            in_b[&format!("bump#{s}")],
            (mapped_id, mapped_epoch + 1),
            "the bumped epoch writes under the mapped id, one epoch up"
        );
    }
    // Mirrored back, A holds the producer's own id and epochs.
    wait_for_mirror_lag_zero(admin).await;
    let in_a = producer_of_each_value(a, topic);
    assert_eq!(in_a["bump#4"], (producer.id, producer.epoch));
    assert_eq!(in_a.len(), 5);
    harness.stop().await;
}
