//! Faults on real Apache Kafka while mirroring and flipping: a broker of A
//! killed under load, cluster B away when a flip is asked for, switchyard
//! restarted after a flip. Each test owns its clusters (brokers die here).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::kafka::{ClusterSpec, KafkaCluster};
use common::real::{assert_mirrored_once, post};
use common::*;

const PARTITIONS: i32 = 3;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_of_a_killed_while_mirroring_loses_nothing_and_b_holds_what_a_holds() {
    let (mut a, b) = {
        let a = std::thread::spawn(|| KafkaCluster::start(ClusterSpec::new(3)));
        let b = KafkaCluster::start(ClusterSpec::new(1)).unwrap();
        (a.join().unwrap().unwrap(), b)
    };
    let topic = "faults-a-broker";
    a.create_topic(topic, PARTITIONS, 3, &[("min.insync.replicas", "2")])
        .unwrap();
    let harness = start_proxy(&a, Some(&b)).await;
    let admin = harness.proxy.admin_addr();
    let (status, body) = post(admin, "/mirror", r#"{"mode":"sync"}"#).await;
    assert_eq!(status, 200, "{body}");

    let produced = Arc::new(AtomicUsize::new(0));
    let producers: Vec<_> = [("k1", true), ("k2", false)]
        .into_iter()
        .map(|(prefix, idempotent)| {
            let spec = ProduceSpec {
                idempotent,
                compression: "lz4",
                keys: 6,
                key_prefix: prefix.to_owned(),
                batch: 20,
                pause: Duration::from_millis(10),
                progress: Some(produced.clone()),
                ..ProduceSpec::new(topic, 3000)
            }
            .set("acks", "all");
            let bootstrap = harness.bootstrap();
            tokio::spawn(async move { workload::produce(&bootstrap, &spec).await })
        })
        .collect();
    let wait = |at_least: usize| {
        let produced = produced.clone();
        async move {
            wait_until(Duration::from_secs(120), "acknowledgements", || {
                let produced = produced.clone();
                async move { produced.load(Ordering::Relaxed) >= at_least }
            })
            .await
        }
    };
    wait(1500).await;
    // The leader of partition 0 dies without a controlled shutdown.
    let leader = a.leaders(topic).unwrap()[&0].0;
    tokio::task::block_in_place(|| a.kill_broker(leader));
    wait(3500).await;
    tokio::task::block_in_place(|| a.restart_broker(leader)).unwrap();

    let mut acked = Vec::new();
    for producer in producers {
        acked.extend(producer.await.unwrap().expect("producer ran"));
    }
    assert_eq!(acked.len(), 6000, "every record acknowledged");
    // k2 is not idempotent: a batch whose answer died with the leader is
    // written again by its client, and B holds what A holds.
    assert_mirrored_once(admin, (&a, &b), topic, PARTITIONS, &acked, |key| {
        key.starts_with("k2-")
    })
    .await;
    harness.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn b_away_refuses_the_flip_and_a_restart_after_a_flip_stays_on_b() {
    let (a, mut b) = {
        let a = std::thread::spawn(|| KafkaCluster::start(ClusterSpec::new(1)));
        let b = KafkaCluster::start(ClusterSpec::new(1)).unwrap();
        (a.join().unwrap().unwrap(), b)
    };
    let topic = "faults-b-away";
    a.create_topic(topic, PARTITIONS, 1, &[]).unwrap();
    let harness = start_proxy(&a, Some(&b)).await;
    let admin = harness.proxy.admin_addr();
    post(admin, "/mirror", r#"{"mode":"sync"}"#).await;
    let first = workload::produce(
        &harness.bootstrap(),
        &ProduceSpec {
            idempotent: true,
            ..ProduceSpec::new(topic, 300)
        },
    )
    .await
    .unwrap();
    wait_for_mirror_lag_zero(admin).await;

    // B goes away: the flip is refused and clients stay on A.
    tokio::task::block_in_place(|| b.kill_broker(1));
    let (status, report) = post(admin, "/flip", "").await;
    assert_eq!(status, 409, "{report:#}");
    assert_eq!(report["outcome"], "refused");
    let reasons = report["reasons"].to_string();
    assert!(
        reasons.contains("cluster b"),
        "the reason names B: {reasons}"
    );
    let (_, status_body) = http_get(admin, "/status").await;
    assert!(status_body.contains(r#""primary":"a""#), "{status_body}");

    // B back: the flip goes ahead.
    tokio::task::block_in_place(|| b.restart_broker(1)).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let flipped = loop {
        let (status, report) = post(admin, "/flip", "").await;
        if status == 200 {
            break report;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no flip once B was back: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(flipped["outcome"], "flipped");

    // A restart keeps clients on B: new records are acknowledged at B's
    // offsets and mirrored back to A.
    let state = harness.state;
    harness.proxy.shutdown(Duration::from_secs(5)).await;
    let mut config = loopback_config(&a.bootstrap(), Some(&b.bootstrap()), state.path());
    config.mirror.sync_timeout_ms = 5000;
    let proxy = switchyard::Proxy::start(config).await.unwrap();
    let (_, status_body) = http_get(proxy.admin_addr(), "/status").await;
    assert!(status_body.contains(r#""primary":"b""#), "{status_body}");
    let more = workload::produce(
        &proxy.bootstrap_addr().to_string(),
        &ProduceSpec {
            idempotent: true,
            key_prefix: "after".into(),
            ..ProduceSpec::new(topic, 300)
        },
    )
    .await
    .unwrap();
    wait_for_mirror_lag_zero(proxy.admin_addr()).await;
    let stored_b = read_cluster(&b.bootstrap(), topic, PARTITIONS).unwrap();
    for r in &more {
        let at = stored_b[&r.partition]
            .iter()
            .find(|s| s.offset == r.offset)
            .unwrap_or_else(|| panic!("{}#{} acknowledged at an offset B lacks", r.key, r.seq));
        assert_eq!(
            at.value.as_deref(),
            Some(workload::record_value(&r.key, r.seq).as_bytes()),
            "acknowledged at B's offsets"
        );
    }
    let mut all = first;
    all.extend(more);
    assert_mirrored_once(
        proxy.admin_addr(),
        (&a, &b),
        topic,
        PARTITIONS,
        &all,
        |_| false,
    )
    .await;
    proxy.shutdown(Duration::from_secs(5)).await;
}
