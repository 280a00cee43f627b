mod common;
use common::kafka::{ClusterSpec, KafkaCluster};

// `switchyard demo --cluster-a .. --cluster-b ..` against two real Apache
// Kafka clusters, as a user would run it for a staging rehearsal: the
// binary as a child process, its report read from its output, and both
// clusters checked afterwards for anything it left behind.

use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

/// librdkafka's own log format (`%4|1700000000.123|FAIL|rdkafka#producer-1| ...`)
/// or a line forwarded from it.
fn is_client_log_line(line: &str) -> bool {
    let own_format = line.strip_prefix('%').is_some_and(|rest| {
        rest.split_once('|').is_some_and(|(level, _)| {
            !level.is_empty() && level.bytes().all(|b| b.is_ascii_digit())
        })
    });
    own_format || line.contains("rdkafka")
}

/// The number after a report line's label, e.g. `  lost                  0`.
fn report_number(stdout: &str, label: &str) -> Option<u64> {
    stdout.lines().find_map(|line| {
        let rest = line.trim_start().strip_prefix(label)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

fn demo_topics(cluster: &KafkaCluster) -> Vec<String> {
    cluster
        .metadata(None)
        .expect("metadata")
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
        .filter(|name| name.starts_with("switchyard-demo"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_passes_on_existing_clusters_and_leaves_nothing_behind() {
    let a = std::thread::spawn(|| KafkaCluster::start(ClusterSpec::new(1)));
    let b = KafkaCluster::start(ClusterSpec::new(1)).expect("cluster B starts");
    let a = a.join().unwrap().expect("cluster A starts");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("demo.log");

    let run = Command::new(BIN)
        .args(["demo", "--records", "2000", "--cluster-a"])
        .arg(a.bootstrap())
        .arg("--cluster-b")
        .arg(b.bootstrap())
        .arg("--log")
        .arg(&log)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the demo ends within 5 minutes")
        .expect("the demo starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("demo stdout:\n{stdout}\ndemo stderr:\n{stderr}");
    let context = || format!("stdout:\n{stdout}\nstderr:\n{stderr}\nlog:\n{logged}");

    assert!(
        output.status.success(),
        "exit {}\n{}",
        output.status,
        context()
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.trim() == "verdict               PASS"),
        "{}",
        context()
    );
    assert_eq!(report_number(&stdout, "lost"), Some(0), "{}", context());
    assert_eq!(
        report_number(&stdout, "acknowledged"),
        Some(2000),
        "{}",
        context()
    );
    let client_lines: Vec<&str> = stdout.lines().filter(|l| is_client_log_line(l)).collect();
    assert!(
        client_lines.is_empty(),
        "client log lines on stdout: {client_lines:?}"
    );
    assert!(
        logged.contains("switchyard::"),
        "switchyard's log lines are not in {}:\n{logged}",
        log.display()
    );

    for (name, cluster) in [("A", &a), ("B", &b)] {
        let left = demo_topics(cluster);
        assert!(left.is_empty(), "cluster {name} still has {left:?}");
    }
}

#[test]
fn client_log_lines_are_recognised() {
    assert!(is_client_log_line(
        "%4|1700000000.123|FAIL|rdkafka#producer-1| [thrd:x]: disconnected"
    ));
    assert!(is_client_log_line(
        "2026-01-01T00:00:00Z WARN librdkafka: librdkafka: FAIL ..."
    ));
    assert!(!is_client_log_line("  lost                  0"));
    assert!(!is_client_log_line("%d of the records"));
}
