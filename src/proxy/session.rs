//! One client connection: requests go upstream as the bytes that came in,
//! responses come back in request order, rewritten where they name brokers.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures::{FutureExt, StreamExt};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;
use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::responses::{Next, ReadError, ResponseReader};
use super::{epochs, groups, produce, producer_ids, upstream, Shared, Target};
use crate::config::ClusterName;
use crate::cutover::InFlight;
use crate::error::SessionError;
use crate::protocol::frame::{Frame, FrameCodec, FrameError, LENGTH_PREFIX};
use crate::protocol::header::RequestHeaderPeek;
use crate::protocol::versions::{api_name, is_supported, proxy_versions};
use crate::protocol::{header, requests, responses};
use crate::rewrite::{self, api_versions, ResponseRewrite};

const WRITE_BUFFER: usize = 64 * 1024;

/// What the response side must do for one request, in request order.
enum Pending {
    /// Read the next upstream response, check it answers this request,
    /// rewrite it if needed and pass it back.
    Upstream {
        header: RequestHeaderPeek,
        rewrite: Option<ResponseRewrite>,
        mirror: Option<Box<produce::MirrorWork>>,
        follow_up: Option<groups::FollowUp>,
        /// The answer carries leader epochs to present (see `epochs`).
        present_epochs: bool,
        /// Counts toward the flip's drain until the answer is handled.
        in_flight: Option<InFlight>,
        sent_at: Instant,
        /// Time the broker may legitimately hold the request (fetch long
        /// poll, rebalance), on top of the request timeout.
        held_for: Duration,
    },
    /// A SASL token exchanged outside Kafka framing after SaslHandshake v0.
    RawToken { sent_at: Instant },
    /// An answer the proxy makes itself.
    Local(Bytes),
    /// An answer the proxy is still making (it asks a cluster first).
    Deferred {
        done: tokio::sync::oneshot::Receiver<Result<Bytes, String>>,
        sent_at: Instant,
    },
}

struct Connection {
    shared: Arc<Shared>,
    cluster: ClusterName,
    /// Cancelled when `cluster` stops being the primary: the session ends
    /// once what it forwarded is answered.
    moved: CancellationToken,
    upstream_addr: String,
    /// Set after a successful SaslHandshake v0: tokens then travel as bare
    /// frames until the client sends Kafka requests again.
    sasl_raw: AtomicBool,
    /// The client library, as its ApiVersions request (v3+) names it.
    client_software: std::sync::OnceLock<String>,
}

pub(super) async fn run(shared: Arc<Shared>, client: TcpStream, peer: SocketAddr, target: Target) {
    shared.metrics.connections_total.increment(1);
    shared.metrics.connections_active.increment(1.0);
    let (cluster, moved, _bound) = shared.signals.bind();
    tracing::debug!(%peer, ?target, %cluster, "client connected");
    let result = serve(shared.clone(), client, target, cluster, moved).await;
    shared.metrics.connections_active.decrement(1.0);
    match result {
        Ok(()) => tracing::debug!(%peer, "client disconnected"),
        Err(e) => {
            match e.side() {
                crate::error::Side::Cluster(cluster) => {
                    shared.metrics.upstream_error(cluster, e.kind())
                }
                _ => shared.metrics.client_error(e.kind()),
            }
            if matches!(e, SessionError::ClientIo(_)) {
                // The client went away: ordinary, not a fault.
                tracing::debug!(%peer, "client connection ended: {e}");
            } else if matches!(e, SessionError::Proxy(_)) {
                tracing::error!(%peer, side = e.side().label(), "closing client connection: {e}");
            } else {
                tracing::warn!(%peer, side = e.side().label(), "closing client connection: {e}");
            }
        }
    }
}

async fn serve(
    shared: Arc<Shared>,
    client: TcpStream,
    target: Target,
    cluster: ClusterName,
    moved: CancellationToken,
) -> Result<(), SessionError> {
    let _ = client.set_nodelay(true);
    let (upstream, upstream_addr) = upstream::connect(&shared, cluster, target).await?;
    let connection = Arc::new(Connection {
        shared: shared.clone(),
        cluster,
        moved,
        upstream_addr,
        sasl_raw: AtomicBool::new(false),
        client_software: std::sync::OnceLock::new(),
    });
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let (pending_tx, pending_rx) = mpsc::channel(shared.config.listen.max_in_flight);

    // Owned here, not by the request side: dropping a write half sends FIN,
    // and a broker that sees FIN drops the answers it still owes.
    let mut upstream_writer = BufWriter::with_capacity(WRITE_BUFFER, upstream_write);
    let requests = forward_requests(&connection, client_read, &mut upstream_writer, pending_tx);
    let responses = return_responses(&connection, upstream_read, client_write, pending_rx);
    tokio::pin!(requests, responses);
    tokio::select! {
        // The response side ends first only on an error or when the client
        // went away: nothing more can be answered.
        result = &mut responses => result,
        result = &mut requests => match result {
            // Client finished sending (EOF or shutdown): answer what is in
            // flight, each request within its own deadline.
            Ok(()) => responses.await,
            // The client broke off or misbehaved: answers the primary still
            // owes are read to the end (their mirror work must not be lost),
            // then the client's error is what ends the session.
            Err(e) if e.side() == crate::error::Side::Client => {
                let _ = responses.await;
                Err(e)
            }
            Err(e) => Err(e),
        },
    }
}

async fn forward_requests(
    connection: &Connection,
    client_read: OwnedReadHalf,
    upstream: &mut BufWriter<OwnedWriteHalf>,
    pending: mpsc::Sender<Pending>,
) -> Result<(), SessionError> {
    let result = read_and_forward(connection, client_read, upstream, pending).await;
    // Whatever was taken from the client is owed an answer, and the response
    // side waits for it: send it even when the client then broke off.
    let flushed = upstream
        .flush()
        .await
        .map_err(|e| connection.upstream_io(e));
    result.and(flushed)
}

async fn read_and_forward(
    connection: &Connection,
    client_read: OwnedReadHalf,
    upstream: &mut BufWriter<OwnedWriteHalf>,
    pending: mpsc::Sender<Pending>,
) -> Result<(), SessionError> {
    let shared = &connection.shared;
    let mut frames = FramedRead::new(
        client_read,
        FrameCodec::new(shared.config.listen.max_frame_bytes),
    );
    loop {
        // Batch whatever the client has already sent into one upstream write;
        // flush before waiting for more.
        let next = match frames.next().now_or_never() {
            Some(next) => next,
            None => {
                upstream
                    .flush()
                    .await
                    .map_err(|e| connection.upstream_io(e))?;
                tokio::select! {
                    next = frames.next() => next,
                    _ = shared.shutdown.cancelled() => break,
                    _ = connection.moved.cancelled() => break,
                }
            }
        };
        let frame = match next {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(FrameError::Io(e))) => return Err(SessionError::ClientIo(e)),
            Some(Err(e)) => return Err(SessionError::BadFrame(e)),
        };
        shared.metrics.bytes_in.increment(frame.wire_len() as u64);
        if connection.moved.is_cancelled() {
            // Read from the client after the primary moved: not sent to the
            // old primary; the client sends it again after reconnecting.
            break;
        }
        // Peeked once: the fence and the classification both read it.
        let peeked = header::peek_request(frame.payload());
        let in_flight = match connection.gate(&frame, peeked.as_ref().ok()).await? {
            Gate::Pass(in_flight) => in_flight,
            // The primary moved while the request was held: it was not
            // sent anywhere, and the client sends it again to the new
            // primary once this connection closes.
            Gate::Moved => break,
            Gate::Refuse(answer) => {
                if !queue(connection, upstream, &pending, answer.map(Pending::Local)).await? {
                    return Ok(());
                }
                continue;
            }
        };
        if let Some(h) = peeked
            .as_ref()
            .ok()
            .filter(|h| h.api_key == ApiKey::Produce)
        {
            // An id the other cluster issued never reaches this one unmapped.
            let foreign = producer_ids::unmapped_foreign(shared, connection.cluster, &frame, h);
            if !foreign.is_empty() {
                let mapped = tokio::time::timeout(
                    shared.config.upstream.request_timeout(),
                    producer_ids::map_foreign(shared, connection.cluster, &foreign),
                )
                .await;
                if !matches!(mapped, Ok(Ok(()))) {
                    tracing::warn!(cluster = %connection.cluster, producers = ?foreign, result = ?mapped.ok(),
                        "cannot map producer ids of the other cluster; the client is told to retry");
                    let refusal =
                        produce::refuse(&frame, h, crate::protocol::errors::REQUEST_TIMED_OUT)?;
                    if !queue(connection, upstream, &pending, refusal.map(Pending::Local)).await? {
                        return Ok(());
                    }
                    continue;
                }
            }
        }
        if let Ok(h) = &peeked {
            tracing::trace!(api = api_name(h.api_key), version = h.api_version,
                correlation_id = h.correlation_id, cluster = %connection.cluster, "request");
        }
        let step = connection.classify(&frame, peeked, in_flight)?;
        // At the in-flight limit, upstream gets everything it must answer
        // before the wait for room.
        if !queue(connection, upstream, &pending, step.pending).await? {
            return Ok(());
        }
        if step.forward {
            let bytes = step.replacement.as_ref().unwrap_or(frame.wire_bytes());
            upstream
                .write_all(bytes)
                .await
                .map_err(|e| connection.upstream_io(e))?;
        }
    }
    Ok(())
}

/// Queues an entry for the response side, waiting for room at the
/// in-flight limit. False when the response side is gone.
async fn queue(
    connection: &Connection,
    upstream: &mut BufWriter<OwnedWriteHalf>,
    pending: &mpsc::Sender<Pending>,
    entry: Option<Pending>,
) -> Result<bool, SessionError> {
    let Some(entry) = entry else { return Ok(true) };
    if let Err(mpsc::error::TrySendError::Full(entry)) = pending.try_send(entry) {
        upstream
            .flush()
            .await
            .map_err(|e| connection.upstream_io(e))?;
        if pending.send(entry).await.is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// What the fence says about one request.
enum Gate {
    /// Forward it (a Produce counts as in flight until answered).
    Pass(Option<InFlight>),
    /// The primary moved while it was held.
    Moved,
    /// Held past the bound: this answer (a retriable error), if the
    /// request expects one.
    Refuse(Option<Bytes>),
}

/// What to do with one client frame.
struct Step {
    forward: bool,
    /// Bytes to send instead of the client's frame.
    replacement: Option<Bytes>,
    pending: Option<Pending>,
}

impl Connection {
    fn upstream_io(&self, e: std::io::Error) -> SessionError {
        SessionError::Upstream {
            cluster: self.cluster,
            addr: self.upstream_addr.clone(),
            reason: e.to_string(),
        }
    }

    /// Holds a Produce or JoinGroup while a flip's fence is up, bounded by
    /// `cutover.fence_hold_ms`.
    async fn gate(
        &self,
        frame: &Frame,
        header: Option<&RequestHeaderPeek>,
    ) -> Result<Gate, SessionError> {
        let Some(&header) = header else {
            return Ok(Gate::Pass(None)); // classify reports it
        };
        let api = header.api_key;
        if self.sasl_raw.load(Ordering::Acquire) {
            return Ok(Gate::Pass(None));
        }
        let signals = &self.shared.signals;
        let hold = Duration::from_millis(self.shared.config.cutover.fence_hold_ms);
        let until = Instant::now() + hold;
        if matches!(
            api,
            ApiKey::OffsetCommit | ApiKey::OffsetFetch | ApiKey::TxnOffsetCommit
        ) {
            // Clients just moved here: the flip is still committing their
            // groups' translated offsets, which these must not race.
            if !signals.is_arriving(self.cluster) {
                if api == ApiKey::OffsetFetch {
                    return Ok(Gate::Pass(None));
                }
                // A commit counts until answered: the flip reads committed
                // offsets once none is in flight to the old primary.
                let counted = signals.enter_commit(self.cluster);
                if self.moved.is_cancelled() {
                    return Ok(Gate::Moved);
                }
                return Ok(Gate::Pass(Some(counted)));
            }
            self.shared.metrics.fenced_requests.increment(1);
            return Ok(tokio::select! {
                _ = signals.unfenced() => Gate::Pass(None),
                _ = self.moved.cancelled() => Gate::Moved,
                _ = self.shared.shutdown.cancelled() => Gate::Moved,
                // Past the bound the connection closes and the client asks
                // again.
                _ = tokio::time::sleep_until(until.into()) => Gate::Moved,
            });
        }
        if !matches!(api, ApiKey::Produce | ApiKey::JoinGroup) {
            return Ok(Gate::Pass(None));
        }
        let mut member: Option<String> = None;
        let mut counted = false;
        loop {
            // The move is read after the fence: a flip switches before it
            // lifts the fence, so a request let through by a lifted fence
            // sees the move, and one let through before the fence went up
            // is counted before the flip's drain reads the count.
            if api == ApiKey::Produce {
                if let Some(in_flight) = signals.enter(self.cluster) {
                    if self.moved.is_cancelled() {
                        return Ok(Gate::Moved);
                    }
                    return Ok(Gate::Pass(Some(in_flight)));
                }
            } else if !signals.is_fenced() {
                if let Some(m) = &member {
                    self.shared.members.set_parked(m, false);
                }
                if self.moved.is_cancelled() {
                    return Ok(Gate::Moved);
                }
                return Ok(Gate::Pass(None));
            }
            if self.moved.is_cancelled() {
                if let Some(m) = &member {
                    self.shared.members.set_parked(m, false);
                }
                return Ok(Gate::Moved);
            }
            if !counted {
                counted = true;
                self.shared.metrics.fenced_requests.increment(1);
                if api == ApiKey::JoinGroup {
                    member = requests::group_member(frame.payload(), &header)
                        .ok()
                        .flatten()
                        .map(|r| r.member)
                        .filter(|m| !m.is_empty());
                    if let Some(m) = &member {
                        self.shared.members.set_parked(m, true);
                    }
                }
            }
            tokio::select! {
                _ = signals.unfenced() => {}
                _ = self.moved.cancelled() => return Ok(Gate::Moved),
                _ = self.shared.shutdown.cancelled() => return Ok(Gate::Moved),
                _ = tokio::time::sleep_until(until.into()) => {
                    tracing::warn!(api = api_name(api), held_ms = hold.as_millis() as u64,
                        "request held past the fence bound; answered with a retriable error");
                    return Ok(Gate::Refuse(fence_timeout_answer(frame, &header)?));
                }
            }
        }
    }

    fn classify(
        &self,
        frame: &Frame,
        peeked: Result<RequestHeaderPeek, header::PeekError>,
        in_flight: Option<InFlight>,
    ) -> Result<Step, SessionError> {
        let payload = frame.payload();
        if self.sasl_raw.load(Ordering::Acquire) {
            match peeked {
                Ok(h) if is_supported(h.api_key, h.api_version) => {
                    self.sasl_raw.store(false, Ordering::Release);
                }
                _ => {
                    return Ok(Step {
                        forward: true,
                        replacement: None,
                        pending: Some(Pending::RawToken {
                            sent_at: Instant::now(),
                        }),
                    })
                }
            }
        }
        let header = peeked.map_err(|e| SessionError::BadRequest(e.to_string()))?;
        let api = header.api_key;
        if api == ApiKey::ApiVersions {
            let theirs = self
                .shared
                .known_versions(self.cluster)
                .and_then(|r| r.get(&(ApiKey::ApiVersions as i16)).copied());
            let cluster_lacks_it = theirs.is_some_and(|r| header.api_version > r.max);
            if cluster_lacks_it || !is_supported(api, header.api_version) {
                // What a broker does: answer in v0 with the versions it has.
                return Ok(Step {
                    forward: false,
                    replacement: None,
                    pending: Some(Pending::Local(local_response(
                        header.correlation_id,
                        &api_versions::unsupported_version_response(theirs),
                    )?)),
                });
            }
        }
        if !is_supported(api, header.api_version) {
            let supported = proxy_versions(api)
                .map(|r| format!("v{}..v{}", r.min, r.max))
                .unwrap_or_else(|| "none".into());
            return Err(SessionError::BadRequest(format!(
                "{} v{} is not supported through switchyard (supported: {supported})",
                api_name(api),
                header.api_version
            )));
        }
        if api == ApiKey::ApiVersions {
            if let Some(name) = requests::api_versions_client_software(payload, &header) {
                let _ = self.client_software.set(name);
            }
        }
        let rewrite = ResponseRewrite::for_request(api, header.api_version);
        let client_software = self.client_software.get().map(String::as_str);
        let follow_up =
            match groups::plan(&self.shared, self.cluster, frame, &header, client_software)? {
                groups::GroupStep::Forward(follow_up) => follow_up,
                groups::GroupStep::Answer(answer) => {
                    return Ok(Step {
                        forward: false,
                        replacement: None,
                        pending: Some(Pending::Local(answer)),
                    })
                }
            };
        if api == ApiKey::FindCoordinator {
            let groups = requests::find_coordinator_groups(payload, &header)
                .map_err(|e| SessionError::BadRequest(e.to_string()))?;
            for group in groups {
                self.shared.groups.note(&group);
            }
            let transactional = requests::find_coordinator_transactional_ids(payload, &header)
                .map_err(|e| SessionError::BadRequest(e.to_string()))?;
            for id in transactional {
                self.shared.transactional.note(&id);
            }
        }
        if api == ApiKey::InitProducerId {
            let transactional = requests::init_producer_id_transactional_id(payload, &header)
                .map_err(|e| SessionError::BadRequest(e.to_string()))?;
            if let Some(id) = transactional {
                self.shared.transactional.note(&id);
            }
        }
        if let Some(metrics) = self.shared.metrics.api(api) {
            metrics.requests.increment(1);
        }
        let bad_body = |e: header::PeekError| SessionError::BadRequest(e.to_string());
        let (expects_response, held_for_ms, replacement, mirror) = match api {
            ApiKey::Produce => match produce::plan(&self.shared, frame, &header, self.cluster)? {
                produce::ProducePlan::Reject(answer) => {
                    return Ok(Step {
                        forward: false,
                        replacement: None,
                        pending: Some(Pending::Local(answer)),
                    })
                }
                produce::ProducePlan::Forward {
                    frame,
                    mirror,
                    expects_response,
                } => (expects_response, 0, frame, mirror),
            },
            ApiKey::Fetch => (
                true,
                requests::fetch_max_wait_ms(payload, &header).map_err(bad_body)?,
                None,
                None,
            ),
            ApiKey::JoinGroup => (
                true,
                requests::join_group_wait_ms(payload, &header).map_err(bad_body)?,
                None,
                None,
            ),
            ApiKey::InitProducerId
                if produce::foreign_ids_in_use(&self.shared, self.cluster)
                    && requests::wants_fresh_producer_id(payload, &header).map_err(bad_body)? =>
            {
                // Ids the other cluster issued are mapped here: a fresh id
                // must not be one of them, or its batches would be taken
                // for another producer's.
                let (tx, rx) = tokio::sync::oneshot::channel();
                let shared = self.shared.clone();
                let (cluster, header) = (self.cluster, header);
                tokio::spawn(async move {
                    let answer = produce::fresh_producer_id(&shared, cluster, &header).await;
                    if let Ok(bytes) = &answer {
                        note_issued(
                            &shared,
                            cluster,
                            header.api_version,
                            &bytes[LENGTH_PREFIX..],
                        );
                    }
                    let _ = tx.send(answer);
                });
                return Ok(Step {
                    forward: false,
                    replacement: None,
                    pending: Some(Pending::Deferred {
                        done: rx,
                        sent_at: Instant::now(),
                    }),
                });
            }
            _ => (true, 0, None, None),
        };
        // Leader epochs the client sends become the cluster's own.
        let replacement = match epochs::request(&self.shared, self.cluster, frame, &header)? {
            epochs::RequestEpochs::Unchanged => replacement,
            epochs::RequestEpochs::Patched(bytes) => Some(bytes),
            epochs::RequestEpochs::Refuse(error) => {
                return Ok(Step {
                    forward: false,
                    replacement: None,
                    pending: Some(Pending::Local(groups::answer_error(
                        payload, &header, error,
                    )?)),
                })
            }
        };
        let present_epochs =
            epochs::answer_carries_epochs(api) && self.shared.epochs.translates(self.cluster);
        Ok(Step {
            forward: true,
            replacement,
            pending: expects_response.then(|| Pending::Upstream {
                header,
                rewrite,
                mirror,
                follow_up,
                present_epochs,
                in_flight,
                sent_at: Instant::now(),
                held_for: Duration::from_millis(held_for_ms.max(0) as u64),
            }),
        })
    }
}

fn local_response<M: Encodable>(correlation_id: i32, body: &M) -> Result<Bytes, SessionError> {
    let encode = || -> anyhow::Result<Bytes> {
        let mut out = BytesMut::new();
        out.extend_from_slice(&[0; LENGTH_PREFIX]);
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut out, 0)?;
        body.encode(&mut out, 0)?;
        let len = (out.len() - LENGTH_PREFIX) as u32;
        out[..LENGTH_PREFIX].copy_from_slice(&len.to_be_bytes());
        Ok(out.freeze())
    };
    encode().map_err(|e| SessionError::Proxy(format!("response: {e:#}")))
}

/// An answer on its way back to the client, in request order.
enum Outgoing {
    Bytes(Bytes),
    /// Swallowed (acks=0 while mirroring) or already streamed.
    Nothing,
    /// Waits for the mirror cluster (sync mode).
    Mirrored(Box<produce::Submitted>),
}

async fn return_responses(
    connection: &Connection,
    upstream_read: OwnedReadHalf,
    client_write: OwnedWriteHalf,
    mut pending: mpsc::Receiver<Pending>,
) -> Result<(), SessionError> {
    let shared = &connection.shared;
    let request_timeout = shared.config.upstream.request_timeout();
    let mut reader = ResponseReader::new(upstream_read);
    let mut client = BufWriter::with_capacity(WRITE_BUFFER, client_write);
    // Once writing to the client fails, answers still owed are read anyway
    // until the request side ends: the primary has acknowledged what they
    // carry, and their mirror work must not be dropped with the client.
    let mut client_gone: Option<std::io::Error> = None;
    // Answers read but not yet passed on: while the first waits for the
    // mirror, the answers behind it are read and their mirror work handed
    // over, so that a sync wait on this connection never holds back the
    // mirroring of what the primary acknowledged after it.
    let mut held: VecDeque<Outgoing> = VecDeque::new();
    let mut current: Option<Pending> = None;
    let mut closed = false;
    loop {
        while held.front().is_some_and(|o| match o {
            Outgoing::Mirrored(s) => s.is_settled(),
            _ => true,
        }) {
            let out = match held.pop_front().expect("front exists") {
                Outgoing::Bytes(bytes) => Some(bytes),
                Outgoing::Nothing => None,
                Outgoing::Mirrored(submitted) => submitted.finish(shared, connection.cluster)?,
            };
            if let (Some(out), None) = (out, &client_gone) {
                shared.metrics.bytes_out.increment(out.len() as u64);
                if let Err(e) = client.write_all(&out).await {
                    client_gone = Some(e);
                }
            }
        }
        if held.is_empty() {
            let entry = match current.take() {
                Some(entry) => entry,
                None if closed => break,
                None => match pending.try_recv() {
                    Ok(entry) => entry,
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        if client_gone.is_none() {
                            if let Err(e) = client.flush().await {
                                client_gone = Some(e);
                            }
                        }
                        match pending.recv().await {
                            Some(entry) => entry,
                            None => break,
                        }
                    }
                },
            };
            // Nothing is held: the answer may go straight to the client.
            let writer = if client_gone.is_none() {
                Some(&mut client)
            } else {
                None
            };
            let outgoing = connection
                .answer(entry, &mut reader, writer, request_timeout)
                .await?;
            held.push_back(outgoing);
            continue;
        }
        // The first held answer waits for the mirror: read ahead.
        if client_gone.is_none() {
            if let Err(e) = client.flush().await {
                client_gone = Some(e);
            }
        }
        let Some(Outgoing::Mirrored(head)) = held.front_mut() else {
            unreachable!("only mirrored answers are held unsettled");
        };
        match current.take() {
            None if closed => head.settle().await,
            None => tokio::select! {
                _ = head.settle() => {}
                entry = pending.recv() => match entry {
                    Some(entry) => current = Some(entry),
                    None => closed = true,
                },
            },
            Some(Pending::Local(bytes)) => held.push_back(Outgoing::Bytes(bytes)),
            Some(entry @ Pending::Deferred { .. }) => {
                let outgoing = connection
                    .answer(entry, &mut reader, None, request_timeout)
                    .await?;
                held.push_back(outgoing);
            }
            Some(entry) => {
                let deadline = entry.deadline(request_timeout);
                let buffered = tokio::select! {
                    _ = head.settle() => None,
                    filled = tokio::time::timeout_at(deadline.into(), reader.fill_frame()) => Some(filled),
                };
                match buffered {
                    // A whole answer is buffered (taking it cannot wait on
                    // the broker, and nothing is written to the client
                    // yet), or the read failed or ran out of time, which
                    // taking it reports.
                    Some(_) => {
                        let outgoing = connection
                            .answer(entry, &mut reader, None, request_timeout)
                            .await?;
                        held.push_back(outgoing);
                    }
                    None => current = Some(entry),
                }
            }
        }
    }
    match client_gone {
        Some(e) => Err(SessionError::ClientIo(e)),
        None => client.flush().await.map_err(SessionError::ClientIo),
    }
}

impl Pending {
    /// When the answer to this entry is due.
    fn deadline(&self, request_timeout: Duration) -> Instant {
        match self {
            Pending::Upstream {
                sent_at, held_for, ..
            } => *sent_at + request_timeout + *held_for,
            Pending::RawToken { sent_at } => *sent_at + request_timeout,
            Pending::Deferred { sent_at, .. } => *sent_at + request_timeout,
            Pending::Local(_) => Instant::now(),
        }
    }
}

impl Connection {
    /// Reads the answer to `entry` and makes it ready for the client. With
    /// a `writer`, a large untouched answer is streamed straight to the
    /// client (only when nothing is held before it).
    async fn answer(
        &self,
        entry: Pending,
        reader: &mut ResponseReader,
        writer: Option<&mut BufWriter<OwnedWriteHalf>>,
        request_timeout: Duration,
    ) -> Result<Outgoing, SessionError> {
        let shared = &self.shared;
        match entry {
            Pending::Local(bytes) => Ok(Outgoing::Bytes(bytes)),
            Pending::Deferred { done, sent_at } => {
                let deadline = sent_at + request_timeout;
                match tokio::time::timeout_at(deadline.into(), done).await {
                    Ok(Ok(Ok(bytes))) => Ok(Outgoing::Bytes(bytes)),
                    Ok(Ok(Err(reason))) => Err(SessionError::Upstream {
                        cluster: self.cluster,
                        addr: self.upstream_addr.clone(),
                        reason,
                    }),
                    _ => Err(SessionError::UpstreamTimeout {
                        cluster: self.cluster,
                        addr: self.upstream_addr.clone(),
                        api: "InitProducerId",
                        correlation_id: -1,
                        waited_ms: request_timeout.as_millis() as u64,
                    }),
                }
            }
            Pending::RawToken { sent_at } => {
                // Bare SASL tokens carry no correlation id and are small.
                let next = self
                    .next_response(
                        reader,
                        writer,
                        sent_at,
                        request_timeout,
                        (ApiKey::SaslAuthenticate, None),
                        false,
                    )
                    .await?;
                Ok(match next {
                    Next::Frame(frame) => Outgoing::Bytes(frame.wire_bytes().clone()),
                    Next::Streamed(bytes) => {
                        shared.metrics.bytes_out.increment(bytes as u64);
                        Outgoing::Nothing
                    }
                })
            }
            Pending::Upstream {
                header,
                rewrite,
                mirror,
                follow_up,
                present_epochs,
                in_flight,
                sent_at,
                held_for,
            } => {
                let _in_flight = in_flight;
                let untouched = rewrite.is_none()
                    && mirror.is_none()
                    && follow_up.is_none()
                    && !present_epochs
                    && !matches!(
                        header.api_key,
                        ApiKey::SaslHandshake | ApiKey::InitProducerId
                    );
                let next = self
                    .next_response(
                        reader,
                        writer,
                        sent_at,
                        request_timeout + held_for,
                        (header.api_key, Some(header.correlation_id)),
                        untouched,
                    )
                    .await?;
                if let Some(metrics) = shared.metrics.api(header.api_key) {
                    metrics.latency.record(sent_at.elapsed().as_secs_f64());
                }
                let frame = match next {
                    Next::Frame(frame) => frame,
                    Next::Streamed(bytes) => {
                        shared.metrics.bytes_out.increment(bytes as u64);
                        return Ok(Outgoing::Nothing);
                    }
                };
                if header.api_key == ApiKey::SaslHandshake
                    && header.api_version == 0
                    && handshake_succeeded(frame.payload())
                {
                    self.sasl_raw.store(true, Ordering::Release);
                }
                if header.api_key == ApiKey::InitProducerId {
                    note_issued(shared, self.cluster, header.api_version, frame.payload());
                }
                if let Some(work) = mirror {
                    let submitted =
                        produce::submit(shared, &header, frame, *work, self.cluster).await?;
                    return Ok(Outgoing::Mirrored(Box::new(submitted)));
                }
                if let Some(follow_up) = follow_up {
                    // Bookkeeping around a flip: an answer it cannot read
                    // goes to the client as the broker wrote it.
                    let changed = match groups::follow_up(
                        shared,
                        self.cluster,
                        follow_up,
                        &header,
                        &frame,
                    ) {
                        Ok(changed) => changed,
                        Err(e) => {
                            tracing::warn!(api = api_name(header.api_key), version = header.api_version,
                                    cluster = %self.cluster, error = %e, "group answer passed on unread");
                            None
                        }
                    };
                    let out = changed.unwrap_or_else(|| frame.wire_bytes().clone());
                    return Ok(Outgoing::Bytes(self.presented(
                        &header,
                        present_epochs,
                        out,
                    )));
                }
                let Some(kind) = rewrite else {
                    let out = frame.wire_bytes().clone();
                    return Ok(Outgoing::Bytes(self.presented(
                        &header,
                        present_epochs,
                        out,
                    )));
                };
                let view = shared.view(self.cluster);
                match rewrite::rewrite_response(
                    kind,
                    header.api_version,
                    frame.payload_bytes(),
                    &view,
                ) {
                    Ok(Some(rewritten)) => Ok(Outgoing::Bytes(rewritten)),
                    Ok(None) => Ok(Outgoing::Bytes(frame.wire_bytes().clone())),
                    Err(e) => Err(SessionError::Rewrite {
                        cluster: self.cluster,
                        api: api_name(header.api_key),
                        version: header.api_version,
                        reason: e.to_string(),
                    }),
                }
            }
        }
    }
}

impl Connection {
    /// The answer with its leader epochs presented, when it carries any.
    fn presented(&self, header: &RequestHeaderPeek, present: bool, out: Bytes) -> Bytes {
        if !present {
            return out;
        }
        epochs::answer(
            &self.shared,
            self.cluster,
            header.api_key,
            header.api_version,
            out,
        )
    }
}

/// The answer to a request held past the fence bound: a retriable error
/// (none for a Produce with acks=0).
fn fence_timeout_answer(
    frame: &Frame,
    header: &RequestHeaderPeek,
) -> Result<Option<Bytes>, SessionError> {
    const REQUEST_TIMED_OUT: i16 = 7;
    const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    match header.api_key {
        ApiKey::Produce => produce::refuse(frame, header, REQUEST_TIMED_OUT),
        _ => {
            let response = kafka_protocol::messages::JoinGroupResponse::default()
                .with_error_code(COORDINATOR_LOAD_IN_PROGRESS)
                .with_generation_id(-1);
            let header_version = header.api_key.response_header_version(header.api_version);
            rewrite::encode(
                &ResponseHeader::default().with_correlation_id(header.correlation_id),
                header_version,
                &response,
                header.api_version,
            )
            .map(Some)
            .map_err(|e| SessionError::Proxy(format!("JoinGroup answer: {e}")))
        }
    }
}

/// Notes the producer id an InitProducerId answer from `cluster` hands out.
fn note_issued(shared: &Shared, cluster: ClusterName, version: i16, payload: &[u8]) {
    if let Some((crate::protocol::errors::NONE, id, _)) =
        responses::init_producer_id_response(payload, version)
    {
        shared.issued.note(cluster, id);
    }
}

fn handshake_succeeded(payload: &[u8]) -> bool {
    // Response header v0 (correlation id), then the error code.
    payload.get(4..6) == Some(&[0, 0])
}

impl Connection {
    /// The next response from upstream within its deadline; see
    /// [`ResponseReader::next`] for streaming.
    async fn next_response(
        &self,
        reader: &mut ResponseReader,
        client: Option<&mut BufWriter<OwnedWriteHalf>>,
        sent_at: Instant,
        budget: Duration,
        (api, correlation_id): (ApiKey, Option<i32>),
        may_stream: bool,
    ) -> Result<Next, SessionError> {
        let deadline = sent_at + budget;
        let next = tokio::time::timeout_at(
            deadline.into(),
            reader.next(client, correlation_id, may_stream),
        );
        match next.await {
            Ok(Ok(next)) => Ok(next),
            Ok(Err(ReadError::Client(e))) => Err(SessionError::ClientIo(e)),
            Ok(Err(ReadError::Closed)) => Err(SessionError::Upstream {
                cluster: self.cluster,
                addr: self.upstream_addr.clone(),
                reason: "closed the connection with requests outstanding".into(),
            }),
            Ok(Err(ReadError::Upstream(reason))) => Err(SessionError::Upstream {
                cluster: self.cluster,
                addr: self.upstream_addr.clone(),
                reason,
            }),
            Ok(Err(ReadError::CorrelationMismatch { expected, answered })) => {
                Err(SessionError::Upstream {
                    cluster: self.cluster,
                    addr: self.upstream_addr.clone(),
                    reason: format!(
                        "answered correlation id {answered} where {expected} ({}) was expected",
                        api_name(api)
                    ),
                })
            }
            Err(_) => Err(SessionError::UpstreamTimeout {
                cluster: self.cluster,
                addr: self.upstream_addr.clone(),
                api: api_name(api),
                correlation_id: correlation_id.unwrap_or(-1),
                waited_ms: budget.as_millis() as u64,
            }),
        }
    }
}
