//! The real-Kafka harness itself: clusters start, leaders move, brokers die
//! and come back.

mod common;

use common::kafka::{ClusterSpec, KafkaCluster, KAFKA_3};

#[test]
fn a_three_broker_cluster_moves_leaders_and_survives_a_killed_broker() {
    let mut cluster = KafkaCluster::start(ClusterSpec::new(3)).unwrap();
    cluster.create_topic("moves", 4, 3, &[]).unwrap();
    let before = cluster.leaders("moves").unwrap();
    cluster.move_leaders("moves", 3).unwrap();
    let after = cluster.leaders("moves").unwrap();
    for (p, (_, epoch)) in &after {
        assert!(
            *epoch >= before[p].1 + 3,
            "partition {p}: {before:?} -> {after:?}"
        );
    }
    cluster.kill_broker(2);
    cluster.restart_broker(2).unwrap();
    assert_eq!(cluster.metadata(None).unwrap().brokers.len(), 3);
}

#[test]
fn a_kafka_3_single_broker_starts() {
    let cluster = KafkaCluster::start(ClusterSpec::new(1).version(KAFKA_3)).unwrap();
    cluster.create_topic("old", 2, 1, &[]).unwrap();
    assert_eq!(cluster.leaders("old").unwrap().len(), 2);
}
