//! Shared helpers: real in-process clusters, a proxy in front of them, raw
//! protocol exchanges, bounded polling.
#![allow(dead_code, unused_imports, unreachable_pub)]

pub mod clients;
pub mod kafka;
pub mod real;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{encode_request_header_into_buffer, Encodable, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use switchyard::demo::workload::{
    self, check, read_cluster, ProduceSpec, RecordRef, StoredRecord,
};
pub use switchyard::demo::{
    addresses_seen_by_client, loopback_config, real_broker_addresses, start_cluster, Cluster,
};
use switchyard::{Config, Proxy};

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "switchyard=info".into()),
        )
        .with_test_writer()
        .try_init();
}

pub struct Harness {
    pub proxy: Proxy,
    pub state: tempfile::TempDir,
}

impl Harness {
    pub fn bootstrap(&self) -> String {
        self.proxy.bootstrap_addr().to_string()
    }

    pub async fn stop(self) {
        self.proxy.shutdown(Duration::from_secs(5)).await;
    }
}

/// Anything clients can bootstrap from: an in-process cluster or a real one.
pub trait Servers {
    fn servers(&self) -> String;
}

impl Servers for Cluster {
    fn servers(&self) -> String {
        self.bootstrap_servers()
    }
}

/// A bare "host:port" (a stand-in broker of a test's own).
impl Servers for String {
    fn servers(&self) -> String {
        self.clone()
    }
}

impl Servers for kafka::KafkaCluster {
    fn servers(&self) -> String {
        self.bootstrap()
    }
}

pub async fn start_proxy(a: &dyn Servers, b: Option<&dyn Servers>) -> Harness {
    start_proxy_with(a, b, |_| {}).await
}

pub async fn start_proxy_with(
    a: &dyn Servers,
    b: Option<&dyn Servers>,
    adjust: impl FnOnce(&mut Config),
) -> Harness {
    init_logging();
    let state = tempfile::tempdir().unwrap();
    let b_servers = b.map(|b| b.servers());
    let mut config = loopback_config(&a.servers(), b_servers.as_deref(), state.path());
    adjust(&mut config);
    let proxy = Proxy::start(config).await.expect("proxy starts");
    Harness { proxy, state }
}

/// Waits until the proxy's mirror has nothing outstanding.
pub async fn wait_for_mirror_lag_zero(admin: SocketAddr) {
    wait_until(
        Duration::from_secs(60),
        "mirror lag to reach zero",
        || async move {
            let (_, status) = http_get(admin, "/status").await;
            let json: serde_json::Value = serde_json::from_str(&status).unwrap();
            json["mirroring"]["lag_records"] == 0
        },
    )
    .await;
}

/// Polls `condition` every 50 ms until it holds or `limit` passes.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if condition().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Encodes one request frame (length prefix included).
pub fn request_frame<M: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
) -> Bytes {
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("raw-test")));
    let mut payload = BytesMut::new();
    encode_request_header_into_buffer(&mut payload, &header).unwrap();
    body.encode(&mut payload, version).unwrap();
    let mut frame = BytesMut::new();
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame.freeze()
}

/// Reads one response frame payload, or `None` when the peer closed.
pub async fn read_frame(stream: &mut TcpStream, limit: Duration) -> Option<Bytes> {
    let read = async {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await.ok()?;
        let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut payload).await.ok()?;
        Some(Bytes::from(payload))
    };
    tokio::time::timeout(limit, read)
        .await
        .expect("no answer and no close within the limit")
}

/// Sends one request and reads its response body (after the response header).
pub async fn exchange<M: Encodable>(
    stream: &mut TcpStream,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    body: &M,
) -> Option<Bytes> {
    stream
        .write_all(&request_frame(api, version, correlation_id, body))
        .await
        .ok()?;
    let payload = read_frame(stream, Duration::from_secs(15)).await?;
    assert_eq!(
        i32::from_be_bytes(payload[..4].try_into().unwrap()),
        correlation_id
    );
    let header_len = if api.response_header_version(version) >= 1 {
        5 // correlation id + empty tag section
    } else {
        4
    };
    Some(payload.slice(header_len..))
}

/// True when the proxy closed `stream` (read gives EOF or reset) within `limit`.
pub async fn closed_by_peer(stream: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A plain HTTP GET to the admin listener; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http_request(addr, "GET", path, "").await
}

/// POSTs a JSON body; returns (status, body).
pub async fn http_post(addr: SocketAddr, path: &str, json: &str) -> (u16, String) {
    let headers = format!(
        "Content-Type: application/json\r\nContent-Length: {}\r\n",
        json.len()
    );
    http_exchange(addr, "POST", path, &headers, json).await
}

/// A plain HTTP request with extra header lines (each ending in CRLF).
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
) -> (u16, String) {
    http_exchange(addr, method, path, headers, "").await
}

async fn http_exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n{body}"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of a Prometheus counter line that contains every `parts`.
pub fn metric_value(metrics: &str, name: &str, parts: &[&str]) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Every record batch header of `topic`-`partition` as a cluster stores it
/// (producer id, epoch, sequence), read with a plain Fetch v4 from whichever
/// broker leads the partition.
pub async fn stored_batches(
    bootstrap: &str,
    topic: &str,
    partition: i32,
) -> Vec<switchyard::protocol::batch::BatchHeader> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
    use kafka_protocol::protocol::Decodable;
    use switchyard::protocol::batch;
    'brokers: for addr in bootstrap.split(',') {
        let Ok(mut stream) = TcpStream::connect(addr).await else {
            continue;
        };
        let mut out = Vec::new();
        let mut offset = 0;
        loop {
            let request = FetchRequest::default()
                .with_replica_id(BrokerId(-1))
                .with_max_wait_ms(0)
                .with_min_bytes(1)
                .with_max_bytes(64 << 20)
                .with_topics(vec![FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(vec![FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(64 << 20)])]);
            let Some(mut body) = exchange(&mut stream, ApiKey::Fetch, 4, 1, &request).await else {
                continue 'brokers;
            };
            let response = FetchResponse::decode(&mut body, 4).unwrap();
            let data = &response.responses[0].partitions[0];
            if data.error_code != 0 {
                continue 'brokers; // not the leader
            }
            let records = data.records.clone().unwrap_or_default();
            let batches = batch::split_batches(&records).unwrap();
            if batches.is_empty() || offset >= data.high_watermark {
                return out;
            }
            for b in &batches {
                let header = batch::read_header(b).unwrap();
                offset = header.base_offset + i64::from(header.last_offset_delta) + 1;
                out.push(header);
            }
        }
    }
    panic!("no broker of {bootstrap} leads {topic}-{partition}");
}

/// Both clusters hold the same records per partition: the one the clients
/// moved to has every acknowledged record, and the mirror back keeps the
/// other complete. Returns how many records each holds.
pub fn assert_same_records(
    a: &Cluster,
    b: &Cluster,
    topic: &str,
    partitions: i32,
    acked: &[RecordRef],
    exact: bool,
) -> usize {
    let in_a = read_cluster(&a.bootstrap_servers(), topic, partitions).unwrap();
    let in_b = read_cluster(&b.bootstrap_servers(), topic, partitions).unwrap();
    let mut total = 0;
    for partition in 0..partitions {
        let content = |records: &Vec<StoredRecord>| -> Vec<_> {
            records
                .iter()
                .map(|r| (r.key.clone(), r.value.clone(), r.headers.clone()))
                .collect()
        };
        let (left, right) = (content(&in_a[&partition]), content(&in_b[&partition]));
        assert_eq!(left.len(), right.len(), "{topic}-{partition}: record count");
        assert!(left == right, "{topic}-{partition}: records differ");
        total += left.len();
    }
    let stored: std::collections::HashSet<Vec<u8>> = in_b
        .values()
        .flatten()
        .filter_map(|r| r.value.clone())
        .collect();
    for r in acked {
        let value = workload::record_value(&r.key, r.seq);
        assert!(
            stored.contains(value.as_bytes()),
            "{}#{} is not stored",
            r.key,
            r.seq
        );
    }
    if exact {
        // No client retried a write that had landed (the in-process
        // cluster does not deduplicate idempotent producers).
        assert_eq!(
            total,
            acked.len(),
            "every acknowledged record is stored once"
        );
    }
    total
}

/// Each record sits in `cluster` at the offset its acknowledgement named:
/// that cluster is the one the client wrote to.
pub fn assert_acknowledged_at(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    acked: &[RecordRef],
) {
    let stored = read_cluster(&cluster.bootstrap_servers(), topic, partitions).unwrap();
    for r in acked {
        let at = stored[&r.partition]
            .iter()
            .find(|s| s.offset == r.offset)
            .unwrap_or_else(|| {
                panic!(
                    "{topic}-{}@{}: acknowledged offset not stored",
                    r.partition, r.offset
                )
            });
        assert_eq!(
            at.value.as_deref(),
            Some(workload::record_value(&r.key, r.seq).as_bytes()),
            "{topic}-{}@{}: the record acknowledged there",
            r.partition,
            r.offset
        );
    }
}

/// Order violations among first deliveries, per key: a key's sequence
/// number that is not above the one delivered before it. Duplicates deliver
/// earlier records again and are left out.
pub fn first_deliveries_in_key_order(consumed: &[RecordRef]) -> usize {
    let mut last: std::collections::HashMap<&str, u64> = Default::default();
    let mut seen = std::collections::HashSet::new();
    let mut violations = 0;
    for r in consumed {
        if !seen.insert((r.key.as_str(), r.seq)) {
            continue;
        }
        if let Some(&previous) = last.get(r.key.as_str()) {
            if r.seq <= previous {
                violations += 1;
            }
        }
        last.insert(&r.key, r.seq);
    }
    violations
}
