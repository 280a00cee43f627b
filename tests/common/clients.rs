//! Kafka client drivers as child processes, and librdkafka in-process:
//! one protocol for all (tests/clients/README.md). A `Driver` starts a
//! client program (stdin piped, stderr to a log file, killed when dropped),
//! parses the JSON events it prints on stdout as they come into `Events`
//! (acknowledgements, records, rebalances, errors), and stops it with a
//! `stop` line, waiting a bounded time for `done` and its exit. librdkafka
//! runs the same protocol on a thread of its own, so that a test treats
//! all five client implementations alike.

use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, TopicPartitionList};
use serde_json::{json, Value};
use switchyard::demo::workload::{self, RecordRef};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use super::kafka::cache_dir;

/// Wall-clock time of day (UTC), to line the drivers' events up with
/// switchyard's log lines.
pub fn clock() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let ms = now.as_millis() % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

pub fn note(what: &str) {
    eprintln!("[{}] {what}", clock());
}

/// The arguments of a `produce` driver (acks=all, lz4), before any extra
/// ones.
pub fn produce_args(
    bootstrap: &str,
    topic: &str,
    prefix: &str,
    keys: u32,
    rate: u32,
    idempotent: bool,
) -> Vec<String> {
    [
        "produce",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--prefix",
        prefix,
        "--keys",
        &keys.to_string(),
        "--rate",
        &rate.to_string(),
        "--idempotent",
        if idempotent { "true" } else { "false" },
        "--acks",
        "all",
        "--compression",
        "lz4",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The arguments of a `consume` driver (sync commits), before any extra
/// ones.
pub fn consume_args(bootstrap: &str, topic: &str, group: &str) -> Vec<String> {
    [
        "consume",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--group",
        group,
        "--commit",
        "sync",
    ]
    .map(str::to_owned)
    .to_vec()
}

// ------------------------------------------------------------------ events

/// A record a driver reported as acknowledged or consumed.
#[derive(Debug, Clone)]
pub struct Seen {
    pub key: Option<String>,
    /// -1 when the value does not parse.
    pub seq: i64,
    pub partition: i32,
    pub offset: i64,
    pub at: Instant,
}

impl Seen {
    pub fn record(&self) -> Option<RecordRef> {
        Some(RecordRef {
            key: self.key.clone()?,
            seq: u64::try_from(self.seq).ok()?,
            partition: self.partition,
            offset: self.offset,
        })
    }
}

/// Everything a driver printed, parsed.
#[derive(Debug, Default)]
pub struct Events {
    pub acks: Vec<Seen>,
    pub recs: Vec<Seen>,
    /// Distinct (key, seq) consumed.
    pub consumed: HashSet<(String, u64)>,
    /// "assigned" / "revoked" / "lost" with the partitions.
    pub rebalances: Vec<(Instant, String, Vec<i64>)>,
    /// `error` events and failed commits, as printed.
    pub errors: Vec<(Instant, String)>,
    /// Records the producer gave up on.
    pub fails: Vec<String>,
    pub done: Option<Value>,
    pub fatal: Option<String>,
    /// stdout lines that are not events of the protocol.
    pub garbage: Vec<String>,
}

impl Events {
    pub fn apply(&mut self, line: &str, at: Instant) {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            self.garbage.push(line.to_owned());
            return;
        };
        let seen = || Seen {
            key: event["k"].as_str().map(str::to_owned),
            seq: event["s"].as_i64().unwrap_or(-1),
            partition: event["p"].as_i64().unwrap_or(-1) as i32,
            offset: event["o"].as_i64().unwrap_or(-1),
            at,
        };
        match event["ev"].as_str() {
            Some("ack") => self.acks.push(seen()),
            Some("rec") => {
                let record = seen();
                if let (Some(key), Ok(seq)) = (&record.key, u64::try_from(record.seq)) {
                    self.consumed.insert((key.clone(), seq));
                }
                self.recs.push(record);
            }
            Some(kind @ ("assigned" | "revoked" | "lost")) => {
                let partitions = event["p"]
                    .as_array()
                    .map(|ps| ps.iter().filter_map(Value::as_i64).collect())
                    .unwrap_or_default();
                self.rebalances.push((at, kind.to_owned(), partitions));
            }
            Some("error") => self
                .errors
                .push((at, event["err"].as_str().unwrap_or("").to_owned())),
            Some("commit") => self.errors.push((
                at,
                format!("commit failed: {}", event["err"].as_str().unwrap_or("")),
            )),
            Some("fail") => self.fails.push(line.to_owned()),
            Some("done") => self.done = Some(event),
            Some("fatal") => self.fatal = Some(event["err"].as_str().unwrap_or("").to_owned()),
            _ => self.garbage.push(line.to_owned()),
        }
    }
}

/// Where a driver's events go: parsed into `events`, and written with the
/// time of day into a file kept for diagnosis.
pub struct Sink {
    events: Mutex<Events>,
    file: Mutex<File>,
}

impl Sink {
    pub fn create(path: &Path) -> Arc<Sink> {
        Arc::new(Sink {
            events: Mutex::new(Events::default()),
            file: Mutex::new(File::create(path).expect("events file")),
        })
    }

    pub fn line(&self, line: &str) {
        let at = Instant::now();
        let _ = writeln!(self.file.lock().unwrap(), "{} {line}", clock());
        self.events.lock().unwrap().apply(line, at);
    }

    pub fn emit(&self, event: Value) {
        self.line(&event.to_string());
    }

    pub fn with<T>(&self, f: impl FnOnce(&Events) -> T) -> T {
        f(&self.events.lock().unwrap())
    }
}

// ------------------------------------------------------------------ drivers

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Java,
    FranzGo,
    Kafkajs,
    Python,
    Librdkafka,
}

impl Client {
    pub fn name(self) -> &'static str {
        match self {
            Client::Java => "java",
            Client::FranzGo => "franz-go",
            Client::Kafkajs => "kafkajs",
            Client::Python => "aiokafka",
            Client::Librdkafka => "librdkafka",
        }
    }

    /// The assignor of a subscribing consumer: cooperative-sticky where the
    /// library has it, else range (eager).
    pub fn assignor(self) -> &'static str {
        match self {
            Client::Java | Client::FranzGo | Client::Librdkafka => "cooperative",
            Client::Kafkajs | Client::Python => "eager",
        }
    }

    /// The child process of a driver (librdkafka runs in-process).
    pub fn command(self) -> Command {
        let clients = cache_dir().join("clients");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut command = match self {
            Client::Java => {
                let mut c = Command::new("java");
                c.args([
                    "-Xmx128m",
                    "-XX:+UseSerialGC",
                    "-XX:TieredStopAtLevel=1",
                    "-XX:-UsePerfData",
                    "-cp",
                    &format!("{}/java/*", clients.display()),
                    "SwitchyardClient",
                ]);
                c
            }
            Client::FranzGo => Command::new(clients.join("franz-client")),
            Client::Kafkajs => {
                let mut c = Command::new("node");
                c.arg(repo.join("tests/clients/node/client.js"))
                    .env("NODE_PATH", clients.join("node/node_modules"));
                c
            }
            Client::Python => {
                let mut c = Command::new("python3");
                c.arg(repo.join("tests/clients/python/client.py"));
                c
            }
            Client::Librdkafka => unreachable!("librdkafka runs in-process"),
        };
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        command
    }
}

enum Running {
    Process {
        child: Box<Child>,
        stdin: Option<ChildStdin>,
        reader: Option<tokio::task::JoinHandle<()>>,
    },
    /// librdkafka on a thread of its own; it returns its exit code.
    Thread {
        stop: Arc<AtomicBool>,
        thread: Option<std::thread::JoinHandle<i32>>,
    },
}

/// How a driver ended.
#[derive(Debug)]
pub struct Stopped {
    /// Still running when told to stop: it lived through everything before.
    pub alive_until_stop: bool,
    pub exit: Option<i32>,
    pub done: Option<Value>,
}

/// One client program (producer or consumer) and what it reported.
pub struct Driver {
    pub label: String,
    sink: Arc<Sink>,
    running: Running,
    stderr: PathBuf,
    events_file: PathBuf,
}

impl Driver {
    pub fn start(client: Client, label: &str, args: &[String], logs: &Path) -> Driver {
        let stderr = logs.join(format!("{label}.stderr.log"));
        let events_file = logs.join(format!("{label}.events.log"));
        let sink = Sink::create(&events_file);
        let running = if client == Client::Librdkafka {
            let stop = Arc::new(AtomicBool::new(false));
            let context = RdContext::new(sink.clone(), &stderr);
            let args = args.to_vec();
            let stopping = stop.clone();
            let thread = std::thread::Builder::new()
                .name(label.to_owned())
                .spawn(move || librdkafka_driver(&args, context, &stopping))
                .unwrap();
            Running::Thread {
                stop,
                thread: Some(thread),
            }
        } else {
            let mut command = client.command();
            command
                .args(args)
                .stderr(File::create(&stderr).expect("stderr log"));
            let mut child = command.spawn().unwrap_or_else(|e| {
                panic!(
                    "{label}: cannot start {:?} ({e}); run `bash tests/clients/build.sh`",
                    command.as_std()
                )
            });
            let stdin = child.stdin.take();
            let stdout = child.stdout.take().unwrap();
            let lines = sink.clone();
            let reader = tokio::spawn(async move {
                let mut stdout = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = stdout.next_line().await {
                    lines.line(&line);
                }
            });
            Running::Process {
                child: Box::new(child),
                stdin,
                reader: Some(reader),
            }
        };
        note(&format!(
            "{label}: started {} {}",
            client.name(),
            args.join(" ")
        ));
        Driver {
            label: label.to_owned(),
            sink,
            running,
            stderr,
            events_file,
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&Events) -> T) -> T {
        self.sink.with(f)
    }

    pub fn acked(&self) -> usize {
        self.with(|e| e.acks.len())
    }

    pub fn has_consumed_all<'a>(&self, records: impl IntoIterator<Item = &'a RecordRef>) -> bool {
        self.with(|e| {
            records
                .into_iter()
                .all(|r| e.consumed.contains(&(r.key.clone(), r.seq)))
        })
    }

    pub fn alive(&mut self) -> bool {
        match &mut self.running {
            Running::Process { child, .. } => matches!(child.try_wait(), Ok(None)),
            Running::Thread { thread, .. } => thread.as_ref().is_some_and(|t| !t.is_finished()),
        }
    }

    /// Sends `stop`, then waits (bounded) for the driver to exit.
    pub async fn stop(&mut self, limit: Duration) -> Stopped {
        let alive_until_stop = self.alive();
        note(&format!("{}: stop", self.label));
        let exit = match &mut self.running {
            Running::Process {
                child,
                stdin,
                reader,
            } => {
                if let Some(mut stdin) = stdin.take() {
                    let _ = stdin.write_all(b"stop\n").await;
                    let _ = stdin.flush().await;
                    // Kept open until the exit: a closed stdin also means
                    // stop, and must not hide whether `stop` worked.
                    let status = tokio::time::timeout(limit, child.wait()).await;
                    drop(stdin);
                    if let Some(reader) = reader.take() {
                        let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
                    }
                    match status {
                        Ok(Ok(status)) => status.code(),
                        _ => None,
                    }
                } else {
                    None
                }
            }
            Running::Thread { stop, thread } => {
                stop.store(true, Ordering::Release);
                let deadline = Instant::now() + limit;
                while thread.as_ref().is_some_and(|t| !t.is_finished()) && Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                match thread.take() {
                    Some(t) if t.is_finished() => t.join().ok(),
                    other => {
                        *thread = other;
                        None
                    }
                }
            }
        };
        note(&format!("{}: exited {exit:?}", self.label));
        Stopped {
            alive_until_stop,
            exit,
            done: self.with(|e| e.done.clone()),
        }
    }

    /// The last lines of the driver's stderr and the last events other than
    /// records, for a failure message.
    pub fn tail(&self) -> String {
        let stderr = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        let lines: Vec<&str> = stderr.lines().collect();
        let from = lines.len().saturating_sub(40);
        let events = std::fs::read_to_string(&self.events_file).unwrap_or_default();
        let events: Vec<&str> = events
            .lines()
            .filter(|l| !l.contains(r#""ev":"rec""#) && !l.contains(r#""ev":"ack""#))
            .collect();
        let from_events = events.len().saturating_sub(30);
        let (acks, recs) = self.with(|e| (e.acks.len(), e.recs.len()));
        format!(
            "---- {}: {acks} acks, {recs} records; events other than ack/rec ({}):\n{}\n---- stderr tail ({}):\n{}",
            self.label,
            self.events_file.display(),
            events[from_events..].join("\n"),
            self.stderr.display(),
            lines[from..].join("\n")
        )
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.tail());
        }
        if let Running::Thread { stop, .. } = &self.running {
            stop.store(true, Ordering::Release);
        }
    }
}

/// The drivers' logs: a temporary directory removed after a passing test
/// and kept (its path printed) after a failing one, or always when
/// SWITCHYARD_KEEP_CLIENT_LOGS is set.
pub struct Logs(Option<tempfile::TempDir>);

impl Logs {
    pub fn new(name: &str) -> Logs {
        Logs(Some(
            tempfile::Builder::new()
                .prefix(&format!("switchyard-clients-{name}-"))
                .tempdir()
                .unwrap(),
        ))
    }

    pub fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("SWITCHYARD_KEEP_CLIENT_LOGS").is_some() {
            if let Some(dir) = self.0.take() {
                eprintln!("driver logs kept in {}", dir.keep().display());
            }
        }
    }
}

// ------------------------------------------------------------------ librdkafka in-process

/// librdkafka's callbacks: logs to the driver's log file, errors,
/// deliveries and rebalances as driver events.
struct RdContext {
    sink: Arc<Sink>,
    log: Mutex<File>,
    /// Records sent and not yet reported.
    pending: Mutex<HashSet<(String, u64)>>,
    acked: AtomicUsize,
    failed: AtomicUsize,
}

impl RdContext {
    pub fn new(sink: Arc<Sink>, log: &Path) -> RdContext {
        RdContext {
            sink,
            log: Mutex::new(File::create(log).expect("log file")),
            pending: Mutex::new(HashSet::new()),
            acked: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    pub fn log_line(&self, line: &str) {
        let _ = writeln!(self.log.lock().unwrap(), "{} {line}", clock());
    }

    pub fn partitions(tpl: &TopicPartitionList) -> Vec<i32> {
        let mut ps: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        ps.sort_unstable();
        ps
    }
}

impl ClientContext for RdContext {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log_line(&format!("{level:?} {fac} {log_message}"));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.log_line(&format!("error {error}: {reason}"));
        self.sink
            .emit(json!({"ev": "error", "err": format!("{error}: {reason}")}));
    }
}

impl ProducerContext for RdContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let (message, error) = match result {
            Ok(m) => (m, None),
            Err((e, m)) => (m, Some(e)),
        };
        let parsed = message.payload().and_then(|v| {
            let text = std::str::from_utf8(v).ok()?;
            let mut parts = text.splitn(3, '#');
            Some((parts.next()?.to_owned(), parts.next()?.parse::<u64>().ok()?))
        });
        let Some((key, seq)) = parsed else {
            self.log_line("delivery report for a record that does not parse");
            return;
        };
        if !self.pending.lock().unwrap().remove(&(key.clone(), seq)) {
            return;
        }
        match error {
            None => {
                self.acked.fetch_add(1, Ordering::Relaxed);
                self.sink.emit(json!({"ev": "ack", "k": key, "s": seq,
                    "p": message.partition(), "o": message.offset()}));
            }
            Some(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.sink
                    .emit(json!({"ev": "fail", "k": key, "s": seq, "err": e.to_string()}));
            }
        }
    }
}

impl ConsumerContext for RdContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            self.sink
                .emit(json!({"ev": "revoked", "p": RdContext::partitions(tpl)}));
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => self
                .sink
                .emit(json!({"ev": "assigned", "p": RdContext::partitions(tpl)})),
            Rebalance::Error(e) => self
                .sink
                .emit(json!({"ev": "error", "err": format!("rebalance: {e}")})),
            Rebalance::Revoke(_) => {}
        }
    }
}

/// The driver protocol's `produce` and `consume` (the options this file
/// uses) on librdkafka; returns the exit code.
fn librdkafka_driver(args: &[String], context: RdContext, stop: &AtomicBool) -> i32 {
    let option = |name: &str| -> String {
        args.iter()
            .position(|a| a == &format!("--{name}"))
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_default()
    };
    let sink = context.sink.clone();
    let outcome = if args[0] == "produce" {
        librdkafka_produce(&option, context, stop)
    } else {
        librdkafka_consume(&option, context, stop)
    };
    match outcome {
        Ok(()) => 0,
        Err(e) => {
            sink.emit(json!({"ev": "fatal", "err": format!("{e:#}")}));
            1
        }
    }
}

fn librdkafka_produce(
    option: &dyn Fn(&str) -> String,
    context: RdContext,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let (topic, prefix) = (option("topic"), option("prefix"));
    let keys: u64 = option("keys").parse()?;
    // --partitions 0,1,2 (this driver only): key n goes to the n-th of them.
    let partitions: Vec<i32> = option("partitions")
        .split(',')
        .filter(|p| !p.is_empty())
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let interval = Duration::from_secs_f64(1.0 / option("rate").parse::<f64>()?);
    let producer: BaseProducer<RdContext> = ClientConfig::new()
        .set("bootstrap.servers", option("bootstrap"))
        .set("broker.address.family", "v4")
        .set("enable.idempotence", option("idempotent"))
        .set("acks", option("acks"))
        .set("compression.type", option("compression"))
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .set("max.in.flight.requests.per.connection", "5")
        .create_with_context(context)?;
    let context = producer.context();
    let mut due = Instant::now();
    let mut i = 0u64;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now < due {
            producer.poll(due - now);
            continue;
        }
        // After a stall, catch up by at most a second's worth of records.
        due = (due + interval).max(now.checked_sub(Duration::from_secs(1)).unwrap_or(now));
        if context.pending.lock().unwrap().len() >= 1000 {
            producer.poll(Duration::from_millis(100));
            continue;
        }
        let key = format!("{prefix}-{}", i % keys);
        let seq = i / keys;
        let value = workload::record_value(&key, seq);
        context.pending.lock().unwrap().insert((key.clone(), seq));
        loop {
            let mut record = BaseRecord::to(&topic).key(&key).payload(&value);
            if !partitions.is_empty() {
                record = record.partition(partitions[(i % keys) as usize % partitions.len()]);
            }
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    producer.poll(Duration::from_millis(100));
                }
                Err((e, _)) => {
                    context.pending.lock().unwrap().remove(&(key.clone(), seq));
                    context.failed.fetch_add(1, Ordering::Relaxed);
                    context
                        .sink
                        .emit(json!({"ev": "fail", "k": key, "s": seq, "err": e.to_string()}));
                    break;
                }
            }
        }
        producer.poll(Duration::ZERO);
        i += 1;
    }
    if let Err(e) = producer.flush(Duration::from_secs(60)) {
        context.log_line(&format!("flush: {e}"));
    }
    let mut left: Vec<(String, u64)> = context.pending.lock().unwrap().drain().collect();
    left.sort();
    for (key, seq) in left {
        context.failed.fetch_add(1, Ordering::Relaxed);
        context.sink.emit(
            json!({"ev": "fail", "k": key, "s": seq, "err": "not acknowledged within 60 s of stop"}),
        );
    }
    context.sink.emit(json!({"ev": "done",
        "acked": context.acked.load(Ordering::Relaxed),
        "failed": context.failed.load(Ordering::Relaxed)}));
    Ok(())
}

fn librdkafka_consume(
    option: &dyn Fn(&str) -> String,
    context: RdContext,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let assignor = match option("assignor").as_str() {
        "cooperative" => "cooperative-sticky",
        _ => "range",
    };
    let sink = context.sink.clone();
    let consumer: BaseConsumer<RdContext> = ClientConfig::new()
        .set("bootstrap.servers", option("bootstrap"))
        .set("broker.address.family", "v4")
        .set("group.id", option("group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "1000")
        .set("partition.assignment.strategy", assignor)
        .create_with_context(context)?;
    consumer.subscribe(&[option("topic").as_str()])?;
    let mut records = 0usize;
    let commit = |consumer: &BaseConsumer<RdContext>| match consumer
        .commit_consumer_state(CommitMode::Sync)
    {
        Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
        Err(e) => sink.emit(json!({"ev": "commit", "ok": false, "err": e.to_string()})),
    };
    while !stop.load(Ordering::Acquire) {
        let mut handled = 0;
        let mut next = consumer.poll(Duration::from_millis(200));
        while let Some(result) = next {
            match result {
                Ok(m) => {
                    let value = m.payload().map(String::from_utf8_lossy).unwrap_or_default();
                    let seq = value
                        .split('#')
                        .nth(1)
                        .and_then(|s| s.parse::<i64>().ok())
                        .unwrap_or(-1);
                    let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
                    sink.emit(json!({"ev": "rec", "k": key, "s": seq,
                        "p": m.partition(), "o": m.offset()}));
                    handled += 1;
                }
                Err(e) => sink.emit(json!({"ev": "error", "err": e.to_string()})),
            }
            if handled >= 500 {
                break;
            }
            next = consumer.poll(Duration::ZERO);
        }
        if handled > 0 {
            commit(&consumer);
        }
        records += handled;
    }
    commit(&consumer);
    consumer.unsubscribe();
    drop(consumer); // closes: leaves the group
    sink.emit(json!({"ev": "done", "records": records}));
    Ok(())
}
