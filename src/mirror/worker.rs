//! One partition's mirror worker: orders what the primary acknowledged by
//! primary offset and writes it to the mirror cluster, retrying until it
//! is there.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::client::ClientError;
use super::{journal, Mirror, Outcome, Submission};
use crate::protocol::batch::{self, BatchHeader};
use crate::protocol::errors;
use crate::translate::Segment;

pub(super) struct PartitionWorker {
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
    /// The next sequence of each mirror producer (id, epoch) that wrote
    /// here since switchyard started.
    next_sequence: HashMap<(i64, i16), i32>,
    /// Changes when mirroring is switched on again (a stopped partition
    /// tries once more).
    resume: tokio::sync::watch::Receiver<u64>,
}

impl PartitionWorker {
    /// A worker for one partition; `next_a` is where the translation table
    /// ends, so that batches mirrored before a restart are recognised.
    pub(super) fn new(
        mirror: Arc<Mirror>,
        topic: String,
        partition: i32,
        next_a: Option<i64>,
    ) -> PartitionWorker {
        let mirror_resume = mirror.resume.subscribe();
        PartitionWorker {
            mirror,
            topic,
            partition,
            next_a,
            pending: BTreeMap::new(),
            own_sequence: 0,
            own_producer: None,
            next_sequence: HashMap::new(),
            resume: mirror_resume,
        }
    }

    pub(super) async fn run(mut self, mut queue: mpsc::UnboundedReceiver<Submission>) {
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
                let records = submission.records;
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
            submission.records
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
        let batches = self.load(submission).await?;
        for raw in &batches {
            let Ok(header) = batch::read_header(raw) else {
                continue;
            };
            let b_base = match self.ship_batch(raw, &header, a_offset).await {
                Shipped::Written(b_base) => b_base,
                Shipped::Stopped => return None,
            };
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
            a_offset += header.offset_count();
        }
        Some(a_offset - submission.a_base)
    }

    /// A submission's batches: from memory, or read back from the journal
    /// (retried while it cannot be read). `None` when switchyard stopped.
    async fn load(&self, submission: &Submission) -> Option<Vec<Bytes>> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let at = match submission.batches.get() {
                Ok(batches) => return Some(batches),
                Err(at) => at,
            };
            let path = self.mirror.journal.path().to_owned();
            let read = tokio::task::spawn_blocking(move || journal::read_at(&path, at)).await;
            let error = match read {
                Ok(Ok(entry))
                    if entry.a_base == submission.a_base
                        && entry.partition == self.partition
                        && entry.topic == self.topic =>
                {
                    return Some(entry.batches)
                }
                Ok(Ok(entry)) => format!(
                    "the mirror journal holds {}-{} at {} where {} was expected",
                    entry.topic, entry.partition, entry.a_base, submission.a_base
                ),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            };
            tracing::error!(topic = %self.topic, partition = self.partition, %error,
                "cannot read queued batches back from the mirror journal; retrying");
            self.mirror.update_status(&self.topic, self.partition, |s| {
                s.last_error = Some(error.clone());
            });
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.mirror.shutdown.cancelled() => return None,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn ship_batch(&mut self, raw: &Bytes, header: &BatchHeader, a_offset: i64) -> Shipped {
        let client_producer = header
            .is_idempotent()
            .then_some((header.producer_id, header.producer_epoch));
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.mirror.shutdown.is_cancelled() {
                return Shipped::Stopped;
            }
            // A resume asked for from now on retries a stop this attempt
            // leads to.
            self.resume.borrow_and_update();
            let attempt = self.attempt(raw, header, client_producer, a_offset).await;
            let error = match attempt {
                Ok(b_base) => return Shipped::Written(b_base),
                Err(Failure::Retry(error)) => error,
                Err(Failure::Stop(reason)) => {
                    if !self.stop_until_resumed(&reason).await {
                        return Shipped::Stopped;
                    }
                    backoff = Duration::from_millis(50);
                    continue;
                }
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

    /// Stops this partition's mirroring with a reason until mirroring is
    /// switched on again; false when switchyard stops first. What is queued
    /// stays queued (and journaled).
    async fn stop_until_resumed(&mut self, reason: &str) -> bool {
        tracing::error!(
            topic = %self.topic,
            partition = self.partition,
            cluster = %self.mirror.target,
            %reason,
            "mirroring of this partition stopped; POST /mirror (or a restart) tries again"
        );
        self.mirror.stopped_partitions.increment(1.0);
        self.mirror.update_status(&self.topic, self.partition, |s| {
            s.stopped = Some(reason.to_owned());
            s.last_error = Some(reason.to_owned());
        });
        let resumed = tokio::select! {
            changed = self.resume.changed() => changed.is_ok(),
            _ = self.mirror.shutdown.cancelled() => false,
        };
        self.mirror.stopped_partitions.decrement(1.0);
        self.mirror
            .update_status(&self.topic, self.partition, |s| s.stopped = None);
        if resumed {
            tracing::info!(topic = %self.topic, partition = self.partition, "mirroring of this partition resumes");
        }
        resumed
    }

    async fn attempt(
        &mut self,
        raw: &Bytes,
        header: &BatchHeader,
        client_producer: Option<(i64, i16)>,
        a_offset: i64,
    ) -> Result<i64, Failure> {
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
                .map_err(|e| match e {
                    ClientError::NoProducerIds { .. } => Failure::Stop(e.to_string()),
                    e => Failure::Retry(e.to_string()),
                })?,
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
        let written = Stamp {
            producer_id,
            epoch,
            sequence,
            last_offset_delta: header.last_offset_delta,
        };
        let answer = self
            .mirror
            .client
            .produce(&self.topic, self.partition, stamped)
            .await;
        let code = match answer {
            Ok((errors::NONE, b_base)) => {
                self.wrote(written, header, client_producer, true);
                return Ok(b_base);
            }
            Ok((code, _)) => code,
            Err(ClientError::NoLeader { .. }) => {
                let missing = self.mirror.ensure_topic(&self.topic).await;
                if let Err(reason) = missing {
                    self.mirror
                        .update_status(&self.topic, self.partition, |s| s.topic_missing = true);
                    return Err(Failure::Retry(reason));
                }
                return Err(Failure::Retry(format!(
                    "no leader known for {}-{}",
                    self.topic, self.partition
                )));
            }
            Err(e) => {
                let _ = self
                    .mirror
                    .client
                    .refresh(std::slice::from_ref(&self.topic))
                    .await;
                return Err(Failure::Retry(e.to_string()));
            }
        };
        if matches!(
            code,
            errors::OUT_OF_ORDER_SEQUENCE_NUMBER | errors::DUPLICATE_SEQUENCE_NUMBER
        ) && self.may_be_written(&written)
        {
            // A sequence the producer already passed: usually the batch is
            // there (written before a restart, and older than the broker's
            // window of five batches). Found, it counts as written where
            // it is; writing it again under a new id would store it twice.
            match self.find_in_target(&written).await {
                Ok(Some(b_base)) => {
                    tracing::info!(topic = %self.topic, partition = self.partition, a_offset, b_base,
                        error = %errors::describe(code), "batch already in the mirror cluster");
                    self.wrote(written, header, client_producer, false);
                    return Ok(b_base);
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(Failure::Retry(format!(
                        "{} for a batch that may be there already, and looking for it failed: {e}",
                        errors::describe(code)
                    )))
                }
            }
        }
        match code {
            errors::OUT_OF_ORDER_SEQUENCE_NUMBER
            | errors::DUPLICATE_SEQUENCE_NUMBER
            | errors::INVALID_PRODUCER_EPOCH
            | errors::PRODUCER_FENCED
            | errors::UNKNOWN_PRODUCER_ID => {
                let code = errors::describe(code);
                if let (Some(key), Some(_)) = (client_producer, inverse) {
                    // The client's own id is not usable there any more: go
                    // on under a mapped one.
                    self.mirror
                        .inverse_refused
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(key);
                    return Err(Failure::Retry(format!(
                        "client producer id refused with {code}; mapping it instead"
                    )));
                }
                // The mirror cluster lost or fenced our producer state, or
                // a sequence is really missing: start a new producer id
                // whose sequences begin at this batch.
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
                Err(Failure::Retry(format!(
                    "producer state rejected with {code}; new producer id"
                )))
            }
            errors::UNKNOWN_TOPIC_OR_PARTITION => {
                let missing = self.mirror.ensure_topic(&self.topic).await;
                if let Err(reason) = &missing {
                    self.mirror
                        .update_status(&self.topic, self.partition, |s| s.topic_missing = true);
                    return Err(Failure::Retry(reason.clone()));
                }
                Err(Failure::Retry(
                    "unknown topic or partition; metadata refreshed".into(),
                ))
            }
            code if errors::is_permanent_for_batch(code) => Err(Failure::Stop(format!(
                "cluster {} refuses the batch at offset {a_offset} of {}-{} ({} bytes) with {}{}",
                self.mirror.target,
                self.topic,
                self.partition,
                raw.len(),
                errors::describe(code),
                match code {
                    errors::MESSAGE_TOO_LARGE | errors::RECORD_LIST_TOO_LARGE =>
                        "; compare max.message.bytes of the topic in both clusters",
                    _ => "",
                }
            ))),
            code if errors::is_retriable_write(code) => {
                let _ = self
                    .mirror
                    .client
                    .refresh(std::slice::from_ref(&self.topic))
                    .await;
                Err(Failure::Retry(format!(
                    "{}; metadata refreshed",
                    errors::describe(code)
                )))
            }
            code => Err(Failure::Retry(format!(
                "mirror cluster refused the batch with {}",
                errors::describe(code)
            ))),
        }
    }

    /// Notes a batch the mirror cluster holds under `stamp`. `appended`:
    /// the cluster took it just now, so the producer's next sequence there
    /// is known to be at least past it; a batch found in the log says
    /// nothing of what the producer wrote after it.
    fn wrote(
        &mut self,
        stamp: Stamp,
        header: &BatchHeader,
        client_producer: Option<(i64, i16)>,
        appended: bool,
    ) {
        if client_producer.is_none() {
            self.own_sequence = self.own_sequence.wrapping_add(header.records_count);
        }
        if appended {
            // A duplicate within the broker's window is answered like an
            // append, with the original offsets: never move backwards.
            let next = stamp.sequence.wrapping_add(header.records_count);
            let known = self
                .next_sequence
                .entry((stamp.producer_id, stamp.epoch))
                .or_insert(next);
            *known = (*known).max(next);
        }
    }

    /// Whether a batch refused for its sequence may be in the mirror
    /// cluster already: its sequence is below what the producer wrote
    /// here, or nothing is known of the producer here (after a restart).
    fn may_be_written(&self, stamp: &Stamp) -> bool {
        self.next_sequence
            .get(&(stamp.producer_id, stamp.epoch))
            .is_none_or(|&next| stamp.sequence < next)
    }

    /// Looks for a batch written under `stamp` in the mirror cluster's
    /// partition: first from where the translation table ends there, then
    /// from the partition's start up to that point. Returns its offset.
    async fn find_in_target(&self, stamp: &Stamp) -> Result<Option<i64>, ClientError> {
        let client = &self.mirror.client;
        let log_start = client.log_start(&self.topic, self.partition).await?;
        let end_b = self
            .mirror
            .translation
            .partition(&self.topic, self.partition)
            .and_then(|p| p.end_b())
            .map(|end| end.max(log_start));
        if let Some(end_b) = end_b {
            if let Some(found) = self.scan_target(end_b, None, stamp).await? {
                return Ok(Some(found));
            }
        }
        self.scan_target(log_start, end_b, stamp).await
    }

    /// Walks the batch headers of the mirror cluster's partition from
    /// `from` to `until` (or its end) for a batch written under `stamp`.
    async fn scan_target(
        &self,
        from: i64,
        until: Option<i64>,
        stamp: &Stamp,
    ) -> Result<Option<i64>, ClientError> {
        const FETCH_BYTES: i32 = 1 << 20;
        let client = &self.mirror.client;
        let mut offset = from;
        loop {
            if until.is_some_and(|until| offset >= until) {
                return Ok(None);
            }
            let fetched = client
                .fetch(&self.topic, self.partition, offset, FETCH_BYTES)
                .await?;
            match fetched.error_code {
                errors::NONE => {}
                errors::OFFSET_OUT_OF_RANGE => return Ok(None),
                code => {
                    let _ = client.refresh(std::slice::from_ref(&self.topic)).await;
                    return Err(ClientError::Broker {
                        cluster: self.mirror.target,
                        addr: String::new(),
                        reason: format!(
                            "Fetch of {}-{} at {offset}: {}",
                            self.topic,
                            self.partition,
                            errors::describe(code)
                        ),
                    });
                }
            }
            let mut advanced = false;
            for (magic, base_offset, header) in batch_headers(&fetched.records) {
                let Some(header) = header.filter(|_| magic == 2) else {
                    // An old-format message: one offset at least.
                    if base_offset >= offset {
                        offset = base_offset + 1;
                        advanced = true;
                    }
                    continue;
                };
                let end = header.base_offset + header.offset_count();
                if end <= offset {
                    continue; // begins before the offset asked for
                }
                if header.producer_id == stamp.producer_id
                    && header.producer_epoch == stamp.epoch
                    && header.base_sequence == stamp.sequence
                    && header.last_offset_delta == stamp.last_offset_delta
                {
                    return Ok(Some(header.base_offset));
                }
                offset = end;
                advanced = true;
            }
            if !advanced || offset >= fetched.high_watermark {
                return Ok(None);
            }
        }
    }
}

/// The whole batches at the front of a Fetch answer's records, each as
/// (magic, first offset, v2 header); a partial batch at the end is left
/// out.
fn batch_headers(records: &Bytes) -> impl Iterator<Item = (i8, i64, Option<BatchHeader>)> + '_ {
    const LOG_OVERHEAD: usize = 12;
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let rest = records.get(at..)?;
        if rest.len() < LOG_OVERHEAD + 5 {
            return None;
        }
        let length = i32::from_be_bytes([rest[8], rest[9], rest[10], rest[11]]);
        let total = LOG_OVERHEAD.checked_add(usize::try_from(length).ok()?)?;
        let whole = rest.get(..total)?;
        at += total;
        let base_offset = i64::from_be_bytes(whole[..8].try_into().ok()?);
        let magic = whole[16] as i8;
        let header = (magic == 2)
            .then(|| batch::read_header(whole).ok())
            .flatten();
        Some((magic, base_offset, header))
    })
}

/// The producer fields a batch was written to the mirror cluster with.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    producer_id: i64,
    epoch: i16,
    sequence: i32,
    last_offset_delta: i32,
}

const STOPPED: &str = "switchyard stopped before the mirror cluster confirmed the batch";

enum Shipped {
    Written(i64),
    Stopped,
}

/// Why an attempt did not write a batch.
enum Failure {
    /// Asked again after a backoff.
    Retry(String),
    /// Asking again cannot help: the partition's mirroring stops with this
    /// reason until mirroring is switched on again.
    Stop(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_headers_walks_whole_batches_and_leaves_a_partial_one() {
        use kafka_protocol::records::{
            Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
        };
        let record = |offset: i64, sequence: i32| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: 7,
            producer_epoch: 1,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence,
            timestamp: 0,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Default::default(),
        };
        let mut buf = bytes::BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        for (offset, sequence) in [(10, 0), (12, 2)] {
            let records = [record(offset, sequence), record(offset + 1, sequence + 1)];
            RecordBatchEncoder::encode(&mut buf, &records, &options).unwrap();
        }
        let whole = buf.len();
        let mut records = buf.clone();
        records.extend_from_slice(&buf[..30]);
        let records = records.freeze();
        let found: Vec<_> = batch_headers(&records).collect();
        assert_eq!(found.len(), 2, "{whole} bytes of whole batches");
        let header = found[1].2.unwrap();
        assert_eq!((found[1].0, found[1].1, header.base_sequence), (2, 12, 2));
        assert_eq!(header.producer_id, 7);
    }
}
