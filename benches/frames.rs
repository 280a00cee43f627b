//! Hot-path costs per frame: the request peek that routes every request, the
//! framing of a stream, and the response rewrites that decode and re-encode.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, FindCoordinatorResponse, MetadataResponse,
    ProduceRequest, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{encode_request_header_into_buffer, Encodable, StrBytes};
use switchyard::protocol::frame::{Frame, FrameCodec};
use switchyard::protocol::header::peek_request;
use switchyard::protocol::requests::produce_acks;
use switchyard::rewrite::{
    rewrite_response, Advertised, ApiRanges, ResponseRewrite, RewriteContext,
};
use tokio_util::codec::Decoder;

/// Virtual id = 1000 + n in order of first sight, all on 127.0.0.1.
#[derive(Default)]
struct Ctx {
    ids: RefCell<HashMap<i32, i32>>,
}

impl RewriteContext for Ctx {
    fn virtual_broker(&self, node_id: i32, _real: Option<(&str, i32)>) -> Advertised {
        let mut ids = self.ids.borrow_mut();
        let next = 1000 + ids.len() as i32;
        let id = *ids.entry(node_id).or_insert(next);
        Advertised {
            node_id: id,
            host: StrBytes::from_static_str("127.0.0.1"),
            port: 9000 + id,
        }
    }
    fn virtual_cluster_id(&self) -> StrBytes {
        StrBytes::from_static_str("virtual-cluster")
    }
    fn learn_versions(&self, _ranges: &ApiRanges) {}
    fn own_versions(&self) -> Option<ApiRanges> {
        None
    }
    fn other_cluster_versions(&self) -> Option<ApiRanges> {
        None
    }
}

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

/// A Produce v9 request payload (no length prefix) carrying 16 KiB of records.
fn produce_v9_payload() -> Vec<u8> {
    let version = 9;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(12345)
        .with_client_id(Some(s("bench-producer")));
    let body = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(s("orders")))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(3)
                .with_records(Some(Bytes::from(vec![0xab; 16 * 1024])))])]);
    let mut buf = BytesMut::new();
    encode_request_header_into_buffer(&mut buf, &header).unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

/// A response payload: response header, then the body, no length prefix.
fn response_payload<M: Encodable>(api: ApiKey, version: i16, body: &M) -> Bytes {
    let mut buf = BytesMut::new();
    ResponseHeader::default()
        .with_correlation_id(777)
        .encode(&mut buf, api.response_header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.freeze()
}

fn metadata_v12() -> Bytes {
    let brokers = (1..=3)
        .map(|id| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(id))
                .with_host(s(&format!("broker-{id}.kafka.internal.example.com")))
                .with_port(9092)
                .with_rack(Some(s(&format!("rack-{id}"))))
        })
        .collect();
    let topics = (0..50)
        .map(|t| {
            MetadataResponseTopic::default()
                .with_name(Some(TopicName(s(&format!("service.events.topic-{t:03}")))))
                .with_partitions(
                    (0..6)
                        .map(|p| {
                            let leader = (t + p) % 3 + 1;
                            let replicas: Vec<_> =
                                (0..3).map(|r| BrokerId((leader + r - 1) % 3 + 1)).collect();
                            MetadataResponsePartition::default()
                                .with_partition_index(p)
                                .with_leader_id(BrokerId(leader))
                                .with_leader_epoch(7)
                                .with_isr_nodes(replicas.clone())
                                .with_replica_nodes(replicas)
                        })
                        .collect(),
                )
        })
        .collect();
    let response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(s("real-cluster-id-0123456789")))
        .with_controller_id(BrokerId(2))
        .with_topics(topics);
    response_payload(ApiKey::Metadata, 12, &response)
}

fn find_coordinator(version: i16) -> Bytes {
    let response = if version < 4 {
        FindCoordinatorResponse::default()
            .with_error_message(None)
            .with_node_id(BrokerId(2))
            .with_host(s("broker-2.kafka.internal.example.com"))
            .with_port(9092)
    } else {
        FindCoordinatorResponse::default()
            .with_error_message(None)
            .with_coordinators(vec![Coordinator::default()
                .with_key(s("payments-consumer-group"))
                .with_node_id(BrokerId(2))
                .with_host(s("broker-2.kafka.internal.example.com"))
                .with_port(9092)
                .with_error_message(None)])
    };
    response_payload(ApiKey::FindCoordinator, version, &response)
}

fn api_versions_v3() -> Bytes {
    let api_keys: Vec<_> = ApiKey::iter()
        .take(60)
        .map(|api| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(0)
                .with_max_version(api.valid_versions().max)
        })
        .collect();
    assert_eq!(api_keys.len(), 60);
    let response = ApiVersionsResponse::default().with_api_keys(api_keys);
    response_payload(ApiKey::ApiVersions, 3, &response)
}

fn bench_peek(c: &mut Criterion) {
    let payload = produce_v9_payload();
    let mut group = c.benchmark_group("peek");
    group.throughput(Throughput::Elements(1));
    group.bench_function("produce_v9_16KiB/peek_request+produce_acks", |b| {
        b.iter(|| {
            let payload = black_box(&payload[..]);
            let header = peek_request(payload).unwrap();
            produce_acks(payload, &header).unwrap()
        })
    });
    group.finish();
}

fn bench_frames(c: &mut Criterion) {
    const FRAMES: usize = 64;
    let frame = Frame::from_payload(&produce_v9_payload());
    let mut stream = BytesMut::new();
    for _ in 0..FRAMES {
        stream.extend_from_slice(frame.wire_bytes());
    }
    let mut group = c.benchmark_group("frame_codec");
    // Splitting a frame off is O(1) (no copy), so frames per second, not
    // bytes, is the meaningful rate; each frame is 16 KiB and a bit.
    group.throughput(Throughput::Elements(FRAMES as u64));
    group.bench_function("decode_64_produce_v9_16KiB", |b| {
        b.iter_batched(
            || stream.clone(),
            |mut buf| {
                let mut codec = FrameCodec::new(1 << 20);
                let mut n = 0;
                while let Some(frame) = codec.decode(&mut buf).unwrap() {
                    black_box(&frame);
                    n += 1;
                }
                assert_eq!(n, FRAMES);
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn bench_rewrite(c: &mut Criterion) {
    let cases = [
        (
            "metadata_v12_3brokers_50x6",
            ResponseRewrite::Metadata,
            12,
            metadata_v12(),
        ),
        (
            "find_coordinator_v3",
            ResponseRewrite::FindCoordinator,
            3,
            find_coordinator(3),
        ),
        (
            "find_coordinator_v4",
            ResponseRewrite::FindCoordinator,
            4,
            find_coordinator(4),
        ),
        (
            "api_versions_v3_60keys",
            ResponseRewrite::ApiVersions,
            3,
            api_versions_v3(),
        ),
    ];
    let mut group = c.benchmark_group("rewrite_response");
    for (name, kind, version, payload) in cases {
        let ctx = Ctx::default();
        // Measure the rewrite itself, never an error path: a case the
        // rewrite refuses is reported and left out.
        match rewrite_response(kind, version, payload.clone(), &ctx) {
            Ok(Some(_)) => {}
            other => {
                eprintln!("rewrite_response/{name}: skipped, the rewrite returned {other:?}");
                continue;
            }
        }
        group.throughput(Throughput::Bytes(payload.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| rewrite_response(kind, version, black_box(payload.clone()), &ctx).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_peek, bench_frames, bench_rewrite);
criterion_main!(benches);
