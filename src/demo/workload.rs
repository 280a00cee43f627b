//! Real-client traffic and the integrity check a user would run: every
//! acknowledged record read back once, in order per key.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use serde::Serialize;

pub use super::stored::{read_cluster, read_cluster_as, StoredIndex, StoredRecord};

/// One acknowledged or consumed record: which key, which per-key sequence
/// number, where it landed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordRef {
    pub key: String,
    pub seq: u64,
    pub partition: i32,
    pub offset: i64,
}

#[derive(Debug, Clone)]
pub struct ProduceSpec {
    pub topic: String,
    pub keys: usize,
    /// Keys are "{key_prefix}-{n}": producers with different prefixes have
    /// separate per-key sequences.
    pub key_prefix: String,
    pub records: usize,
    pub compression: &'static str,
    pub idempotent: bool,
    /// Records sent before waiting for their acknowledgements; traffic then
    /// flows for a while instead of in one burst.
    pub batch: usize,
    /// Pause between rounds of `batch` records.
    pub pause: Duration,
    /// Extra client settings, applied last.
    pub settings: Vec<(String, String)>,
    /// Counts acknowledged records as they arrive.
    pub progress: Option<Arc<AtomicUsize>>,
    /// Notes, per acknowledged record, when it was sent and how long its
    /// acknowledgement took.
    pub latency: Option<Arc<AckLatencies>>,
}

/// One acknowledged record's wait: sent at `sent`, acknowledged `waited`
/// later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckLatency {
    pub sent: Instant,
    pub waited: Duration,
}

impl AckLatency {
    pub fn acked(&self) -> Instant {
        self.sent + self.waited
    }
}

/// Acknowledgement latencies of one or more producers, shared between
/// them.
#[derive(Debug, Default)]
pub struct AckLatencies {
    samples: std::sync::Mutex<Vec<AckLatency>>,
}

impl AckLatencies {
    pub fn record(&self, sample: AckLatency) {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sample);
    }

    /// Everything recorded so far, in no particular order.
    pub fn samples(&self) -> Vec<AckLatency> {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// How long acknowledgements took, over a set of records (milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AckStats {
    pub records: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl AckStats {
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a AckLatency>) -> AckStats {
        let mut waits: Vec<Duration> = samples.into_iter().map(|s| s.waited).collect();
        if waits.is_empty() {
            return AckStats::default();
        }
        waits.sort_unstable();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        // Nearest rank: the smallest wait that `q` of the records did not
        // exceed.
        let at = |q: f64| {
            let rank = ((q * waits.len() as f64).ceil() as usize).clamp(1, waits.len());
            ms(waits[rank - 1])
        };
        AckStats {
            records: waits.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: ms(waits[waits.len() - 1]),
        }
    }
}

/// When every producer had recovered from a disturbance that ended at
/// `after` (a flip): the latest, over the producers, acknowledgement of each
/// one's first record sent at or after `after`. A producer waits for a
/// round before it sends the next, so that record is acknowledged once the
/// producer writes normally again. `None` when no producer sent anything
/// after `after`.
pub fn recovered_at(producers: &[Vec<AckLatency>], after: Instant) -> Option<Instant> {
    producers
        .iter()
        .filter_map(|samples| {
            samples
                .iter()
                .filter(|s| s.sent >= after)
                .min_by_key(|s| s.sent)
                .map(AckLatency::acked)
        })
        .max()
}

/// Acknowledgement waits of a run: all of them, the warm-up (records sent
/// while clients were still connecting), records waiting at some moment of
/// a window (a flip: sent before it ended and acknowledged after it
/// began), and the rest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct AckStalls {
    pub all: AckStats,
    pub warm_up: AckStats,
    pub during: AckStats,
    pub outside: AckStats,
}

impl AckStalls {
    /// Records sent before `steady` are the warm-up; `window` is the flip.
    pub fn split(samples: &[AckLatency], steady: Instant, window: (Instant, Instant)) -> AckStalls {
        let warm = |s: &&AckLatency| s.sent < steady;
        let overlaps = |s: &&AckLatency| !warm(s) && s.sent <= window.1 && s.acked() >= window.0;
        AckStalls {
            all: AckStats::of(samples),
            warm_up: AckStats::of(samples.iter().filter(warm)),
            during: AckStats::of(samples.iter().filter(overlaps)),
            outside: AckStats::of(samples.iter().filter(|s| !warm(s) && !overlaps(s))),
        }
    }
}

impl ProduceSpec {
    pub fn new(topic: &str, records: usize) -> ProduceSpec {
        ProduceSpec {
            topic: topic.to_owned(),
            keys: 16,
            key_prefix: "key".into(),
            records,
            compression: "none",
            idempotent: false,
            batch: usize::MAX,
            pause: Duration::ZERO,
            settings: Vec::new(),
            progress: None,
            latency: None,
        }
    }

    pub fn set(mut self, key: &str, value: &str) -> ProduceSpec {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }
}

pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("message.timeout.ms", "60000")
        .set("linger.ms", "5")
        .set("broker.address.family", "v4");
    config
}

pub fn consumer_config(bootstrap: &str, group: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("broker.address.family", "v4");
    config
}

/// The value written for (key, seq): the integrity check parses it back.
pub fn record_value(key: &str, seq: u64) -> String {
    format!("{key}#{seq}#{}", "x".repeat(64))
}

pub(super) fn parse_value(value: &[u8]) -> Option<(String, u64)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut parts = text.splitn(3, '#');
    let key = parts.next()?.to_owned();
    let seq = parts.next()?.parse().ok()?;
    Some((key, seq))
}

/// Produces `spec.records` keyed records and returns those acknowledged.
pub async fn produce(bootstrap: &str, spec: &ProduceSpec) -> anyhow::Result<Vec<RecordRef>> {
    let mut config = producer_config(bootstrap);
    config
        .set("compression.type", spec.compression)
        .set("enable.idempotence", spec.idempotent.to_string());
    for (k, v) in &spec.settings {
        config.set(k, v);
    }
    let producer: FutureProducer = config.create()?;
    let mut acked = Vec::with_capacity(spec.records);
    let mut start = 0;
    while start < spec.records {
        let end = spec.records.min(start.saturating_add(spec.batch.max(1)));
        produce_range(&producer, spec, start..end, &mut acked).await?;
        start = end;
        if !spec.pause.is_zero() && start < spec.records {
            tokio::time::sleep(spec.pause).await;
        }
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(acked)
}

async fn produce_range(
    producer: &FutureProducer,
    spec: &ProduceSpec,
    range: std::ops::Range<usize>,
    acked: &mut Vec<RecordRef>,
) -> anyhow::Result<()> {
    // Deliveries are polled together and handed back in send order: each
    // one's wait ends when its acknowledgement arrives, not when the ones
    // before it have been looked at.
    let mut deliveries = futures::stream::FuturesOrdered::new();
    for i in range {
        let key = format!("{}-{}", spec.key_prefix, i % spec.keys);
        let seq = (i / spec.keys) as u64;
        let value = record_value(&key, seq);
        let headers = OwnedHeaders::new().insert(Header {
            key: "seq",
            value: Some(seq.to_string().as_bytes()),
        });
        let record = FutureRecord::to(&spec.topic)
            .key(&key)
            .payload(&value)
            .headers(headers);
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| anyhow::anyhow!("enqueue failed: {e}"))?;
        let sent = Instant::now();
        deliveries.push_back(async move {
            let outcome = delivery.await;
            let waited = sent.elapsed();
            (key, seq, outcome, AckLatency { sent, waited })
        });
    }
    while let Some((key, seq, outcome, latency)) = deliveries.next().await {
        match outcome {
            Ok(Ok(d)) => {
                if let Some(recorder) = &spec.latency {
                    recorder.record(latency);
                }
                acked.push(RecordRef {
                    key,
                    seq,
                    partition: d.partition,
                    offset: d.offset,
                });
                if let Some(progress) = &spec.progress {
                    progress.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Err((e, _))) => tracing::debug!(%key, seq, error = %e, "not acknowledged"),
            Err(_) => tracing::debug!(%key, seq, "delivery future dropped"),
        }
    }
    Ok(())
}

/// Reads `topic` with a consumer group until `expected` records arrived or
/// `timeout` passed; commits what it read when `commit` is set.
pub async fn consume(
    bootstrap: &str,
    topic: &str,
    group: &str,
    expected: usize,
    timeout: Duration,
    commit: bool,
) -> anyhow::Result<Vec<RecordRef>> {
    let consumer: StreamConsumer = consumer_config(bootstrap, group).create()?;
    consumer.subscribe(&[topic])?;
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(expected);
    while out.len() < expected {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        match tokio::time::timeout(remaining.min(Duration::from_secs(1)), consumer.recv()).await {
            Ok(Ok(message)) => out.push(record_of(&message)?),
            Ok(Err(e)) => tracing::debug!(error = %e, "consumer error"),
            Err(_) => {}
        }
    }
    if commit && !out.is_empty() {
        consumer.commit_consumer_state(CommitMode::Sync)?;
    }
    close_off_runtime(consumer).await;
    Ok(out)
}

/// A consumed record, checked: value, key and header tell the same key and
/// sequence.
fn record_of(message: &impl Message) -> anyhow::Result<RecordRef> {
    let Some((key, seq)) = message.payload().and_then(parse_value) else {
        anyhow::bail!(
            "unreadable record at partition {} offset {}",
            message.partition(),
            message.offset()
        );
    };
    let header_seq = message
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == "seq"))
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok());
    anyhow::ensure!(
        header_seq == Some(seq),
        "record {key}#{seq} lost its header (got {header_seq:?})"
    );
    anyhow::ensure!(
        message.key() == Some(key.as_bytes()),
        "record {key}#{seq} has the wrong key"
    );
    Ok(RecordRef {
        key,
        seq,
        partition: message.partition(),
        offset: message.offset(),
    })
}

/// Closes a consumer on a blocking thread: closing waits for the group's
/// coordinator (leaving the group, a last commit), and when that
/// coordinator is reached through a switchyard running on the same runtime,
/// closing on one of its worker threads can starve it.
pub async fn close_off_runtime(consumer: StreamConsumer) {
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
}

/// How a long-running consumer commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commits {
    /// `enable.auto.commit` every 200 ms (and on revocation).
    Auto,
    /// An asynchronous commit after every record.
    EveryRecord,
}

/// Reads `topic` with a consumer group until `target` (0: not known yet)
/// distinct records arrived or `deadline` passed, committing as it goes.
/// Each record is counted in `progress`.
pub async fn consume_continuously(
    bootstrap: &str,
    topic: &str,
    group: &str,
    commits: Commits,
    target: Arc<AtomicUsize>,
    progress: Arc<AtomicUsize>,
    deadline: Instant,
) -> anyhow::Result<Vec<RecordRef>> {
    let mut config = consumer_config(bootstrap, group);
    if commits == Commits::Auto {
        config
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "200");
    }
    let consumer: StreamConsumer = config.create()?;
    consumer.subscribe(&[topic])?;
    let mut out = Vec::new();
    let mut distinct = HashSet::new();
    loop {
        let wanted = target.load(Ordering::Acquire);
        if wanted > 0 && distinct.len() >= wanted {
            break;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            break;
        }
        match tokio::time::timeout(remaining.min(Duration::from_millis(500)), consumer.recv()).await
        {
            Ok(Ok(message)) => {
                let record = record_of(&message)?;
                if commits == Commits::EveryRecord {
                    if let Err(e) = consumer.commit_message(&message, CommitMode::Async) {
                        tracing::debug!(error = %e, "commit not sent");
                    }
                }
                distinct.insert((record.key.clone(), record.seq));
                progress.fetch_add(1, Ordering::Relaxed);
                out.push(record);
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "consumer error"),
            Err(_) => {}
        }
    }
    consumer.commit_consumer_state(CommitMode::Sync).ok();
    close_off_runtime(consumer).await;
    Ok(out)
}

#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct IntegrityReport {
    pub acknowledged: usize,
    pub consumed: usize,
    /// Acknowledged but never consumed.
    pub lost: usize,
    /// Consumed more than once.
    pub duplicates: usize,
    /// Consumed but never acknowledged (possible after a produce timeout).
    pub unacknowledged_consumed: usize,
    /// A key's sequence went backwards, or a partition's order did: the sum
    /// of the two counts below.
    pub order_violations: usize,
    /// First deliveries whose key's sequence number was not above the
    /// previous one of that key.
    pub key_order_violations: usize,
    /// First deliveries that came before the previous one of their partition
    /// (by offset, or by stored position for `check_against`).
    pub partition_order_violations: usize,
}

impl IntegrityReport {
    pub fn is_clean(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.order_violations == 0
    }
}

pub fn check(acked: &[RecordRef], consumed: &[RecordRef]) -> IntegrityReport {
    check_ordered_by(acked, consumed, |record| Some(record.offset))
}

/// `check`, with each partition's order judged by where its records sit in
/// `stored` (one cluster's copy of the topic) instead of by the offsets they
/// were read at: a group that moved read from two clusters, whose offsets
/// agree only when both logs started together.
pub fn check_against(
    acked: &[RecordRef],
    consumed: &[RecordRef],
    stored: &StoredIndex,
) -> IntegrityReport {
    check_ordered_by(acked, consumed, |record| {
        stored
            .position(record.partition, &record.key, record.seq)
            .map(|p| p as i64)
    })
}

/// `position` places a record in its partition; first deliveries must come
/// in increasing position. A record it cannot place counts in no order.
fn check_ordered_by(
    acked: &[RecordRef],
    consumed: &[RecordRef],
    position: impl Fn(&RecordRef) -> Option<i64>,
) -> IntegrityReport {
    let acked_set: HashSet<(&str, u64)> = acked.iter().map(|r| (r.key.as_str(), r.seq)).collect();
    let mut seen: HashMap<(&str, u64), usize> = HashMap::new();
    let mut last_seq: HashMap<&str, u64> = HashMap::new();
    let mut last_position: BTreeMap<i32, i64> = BTreeMap::new();
    let mut report = IntegrityReport {
        acknowledged: acked.len(),
        consumed: consumed.len(),
        ..Default::default()
    };
    for record in consumed {
        let id = (record.key.as_str(), record.seq);
        let count = seen.entry(id).or_insert(0);
        *count += 1;
        if *count > 1 {
            report.duplicates += 1;
            continue;
        }
        if !acked_set.contains(&id) {
            report.unacknowledged_consumed += 1;
        }
        if let Some(&previous) = last_seq.get(record.key.as_str()) {
            if record.seq <= previous {
                report.key_order_violations += 1;
            }
        }
        last_seq.insert(&record.key, record.seq);
        let Some(position) = position(record) else {
            continue;
        };
        if let Some(&previous) = last_position.get(&record.partition) {
            if position <= previous {
                report.partition_order_violations += 1;
            }
        }
        last_position.insert(record.partition, position);
    }
    report.order_violations = report.key_order_violations + report.partition_order_violations;
    report.lost = acked_set
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .count();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(key: &str, seq: u64, partition: i32, offset: i64) -> RecordRef {
        RecordRef {
            key: key.into(),
            seq,
            partition,
            offset,
        }
    }

    #[test]
    fn check_counts_loss_duplicates_and_reordering() {
        let acked = vec![
            r("a", 0, 0, 0),
            r("a", 1, 0, 1),
            r("b", 0, 1, 0),
            r("b", 1, 1, 1),
        ];
        let clean = check(&acked, &acked);
        assert!(clean.is_clean());
        assert_eq!(clean.consumed, 4);

        let consumed = vec![
            r("a", 1, 0, 1),
            r("a", 0, 0, 0),
            r("b", 0, 1, 0),
            r("b", 0, 1, 0),
        ];
        let report = check(&acked, &consumed);
        assert_eq!(report.lost, 1, "b#1 never read");
        assert_eq!(report.duplicates, 1);
        assert_eq!(
            report.order_violations, 2,
            "a went backwards in seq and offset"
        );
        assert_eq!(report.key_order_violations, 1);
        assert_eq!(report.partition_order_violations, 1);
        assert!(!report.is_clean());
    }

    /// A partition as it ends up stored: (key, seq) at offsets from 0.
    fn stored_partition(partition: i32, records: &[(&str, u64)]) -> StoredIndex {
        let records = records
            .iter()
            .zip(0..)
            .map(|(&(key, seq), offset)| StoredRecord {
                offset,
                key: Some(key.as_bytes().to_vec()),
                value: Some(record_value(key, seq).into_bytes()),
                headers: Vec::new(),
                timestamp: None,
            })
            .collect();
        StoredIndex::of(&[(partition, records)].into())
    }

    #[test]
    fn partition_order_is_judged_by_stored_position_when_clusters_differ_in_offsets() {
        // The group read a0 and b0 from A, where the partition's log
        // started at offset 100, then moved to B (log from 0) and read the
        // rest there: offsets go backwards, the partition's order does not.
        let in_b = stored_partition(0, &[("a", 0), ("b", 0), ("a", 1), ("b", 1)]);
        let acked = vec![
            r("a", 0, 0, 100),
            r("b", 0, 0, 101),
            r("a", 1, 0, 2),
            r("b", 1, 0, 3),
        ];
        let consumed = vec![
            r("a", 0, 0, 100),
            r("b", 0, 0, 101),
            r("b", 0, 0, 1), // read again in B: not committed before the move
            r("a", 1, 0, 2),
            r("b", 1, 0, 3),
        ];
        assert_eq!(check(&acked, &consumed).partition_order_violations, 1);
        let report = check_against(&acked, &consumed, &in_b);
        assert_eq!(report.partition_order_violations, 0, "{report:?}");
        assert_eq!((report.lost, report.duplicates), (0, 1));

        // Out of order is still out of order: b0 read before a0 although
        // the partition holds a0 first.
        let swapped = vec![
            r("b", 0, 0, 1),
            r("a", 0, 0, 0),
            r("a", 1, 0, 2),
            r("b", 1, 0, 3),
        ];
        let report = check_against(&acked, &swapped, &in_b);
        assert_eq!(report.partition_order_violations, 1, "{report:?}");
    }
}
