//! Mirror mode: every batch the primary acknowledges is written to the
//! other cluster too, per partition in the primary's offset order, under a
//! switchyard-owned idempotent producer id, and the offset correspondence is
//! recorded.

mod budget;
pub mod client;
pub mod journal;
pub mod producers;
mod topics;
mod worker;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::{ClusterName, MirrorMode};
use crate::protocol::batch;
use crate::state::StateDir;
use crate::translate::TranslationTable;
use client::{ClientError, ClusterClient};
use journal::{Journal, JournalEntry};
use worker::PartitionWorker;

pub use topics::TopicCheck;

/// What happened to a submitted batch.
pub type Outcome = Result<(), String>;

struct Submission {
    a_base: i64,
    batches: Arc<budget::Payload>,
    records: i64,
    bytes: u64,
    waiters: Vec<oneshot::Sender<Outcome>>,
}

/// Records and bytes of a submission's batches.
fn measure(batches: &[Bytes]) -> (i64, u64) {
    let records = batches
        .iter()
        .filter_map(|b| batch::read_header(b).ok())
        .map(|h| h.offset_count())
        .sum();
    (records, batches.iter().map(|b| b.len() as u64).sum())
}

/// The batches of a queued submission, to be marked durable once the
/// journal has them (sync mode, when the mirror did not confirm in time).
pub struct QueuedBatches(Arc<budget::Payload>);

/// Live numbers of one partition's mirror, for status and metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
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
    /// Why mirroring of this partition stopped (an error the mirror
    /// cluster gives the batch however often it is sent). Its batches stay
    /// queued (and journaled); `POST /mirror` or a restart tries again.
    pub stopped: Option<String>,
    /// Something an operator should know that does not stop mirroring
    /// (e.g. the topic was created with fewer replicas than the primary's).
    pub note: Option<String>,
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
    /// Memory held by queued batches, bounded by `mirror.max_queued_bytes`.
    budget: Arc<budget::Budget>,
    status: Mutex<BTreeMap<(String, i32), PartitionStatus>>,
    gap_timeout: Duration,
    shutdown: CancellationToken,
    metrics: crate::metrics::MirrorMetrics,
    stopped_partitions: metrics::Gauge,
    /// Bumped whenever mirroring is switched on again: stopped partitions
    /// try once more.
    resume: tokio::sync::watch::Sender<u64>,
    /// Recent comparisons of topics between the two clusters.
    topic_checks: Mutex<HashMap<String, (std::time::Instant, TopicCheck)>>,
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
        config: &crate::config::MirrorConfig,
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
        // Only where each unmirrored entry lies is kept: the batches are
        // read back when their turn comes, so a journal larger than memory
        // replays.
        let mut unmirrored = Vec::new();
        journal::scan(journal_path, |at, e| {
            let mirrored = translation
                .partition(&e.topic, e.partition)
                .is_some_and(|p| p.contains_a(e.a_base));
            if !mirrored {
                let (records, bytes) = measure(&e.batches);
                unmirrored.push((at, e.topic, e.partition, e.a_base, records, bytes));
            }
        })?;
        let journal = Journal::open(journal_path, unmirrored.len())?;
        let metrics = crate::metrics::MirrorMetrics::new(client.cluster());
        let client_cluster = client.cluster();
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
            budget: budget::Budget::new(
                config.max_queued_bytes,
                metrics.queued_bytes.clone(),
                metrics.spilled_batches.clone(),
            ),
            status: Mutex::new(BTreeMap::new()),
            gap_timeout: Duration::from_millis(config.gap_timeout_ms),
            shutdown: shutdown.clone(),
            stopped_partitions: metrics::gauge!(
                crate::metrics::MIRROR_STOPPED_PARTITIONS,
                "cluster" => client_cluster.as_str()
            ),
            metrics,
            resume: tokio::sync::watch::channel(0).0,
            topic_checks: Mutex::new(HashMap::new()),
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
        for (at, topic, partition, a_base, records, bytes) in unmirrored {
            let on_disk = mirror.budget.on_disk(at, bytes);
            let done = mirror.enqueue(&topic, partition, a_base, on_disk, records, bytes);
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
        let at = self.journal.append(&entry).await?;
        let (done, batches) = self.submit(topic, partition, a_base, entry.batches);
        self.budget.journaled(&batches.0, at);
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
        queued: Option<QueuedBatches>,
    ) -> std::io::Result<()> {
        let entry = JournalEntry {
            topic: topic.to_owned(),
            partition,
            a_base,
            batches,
        };
        let at = self.journal.append(&entry).await?;
        drop(entry);
        if let Some(queued) = queued {
            self.budget.journaled(&queued.0, at);
        }
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

    /// Switches the mode; switching to sync or async also retries the
    /// partitions whose mirroring stopped.
    pub fn set_mode(&self, mode: MirrorMode) {
        self.mode
            .store(mode_code(mode), std::sync::atomic::Ordering::Release);
        if mode != MirrorMode::Off {
            self.resume.send_modify(|generation| *generation += 1);
        }
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

    /// Bytes of queued batches held in memory (the rest wait in the
    /// journal).
    pub fn queued_bytes(&self) -> u64 {
        self.budget.used()
    }

    /// Queues the batches the primary acknowledged at `a_base` for the
    /// mirror; the receiver learns when the mirror cluster has them.
    pub fn submit(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        a_base: i64,
        batches: Vec<Bytes>,
    ) -> (oneshot::Receiver<Outcome>, QueuedBatches) {
        let (records, bytes) = measure(&batches);
        let held = self.budget.hold(batches);
        let done = self.enqueue(topic, partition, a_base, held.clone(), records, bytes);
        (done, QueuedBatches(held))
    }

    /// Queues a submission for its partition's worker (started on first
    /// use) and counts it as lag.
    fn enqueue(
        self: &Arc<Self>,
        topic: &str,
        partition: i32,
        a_base: i64,
        batches: Arc<budget::Payload>,
        records: i64,
        bytes: u64,
    ) -> oneshot::Receiver<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.update_status(topic, partition, |s| {
            s.lag_records += records;
            s.lag_bytes += bytes;
        });
        self.metrics.lag_records.increment(records as f64);
        self.metrics.lag_bytes.increment(bytes as f64);
        let submission = Submission {
            a_base,
            batches,
            records,
            bytes,
            waiters: vec![tx],
        };
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let queue = queues
            .entry((topic.to_owned(), partition))
            .or_insert_with(|| {
                let (queue_tx, queue_rx) = mpsc::unbounded_channel();
                // Continue where the translation table ends, so that
                // batches mirrored before a restart are recognised.
                let next_a = self
                    .translation
                    .partition(topic, partition)
                    .and_then(|p| p.end_a());
                let worker =
                    PartitionWorker::new(self.clone(), topic.to_owned(), partition, next_a);
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
}

fn mode_code(mode: MirrorMode) -> u8 {
    match mode {
        MirrorMode::Off => 0,
        MirrorMode::Sync => 1,
        MirrorMode::Async => 2,
    }
}
