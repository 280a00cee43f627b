//! Load comparison: the same rdkafka workload against a 3-broker librdkafka
//! MockCluster, directly, through a plain TCP relay (real Kafka only: the
//! broker must advertise the relay, which the mock cannot), through
//! switchyard as a plain passthrough, and
//! through switchyard mirroring every produced batch to a second 3-broker
//! mock cluster (B) in sync and in async mode. The paths take turns within
//! each round, so all of them see the same machine conditions.
//!
//! Run with `cargo bench --bench load`. Environment:
//! - `LOAD_RECORDS` (default 200000): records of 1 KiB per produce run on
//!   the direct and proxy paths.
//! - `LOAD_MIRROR_RECORDS` (default: `LOAD_RECORDS`): the same for the two
//!   mirror paths.
//! - `LOAD_ROUNDS` (default 3): rounds per metric; the table shows the
//!   median of the rounds.
//! - `LOAD_LATENCY_SECS` (default 5): length of the fixed-rate latency run.
//! - `LOAD_CATCH_UP_SECS` (default 60): how long to wait, after a mirror
//!   run, for cluster B to have everything before the next run starts.
//! - `LOAD_PROXY_THREADS` (default: one per CPU): worker threads of the
//!   proxy's tokio runtime.
//! - `RUST_LOG` (default `warn`, mirror retries left out): switchyard's log
//!   filter (stderr).
//! - `SWITCHYARD_BENCH_KAFKA=1`: real Apache Kafka instead of the mock
//!   clusters (see below); `LOAD_RECORDS` then defaults to 100000 and
//!   `LOAD_WARMUP_ROUNDS` (default 1) rounds run first and are not counted.
//!
//! Each round measures, for every path (order rotated every round):
//! 1. produce throughput: `ThreadedProducer`, linger.ms=5, batch.size=1000000,
//!    acks=1, every record 1 KiB; timed from the first send to the last
//!    delivery report.
//! 2. consume throughput (direct and proxy only): a fresh consumer (metadata
//!    already fetched) `assign()`ed to every partition just produced, from
//!    the beginning; timed from `assign()` until every record has arrived.
//! 3. produce latency: 2000 records/s, linger.ms=0, acks=1; per record the
//!    time from `send` to its delivery report.
//!
//! Before a producer's clock starts it sends a warm-up batch to a separate
//! topic and one record to every partition it is about to use, so that
//! connections, metadata and, when mirroring, the mirror's per-partition
//! workers (whose first batch waits up to 200 ms for stragglers) are in
//! place. The consumer reads those records too.
//!
//! Mirroring. One proxy per round is configured with both clusters and its
//! mirror mode is switched at runtime (`Shared::set_mirror_mode`): off for
//! the proxy path, sync or async for the mirror paths. In sync mode a
//! produce acknowledgement waits until B has the batch; in async mode it
//! waits for A and an fsync'd journal write, and B catches up in the
//! background. Before a mirror run's clock starts and after the run the
//! tool waits (bounded) until the mirror's lag (records A acknowledged that
//! B does not have yet) is zero, so no run overlaps another one's
//! mirroring; it reports the lag's peak during the run (sampled every 5 ms)
//! and how long B took to catch up afterwards. At the end of a round it
//! checks that B's high watermarks equal A's on every mirrored partition
//! and reports mirror retries, skipped ranges and errors. Every topic exists
//! in both clusters with the same partition count from the start (the mock
//! cluster has no CreateTopics). Mirror state (journal, translation log)
//! goes to a fresh temporary directory per round.
//!
//! The async journal's fsync makes async mode depend on the disk: on a disk
//! shared with other busy processes (builds, say) an fsync can take tens or
//! hundreds of milliseconds, because the file system's commit takes their
//! dirty data along. The tool therefore samples fsync latency in the same
//! file system before the rounds and, 20 times a second, during every async
//! run, and prints it next to the results. `TMPDIR=/dev/shm` puts the state
//! directory on tmpfs, which takes the disk out (and with it durability).
//!
//! Sizing. The mock broker keeps at most 5 MiB (and 100k message sets) per
//! partition and silently drops the oldest data beyond that, which would
//! make the consumer come up short. A 1 KiB record costs about 1.04 KB in a
//! record batch, so one partition may hold at most ~5000 of them; we keep
//! it at 4000 (≈ 4.2 MB). The throughput topics therefore have the asked-for
//! 6 partitions but only take 24,000 records each: a produce run walks
//! through ceil(N / 24,000) fresh topics (9 for the default N), sending
//! record i to topic i / 24,000, partition i % 6, so at any moment the
//! producer mostly fills the 6 partitions of one topic, as it would with a
//! single big topic. Mirrored records land in the same topic and partition
//! of B, so B's partitions stay within the same bound. Every round gets its
//! own clusters (and proxy), so memory stays bounded (≈ N KiB per path per
//! cluster holding it, ≈ 6 × N KiB per round) and no round sees an older
//! one's data. (librdkafka's limit counts message sets, i.e. batches, not
//! records; `rd_kafka_mock_msgset_new` in rdkafka_mock.c.)
//!
//! With the default N a throughput run lasts only 0.1–0.5 s on a 2-core
//! machine, so single rounds are noisy; `LOAD_RECORDS=1000000` (≈ 2 GB of
//! mock-broker memory per path) gives steadier figures, especially for
//! consume, where the proxy's cost grows with the size of Fetch responses.
//!
//! Real Kafka (`SWITCHYARD_BENCH_KAFKA=1`). A and B are one-broker KRaft
//! clusters of the Kafka version the integration tests use, started once
//! through the tests' harness (`tests/common/kafka.rs`, jars cached in
//! `~/.cache/switchyard`; needs Java and, the first time, Maven) with the
//! JVM options of Kafka's own start scripts (1 GiB heap, G1, full JIT).
//! Every round uses topics of its own (replication factor 1, created in
//! both clusters), and one topic per path holds a whole produce run: a real
//! broker keeps what it is given. The warm-up rounds let the brokers' JIT
//! compile the produce and fetch paths before anything is counted. The
//! brokers' logs are on the same disk as the async journal.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{env_or, median, Clusters, KafkaPair};

use anyhow::{bail, Context as _};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::util::Timeout;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use switchyard::config::MirrorMode;
use switchyard::demo::loopback_config;
use switchyard::Proxy;

/// Brokers per mock cluster (a real cluster has one).
const MOCK_BROKERS: i32 = 3;
const PARTITIONS: i32 = 6;
const RECORD_BYTES: usize = 1024;
/// Per partition per mock topic; see the sizing note above.
const RECORDS_PER_PARTITION: usize = 4000;
const MOCK_RECORDS_PER_TOPIC: usize = RECORDS_PER_PARTITION * PARTITIONS as usize;
const LATENCY_RATE: u64 = 2000;
/// Log filter unless `RUST_LOG` is set. The mirror's retry warnings are
/// left out: the first write to each partition of a topic B's client has
/// not looked up yet fails once ("no leader known"), and the tool counts
/// retries itself.
const DEFAULT_LOG: &str = "warn,switchyard::mirror=error";
/// Records sent (and flushed) through a fresh producer before the clock
/// starts, so that connections and metadata are in place.
const WARMUP_RECORDS: usize = 600;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Path {
    Direct,
    /// A plain TCP relay in front of A (real Kafka only).
    Relay,
    Proxy,
    MirrorSync,
    MirrorAsync,
}

const PATHS: [Path; 5] = [
    Path::Direct,
    Path::Relay,
    Path::Proxy,
    Path::MirrorSync,
    Path::MirrorAsync,
];

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::Relay => "l4-relay",
            Path::Proxy => "proxy",
            Path::MirrorSync => "mirror-sync",
            Path::MirrorAsync => "mirror-async",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The proxy's mirror mode while this path runs.
    fn mirror_mode(self) -> MirrorMode {
        match self {
            Path::Direct | Path::Relay | Path::Proxy => MirrorMode::Off,
            Path::MirrorSync => MirrorMode::Sync,
            Path::MirrorAsync => MirrorMode::Async,
        }
    }

    fn mirrored(self) -> bool {
        self.mirror_mode() != MirrorMode::Off
    }
}

/// One round's numbers for one path; NaN where not measured.
#[derive(Clone, Copy)]
struct Sample {
    produce_mb_s: f64,
    produce_rec_s: f64,
    consume_mb_s: f64,
    consume_rec_s: f64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    /// Seconds until B had everything after the throughput run.
    catch_up_produce_s: f64,
    /// Seconds until B had everything after the latency run.
    catch_up_latency_s: f64,
    /// Most records acknowledged by A and not yet in B during each run.
    peak_lag_produce: f64,
    peak_lag_latency: f64,
    /// Mirror write retries while warming up, and during the timed runs.
    warm_up_retries: f64,
    timed_retries: f64,
    /// fsync latency (p50, p90, max, us) sampled during the async runs.
    fsync_produce: (f64, f64, f64),
    fsync_latency: (f64, f64, f64),
}

impl Default for Sample {
    fn default() -> Sample {
        Sample {
            produce_mb_s: f64::NAN,
            produce_rec_s: f64::NAN,
            consume_mb_s: f64::NAN,
            consume_rec_s: f64::NAN,
            p50_us: f64::NAN,
            p90_us: f64::NAN,
            p99_us: f64::NAN,
            catch_up_produce_s: f64::NAN,
            catch_up_latency_s: f64::NAN,
            peak_lag_produce: f64::NAN,
            peak_lag_latency: f64::NAN,
            warm_up_retries: f64::NAN,
            timed_retries: f64::NAN,
            fsync_produce: (f64::NAN, f64::NAN, f64::NAN),
            fsync_latency: (f64::NAN, f64::NAN, f64::NAN),
        }
    }
}

// ---------------------------------------------------------------- producers

/// Counts delivery reports of the throughput producer.
#[derive(Default)]
struct Counting {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Counting {}

impl ProducerContext for Counting {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Records send-to-delivery-report latency per record.
#[derive(Default)]
struct Timing {
    micros: Mutex<Vec<u64>>,
    failed: AtomicU64,
}

impl ClientContext for Timing {}

impl ProducerContext for Timing {
    type DeliveryOpaque = Box<Instant>;

    fn delivery(&self, result: &DeliveryResult<'_>, sent: Box<Instant>) {
        let elapsed = sent.elapsed().as_micros() as u64;
        match result {
            Ok(_) => self
                .micros
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(elapsed),
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn producer_config(bootstrap: &str, linger_ms: u32) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("acks", "1")
        .set("compression.type", "none")
        .set("enable.idempotence", "false")
        .set("message.timeout.ms", "60000");
    config
}

/// Sends, waiting for room while the producer queue is full.
fn send_blocking<C>(
    producer: &ThreadedProducer<C>,
    mut record: BaseRecord<'_, (), [u8], C::DeliveryOpaque>,
) -> anyhow::Result<()>
where
    C: ProducerContext + 'static,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                record = back;
                std::thread::sleep(Duration::from_micros(500));
            }
            Err((e, _)) => bail!("cannot enqueue: {e}"),
        }
    }
}

/// Sends `count` records to `topic` and waits for all delivery reports.
fn warm_up<C>(
    producer: &ThreadedProducer<C>,
    topic: &str,
    payload: &[u8],
    count: usize,
    opaque: impl Fn() -> C::DeliveryOpaque,
) -> anyhow::Result<()>
where
    C: ProducerContext + 'static,
{
    for i in 0..count {
        let record = BaseRecord::with_opaque_to(topic, opaque())
            .partition((i % PARTITIONS as usize) as i32)
            .payload(payload);
        send_blocking(producer, record)?;
    }
    producer.flush(Timeout::After(Duration::from_secs(60)))?;
    Ok(())
}

/// Sends one record to every partition of every topic in `topics` and
/// waits for the delivery reports.
fn touch<C>(
    producer: &ThreadedProducer<C>,
    topics: &[String],
    payload: &[u8],
    opaque: impl Fn() -> C::DeliveryOpaque,
) -> anyhow::Result<()>
where
    C: ProducerContext + 'static,
{
    for topic in topics {
        for p in 0..PARTITIONS {
            let record = BaseRecord::with_opaque_to(topic, opaque())
                .partition(p)
                .payload(payload);
            send_blocking(producer, record)?;
        }
    }
    producer.flush(Timeout::After(Duration::from_secs(60)))?;
    Ok(())
}

struct Rate {
    records: usize,
    bytes: u64,
    seconds: f64,
    /// Seconds until the first record arrived (consume only).
    first_after: f64,
}

impl Rate {
    fn mb_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds
    }
    fn rec_s(&self) -> f64 {
        self.records as f64 / self.seconds
    }
}

/// `ready` runs once warm-up is over, right before the clock starts.
fn produce_throughput(
    bootstrap: &str,
    warm_topic: &str,
    topics: &[String],
    records: usize,
    records_per_topic: usize,
    ready: &mut dyn FnMut(),
) -> anyhow::Result<Rate> {
    let payload = vec![b'x'; RECORD_BYTES];
    let producer: ThreadedProducer<Counting> =
        producer_config(bootstrap, 5).create_with_context(Counting::default())?;
    warm_up(&producer, warm_topic, &payload, WARMUP_RECORDS, || ())?;
    touch(&producer, topics, &payload, || ())?;
    let context = producer.context();
    context.ok.store(0, Ordering::Relaxed);
    context.failed.store(0, Ordering::Relaxed);

    ready();
    let started = Instant::now();
    for i in 0..records {
        let topic = &topics[i / records_per_topic];
        let record = BaseRecord::to(topic)
            .partition((i % PARTITIONS as usize) as i32)
            .payload(&payload[..]);
        send_blocking(&producer, record)?;
    }
    producer.flush(Timeout::After(Duration::from_secs(120)))?;
    let seconds = started.elapsed().as_secs_f64();

    let ok = context.ok.load(Ordering::Relaxed) as usize;
    let failed = context.failed.load(Ordering::Relaxed);
    if failed > 0 || ok != records {
        let first = context
            .first_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        bail!("{ok} of {records} records acknowledged, {failed} failed (first error: {first:?})");
    }
    Ok(Rate {
        records,
        bytes: (records * RECORD_BYTES) as u64,
        seconds,
        first_after: 0.0,
    })
}

/// Reads every partition of `topics` from the beginning: the `records` of
/// the produce run plus the one record per partition that `touch` sent.
fn consume_throughput(bootstrap: &str, topics: &[String], records: usize) -> anyhow::Result<Rate> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("group.id", "load-bench")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        for p in 0..PARTITIONS {
            assignment.add_partition_offset(topic, p, Offset::Beginning)?;
        }
    }
    let records = records + topics.len() * PARTITIONS as usize;

    // Leaders known before assign(): otherwise librdkafka starts each
    // partition's offset lookup on its internal broker, and moving it to the
    // leader re-queues the lookup 500 ms later ("migrating to new broker"),
    // a fixed stall that would swamp the transfer itself.
    consumer.fetch_metadata(None, Duration::from_secs(10))?;
    let started = Instant::now();
    consumer.assign(&assignment)?;
    let deadline = started + Duration::from_secs(180);
    let (mut count, mut bytes, mut first_after) = (0usize, 0u64, 0.0);
    while count < records {
        if Instant::now() > deadline {
            bail!("consumed only {count} of {records} records in 180 s");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                if count == 0 {
                    first_after = started.elapsed().as_secs_f64();
                }
                count += 1;
                bytes += message.payload_len() as u64;
            }
            Some(Err(e)) => bail!("consume failed after {count} records: {e}"),
            None => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Rate {
        records: count,
        bytes,
        seconds,
        first_after,
    })
}

/// p50, p90, p99 in microseconds. `ready` runs once warm-up is over, right
/// before the clock starts.
fn produce_latency(
    bootstrap: &str,
    warm_topic: &str,
    topic: &str,
    seconds: u64,
    ready: &mut dyn FnMut(),
) -> anyhow::Result<(f64, f64, f64)> {
    let payload = vec![b'y'; RECORD_BYTES];
    let producer: ThreadedProducer<Timing> =
        producer_config(bootstrap, 0).create_with_context(Timing::default())?;
    warm_up(&producer, warm_topic, &payload, 200, || {
        Box::new(Instant::now())
    })?;
    touch(&producer, &[topic.to_owned()], &payload, || {
        Box::new(Instant::now())
    })?;
    producer
        .context()
        .micros
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clear();

    let count = (LATENCY_RATE * seconds) as usize;
    let interval = Duration::from_nanos(1_000_000_000 / LATENCY_RATE);
    ready();
    let started = Instant::now();
    for i in 0..count {
        // Open loop: each record has its slot; a late sender does not
        // push the later slots back.
        let slot = started + interval * i as u32;
        let now = Instant::now();
        if slot > now {
            std::thread::sleep(slot - now);
        }
        let record = BaseRecord::with_opaque_to(topic, Box::new(Instant::now()))
            .partition((i % PARTITIONS as usize) as i32)
            .payload(&payload[..]);
        send_blocking(&producer, record)?;
    }
    producer.flush(Timeout::After(Duration::from_secs(60)))?;

    let failed = producer.context().failed.load(Ordering::Relaxed);
    let mut micros = std::mem::take(
        &mut *producer
            .context()
            .micros
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    if failed > 0 || micros.len() != count {
        bail!(
            "latency run: {} of {count} acknowledged, {failed} failed",
            micros.len()
        );
    }
    micros.sort_unstable();
    let pct = |q: f64| micros[((micros.len() - 1) as f64 * q).round() as usize] as f64;
    Ok((pct(0.50), pct(0.90), pct(0.99)))
}

// ------------------------------------------------------------------ mirror

/// The mirror's records acknowledged by A but not yet confirmed by B.
fn mirror_lag(proxy: &Proxy) -> i64 {
    proxy.shared().mirror().map_or(0, |m| m.lag_records())
}

/// Waits until the mirror has nothing outstanding, at most `limit`; returns
/// how long that took and the lag left (0 unless the limit was hit).
fn catch_up(proxy: &Proxy, limit: Duration) -> (Duration, i64) {
    let started = Instant::now();
    loop {
        let lag = mirror_lag(proxy);
        if lag == 0 || started.elapsed() >= limit {
            return (started.elapsed(), lag);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Samples the mirror's lag every few milliseconds while a timed run goes
/// on, keeping the peak.
struct LagWatch {
    stop: Arc<AtomicBool>,
    peak: std::thread::JoinHandle<i64>,
}

impl LagWatch {
    fn start(proxy: &Proxy) -> Option<LagWatch> {
        let mirror = proxy.shared().mirror().cloned()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let peak = std::thread::spawn(move || {
            let mut peak = 0;
            while !stopped.load(Ordering::Relaxed) {
                let lag: i64 = mirror.status().values().map(|s| s.lag_records).sum();
                peak = peak.max(lag);
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        Some(LagWatch { stop, peak })
    }

    fn stop(self) -> i64 {
        self.stop.store(true, Ordering::Relaxed);
        self.peak.join().unwrap_or(-1)
    }
}

/// Mirror write retries so far on `topics`.
fn mirror_retries(proxy: &Proxy, topics: &[String]) -> u64 {
    proxy.shared().mirror().map_or(0, |m| {
        m.status()
            .iter()
            .filter(|((topic, _), _)| topics.contains(topic))
            .map(|(_, s)| s.retries)
            .sum()
    })
}

/// What the mirror reports for one path's topics, apart from retries:
/// anything but zeros and no errors is odd for a healthy pair of mock
/// clusters.
fn mirror_health(proxy: &Proxy, topics: &[String]) -> Vec<String> {
    let Some(mirror) = proxy.shared().mirror() else {
        return vec!["the proxy has no mirror".into()];
    };
    let mut odd = Vec::new();
    let (mut divergent, mut late, mut batches) = (0i64, 0u64, 0u64);
    for ((topic, partition), s) in mirror.status() {
        if !topics.contains(&topic) {
            continue;
        }
        divergent += s.divergent_records;
        late += s.late_batches;
        batches += s.mirrored_batches;
        if s.lag_records != 0 {
            odd.push(format!(
                "{topic}-{partition}: lag {} records",
                s.lag_records
            ));
        }
        if s.topic_missing {
            odd.push(format!("{topic}-{partition}: topic missing in B"));
        }
        if let Some(e) = s.last_error {
            odd.push(format!("{topic}-{partition}: last error {e}"));
        }
    }
    if divergent != 0 {
        odd.push(format!(
            "{divergent} records skipped as not from switchyard"
        ));
    }
    if late > 0 {
        odd.push(format!("{late} batches mirrored out of order"));
    }
    if batches == 0 {
        odd.push("no batch mirrored at all".into());
    }
    odd
}

/// Partitions whose high watermark differs between A and B.
fn watermark_mismatches(a: &str, b: &str, topics: &[String]) -> anyhow::Result<Vec<String>> {
    let client = |bootstrap: &str| -> anyhow::Result<BaseConsumer> {
        Ok(ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("broker.address.family", "v4")
            .set("group.id", "load-bench-check")
            .create()?)
    };
    let (a, b) = (client(a)?, client(b)?);
    let timeout = Duration::from_secs(10);
    let mut mismatches = Vec::new();
    for topic in topics {
        for p in 0..PARTITIONS {
            let (_, a_high) = a.fetch_watermarks(topic, p, timeout)?;
            let (_, b_high) = b.fetch_watermarks(topic, p, timeout)?;
            if a_high != b_high {
                mismatches.push(format!("{topic}-{p}: A {a_high}, B {b_high}"));
            }
        }
    }
    Ok(mismatches)
}

/// Times `count` fsyncs of 1 KiB appends to a file in a fresh temporary
/// directory (the file system the proxy's state directory is on), `pause`
/// apart, until `stop` is set; returns the microseconds, sorted.
fn fsync_samples(count: usize, pause: Duration, stop: &AtomicBool) -> std::io::Result<Vec<f64>> {
    use std::io::Write as _;
    let dir = tempfile::tempdir()?;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.path().join("fsync-probe"))?;
    let record = [0u8; RECORD_BYTES + 100];
    let mut micros = Vec::new();
    while micros.len() < count && !stop.load(Ordering::Relaxed) {
        file.write_all(&record)?;
        let started = Instant::now();
        file.sync_data()?;
        micros.push(started.elapsed().as_secs_f64() * 1e6);
        std::thread::sleep(pause);
    }
    micros.sort_by(f64::total_cmp);
    Ok(micros)
}

/// p50, p90, p99 of sorted values; NaN when there are none.
fn percentiles(sorted: &[f64]) -> (f64, f64, f64) {
    if sorted.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    let pct = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    (pct(0.50), pct(0.90), pct(0.99))
}

/// fsync latency, sampled 20 times a second in the background while an
/// async mirror run goes on: the async journal's acknowledgements wait for
/// an fsync, and on a shared disk its cost swings with other processes'
/// writes (ext4 commits their dirty data too).
struct FsyncWatch {
    stop: Arc<AtomicBool>,
    samples: std::thread::JoinHandle<std::io::Result<Vec<f64>>>,
}

impl FsyncWatch {
    fn start() -> FsyncWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let samples = std::thread::spawn(move || {
            fsync_samples(usize::MAX, Duration::from_millis(50), &stopped)
        });
        FsyncWatch { stop, samples }
    }

    /// p50, p90 and the largest, in microseconds.
    fn stop(self) -> (f64, f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        match self.samples.join() {
            Ok(Ok(micros)) if !micros.is_empty() => {
                let (p50, p90, _) = percentiles(&micros);
                (p50, p90, micros[micros.len() - 1])
            }
            _ => (f64::NAN, f64::NAN, f64::NAN),
        }
    }
}

// ------------------------------------------------------------------- rounds

/// Records one produce topic takes (see the sizing note above).
fn records_per_topic(clusters: &Clusters<'_>) -> usize {
    match clusters {
        Clusters::Mock { .. } => MOCK_RECORDS_PER_TOPIC,
        Clusters::Kafka(_) => usize::MAX,
    }
}

struct Round<'k> {
    clusters: Clusters<'k>,
    relay: Option<String>,
    proxy: Proxy,
    _state: tempfile::TempDir,
    catch_up_limit: Duration,
}

impl Round<'_> {
    fn bootstrap(&self, path: Path) -> String {
        match path {
            Path::Direct => self.clusters.a(),
            Path::Relay => self.relay.clone().expect("a relay runs with real Kafka"),
            _ => self.proxy.bootstrap_addr().to_string(),
        }
    }

    fn set_mode(&self, path: Path) -> anyhow::Result<()> {
        self.proxy
            .shared()
            .set_mirror_mode(path.mirror_mode())
            .map_err(|e| anyhow::anyhow!("cannot set mirror mode {:?}: {e}", path.mirror_mode()))?;
        Ok(())
    }

    /// Right before a clock starts: waits until the mirror has shipped what
    /// the warm-up sent (async mode acknowledged it before B had it) and
    /// starts watching the lag.
    fn ready(&self, path: Path, topics: &[String]) -> Ready {
        let (_, lag) = catch_up(&self.proxy, self.catch_up_limit);
        if lag != 0 {
            eprintln!("  warning: {lag} warm-up records still not in B; starting anyway");
        }
        Ready {
            retries: mirror_retries(&self.proxy, topics),
            watch: path
                .mirrored()
                .then(|| LagWatch::start(&self.proxy))
                .flatten(),
            fsync: (path == Path::MirrorAsync).then(FsyncWatch::start),
        }
    }

    /// After a mirror run: waits for B to catch up; returns the seconds it
    /// took (NaN if it did not within the limit) and the peak lag during
    /// the run.
    fn settle(
        &self,
        path: Path,
        what: &str,
        round: usize,
        watch: Option<LagWatch>,
        notes: &mut Vec<String>,
    ) -> (f64, f64) {
        let peak = watch.map_or(f64::NAN, |w| w.stop() as f64);
        if !path.mirrored() {
            return (f64::NAN, f64::NAN);
        }
        let at_end = mirror_lag(&self.proxy);
        let (took, lag) = catch_up(&self.proxy, self.catch_up_limit);
        let p = path.label();
        if lag == 0 {
            eprintln!(
                "  round {round} {p:>12}: B's lag peaked at {peak} records during the {what} \
                 run, {at_end} at its end; caught up {:.1} ms later",
                took.as_secs_f64() * 1e3
            );
            (took.as_secs_f64(), peak)
        } else {
            let note = format!(
                "round {round} {p}: {lag} records still not in B {:.0} s after the {what} run",
                took.as_secs_f64()
            );
            eprintln!("  {note}");
            notes.push(note);
            (f64::NAN, peak)
        }
    }
}

/// What `Round::ready` saw right before a clock started.
struct Ready {
    retries: u64,
    watch: Option<LagWatch>,
    fsync: Option<FsyncWatch>,
}

/// Every topic one path uses.
struct Topics {
    load: Vec<String>,
    warm: String,
    latency: String,
    latency_warm: String,
}

impl Topics {
    /// Names carry the round: real clusters serve every round.
    fn new(round: usize, path: Path, records: usize, records_per_topic: usize) -> Topics {
        let p = path.label();
        Topics {
            load: (0..records.div_ceil(records_per_topic))
                .map(|t| format!("r{round}-load-{p}-{t}"))
                .collect(),
            warm: format!("r{round}-warm-{p}"),
            latency: format!("r{round}-latency-{p}"),
            latency_warm: format!("r{round}-latency-warm-{p}"),
        }
    }

    fn all(&self) -> Vec<String> {
        let mut all = self.load.clone();
        all.extend([
            self.warm.clone(),
            self.latency.clone(),
            self.latency_warm.clone(),
        ]);
        all
    }
}

struct Volumes {
    records: usize,
    mirror_records: usize,
}

impl Volumes {
    fn of(&self, path: Path) -> usize {
        if path.mirrored() {
            self.mirror_records
        } else {
            self.records
        }
    }
}

/// The paths measured: the relay only where it can be placed (a real
/// broker advertises it; the mock cluster cannot).
fn paths(kafka: Option<&KafkaPair>) -> Vec<Path> {
    PATHS
        .into_iter()
        .filter(|&p| p != Path::Relay || kafka.is_some_and(|k| k.relay_a().is_some()))
        .collect()
}

fn run_round(
    rt: &tokio::runtime::Runtime,
    kafka: Option<&KafkaPair>,
    round: usize,
    volumes: &Volumes,
    latency_secs: u64,
    catch_up_limit: Duration,
    notes: &mut Vec<String>,
) -> anyhow::Result<[Sample; 5]> {
    // Every path takes every position in turn.
    let paths = paths(kafka);
    let order: Vec<Path> = (0..paths.len())
        .map(|i| paths[(i + round) % paths.len()])
        .collect();
    let clusters = Clusters::start(kafka, MOCK_BROKERS)?;
    let per_topic = records_per_topic(&clusters);
    let topics: Vec<Topics> = PATHS
        .iter()
        .map(|&path| Topics::new(round, path, volumes.of(path), per_topic))
        .collect();
    let topics_of = |path: Path| &topics[path.index()];

    for t in &topics {
        for topic in t.all() {
            clusters.create_topic(&topic, PARTITIONS)?;
        }
    }
    let state = tempfile::tempdir()?;
    let config = loopback_config(&clusters.a(), Some(&clusters.b()), state.path());
    let proxy = rt.block_on(Proxy::start(config))?;
    let env = Round {
        clusters,
        relay: kafka.and_then(|k| k.relay_a()),
        proxy,
        _state: state,
        catch_up_limit,
    };

    let mut samples = [Sample::default(); 5];

    for &path in &order {
        let p = path.label();
        env.set_mode(path)?;
        let t = topics_of(path);
        let all = t.all();
        let before = mirror_retries(&env.proxy, &all);
        let mut ready = Ready {
            retries: before,
            watch: None,
            fsync: None,
        };
        let rate = produce_throughput(
            &env.bootstrap(path),
            &t.warm,
            &t.load,
            volumes.of(path),
            per_topic,
            &mut || ready = env.ready(path, &all),
        )
        .with_context(|| format!("produce throughput, {p}"))?;
        let fsync = ready.fsync.take().map(FsyncWatch::stop);
        eprintln!(
            "  round {round} {p:>12}: produce {:8.1} MB/s {:9.0} rec/s ({:.2} s)",
            rate.mb_s(),
            rate.rec_s(),
            rate.seconds
        );
        let s = &mut samples[path.index()];
        s.produce_mb_s = rate.mb_s();
        s.produce_rec_s = rate.rec_s();
        if let Some(f) = fsync {
            s.fsync_produce = f;
            eprintln!(
                "  round {round} {p:>12}: fsync during the produce run: p50 {:.0} us, p90 {:.0} \
                 us, max {:.0} us",
                f.0, f.1, f.2
            );
        }
        (s.catch_up_produce_s, s.peak_lag_produce) =
            env.settle(path, "produce", round, ready.watch.take(), notes);
        if path.mirrored() {
            s.warm_up_retries = (ready.retries - before) as f64;
            s.timed_retries = (mirror_retries(&env.proxy, &all) - ready.retries) as f64;
        }
    }
    for &path in order.iter().filter(|p| !p.mirrored()) {
        let p = path.label();
        env.set_mode(path)?;
        let rate = consume_throughput(
            &env.bootstrap(path),
            &topics_of(path).load,
            volumes.of(path),
        )
        .with_context(|| format!("consume throughput, {p}"))?;
        eprintln!(
            "  round {round} {p:>12}: consume {:8.1} MB/s {:9.0} rec/s ({:.2} s, first record after {:.3} s)",
            rate.mb_s(),
            rate.rec_s(),
            rate.seconds,
            rate.first_after
        );
        let s = &mut samples[path.index()];
        s.consume_mb_s = rate.mb_s();
        s.consume_rec_s = rate.rec_s();
    }
    for &path in &order {
        let p = path.label();
        env.set_mode(path)?;
        let t = topics_of(path);
        let all = t.all();
        let before = mirror_retries(&env.proxy, &all);
        let mut ready = Ready {
            retries: before,
            watch: None,
            fsync: None,
        };
        let (p50, p90, p99) = produce_latency(
            &env.bootstrap(path),
            &t.latency_warm,
            &t.latency,
            latency_secs,
            &mut || ready = env.ready(path, &all),
        )
        .with_context(|| format!("produce latency, {p}"))?;
        let fsync = ready.fsync.take().map(FsyncWatch::stop);
        eprintln!(
            "  round {round} {p:>12}: latency p50 {p50:.0} us, p90 {p90:.0} us, p99 {p99:.0} us"
        );
        let s = &mut samples[path.index()];
        s.p50_us = p50;
        s.p90_us = p90;
        s.p99_us = p99;
        if let Some(f) = fsync {
            s.fsync_latency = f;
            eprintln!(
                "  round {round} {p:>12}: fsync during the latency run: p50 {:.0} us, p90 {:.0} \
                 us, max {:.0} us",
                f.0, f.1, f.2
            );
        }
        (s.catch_up_latency_s, s.peak_lag_latency) =
            env.settle(path, "latency", round, ready.watch.take(), notes);
        if path.mirrored() {
            s.warm_up_retries += (ready.retries - before) as f64;
            s.timed_retries += (mirror_retries(&env.proxy, &all) - ready.retries) as f64;
        }
    }

    // Integrity: B must hold exactly what A holds on every mirrored topic.
    for path in PATHS.into_iter().filter(|p| p.mirrored()) {
        let p = path.label();
        let all = topics_of(path).all();
        let mismatches = watermark_mismatches(&env.clusters.a(), &env.clusters.b(), &all)?;
        if mismatches.is_empty() {
            eprintln!(
                "  round {round} {p:>12}: B's high watermarks equal A's on all {} partitions",
                all.len() * PARTITIONS as usize
            );
        }
        let s = &samples[path.index()];
        eprintln!(
            "  round {round} {p:>12}: mirror write retries: {} while warming up, {} during the \
             timed runs",
            s.warm_up_retries, s.timed_retries
        );
        let mut odd = mirror_health(&env.proxy, &all);
        odd.extend(mismatches);
        if s.timed_retries > 0.0 {
            odd.push(format!(
                "{} mirror write retries during the timed runs",
                s.timed_retries
            ));
        }
        for o in odd {
            let note = format!("round {round} {p}: {o}");
            eprintln!("  {note}");
            notes.push(note);
        }
    }

    let Round {
        clusters, proxy, ..
    } = env;
    rt.block_on(proxy.shutdown(Duration::from_secs(2)));
    drop(clusters);
    Ok(samples)
}

/// Table row: name, how to read it from a sample, decimals shown.
type Metric = (&'static str, fn(&Sample) -> f64, usize);

/// A number, or "-" when it was not measured.
fn cell(value: f64, decimals: usize, width: usize) -> String {
    if value.is_finite() {
        format!("{value:>width$.decimals$}")
    } else {
        format!("{:>width$}", "-")
    }
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let real_kafka = common::real_kafka();
    let records: usize = env_or("LOAD_RECORDS", if real_kafka { 100_000 } else { 200_000 });
    let mirror_records: usize = env_or("LOAD_MIRROR_RECORDS", records);
    let rounds: usize = env_or("LOAD_ROUNDS", 3).max(1);
    let warm_up_rounds: usize = env_or("LOAD_WARMUP_ROUNDS", usize::from(real_kafka));
    let latency_secs: u64 = env_or("LOAD_LATENCY_SECS", 5).max(1);
    let catch_up_secs: u64 = env_or("LOAD_CATCH_UP_SECS", 60);
    let proxy_threads: usize = env_or("LOAD_PROXY_THREADS", 0);
    if records == 0 || mirror_records == 0 {
        bail!("LOAD_RECORDS and LOAD_MIRROR_RECORDS must be positive");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG)),
        )
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();

    // The proxy runs on this runtime's worker threads; the clients below are
    // blocking librdkafka handles driven from the main thread, which also
    // owns the (non-Send) mock clusters.
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if proxy_threads > 0 {
        builder.worker_threads(proxy_threads);
    }
    let rt = builder.enable_all().build()?;

    let kafka = real_kafka
        .then(|| KafkaPair::start(Some(&rt)))
        .transpose()
        .context("starting the Kafka clusters")?;
    let clusters = Clusters::describe(kafka.as_ref(), MOCK_BROKERS);
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "switchyard load: {records} records ({mirror_records} when mirroring) x {RECORD_BYTES} B \
         per produce run, {PARTITIONS} partitions per topic, {clusters}, {rounds} round(s) after \
         {warm_up_rounds} warm-up round(s), latency {LATENCY_RATE} rec/s for {latency_secs} s, \
         {cpus} CPU(s)"
    );
    let (f50, f90, f99) = percentiles(&fsync_samples(
        200,
        Duration::ZERO,
        &AtomicBool::new(false),
    )?);
    eprintln!(
        "fsync of a 1 KiB append in the temporary directory: p50 {f50:.0} us, p90 {f90:.0} us, \
         p99 {f99:.0} us"
    );
    let volumes = Volumes {
        records,
        mirror_records,
    };
    let started = Instant::now();
    let mut samples: Vec<[Sample; 5]> = Vec::new();
    let mut notes = Vec::new();
    for round in 0..warm_up_rounds + rounds {
        if round < warm_up_rounds {
            eprintln!("round {round} warms up the brokers; its figures are not counted");
        }
        let s = run_round(
            &rt,
            kafka.as_ref(),
            round,
            &volumes,
            latency_secs,
            Duration::from_secs(catch_up_secs),
            &mut notes,
        )
        .with_context(|| format!("round {round}"))?;
        if round >= warm_up_rounds {
            samples.push(s);
        }
    }
    let elapsed = started.elapsed();

    let metrics: [Metric; 7] = [
        ("produce MB/s", |s| s.produce_mb_s, 1),
        ("produce records/s", |s| s.produce_rec_s, 0),
        ("produce p50 us", |s| s.p50_us, 0),
        ("produce p90 us", |s| s.p90_us, 0),
        ("produce p99 us", |s| s.p99_us, 0),
        ("consume MB/s", |s| s.consume_mb_s, 1),
        ("consume records/s", |s| s.consume_rec_s, 0),
    ];
    let med = |path: Path, get: fn(&Sample) -> f64| {
        median(samples.iter().map(|s| get(&s[path.index()])).collect())
    };
    // Ratio columns: (numerator, denominator).
    let paths = paths(kafka.as_ref());
    let mut ratios = vec![
        (Path::Proxy, Path::Direct),
        (Path::MirrorSync, Path::Proxy),
        (Path::MirrorAsync, Path::Proxy),
        (Path::MirrorSync, Path::Direct),
        (Path::MirrorAsync, Path::Direct),
    ];
    if paths.contains(&Path::Relay) {
        ratios.splice(
            0..0,
            [(Path::Relay, Path::Direct), (Path::Proxy, Path::Relay)],
        );
    }
    let short = |path: Path| match path {
        Path::MirrorSync => "sync",
        Path::MirrorAsync => "async",
        Path::Relay => "relay",
        other => other.label(),
    };

    println!();
    println!("{clusters}, {cpus} CPU(s) shared by brokers, clients and switchyard");
    println!(
        "median of {rounds} round(s); l4-relay = a TCP relay copying bytes (real Kafka only); \
         proxy = switchyard passthrough (mirror off); mirror-* = switchyard mirroring to \
         cluster B"
    );
    println!(
        "{records} records per produce run direct/proxy, {mirror_records} mirrored; ratio columns \
         divide the medians (for us rows, > 1 is slower)"
    );
    let mut header = format!("{:<19}", "metric");
    for &path in &paths {
        header += &format!(
            "{:>width$}",
            path.label(),
            width = path.label().len().max(9) + 2
        );
    }
    for &(n, d) in &ratios {
        header += &format!("{:>14}", format!("{}/{}", short(n), short(d)));
    }
    println!("{header}");
    for (name, get, decimals) in metrics {
        let mut line = format!("{name:<19}");
        for &path in &paths {
            line += &cell(med(path, get), decimals, path.label().len().max(9) + 2);
        }
        for &(n, d) in &ratios {
            line += &cell(med(n, get) / med(d, get), 2, 14);
        }
        println!("{line}");
    }
    println!();
    for path in PATHS.into_iter().filter(|p| p.mirrored()) {
        let per_round = |get: fn(&Sample) -> f64| {
            samples
                .iter()
                .map(|s| cell(get(&s[path.index()]), 3, 0))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "{} (per round): peak lag during the produce run {} records, B caught up {} s \
             after it; peak lag during the latency run {} records, caught up {} s after it; \
             mirror write retries while warming up {}, during timed runs {}",
            path.label(),
            per_round(|s| s.peak_lag_produce).replace(".000", ""),
            per_round(|s| s.catch_up_produce_s),
            per_round(|s| s.peak_lag_latency).replace(".000", ""),
            per_round(|s| s.catch_up_latency_s),
            per_round(|s| s.warm_up_retries).replace(".000", ""),
            per_round(|s| s.timed_retries).replace(".000", ""),
        );
    }
    println!(
        "fsync of a 1 KiB append in the state directory's file system (the async journal pays \
         one per acknowledgement, group-committed): p50 {f50:.0} us, p90 {f90:.0} us, p99 \
         {f99:.0} us before the rounds"
    );
    let fsync_rounds = |get: fn(&Sample) -> (f64, f64, f64)| {
        samples
            .iter()
            .map(|s| {
                let (p50, p90, max) = get(&s[Path::MirrorAsync.index()]);
                format!(
                    "{}/{}/{}",
                    cell(p50, 0, 0),
                    cell(p90, 0, 0),
                    cell(max, 0, 0)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "  sampled (p50/p90/max us, per round) during the async produce runs: {}; during the \
         async latency runs: {}",
        fsync_rounds(|s| s.fsync_produce),
        fsync_rounds(|s| s.fsync_latency),
    );
    println!();
    if kafka.is_none() {
        println!("reference (spec): a plain TCP relay (haproxy, tcp mode) on this 2-core machine");
        println!("reached 0.64x direct on produce, 0.75x on consume, and about 2x direct p50.");
        println!();
    }
    if notes.is_empty() {
        println!("mirror checks: no lag left, no retries or errors, B equals A on every partition");
    } else {
        println!("noted during the run:");
        for note in &notes {
            println!("  {note}");
        }
    }
    println!("total run time {:.1} s", elapsed.as_secs_f64());
    Ok(())
}
