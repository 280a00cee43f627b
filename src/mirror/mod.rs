//! Mirror mode: every batch the primary acknowledges is written to the
//! other cluster too, per partition in the primary's offset order, under a
//! switchyard-owned idempotent producer id, and the offset correspondence is
//! recorded.

pub mod client;
pub mod journal;
pub mod producers;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{ClusterName, MirrorMode};
use crate::protocol::batch::{self, BatchHeader};
use crate::state::StateDir;
use crate::translate::{Segment, TranslationTable};
use client::{ClientError, ClusterClient, TopicState};
use journal::{Journal, JournalEntry};

/// Error codes after which the mirror refreshes metadata and retries.
const RETRIABLE: &[i16] = &[3, 5, 6, 7, 13, 19, 20, 56];
const OUT_OF_ORDER_SEQUENCE: i16 = 45;
const DUPLICATE_SEQUENCE: i16 = 46;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const UNKNOWN_PRODUCER_ID: i16 = 59;

/// What happened to a submitted batch.
pub type Outcome = Result<(), String>;

struct Submission {
    a_base: i64,
    batches: Vec<Bytes>,
    bytes: u64,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

/// Live numbers of one partition's mirror, for status and metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionStatus {
    pub lag_records: i64,
    pub lag_bytes: u64,
    pub mirrored_batches: u64,
    pub retries: u64,
    pub divergent_records: i64,
    /// Batches the primary acknowledged after later ones had been mirrored.
    pub late_batches: u64,
    pub first_mirrored_offset: Option<i64>,
    pub next_offset: Option<i64>,
    pub last_error: Option<String>,
    pub topic_missing: bool,
}

pub struct Mirror {
    target: ClusterName,
    client: Arc<ClusterClient>,
    source: Arc<ClusterClient>,
    /// Read on every Produce: an atomic, not a lock.
    mode: std::sync::atomic::AtomicU8,
    queues: Mutex<HashMap<(String, i32), mpsc::UnboundedSender<Submission>>>,
    /// Serialises InitProducerId calls; the map itself is `producer_map`.
    producers: tokio::sync::Mutex<Option<(i64, i16)>>,
    producer_map: Arc<producers::ProducerMap>,
    /// The opposite direction's map: a batch restamped on the way into this
    /// mirror's source goes back out under the client's own producer id.
    inverse: Arc<producers::ProducerMap>,
    /// Client producers the inverse route failed for (the cluster fenced or
    /// forgot them): mirrored under a mapped id instead.
    inverse_refused: Mutex<std::collections::HashSet<(i64, i16)>>,
    translation: Arc<TranslationTable>,
    /// The opposite direction's table: records it wrote into this mirror's
    /// source did not come from clients of the source, and their offsets
    /// are no gap.
    reverse: std::sync::OnceLock<Arc<TranslationTable>>,
    journal: Journal,
    status: Mutex<BTreeMap<(String, i32), PartitionStatus>>,
    gap_timeout: Duration,
    shutdown: CancellationToken,
    metrics: crate::metrics::MirrorMetrics,
}

impl Mirror {
    /// Starts the mirror; batches journaled before a restart and not yet in
    /// the mirror cluster are queued again.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        source: Arc<ClusterClient>,
        client: Arc<ClusterClient>,
        mode: MirrorMode,
        state: &StateDir,
        gap_timeout: Duration,
        shutdown: CancellationToken,
        producer_map: Arc<producers::ProducerMap>,
        inverse: Arc<producers::ProducerMap>,
    ) -> std::io::Result<Arc<Mirror>> {
        // One set of files per direction of mirroring.
        let direction = format!("{}-to-{}", source.cluster(), client.cluster());
        let translation = Arc::new(TranslationTable::open(
            state.path(),
            &format!("translation-{direction}.log"),
        )?);
        let journal_path = state.path().join(format!("mirror-journal-{direction}.log"));
        let journal_path = journal_path.as_path();
        let unmirrored: Vec<JournalEntry> = journal::replay(journal_path)?
            .into_iter()
            .filter(|e| {
                !translation
                    .partition(&e.topic, e.partition)
                    .is_some_and(|p| p.contains_a(e.a_base))
            })
            .collect();
        let journal = Journal::open(journal_path, unmirrored.len())?;
        let metrics = crate::metrics::MirrorMetrics::new(client.cluster());
        let mirror = Arc::new(Mirror {
            target: client.cluster(),
            client,
            source,
            mode: std::sync::atomic::AtomicU8::new(mode_code(mode)),
            queues: Mutex::new(HashMap::new()),
            producers: tokio::sync::Mutex::new(None),
            producer_map,
            inverse,
            inverse_refused: Mutex::new(Default::default()),
            translation: translation.clone(),
            reverse: std::sync::OnceLock::new(),
            journal,
            status: Mutex::new(BTreeMap::new()),
            gap_timeout,
            shutdown: shutdown.clone(),
            metrics,
        });
        // Segments reach the disk within 100 ms of being learned.
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = shutdown.cancelled() => { let _ = translation.sync(); return; }
                }
                if let Err(e) = translation.sync() {
                    tracing::error!(error = %e, "cannot sync the translation log");
                }
            }
        });
        if !unmirrored.is_empty() {
            tracing::info!(batches = unmirrored.len(), "replaying the mirror journal");
        }
        for entry in unmirrored {
            let done = mirror.submit(&entry.topic, entry.partition, entry.a_base, entry.batches);
            let journal = mirror.journal.clone();
            tokio::spawn(async move {
                if let Ok(Ok(())) = done.await {
                    journal.mirrored();
                }
            });
        }
        Ok(mirror)
    }

    /// Async mode: makes the batches durable in the journal, then queues
    /// them; returns once the journal has them.
    pub async fn journal_and_submit(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        a_base: i64,
        batches: Vec<Bytes>,
    ) -> std::io::Result<()> {
        let entry = JournalEntry {
            topic: topic.to_owned(),
            partition,
            a_base,
            batches,
        };
        self.journal.append(&entry).await?;
        let done = self.submit(topic, partition, a_base, entry.batches);
        let journal = self.journal.clone();
        tokio::spawn(async move {
            if let Ok(Ok(())) = done.await {
                journal.mirrored();
            }
        });
        Ok(())
    }

    /// Sync mode, when the mirror did not confirm in time: makes batches
    /// already queued durable in the journal, so the client can be told
    /// the primary's success and the batches survive a restart. `done` is
    /// the queued batches' outcome; the entry counts as mirrored once it
    /// says so.
    pub async fn journal_queued(
        &self,
        topic: &str,
        partition: i32,
        a_base: i64,
        batches: Vec<Bytes>,
        done: oneshot::Receiver<Outcome>,
    ) -> std::io::Result<()> {
        let entry = JournalEntry {
            topic: topic.to_owned(),
            partition,
            a_base,
            batches,
        };
        self.journal.append(&entry).await?;
        let journal = self.journal.clone();
        tokio::spawn(async move {
            if let Ok(Ok(())) = done.await {
                journal.mirrored();
            }
        });
        Ok(())
    }

    /// The client of the cluster mirrored from (the primary).
    pub fn source(&self) -> &ClusterClient {
        &self.source
    }

    /// The client of the cluster mirrored into.
    pub fn client(&self) -> &ClusterClient {
        &self.client
    }

    /// Records acknowledged by the source and not yet in the target.
    pub fn lag_records(&self) -> i64 {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|s| s.lag_records)
            .sum()
    }

    pub fn target(&self) -> ClusterName {
        self.target
    }

    pub fn mode(&self) -> MirrorMode {
        match self.mode.load(std::sync::atomic::Ordering::Acquire) {
            1 => MirrorMode::Sync,
            2 => MirrorMode::Async,
            _ => MirrorMode::Off,
        }
    }

    pub fn set_mode(&self, mode: MirrorMode) {
        self.mode
            .store(mode_code(mode), std::sync::atomic::Ordering::Release);
    }

    pub fn translation(&self) -> &TranslationTable {
        &self.translation
    }

    /// Pairs two mirrors of opposite directions.
    pub fn pair(one: &Mirror, other: &Mirror) {
        let _ = one.reverse.set(other.translation.clone());
        let _ = other.reverse.set(one.translation.clone());
    }

    /// Whether the source offsets `from..to` hold records the opposite
    /// mirror wrote there.
    fn written_by_reverse(&self, topic: &str, partition: i32, from: i64, to: i64) -> bool {
        self.reverse
            .get()
            .and_then(|t| t.partition(topic, partition))
            .is_some_and(|p| p.covers_b(from, to))
    }

    pub fn status(&self) -> BTreeMap<(String, i32), PartitionStatus> {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn update_status(&self, topic: &str, partition: i32, f: impl FnOnce(&mut PartitionStatus)) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        f(status.entry((topic.to_owned(), partition)).or_default());
    }

    /// Queues the batches the primary acknowledged at `a_base` for the
    /// mirror; the receiver learns when the mirror cluster has them.
    pub fn submit(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        a_base: i64,
        batches: Vec<Bytes>,
    ) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        let bytes = batches.iter().map(|b| b.len() as u64).sum();
        let records: i64 = batches
            .iter()
            .filter_map(|b| batch::read_header(b).ok())
            .map(|h| h.offset_count())
            .sum();
        self.update_status(topic, partition, |s| {
            s.lag_records += records;
            s.lag_bytes += bytes;
        });
        self.metrics.lag_records.increment(records as f64);
        self.metrics.lag_bytes.increment(bytes as f64);
        let submission = Submission {
            a_base,
            batches,
            bytes,
            waiters: vec![tx],
        };
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let queue = queues
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| {
                let (queue_tx, queue_rx) = mpsc::unbounded_channel();
                let worker = PartitionWorker {
                    mirror: self.clone(),
                    topic: topic.to_owned(),
                    partition,
                    // Continue where the translation table ends, so that
                    // batches mirrored before a restart are recognised.
                    next_a: self
                        .translation
                        .partition(topic, partition)
                        .and_then(|p| p.end_a()),
                    pending: BTreeMap::new(),
                    own_sequence: 0,
                    own_producer: None,
                };
                tokio::spawn(worker.run(queue_rx));
                queue_tx
            });
        if let Err(mpsc::error::SendError(submission)) = queue.send(submission) {
            for waiter in submission.waiters {
                let _ = waiter.send(Err("mirror worker stopped".into()));
            }
        }
        rx
    }

    /// The map from client producers (of this mirror's source) to producer
    /// ids of the mirror cluster.
    pub fn producer_map(&self) -> &producers::ProducerMap {
        &self.producer_map
    }

    /// When `key` is a producer id of the source that stands for a client
    /// producer of the target (restamped by the proxy after a flip), that
    /// client producer.
    fn inverse_of(&self, key: (i64, i16)) -> Option<(i64, i16)> {
        if self
            .inverse_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&key)
        {
            return None;
        }
        self.inverse.client_for(key)
    }

    /// The mirror cluster's producer id standing for a client's (id, epoch);
    /// `None` asks for the mirror's own id for non-idempotent batches.
    async fn mirror_producer(&self, client: Option<(i64, i16)>) -> Result<(i64, i16), ClientError> {
        let mut own = self.producers.lock().await;
        match client {
            None => {
                if let Some(mapped) = *own {
                    return Ok(mapped);
                }
                let mapped = self.client.init_producer_id().await?;
                tracing::info!(cluster = %self.target, mirror = ?mapped, "mirror producer id for non-idempotent batches");
                *own = Some(mapped);
                Ok(mapped)
            }
            Some(key) => {
                if let Some(mapped) = self.producer_map.mapped(key) {
                    return Ok(mapped);
                }
                let mapped = self.client.init_producer_id().await?;
                tracing::info!(cluster = %self.target, client = ?key, mirror = ?mapped, "mapped producer id");
                self.producer_map.insert(key, mapped);
                Ok(mapped)
            }
        }
    }

    async fn forget_producer(&self, client: Option<(i64, i16)>) {
        let mut own = self.producers.lock().await;
        match client {
            None => *own = None,
            Some(key) => self.producer_map.remove(key),
        }
    }

    /// Makes sure the topic exists in the mirror cluster, creating it with
    /// the primary's partition count where the cluster allows.
    async fn ensure_topic(&self, topic: &str) -> Result<(), String> {
        let topics = [topic.to_owned()];
        let state = self
            .client
            .refresh(&topics)
            .await
            .map_err(|e| e.to_string())?;
        if state.get(topic) != Some(&TopicState::Missing) {
            return Ok(());
        }
        let partitions = match self.source.refresh(&topics).await {
            Ok(s) => match s.get(topic) {
                Some(TopicState::Exists { partitions }) => *partitions as i32,
                _ => return Err(format!("topic {topic} is unknown in the primary too")),
            },
            Err(e) => return Err(format!("cannot read {topic} in the primary: {e}")),
        };
        match self.client.create_topic(topic, partitions).await {
            Ok(0) | Ok(36) => {
                tracing::info!(cluster = %self.target, topic, partitions, "created topic in mirror cluster");
                let _ = self.client.refresh(&topics).await;
                Ok(())
            }
            Ok(code) => Err(format!(
                "topic {topic} is missing in cluster {} and CreateTopics failed with error {code}",
                self.target
            )),
            Err(e) => Err(format!(
                "topic {topic} is missing in cluster {} and it cannot be created: {e}",
                self.target
            )),
        }
    }
}

fn mode_code(mode: MirrorMode) -> u8 {
    match mode {
        MirrorMode::Off => 0,
        MirrorMode::Sync => 1,
        MirrorMode::Async => 2,
    }
}

struct PartitionWorker {
    mirror: Arc<Mirror>,
    topic: String,
    partition: i32,
    /// The primary offset the next mirrored batch must start at.
    next_a: Option<i64>,
    pending: BTreeMap<i64, Submission>,
    own_sequence: i32,
    /// The mirror producer id `own_sequence` counts for: when another
    /// partition replaced it, this partition starts again at 0.
    own_producer: Option<(i64, i16)>,
}

impl PartitionWorker {
    async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Submission>) {
        loop {
            if self.mirror.shutdown.is_cancelled() {
                // What is still queued stays in the journal (async) or was
                // never confirmed to its client (sync).
                return;
            }
            if self.pending.is_empty() {
                tokio::select! {
                    received = queue.recv() => match received {
                        Some(s) => self.take(s),
                        None => return,
                    },
                    _ = self.mirror.shutdown.cancelled() => return,
                }
            }
            while let Ok(s) = queue.try_recv() {
                self.take(s);
            }
            if self.next_a.is_none() {
                // Mirroring starts here: batches acknowledged on several
                // connections at once may reach the proxy in any order, so
                // collect for a moment and start from the lowest offset.
                self.settle(&mut queue).await;
            }
            let Some((&a_base, _)) = self.pending.first_key_value() else {
                continue;
            };
            if let Some(next) = self.next_a {
                if a_base < next {
                    let mirrored = self
                        .mirror
                        .translation
                        .partition(&self.topic, self.partition)
                        .is_some_and(|p| p.contains_a(a_base));
                    if mirrored {
                        // A client retry of a batch already mirrored.
                        let done = self.pending.remove(&a_base).expect("present");
                        self.finish(done, Ok(()), 0);
                        continue;
                    }
                    // Acknowledged by the primary long after its successors:
                    // written late rather than never.
                    tracing::warn!(topic = %self.topic, partition = self.partition, a_base, next,
                        "batch reached the mirror after later ones; written out of order");
                    self.mirror
                        .update_status(&self.topic, self.partition, |s| s.late_batches += 1);
                    let submission = self.pending.remove(&a_base).expect("present");
                    let Some(records) = self.ship(&submission).await else {
                        self.finish(submission, Err(STOPPED.into()), 0);
                        return;
                    };
                    self.finish(submission, Ok(()), records);
                    continue;
                }
                if a_base > next
                    && self
                        .mirror
                        .written_by_reverse(&self.topic, self.partition, next, a_base)
                {
                    // Records mirrored in from the other cluster before a
                    // flip back: they are there already.
                    self.next_a = Some(a_base);
                } else if a_base > next && !self.wait_for_gap(&mut queue, next).await {
                    let skipped = a_base - next;
                    tracing::warn!(topic = %self.topic, partition = self.partition, from = next, to = a_base,
                        "records in the primary that did not pass through switchyard");
                    self.mirror.update_status(&self.topic, self.partition, |s| {
                        s.divergent_records += skipped
                    });
                    self.mirror
                        .metrics
                        .divergent_records
                        .increment(skipped.max(0) as u64);
                    self.next_a = Some(a_base);
                }
                if self.pending.first_key_value().map(|(k, _)| *k) != Some(a_base) {
                    continue; // the gap was filled by an earlier batch
                }
            }
            let submission = self.pending.remove(&a_base).expect("present");
            let Some(records) = self.ship(&submission).await else {
                // Stopped before the mirror cluster confirmed: the waiters
                // hear so (async batches stay in the journal).
                self.finish(submission, Err(STOPPED.into()), 0);
                return;
            };
            self.next_a = Some(a_base + records);
            self.finish(submission, Ok(()), records);
        }
    }

    fn take(&mut self, submission: Submission) {
        match self.pending.get_mut(&submission.a_base) {
            Some(existing) => {
                // The same batch acknowledged twice (client retry): one write.
                existing.waiters.extend(submission.waiters);
                let records: i64 = submission
                    .batches
                    .iter()
                    .filter_map(|b| batch::read_header(b).ok())
                    .map(|h| h.offset_count())
                    .sum();
                self.mirror.update_status(&self.topic, self.partition, |s| {
                    s.lag_records -= records;
                    s.lag_bytes -= submission.bytes;
                });
                self.mirror.metrics.lag_records.decrement(records as f64);
                self.mirror
                    .metrics
                    .lag_bytes
                    .decrement(submission.bytes as f64);
            }
            None => {
                self.pending.insert(submission.a_base, submission);
            }
        }
    }

    async fn settle(&mut self, queue: &mut mpsc::UnboundedReceiver<Submission>) {
        let deadline = Instant::now() + self.mirror.gap_timeout.min(Duration::from_millis(200));
        while let Ok(Some(s)) = tokio::time::timeout_at(deadline.into(), queue.recv()).await {
            self.take(s);
        }
    }

    /// Waits (bounded) for the batch that starts at `next`; false when it
    /// does not come.
    async fn wait_for_gap(
        &mut self,
        queue: &mut mpsc::UnboundedReceiver<Submission>,
        next: i64,
    ) -> bool {
        let deadline = Instant::now() + self.mirror.gap_timeout;
        loop {
            if self.pending.keys().next().is_some_and(|&k| k <= next) {
                return true;
            }
            match tokio::time::timeout_at(deadline.into(), queue.recv()).await {
                Ok(Some(s)) => self.take(s),
                Ok(None) | Err(_) => return false,
            }
        }
    }

    fn finish(&self, submission: Submission, outcome: Outcome, records: i64) {
        let bytes = submission.bytes;
        let counted: i64 = if records > 0 {
            records
        } else {
            submission
                .batches
                .iter()
                .filter_map(|b| batch::read_header(b).ok())
                .map(|h| h.offset_count())
                .sum()
        };
        self.mirror.update_status(&self.topic, self.partition, |s| {
            s.lag_records -= counted;
            s.lag_bytes -= bytes;
            s.next_offset = self.next_a;
        });
        self.mirror.metrics.lag_records.decrement(counted as f64);
        self.mirror.metrics.lag_bytes.decrement(bytes as f64);
        for waiter in submission.waiters {
            let _ = waiter.send(outcome.clone());
        }
    }

    /// Writes every batch of a submission to the mirror cluster, retrying
    /// until it is there. Returns the offsets the batches cover, or `None`
    /// when switchyard stopped first.
    async fn ship(&mut self, submission: &Submission) -> Option<i64> {
        let mut a_offset = submission.a_base;
        for raw in &submission.batches {
            let Ok(header) = batch::read_header(raw) else {
                continue;
            };
            let b_base = match self.ship_batch(raw, &header).await {
                Shipped::Written(b_base) => Some(b_base),
                Shipped::AlreadyThere => None,
                Shipped::Stopped => return None,
            };
            if let Some(b_base) = b_base {
                let segment = Segment {
                    a_start: a_offset,
                    b_start: b_base,
                    len: header.offset_count(),
                };
                if let Err(e) = self
                    .mirror
                    .translation
                    .add(&self.topic, self.partition, segment)
                {
                    tracing::error!(error = %e, "cannot record translation segment");
                }
                self.mirror.metrics.batches.increment(1);
                self.mirror.update_status(&self.topic, self.partition, |s| {
                    s.mirrored_batches += 1;
                    s.first_mirrored_offset.get_or_insert(a_offset);
                    s.last_error = None;
                    s.topic_missing = false;
                });
            }
            a_offset += header.offset_count();
        }
        Some(a_offset - submission.a_base)
    }

    async fn ship_batch(&mut self, raw: &Bytes, header: &BatchHeader) -> Shipped {
        let client_producer = header
            .is_idempotent()
            .then_some((header.producer_id, header.producer_epoch));
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.mirror.shutdown.is_cancelled() {
                return Shipped::Stopped;
            }
            let attempt = self.attempt(raw, header, client_producer).await;
            let error = match attempt {
                Ok(Attempt::Written(b_base)) => return Shipped::Written(b_base),
                Ok(Attempt::AlreadyThere) => return Shipped::AlreadyThere,
                Err(error) => error,
            };
            self.mirror.metrics.retries.increment(1);
            self.mirror.update_status(&self.topic, self.partition, |s| {
                s.retries += 1;
                s.last_error = Some(error.clone());
            });
            tracing::warn!(topic = %self.topic, partition = self.partition, %error, "mirror write failed; retrying");
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.mirror.shutdown.cancelled() => return Shipped::Stopped,
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    async fn attempt(
        &mut self,
        raw: &Bytes,
        header: &BatchHeader,
        client_producer: Option<(i64, i16)>,
    ) -> Result<Attempt, String> {
        // A batch the proxy restamped on its way into the source goes back
        // out under the client's own producer id, continuing the sequences
        // the target already holds from before the flip.
        let inverse = client_producer.and_then(|key| self.mirror.inverse_of(key));
        let (producer_id, epoch) = match inverse {
            Some(original) => original,
            None => self
                .mirror
                .mirror_producer(client_producer)
                .await
                .map_err(|e| e.to_string())?,
        };
        let sequence = match (client_producer, inverse) {
            (_, Some(original)) => {
                let first = self
                    .mirror
                    .inverse
                    .known_first_sequence(original, &self.topic, self.partition)
                    .unwrap_or(0);
                header.base_sequence.wrapping_add(first)
            }
            (Some(key), None) => {
                // A fresh mirror producer starts at sequence 0: shift by
                // where this client producer started on this partition.
                let first = self.mirror.producer_map.first_sequence(
                    key,
                    &self.topic,
                    self.partition,
                    header.base_sequence,
                );
                header.base_sequence.wrapping_sub(first)
            }
            (None, None) => {
                if self.own_producer != Some((producer_id, epoch)) {
                    self.own_producer = Some((producer_id, epoch));
                    self.own_sequence = 0;
                }
                self.own_sequence
            }
        };
        let stamped = batch::restamp(raw, producer_id, epoch, Some(sequence));
        match self
            .mirror
            .client
            .produce(&self.topic, self.partition, stamped)
            .await
        {
            Ok((0, b_base)) => {
                if client_producer.is_none() {
                    self.own_sequence = self.own_sequence.wrapping_add(header.records_count);
                }
                Ok(Attempt::Written(b_base))
            }
            Ok((DUPLICATE_SEQUENCE, _)) => {
                if client_producer.is_none() {
                    self.own_sequence = self.own_sequence.wrapping_add(header.records_count);
                }
                Ok(Attempt::AlreadyThere)
            }
            Ok((
                code @ (OUT_OF_ORDER_SEQUENCE | INVALID_PRODUCER_EPOCH | UNKNOWN_PRODUCER_ID),
                _,
            )) => {
                if let (Some(key), Some(_)) = (client_producer, inverse) {
                    // The client's own id is not usable there any more: go
                    // on under a mapped one.
                    self.mirror
                        .inverse_refused
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key);
                    return Err(format!(
                        "client producer id refused with error {code}; mapping it instead"
                    ));
                }
                // The mirror cluster lost or fenced our producer state: start
                // a new producer id whose sequences begin at this batch.
                self.mirror.forget_producer(client_producer).await;
                match client_producer {
                    Some(key) => {
                        self.mirror.producer_map.first_sequence(
                            key,
                            &self.topic,
                            self.partition,
                            header.base_sequence,
                        );
                    }
                    None => self.own_sequence = 0,
                }
                Err(format!(
                    "producer state rejected with error {code}; new producer id"
                ))
            }
            Ok((3, _)) => {
                let missing = self.mirror.ensure_topic(&self.topic).await;
                if let Err(reason) = &missing {
                    self.mirror
                        .update_status(&self.topic, self.partition, |s| s.topic_missing = true);
                    return Err(reason.clone());
                }
                Err("unknown topic or partition; metadata refreshed".into())
            }
            Ok((code, _)) if RETRIABLE.contains(&code) => {
                let _ = self
                    .mirror
                    .client
                    .refresh(std::slice::from_ref(&self.topic))
                    .await;
                Err(format!("error {code}; metadata refreshed"))
            }
            Ok((code, _)) => Err(format!(
                "mirror cluster refused the batch with error {code}"
            )),
            Err(ClientError::NoLeader { .. }) => {
                let missing = self.mirror.ensure_topic(&self.topic).await;
                if let Err(reason) = missing {
                    self.mirror
                        .update_status(&self.topic, self.partition, |s| s.topic_missing = true);
                    return Err(reason);
                }
                Err(format!(
                    "no leader known for {}-{}",
                    self.topic, self.partition
                ))
            }
            Err(e) => {
                let _ = self
                    .mirror
                    .client
                    .refresh(std::slice::from_ref(&self.topic))
                    .await;
                Err(e.to_string())
            }
        }
    }
}

const STOPPED: &str = "switchyard stopped before the mirror cluster confirmed the batch";

enum Shipped {
    Written(i64),
    AlreadyThere,
    Stopped,
}

enum Attempt {
    Written(i64),
    AlreadyThere,
}
