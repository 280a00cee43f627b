//! A second client implementation (kafka-python) through the proxy: produce,
//! consume, and a consumer group that resumes at its committed offsets.
//!
//! `.ci/run` installs kafka-python; run elsewhere without it, the test says
//! so and fails under CI=true rather than passing silently.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use tokio::process::Command;

fn python_has_kafka() -> bool {
    std::process::Command::new("python3")
        .args(["-c", "import kafka"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn records(json: &serde_json::Value, field: &str) -> Vec<RecordRef> {
    json[field]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            if let Some(header_ok) = r.get(4) {
                assert_eq!(header_ok, true, "header survived: {r}");
            }
            RecordRef {
                key: r[0].as_str().unwrap().to_owned(),
                seq: r[1].as_u64().unwrap(),
                partition: r[2].as_i64().unwrap() as i32,
                offset: r[3].as_i64().unwrap(),
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_python_produces_consumes_and_resumes_a_group() {
    if !python_has_kafka() {
        assert!(
            std::env::var_os("CI").is_none(),
            "kafka-python is not installed; .ci/run installs it"
        );
        eprintln!("SKIPPED: python3 with kafka-python<3 not found (pip install 'kafka-python<3')");
        return;
    }
    let a = start_cluster(3, &[("py-topic", 4)]).unwrap();
    let b = start_cluster(3, &[("py-topic", 4)]).unwrap();
    let harness = start_proxy(&a, Some(&b)).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/interop/kafka_python_roundtrip.py"
    );
    let child = Command::new("python3")
        .arg(script)
        .arg(harness.bootstrap())
        .arg("py-topic")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
        .await
        .expect("kafka-python finishes")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "kafka-python failed: {stderr}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));

    let acked = records(&json, "acked");
    let first = records(&json, "first");
    let second = records(&json, "second");
    assert_eq!(acked.len(), 600);
    assert!(!first.is_empty() && !second.is_empty());
    for record in &second {
        assert!(!first.contains(record), "second member re-read {record:?}");
    }
    let mut all = first;
    all.extend(second);
    let report = check(&acked, &all);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.consumed, 600);

    let real = real_broker_addresses(&[&a, &b]);
    let seen: Vec<String> = json["brokers_seen"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert!(!seen.is_empty());
    for address in &seen {
        assert!(
            !real.contains(address),
            "kafka-python saw real broker {address}"
        );
    }
    harness.stop().await;
}
