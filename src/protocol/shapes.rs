//! The shapes of the broker responses switchyard decodes with the protocol
//! crate, walked before the crate sees them.
//!
//! kafka-protocol 0.18 sizes each array from the count on the wire before
//! reading an element: a response with a corrupt count (a broken broker, or
//! anything between switchyard and a broker) could make it ask for
//! gigabytes and abort the process, taking every client connection with
//! it. A response is decoded only once its walk shows that every array
//! holds as many elements as it claims, so the crate allocates for what is
//! really there. The shapes follow Apache Kafka's message definitions
//! (fields by version, flexible versions ending each structure with tagged
//! fields); tests check each against the crate's own encoding in every
//! version.

use kafka_protocol::messages::ApiKey;

use super::reader::Cursor;

/// What one field holds on the wire.
#[derive(Clone, Copy)]
enum Kind {
    I8,
    I16,
    I32,
    I64,
    Uuid,
    Bool,
    /// A (nullable) string, compact in flexible versions.
    Str,
    /// (Nullable) bytes: an int32 length, or compact in flexible versions.
    Bytes,
    /// A structure.
    Struct(&'static Shape),
    /// An array of structures, compact in flexible versions.
    Array(&'static Shape),
    /// An array of int32.
    I32s,
}

/// A field present in versions `from..=to`.
struct Field(i16, i16, Kind);

/// A tagged field (flexible versions) known from version `from`.
struct Tagged(u32, i16, Kind);

struct Shape {
    fields: &'static [Field],
    tagged: &'static [Tagged],
}

const ALL: i16 = i16::MAX;

const fn shape(fields: &'static [Field]) -> Shape {
    Shape {
        fields,
        tagged: &[],
    }
}

use Kind::*;

const METADATA_BROKER: Shape = shape(&[
    Field(0, ALL, I32),
    Field(0, ALL, Str),
    Field(0, ALL, I32),
    Field(1, ALL, Str),
]);
const METADATA_PARTITION: Shape = shape(&[
    Field(0, ALL, I16),
    Field(0, ALL, I32),
    Field(0, ALL, I32),
    Field(7, ALL, I32),
    Field(0, ALL, I32s),
    Field(0, ALL, I32s),
    Field(5, ALL, I32s),
]);
const METADATA_TOPIC: Shape = shape(&[
    Field(0, ALL, I16),
    Field(0, ALL, Str),
    Field(10, ALL, Uuid),
    Field(1, ALL, Bool),
    Field(0, ALL, Array(&METADATA_PARTITION)),
    Field(8, ALL, I32),
]);
const METADATA: Shape = shape(&[
    Field(3, ALL, I32),
    Field(0, ALL, Array(&METADATA_BROKER)),
    Field(2, ALL, Str),
    Field(1, ALL, I32),
    Field(0, ALL, Array(&METADATA_TOPIC)),
    Field(8, 10, I32),
    Field(13, ALL, I16),
]);

const COORDINATOR: Shape = shape(&[
    Field(4, ALL, Str),
    Field(4, ALL, I32),
    Field(4, ALL, Str),
    Field(4, ALL, I32),
    Field(4, ALL, I16),
    Field(4, ALL, Str),
]);
const FIND_COORDINATOR: Shape = shape(&[
    Field(1, ALL, I32),
    Field(0, 3, I16),
    Field(1, 3, Str),
    Field(0, 3, I32),
    Field(0, 3, Str),
    Field(0, 3, I32),
    Field(4, ALL, Array(&COORDINATOR)),
]);

const CLUSTER_BROKER: Shape = shape(&[
    Field(0, ALL, I32),
    Field(0, ALL, Str),
    Field(0, ALL, I32),
    Field(0, ALL, Str),
    Field(2, ALL, Bool),
]);
const DESCRIBE_CLUSTER: Shape = shape(&[
    Field(0, ALL, I32),
    Field(0, ALL, I16),
    Field(0, ALL, Str),
    Field(1, ALL, I8),
    Field(0, ALL, Str),
    Field(0, ALL, I32),
    Field(0, ALL, Array(&CLUSTER_BROKER)),
    Field(0, ALL, I32),
]);

const API_VERSION: Shape = shape(&[Field(0, ALL, I16), Field(0, ALL, I16), Field(0, ALL, I16)]);
const FEATURE: Shape = shape(&[Field(3, ALL, Str), Field(3, ALL, I16), Field(3, ALL, I16)]);
const API_VERSIONS: Shape = Shape {
    fields: &[
        Field(0, ALL, I16),
        Field(0, ALL, Array(&API_VERSION)),
        Field(1, ALL, I32),
    ],
    tagged: &[
        Tagged(0, 3, Array(&FEATURE)),
        Tagged(1, 3, I64),
        Tagged(2, 3, Array(&FEATURE)),
        Tagged(3, 3, Bool),
    ],
};

const RECORD_ERROR: Shape = shape(&[Field(8, ALL, I32), Field(8, ALL, Str)]);
const LEADER: Shape = shape(&[Field(10, ALL, I32), Field(10, ALL, I32)]);
const PRODUCE_PARTITION: Shape = Shape {
    fields: &[
        Field(0, ALL, I32),
        Field(0, ALL, I16),
        Field(0, ALL, I64),
        Field(2, ALL, I64),
        Field(5, ALL, I64),
        Field(8, ALL, Array(&RECORD_ERROR)),
        Field(8, ALL, Str),
    ],
    tagged: &[Tagged(0, 10, Struct(&LEADER))],
};
const PRODUCE_TOPIC: Shape = shape(&[
    Field(0, 12, Str),
    Field(13, ALL, Uuid),
    Field(0, ALL, Array(&PRODUCE_PARTITION)),
]);
const NODE_ENDPOINT: Shape = shape(&[
    Field(10, ALL, I32),
    Field(10, ALL, Str),
    Field(10, ALL, I32),
    Field(10, ALL, Str),
]);
const PRODUCE: Shape = Shape {
    fields: &[Field(0, ALL, Array(&PRODUCE_TOPIC)), Field(1, ALL, I32)],
    tagged: &[Tagged(0, 10, Array(&NODE_ENDPOINT))],
};

const COMMIT_PARTITION: Shape = shape(&[Field(0, ALL, I32), Field(0, ALL, I16)]);
const COMMIT_TOPIC: Shape = shape(&[
    Field(0, 9, Str),
    Field(10, ALL, Uuid),
    Field(0, ALL, Array(&COMMIT_PARTITION)),
]);
const OFFSET_COMMIT: Shape = shape(&[Field(3, ALL, I32), Field(0, ALL, Array(&COMMIT_TOPIC))]);

const FETCHED_PARTITION: Shape = shape(&[
    Field(0, ALL, I32),
    Field(0, ALL, I64),
    Field(5, ALL, I32),
    Field(0, ALL, Str),
    Field(0, ALL, I16),
]);
const FETCHED_TOPIC: Shape = shape(&[
    Field(0, 9, Str),
    Field(10, ALL, Uuid),
    Field(0, ALL, Array(&FETCHED_PARTITION)),
]);
const FETCHED_GROUP: Shape = shape(&[
    Field(8, ALL, Str),
    Field(8, ALL, Array(&FETCHED_TOPIC)),
    Field(8, ALL, I16),
]);
const OFFSET_FETCH: Shape = shape(&[
    Field(3, ALL, I32),
    Field(0, 7, Array(&FETCHED_TOPIC)),
    Field(2, 7, I16),
    Field(8, ALL, Array(&FETCHED_GROUP)),
]);

const ABORTED: Shape = shape(&[Field(0, ALL, I64), Field(0, ALL, I64)]);
const EPOCH_END: Shape = shape(&[Field(12, ALL, I32), Field(12, ALL, I64)]);
const LEADER_EPOCH: Shape = shape(&[Field(12, ALL, I32), Field(12, ALL, I32)]);
const SNAPSHOT: Shape = shape(&[Field(0, ALL, I64), Field(0, ALL, I32)]);
const FETCH_PARTITION: Shape = Shape {
    fields: &[
        Field(0, ALL, I32),
        Field(0, ALL, I16),
        Field(0, ALL, I64),
        Field(4, ALL, I64),
        Field(5, ALL, I64),
        Field(4, ALL, Array(&ABORTED)),
        Field(11, ALL, I32),
        Field(0, ALL, Bytes),
    ],
    tagged: &[
        Tagged(0, 12, Struct(&EPOCH_END)),
        Tagged(1, 12, Struct(&LEADER_EPOCH)),
        Tagged(2, 12, Struct(&SNAPSHOT)),
    ],
};
const FETCH_TOPIC: Shape = shape(&[
    Field(0, 12, Str),
    Field(13, ALL, Uuid),
    Field(0, ALL, Array(&FETCH_PARTITION)),
]);
const FETCH_ENDPOINT: Shape = shape(&[
    Field(16, ALL, I32),
    Field(16, ALL, Str),
    Field(16, ALL, I32),
    Field(16, ALL, Str),
]);
const FETCH: Shape = Shape {
    fields: &[
        Field(1, ALL, I32),
        Field(7, ALL, I16),
        Field(7, ALL, I32),
        Field(0, ALL, Array(&FETCH_TOPIC)),
    ],
    tagged: &[Tagged(0, 16, Array(&FETCH_ENDPOINT))],
};

const LISTED_PARTITION: Shape = shape(&[
    Field(0, ALL, I32),
    Field(0, ALL, I16),
    Field(1, ALL, I64),
    Field(1, ALL, I64),
    Field(4, ALL, I32),
]);
const LISTED_TOPIC: Shape = shape(&[Field(0, ALL, Str), Field(0, ALL, Array(&LISTED_PARTITION))]);
const LIST_OFFSETS: Shape = shape(&[Field(2, ALL, I32), Field(0, ALL, Array(&LISTED_TOPIC))]);

const INIT_PRODUCER_ID: Shape = shape(&[
    Field(0, ALL, I32),
    Field(0, ALL, I16),
    Field(0, ALL, I64),
    Field(0, ALL, I16),
    Field(6, ALL, I64),
    Field(6, ALL, I16),
]);

const CREATED_CONFIG: Shape = shape(&[
    Field(5, ALL, Str),
    Field(5, ALL, Str),
    Field(5, ALL, Bool),
    Field(5, ALL, I8),
    Field(5, ALL, Bool),
]);
const CREATED_TOPIC: Shape = Shape {
    fields: &[
        Field(0, ALL, Str),
        Field(7, ALL, Uuid),
        Field(0, ALL, I16),
        Field(1, ALL, Str),
        Field(5, ALL, I32),
        Field(5, ALL, I16),
        Field(5, ALL, Array(&CREATED_CONFIG)),
    ],
    tagged: &[Tagged(0, 5, I16)],
};
const CREATE_TOPICS: Shape = shape(&[Field(2, ALL, I32), Field(0, ALL, Array(&CREATED_TOPIC))]);

const SYNONYM: Shape = shape(&[Field(1, ALL, Str), Field(1, ALL, Str), Field(1, ALL, I8)]);
const CONFIG_ENTRY: Shape = shape(&[
    Field(0, ALL, Str),
    Field(0, ALL, Str),
    Field(0, ALL, Bool),
    Field(0, ALL, I8),
    Field(0, ALL, Bool),
    Field(1, ALL, Array(&SYNONYM)),
    Field(3, ALL, I8),
    Field(3, ALL, Str),
]);
const CONFIG_RESULT: Shape = shape(&[
    Field(0, ALL, I16),
    Field(0, ALL, Str),
    Field(0, ALL, I8),
    Field(0, ALL, Str),
    Field(0, ALL, Array(&CONFIG_ENTRY)),
]);
const DESCRIBE_CONFIGS: Shape = shape(&[Field(0, ALL, I32), Field(0, ALL, Array(&CONFIG_RESULT))]);

const LEFT_MEMBER: Shape = shape(&[Field(3, ALL, Str), Field(3, ALL, Str), Field(3, ALL, I16)]);
const LEAVE_GROUP: Shape = shape(&[
    Field(1, ALL, I32),
    Field(0, ALL, I16),
    Field(3, ALL, Array(&LEFT_MEMBER)),
]);

/// The shape of a response kind and the first version whose encoding is
/// flexible; `None` for responses switchyard never decodes.
fn shape_of(api: ApiKey) -> Option<(&'static Shape, i16)> {
    Some(match api {
        ApiKey::Metadata => (&METADATA, 9),
        ApiKey::FindCoordinator => (&FIND_COORDINATOR, 3),
        ApiKey::DescribeCluster => (&DESCRIBE_CLUSTER, 0),
        ApiKey::ApiVersions => (&API_VERSIONS, 3),
        ApiKey::Produce => (&PRODUCE, 9),
        ApiKey::OffsetCommit => (&OFFSET_COMMIT, 8),
        ApiKey::OffsetFetch => (&OFFSET_FETCH, 6),
        ApiKey::Fetch => (&FETCH, 12),
        ApiKey::ListOffsets => (&LIST_OFFSETS, 6),
        ApiKey::InitProducerId => (&INIT_PRODUCER_ID, 2),
        ApiKey::CreateTopics => (&CREATE_TOPICS, 5),
        ApiKey::DescribeConfigs => (&DESCRIBE_CONFIGS, 4),
        ApiKey::LeaveGroup => (&LEAVE_GROUP, 4),
        _ => return None,
    })
}

/// Whether a response body (after its header) holds everything its counts
/// claim; the reason when it does not. A kind without a known shape is
/// refused: it must not reach the crate unchecked.
pub fn check_response(api: ApiKey, version: i16, body: &[u8]) -> Result<(), String> {
    let Some((shape, flexible_from)) = shape_of(api) else {
        return Err(format!("no shape known for {api:?} responses"));
    };
    let mut c = Cursor::new(body, 0);
    walk(&mut c, shape, version, version >= flexible_from).ok_or_else(|| {
        format!(
            "{api:?} v{version} response is malformed: its contents run out at byte {} of {}",
            c.pos,
            body.len()
        )
    })
}

fn walk(c: &mut Cursor<'_>, shape: &Shape, version: i16, flexible: bool) -> Option<()> {
    for Field(from, to, kind) in shape.fields {
        if (*from..=*to).contains(&version) {
            walk_kind(c, *kind, version, flexible)?;
        }
    }
    if !flexible {
        return Some(());
    }
    let count = c.unsigned_varint()?;
    for _ in 0..count {
        let tag = c.unsigned_varint()?;
        let size = c.unsigned_varint()? as usize;
        let known = shape
            .tagged
            .iter()
            .find(|Tagged(t, from, _)| *t == tag && version >= *from);
        match known {
            // The crate reads a known tagged field by its contents, not by
            // its size: walked the same way, so that what is checked is
            // what the crate will read.
            Some(Tagged(_, _, kind)) => walk_kind(c, *kind, version, flexible)?,
            None => {
                c.take(size)?;
            }
        }
    }
    Some(())
}

fn walk_kind(c: &mut Cursor<'_>, kind: Kind, version: i16, flexible: bool) -> Option<()> {
    match kind {
        I8 | Bool => c.take(1).map(drop),
        I16 => c.take(2).map(drop),
        I32 => c.take(4).map(drop),
        I64 => c.take(8).map(drop),
        Uuid => c.take(16).map(drop),
        Str => c.string(flexible).map(drop),
        Bytes if flexible => c.string(true).map(drop),
        Bytes => match c.i32()? {
            -1 => Some(()),
            n => c.take(usize::try_from(n).ok()?).map(drop),
        },
        I32s => {
            let count = c.array_len(flexible)?.unwrap_or(0);
            c.take(count.checked_mul(4)?).map(drop)
        }
        Struct(shape) => walk(c, shape, version, flexible),
        Array(shape) => {
            let count = c.array_len(flexible)?.unwrap_or(0);
            for _ in 0..count {
                walk(c, shape, version, flexible)?;
            }
            Some(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{Encodable, StrBytes};

    fn s(v: &str) -> StrBytes {
        StrBytes::from_string(v.to_owned())
    }

    fn encoded<M: Encodable>(message: &M, version: i16) -> Vec<u8> {
        let mut buf = BytesMut::new();
        message.encode(&mut buf, version).unwrap();
        buf.to_vec()
    }

    /// The crate's encoding of a well-filled message is accepted in every
    /// version; cuts of it never panic the walk.
    fn accepts_every_version<M: Encodable>(
        api: ApiKey,
        versions: std::ops::RangeInclusive<i16>,
        message: impl Fn(i16) -> M,
    ) {
        for version in versions {
            let body = encoded(&message(version), version);
            assert_eq!(
                check_response(api, version, &body),
                Ok(()),
                "{api:?} v{version}"
            );
            for cut in [1, 2, body.len() / 2, body.len() - 1] {
                if cut < body.len() {
                    // A cut body may still walk when it ends on a field
                    // boundary; what matters is that it never panics.
                    let _ = check_response(api, version, &body[..cut]);
                }
            }
        }
    }

    #[test]
    fn metadata_in_every_version() {
        use metadata_response::*;
        accepts_every_version(ApiKey::Metadata, 0..=13, |_| {
            MetadataResponse::default()
                .with_brokers(vec![MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(s("h"))
                    .with_port(9092)
                    .with_rack(Some(s("r")))])
                .with_cluster_id(Some(s("c")))
                .with_topics(vec![MetadataResponseTopic::default()
                    .with_name(Some(TopicName(s("t"))))
                    .with_partitions(vec![MetadataResponsePartition::default()
                        .with_replica_nodes(vec![BrokerId(1), BrokerId(2)])
                        .with_isr_nodes(vec![BrokerId(1)])
                        .with_offline_replicas(vec![BrokerId(3)])])])
        });
    }

    #[test]
    fn find_coordinator_in_every_version() {
        use find_coordinator_response::*;
        accepts_every_version(ApiKey::FindCoordinator, 0..=6, |version| {
            let response = FindCoordinatorResponse::default();
            match version {
                0 => response.with_host(s("h")),
                1..=3 => response.with_host(s("h")).with_error_message(Some(s("e"))),
                _ => response.with_coordinators(vec![Coordinator::default()
                    .with_key(s("g"))
                    .with_host(s("h"))
                    .with_error_message(Some(s("e")))]),
            }
        });
    }

    #[test]
    fn describe_cluster_in_every_version() {
        use describe_cluster_response::*;
        accepts_every_version(ApiKey::DescribeCluster, 0..=2, |_| {
            DescribeClusterResponse::default()
                .with_cluster_id(s("c"))
                .with_brokers(vec![DescribeClusterBroker::default()
                    .with_host(s("h"))
                    .with_rack(Some(s("r")))])
        });
    }

    #[test]
    fn api_versions_in_every_version_with_features() {
        use api_versions_response::*;
        accepts_every_version(ApiKey::ApiVersions, 0..=4, |_| {
            ApiVersionsResponse::default()
                .with_api_keys(vec![ApiVersion::default().with_max_version(9)])
                .with_supported_features(vec![SupportedFeatureKey::default()
                    .with_name(s("f"))
                    .with_max_version(2)])
                .with_finalized_features_epoch(7)
                .with_finalized_features(vec![FinalizedFeatureKey::default().with_name(s("f"))])
                .with_zk_migration_ready(true)
        });
    }

    #[test]
    fn produce_in_every_version_with_leader_hints() {
        use produce_response::*;
        accepts_every_version(ApiKey::Produce, 3..=13, |_| {
            ProduceResponse::default()
                .with_responses(vec![TopicProduceResponse::default()
                    .with_name(TopicName(s("t")))
                    .with_partition_responses(vec![PartitionProduceResponse::default()
                        .with_record_errors(vec![BatchIndexAndErrorMessage::default()
                            .with_batch_index_error_message(Some(s("bad")))])
                        .with_error_message(Some(s("e")))
                        .with_current_leader(
                            LeaderIdAndEpoch::default()
                                .with_leader_id(BrokerId(2))
                                .with_leader_epoch(5),
                        )])])
                .with_node_endpoints(vec![NodeEndpoint::default()
                    .with_node_id(BrokerId(2))
                    .with_host(s("h"))
                    .with_rack(Some(s("r")))])
        });
    }

    #[test]
    fn offset_commit_and_fetch_in_every_version() {
        use offset_commit_response::*;
        accepts_every_version(ApiKey::OffsetCommit, 2..=10, |_| {
            OffsetCommitResponse::default().with_topics(vec![OffsetCommitResponseTopic::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![OffsetCommitResponsePartition::default()])])
        });
        use offset_fetch_response::*;
        accepts_every_version(ApiKey::OffsetFetch, 1..=10, |version| {
            let response = OffsetFetchResponse::default();
            if version <= 7 {
                response.with_topics(vec![OffsetFetchResponseTopic::default()
                    .with_name(TopicName(s("t")))
                    .with_partitions(vec![
                        OffsetFetchResponsePartition::default().with_metadata(Some(s("m")))
                    ])])
            } else {
                response.with_groups(vec![OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(s("g")))
                    .with_topics(vec![OffsetFetchResponseTopics::default()
                        .with_name(TopicName(s("t")))
                        .with_partitions(vec![
                            OffsetFetchResponsePartitions::default().with_metadata(Some(s("m")))
                        ])])])
            }
        });
    }

    #[test]
    fn a_count_the_body_cannot_hold_is_refused() {
        // Metadata v1: throttle absent, brokers count 2^31-1, nothing after.
        let body = [0x7f, 0xff, 0xff, 0xff];
        let refused = check_response(ApiKey::Metadata, 1, &body).unwrap_err();
        assert!(refused.contains("Metadata v1"), "{refused}");
        // Metadata v12: one topic claiming 1,000,000 partitions in 20 bytes.
        let mut body = vec![0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 2];
        body.extend_from_slice(&[0, 0, 2, b't']);
        body.extend_from_slice(&[0u8; 16]);
        body.push(0);
        body.extend_from_slice(&[0xc1, 0x84, 0x3d]); // varint 1,000,001
        assert!(check_response(ApiKey::Metadata, 12, &body).is_err());
        // Produce v10: node endpoints tagged field with a huge count.
        // No topics, throttle 0, one tagged field (tag 0, 5 bytes) whose
        // array claims 2^32 - 2 endpoints.
        let body = [1, 0, 0, 0, 0, 1, 0, 5, 0xff, 0xff, 0xff, 0xff, 0x0f];
        assert!(check_response(ApiKey::Produce, 10, &body).is_err());
    }

    #[test]
    fn fetch_in_every_version_with_records_and_tags() {
        use fetch_response::*;
        accepts_every_version(ApiKey::Fetch, 4..=18, |version| {
            let mut partition = PartitionData::default()
                .with_aborted_transactions(Some(vec![AbortedTransaction::default()]))
                .with_records(Some(bytes::Bytes::from_static(b"0123456789")));
            if version >= 12 {
                partition = partition
                    .with_diverging_epoch(EpochEndOffset::default().with_epoch(3))
                    .with_current_leader(LeaderIdAndEpoch::default().with_leader_id(BrokerId(1)))
                    .with_snapshot_id(SnapshotId::default().with_end_offset(9));
            }
            let topic = if version >= 13 {
                FetchableTopicResponse::default().with_topic_id(uuid::Uuid::from_u128(7))
            } else {
                FetchableTopicResponse::default().with_topic(TopicName(s("t")))
            };
            let response = FetchResponse::default()
                .with_responses(vec![topic.with_partitions(vec![partition])]);
            if version >= 16 {
                response.with_node_endpoints(vec![NodeEndpoint::default().with_host(s("h"))])
            } else {
                response
            }
        });
    }

    #[test]
    fn the_mirror_clients_other_answers_in_every_version() {
        use list_offsets_response::*;
        accepts_every_version(ApiKey::ListOffsets, 1..=10, |_| {
            ListOffsetsResponse::default().with_topics(vec![ListOffsetsTopicResponse::default()
                .with_name(TopicName(s("t")))
                .with_partitions(vec![ListOffsetsPartitionResponse::default()])])
        });
        accepts_every_version(ApiKey::InitProducerId, 0..=6, |_| {
            InitProducerIdResponse::default().with_producer_id(ProducerId(5))
        });
        use create_topics_response::*;
        accepts_every_version(ApiKey::CreateTopics, 2..=7, |version| {
            let topic = CreatableTopicResult::default()
                .with_name(TopicName(s("t")))
                .with_error_message(Some(s("e")));
            let topic = if version >= 5 {
                topic
                    .with_configs(Some(vec![CreatableTopicConfigs::default()
                        .with_name(s("n"))
                        .with_value(Some(s("v")))]))
                    .with_topic_config_error_code(3)
            } else {
                topic
            };
            CreateTopicsResponse::default().with_topics(vec![topic])
        });
        use describe_configs_response::*;
        accepts_every_version(ApiKey::DescribeConfigs, 1..=4, |version| {
            let entry = DescribeConfigsResourceResult::default()
                .with_name(s("n"))
                .with_value(Some(s("v")))
                .with_synonyms(vec![DescribeConfigsSynonym::default().with_name(s("s"))]);
            let entry = if version >= 3 {
                entry.with_documentation(Some(s("d")))
            } else {
                entry
            };
            DescribeConfigsResponse::default().with_results(vec![DescribeConfigsResult::default()
                .with_resource_name(s("t"))
                .with_configs(vec![entry])])
        });
        use leave_group_response::*;
        accepts_every_version(ApiKey::LeaveGroup, 0..=5, |version| {
            let response = LeaveGroupResponse::default();
            if version >= 3 {
                response.with_members(vec![MemberResponse::default()
                    .with_member_id(s("m"))
                    .with_group_instance_id(Some(s("i")))])
            } else {
                response
            }
        });
    }

    #[test]
    fn kinds_without_a_shape_are_refused() {
        assert!(check_response(ApiKey::JoinGroup, 4, &[]).is_err());
        assert!(check_response(ApiKey::SyncGroup, 3, &[0; 16]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(version in 0i16..=13, data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..96)) {
            for api in [ApiKey::Metadata, ApiKey::FindCoordinator, ApiKey::DescribeCluster,
                        ApiKey::ApiVersions, ApiKey::Produce, ApiKey::OffsetCommit, ApiKey::OffsetFetch,
                        ApiKey::Fetch, ApiKey::ListOffsets, ApiKey::InitProducerId,
                        ApiKey::CreateTopics, ApiKey::DescribeConfigs, ApiKey::LeaveGroup] {
                let _ = check_response(api, version, &data);
            }
        }
    }
}
