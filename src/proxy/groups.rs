//! Consumer group requests around a flip: members told to rejoin while the
//! fence is up, members of the previous primary answered UNKNOWN_MEMBER_ID,
//! and committed offsets carried over by a flip served until the group
//! commits on the new primary itself.

use bytes::Bytes;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, HeartbeatResponse, OffsetCommitResponse, OffsetFetchResponse, ResponseHeader,
    SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::Shared;
use crate::config::ClusterName;
use crate::error::SessionError;
use crate::protocol::frame::Frame;
use crate::protocol::header::RequestHeaderPeek;
use crate::protocol::{header, requests, responses};
use crate::rewrite;

const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = crate::protocol::errors::ILLEGAL_GENERATION;
const REBALANCE_IN_PROGRESS: i16 = 27;

/// What to do with a group request.
pub(super) enum GroupStep {
    /// Forward it; then apply the follow-up to the answer, if any.
    Forward(Option<FollowUp>),
    /// Answer it here.
    Answer(Bytes),
}

/// Work on the answer to a forwarded group request.
pub(super) enum FollowUp {
    /// Serve carried offsets in place of the broker's.
    OffsetFetch { group: Option<String> },
    /// A successful commit ends the carried offsets of its partitions.
    OffsetCommit { group: String },
    /// The member id the cluster hands out belongs to it (another cluster
    /// may have issued the same string).
    JoinGroup {
        group: String,
        instance: Option<String>,
    },
    /// A member the cluster no longer knows is forgotten, so that a flip
    /// does not wait for it.
    Heartbeat { member: String },
}

fn bad(e: header::PeekError) -> SessionError {
    SessionError::BadRequest(e.to_string())
}

/// Client libraries that keep a cooperative member's partitions (and its
/// fetch positions) when a JoinGroup is answered UNKNOWN_MEMBER_ID, and
/// drop them on ILLEGAL_GENERATION (librdkafka counts the assignment lost;
/// franz-go calls its lost callback on any join error it does not restart
/// on). The Java client drops them on UNKNOWN_MEMBER_ID and fails on an
/// ILLEGAL_GENERATION join answer, so it is never sent one.
fn loses_partitions_on_illegal_generation(client_software: Option<&str>) -> bool {
    matches!(client_software, Some("librdkafka" | "kgo"))
}

pub(super) fn plan(
    shared: &Shared,
    cluster: ClusterName,
    frame: &Frame,
    header: &RequestHeaderPeek,
    client_software: Option<&str>,
) -> Result<GroupStep, SessionError> {
    let payload = frame.payload();
    let api = header.api_key;
    if api == ApiKey::OffsetFetch && header.api_version >= 8 {
        // Groups are listed in the request; the answer names them.
        return Ok(GroupStep::Forward(
            shared
                .carried
                .any(cluster)
                .then_some(FollowUp::OffsetFetch { group: None }),
        ));
    }
    let Some(request) = requests::group_member(payload, header).map_err(bad)? else {
        return Ok(GroupStep::Forward(None));
    };
    tracing::debug!(api = ?api, group = %request.group, member = %request.member, %cluster, "group request");
    let stale = !request.member.is_empty()
        && shared
            .members
            .cluster_of(&request.member)
            .is_some_and(|c| c != cluster);
    match api {
        ApiKey::Heartbeat | ApiKey::SyncGroup | ApiKey::OffsetCommit | ApiKey::JoinGroup
            if stale =>
        {
            // A member of the previous primary: unknown here. Told so, it
            // rejoins at once with no member id (and its commit, in the
            // other cluster's offsets, never lands). A static member that
            // joined with its old id where its instance id is still
            // registered under another would be fenced (FENCED_INSTANCE_ID
            // is fatal for clients); joining afresh replaces it instead.
            shared.metrics.stale_member_requests.increment(1);
            // Its positions are offsets of the other cluster: a
            // cooperative member must drop its partitions, not only its id,
            // or it keeps them (and those positions) after joining here.
            let error = if api == ApiKey::JoinGroup
                && loses_partitions_on_illegal_generation(client_software)
                && shared.members.lose_partitions_first(&request.member)
            {
                ILLEGAL_GENERATION
            } else {
                UNKNOWN_MEMBER_ID
            };
            tracing::info!(group = %request.group, member = %request.member, api = ?api,
                error = crate::protocol::errors::name(error),
                "request from a member of the previous primary answered with an error");
            return answer_error(payload, header, error).map(GroupStep::Answer);
        }
        ApiKey::Heartbeat if shared.signals.is_fenced() && cluster == shared.primary() => {
            // A flip is under way: the member revokes (committing what it
            // consumed) and rejoins; its JoinGroup is held until the flip
            // is over.
            shared
                .members
                .note(&request.group, &request.member, cluster);
            return answer_error(payload, header, REBALANCE_IN_PROGRESS).map(GroupStep::Answer);
        }
        ApiKey::LeaveGroup => shared.members.left(&request.member),
        _ => {
            if !stale {
                shared
                    .members
                    .note(&request.group, &request.member, cluster);
            }
        }
    }
    shared.groups.note(&request.group);
    let follow_up = match api {
        ApiKey::OffsetFetch if shared.carried.has(&request.group, cluster) => {
            Some(FollowUp::OffsetFetch {
                group: Some(request.group),
            })
        }
        ApiKey::OffsetCommit if shared.carried.has(&request.group, cluster) => {
            Some(FollowUp::OffsetCommit {
                group: request.group,
            })
        }
        ApiKey::JoinGroup => Some(FollowUp::JoinGroup {
            group: request.group,
            instance: request.instance,
        }),
        ApiKey::Heartbeat => Some(FollowUp::Heartbeat {
            member: request.member,
        }),
        _ => None,
    };
    Ok(GroupStep::Forward(follow_up))
}

/// A locally made answer carrying `error` for the request's API.
pub(super) fn answer_error(
    payload: &[u8],
    header: &RequestHeaderPeek,
    error: i16,
) -> Result<Bytes, SessionError> {
    let version = header.api_version;
    let response_header = ResponseHeader::default().with_correlation_id(header.correlation_id);
    let header_version = header.api_key.response_header_version(version);
    let encoded = match header.api_key {
        ApiKey::JoinGroup => rewrite::encode(
            &response_header,
            header_version,
            &kafka_protocol::messages::JoinGroupResponse::default()
                .with_error_code(error)
                .with_generation_id(-1)
                .with_protocol_name(Some(StrBytes::default())),
            version,
        ),
        ApiKey::Heartbeat => rewrite::encode(
            &response_header,
            header_version,
            &HeartbeatResponse::default().with_error_code(error),
            version,
        ),
        ApiKey::SyncGroup => rewrite::encode(
            &response_header,
            header_version,
            &SyncGroupResponse::default().with_error_code(error),
            version,
        ),
        ApiKey::OffsetCommit => {
            let topics = requests::offset_commit_partitions(payload, header)
                .map_err(bad)?
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetCommitResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(error)
                                })
                                .collect(),
                        )
                })
                .collect();
            rewrite::encode(
                &response_header,
                header_version,
                &OffsetCommitResponse::default().with_topics(topics),
                version,
            )
        }
        other => {
            return Err(SessionError::BadRequest(format!(
                "no local answer for {other:?}"
            )))
        }
    };
    encoded.map_err(|e| SessionError::Proxy(format!("group answer: {e}")))
}

fn decode<M: Decodable>(
    frame: &Frame,
    api: ApiKey,
    version: i16,
) -> anyhow::Result<(ResponseHeader, M)> {
    let mut buf = frame.payload_bytes();
    let response_header = ResponseHeader::decode(&mut buf, api.response_header_version(version))?;
    crate::protocol::shapes::check_response(api, version, &buf).map_err(anyhow::Error::msg)?;
    let body = M::decode(&mut buf, version)?;
    Ok((response_header, body))
}

/// Applies a follow-up to the broker's answer: `Some` replacement bytes
/// when the answer changed.
pub(super) fn follow_up(
    shared: &Shared,
    cluster: ClusterName,
    follow_up: FollowUp,
    header: &RequestHeaderPeek,
    frame: &Frame,
) -> anyhow::Result<Option<Bytes>> {
    let version = header.api_version;
    match follow_up {
        FollowUp::JoinGroup { group, instance } => {
            // Walked, not decoded: brokers differ in which strings of this
            // answer they leave null.
            let error = frame
                .payload()
                .get(4 + usize::from(version >= 6) + if version >= 2 { 4 } else { 0 }..);
            let error = error.and_then(|b| Some(i16::from_be_bytes([*b.first()?, *b.get(1)?])));
            tracing::debug!(%group, %cluster, ?error, "JoinGroup answered");
            // Only a join that succeeded, or that asks the member to come
            // back with the id it hands out, issues that id: an error
            // answer echoes the id the request carried (UNKNOWN_MEMBER_ID
            // for a member of the other cluster), which must keep its home.
            let issues = matches!(
                error,
                Some(crate::protocol::errors::NONE | crate::protocol::errors::MEMBER_ID_REQUIRED)
            );
            let member = responses::join_group_response_member(frame.payload(), version);
            match (member, issues) {
                (Some(member), true) if !member.is_empty() => {
                    shared.members.issued(&group, &member, cluster);
                    if let Some(instance) = &instance {
                        shared.members.set_instance(&member, instance);
                    }
                }
                // The echo of an id the cluster does not know.
                (Some(member), false) if error == Some(UNKNOWN_MEMBER_ID) => {
                    shared.members.left(&member)
                }
                _ => {}
            }
            Ok(None)
        }
        FollowUp::Heartbeat { member } => {
            // Correlation id, tagged fields (v4+), throttle time (v1+).
            let at = 4 + usize::from(version >= 4) + if version >= 1 { 4 } else { 0 };
            let error = frame
                .payload()
                .get(at..at + 2)
                .map(|b| i16::from_be_bytes([b[0], b[1]]));
            if matches!(error, Some(UNKNOWN_MEMBER_ID | ILLEGAL_GENERATION)) {
                shared.members.left(&member);
            }
            Ok(None)
        }
        FollowUp::OffsetCommit { group } => {
            let (_, response): (_, OffsetCommitResponse) =
                decode(frame, ApiKey::OffsetCommit, version)?;
            let done: Vec<(String, i32)> = response
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions
                        .iter()
                        .filter(|p| p.error_code == 0)
                        .map(move |p| (t.name.0.to_string(), p.partition_index))
                })
                .collect();
            shared.carried.committed(&group, cluster, &done);
            Ok(None)
        }
        FollowUp::OffsetFetch { group } => {
            let (response_header, mut response): (_, OffsetFetchResponse) =
                decode(frame, ApiKey::OffsetFetch, version)?;
            let mut served = 0u64;
            match group {
                Some(group) => {
                    for topic in &mut response.topics {
                        for p in &mut topic.partitions {
                            served += serve_carried(
                                shared.carried.get(
                                    &group,
                                    cluster,
                                    &topic.name.0,
                                    p.partition_index,
                                ),
                                &mut p.committed_offset,
                                &mut p.committed_leader_epoch,
                                &mut p.error_code,
                            );
                        }
                    }
                }
                None => {
                    for g in &mut response.groups {
                        for topic in &mut g.topics {
                            for p in &mut topic.partitions {
                                served += serve_carried(
                                    shared.carried.get(
                                        &g.group_id.0,
                                        cluster,
                                        &topic.name.0,
                                        p.partition_index,
                                    ),
                                    &mut p.committed_offset,
                                    &mut p.committed_leader_epoch,
                                    &mut p.error_code,
                                );
                            }
                        }
                    }
                }
            }
            if served == 0 {
                return Ok(None);
            }
            shared.metrics.carried_offsets_served.increment(served);
            let header_version = ApiKey::OffsetFetch.response_header_version(version);
            Ok(Some(rewrite::encode(
                &response_header,
                header_version,
                &response,
                version,
            )?))
        }
    }
}

/// Puts a carried offset into one partition of an OffsetFetch answer; 1
/// when there was one.
fn serve_carried(carried: Option<i64>, offset: &mut i64, epoch: &mut i32, error: &mut i16) -> u64 {
    let Some(carried) = carried else { return 0 };
    *offset = carried;
    *epoch = -1;
    *error = 0;
    1
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, RequestHeader};
    use kafka_protocol::protocol::{encode_request_header_into_buffer, Encodable, HeaderVersion};

    #[test]
    fn a_member_of_the_other_cluster_is_told_to_join_afresh_in_every_version() {
        for version in 0..=9 {
            let mut payload = bytes::BytesMut::new();
            encode_request_header_into_buffer(
                &mut payload,
                &RequestHeader::default()
                    .with_request_api_key(ApiKey::JoinGroup as i16)
                    .with_request_api_version(version)
                    .with_correlation_id(3),
            )
            .unwrap();
            JoinGroupRequest::default()
                .with_member_id(StrBytes::from_static_str("a-member"))
                .with_group_instance_id(
                    (version >= 5).then(|| StrBytes::from_static_str("static-1")),
                )
                .encode(&mut payload, version)
                .unwrap();
            let header = header::peek_request(&payload).unwrap();
            let answer = answer_error(&payload, &header, UNKNOWN_MEMBER_ID).unwrap();
            let mut body = answer.slice(4..);
            let response_header =
                ResponseHeader::decode(&mut body, JoinGroupResponse::header_version(version))
                    .unwrap();
            assert_eq!(response_header.correlation_id, 3);
            let response = JoinGroupResponse::decode(&mut body, version).unwrap();
            assert_eq!(response.error_code, UNKNOWN_MEMBER_ID, "v{version}");
            assert!(response.member_id.is_empty(), "v{version}");
            assert!(body.is_empty(), "v{version}: the whole answer was read");
        }
    }
}
