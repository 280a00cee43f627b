//! Request bodies walked for the facts switchyard acts on (a Produce's
//! partitions and acks, the groups and members of group requests, the
//! committed offsets of an OffsetCommit, ...), without decoding them and
//! without allocating from a count read off the wire.

use kafka_protocol::messages::ApiKey;

use super::header::{PeekError, RequestHeaderPeek};
use super::reader::Cursor;

/// One partition's data in a Produce request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducePartition {
    pub topic: String,
    pub partition: i32,
    /// Where the partition's record batches lie in the payload.
    pub records: Option<std::ops::Range<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceBody {
    pub transactional_id: Option<String>,
    pub acks: i16,
    pub partitions: Vec<ProducePartition>,
}

/// Walks a Produce request body (v3+) without allocating from any count it
/// reads: topics, partitions and where each partition's records lie.
pub fn walk_produce(payload: &[u8], header: &RequestHeaderPeek) -> Result<ProduceBody, PeekError> {
    let version = header.api_version;
    let flexible = version >= 9;
    let malformed = |reason| PeekError::MalformedBody {
        api: ApiKey::Produce,
        version,
        reason,
    };
    let mut c = Cursor::new(payload, header.body_offset);
    let transactional_id = c
        .string(flexible)
        .ok_or_else(|| malformed("transactional id runs past the frame"))?
        .map(|b| String::from_utf8_lossy(b).into_owned());
    let acks = c.i16().ok_or_else(|| malformed("no acks field"))?;
    c.i32().ok_or_else(|| malformed("no timeout"))?;
    let topics = c
        .array_len(flexible)
        .ok_or_else(|| malformed("topic count is wrong for the frame"))?
        .unwrap_or(0);
    let mut partitions = Vec::new();
    for _ in 0..topics {
        let name = c
            .string(flexible)
            .ok_or_else(|| malformed("topic name runs past the frame"))?
            .ok_or_else(|| malformed("null topic name"))?;
        let topic = String::from_utf8_lossy(name).into_owned();
        let count = c
            .array_len(flexible)
            .ok_or_else(|| malformed("partition count is wrong for the frame"))?
            .unwrap_or(0);
        for _ in 0..count {
            let partition = c.i32().ok_or_else(|| malformed("no partition index"))?;
            let len: i64 = if flexible {
                i64::from(
                    c.unsigned_varint()
                        .ok_or_else(|| malformed("no records length"))?,
                ) - 1
            } else {
                i64::from(c.i32().ok_or_else(|| malformed("no records length"))?)
            };
            let records = if len < 0 {
                None
            } else {
                let start = c.pos;
                c.take(len as usize)
                    .ok_or_else(|| malformed("records run past the frame"))?;
                Some(start..c.pos)
            };
            if flexible {
                c.skip_tagged_fields()
                    .ok_or_else(|| malformed("partition tags run past the frame"))?;
            }
            partitions.push(ProducePartition {
                topic: topic.clone(),
                partition,
                records,
            });
        }
        if flexible {
            c.skip_tagged_fields()
                .ok_or_else(|| malformed("topic tags run past the frame"))?;
        }
    }
    Ok(ProduceBody {
        transactional_id,
        acks,
        partitions,
    })
}

/// The consumer groups a FindCoordinator request asks about (none when it
/// asks for a transaction coordinator).
pub fn find_coordinator_groups(
    payload: &[u8],
    header: &RequestHeaderPeek,
) -> Result<Vec<String>, PeekError> {
    find_coordinator_keys(payload, header, 0)
}

/// The keys of a FindCoordinator request when they are of `wanted` type
/// (0: groups, 1: transactional ids); none otherwise. v0 asks for a group.
fn find_coordinator_keys(
    payload: &[u8],
    header: &RequestHeaderPeek,
    wanted: i8,
) -> Result<Vec<String>, PeekError> {
    let version = header.api_version;
    let malformed = |reason| PeekError::MalformedBody {
        api: ApiKey::FindCoordinator,
        version,
        reason,
    };
    let mut c = Cursor::new(payload, header.body_offset);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if version >= 4 {
        let key_type = c.i8().ok_or_else(|| malformed("no key type"))?;
        let count = c
            .array_len(true)
            .ok_or_else(|| malformed("key count is wrong for the frame"))?
            .unwrap_or(0);
        let mut keys = Vec::new();
        for _ in 0..count {
            let key = c
                .compact_nullable_string()
                .ok_or_else(|| malformed("key runs past the frame"))?;
            keys.extend(key.map(text));
        }
        return Ok(if key_type == wanted { keys } else { Vec::new() });
    }
    let key = if version >= 3 {
        c.compact_nullable_string()
    } else {
        c.nullable_string()
    }
    .ok_or_else(|| malformed("key runs past the frame"))?;
    let key_type = if version >= 1 {
        c.i8().ok_or_else(|| malformed("no key type"))?
    } else {
        0
    };
    Ok(if key_type == wanted {
        key.map(text).into_iter().collect()
    } else {
        Vec::new()
    })
}

/// The `acks` of a Produce request: 0 means the broker sends no response.
pub fn produce_acks(payload: &[u8], header: &RequestHeaderPeek) -> Result<i16, PeekError> {
    produce_acks_at(payload, header).map(|(acks, _)| acks)
}

/// `acks` and its position in the payload (so it can be patched in place).
pub fn produce_acks_at(
    payload: &[u8],
    header: &RequestHeaderPeek,
) -> Result<(i16, usize), PeekError> {
    let mut cursor = Cursor::new(payload, header.body_offset);
    let version = header.api_version;
    let malformed = |reason| PeekError::MalformedBody {
        api: ApiKey::Produce,
        version,
        reason,
    };
    if version >= 9 {
        cursor
            .skip_compact_string()
            .ok_or_else(|| malformed("transactional id runs past the frame"))?;
    } else if version >= 3 {
        cursor
            .skip_nullable_string()
            .ok_or_else(|| malformed("transactional id runs past the frame"))?;
    }
    let at = cursor.pos;
    let acks = cursor.i16().ok_or_else(|| malformed("no acks field"))?;
    Ok((acks, at))
}

/// `max_wait_ms` of a Fetch request: how long the broker may hold it.
pub fn fetch_max_wait_ms(payload: &[u8], header: &RequestHeaderPeek) -> Result<i32, PeekError> {
    let mut cursor = Cursor::new(payload, header.body_offset);
    let malformed = |reason| PeekError::MalformedBody {
        api: ApiKey::Fetch,
        version: header.api_version,
        reason,
    };
    if header.api_version <= 14 {
        cursor.i32().ok_or_else(|| malformed("no replica id"))?;
    }
    cursor.i32().ok_or_else(|| malformed("no max_wait_ms"))
}

/// `rebalance_timeout_ms` of a JoinGroup request (v0 has only the session
/// timeout, which then bounds the join).
pub fn join_group_wait_ms(payload: &[u8], header: &RequestHeaderPeek) -> Result<i32, PeekError> {
    let mut cursor = Cursor::new(payload, header.body_offset);
    let malformed = |reason| PeekError::MalformedBody {
        api: ApiKey::JoinGroup,
        version: header.api_version,
        reason,
    };
    let skipped = if header.api_version >= 6 {
        cursor.skip_compact_string()
    } else {
        cursor.skip_nullable_string()
    };
    skipped.ok_or_else(|| malformed("group id runs past the frame"))?;
    let session_timeout = cursor
        .i32()
        .ok_or_else(|| malformed("no session timeout"))?;
    if header.api_version == 0 {
        return Ok(session_timeout);
    }
    cursor
        .i32()
        .ok_or_else(|| malformed("no rebalance timeout"))
}

/// The transactional id of an InitProducerId request, if it has one.
pub fn init_producer_id_transactional_id(
    payload: &[u8],
    header: &RequestHeaderPeek,
) -> Result<Option<String>, PeekError> {
    let v = header.api_version;
    let mut c = Cursor::new(payload, header.body_offset);
    let id = if v >= 2 {
        c.compact_nullable_string()
    } else {
        c.nullable_string()
    }
    .ok_or(PeekError::MalformedBody {
        api: ApiKey::InitProducerId,
        version: v,
        reason: "transactional id runs past the frame",
    })?;
    Ok(id.map(|b| String::from_utf8_lossy(b).into_owned()))
}

/// The transactional ids a FindCoordinator request asks about (key type 1).
pub fn find_coordinator_transactional_ids(
    payload: &[u8],
    header: &RequestHeaderPeek,
) -> Result<Vec<String>, PeekError> {
    find_coordinator_keys(payload, header, 1)
}

/// Whether an InitProducerId request asks for a fresh idempotent producer
/// id: no transactional id and no existing producer id (v3+ may carry one
/// to bump its epoch).
pub fn wants_fresh_producer_id(
    payload: &[u8],
    header: &RequestHeaderPeek,
) -> Result<bool, PeekError> {
    let v = header.api_version;
    let malformed = |reason| PeekError::MalformedBody {
        api: ApiKey::InitProducerId,
        version: v,
        reason,
    };
    let mut c = Cursor::new(payload, header.body_offset);
    let transactional_id = if v >= 2 {
        c.compact_nullable_string()
    } else {
        c.nullable_string()
    }
    .ok_or_else(|| malformed("transactional id runs past the frame"))?;
    c.i32().ok_or_else(|| malformed("no transaction timeout"))?;
    let producer_id = if v >= 3 {
        let bytes = c.take(8).ok_or_else(|| malformed("no producer id"))?;
        i64::from_be_bytes(bytes.try_into().expect("8 bytes"))
    } else {
        -1
    };
    Ok(transactional_id.is_none() && producer_id < 0)
}

/// The client software name an ApiVersions request (v3+) carries, such as
/// "apache-kafka-java", "librdkafka" or "kgo" (franz-go).
pub fn api_versions_client_software(payload: &[u8], header: &RequestHeaderPeek) -> Option<String> {
    if header.api_version < 3 {
        return None;
    }
    let mut c = Cursor::new(payload, header.body_offset);
    let name = c.compact_nullable_string()??;
    Some(String::from_utf8_lossy(name).into_owned())
}

/// The group and member a group request speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRequest {
    pub group: String,
    /// Empty when the request names no member (a first JoinGroup, or an
    /// OffsetCommit v0).
    pub member: String,
    /// A static member's `group.instance.id` (JoinGroup v5+).
    pub instance: Option<String>,
}

/// Group id and member id of JoinGroup, SyncGroup, Heartbeat, OffsetCommit,
/// LeaveGroup and OffsetFetch (v0-7) requests; `None` for other requests.
pub fn group_member(
    payload: &[u8],
    header: &RequestHeaderPeek,
) -> Result<Option<GroupRequest>, PeekError> {
    enum Layout {
        Join,
        GenerationMember,
        Member,
        Members,
        GroupOnly,
    }
    let v = header.api_version;
    let (flexible, layout) = match header.api_key {
        ApiKey::JoinGroup => (v >= 6, Layout::Join),
        ApiKey::SyncGroup => (v >= 4, Layout::GenerationMember),
        ApiKey::Heartbeat => (v >= 4, Layout::GenerationMember),
        ApiKey::OffsetCommit if v >= 1 => (v >= 8, Layout::GenerationMember),
        ApiKey::OffsetCommit => (false, Layout::GroupOnly),
        ApiKey::LeaveGroup if v >= 3 => (v >= 4, Layout::Members),
        ApiKey::LeaveGroup => (false, Layout::Member),
        ApiKey::OffsetFetch if v < 8 => (v >= 6, Layout::GroupOnly),
        _ => return Ok(None),
    };
    let malformed = |reason| PeekError::MalformedBody {
        api: header.api_key,
        version: v,
        reason,
    };
    let mut c = Cursor::new(payload, header.body_offset);
    let string = |c: &mut Cursor<'_>| -> Result<String, PeekError> {
        let s = c
            .string(flexible)
            .ok_or_else(|| malformed("a string runs past the frame"))?;
        Ok(s.map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default())
    };
    let group = string(&mut c)?;
    let mut instance = None;
    let member = match layout {
        Layout::Join => {
            c.i32().ok_or_else(|| malformed("no session timeout"))?;
            if v >= 1 {
                c.i32().ok_or_else(|| malformed("no rebalance timeout"))?;
            }
            let member = string(&mut c)?;
            if v >= 5 {
                instance = Some(string(&mut c)?).filter(|i| !i.is_empty());
            }
            member
        }
        Layout::GenerationMember => {
            c.i32().ok_or_else(|| malformed("no generation id"))?;
            string(&mut c)?
        }
        Layout::Member => string(&mut c)?,
        Layout::Members => {
            let count = c
                .array_len(flexible)
                .ok_or_else(|| malformed("member count is wrong for the frame"))?
                .unwrap_or(0);
            if count > 0 {
                string(&mut c)?
            } else {
                String::new()
            }
        }
        Layout::GroupOnly => String::new(),
    };
    Ok(Some(GroupRequest {
        group,
        member,
        instance,
    }))
}

/// The partitions an OffsetCommit request commits, by topic.
pub fn offset_commit_partitions(
    payload: &[u8],
    header: &RequestHeaderPeek,
) -> Result<Vec<(String, Vec<i32>)>, PeekError> {
    let v = header.api_version;
    let flexible = v >= 8;
    let malformed = |reason| PeekError::MalformedBody {
        api: ApiKey::OffsetCommit,
        version: v,
        reason,
    };
    let mut c = Cursor::new(payload, header.body_offset);
    let skip_string = |c: &mut Cursor<'_>| c.string(flexible).map(|_| ());
    skip_string(&mut c).ok_or_else(|| malformed("group id runs past the frame"))?;
    if v >= 1 {
        c.i32().ok_or_else(|| malformed("no generation id"))?;
        skip_string(&mut c).ok_or_else(|| malformed("member id runs past the frame"))?;
    }
    if v >= 7 {
        skip_string(&mut c).ok_or_else(|| malformed("instance id runs past the frame"))?;
    }
    if (2..=4).contains(&v) {
        c.take(8).ok_or_else(|| malformed("no retention time"))?;
    }
    let topics = c
        .array_len(flexible)
        .ok_or_else(|| malformed("topic count is wrong for the frame"))?
        .unwrap_or(0);
    let mut out = Vec::new();
    for _ in 0..topics {
        let name = if flexible {
            c.compact_nullable_string()
        } else {
            c.nullable_string()
        }
        .ok_or_else(|| malformed("topic name runs past the frame"))?
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
        let count = c
            .array_len(flexible)
            .ok_or_else(|| malformed("partition count is wrong for the frame"))?
            .unwrap_or(0);
        let mut partitions = Vec::new();
        for _ in 0..count {
            partitions.push(c.i32().ok_or_else(|| malformed("no partition index"))?);
            c.take(8).ok_or_else(|| malformed("no committed offset"))?;
            if v >= 6 {
                c.i32().ok_or_else(|| malformed("no leader epoch"))?;
            }
            if v == 1 {
                c.take(8).ok_or_else(|| malformed("no commit timestamp"))?;
            }
            skip_string(&mut c).ok_or_else(|| malformed("metadata runs past the frame"))?;
            if flexible {
                c.skip_tagged_fields()
                    .ok_or_else(|| malformed("partition tags run past the frame"))?;
            }
        }
        if flexible {
            c.skip_tagged_fields()
                .ok_or_else(|| malformed("topic tags run past the frame"))?;
        }
        out.push((name, partitions));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::header::peek_request;
    use crate::protocol::test_frames::encode_request;
    use kafka_protocol::messages::ProduceRequest;
    use kafka_protocol::protocol::StrBytes;
    use proptest::prelude::*;

    #[test]
    fn produce_acks_are_found_in_every_version() {
        for version in 3..=13 {
            for acks in [-1i16, 0, 1] {
                for txn in [None, Some("txn-1")] {
                    let body = ProduceRequest::default()
                        .with_acks(acks)
                        .with_transactional_id(txn.map(|t| StrBytes::from_string(t.into()).into()));
                    let payload =
                        encode_request(ApiKey::Produce, version, 7, Some("client"), &body);
                    let header = peek_request(&payload).unwrap();
                    assert_eq!(header.api_key, ApiKey::Produce);
                    assert_eq!(header.correlation_id, 7);
                    assert_eq!(produce_acks(&payload, &header).unwrap(), acks, "v{version}");
                }
            }
        }
    }

    #[test]
    fn produce_walk_agrees_with_the_protocol_crate() {
        use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use kafka_protocol::messages::TopicName;
        for version in 3..=12 {
            let body = ProduceRequest::default()
                .with_acks(-1)
                .with_transactional_id(Some(StrBytes::from_static_str("tx").into()))
                .with_topic_data(vec![
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_static_str("orders")))
                        .with_partition_data(vec![
                            PartitionProduceData::default()
                                .with_index(3)
                                .with_records(Some(bytes::Bytes::from_static(b"batch-bytes"))),
                            PartitionProduceData::default()
                                .with_index(4)
                                .with_records(None),
                        ]),
                    TopicProduceData::default()
                        .with_name(TopicName(StrBytes::from_static_str("audit")))
                        .with_partition_data(vec![PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(bytes::Bytes::from_static(b"x")))]),
                ]);
            let payload = encode_request(ApiKey::Produce, version, 9, Some("c"), &body);
            let header = peek_request(&payload).unwrap();
            let walked = walk_produce(&payload, &header).unwrap();
            assert_eq!(walked.acks, -1);
            assert_eq!(walked.transactional_id.as_deref(), Some("tx"));
            let parts: Vec<(&str, i32, Option<&[u8]>)> = walked
                .partitions
                .iter()
                .map(|p| {
                    (
                        p.topic.as_str(),
                        p.partition,
                        p.records.clone().map(|r| &payload[r]),
                    )
                })
                .collect();
            assert_eq!(
                parts,
                vec![
                    ("orders", 3, Some(&b"batch-bytes"[..])),
                    ("orders", 4, None),
                    ("audit", 0, Some(&b"x"[..]))
                ],
                "v{version}"
            );
        }
    }

    #[test]
    fn huge_counts_are_refused_not_allocated() {
        // Produce v3: null transactional id, acks, timeout, topic count 2^31-1.
        let mut payload = vec![0, 0, 0, 3, 0, 0, 0, 1, 0xff, 0xff];
        payload.extend_from_slice(&[0xff, 0xff, 0, 1, 0, 0, 0, 0, 0x7f, 0xff, 0xff, 0xff]);
        let header = peek_request(&payload).unwrap();
        assert!(matches!(
            walk_produce(&payload, &header),
            Err(PeekError::MalformedBody { .. })
        ));
        // FindCoordinator v4: key type 0, compact key count of ~2^31.
        let mut payload = vec![0, 10, 0, 4, 0, 0, 0, 1, 0xff, 0xff, 0];
        payload.extend_from_slice(&[0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        let header = peek_request(&payload).unwrap();
        assert!(find_coordinator_groups(&payload, &header).is_err());
    }

    #[test]
    fn find_coordinator_groups_in_every_version() {
        use kafka_protocol::messages::FindCoordinatorRequest;
        for version in 0..=6 {
            let body = if version >= 4 {
                FindCoordinatorRequest::default()
                    .with_key(StrBytes::from_static_str(""))
                    .with_coordinator_keys(vec![StrBytes::from_static_str("billing")])
            } else {
                FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("billing"))
            };
            let payload = encode_request(ApiKey::FindCoordinator, version, 1, Some("c"), &body);
            let header = peek_request(&payload).unwrap();
            assert_eq!(
                find_coordinator_groups(&payload, &header).unwrap(),
                vec!["billing"],
                "v{version}"
            );
        }
        let body = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_static_str("tx"))
            .with_key_type(1);
        let payload = encode_request(ApiKey::FindCoordinator, 2, 1, Some("c"), &body);
        let header = peek_request(&payload).unwrap();
        assert!(find_coordinator_groups(&payload, &header)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn fetch_max_wait_is_found() {
        use kafka_protocol::messages::FetchRequest;
        for version in 4..=12 {
            let body = FetchRequest::default().with_max_wait_ms(4321);
            let payload = encode_request(ApiKey::Fetch, version, 1, None, &body);
            let header = peek_request(&payload).unwrap();
            assert_eq!(fetch_max_wait_ms(&payload, &header).unwrap(), 4321);
        }
    }

    #[test]
    fn group_and_member_are_found_in_every_version() {
        use kafka_protocol::messages::leave_group_request::MemberIdentity;
        use kafka_protocol::messages::{
            HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, OffsetCommitRequest,
            OffsetFetchRequest, SyncGroupRequest,
        };
        let group = || StrBytes::from_static_str("billing").into();
        let member = || StrBytes::from_static_str("member-7");
        let expect = |payload: Vec<u8>, member: &str| {
            let header = peek_request(&payload).unwrap();
            let found = group_member(&payload, &header).unwrap().unwrap();
            assert_eq!(
                found.group, "billing",
                "{:?} v{}",
                header.api_key, header.api_version
            );
            assert_eq!(
                found.member, member,
                "{:?} v{}",
                header.api_key, header.api_version
            );
        };
        for v in 0..=9 {
            let body = JoinGroupRequest::default()
                .with_group_id(group())
                .with_member_id(member());
            expect(
                encode_request(ApiKey::JoinGroup, v, 1, Some("c"), &body),
                "member-7",
            );
        }
        for v in 0..=5 {
            let body = SyncGroupRequest::default()
                .with_group_id(group())
                .with_member_id(member());
            expect(
                encode_request(ApiKey::SyncGroup, v, 1, Some("c"), &body),
                "member-7",
            );
        }
        for v in 0..=4 {
            let body = HeartbeatRequest::default()
                .with_group_id(group())
                .with_member_id(member());
            expect(
                encode_request(ApiKey::Heartbeat, v, 1, Some("c"), &body),
                "member-7",
            );
        }
        // The protocol crate encodes OffsetCommit from v2.
        for v in 2..=9 {
            let body = OffsetCommitRequest::default()
                .with_group_id(group())
                .with_member_id(member());
            expect(
                encode_request(ApiKey::OffsetCommit, v, 1, Some("c"), &body),
                "member-7",
            );
        }
        for v in 0..=5 {
            let body = if v >= 3 {
                LeaveGroupRequest::default()
                    .with_group_id(group())
                    .with_members(vec![MemberIdentity::default().with_member_id(member())])
            } else {
                LeaveGroupRequest::default()
                    .with_group_id(group())
                    .with_member_id(member())
            };
            expect(
                encode_request(ApiKey::LeaveGroup, v, 1, Some("c"), &body),
                "member-7",
            );
        }
        for v in 1..=7 {
            let body = OffsetFetchRequest::default().with_group_id(group());
            expect(
                encode_request(ApiKey::OffsetFetch, v, 1, Some("c"), &body),
                "",
            );
        }
    }

    #[test]
    fn offset_commit_partitions_in_every_version() {
        use kafka_protocol::messages::offset_commit_request::{
            OffsetCommitRequestPartition, OffsetCommitRequestTopic,
        };
        use kafka_protocol::messages::OffsetCommitRequest;
        for v in 2..=9 {
            let topic = |name: &'static str, partitions: &[i32]| {
                OffsetCommitRequestTopic::default()
                    .with_name(StrBytes::from_static_str(name).into())
                    .with_partitions(
                        partitions
                            .iter()
                            .map(|&p| {
                                OffsetCommitRequestPartition::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(1000 + i64::from(p))
                                    .with_committed_metadata(Some(StrBytes::from_static_str("m")))
                            })
                            .collect(),
                    )
            };
            let body = OffsetCommitRequest::default()
                .with_group_id(StrBytes::from_static_str("g").into())
                .with_member_id(StrBytes::from_static_str("m-1"))
                .with_topics(vec![topic("orders", &[0, 3]), topic("audit", &[1])]);
            let payload = encode_request(ApiKey::OffsetCommit, v, 1, Some("c"), &body);
            let header = peek_request(&payload).unwrap();
            assert_eq!(
                offset_commit_partitions(&payload, &header).unwrap(),
                vec![
                    ("orders".to_owned(), vec![0, 3]),
                    ("audit".to_owned(), vec![1])
                ],
                "v{v}"
            );
            // A count larger than the frame is refused, not allocated.
            let mut truncated = payload.clone();
            truncated.truncate(payload.len() - 3);
            assert!(
                offset_commit_partitions(&truncated, &header).is_err(),
                "v{v}"
            );
        }
    }

    #[test]
    fn fresh_producer_id_requests_are_recognised() {
        use kafka_protocol::messages::{InitProducerIdRequest, ProducerId};
        for v in 0..=5 {
            let fresh = InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(ProducerId(-1));
            let payload = encode_request(ApiKey::InitProducerId, v, 1, Some("c"), &fresh);
            let header = peek_request(&payload).unwrap();
            assert!(wants_fresh_producer_id(&payload, &header).unwrap(), "v{v}");
            let transactional = fresh
                .clone()
                .with_transactional_id(Some(StrBytes::from_static_str("tx").into()));
            let payload = encode_request(ApiKey::InitProducerId, v, 1, Some("c"), &transactional);
            assert!(!wants_fresh_producer_id(&payload, &header).unwrap(), "v{v}");
            if v >= 3 {
                let bump = fresh
                    .clone()
                    .with_producer_id(ProducerId(7))
                    .with_producer_epoch(1);
                let payload = encode_request(ApiKey::InitProducerId, v, 1, Some("c"), &bump);
                assert!(!wants_fresh_producer_id(&payload, &header).unwrap(), "v{v}");
            }
        }
    }

    #[test]
    fn join_group_wait_is_found() {
        use kafka_protocol::messages::JoinGroupRequest;
        for version in 0..=9 {
            let body = JoinGroupRequest::default()
                .with_group_id(StrBytes::from_static_str("g").into())
                .with_session_timeout_ms(6000)
                .with_rebalance_timeout_ms(300_000);
            let payload = encode_request(ApiKey::JoinGroup, version, 1, Some("c"), &body);
            let header = peek_request(&payload).unwrap();
            let expected = if version == 0 { 6000 } else { 300_000 };
            assert_eq!(join_group_wait_ms(&payload, &header).unwrap(), expected);
        }
    }

    proptest! {
        #[test]
        fn peek_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(header) = peek_request(&data) {
                prop_assert!(header.body_offset <= data.len());
                let _ = produce_acks(&data, &header);
                let _ = fetch_max_wait_ms(&data, &header);
                let _ = join_group_wait_ms(&data, &header);
                if let Ok(body) = walk_produce(&data, &header) {
                    for p in body.partitions {
                        if let Some(r) = p.records {
                            prop_assert!(r.end <= data.len());
                        }
                    }
                }
                let _ = find_coordinator_groups(&data, &header);
            }
        }
    }
}
