//! switchyard's own client for the mirror cluster: metadata, producer ids,
//! produce, fetch (to look for batches already written), topic creation and
//! configuration. One pipelined connection per broker.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, BrokerId, CreateTopicsRequest,
    CreateTopicsResponse, DescribeConfigsRequest, DescribeConfigsResponse, FetchRequest,
    FetchResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, InitProducerIdRequest,
    InitProducerIdResponse, ListOffsetsRequest, ListOffsetsResponse, MetadataRequest,
    MetadataResponse, OffsetFetchRequest, OffsetFetchResponse, ProduceRequest, ProduceResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{
    encode_request_header_into_buffer, Decodable, Encodable, HeaderVersion, Message, StrBytes,
};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Mutex as AsyncMutex};
use tokio_util::codec::FramedRead;

use crate::config::ClusterName;
use crate::protocol::frame::FrameCodec;

/// Versions the mirror speaks: old enough for any Kafka 2.x broker and the
/// in-process test clusters, new enough for idempotent v2 batches, and
/// still served by Kafka 4 (which dropped the oldest versions).
const METADATA_VERSION: i16 = 4;
const PRODUCE_VERSION: i16 = 7;
/// InitProducerId is negotiated: v3 and v4 carry the (-1, -1) producer id
/// and epoch that some brokers (tansu) insist on; v1 only for brokers that
/// offer nothing newer.
const INIT_PRODUCER_ID_VERSIONS: std::ops::RangeInclusive<i16> = 3..=4;
const INIT_PRODUCER_ID_FALLBACK: i16 = 1;
const API_VERSIONS_VERSION: i16 = 0;
const FETCH_VERSION: i16 = 4;
const LIST_OFFSETS_VERSION: i16 = 1;
const DESCRIBE_CONFIGS_VERSION: i16 = 1;
const CREATE_TOPICS_VERSION: i16 = 4;
const FIND_COORDINATOR_VERSION: i16 = 2;
const OFFSET_FETCH_VERSION: i16 = 3;
const OFFSET_COMMIT_VERSION: i16 = 2;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cluster {cluster}: cannot reach {addr}: {reason}")]
    Connect {
        cluster: ClusterName,
        addr: String,
        reason: String,
    },
    #[error("cluster {cluster}: broker {addr}: {reason}")]
    Broker {
        cluster: ClusterName,
        addr: String,
        reason: String,
    },
    #[error("cluster {cluster}: no answer from {addr} within {0:?}", .timeout)]
    Timeout {
        cluster: ClusterName,
        addr: String,
        timeout: Duration,
    },
    #[error("cluster {cluster}: no leader known for {topic}-{partition}")]
    NoLeader {
        cluster: ClusterName,
        topic: String,
        partition: i32,
    },
    /// The cluster refuses to issue idempotent producer ids: asking again
    /// does not help.
    #[error(
        "cluster {cluster} cannot issue idempotent producer ids ({reason}); \
         switchyard needs them to write without duplicates"
    )]
    NoProducerIds {
        cluster: ClusterName,
        reason: String,
    },
}

/// A topic configuration entry as a cluster describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    /// Kafka's ConfigSource: 1 set on the topic, 2-4 a broker setting,
    /// 5 the built-in default.
    pub source: i8,
}

/// The built-in default (DescribeConfigs v1+ `config_source`).
pub const CONFIG_SOURCE_DEFAULT: i8 = 5;

/// How a topic is laid out in a cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLayout {
    pub partitions: usize,
    pub replication_factor: usize,
}

/// One partition's data as Fetch answers it.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub error_code: i16,
    pub high_watermark: i64,
    pub records: Bytes,
}

type Waiter = oneshot::Sender<Result<Bytes, ClientError>>;

/// API key → (min, max) version, as a cluster's ApiVersions answers.
pub type ApiVersionRanges = HashMap<i16, (i16, i16)>;

/// A Metadata request for `topics` that never creates one: an
/// auto-created topic would get the cluster's default partition count, not
/// the primary's.
fn metadata_request(topics: &[String]) -> MetadataRequest {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(
            topics
                .iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                })
                .collect(),
        ))
}

/// One pipelined connection: requests written in order, answers matched in
/// order (Kafka answers each connection's requests in the order sent).
struct BrokerConnection {
    addr: String,
    writer: AsyncMutex<OwnedWriteHalf>,
    waiting: Arc<Mutex<VecDeque<(i32, Waiter)>>>,
    next_correlation: AtomicI32,
    broken: Arc<std::sync::atomic::AtomicBool>,
}

impl BrokerConnection {
    async fn open(
        cluster: ClusterName,
        addr: &str,
        timeout: Duration,
    ) -> Result<BrokerConnection, ClientError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ClientError::Timeout {
                cluster,
                addr: addr.to_owned(),
                timeout,
            })?
            .map_err(|e| ClientError::Connect {
                cluster,
                addr: addr.to_owned(),
                reason: e.to_string(),
            })?;
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let waiting: Arc<Mutex<VecDeque<(i32, Waiter)>>> = Arc::default();
        let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader_waiting = waiting.clone();
        let reader_broken = broken.clone();
        let reader_addr = addr.to_owned();
        tokio::spawn(async move {
            let mut frames = FramedRead::new(read, FrameCodec::new(i32::MAX as usize));
            let reason = loop {
                match frames.next().await {
                    Some(Ok(frame)) => {
                        let payload = frame.payload_bytes();
                        let correlation = payload
                            .get(..4)
                            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
                        let next = reader_waiting
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .pop_front();
                        match next {
                            Some((expected, waiter)) if Some(expected) == correlation => {
                                let _ = waiter.send(Ok(payload));
                            }
                            Some((expected, waiter)) => {
                                let reason = format!(
                                    "answered correlation id {correlation:?}, expected {expected}"
                                );
                                let _ = waiter.send(Err(ClientError::Broker {
                                    cluster,
                                    addr: reader_addr.clone(),
                                    reason: reason.clone(),
                                }));
                                break reason;
                            }
                            None => break "answered a request never sent".to_owned(),
                        }
                    }
                    Some(Err(e)) => break e.to_string(),
                    None => break "closed the connection".to_owned(),
                }
            };
            reader_broken.store(true, Ordering::Release);
            let mut waiting = reader_waiting.lock().unwrap_or_else(|p| p.into_inner());
            for (_, waiter) in waiting.drain(..) {
                let _ = waiter.send(Err(ClientError::Broker {
                    cluster,
                    addr: reader_addr.clone(),
                    reason: reason.clone(),
                }));
            }
        });
        Ok(BrokerConnection {
            addr: addr.to_owned(),
            writer: AsyncMutex::new(write),
            waiting,
            next_correlation: AtomicI32::new(1),
            broken,
        })
    }

    fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
    }

    async fn call(
        &self,
        cluster: ClusterName,
        api: ApiKey,
        version: i16,
        body: &impl Encodable,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let broker_error = |reason: String| ClientError::Broker {
            cluster,
            addr: self.addr.clone(),
            reason,
        };
        let correlation_id = self.next_correlation.fetch_add(1, Ordering::Relaxed);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("switchyard-mirror")));
        let mut frame = BytesMut::new();
        frame.extend_from_slice(&[0; 4]);
        encode_request_header_into_buffer(&mut frame, &header)
            .and_then(|_| body.encode(&mut frame, version))
            .map_err(|e| broker_error(format!("cannot encode {api:?}: {e}")))?;
        let len = (frame.len() - 4) as u32;
        frame[..4].copy_from_slice(&len.to_be_bytes());
        let (tx, rx) = oneshot::channel();
        let started = tokio::time::Instant::now();
        let send = async {
            // The writer lock orders the queue entry and the bytes alike.
            let mut writer = self.writer.lock().await;
            self.waiting
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back((correlation_id, tx));
            writer.write_all(&frame).await
        };
        // One deadline for the whole call: waiting for the connection, the
        // write, and the answer.
        match tokio::time::timeout_at(started + timeout, send).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.broken.store(true, Ordering::Release);
                return Err(broker_error(e.to_string()));
            }
            Err(_) => {
                self.broken.store(true, Ordering::Release);
                return Err(ClientError::Timeout {
                    cluster,
                    addr: self.addr.clone(),
                    timeout,
                });
            }
        }
        match tokio::time::timeout_at(started + timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(broker_error("connection task ended".into())),
            Err(_) => {
                self.broken.store(true, Ordering::Release);
                Err(ClientError::Timeout {
                    cluster,
                    addr: self.addr.clone(),
                    timeout,
                })
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Metadata {
    brokers: HashMap<i32, String>,
    leaders: HashMap<(String, i32), i32>,
    partition_counts: HashMap<String, usize>,
}

/// A partition's leader, as far as the mirror cluster last said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicState {
    Exists { partitions: usize },
    Missing,
}

pub struct ClusterClient {
    cluster: ClusterName,
    bootstrap: Vec<String>,
    timeout: Duration,
    metadata: Mutex<Metadata>,
    connections: AsyncMutex<HashMap<String, Arc<BrokerConnection>>>,
    /// The cluster's ApiVersions answer (key → min, max), asked once.
    versions: Mutex<Option<Arc<ApiVersionRanges>>>,
}

impl ClusterClient {
    /// A broker's answer (or the lack of one) that the caller cannot use.
    fn broker_error(&self, addr: &str, reason: String) -> ClientError {
        ClientError::Broker {
            cluster: self.cluster,
            addr: addr.to_owned(),
            reason,
        }
    }

    pub fn new(cluster: ClusterName, bootstrap: Vec<String>, timeout: Duration) -> ClusterClient {
        ClusterClient {
            cluster,
            bootstrap,
            timeout,
            metadata: Mutex::new(Metadata::default()),
            connections: AsyncMutex::new(HashMap::new()),
            versions: Mutex::new(None),
        }
    }

    pub fn cluster(&self) -> ClusterName {
        self.cluster
    }

    async fn connection(&self, addr: &str) -> Result<Arc<BrokerConnection>, ClientError> {
        let mut connections = self.connections.lock().await;
        if let Some(existing) = connections.get(addr) {
            if !existing.is_broken() {
                return Ok(existing.clone());
            }
        }
        let connection = Arc::new(BrokerConnection::open(self.cluster, addr, self.timeout).await?);
        connections.insert(addr.to_owned(), connection.clone());
        Ok(connection)
    }

    async fn call_any<Req, Resp>(
        &self,
        api: ApiKey,
        version: i16,
        body: &Req,
    ) -> Result<Resp, ClientError>
    where
        Req: Encodable,
        Resp: Decodable + Message + HeaderVersion,
    {
        let known: Vec<String> = {
            let metadata = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
            metadata.brokers.values().cloned().collect()
        };
        let mut last = None;
        for addr in self.bootstrap.iter().chain(known.iter()) {
            match self.call_at::<Req, Resp>(addr, api, version, body).await {
                Ok(response) => return Ok(response),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(ClientError::Connect {
            cluster: self.cluster,
            addr: String::new(),
            reason: "no bootstrap address".into(),
        }))
    }

    async fn call_at<Req, Resp>(
        &self,
        addr: &str,
        api: ApiKey,
        version: i16,
        body: &Req,
    ) -> Result<Resp, ClientError>
    where
        Req: Encodable,
        Resp: Decodable + Message + HeaderVersion,
    {
        let connection = self.connection(addr).await?;
        let payload = connection
            .call(self.cluster, api, version, body, self.timeout)
            .await?;
        let mut buf = payload;
        let decoded =
            ResponseHeader::decode(&mut buf, Resp::header_version(version)).and_then(|_| {
                // Walked first: a corrupt count never sizes an allocation.
                crate::protocol::shapes::check_response(api, version, &buf)
                    .map_err(anyhow::Error::msg)?;
                Resp::decode(&mut buf, version)
            });
        decoded.map_err(|e| self.broker_error(addr, format!("undecodable {api:?} answer: {e}")))
    }

    /// Refreshes leaders and partition counts for `topics`.
    pub async fn refresh(
        &self,
        topics: &[String],
    ) -> Result<HashMap<String, TopicState>, ClientError> {
        let request = metadata_request(topics);
        let response: MetadataResponse = self
            .call_any(ApiKey::Metadata, METADATA_VERSION, &request)
            .await?;
        let mut states = HashMap::new();
        let mut metadata = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
        for broker in &response.brokers {
            metadata
                .brokers
                .insert(broker.node_id.0, format!("{}:{}", broker.host, broker.port));
        }
        for topic in &response.topics {
            let Some(name) = topic.name.as_ref().map(|n| n.0.to_string()) else {
                continue;
            };
            if topic.error_code != 0 || topic.partitions.is_empty() {
                states.insert(name, TopicState::Missing);
                continue;
            }
            for partition in &topic.partitions {
                metadata.leaders.insert(
                    (name.clone(), partition.partition_index),
                    partition.leader_id.0,
                );
            }
            metadata
                .partition_counts
                .insert(name.clone(), topic.partitions.len());
            states.insert(
                name,
                TopicState::Exists {
                    partitions: topic.partitions.len(),
                },
            );
        }
        Ok(states)
    }

    /// The cluster's brokers: node id, host and port, by node id.
    pub async fn brokers(&self) -> Result<Vec<(i32, String, i32)>, ClientError> {
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(Some(Vec::new()));
        let response: MetadataResponse = self
            .call_any(ApiKey::Metadata, METADATA_VERSION, &request)
            .await?;
        let mut brokers: Vec<(i32, String, i32)> = response
            .brokers
            .iter()
            .map(|b| (b.node_id.0, b.host.to_string(), b.port))
            .collect();
        brokers.sort();
        Ok(brokers)
    }

    /// The current leader epoch of every partition of `topics`.
    pub async fn leader_epochs(
        &self,
        topics: &[String],
    ) -> Result<HashMap<(String, i32), i32>, ClientError> {
        let request = metadata_request(topics);
        // v7 is the first to carry leader epochs.
        let response: MetadataResponse = self.call_any(ApiKey::Metadata, 7, &request).await?;
        Ok(response
            .topics
            .iter()
            .filter_map(|t| Some((t.name.as_ref()?.0.to_string(), &t.partitions)))
            .flat_map(|(name, partitions)| {
                partitions
                    .iter()
                    .map(move |p| ((name.clone(), p.partition_index), p.leader_epoch))
            })
            .collect())
    }

    /// The highest partition leader epoch of any topic in the cluster.
    pub async fn max_leader_epoch(&self) -> Result<i32, ClientError> {
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(None);
        // v7 is the first to carry leader epochs.
        let response: MetadataResponse = self.call_any(ApiKey::Metadata, 7, &request).await?;
        Ok(response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| p.leader_epoch)
            .max()
            .unwrap_or(0)
            .max(0))
    }

    fn leader_addr(&self, topic: &str, partition: i32) -> Option<String> {
        let metadata = self.metadata.lock().unwrap_or_else(|p| p.into_inner());
        let leader = metadata.leaders.get(&(topic.to_owned(), partition))?;
        metadata.brokers.get(leader).cloned()
    }

    /// Every topic of the cluster with its partition count.
    pub async fn list_topics(&self) -> Result<HashMap<String, usize>, ClientError> {
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(None);
        let response: MetadataResponse = self
            .call_any(ApiKey::Metadata, METADATA_VERSION, &request)
            .await?;
        Ok(response
            .topics
            .iter()
            .filter(|t| t.error_code == 0 && !t.is_internal)
            .filter_map(|t| Some((t.name.as_ref()?.0.to_string(), t.partitions.len())))
            .collect())
    }

    /// The cluster's API version ranges, asked once and remembered (a
    /// failed ask is asked again next time).
    pub async fn api_versions(&self) -> Result<Arc<ApiVersionRanges>, ClientError> {
        if let Some(known) = self
            .versions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(known);
        }
        let response: ApiVersionsResponse = self
            .call_any(
                ApiKey::ApiVersions,
                API_VERSIONS_VERSION,
                &ApiVersionsRequest::default(),
            )
            .await?;
        if response.error_code != crate::protocol::errors::NONE {
            return Err(self.broker_error(
                "",
                format!(
                    "ApiVersions failed with {}",
                    crate::protocol::errors::describe(response.error_code)
                ),
            ));
        }
        let versions: Arc<ApiVersionRanges> = Arc::new(
            response
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect(),
        );
        *self.versions.lock().unwrap_or_else(|p| p.into_inner()) = Some(versions.clone());
        Ok(versions)
    }

    /// The InitProducerId version to send: the highest of v3-v4 the
    /// cluster offers, else v1 (brokers older than Kafka 2.5).
    async fn init_producer_id_version(&self) -> Result<i16, ClientError> {
        let versions = self.api_versions().await?;
        let Some(&(min, max)) = versions.get(&(ApiKey::InitProducerId as i16)) else {
            return Err(ClientError::NoProducerIds {
                cluster: self.cluster,
                reason: "it does not offer InitProducerId".into(),
            });
        };
        let newest = (*INIT_PRODUCER_ID_VERSIONS.end()).min(max);
        if INIT_PRODUCER_ID_VERSIONS.contains(&newest) && newest >= min {
            return Ok(newest);
        }
        if (min..=max).contains(&INIT_PRODUCER_ID_FALLBACK) {
            return Ok(INIT_PRODUCER_ID_FALLBACK);
        }
        Err(ClientError::NoProducerIds {
            cluster: self.cluster,
            reason: format!("it offers InitProducerId v{min}-v{max} only"),
        })
    }

    /// A fresh idempotent producer id on this cluster.
    pub async fn init_producer_id(&self) -> Result<(i64, i16), ClientError> {
        use crate::protocol::errors;
        let version = self.init_producer_id_version().await?;
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(kafka_protocol::messages::ProducerId(-1))
            .with_producer_epoch(-1);
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(50);
        loop {
            let response: InitProducerIdResponse = self
                .call_any(ApiKey::InitProducerId, version, &request)
                .await?;
            let code = response.error_code;
            if code == errors::NONE && response.producer_id.0 >= 0 {
                return Ok((response.producer_id.0, response.producer_epoch));
            }
            // A fresh cluster answers COORDINATOR_LOAD_IN_PROGRESS or
            // NOT_COORDINATOR until its producer id manager is ready.
            if errors::is_coordinator_moving(code) {
                if tokio::time::Instant::now() + backoff > deadline {
                    return Err(self.broker_error(
                        "",
                        format!(
                            "InitProducerId (an idempotent producer id for switchyard's own \
                             writes) kept failing with {}",
                            errors::describe(code)
                        ),
                    ));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
                continue;
            }
            return Err(ClientError::NoProducerIds {
                cluster: self.cluster,
                reason: format!(
                    "InitProducerId v{version} answered {} with producer id {}",
                    errors::describe(code),
                    response.producer_id.0
                ),
            });
        }
    }

    /// Reads a partition from `offset` on (Fetch v4, read uncommitted, up
    /// to `max_bytes`) from its leader. The records may end in a partial
    /// batch.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
    ) -> Result<Fetched, ClientError> {
        use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        let addr = self.leader(topic, partition).await?;
        // A moment's wait, not none: tansu answers a Fetch with no wait
        // at all with no partitions.
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(50)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_isolation_level(0)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(max_bytes)])]);
        let response: FetchResponse = self
            .call_at(&addr, ApiKey::Fetch, FETCH_VERSION, &request)
            .await?;
        let data = response
            .responses
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| {
                self.broker_error(&addr, format!("Fetch answer lacks {topic}-{partition}"))
            })?;
        Ok(Fetched {
            error_code: data.error_code,
            high_watermark: data.high_watermark,
            records: data.records.clone().unwrap_or_default(),
        })
    }

    /// A partition's first offset (ListOffsets v1, earliest), from its
    /// leader.
    pub async fn log_start(&self, topic: &str, partition: i32) -> Result<i64, ClientError> {
        const EARLIEST: i64 = -2;
        self.list_offset(topic, partition, EARLIEST).await
    }

    /// The offset the next record of a partition will get (ListOffsets v1,
    /// latest), from its leader.
    pub async fn log_end(&self, topic: &str, partition: i32) -> Result<i64, ClientError> {
        const LATEST: i64 = -1;
        self.list_offset(topic, partition, LATEST).await
    }

    async fn list_offset(
        &self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<i64, ClientError> {
        use kafka_protocol::messages::list_offsets_request::{
            ListOffsetsPartition, ListOffsetsTopic,
        };
        let addr = self.leader(topic, partition).await?;
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp)])]);
        let response: ListOffsetsResponse = self
            .call_at(&addr, ApiKey::ListOffsets, LIST_OFFSETS_VERSION, &request)
            .await?;
        let answer = response
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition);
        match answer {
            Some(p) if p.error_code == crate::protocol::errors::NONE => Ok(p.offset.max(0)),
            Some(p) => Err(ClientError::Broker {
                cluster: self.cluster,
                addr,
                reason: format!(
                    "ListOffsets for {topic}-{partition}: {}",
                    crate::protocol::errors::describe(p.error_code)
                ),
            }),
            None => Err(ClientError::Broker {
                cluster: self.cluster,
                addr,
                reason: format!("ListOffsets answer lacks {topic}-{partition}"),
            }),
        }
    }

    /// The address of a partition's leader, learned from metadata when not
    /// known yet.
    async fn leader(&self, topic: &str, partition: i32) -> Result<String, ClientError> {
        if self.leader_addr(topic, partition).is_none() {
            self.refresh(&[topic.to_owned()]).await?;
        }
        self.leader_addr(topic, partition)
            .ok_or_else(|| ClientError::NoLeader {
                cluster: self.cluster,
                topic: topic.to_owned(),
                partition,
            })
    }

    /// A topic's partition count and replication factor (the replica count
    /// of its first partition); `None` when the cluster lacks the topic.
    pub async fn topic_layout(&self, topic: &str) -> Result<Option<TopicLayout>, ClientError> {
        let request = MetadataRequest::default()
            .with_allow_auto_topic_creation(false)
            .with_topics(Some(vec![
                kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(topic.to_owned())))),
            ]));
        let response: MetadataResponse = self
            .call_any(ApiKey::Metadata, METADATA_VERSION, &request)
            .await?;
        Ok(response
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
            .filter(|t| t.error_code == 0 && !t.partitions.is_empty())
            .map(|t| TopicLayout {
                partitions: t.partitions.len(),
                replication_factor: t
                    .partitions
                    .iter()
                    .min_by_key(|p| p.partition_index)
                    .map_or(1, |p| p.replica_nodes.len().max(1)),
            }))
    }

    /// A topic's configuration, every entry (DescribeConfigs v1 with no
    /// keys named: some brokers drop the connection when keys are named).
    pub async fn topic_configs(&self, topic: &str) -> Result<Vec<ConfigEntry>, ClientError> {
        use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
        const TOPIC_RESOURCE: i8 = 2;
        let offered = self
            .api_versions()
            .await?
            .get(&(ApiKey::DescribeConfigs as i16))
            .is_some_and(|&(min, max)| (min..=max).contains(&DESCRIBE_CONFIGS_VERSION));
        if !offered {
            return Err(self.broker_error(
                "",
                format!("DescribeConfigs v{DESCRIBE_CONFIGS_VERSION} is not offered"),
            ));
        }
        let request = DescribeConfigsRequest::default().with_resources(vec![
            DescribeConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(StrBytes::from_string(topic.to_owned()))
                .with_configuration_keys(None),
        ]);
        let response: DescribeConfigsResponse = self
            .call_any(ApiKey::DescribeConfigs, DESCRIBE_CONFIGS_VERSION, &request)
            .await?;
        let Some(result) = response.results.first() else {
            return Err(
                self.broker_error("", format!("DescribeConfigs answer lacks topic {topic}"))
            );
        };
        if result.error_code != crate::protocol::errors::NONE {
            return Err(self.broker_error(
                "",
                format!(
                    "DescribeConfigs for topic {topic}: {}{}",
                    crate::protocol::errors::describe(result.error_code),
                    result
                        .error_message
                        .as_ref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ),
            ));
        }
        Ok(result
            .configs
            .iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.as_ref().map(|v| v.to_string()),
                source: c.config_source,
            })
            .collect())
    }

    /// Writes `records` (v2 batches) to a partition's leader with acks=all.
    /// Returns (error code, base offset).
    pub async fn produce(
        &self,
        topic: &str,
        partition: i32,
        records: Bytes,
    ) -> Result<(i16, i64), ClientError> {
        let addr = self.leader(topic, partition).await?;
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(self.timeout.as_millis().min(i32::MAX as u128) as i32)
            .with_topic_data(vec![
                kafka_protocol::messages::produce_request::TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partition_data(vec![
                        kafka_protocol::messages::produce_request::PartitionProduceData::default()
                            .with_index(partition)
                            .with_records(Some(records)),
                    ]),
            ]);
        let response: ProduceResponse = self
            .call_at(&addr, ApiKey::Produce, PRODUCE_VERSION, &request)
            .await?;
        let answer = response
            .responses
            .iter()
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == partition)
            .ok_or_else(|| {
                self.broker_error(&addr, format!("Produce answer lacks {topic}-{partition}"))
            })?;
        Ok((answer.error_code, answer.base_offset))
    }

    /// Creates `topic` with `partitions` partitions, `replication_factor`
    /// replicas (-1: the cluster's default) and `configs`. Returns the
    /// error code and message (TOPIC_ALREADY_EXISTS counts as success for
    /// the caller to decide).
    pub async fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication_factor: i16,
        configs: &[(String, String)],
    ) -> Result<(i16, Option<String>), ClientError> {
        use kafka_protocol::messages::create_topics_request::{
            CreatableTopic, CreatableTopicConfig,
        };
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs(
                    configs
                        .iter()
                        .map(|(name, value)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string(name.clone()))
                                .with_value(Some(StrBytes::from_string(value.clone())))
                        })
                        .collect(),
                )]);
        let response: CreateTopicsResponse = self
            .call_any(ApiKey::CreateTopics, CREATE_TOPICS_VERSION, &request)
            .await?;
        Ok(response.topics.first().map_or((-1, None), |t| {
            (
                t.error_code,
                t.error_message.as_ref().map(|m| m.to_string()),
            )
        }))
    }

    /// The committed offsets of a consumer group: (topic, partition) →
    /// offset, as the group's coordinator answers.
    pub async fn committed_offsets(
        &self,
        group: &str,
    ) -> Result<HashMap<(String, i32), i64>, ClientError> {
        let topics = self.list_topics().await?;
        let addr = self.coordinator(group).await?;
        let broker_error = |reason: String| ClientError::Broker {
            cluster: self.cluster,
            addr: addr.clone(),
            reason,
        };
        // Every topic named explicitly: not every broker answers the
        // "all topics" form.
        let request = OffsetFetchRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_topics(Some(
                topics
                    .into_iter()
                    .map(|(name, partitions)| {
                        kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic::default()
                            .with_name(TopicName(StrBytes::from_string(name)))
                            .with_partition_indexes((0..partitions as i32).collect())
                    })
                    .collect(),
            ));
        let response: OffsetFetchResponse = self
            .call_at(&addr, ApiKey::OffsetFetch, OFFSET_FETCH_VERSION, &request)
            .await?;
        if response.error_code != 0 {
            return Err(broker_error(format!(
                "OffsetFetch for group {group}: error {}",
                response.error_code
            )));
        }
        let mut offsets = HashMap::new();
        for topic in &response.topics {
            for partition in &topic.partitions {
                if partition.error_code == 0 && partition.committed_offset >= 0 {
                    offsets.insert(
                        (topic.name.0.to_string(), partition.partition_index),
                        partition.committed_offset,
                    );
                }
            }
        }
        Ok(offsets)
    }

    /// The address of a consumer group's coordinator. A coordinator that is
    /// still loading (or not chosen yet, as on a fresh cluster whose offsets
    /// topic is being created) is asked again within the request timeout.
    async fn coordinator(&self, group: &str) -> Result<String, ClientError> {
        use crate::protocol::errors;
        let find = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(group.to_owned()))
            .with_key_type(0);
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut backoff = Duration::from_millis(50);
        loop {
            let coordinator: FindCoordinatorResponse = self
                .call_any(ApiKey::FindCoordinator, FIND_COORDINATOR_VERSION, &find)
                .await?;
            let code = coordinator.error_code;
            if code == errors::NONE {
                return Ok(format!("{}:{}", coordinator.host, coordinator.port));
            }
            if !errors::is_coordinator_moving(code)
                || tokio::time::Instant::now() + backoff > deadline
            {
                return Err(self.broker_error(
                    "",
                    format!(
                        "no coordinator for group {group}: {}",
                        errors::describe(code)
                    ),
                ));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
    }

    /// Removes members from a group (LeaveGroup v3), as an administrator
    /// would: a static member by its instance id. Returns each member's
    /// error code.
    pub async fn leave_group(
        &self,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<i16>, ClientError> {
        use kafka_protocol::messages::leave_group_request::MemberIdentity;
        use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let addr = self.coordinator(group).await?;
        let request = LeaveGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_members(
                members
                    .iter()
                    .map(|(member, instance)| {
                        MemberIdentity::default()
                            .with_member_id(StrBytes::from_string(member.clone()))
                            .with_group_instance_id(instance.clone().map(StrBytes::from_string))
                    })
                    .collect(),
            );
        let response: LeaveGroupResponse =
            self.call_at(&addr, ApiKey::LeaveGroup, 3, &request).await?;
        if response.error_code != crate::protocol::errors::NONE {
            return Ok(vec![response.error_code]);
        }
        Ok(response.members.iter().map(|m| m.error_code).collect())
    }

    /// Commits offsets for a group as an administrator would (no member,
    /// generation -1): brokers take it while the group has no members.
    /// Returns each partition's error code.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: &std::collections::BTreeMap<(String, i32), i64>,
    ) -> Result<Vec<((String, i32), i16)>, ClientError> {
        use kafka_protocol::messages::offset_commit_request::{
            OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        };
        use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
        if offsets.is_empty() {
            return Ok(Vec::new());
        }
        let addr = self.coordinator(group).await?;
        // With the partitions' current leader epochs (v6+), so a consumer
        // that takes its position from these commits carries this
        // cluster's epoch with it: at the next move switchyard can tell the
        // position is stale even on a partition the consumer has read
        // nothing from (its position carries no record's epoch).
        let version = match self
            .api_versions()
            .await?
            .get(&(ApiKey::OffsetCommit as i16))
        {
            Some(&(min, max)) if min <= 6 && max >= 6 => 6,
            _ => OFFSET_COMMIT_VERSION,
        };
        let epochs = if version >= 6 {
            let mut topics: Vec<String> = offsets.keys().map(|(t, _)| t.clone()).collect();
            topics.dedup();
            self.leader_epochs(&topics).await.unwrap_or_default()
        } else {
            HashMap::new()
        };
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for ((topic, partition), offset) in offsets {
            let epoch = epochs
                .get(&(topic.clone(), *partition))
                .copied()
                .unwrap_or(-1);
            let entry = OffsetCommitRequestPartition::default()
                .with_partition_index(*partition)
                .with_committed_offset(*offset)
                .with_committed_leader_epoch(if version >= 6 { epoch } else { -1 })
                .with_committed_metadata(Some(StrBytes::from_static_str("switchyard flip")));
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.partitions.push(entry),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.clone())))
                        .with_partitions(vec![entry]),
                ),
            }
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
            .with_generation_id_or_member_epoch(-1)
            .with_member_id(StrBytes::default())
            .with_retention_time_ms(-1)
            .with_topics(topics);
        let response: OffsetCommitResponse = self
            .call_at(&addr, ApiKey::OffsetCommit, version, &request)
            .await?;
        Ok(response
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(move |p| ((t.name.0.to_string(), p.partition_index), p.error_code))
            })
            .collect())
    }
}
