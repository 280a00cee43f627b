//! The one table of API versions switchyard understands and advertises.
//!
//! Every API key is listed on purpose. `None` means the proxy does not offer
//! the API at all: broker-to-broker and controller APIs, and client APIs whose
//! requests or responses carry real broker ids or topic ids that the proxy
//! does not translate yet. Caps below the protocol crate's maximum say why.

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

const fn range(min: i16, max: i16) -> Option<VersionRange> {
    Some(VersionRange { min, max })
}

/// The versions of `api` that the proxy can parse and route correctly.
pub fn proxy_versions(api: ApiKey) -> Option<VersionRange> {
    use ApiKey::*;
    match api {
        // v13 carries topic ids instead of names.
        Produce => range(3, 12),
        // v11 adds follower fetching (preferred_read_replica names a real
        // broker) and v12 leader hints with real ids; stopping at v10 keeps
        // every Fetch response free of broker ids, so it is never decoded.
        Fetch => range(4, 10),
        ListOffsets => range(1, 10),
        Metadata => range(0, 13),
        // v10 carries topic ids.
        OffsetCommit => range(2, 9),
        OffsetFetch => range(1, 9),
        FindCoordinator => range(0, 6),
        JoinGroup => range(0, 9),
        Heartbeat => range(0, 4),
        LeaveGroup => range(0, 5),
        SyncGroup => range(0, 5),
        DescribeGroups => range(0, 6),
        ListGroups => range(0, 5),
        SaslHandshake => range(0, 1),
        ApiVersions => range(0, 4),
        CreateTopics => range(2, 7),
        // v6 may name topics by id.
        DeleteTopics => range(1, 5),
        DeleteRecords => range(0, 2),
        InitProducerId => range(0, 6),
        OffsetForLeaderEpoch => range(2, 4),
        AddPartitionsToTxn => range(0, 5),
        AddOffsetsToTxn => range(0, 4),
        EndTxn => range(0, 5),
        TxnOffsetCommit => range(0, 5),
        DescribeAcls => range(1, 3),
        CreateAcls => range(1, 3),
        DeleteAcls => range(1, 3),
        DescribeConfigs => range(1, 4),
        AlterConfigs => range(0, 2),
        AlterReplicaLogDirs => range(1, 2),
        DescribeLogDirs => range(1, 4),
        SaslAuthenticate => range(0, 2),
        CreatePartitions => range(0, 3),
        CreateDelegationToken => range(1, 3),
        RenewDelegationToken => range(1, 2),
        ExpireDelegationToken => range(1, 2),
        DescribeDelegationToken => range(1, 3),
        DeleteGroups => range(0, 2),
        ElectLeaders => range(0, 2),
        IncrementalAlterConfigs => range(0, 1),
        OffsetDelete => range(0, 0),
        DescribeClientQuotas => range(0, 1),
        AlterClientQuotas => range(0, 1),
        DescribeUserScramCredentials => range(0, 0),
        AlterUserScramCredentials => range(0, 0),
        UpdateFeatures => range(0, 2),
        DescribeCluster => range(0, 2),
        DescribeProducers => range(0, 0),
        DescribeTransactions => range(0, 0),
        ListTransactions => range(0, 2),
        GetTelemetrySubscriptions => range(0, 0),
        PushTelemetry => range(0, 0),
        ListConfigResources => range(0, 1),
        // Replica lists are real broker ids.
        AlterPartitionReassignments | ListPartitionReassignments | DescribeQuorum => None,
        // Leader and replica ids, and topic ids.
        DescribeTopicPartitions => None,
        // KIP-848 and share groups speak in topic ids.
        ConsumerGroupHeartbeat | ConsumerGroupDescribe => None,
        ShareGroupHeartbeat | ShareGroupDescribe | ShareFetch | ShareAcknowledge => None,
        // Broker-to-broker and controller traffic never comes from a client.
        WriteTxnMarkers
        | Vote
        | BeginQuorumEpoch
        | EndQuorumEpoch
        | AlterPartition
        | Envelope
        | FetchSnapshot
        | BrokerRegistration
        | BrokerHeartbeat
        | UnregisterBroker
        | AllocateProducerIds
        | ControllerRegistration
        | AssignReplicasToDirs
        | AddRaftVoter
        | RemoveRaftVoter
        | UpdateRaftVoter
        | InitializeShareGroupState
        | ReadShareGroupState
        | WriteShareGroupState
        | DeleteShareGroupState
        | ReadShareGroupStateSummary
        | DescribeShareGroupOffsets
        | AlterShareGroupOffsets
        | DeleteShareGroupOffsets => None,
    }
}

/// Whether the proxy accepts a request of this version from a client.
pub fn is_supported(api: ApiKey, version: i16) -> bool {
    proxy_versions(api).is_some_and(|r| r.min <= version && version <= r.max)
}

pub fn api_name(api: ApiKey) -> &'static str {
    API_NAMES[api as usize]
}

/// Static names for metric labels, indexed by api key.
static API_NAMES: [&str; 93] = {
    let mut names = ["unknown"; 93];
    let mut i = 0;
    while i < REVIEWED_CRATE_VERSIONS.len() {
        let (api, name) = (REVIEWED_CRATE_VERSIONS[i].0, REVIEWED_NAMES[i]);
        names[api as usize] = name;
        i += 1;
    }
    names
};

/// The versions kafka-protocol supported when this table was last reviewed.
/// A test compares this with the crate, so that an upgrade which adds
/// versions (new fields, maybe broker ids or topic ids) is looked at before
/// anything is advertised.
pub(crate) const REVIEWED_CRATE_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 13),
    (ApiKey::Fetch, 4, 18),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::OffsetCommit, 2, 10),
    (ApiKey::OffsetFetch, 1, 10),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 6),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::TxnOffsetCommit, 0, 5),
    (ApiKey::DescribeAcls, 1, 3),
    (ApiKey::CreateAcls, 1, 3),
    (ApiKey::DeleteAcls, 1, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::AlterReplicaLogDirs, 1, 2),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::CreateDelegationToken, 1, 3),
    (ApiKey::RenewDelegationToken, 1, 2),
    (ApiKey::ExpireDelegationToken, 1, 2),
    (ApiKey::DescribeDelegationToken, 1, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeClientQuotas, 0, 1),
    (ApiKey::AlterClientQuotas, 0, 1),
    (ApiKey::DescribeUserScramCredentials, 0, 0),
    (ApiKey::AlterUserScramCredentials, 0, 0),
    (ApiKey::Vote, 0, 2),
    (ApiKey::BeginQuorumEpoch, 0, 1),
    (ApiKey::EndQuorumEpoch, 0, 1),
    (ApiKey::DescribeQuorum, 0, 2),
    (ApiKey::AlterPartition, 2, 3),
    (ApiKey::UpdateFeatures, 0, 2),
    (ApiKey::Envelope, 0, 0),
    (ApiKey::FetchSnapshot, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeProducers, 0, 0),
    (ApiKey::BrokerRegistration, 0, 4),
    (ApiKey::BrokerHeartbeat, 0, 1),
    (ApiKey::UnregisterBroker, 0, 0),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 2),
    (ApiKey::AllocateProducerIds, 0, 0),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::ControllerRegistration, 0, 0),
    (ApiKey::GetTelemetrySubscriptions, 0, 0),
    (ApiKey::PushTelemetry, 0, 0),
    (ApiKey::AssignReplicasToDirs, 0, 0),
    (ApiKey::ListConfigResources, 0, 1),
    (ApiKey::DescribeTopicPartitions, 0, 0),
    (ApiKey::ShareGroupHeartbeat, 1, 1),
    (ApiKey::ShareGroupDescribe, 1, 1),
    (ApiKey::ShareFetch, 1, 1),
    (ApiKey::ShareAcknowledge, 1, 1),
    (ApiKey::AddRaftVoter, 0, 0),
    (ApiKey::RemoveRaftVoter, 0, 0),
    (ApiKey::UpdateRaftVoter, 0, 0),
    (ApiKey::InitializeShareGroupState, 0, 0),
    (ApiKey::ReadShareGroupState, 0, 0),
    (ApiKey::WriteShareGroupState, 0, 0),
    (ApiKey::DeleteShareGroupState, 0, 0),
    (ApiKey::ReadShareGroupStateSummary, 0, 0),
    (ApiKey::DescribeShareGroupOffsets, 0, 0),
    (ApiKey::AlterShareGroupOffsets, 0, 0),
    (ApiKey::DeleteShareGroupOffsets, 0, 0),
];

const REVIEWED_NAMES: &[&str] = &[
    "Produce",
    "Fetch",
    "ListOffsets",
    "Metadata",
    "OffsetCommit",
    "OffsetFetch",
    "FindCoordinator",
    "JoinGroup",
    "Heartbeat",
    "LeaveGroup",
    "SyncGroup",
    "DescribeGroups",
    "ListGroups",
    "SaslHandshake",
    "ApiVersions",
    "CreateTopics",
    "DeleteTopics",
    "DeleteRecords",
    "InitProducerId",
    "OffsetForLeaderEpoch",
    "AddPartitionsToTxn",
    "AddOffsetsToTxn",
    "EndTxn",
    "WriteTxnMarkers",
    "TxnOffsetCommit",
    "DescribeAcls",
    "CreateAcls",
    "DeleteAcls",
    "DescribeConfigs",
    "AlterConfigs",
    "AlterReplicaLogDirs",
    "DescribeLogDirs",
    "SaslAuthenticate",
    "CreatePartitions",
    "CreateDelegationToken",
    "RenewDelegationToken",
    "ExpireDelegationToken",
    "DescribeDelegationToken",
    "DeleteGroups",
    "ElectLeaders",
    "IncrementalAlterConfigs",
    "AlterPartitionReassignments",
    "ListPartitionReassignments",
    "OffsetDelete",
    "DescribeClientQuotas",
    "AlterClientQuotas",
    "DescribeUserScramCredentials",
    "AlterUserScramCredentials",
    "Vote",
    "BeginQuorumEpoch",
    "EndQuorumEpoch",
    "DescribeQuorum",
    "AlterPartition",
    "UpdateFeatures",
    "Envelope",
    "FetchSnapshot",
    "DescribeCluster",
    "DescribeProducers",
    "BrokerRegistration",
    "BrokerHeartbeat",
    "UnregisterBroker",
    "DescribeTransactions",
    "ListTransactions",
    "AllocateProducerIds",
    "ConsumerGroupHeartbeat",
    "ConsumerGroupDescribe",
    "ControllerRegistration",
    "GetTelemetrySubscriptions",
    "PushTelemetry",
    "AssignReplicasToDirs",
    "ListConfigResources",
    "DescribeTopicPartitions",
    "ShareGroupHeartbeat",
    "ShareGroupDescribe",
    "ShareFetch",
    "ShareAcknowledge",
    "AddRaftVoter",
    "RemoveRaftVoter",
    "UpdateRaftVoter",
    "InitializeShareGroupState",
    "ReadShareGroupState",
    "WriteShareGroupState",
    "DeleteShareGroupState",
    "ReadShareGroupStateSummary",
    "DescribeShareGroupOffsets",
    "AlterShareGroupOffsets",
    "DeleteShareGroupOffsets",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_crate_versions_match_the_reviewed_table() {
        let crate_keys: Vec<ApiKey> = ApiKey::iter().collect();
        assert_eq!(
            crate_keys.len(),
            REVIEWED_CRATE_VERSIONS.len(),
            "kafka-protocol gained or lost API keys: review protocol/versions.rs"
        );
        for &(api, min, max) in REVIEWED_CRATE_VERSIONS {
            let now = api.valid_versions();
            assert_eq!(
                (now.min, now.max),
                (min, max),
                "kafka-protocol now supports {api:?} v{}..v{}; review proxy_versions() before updating the table",
                now.min,
                now.max
            );
        }
    }

    #[test]
    fn proxy_versions_never_exceed_what_the_crate_parses() {
        for api in ApiKey::iter() {
            if let Some(ours) = proxy_versions(api) {
                let parsed = api.valid_versions();
                assert!(ours.min >= parsed.min && ours.max <= parsed.max, "{api:?}");
                assert!(!ours.is_empty(), "{api:?}");
            }
        }
    }

    #[test]
    fn topic_id_versions_are_not_offered() {
        assert_eq!(proxy_versions(ApiKey::Produce).unwrap().max, 12);
        assert!(proxy_versions(ApiKey::Fetch).unwrap().max < 13);
        assert_eq!(proxy_versions(ApiKey::OffsetFetch).unwrap().max, 9);
        assert_eq!(proxy_versions(ApiKey::OffsetCommit).unwrap().max, 9);
        assert!(proxy_versions(ApiKey::ConsumerGroupHeartbeat).is_none());
    }

    #[test]
    fn names_follow_keys() {
        assert_eq!(api_name(ApiKey::Produce), "Produce");
        assert_eq!(api_name(ApiKey::DescribeCluster), "DescribeCluster");
        for api in ApiKey::iter() {
            assert_ne!(api_name(api), "unknown", "{api:?}");
            assert_eq!(api_name(api), format!("{api:?}"));
        }
    }
}
