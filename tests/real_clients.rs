//! Five Kafka client implementations through a flip and a rollback on real
//! Apache Kafka: the Java client, franz-go, kafkajs, aiokafka and librdkafka
//! each produce (acks=all, idempotent but for kafkajs) and consume in a
//! group (synchronous commits) through switchyard while the clients are
//! moved from A to B and back, with no restart and no configuration change.
//! A holds 2000 records per partition before switchyard starts and its
//! leaders moved three times, so offsets and leader epochs differ between
//! A and B.
//!
//! The Java, Go, Node and Python clients run as child processes speaking the
//! protocol of tests/clients/README.md (built by tests/clients/build.sh);
//! librdkafka runs in-process on threads that report the same events
//! (tests/common/clients.rs).
//!
//! What each test checks: the client processes live through both moves and
//! exit 0 when told to stop; every acknowledged record is consumed; first
//! deliveries follow the order their partition stores them, which keeps
//! per-key order for idempotent producers; duplicates stay within a bound;
//! neither cluster stores a record twice and B holds A's live records in
//! A's order; every acknowledgement and every record consumed names the
//! offset where a cluster stores it. Each test prints a one-line summary
//! (`[summary] client=...`) and details (`[detail]`); the ignored tests are
//! scenarios that fail today, each with its reason. The drivers' logs, the
//! records and batch headers each cluster stores are kept in a temporary
//! directory after a failure (always with SWITCHYARD_KEEP_CLIENT_LOGS=1).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::clients::{
    consume_args, note, produce_args, Client, Driver, Events, Logs, Seen, Stopped,
};
use common::kafka::{ClusterSpec, KafkaCluster};
use common::real::{assert_b_mirrors_a, post_ok as post, wait_for_commits};
use common::*;
use futures::stream::{FuturesUnordered, StreamExt};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use switchyard::demo::workload::{check_against, StoredIndex};

// ------------------------------------------------------------------ setup

/// A with three brokers (leaders can move), B with one; both Kafka 4.1.1,
/// shared by the tests of this file, each using its own topic and groups.
fn clusters() -> &'static (KafkaCluster, KafkaCluster) {
    static CLUSTERS: OnceLock<(KafkaCluster, KafkaCluster)> = OnceLock::new();
    CLUSTERS.get_or_init(|| {
        let a = std::thread::spawn(|| KafkaCluster::start(ClusterSpec::new(3)));
        let b = KafkaCluster::start(ClusterSpec::new(1)).expect("cluster B starts");
        let a = a.join().unwrap().expect("cluster A starts");
        (a, b)
    })
}

/// One scenario at a time: each runs up to six JVMs, Node or Python
/// processes beside the four brokers on a 2-core machine, and the acks'
/// gaps it reports should be switchyard's, not the scheduler's.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PARTITIONS: i32 = 4;
const HISTORY_PER_PARTITION: u64 = 2000;
/// Records per second each producer sends.
const RATE: u32 = 200;
/// Keys per producer: enough that every partition gets records whatever
/// the client's partitioner (a partition nothing was mirrored to holds the
/// flip back: a committed offset there does not translate).
const KEYS: u32 = 32;
/// Live records acknowledged before the flip, between flip and rollback,
/// and after the rollback.
const PHASE: usize = 1000;
/// Duplicates a consumer may read across the two moves. Every driver
/// commits synchronously after handling each poll and on revocation, and
/// switchyard makes members revoke (answering their heartbeats
/// REBALANCE_IN_PROGRESS while the fence is up) before it settles the
/// group's offsets, so a clean move re-delivers nothing. What a client may
/// still re-read is what one poll handed it after its last successful
/// commit: at 200 records/s and a consumer that keeps up, a poll holds a
/// few records, and a commit that fails at the moment the coordinator
/// moves (its connection to the old primary is closed) leaves at most the
/// records of the last 1 s of polls uncommitted. So: 2 moves x 200.
const MAX_DUPLICATES: usize = 2 * RATE as usize;

/// Writes history straight into A (not through switchyard): key
/// "history-P" on partition P only, 2000 records each, so that A's live
/// records start at offset 2000 in every partition while B's start at 0.
async fn preload_history(a: &KafkaCluster, topic: &str) -> Vec<RecordRef> {
    let producer: FutureProducer = workload::producer_config(&a.bootstrap())
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "20")
        .create()
        .unwrap();
    let producer = &producer;
    let mut deliveries = FuturesUnordered::new();
    for partition in 0..PARTITIONS {
        for seq in 0..HISTORY_PER_PARTITION {
            deliveries.push(async move {
                let key = format!("history-{partition}");
                let value = workload::record_value(&key, seq);
                let record = FutureRecord::to(topic)
                    .partition(partition)
                    .key(&key)
                    .payload(&value);
                let delivery = producer
                    .send(record, Duration::from_secs(60))
                    .await
                    .map_err(|(e, _)| e)
                    .expect("history record acknowledged");
                RecordRef {
                    key,
                    seq,
                    partition: delivery.partition,
                    offset: delivery.offset,
                }
            });
        }
    }
    let mut acked = Vec::new();
    while let Some(record) = deliveries.next().await {
        acked.push(record);
    }
    acked
}

async fn status(admin: std::net::SocketAddr) -> Value {
    let (_, text) = http_get(admin, "/status").await;
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

// ------------------------------------------------------------------ checks

/// Writes what a cluster stores, one "partition offset key#seq" line per
/// record, next to the drivers' logs.
fn dump(path: &Path, stored: &BTreeMap<i32, Vec<StoredRecord>>) {
    let mut out = String::new();
    for (p, records) in stored {
        for r in records {
            let value = r.value.as_deref().map(String::from_utf8_lossy);
            let id = value
                .as_deref()
                .map_or("-", |v| v.rsplitn(2, '#').last().unwrap_or(v));
            out.push_str(&format!("{p} {} {id}\n", r.offset));
        }
    }
    std::fs::write(path, out).expect("dump");
}

/// Writes every batch header a cluster stores for `topic`, one
/// "partition base_offset records producer_id epoch base_sequence" line
/// per batch: under which producer id and sequence each write landed.
fn dump_batches(path: &Path, cluster: &KafkaCluster, topic: &str) {
    let mut out = String::new();
    for p in 0..PARTITIONS {
        match common::kafka::batch_headers(&cluster.bootstrap(), topic, p) {
            Ok(headers) => {
                for h in headers {
                    out.push_str(&format!(
                        "{p} {} {} {} {} {}\n",
                        h.base_offset,
                        h.records_count,
                        h.producer_id,
                        h.producer_epoch,
                        h.base_sequence
                    ));
                }
            }
            Err(e) => out.push_str(&format!("{p} error {e:#}\n")),
        }
    }
    std::fs::write(path, out).expect("dump");
}

/// Which cluster stores `record` at the partition and offset named: "A",
/// "B", "A+B" (both do, at the same offset), or None (neither: a wrong
/// offset).
fn stored_at(
    in_a: &BTreeMap<i32, Vec<StoredRecord>>,
    in_b: &BTreeMap<i32, Vec<StoredRecord>>,
    record: &Seen,
) -> Option<&'static str> {
    let value = workload::record_value(record.key.as_deref()?, u64::try_from(record.seq).ok()?);
    let holds = |stored: &BTreeMap<i32, Vec<StoredRecord>>| {
        stored.get(&record.partition).is_some_and(|records| {
            records
                .binary_search_by_key(&record.offset, |r| r.offset)
                .is_ok_and(|i| records[i].value.as_deref() == Some(value.as_bytes()))
        })
    };
    match (holds(in_a), holds(in_b)) {
        (true, true) => Some("A+B"),
        (true, false) => Some("A"),
        (false, true) => Some("B"),
        (false, false) => None,
    }
}

/// Records of `ids` that a partition of `stored` holds after a record of
/// the same key with a higher sequence (first copies only): a producer
/// that is not idempotent reorders its writes when it retries.
fn stored_key_inversions(
    stored: &BTreeMap<i32, Vec<StoredRecord>>,
    ids: &HashSet<(&str, u64)>,
) -> usize {
    let mut inversions = 0;
    for records in stored.values() {
        let mut highest: HashMap<String, u64> = HashMap::new();
        let mut seen = HashSet::new();
        for r in records {
            let Some((key, seq)) = r.value.as_deref().and_then(|v| {
                let text = std::str::from_utf8(v).ok()?;
                let mut parts = text.splitn(3, '#');
                Some((parts.next()?.to_owned(), parts.next()?.parse::<u64>().ok()?))
            }) else {
                continue;
            };
            if !ids.contains(&(key.as_str(), seq)) || !seen.insert((key.clone(), seq)) {
                continue;
            }
            let top = highest.entry(key).or_insert(seq);
            if seq < *top {
                inversions += 1;
            }
            *top = (*top).max(seq);
        }
    }
    inversions
}

/// How long after `moved` the consumer handed over its first record that
/// `wanted` accepts.
fn resumed_after(recs: &[Seen], moved: Instant, wanted: impl Fn(&Seen) -> bool) -> Option<u128> {
    recs.iter()
        .find(|r| r.at > moved && wanted(r))
        .map(|r| (r.at - moved).as_millis())
}

/// The longest wait between two acknowledgements, and when it ended.
fn longest_gap(acks: &[Seen]) -> (Duration, Option<Instant>) {
    let mut times: Vec<Instant> = acks.iter().map(|a| a.at).collect();
    times.sort();
    times
        .windows(2)
        .map(|w| (w[1] - w[0], Some(w[1])))
        .max_by_key(|(gap, _)| *gap)
        .unwrap_or((Duration::ZERO, None))
}

/// Error messages with how often each was printed, most frequent first.
fn error_counts(errors: &[(Instant, String)]) -> Vec<(usize, String)> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (_, e) in errors {
        *counts.entry(e.as_str()).or_default() += 1;
    }
    let mut counts: Vec<(usize, String)> =
        counts.into_iter().map(|(e, n)| (n, e.to_owned())).collect();
    counts.sort_by(|x, y| y.0.cmp(&x.0).then_with(|| x.1.cmp(&y.1)));
    counts
}

// ------------------------------------------------------------------ the scenario

struct Plan {
    client: Client,
    /// Names the topic and groups; the summary's client column.
    name: &'static str,
    /// Extra options of the group consumer.
    consumer: Vec<&'static str>,
    /// A Java `--assign` consumer of the same topic under its own group.
    assign_watcher: bool,
    /// The assign consumer must have read every record in the end.
    watcher_must_resume: bool,
    idempotent: bool,
    /// A partition the producer leaves alone (librdkafka only).
    idle_partition: Option<i32>,
}

impl Plan {
    fn subscribe(client: Client) -> Plan {
        Plan {
            client,
            name: client.name(),
            consumer: vec!["--assignor", client.assignor()],
            assign_watcher: false,
            watcher_must_resume: false,
            idempotent: true,
            idle_partition: None,
        }
    }
}

/// The topic of one scenario: A's history, and where it ends in each
/// partition (where A's live records begin; B's begin at 0).
struct Topic {
    name: String,
    history: Vec<RecordRef>,
    history_end: Vec<i64>,
}

impl Topic {
    /// Creates the topic in A (4 partitions, RF 3), writes the history
    /// and moves A's leaders three times.
    async fn prepare(a: &KafkaCluster, name: &str) -> Topic {
        let topic = format!("clients-{name}");
        a.create_topic(&topic, PARTITIONS, 3, &[]).unwrap();
        let history = preload_history(a, &topic).await;
        a.move_leaders(&topic, 3).unwrap();
        let epochs = a.leaders(&topic).unwrap();
        assert!(epochs.values().all(|(_, e)| *e >= 3), "{epochs:?}");
        let history_end = common::real::end_offsets(a, &topic, PARTITIONS);
        assert_eq!(
            history_end,
            vec![HISTORY_PER_PARTITION as i64; PARTITIONS as usize],
            "A's history"
        );
        Topic {
            name: topic,
            history,
            history_end,
        }
    }

    fn is_live(r: &Seen) -> bool {
        r.key.as_deref().is_some_and(|k| !k.starts_with("history-"))
    }

    /// A live record read below A's history end: only B stores live
    /// records there.
    fn read_from_b(&self, r: &Seen) -> bool {
        Topic::is_live(r) && r.offset < self.history_end[r.partition as usize]
    }

    fn read_from_a(&self, r: &Seen) -> bool {
        Topic::is_live(r) && r.offset >= self.history_end[r.partition as usize]
    }
}

/// The two moves: when each was asked for and answered, and the answers.
struct Moves {
    flip_started: Instant,
    flipped: Instant,
    flip: Value,
    rollback_started: Instant,
    rolled_back: Instant,
    rollback: Value,
}

impl Moves {
    fn phase(&self, at: Instant) -> &'static str {
        if at < self.flip_started {
            "before the flip"
        } else if at < self.flipped {
            "during the flip"
        } else if at < self.rollback_started {
            "between flip and rollback"
        } else if at < self.rolled_back {
            "during the rollback"
        } else {
            "after the rollback"
        }
    }
}

/// POSTs /flip or /rollback; the clients must have moved.
async fn move_clients(
    admin: SocketAddr,
    path: &str,
    name: &str,
    acked: usize,
) -> (Instant, Instant, Value) {
    let started = Instant::now();
    note(&format!("{name}: POST {path} after {acked} acks"));
    let (_, answer, refused) = common::real::move_when_mirrored(admin, path).await;
    let answered = Instant::now();
    if refused > 0 {
        note(&format!(
            "{name}: {path} refused {refused} time(s) while records were in flight"
        ));
    }
    note(&format!(
        "{name}: {path} answered {} in {} ms",
        answer["outcome"], answer["duration_ms"]
    ));
    if answer["outcome"] != "flipped" {
        panic!("{path}: {answer:#}\nstatus: {:#}", status(admin).await);
    }
    (started, answered, answer)
}

/// Waits until every consumer has read A's history and each group has
/// committed A's end: a committed offset before the first mirrored record
/// does not translate, and the flip would be refused.
async fn wait_for_history(a: &KafkaCluster, topic: &Topic, readers: &[(&Driver, &str)]) {
    wait_until(
        Duration::from_secs(120),
        "the consumers to read A's history",
        || {
            let read = readers
                .iter()
                .all(|(d, _)| d.has_consumed_all(&topic.history));
            async move { read }
        },
    )
    .await;
    for (_, group) in readers {
        wait_for_commits(a, group, &topic.name, &topic.history_end).await;
    }
}

/// Waits (bounded) until `driver` has consumed every record of `all`;
/// whether it did.
async fn caught_up(driver: &Driver, all: &[RecordRef], limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while !driver.has_consumed_all(all) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    driver.has_consumed_all(all)
}

async fn flip_and_rollback(plan: Plan) {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (a, b) = clusters();
    let name = plan.name;
    let logs = Logs::new(name);
    let topic = Topic::prepare(a, name).await;
    note(&format!(
        "{name}: topic {}, logs in {}",
        topic.name,
        logs.path().display()
    ));
    let group = format!("clients-{name}-group");
    let watcher_group = format!("clients-{name}-assign");

    let harness = start_proxy(a, Some(b)).await;
    let admin = harness.proxy.admin_addr();
    let bootstrap = harness.bootstrap();

    let mut args = consume_args(&bootstrap, &topic.name, &group);
    args.extend(plan.consumer.iter().map(|s| (*s).to_owned()));
    let mut consumer = Driver::start(plan.client, "consumer", &args, logs.path());
    let mut watcher = plan.assign_watcher.then(|| {
        let mut args = consume_args(&bootstrap, &topic.name, &watcher_group);
        args.extend(["--assign".to_owned(), "0,1,2,3".to_owned()]);
        Driver::start(Client::Java, "assign-consumer", &args, logs.path())
    });
    let mut readers = vec![(&consumer, group.as_str())];
    readers.extend(watcher.as_ref().map(|w| (w, watcher_group.as_str())));
    wait_for_history(a, &topic, &readers).await;

    post(admin, "/mirror", r#"{"mode":"sync"}"#).await;
    note(&format!("{name}: mirroring (sync)"));
    let mut args = produce_args(
        &bootstrap,
        &topic.name,
        &format!("{name}-live"),
        KEYS,
        RATE,
        plan.idempotent,
    );
    if let Some(idle) = plan.idle_partition {
        let busy: Vec<String> = (0..PARTITIONS)
            .filter(|p| *p != idle)
            .map(|p| p.to_string())
            .collect();
        args.extend(["--partitions".to_owned(), busy.join(",")]);
    }
    let mut producer = Driver::start(plan.client, "producer", &args, logs.path());

    let busy = PARTITIONS as usize - usize::from(plan.idle_partition.is_some());
    wait_until(
        Duration::from_secs(90),
        "traffic before the flip, on every partition",
        || {
            let enough = producer.with(|e| {
                let partitions: HashSet<i32> = e.acks.iter().map(|a| a.partition).collect();
                e.acks.len() >= PHASE && partitions.len() == busy
            });
            async move { enough }
        },
    )
    .await;
    let (flip_started, flipped, flip) = move_clients(admin, "/flip", name, producer.acked()).await;

    let after_flip = producer.acked();
    wait_until(
        Duration::from_secs(120),
        "traffic after the flip, and the consumer reading from B",
        || {
            let enough = producer.acked() >= after_flip + PHASE
                && consumer.with(|e| e.recs.iter().any(|r| topic.read_from_b(r)));
            async move { enough }
        },
    )
    .await;
    let (rollback_started, rolled_back, rollback) =
        move_clients(admin, "/rollback", name, producer.acked()).await;

    let after_rollback = producer.acked();
    wait_until(
        Duration::from_secs(120),
        "traffic after the rollback",
        || {
            let n = producer.acked();
            async move { n >= after_rollback + PHASE }
        },
    )
    .await;
    let moves = Moves {
        flip_started,
        flipped,
        flip,
        rollback_started,
        rolled_back,
        rollback,
    };

    let producer_stopped = producer.stop(Duration::from_secs(90)).await;
    let live: Vec<RecordRef> = producer.with(|e| e.acks.iter().filter_map(Seen::record).collect());
    let mut all = topic.history.clone();
    all.extend(live.iter().cloned());
    let consumer_caught_up = caught_up(&consumer, &all, Duration::from_secs(90)).await;
    // The assign consumer may be held; see whether it resumes, briefly.
    let watcher_caught_up = match &watcher {
        Some(w) => Some(caught_up(w, &all, Duration::from_secs(20)).await),
        None => None,
    };
    let consumer_stopped = consumer.stop(Duration::from_secs(60)).await;
    let watcher_stopped = match &mut watcher {
        Some(w) => Some(w.stop(Duration::from_secs(60)).await),
        None => None,
    };

    wait_for_mirror_lag_zero(admin).await;
    let in_a = common::real::read_all(a, &topic.name, PARTITIONS);
    let in_b = common::real::read_all(b, &topic.name, PARTITIONS);
    for (cluster, stored, kafka) in [("a", &in_a, a), ("b", &in_b, b)] {
        dump(&logs.path().join(format!("stored-{cluster}.txt")), stored);
        dump_batches(
            &logs.path().join(format!("batches-{cluster}.txt")),
            kafka,
            &topic.name,
        );
    }
    let run = Run {
        plan: &plan,
        topic: &topic,
        moves: &moves,
        live: &live,
        all: &all,
        in_a: &in_a,
        in_b: &in_b,
    };
    let consumer_end = End {
        driver: &consumer,
        stopped: &consumer_stopped,
        caught_up: consumer_caught_up,
    };
    let numbers = run.numbers(&producer, &consumer_end);
    numbers.print(&run, &producer, &producer_stopped, &consumer_end);
    let watcher_end = watcher
        .as_ref()
        .zip(watcher_stopped.as_ref())
        .map(|(w, s)| End {
            driver: w,
            stopped: s,
            caught_up: watcher_caught_up.unwrap_or(false),
        });
    if let Some(w) = &watcher_end {
        run.print_watcher(w);
    }
    run.check(
        &numbers,
        &producer,
        &producer_stopped,
        &consumer_end,
        watcher_end.as_ref(),
    );
    harness.stop().await;
}

/// How a consumer ended.
struct End<'a> {
    driver: &'a Driver,
    stopped: &'a Stopped,
    caught_up: bool,
}

/// Everything a finished scenario left to look at.
struct Run<'a> {
    plan: &'a Plan,
    topic: &'a Topic,
    moves: &'a Moves,
    /// Every live record acknowledged.
    live: &'a [RecordRef],
    /// History and live records.
    all: &'a [RecordRef],
    in_a: &'a BTreeMap<i32, Vec<StoredRecord>>,
    in_b: &'a BTreeMap<i32, Vec<StoredRecord>>,
}

/// What the summary prints and the checks assert on.
struct Numbers {
    report: workload::IntegrityReport,
    unreadable: usize,
    consumed: usize,
    consumed_live: usize,
    from_b: usize,
    /// Live records a partition holds after a later record of their key.
    reordered: usize,
    gap: Duration,
    gap_end: Option<Instant>,
    resumed_on_b: Option<u128>,
    resumed_on_a: Option<u128>,
    wrong_acks: Vec<Seen>,
    wrong_recs: Vec<Seen>,
}

impl Run<'_> {
    fn live_ids(&self) -> HashSet<(&str, u64)> {
        self.live.iter().map(|r| (r.key.as_str(), r.seq)).collect()
    }

    fn consumed_live(&self, events: &Events) -> usize {
        let ids = self.live_ids();
        events
            .consumed
            .iter()
            .filter(|(k, s)| ids.contains(&(k.as_str(), *s)))
            .count()
    }

    fn wrong_offsets(&self, seen: &[Seen]) -> Vec<Seen> {
        seen.iter()
            .filter(|r| stored_at(self.in_a, self.in_b, r).is_none())
            .cloned()
            .collect()
    }

    fn numbers(&self, producer: &Driver, consumer: &End) -> Numbers {
        let recs = consumer.driver.with(|e| e.recs.clone());
        let acks = producer.with(|e| e.acks.clone());
        let consumed: Vec<RecordRef> = recs.iter().filter_map(Seen::record).collect();
        let (gap, gap_end) = longest_gap(&acks);
        let (topic, moves) = (self.topic, self.moves);
        Numbers {
            // A's copy holds every record in the order each partition
            // was written: the order first deliveries must follow.
            report: check_against(self.all, &consumed, &StoredIndex::of(self.in_a)),
            unreadable: recs.len() - consumed.len(),
            consumed: recs.len(),
            consumed_live: consumer.driver.with(|e| self.consumed_live(e)),
            from_b: recs.iter().filter(|r| topic.read_from_b(r)).count(),
            reordered: stored_key_inversions(self.in_a, &self.live_ids()),
            gap,
            gap_end,
            resumed_on_b: resumed_after(&recs, moves.flipped, |r| topic.read_from_b(r)),
            resumed_on_a: resumed_after(&recs, moves.rolled_back, |r| topic.read_from_a(r)),
            wrong_acks: self.wrong_offsets(&acks),
            wrong_recs: self.wrong_offsets(&recs),
        }
    }

    /// What the `--assign` consumer did across the moves: records read per
    /// phase and cluster, errors, whether it resumed.
    fn print_watcher(&self, watcher: &End) {
        let recs = watcher.driver.with(|e| e.recs.clone());
        let mut by_phase: BTreeMap<(&str, &str), usize> = BTreeMap::new();
        for r in &recs {
            let from = stored_at(self.in_a, self.in_b, r).unwrap_or("WRONG OFFSET");
            *by_phase.entry((self.moves.phase(r.at), from)).or_default() += 1;
        }
        let last = recs.last().map(|r| {
            format!(
                "{}#{} at {}@{}, {}",
                r.key.as_deref().unwrap_or("-"),
                r.seq,
                r.partition,
                r.offset,
                self.moves.phase(r.at)
            )
        });
        println!(
            "[assign-consumer] records {} (live {} of {}), caught up {}; by phase and cluster \
             {by_phase:?}; last record {last:?}; {:?}",
            recs.len(),
            watcher.driver.with(|e| self.consumed_live(e)),
            self.live.len(),
            watcher.caught_up,
            watcher.stopped
        );
        let errors = watcher.driver.with(|e| e.errors.clone());
        println!(
            "[assign-consumer] {} errors and failed commits: {:?}",
            errors.len(),
            error_counts(&errors)
        );
        for (at, err) in errors.iter().take(20) {
            println!("[assign-consumer]   {}: {err}", self.moves.phase(*at));
        }
    }

    fn check(
        &self,
        n: &Numbers,
        producer: &Driver,
        producer_stopped: &Stopped,
        consumer: &End,
        watcher: Option<&End>,
    ) {
        // The clients' own health first: it explains what follows.
        let ends = [
            (producer, producer_stopped),
            (consumer.driver, consumer.stopped),
        ]
        .into_iter()
        .chain(watcher.map(|w| (w.driver, w.stopped)));
        for (driver, stopped) in ends {
            let (fatal, garbage) = driver.with(|e| (e.fatal.clone(), e.garbage.clone()));
            assert_eq!(fatal, None, "{}: fatal error", driver.label);
            assert!(garbage.is_empty(), "{} printed {garbage:?}", driver.label);
            assert!(
                stopped.alive_until_stop,
                "{} exited before it was told to stop: {stopped:?}",
                driver.label
            );
            assert!(
                stopped.done.is_some(),
                "{} printed no done: {stopped:?}",
                driver.label
            );
            assert_eq!(stopped.exit, Some(0), "{} exit: {stopped:?}", driver.label);
        }
        assert_eq!(
            producer_stopped.done.as_ref().unwrap()["acked"].as_u64(),
            Some(self.live.len() as u64),
            "done counts every acknowledgement"
        );
        let fails = producer.with(|e| e.fails.clone());
        assert!(
            fails.is_empty(),
            "the producer gave up on records: {fails:?}"
        );
        assert!(
            n.wrong_acks.is_empty(),
            "acknowledged at offsets where neither cluster stores the record: {:?}",
            &n.wrong_acks[..n.wrong_acks.len().min(10)]
        );
        let watcher_wrong = watcher
            .map(|w| self.wrong_offsets(&w.driver.with(|e| e.recs.clone())))
            .unwrap_or_default();
        for (who, wrong) in [
            ("consumer", &n.wrong_recs),
            ("assign-consumer", &watcher_wrong),
        ] {
            assert!(
                wrong.is_empty(),
                "{who} read {} records at offsets where neither cluster stores them: {:?}",
                wrong.len(),
                &wrong[..wrong.len().min(10)]
            );
        }
        if let Some(w) = watcher.filter(|_| self.plan.watcher_must_resume) {
            assert!(
                w.caught_up,
                "the assign consumer did not read every record: it read {} of {}",
                w.driver.with(|e| e.consumed.len()),
                self.all.len()
            );
        }
        assert_eq!(n.unreadable, 0, "records whose value does not parse");
        assert_eq!(
            n.report.lost, 0,
            "acknowledged but never consumed: {:?}",
            n.report
        );
        assert_eq!(
            n.report.partition_order_violations, 0,
            "first deliveries out of the order their partition stores them: {:?}",
            n.report
        );
        if self.plan.idempotent {
            assert_eq!(n.reordered, 0, "an idempotent producer's writes reordered");
        }
        assert!(
            n.report.key_order_violations <= n.reordered,
            "per-key order among first deliveries: {:?}; the producer reordered {}",
            n.report,
            n.reordered
        );
        assert!(
            n.report.duplicates <= MAX_DUPLICATES,
            "{} duplicates (bound {MAX_DUPLICATES})",
            n.report.duplicates
        );
        assert!(n.from_b > 0, "the consumer never read a record from B");
        let idempotent = self.plan.idempotent;
        let mirrored =
            assert_b_mirrors_a(self.in_a, self.in_b, &self.topic.name, self.live, |_| {
                !idempotent
            });
        assert_eq!(mirrored.distinct, self.live.len(), "live records in B");
    }
}

impl Numbers {
    /// The one-line summary, then the details behind it.
    fn print(&self, run: &Run, producer: &Driver, producer_stopped: &Stopped, consumer: &End) {
        let (plan, moves) = (run.plan, run.moves);
        let name = plan.name;
        let ms = |v: Option<u128>| v.map_or("never".to_owned(), |ms| ms.to_string());
        let consumer_errors = consumer.driver.with(|e| error_counts(&e.errors));
        let producer_errors = producer.with(|e| error_counts(&e.errors));
        let count = |errors: &[(usize, String)]| errors.iter().map(|(n, _)| n).sum::<usize>();
        let assignor = plan
            .consumer
            .iter()
            .skip_while(|o| **o != "--assignor")
            .nth(1)
            .unwrap_or(&"eager");
        println!(
            "[summary] client={name} assignor={assignor} idempotent={} acked={} consumed={} \
             consumed_live={} lost={} duplicates={} key_order_violations={} \
             partition_order_violations={} producer_reordered={} read_from_b={} flip_ms={} \
             rollback_ms={} longest_ack_gap_ms={} first_record_from_b_ms={} \
             first_record_from_a_again_ms={} failed_sends={} consumer_errors={} \
             producer_errors={} caught_up={}",
            plan.idempotent,
            run.live.len(),
            self.consumed,
            self.consumed_live,
            self.report.lost,
            self.report.duplicates,
            self.report.key_order_violations,
            self.report.partition_order_violations,
            self.reordered,
            self.from_b,
            moves.flip["duration_ms"],
            moves.rollback["duration_ms"],
            self.gap.as_millis(),
            ms(self.resumed_on_b),
            ms(self.resumed_on_a),
            producer.with(|e| e.fails.len()),
            count(&consumer_errors),
            count(&producer_errors),
            consumer.caught_up,
        );
        if let Some(end) = self.gap_end {
            let after = |t: Instant| end.saturating_duration_since(t).as_millis();
            println!(
                "[detail] {name}: longest ack gap ended {} ms after the flip started, {} ms \
                 after the rollback started",
                after(moves.flip_started),
                after(moves.rollback_started)
            );
        }
        println!("[detail] {name}: consumer errors {consumer_errors:?}");
        println!("[detail] {name}: producer errors {producer_errors:?}");
        let rebalances = consumer.driver.with(|e| {
            e.rebalances
                .iter()
                .map(|(at, kind, ps)| {
                    let ms = at.saturating_duration_since(moves.flip_started).as_millis();
                    format!("{kind}{ps:?}@{ms}ms")
                })
                .collect::<Vec<_>>()
        });
        println!("[detail] {name}: consumer rebalances (ms after the flip started) {rebalances:?}");
        println!("[detail] {name}: flip {}", moves.flip);
        println!("[detail] {name}: rollback {}", moves.rollback);
        println!(
            "[detail] {name}: producer {producer_stopped:?}; consumer {:?}; {:?}",
            consumer.stopped, self.report
        );
    }
}

// ------------------------------------------------------------------ the tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_through_flip_and_rollback() {
    flip_and_rollback(Plan::subscribe(Client::Java)).await;
}

/// franz-go 1.22 with the cooperative-sticky balancer. It takes a changed
/// topic id for a topic deleted and created again (commits refused with
/// UNKNOWN_TOPIC_ID, and the producer may fail every record), so topic ids
/// must stay the same across the flip; and its cooperative member keeps
/// its partitions (and fetch positions, offsets of A) through a join
/// answered UNKNOWN_MEMBER_ID, so switchyard answers its first join from
/// the old cluster ILLEGAL_GENERATION, after which it drops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn franz_go_through_flip_and_rollback() {
    flip_and_rollback(Plan::subscribe(Client::FranzGo)).await;
}

/// kafkajs's producer is not idempotent here: kafkajs 2.2.4's idempotent
/// producer, with several send() calls in flight, reuses sequence numbers
/// after a retriable error (a leader change, a closed connection) and
/// loses records even against one cluster whose leaders move (kafkajs
/// issues #598 and #1005; tests/clients/README.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafkajs_through_flip_and_rollback() {
    flip_and_rollback(Plan {
        idempotent: false,
        ..Plan::subscribe(Client::Kafkajs)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aiokafka_through_flip_and_rollback() {
    flip_and_rollback(Plan::subscribe(Client::Python)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_through_flip_and_rollback() {
    flip_and_rollback(Plan::subscribe(Client::Librdkafka)).await;
}

/// A static member (eager assignor) in the group. At the rollback its
/// group.instance.id is still registered on A under the member id A issued
/// before the flip; joining there with the id B issued would be answered
/// FENCED_INSTANCE_ID, fatal to the Java consumer. switchyard answers a
/// join from the other cluster's member UNKNOWN_MEMBER_ID, and the member
/// joins afresh, replacing its old registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_static_member_through_flip_and_rollback() {
    flip_and_rollback(Plan {
        name: "java-static",
        consumer: vec!["--assignor", "eager", "--instance-id", "java-static-1"],
        ..Plan::subscribe(Client::Java)
    })
    .await;
}

/// A partition that gets no writes after mirroring starts: nothing of it
/// is mirrored, yet the group, which committed A's end there, resumes at
/// B's end (every later record is mirrored there), so the flip goes ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_partition_through_flip_and_rollback() {
    flip_and_rollback(Plan {
        name: "idle-partition",
        idle_partition: Some(3),
        ..Plan::subscribe(Client::Librdkafka)
    })
    .await;
}

/// Beside the group, a Java consumer that assigns itself every partition
/// and commits under its own group: it has no membership for switchyard
/// to reset, so its in-memory positions stay offsets of the cluster it
/// read before the move. It must never read a record at a wrong offset;
/// what it does instead (stall, errors, resume) is printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_assign_consumer_through_flip_and_rollback() {
    flip_and_rollback(Plan {
        name: "java-assign",
        assign_watcher: true,
        ..Plan::subscribe(Client::Java)
    })
    .await;
}

/// The assign consumer of the test above resumes once the clients are
/// back on A, where its positions came from: the epoch of its position,
/// from A's first era, is one of A's own epochs again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_assign_consumer_resumes_after_rollback() {
    flip_and_rollback(Plan {
        name: "java-assign-resumes",
        assign_watcher: true,
        watcher_must_resume: true,
        ..Plan::subscribe(Client::Java)
    })
    .await;
}

/// KIP-848 consumers (`group.protocol=consumer`) speak ConsumerGroupHeartbeat,
/// whose answers carry topic ids and whose group state lives in the
/// cluster's new coordinator; switchyard does not offer that API (it could
/// not carry such a group across a flip), and the reference client then
/// stops with its own clear message naming the protocol, telling the user
/// to set `group.protocol=classic`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kip_848_consumer_is_refused_with_the_clients_own_message() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (a, b) = clusters();
    let topic = "clients-kip-848";
    a.create_topic(topic, 2, 3, &[]).unwrap();
    let harness = start_proxy(a, Some(b)).await;
    let logs = Logs::new("kip-848");
    let mut args = consume_args(&harness.bootstrap(), topic, "clients-kip-848-group");
    args.extend(["--protocol", "consumer"].map(str::to_owned));
    let mut consumer = Driver::start(Client::Java, "consumer", &args, logs.path());
    wait_until(
        Duration::from_secs(60),
        "the KIP-848 consumer to give up",
        || {
            let ended = consumer.with(|e| e.fatal.is_some()) || !consumer.alive();
            async move { ended }
        },
    )
    .await;
    let fatal = consumer.with(|e| e.fatal.clone()).unwrap_or_default();
    let stopped = consumer.stop(Duration::from_secs(20)).await;
    assert!(
        fatal.contains("CONSUMER group protocol") || fatal.contains("CONSUMER_GROUP_HEARTBEAT"),
        "the refusal names the protocol: {fatal:?}\n{}",
        consumer.tail()
    );
    assert_ne!(
        stopped.exit,
        Some(0),
        "the consumer did not run as if nothing happened"
    );
    assert!(
        consumer.with(|e| e.recs.is_empty()),
        "a refused consumer read nothing"
    );
    harness.stop().await;
}
