//! Real Apache Kafka for the tests: jars fetched once from Maven Central into
//! a cache outside the repository, KRaft clusters (every node broker and
//! controller) started on free loopback ports, and a small synchronous admin
//! client speaking the wire protocol.
//!
//! Every broker runs under `tests/kafka/Watchdog.java`, which halts the JVM
//! when its standard input closes: a broker never outlives the test process
//! that started it, also when that process panics or is killed. Clusters
//! owned by a test are stopped by their handle when dropped.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, ApiKey, BrokerId,
    CreateTopicsRequest, CreateTopicsResponse, ElectLeadersRequest, ElectLeadersResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, MetadataRequest,
    MetadataResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{
    encode_request_header_into_buffer, Decodable, Encodable, HeaderVersion, StrBytes,
};

/// The Kafka 4 line users migrate to.
pub const KAFKA_4: &str = "4.1.1";
/// The Kafka 3 line users migrate from.
pub const KAFKA_3: &str = "3.9.1";

/// Downloads and builds live here, outside the repository.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("SWITCHYARD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                .join(".cache/switchyard")
        })
}

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The broker's jars for `version`, fetched with Maven on first use.
pub fn kafka_libs(version: &str) -> anyhow::Result<PathBuf> {
    let libs = cache_dir().join(format!("kafka-{version}/libs"));
    if libs.join(format!("kafka_2.13-{version}.jar")).exists() {
        return Ok(libs);
    }
    let work = cache_dir().join(format!("kafka-{version}/fetch-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    std::fs::write(
        work.join("pom.xml"),
        format!(
            r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>switchyard.test</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>2.0.16</version></dependency>
  </dependencies>
</project>
"#
        ),
    )?;
    let out = work.join("libs");
    let status = Command::new("mvn")
        .args(["-q", "-B", "-f"])
        .arg(work.join("pom.xml"))
        .arg("dependency:copy-dependencies")
        .arg(format!("-DoutputDirectory={}", out.display()))
        .status()
        .context("running mvn (is Maven installed? .ci/run installs it)")?;
    if !status.success() {
        bail!("mvn could not fetch org.apache.kafka:kafka_2.13:{version}");
    }
    // Another test binary may have won the race; either copy is complete.
    if std::fs::rename(&out, &libs).is_err() && !libs.exists() {
        bail!(
            "cannot move the Kafka {version} jars into {}",
            libs.display()
        );
    }
    let _ = std::fs::remove_dir_all(&work);
    Ok(libs)
}

/// The compiled watchdog launcher (see the module documentation).
fn watchdog() -> anyhow::Result<PathBuf> {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(dir) = built.as_ref() {
        return Ok(dir.clone());
    }
    let source = repo_path("tests/kafka/Watchdog.java");
    let dir = cache_dir().join("watchdog");
    let class = dir.join("Watchdog.class");
    let fresh = match (std::fs::metadata(&class), std::fs::metadata(&source)) {
        (Ok(c), Ok(s)) => c.modified()? >= s.modified()?,
        _ => false,
    };
    if !fresh {
        let tmp = cache_dir().join(format!("watchdog-{}", std::process::id()));
        std::fs::create_dir_all(&tmp)?;
        let status = Command::new("javac")
            .args(["-nowarn", "-d"])
            .arg(&tmp)
            .arg(&source)
            .status()
            .context("running javac (is a JDK installed? .ci/run installs it)")?;
        if !status.success() {
            bail!("javac failed on {}", source.display());
        }
        std::fs::create_dir_all(&dir)?;
        std::fs::rename(tmp.join("Watchdog.class"), &class)?;
        let _ = std::fs::remove_dir_all(&tmp);
    }
    *built = Some(dir.clone());
    Ok(dir)
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A 22-character cluster id, as Kafka writes them.
fn new_cluster_id() -> String {
    use base64::Engine;
    loop {
        let bytes: [u8; 16] = rand::random();
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        // The storage tool would take a leading '-' for an option.
        if !id.starts_with('-') {
            return id;
        }
    }
}

/// JVM options of test brokers: a small heap and the C1 compiler only,
/// which starts fastest and is enough for functional tests.
pub const TEST_JVM_OPTIONS: &[&str] = &[
    "-Xms64m",
    "-Xmx384m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
];

/// JVM options Kafka's own start scripts give a broker
/// (`kafka-server-start.sh`'s heap, `kafka-run-class.sh`'s
/// `KAFKA_JVM_PERFORMANCE_OPTS`): full JIT and G1, for measurements.
pub const KAFKA_SCRIPT_JVM_OPTIONS: &[&str] = &[
    "-Xmx1G",
    "-Xms1G",
    "-server",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15",
    "-Djava.awt.headless=true",
];

/// How long a starting cluster may take until every broker serves
/// Metadata listing all of them. Polled, so only a slow start waits: on a
/// loaded 2-core machine a 3-node KRaft quorum once took over 120 s.
const SERVING_LIMIT: Duration = Duration::from_secs(240);

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub brokers: usize,
    pub version: &'static str,
    /// Extra broker settings, applied after the defaults.
    pub settings: Vec<(String, String)>,
    /// Options of the brokers' JVMs (not of the one-shot storage tool).
    pub jvm_options: Vec<String>,
    /// Per broker, a port some relay listens on: the broker gets a second
    /// listener (RELAYED, on a port of its own) that advertises this port,
    /// so a client bootstrapped there reaches every broker through the
    /// relay.
    pub relayed: Vec<u16>,
}

impl ClusterSpec {
    pub fn new(brokers: usize) -> ClusterSpec {
        ClusterSpec {
            brokers,
            version: KAFKA_4,
            settings: Vec::new(),
            jvm_options: TEST_JVM_OPTIONS.iter().map(|&o| o.to_owned()).collect(),
            relayed: Vec::new(),
        }
    }

    /// Advertises broker i (from node id 1 on) at `ports[i]` on a second
    /// listener, for a relay in front of the cluster.
    pub fn relayed(mut self, ports: &[u16]) -> ClusterSpec {
        self.relayed = ports.to_vec();
        self
    }

    /// Replaces the brokers' JVM options.
    pub fn jvm_options(mut self, options: &[&str]) -> ClusterSpec {
        self.jvm_options = options.iter().map(|&o| o.to_owned()).collect();
        self
    }

    pub fn version(mut self, version: &'static str) -> ClusterSpec {
        self.version = version;
        self
    }

    pub fn set(mut self, key: &str, value: &str) -> ClusterSpec {
        self.settings.push((key.to_owned(), value.to_owned()));
        self
    }
}

struct Broker {
    node_id: i32,
    port: u16,
    /// The listener a relay forwards to, and the relay's port it
    /// advertises.
    relayed: Option<(u16, u16)>,
    properties: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running KRaft cluster; every node is broker and controller.
pub struct KafkaCluster {
    pub version: &'static str,
    dir: PathBuf,
    libs: PathBuf,
    jvm_options: Vec<String>,
    brokers: Vec<Broker>,
}

fn java<S: AsRef<std::ffi::OsStr>>(options: &[S]) -> Command {
    let mut command = Command::new("java");
    command.args(options);
    command
}

fn classpath(libs: &Path, extra: Option<&Path>) -> String {
    let mut cp = format!("{}/*", libs.display());
    if let Some(extra) = extra {
        cp = format!("{}:{cp}", extra.display());
    }
    cp
}

/// Where test clusters keep their data: one directory per test process,
/// removed when the cluster is dropped; leftovers of dead processes are
/// removed at the next start.
fn data_root() -> PathBuf {
    let root = std::env::temp_dir().join("switchyard-kafka");
    let _ = std::fs::create_dir_all(&root);
    if let Ok(entries) = std::fs::read_dir(&root) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    root
}

impl KafkaCluster {
    /// Formats storage and starts every node in parallel; returns once each
    /// broker answers Metadata listing all of them.
    pub fn start(spec: ClusterSpec) -> anyhow::Result<KafkaCluster> {
        let libs = kafka_libs(spec.version)?;
        let launcher = watchdog()?;
        static SEQUENCE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = data_root().join(format!(
            "{}-{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let n = spec.brokers.max(1);
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, controller))| format!("{}@127.0.0.1:{controller}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let replication = n.min(3).to_string();
        let cluster_id = new_cluster_id();
        let mut brokers = Vec::new();
        let mut formats = Vec::new();
        for (i, (port, controller)) in ports.iter().enumerate() {
            let node_id = i as i32 + 1;
            let relayed = spec
                .relayed
                .get(i)
                .map(|&advertised| (free_port(), advertised));
            let (extra_listener, extra_advertised, extra_protocol) = match relayed {
                Some((listen, advertised)) => (
                    format!(",RELAYED://127.0.0.1:{listen}"),
                    format!(",RELAYED://127.0.0.1:{advertised}"),
                    ",RELAYED:PLAINTEXT",
                ),
                None => (String::new(), String::new(), ""),
            };
            let mut settings: BTreeMap<String, String> = [
                ("process.roles", "broker,controller".to_owned()),
                ("node.id", node_id.to_string()),
                (
                    "listeners",
                    format!(
                        "PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}\
                         {extra_listener}"
                    ),
                ),
                (
                    "advertised.listeners",
                    format!("PLAINTEXT://127.0.0.1:{port}{extra_advertised}"),
                ),
                ("controller.listener.names", "CONTROLLER".to_owned()),
                ("inter.broker.listener.name", "PLAINTEXT".to_owned()),
                (
                    "listener.security.protocol.map",
                    format!("PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT{extra_protocol}"),
                ),
                ("controller.quorum.voters", voters.clone()),
                (
                    "log.dirs",
                    dir.join(format!("data-{node_id}")).display().to_string(),
                ),
                ("num.partitions", "1".to_owned()),
                ("default.replication.factor", replication.clone()),
                ("offsets.topic.replication.factor", replication.clone()),
                ("offsets.topic.num.partitions", "4".to_owned()),
                (
                    "transaction.state.log.replication.factor",
                    replication.clone(),
                ),
                ("transaction.state.log.min.isr", "1".to_owned()),
                ("transaction.state.log.num.partitions", "4".to_owned()),
                ("min.insync.replicas", "1".to_owned()),
                ("group.initial.rebalance.delay.ms", "0".to_owned()),
                ("auto.create.topics.enable", "false".to_owned()),
                ("num.network.threads", "2".to_owned()),
                ("num.io.threads", "2".to_owned()),
                ("background.threads", "2".to_owned()),
                ("num.recovery.threads.per.data.dir", "1".to_owned()),
                ("log.cleaner.threads", "1".to_owned()),
                ("controlled.shutdown.enable", "false".to_owned()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            for (k, v) in &spec.settings {
                settings.insert(k.clone(), v.clone());
            }
            let properties = dir.join(format!("server-{node_id}.properties"));
            let text: String = settings.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
            std::fs::write(&properties, text)?;
            let log = dir.join(format!("broker-{node_id}.log"));
            let format_log = std::fs::File::create(dir.join(format!("format-{node_id}.log")))?;
            formats.push(
                java(TEST_JVM_OPTIONS)
                    .arg("-cp")
                    .arg(classpath(&libs, None))
                    .args(["kafka.tools.StorageTool", "format", "-t", &cluster_id, "-c"])
                    .arg(&properties)
                    .stdin(Stdio::null())
                    .stdout(format_log.try_clone()?)
                    .stderr(format_log)
                    .spawn()
                    .context("starting java")?,
            );
            brokers.push(Broker {
                node_id,
                port: *port,
                relayed,
                properties,
                log,
                child: None,
            });
        }
        for (i, mut format) in formats.into_iter().enumerate() {
            let status = format.wait()?;
            if !status.success() {
                let log = std::fs::read_to_string(dir.join(format!("format-{}.log", i + 1)))
                    .unwrap_or_default();
                bail!("formatting Kafka {} storage failed: {log}", spec.version);
            }
        }
        let mut cluster = KafkaCluster {
            version: spec.version,
            dir,
            libs,
            jvm_options: spec.jvm_options,
            brokers,
        };
        for i in 0..cluster.brokers.len() {
            cluster.spawn(i, &launcher)?;
        }
        cluster.wait_until_serving(SERVING_LIMIT)?;
        Ok(cluster)
    }

    fn spawn(&mut self, index: usize, launcher: &Path) -> anyhow::Result<()> {
        let cp = classpath(&self.libs, Some(launcher));
        let broker = &mut self.brokers[index];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&broker.log)?;
        let child = java(&self.jvm_options)
            .arg(format!("-Dkafka.logs.dir={}", self.dir.display()))
            .arg("-cp")
            .arg(cp)
            .args(["Watchdog", "kafka.Kafka"])
            .arg(&broker.properties)
            .stdin(Stdio::piped())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting a Kafka broker")?;
        broker.child = Some(child);
        Ok(())
    }

    /// Bootstrap servers of the brokers that are running.
    pub fn bootstrap(&self) -> String {
        self.brokers
            .iter()
            .filter(|b| b.child.is_some())
            .map(|b| format!("127.0.0.1:{}", b.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The address of one broker.
    pub fn broker_addr(&self, node_id: i32) -> String {
        let broker = self
            .brokers
            .iter()
            .find(|b| b.node_id == node_id)
            .expect("a broker with that node id");
        format!("127.0.0.1:{}", broker.port)
    }

    /// Per broker, the relay's port and the listener it forwards to.
    pub fn relay_routes(&self) -> Vec<(u16, String)> {
        self.brokers
            .iter()
            .filter_map(|b| b.relayed)
            .map(|(listen, at)| (at, format!("127.0.0.1:{listen}")))
            .collect()
    }

    pub fn node_ids(&self) -> Vec<i32> {
        self.brokers.iter().map(|b| b.node_id).collect()
    }

    /// A running broker's address, for admin requests.
    fn any_addr(&self) -> anyhow::Result<String> {
        self.brokers
            .iter()
            .find(|b| b.child.is_some())
            .map(|b| format!("127.0.0.1:{}", b.port))
            .ok_or_else(|| anyhow!("no broker is running"))
    }

    /// The tail of a broker's log, for failure messages.
    pub fn log_tail(&self, node_id: i32) -> String {
        let Some(broker) = self.brokers.iter().find(|b| b.node_id == node_id) else {
            return String::new();
        };
        let text = std::fs::read_to_string(&broker.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn wait_until_serving(&mut self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let running: Vec<(i32, String)> = self
            .brokers
            .iter()
            .filter(|b| b.child.is_some())
            .map(|b| (b.node_id, format!("127.0.0.1:{}", b.port)))
            .collect();
        for (node_id, addr) in running {
            loop {
                let serving = metadata(&addr, None)
                    .map(|m| m.brokers.len() >= self.running_count())
                    .unwrap_or(false);
                if serving {
                    break;
                }
                if let Some(status) = self.exited(node_id) {
                    bail!(
                        "Kafka broker {node_id} exited ({status}):\n{}",
                        self.log_tail(node_id)
                    );
                }
                if Instant::now() >= deadline {
                    bail!(
                        "Kafka broker {node_id} did not serve within {limit:?}:\n{}",
                        self.log_tail(node_id)
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    fn running_count(&self) -> usize {
        self.brokers.iter().filter(|b| b.child.is_some()).count()
    }

    fn exited(&mut self, node_id: i32) -> Option<std::process::ExitStatus> {
        let broker = self.brokers.iter_mut().find(|b| b.node_id == node_id)?;
        broker.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Kills one broker at once (SIGKILL: no controlled shutdown).
    pub fn kill_broker(&mut self, node_id: i32) {
        if let Some(broker) = self.brokers.iter_mut().find(|b| b.node_id == node_id) {
            if let Some(mut child) = broker.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts a killed broker again and waits until the cluster lists it.
    pub fn restart_broker(&mut self, node_id: i32) -> anyhow::Result<()> {
        let launcher = watchdog()?;
        let index = self
            .brokers
            .iter()
            .position(|b| b.node_id == node_id)
            .ok_or_else(|| anyhow!("no broker {node_id}"))?;
        if self.brokers[index].child.is_none() {
            self.spawn(index, &launcher)?;
        }
        self.wait_until_serving(SERVING_LIMIT)
    }

    /// Kills every broker, then starts them all again on the same ports
    /// and storage.
    pub fn restart_all(&mut self) -> anyhow::Result<()> {
        let launcher = watchdog()?;
        for id in self.node_ids() {
            self.kill_broker(id);
        }
        for i in 0..self.brokers.len() {
            self.spawn(i, &launcher)?;
        }
        self.wait_until_serving(SERVING_LIMIT)
    }

    /// Metadata of `topics` (every topic when `None`).
    pub fn metadata(&self, topics: Option<&[&str]>) -> anyhow::Result<MetadataResponse> {
        metadata(&self.any_addr()?, topics)
    }

    /// Creates a topic and waits until every partition has a leader.
    pub fn create_topic(
        &self,
        topic: &str,
        partitions: i32,
        replication: i16,
        configs: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        use kafka_protocol::messages::create_topics_request::{
            CreatableTopic, CreatableTopicConfig,
        };
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatableTopic::default()
                .with_name(name(topic))
                .with_num_partitions(partitions)
                .with_replication_factor(replication)
                .with_configs(
                    configs
                        .iter()
                        .map(|(k, v)| {
                            CreatableTopicConfig::default()
                                .with_name(StrBytes::from_string((*k).to_owned()))
                                .with_value(Some(StrBytes::from_string((*v).to_owned())))
                        })
                        .collect(),
                )]);
        let response: CreateTopicsResponse =
            call(&self.any_addr()?, ApiKey::CreateTopics, 5, &request)?;
        for t in &response.topics {
            if t.error_code != 0 {
                bail!(
                    "creating {topic}: error {} {:?}",
                    t.error_code,
                    t.error_message
                );
            }
        }
        self.wait_for_leaders(topic, partitions as usize, Duration::from_secs(60))
    }

    fn wait_for_leaders(
        &self,
        topic: &str,
        partitions: usize,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let ready = self.leaders(topic).ok().is_some_and(|leaders| {
                leaders.len() == partitions && leaders.values().all(|(l, _)| *l >= 0)
            });
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("{topic}: not every partition has a leader after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Each partition's (leader, leader epoch).
    pub fn leaders(&self, topic: &str) -> anyhow::Result<BTreeMap<i32, (i32, i32)>> {
        let response = self.metadata(Some(&[topic]))?;
        let t = response
            .topics
            .first()
            .ok_or_else(|| anyhow!("no metadata for {topic}"))?;
        if t.error_code != 0 {
            bail!("metadata for {topic}: error {}", t.error_code);
        }
        Ok(t.partitions
            .iter()
            .map(|p| (p.partition_index, (p.leader_id.0, p.leader_epoch)))
            .collect())
    }

    /// Moves every partition's leadership `rounds` times: each round
    /// rotates the replica list (a reassignment that moves no data) and
    /// elects the new preferred leader. Leader epochs grow by at least one
    /// per round.
    pub fn move_leaders(&self, topic: &str, rounds: usize) -> anyhow::Result<()> {
        use kafka_protocol::messages::alter_partition_reassignments_request::{
            ReassignablePartition, ReassignableTopic,
        };
        use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
        let addr = self.any_addr()?;
        for round in 0..rounds {
            let response = self.metadata(Some(&[topic]))?;
            let t = response
                .topics
                .first()
                .ok_or_else(|| anyhow!("no metadata for {topic}"))?;
            let mut wanted = BTreeMap::new();
            let mut partitions = Vec::new();
            for p in &t.partitions {
                let mut replicas: Vec<i32> = p.replica_nodes.iter().map(|r| r.0).collect();
                if replicas.len() < 2 {
                    bail!(
                        "{topic}-{} has one replica: leadership cannot move",
                        p.partition_index
                    );
                }
                replicas.rotate_left(1);
                wanted.insert(p.partition_index, replicas[0]);
                partitions.push(
                    ReassignablePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_replicas(Some(replicas.into_iter().map(BrokerId).collect())),
                );
            }
            let request = AlterPartitionReassignmentsRequest::default()
                .with_timeout_ms(30_000)
                .with_topics(vec![ReassignableTopic::default()
                    .with_name(name(topic))
                    .with_partitions(partitions)]);
            let response: AlterPartitionReassignmentsResponse =
                call(&addr, ApiKey::AlterPartitionReassignments, 0, &request)?;
            if response.error_code != 0 {
                bail!("reassigning {topic}: error {}", response.error_code);
            }
            for r in response.responses.iter().flat_map(|t| t.partitions.iter()) {
                if r.error_code != 0 {
                    bail!(
                        "reassigning {topic}-{}: error {} {:?}",
                        r.partition_index,
                        r.error_code,
                        r.error_message
                    );
                }
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let listed: ListPartitionReassignmentsResponse = call(
                    &addr,
                    ApiKey::ListPartitionReassignments,
                    0,
                    &ListPartitionReassignmentsRequest::default()
                        .with_timeout_ms(30_000)
                        .with_topics(None),
                )?;
                if listed.topics.iter().all(|t| t.partitions.is_empty()) {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("reassignment of {topic} did not finish");
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let elect = ElectLeadersRequest::default()
                    .with_election_type(0)
                    .with_timeout_ms(30_000)
                    .with_topic_partitions(Some(vec![TopicPartitions::default()
                        .with_topic(name(topic))
                        .with_partitions(wanted.keys().copied().collect())]));
                let _: ElectLeadersResponse = call(&addr, ApiKey::ElectLeaders, 2, &elect)?;
                let leaders = self.leaders(topic)?;
                if wanted
                    .iter()
                    .all(|(p, leader)| leaders.get(p).map(|l| l.0) == Some(*leader))
                {
                    break;
                }
                if Instant::now() >= deadline {
                    bail!("round {round}: leaders of {topic} did not move: {leaders:?}");
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        for broker in &mut self.brokers {
            if let Some(mut child) = broker.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.to_owned()))
}

/// Metadata v12 from one broker.
pub fn metadata(addr: &str, topics: Option<&[&str]>) -> anyhow::Result<MetadataResponse> {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(name(t))))
                .collect()
        }));
    call(addr, ApiKey::Metadata, 12, &request)
}

/// One request, one answer, on a fresh connection.
pub fn call<Req: Encodable, Resp: Decodable + HeaderVersion>(
    addr: &str,
    api: ApiKey,
    version: i16,
    request: &Req,
) -> anyhow::Result<Resp> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(40)))?;
    let header = RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("switchyard-test-admin")));
    let mut payload = BytesMut::new();
    encode_request_header_into_buffer(&mut payload, &header)?;
    request.encode(&mut payload, version)?;
    stream.write_all(&(payload.len() as u32).to_be_bytes())?;
    stream.write_all(&payload)?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut body)?;
    let mut buf = Bytes::from(body);
    ResponseHeader::decode(&mut buf, Resp::header_version(version))?;
    Resp::decode(&mut buf, version)
}

/// Every record batch header of one partition, read straight from its
/// leader (the producer id and sequence a cluster stored each batch under).
pub fn batch_headers(
    bootstrap: &str,
    topic: &str,
    partition: i32,
) -> anyhow::Result<Vec<switchyard::protocol::batch::BatchHeader>> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, FetchResponse};
    let first = bootstrap.split(',').next().unwrap_or_default();
    let meta = metadata(first, Some(&[topic]))?;
    let leader = meta
        .topics
        .first()
        .and_then(|t| t.partitions.iter().find(|p| p.partition_index == partition))
        .map(|p| p.leader_id)
        .ok_or_else(|| anyhow!("no leader for {topic}-{partition}"))?;
    let broker = meta
        .brokers
        .iter()
        .find(|b| b.node_id == leader)
        .ok_or_else(|| anyhow!("leader {leader:?} not listed"))?;
    let addr = format!("{}:{}", broker.host, broker.port);
    let mut out = Vec::new();
    let mut offset = 0i64;
    loop {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_max_bytes(50 << 20)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(-1)
                    .with_fetch_offset(offset)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(10 << 20)])]);
        let response: FetchResponse = call(&addr, ApiKey::Fetch, 11, &request)?;
        let data = response
            .responses
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| anyhow!("empty fetch answer"))?;
        if data.error_code != 0 {
            bail!(
                "fetch {topic}-{partition}@{offset}: error {}",
                data.error_code
            );
        }
        let records = data.records.clone().unwrap_or_default();
        let mut at = 0usize;
        let mut progressed = false;
        while records.len() >= at + 61 {
            let len = i32::from_be_bytes(records[at + 8..at + 12].try_into().unwrap()) as usize;
            if records.len() < at + 12 + len {
                break;
            }
            let header = switchyard::protocol::batch::read_header(&records[at..])?;
            offset = header.base_offset + i64::from(header.last_offset_delta) + 1;
            out.push(header);
            progressed = true;
            at += 12 + len;
        }
        if !progressed || offset >= data.high_watermark {
            return Ok(out);
        }
    }
}
