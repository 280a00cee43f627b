//! Every broker a client sees is a virtual broker of the proxy, and the
//! cluster id is the proxy's own stable one.

use kafka_protocol::messages::{
    BrokerId, DescribeClusterResponse, FindCoordinatorResponse, MetadataResponse, ProduceResponse,
};

use super::RewriteContext;

fn virtual_id(ctx: &dyn RewriteContext, id: BrokerId) -> BrokerId {
    if id.0 < 0 {
        id
    } else {
        BrokerId(ctx.virtual_broker(id.0, None).node_id)
    }
}

fn virtual_ids(ctx: &dyn RewriteContext, ids: &mut [BrokerId]) {
    for id in ids {
        *id = virtual_id(ctx, *id);
    }
}

/// The controller a client is shown must be one of the brokers it is shown:
/// the real controller's virtual broker when it is listed, otherwise the
/// lowest listed virtual broker (some clusters report a controller id that
/// is not a broker, and admin clients then fail).
fn presented_controller(real: Option<BrokerId>, listed: &[BrokerId]) -> BrokerId {
    real.or_else(|| listed.iter().min().copied())
        .unwrap_or(BrokerId(-1))
}

pub fn metadata(mut response: MetadataResponse, ctx: &dyn RewriteContext) -> MetadataResponse {
    let mut controller = None;
    let mut listed = Vec::with_capacity(response.brokers.len());
    for broker in &mut response.brokers {
        let advertised = ctx.virtual_broker(broker.node_id.0, Some((&broker.host, broker.port)));
        if broker.node_id == response.controller_id {
            controller = Some(BrokerId(advertised.node_id));
        }
        broker.node_id = BrokerId(advertised.node_id);
        broker.host = advertised.host;
        broker.port = advertised.port;
        listed.push(broker.node_id);
    }
    response.controller_id = presented_controller(controller, &listed);
    if response.cluster_id.is_some() {
        response.cluster_id = Some(ctx.virtual_cluster_id());
    }
    for topic in &mut response.topics {
        if let Some(name) = &topic.name {
            topic.topic_id = ctx.present_topic_id(name, topic.topic_id);
        }
        for partition in &mut topic.partitions {
            partition.leader_id = virtual_id(ctx, partition.leader_id);
            partition.leader_epoch = ctx.present_epoch(partition.leader_epoch);
            virtual_ids(ctx, &mut partition.replica_nodes);
            virtual_ids(ctx, &mut partition.isr_nodes);
            virtual_ids(ctx, &mut partition.offline_replicas);
        }
    }
    response
}

pub fn find_coordinator(
    mut response: FindCoordinatorResponse,
    version: i16,
    ctx: &dyn RewriteContext,
) -> FindCoordinatorResponse {
    // v0-3 answer for one key in the top-level fields; v4+ only in
    // `coordinators` (the top-level fields must stay unset there).
    if version < 4 && response.error_code == 0 && response.node_id.0 >= 0 {
        let advertised =
            ctx.virtual_broker(response.node_id.0, Some((&response.host, response.port)));
        response.node_id = BrokerId(advertised.node_id);
        response.host = advertised.host;
        response.port = advertised.port;
    }
    for coordinator in &mut response.coordinators {
        if coordinator.error_code == 0 && coordinator.node_id.0 >= 0 {
            let advertised = ctx.virtual_broker(
                coordinator.node_id.0,
                Some((&coordinator.host, coordinator.port)),
            );
            coordinator.node_id = BrokerId(advertised.node_id);
            coordinator.host = advertised.host;
            coordinator.port = advertised.port;
        }
    }
    response
}

pub fn describe_cluster(
    mut response: DescribeClusterResponse,
    ctx: &dyn RewriteContext,
) -> DescribeClusterResponse {
    let mut controller = None;
    let mut listed = Vec::with_capacity(response.brokers.len());
    for broker in &mut response.brokers {
        let advertised = ctx.virtual_broker(broker.broker_id.0, Some((&broker.host, broker.port)));
        if broker.broker_id == response.controller_id {
            controller = Some(BrokerId(advertised.node_id));
        }
        broker.broker_id = BrokerId(advertised.node_id);
        broker.host = advertised.host;
        broker.port = advertised.port;
        listed.push(broker.broker_id);
    }
    if response.error_code == 0 {
        response.controller_id = presented_controller(controller, &listed);
        response.cluster_id = ctx.virtual_cluster_id();
    }
    response
}

/// Produce v10+ responses name the new leader of a partition that moved
/// (`current_leader`, `node_endpoints`). Returns `None` when the response
/// names no broker, so the original bytes can be forwarded untouched.
pub fn produce_leader_hints(
    mut response: ProduceResponse,
    ctx: &dyn RewriteContext,
) -> Option<ProduceResponse> {
    let mut changed = false;
    for endpoint in &mut response.node_endpoints {
        let advertised =
            ctx.virtual_broker(endpoint.node_id.0, Some((&endpoint.host, endpoint.port)));
        endpoint.node_id = BrokerId(advertised.node_id);
        endpoint.host = advertised.host;
        endpoint.port = advertised.port;
        changed = true;
    }
    for topic in &mut response.responses {
        for partition in &mut topic.partition_responses {
            if partition.current_leader.leader_id.0 >= 0 {
                partition.current_leader.leader_id =
                    virtual_id(ctx, partition.current_leader.leader_id);
                partition.current_leader.leader_epoch =
                    ctx.present_epoch(partition.current_leader.leader_epoch);
                changed = true;
            }
        }
    }
    changed.then_some(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::test_support::FakeContext;
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::produce_response::{
        LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
    };
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    fn s(text: &str) -> StrBytes {
        StrBytes::from_string(text.to_owned())
    }

    fn broker(id: i32, port: i32) -> MetadataResponseBroker {
        MetadataResponseBroker::default()
            .with_node_id(BrokerId(id))
            .with_host(s("10.0.0.9"))
            .with_port(port)
    }

    #[test]
    fn metadata_names_only_virtual_brokers() {
        let ctx = FakeContext::default();
        let response = MetadataResponse::default()
            .with_brokers(vec![broker(1, 9092), broker(2, 9093)])
            .with_controller_id(BrokerId(2))
            .with_cluster_id(Some(s("real-cluster")))
            .with_topics(vec![MetadataResponseTopic::default().with_partitions(
                vec![
                    MetadataResponsePartition::default()
                        .with_leader_id(BrokerId(2))
                        .with_replica_nodes(vec![BrokerId(2), BrokerId(1), BrokerId(3)])
                        .with_isr_nodes(vec![BrokerId(2)])
                        .with_offline_replicas(vec![BrokerId(3)]),
                    MetadataResponsePartition::default().with_leader_id(BrokerId(-1)),
                ],
            )]);
        let out = metadata(response, &ctx);
        assert_eq!(
            out.brokers
                .iter()
                .map(|b| (b.node_id.0, b.host.as_str(), b.port))
                .collect::<Vec<_>>(),
            vec![(100, "127.0.0.1", 9200), (101, "127.0.0.1", 9201)]
        );
        assert_eq!(out.controller_id, BrokerId(101));
        assert_eq!(out.cluster_id.as_deref(), Some("virtual-cluster"));
        let p = &out.topics[0].partitions[0];
        assert_eq!(p.leader_id, BrokerId(101));
        assert_eq!(
            p.replica_nodes,
            vec![BrokerId(101), BrokerId(100), BrokerId(102)]
        );
        assert_eq!(p.offline_replicas, vec![BrokerId(102)]);
        assert_eq!(out.topics[0].partitions[1].leader_id, BrokerId(-1));
    }

    #[test]
    fn controller_that_is_not_a_broker_becomes_a_listed_one() {
        let ctx = FakeContext::default();
        let response = MetadataResponse::default()
            .with_brokers(vec![broker(3, 1), broker(1, 2)])
            .with_controller_id(BrokerId(0));
        let out = metadata(response, &ctx);
        assert_eq!(out.controller_id, BrokerId(100));
        assert!(out.brokers.iter().any(|b| b.node_id == out.controller_id));
    }

    #[test]
    fn find_coordinator_both_forms() {
        let ctx = FakeContext::default();
        let old = FindCoordinatorResponse::default()
            .with_node_id(BrokerId(7))
            .with_host(s("10.1.1.1"))
            .with_port(9092);
        let out = find_coordinator(old, 3, &ctx);
        assert_eq!(
            (out.node_id.0, out.host.as_str(), out.port),
            (100, "127.0.0.1", 9200)
        );

        let batched = FindCoordinatorResponse::default().with_coordinators(vec![
            Coordinator::default()
                .with_node_id(BrokerId(7))
                .with_host(s("10.1.1.1"))
                .with_port(9092),
            Coordinator::default()
                .with_node_id(BrokerId(-1))
                .with_error_code(15)
                .with_host(s(""))
                .with_port(-1),
        ]);
        let out = find_coordinator(batched, 4, &ctx);
        assert_eq!(out.coordinators[0].node_id, BrokerId(100));
        assert_eq!(out.coordinators[0].port, 9200);
        assert_eq!(
            out.coordinators[1].node_id,
            BrokerId(-1),
            "errors stay as they are"
        );
    }

    #[test]
    fn produce_without_hints_is_left_alone() {
        let ctx = FakeContext::default();
        let response = ProduceResponse::default()
            .with_responses(vec![TopicProduceResponse::default()
                .with_partition_responses(vec![PartitionProduceResponse::default()])]);
        assert!(produce_leader_hints(response, &ctx).is_none());
    }

    #[test]
    fn produce_hints_name_virtual_brokers() {
        let ctx = FakeContext::default();
        let response = ProduceResponse::default()
            .with_responses(vec![TopicProduceResponse::default()
                .with_partition_responses(vec![PartitionProduceResponse::default()
                    .with_error_code(6)
                    .with_current_leader(
                        LeaderIdAndEpoch::default().with_leader_id(BrokerId(4)),
                    )])])
            .with_node_endpoints(vec![NodeEndpoint::default()
                .with_node_id(BrokerId(4))
                .with_host(s("10.2.2.2"))
                .with_port(9094)]);
        let out = produce_leader_hints(response, &ctx).unwrap();
        assert_eq!(out.node_endpoints[0].node_id, BrokerId(100));
        assert_eq!(out.node_endpoints[0].host.as_str(), "127.0.0.1");
        assert_eq!(
            out.responses[0].partition_responses[0]
                .current_leader
                .leader_id,
            BrokerId(100)
        );
    }

    proptest! {
        #[test]
        fn no_real_broker_survives_a_metadata_rewrite(
            ids in proptest::collection::vec(0i32..50, 1..8),
            controller in -1i32..50,
            leaders in proptest::collection::vec(-1i32..50, 0..20),
        ) {
            let ctx = FakeContext::default();
            let response = MetadataResponse::default()
                .with_brokers(ids.iter().map(|&id| broker(id, 9000 + id)).collect())
                .with_controller_id(BrokerId(controller))
                .with_topics(vec![MetadataResponseTopic::default().with_partitions(
                    leaders.iter().map(|&l| MetadataResponsePartition::default()
                        .with_leader_id(BrokerId(l))
                        .with_replica_nodes(vec![BrokerId(l.max(0))])).collect())]);
            let out = metadata(response, &ctx);
            for b in &out.brokers {
                prop_assert!(b.node_id.0 >= 100);
                prop_assert_eq!(b.host.as_str(), "127.0.0.1");
                prop_assert_eq!(b.port, 9100 + b.node_id.0);
            }
            prop_assert!(out.brokers.iter().any(|b| b.node_id == out.controller_id));
            for p in &out.topics[0].partitions {
                prop_assert!(p.leader_id.0 == -1 || p.leader_id.0 >= 100);
                prop_assert!(p.replica_nodes.iter().all(|r| r.0 >= 100));
            }
        }
    }
}
