//! Readiness: per consumer group and partition, whether a flip to the
//! mirror cluster would be lossless now, and why not.

mod common;

use std::time::Duration;

use common::*;

const PARTITIONS: i32 = 3;

async fn readiness(harness: &Harness) -> serde_json::Value {
    let (status, body) = http_get(harness.proxy.admin_addr(), "/readiness").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn group<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == name)
        .unwrap_or_else(|| panic!("group {name} in {report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_names_groups_that_would_lose_records() {
    let a = start_cluster(3, &[("orders", PARTITIONS)]).unwrap();
    let b = start_cluster(3, &[("orders", PARTITIONS)]).unwrap();
    let harness = start_proxy(&a, Some(&b)).await;
    let bootstrap = harness.bootstrap();

    // Before mirroring: 600 records exist only in A.
    let before = workload::produce(&bootstrap, &ProduceSpec::new("orders", 600))
        .await
        .unwrap();
    assert_eq!(before.len(), 600);
    // "laggard" stops a third of the way; "caught-up" reads all of it.
    let laggard = workload::consume(
        &bootstrap,
        "orders",
        "laggard",
        150,
        Duration::from_secs(30),
        true,
    )
    .await
    .unwrap();
    assert!(laggard.len() >= 150 && laggard.len() < 600);
    let caught_up = workload::consume(
        &bootstrap,
        "orders",
        "caught-up",
        600,
        Duration::from_secs(30),
        true,
    )
    .await
    .unwrap();
    assert_eq!(caught_up.len(), 600);

    let report = readiness(&harness).await;
    assert_eq!(report["ready"], false);
    assert!(
        report["reasons"]
            .to_string()
            .contains("mirroring to cluster b is off"),
        "{report}"
    );

    let (status, body) =
        http_post(harness.proxy.admin_addr(), "/mirror", r#"{"mode":"sync"}"#).await;
    assert_eq!(status, 200, "{body}");
    let after = workload::produce(&bootstrap, &ProduceSpec::new("orders", 300))
        .await
        .unwrap();
    assert_eq!(after.len(), 300);

    let report = readiness(&harness).await;
    // caught-up committed exactly where mirroring began: it resumes on B at
    // the first mirrored record and misses nothing.
    let ready = group(&report, "caught-up");
    assert_eq!(ready["ready"], true, "{report}");
    for p in ready["partitions"].as_array().unwrap() {
        assert_eq!(
            p["translated"], 0,
            "first mirrored record is B's offset 0: {p}"
        );
    }
    // laggard still has records ahead of it that exist only in A.
    let lagging = group(&report, "laggard");
    assert_eq!(lagging["ready"], false, "{report}");
    assert!(
        lagging
            .to_string()
            .contains("lies before the first mirrored record"),
        "{lagging}"
    );
    assert_eq!(report["ready"], false);

    // The laggard reads on and commits past the mirror start: all ready.
    workload::consume(
        &bootstrap,
        "orders",
        "laggard",
        900 - laggard.len(),
        Duration::from_secs(30),
        true,
    )
    .await
    .unwrap();
    let report = readiness(&harness).await;
    assert_eq!(group(&report, "laggard")["ready"], true, "{report}");
    assert_eq!(report["ready"], true, "{report}");

    // /status carries the same answer.
    let (_, status) = http_get(harness.proxy.admin_addr(), "/status").await;
    let json: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(json["readiness"]["ready"], true, "{status}");
    harness.stop().await;
}
