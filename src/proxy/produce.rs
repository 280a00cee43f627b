//! Produce in mirror mode: what the primary acknowledges is handed to the
//! mirror, and in sync mode the client's acknowledgement waits for it.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceResponse, ResponseHeader, TopicName};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::Shared;
use crate::config::{ClusterName, MirrorMode};
use crate::error::SessionError;
use crate::mirror::Mirror;
use crate::protocol::batch;
use crate::protocol::frame::{Frame, LENGTH_PREFIX};
use crate::protocol::header::RequestHeaderPeek;
use crate::protocol::requests;
use crate::rewrite;

const REQUEST_TIMED_OUT: i16 = 7;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;

pub(super) struct MirrorPart {
    topic: String,
    partition: i32,
    batches: Vec<Bytes>,
}

/// The mirror's share of one Produce request.
pub(super) struct MirrorWork {
    mirror: Arc<Mirror>,
    parts: Vec<MirrorPart>,
    /// The client sent acks=0: the proxy asked for acks=1 to learn offsets,
    /// and the answer is not passed on.
    pub(super) swallow: bool,
}

pub(super) enum ProducePlan {
    /// Forward (possibly a patched copy of) the frame.
    Forward {
        frame: Option<Bytes>,
        mirror: Option<Box<MirrorWork>>,
        expects_response: bool,
    },
    /// Answer locally without forwarding.
    Reject(Bytes),
}

pub(super) fn plan(
    shared: &Shared,
    frame: &Frame,
    header: &RequestHeaderPeek,
    cluster: ClusterName,
) -> Result<ProducePlan, SessionError> {
    let payload = frame.payload();
    let (acks, acks_at) = requests::produce_acks_at(payload, header)
        .map_err(|e| SessionError::BadRequest(e.to_string()))?;
    let mirror = shared
        .mirror_from(cluster)
        .filter(|m| m.mode() != MirrorMode::Off)
        .cloned();
    // Producers that got their id from the other cluster before a flip
    // write here under the id that stands for theirs, so that this
    // cluster's sequence checks continue from what the mirror wrote.
    let foreign = shared
        .mirror_from(cluster.other())
        .map(|m| m.producer_map())
        .filter(|m| !m.is_empty());
    if mirror.is_none() && foreign.is_none() {
        return Ok(ProducePlan::Forward {
            frame: None,
            mirror: None,
            expects_response: acks != 0,
        });
    }
    // Walked, not decoded: no count read off the wire sizes an allocation.
    let body = requests::walk_produce(payload, header)
        .map_err(|e| SessionError::BadRequest(e.to_string()))?;
    let payload_bytes = frame.payload_bytes();
    let mut parts = Vec::new();
    let mut restamped: Vec<(usize, Bytes)> = Vec::new();
    let mut transactional = body.transactional_id.is_some();
    for partition in &body.partitions {
        let Some(range) = partition.records.clone() else {
            continue;
        };
        // Copied out of the frame so a long-queued batch does not keep the
        // whole request alive.
        let records = Bytes::copy_from_slice(&payload_bytes[range.clone()]);
        // A batch that fails its checks is left to the primary to refuse.
        let Ok(batches) = batch::split_batches(&records) else {
            continue;
        };
        let mut at = range.start;
        let mut out = Vec::with_capacity(batches.len());
        for raw in batches {
            let len = raw.len();
            let Ok(h) = batch::read_header(&raw) else {
                out.push(raw);
                at += len;
                continue;
            };
            transactional |= h.is_transactional();
            let key = (h.producer_id, h.producer_epoch);
            let mapped = foreign
                .filter(|_| h.is_idempotent() && !h.is_transactional())
                .and_then(|map| Some((map, map.mapped(key)?)));
            match mapped {
                Some((map, (producer_id, epoch))) => {
                    let first = map.first_sequence(
                        key,
                        &partition.topic,
                        partition.partition,
                        h.base_sequence,
                    );
                    let stamped = batch::restamp(
                        &raw,
                        producer_id,
                        epoch,
                        Some(h.base_sequence.wrapping_sub(first)),
                    );
                    shared.metrics.restamped_batches.increment(1);
                    restamped.push((at, stamped.clone()));
                    out.push(stamped);
                }
                None => out.push(raw),
            }
            at += len;
        }
        parts.push(MirrorPart {
            topic: partition.topic.clone(),
            partition: partition.partition,
            batches: out,
        });
    }
    if transactional && mirror.is_some() {
        // Transaction markers are written by the primary's coordinator, not
        // through Produce, so the mirror could not tell committed from
        // aborted records: transactional producers are refused while
        // mirroring, before anything is written.
        shared.metrics.mirror_transactional_refused.increment(1);
        tracing::warn!("refused a transactional Produce: mirroring does not carry transactions");
        return Ok(ProducePlan::Reject(refuse_all(
            &body,
            header,
            TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
        )?));
    }
    let patch_acks = acks == 0 && mirror.is_some();
    let patched = (patch_acks || !restamped.is_empty()).then(|| {
        let mut copy = BytesMut::from(&frame.wire_bytes()[..]);
        if patch_acks {
            let at = LENGTH_PREFIX + acks_at;
            copy[at..at + 2].copy_from_slice(&1i16.to_be_bytes());
        }
        // Restamping rewrites fixed-size header fields: lengths stay.
        for (at, stamped) in &restamped {
            let at = LENGTH_PREFIX + at;
            copy[at..at + stamped.len()].copy_from_slice(stamped);
        }
        copy.freeze()
    });
    let Some(mirror) = mirror else {
        return Ok(ProducePlan::Forward {
            frame: patched,
            mirror: None,
            expects_response: acks != 0,
        });
    };
    Ok(ProducePlan::Forward {
        frame: patched,
        mirror: Some(Box::new(MirrorWork {
            mirror,
            parts,
            swallow: acks == 0,
        })),
        expects_response: true,
    })
}

/// An answer giving every partition of a Produce request `error`; `None`
/// when the request asked for no answer (acks=0).
pub(super) fn refuse(
    frame: &Frame,
    header: &RequestHeaderPeek,
    error: i16,
) -> Result<Option<Bytes>, SessionError> {
    let body = requests::walk_produce(frame.payload(), header)
        .map_err(|e| SessionError::BadRequest(e.to_string()))?;
    if body.acks == 0 {
        return Ok(None);
    }
    refuse_all(&body, header, error).map(Some)
}

fn refuse_all(
    body: &requests::ProduceBody,
    header: &RequestHeaderPeek,
    error: i16,
) -> Result<Bytes, SessionError> {
    let mut topics: Vec<TopicProduceResponse> = Vec::new();
    for p in &body.partitions {
        let answer = PartitionProduceResponse::default()
            .with_index(p.partition)
            .with_error_code(error)
            .with_base_offset(-1);
        match topics.iter_mut().find(|t| t.name.0.as_str() == p.topic) {
            Some(topic) => topic.partition_responses.push(answer),
            None => topics.push(
                TopicProduceResponse::default()
                    .with_name(TopicName(StrBytes::from_string(p.topic.clone())))
                    .with_partition_responses(vec![answer]),
            ),
        }
    }
    let response = ProduceResponse::default().with_responses(topics);
    let response_header = ResponseHeader::default().with_correlation_id(header.correlation_id);
    let header_version = ApiKey::Produce.response_header_version(header.api_version);
    rewrite::encode(
        &response_header,
        header_version,
        &response,
        header.api_version,
    )
    .map_err(|e| SessionError::Proxy(format!("Produce refusal: {e}")))
}

/// A Produce answer whose batches were handed to the mirror. In sync mode
/// the mirror's confirmations are still coming; the answer goes back to the
/// client once they are in or the wait is over.
pub(super) struct Submitted {
    frame: Frame,
    header: RequestHeaderPeek,
    response_header: ResponseHeader,
    response: ProduceResponse,
    swallow: bool,
    waits: Vec<Wait>,
    deadline: tokio::time::Instant,
    /// Partitions the client must be told to retry.
    unconfirmed: Vec<(String, i32)>,
    sync_timeouts: metrics::Counter,
}

struct Wait {
    mirror: Arc<Mirror>,
    topic: String,
    partition: i32,
    a_base: i64,
    /// Kept to be journaled when the mirror does not confirm in time.
    batches: Vec<Bytes>,
    /// The queued copy, let go from memory once journaled if need be.
    queued: Option<crate::mirror::QueuedBatches>,
    done: Option<tokio::sync::oneshot::Receiver<crate::mirror::Outcome>>,
    /// The journal write started when the sync wait ran out: its own task,
    /// so that abandoning `settle` does not abandon the write.
    journaling: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// Whether the client is told the primary's success: the mirror has
    /// the batch, or the journal does.
    confirmed: Option<bool>,
}

/// Hands what the primary acknowledged to the mirror: queued (sync) or
/// journaled and queued (async). Does not wait for the mirror cluster.
pub(super) async fn submit(
    shared: &Shared,
    header: &RequestHeaderPeek,
    frame: Frame,
    work: MirrorWork,
    cluster: crate::config::ClusterName,
) -> Result<Submitted, SessionError> {
    let version = header.api_version;
    let header_version = ApiKey::Produce.response_header_version(version);
    let mut buf = frame.payload_bytes();
    let decoded = ResponseHeader::decode(&mut buf, header_version).and_then(|h| {
        crate::protocol::shapes::check_response(ApiKey::Produce, version, &buf)
            .map_err(anyhow::Error::msg)?;
        Ok((h, ProduceResponse::decode(&mut buf, version)?))
    });
    let (response_header, response) = decoded.map_err(|e| SessionError::Rewrite {
        cluster,
        api: "Produce",
        version,
        reason: e.to_string(),
    })?;

    let mode = work.mirror.mode();
    let mut waits = Vec::new();
    let mut unconfirmed = Vec::new();
    for part in work.parts {
        let acknowledged = response
            .responses
            .iter()
            .filter(|t| t.name.0.as_str() == part.topic)
            .flat_map(|t| t.partition_responses.iter())
            .find(|p| p.index == part.partition && p.error_code == 0 && p.base_offset >= 0)
            .map(|p| p.base_offset);
        let Some(a_base) = acknowledged else { continue };
        if mode == MirrorMode::Async {
            let journaled = work
                .mirror
                .journal_and_submit(&part.topic, part.partition, a_base, part.batches)
                .await;
            if let Err(e) = journaled {
                tracing::error!(error = %e, "cannot write the mirror journal; the client will retry");
                unconfirmed.push((part.topic, part.partition));
            }
        } else {
            let batches = (mode == MirrorMode::Sync).then(|| part.batches.clone());
            let (done, queued) =
                work.mirror
                    .submit(&part.topic, part.partition, a_base, part.batches);
            if let Some(batches) = batches {
                waits.push(Wait {
                    mirror: work.mirror.clone(),
                    topic: part.topic,
                    partition: part.partition,
                    a_base,
                    batches,
                    queued: Some(queued),
                    done: Some(done),
                    journaling: None,
                    confirmed: None,
                });
            }
        }
    }
    Ok(Submitted {
        frame,
        header: *header,
        response_header,
        response,
        swallow: work.swallow,
        waits,
        deadline: tokio::time::Instant::now()
            + Duration::from_millis(shared.config.mirror.sync_timeout_ms),
        unconfirmed,
        sync_timeouts: shared.metrics.mirror_sync_timeouts.clone(),
    })
}

impl Submitted {
    pub(super) fn is_settled(&self) -> bool {
        self.waits.iter().all(|w| w.confirmed.is_some())
    }

    /// Waits for the mirror's confirmations, up to the sync deadline; what
    /// the mirror has not confirmed by then is made durable in the mirror
    /// journal instead (as in async mode), so the client can be told the
    /// primary's success: the primary has stored the records, and a
    /// client told to retry would store them twice unless it is
    /// idempotent. Can be abandoned and resumed: what has been learned
    /// stays learned, and a journal write once started runs to its end.
    pub(super) async fn settle(&mut self) {
        let deadline = self.deadline;
        for wait in self.waits.iter_mut().filter(|w| w.confirmed.is_none()) {
            if wait.journaling.is_none() {
                let Some(done) = wait.done.as_mut() else {
                    continue;
                };
                let outcome = tokio::time::timeout_at(deadline, done).await;
                let (done, why) = match outcome {
                    Ok(Ok(Ok(()))) => {
                        wait.confirmed = Some(true);
                        continue;
                    }
                    Err(_) => (wait.done.take(), "not confirmed in time".to_owned()),
                    Ok(Ok(Err(e))) => (None, e),
                    Ok(Err(_)) => (None, "the mirror worker went away".to_owned()),
                };
                self.sync_timeouts.increment(1);
                tracing::warn!(
                    topic = %wait.topic,
                    partition = wait.partition,
                    offset = wait.a_base,
                    cluster = %wait.mirror.target(),
                    %why,
                    "the mirror did not confirm within mirror.sync_timeout_ms; the batch is \
                     journaled and acknowledged from the primary, and is mirrored when the \
                     cluster takes it"
                );
                // Without a pending outcome (the worker gave up) the entry
                // is never counted as mirrored: it is replayed at start.
                let done = done.unwrap_or_else(|| tokio::sync::oneshot::channel().1);
                let mirror = wait.mirror.clone();
                let (topic, partition, a_base) = (wait.topic.clone(), wait.partition, wait.a_base);
                let batches = std::mem::take(&mut wait.batches);
                let queued = wait.queued.take();
                wait.journaling = Some(tokio::spawn(async move {
                    mirror
                        .journal_queued(&topic, partition, a_base, batches, done, queued)
                        .await
                }));
            }
            let Some(journaling) = wait.journaling.as_mut() else {
                continue;
            };
            let journaled = match journaling.await {
                Ok(Ok(())) => true,
                Ok(Err(e)) => {
                    tracing::error!(topic = %wait.topic, partition = wait.partition, error = %e,
                        "cannot write the mirror journal; the client is told to retry");
                    false
                }
                Err(e) => {
                    tracing::error!(topic = %wait.topic, partition = wait.partition, error = %e,
                        "the mirror journal write failed; the client is told to retry");
                    false
                }
            };
            wait.journaling = None;
            wait.confirmed = Some(journaled);
        }
    }

    /// The answer for the client: partitions neither the mirror nor the
    /// journal has are answered REQUEST_TIMED_OUT (retriable; the batch
    /// stays queued). `None` when the client asked for no answer.
    pub(super) fn finish(
        mut self,
        shared: &Shared,
        cluster: crate::config::ClusterName,
    ) -> Result<Option<Bytes>, SessionError> {
        for wait in self.waits.drain(..) {
            if wait.confirmed != Some(true) {
                self.unconfirmed.push((wait.topic, wait.partition));
            }
        }
        let mut response = self.response;
        let mut changed = false;
        for (topic, partition) in &self.unconfirmed {
            for p in response
                .responses
                .iter_mut()
                .filter(|t| t.name.0.as_str() == topic)
                .flat_map(|t| t.partition_responses.iter_mut())
                .filter(|p| p.index == *partition)
            {
                p.error_code = REQUEST_TIMED_OUT;
                changed = true;
            }
        }
        if self.swallow {
            return Ok(None);
        }
        let version = self.header.api_version;
        if version >= 10 {
            if let Some(hinted) =
                rewrite::brokers::produce_leader_hints(response.clone(), &shared.view(cluster))
            {
                response = hinted;
                changed = true;
            }
        }
        if !changed {
            return Ok(Some(self.frame.wire_bytes().clone()));
        }
        let header_version = ApiKey::Produce.response_header_version(version);
        rewrite::encode(&self.response_header, header_version, &response, version)
            .map(Some)
            .map_err(|e| SessionError::Rewrite {
                cluster,
                api: "Produce",
                version,
                reason: e.to_string(),
            })
    }
}

/// Whether producer ids issued by the other cluster are mapped to ids of
/// `cluster` (after a flip).
pub(super) fn foreign_ids_in_use(shared: &Shared, cluster: ClusterName) -> bool {
    shared
        .mirror_from(cluster.other())
        .is_some_and(|m| !m.producer_map().is_empty())
}

/// Answers a client's InitProducerId with a fresh id from `cluster` that is
/// not also an id of the other cluster's producers mapped here.
pub(super) async fn fresh_producer_id(
    shared: &Shared,
    cluster: ClusterName,
    header: &RequestHeaderPeek,
) -> Result<Bytes, String> {
    use kafka_protocol::messages::{InitProducerIdResponse, ProducerId};
    let client = shared
        .mirror_from(cluster)
        .map(|m| m.source())
        .ok_or("no cluster client")?;
    let foreign = shared
        .mirror_from(cluster.other())
        .map(|m| m.producer_map())
        .ok_or("no producer map")?;
    for _ in 0..16 {
        let (id, epoch) = client.init_producer_id().await.map_err(|e| e.to_string())?;
        if foreign.mapped((id, epoch)).is_some() || foreign.has_client_id(id) {
            tracing::info!(%cluster, id, "fresh producer id collides with one from the other cluster; asking again");
            continue;
        }
        let response = InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch);
        let response_header = ResponseHeader::default().with_correlation_id(header.correlation_id);
        let header_version = ApiKey::InitProducerId.response_header_version(header.api_version);
        return rewrite::encode(
            &response_header,
            header_version,
            &response,
            header.api_version,
        )
        .map_err(|e| e.to_string());
    }
    Err(format!(
        "cluster {cluster} kept issuing producer ids already in use"
    ))
}
