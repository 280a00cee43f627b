//! Where partition leader epochs lie in requests and responses, so they can
//! be patched in place: every epoch field is a fixed-size i32, and the one
//! inside a record batch header (`partitionLeaderEpoch`) lies before the
//! range its CRC covers.
//!
//! Walkers return byte positions within the frame payload (header
//! included); they never allocate from a count read off the wire, and a
//! body that does not walk is reported, never guessed at.

use kafka_protocol::messages::ApiKey;

use super::header::{PeekError, RequestHeaderPeek};
use super::reader::Cursor;

/// An epoch field of a request, with the partition it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochAt {
    pub topic: String,
    pub partition: i32,
    /// Position of the i32 epoch.
    pub at: usize,
}

/// One partition of an OffsetForLeaderEpoch request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationAt {
    pub topic: String,
    pub partition: i32,
    /// The client's view of the current leader epoch.
    pub current_at: usize,
    /// The epoch whose end offset the client asks for (that of its
    /// position).
    pub leader_epoch_at: usize,
}

/// One partition of an OffsetCommit request (v6+).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitAt {
    pub topic: String,
    pub partition: i32,
    pub offset_at: usize,
    pub epoch_at: usize,
}

fn text(bytes: Option<&[u8]>) -> String {
    bytes
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default()
}

fn skip(c: &mut Cursor<'_>, n: usize) -> Option<()> {
    c.take(n).map(|_| ())
}

/// `current_leader_epoch` of every partition of a Fetch request (v9-v11;
/// earlier versions carry none).
pub fn fetch_request(
    payload: &[u8],
    header: &RequestHeaderPeek,
) -> Result<Vec<EpochAt>, PeekError> {
    let v = header.api_version;
    let malformed = |reason| PeekError::MalformedBody {
        api: ApiKey::Fetch,
        version: v,
        reason,
    };
    if v < 9 {
        return Ok(Vec::new());
    }
    if v >= 12 {
        return Err(malformed(
            "leader epochs of flexible Fetch versions are not walked",
        ));
    }
    let walk = || -> Option<Vec<EpochAt>> {
        let mut c = Cursor::new(payload, header.body_offset);
        // replica id, max wait, min bytes, max bytes, isolation level,
        // session id, session epoch
        skip(&mut c, 4 + 4 + 4 + 4 + 1 + 4 + 4)?;
        let mut out = Vec::new();
        for _ in 0..c.array_len(false)?.unwrap_or(0) {
            let topic = text(c.nullable_string()?);
            for _ in 0..c.array_len(false)?.unwrap_or(0) {
                let partition = c.i32()?;
                out.push(EpochAt {
                    topic: topic.clone(),
                    partition,
                    at: c.pos,
                });
                // current leader epoch, fetch offset, log start offset,
                // partition max bytes
                skip(&mut c, 4 + 8 + 8 + 4)?;
            }
        }
        Some(out)
    };
    walk().ok_or_else(|| malformed("partitions run past the frame"))
}

/// `current_leader_epoch` of every partition of a ListOffsets request (v4+).
pub fn list_offsets_request(
    payload: &[u8],
    header: &RequestHeaderPeek,
) -> Result<Vec<EpochAt>, PeekError> {
    let v = header.api_version;
    if v < 4 {
        return Ok(Vec::new());
    }
    let flexible = v >= 6;
    let walk = || -> Option<Vec<EpochAt>> {
        let mut c = Cursor::new(payload, header.body_offset);
        skip(&mut c, 4 + 1)?; // replica id, isolation level
        let mut out = Vec::new();
        for _ in 0..c.array_len(flexible)?.unwrap_or(0) {
            let topic = text(c.string(flexible)?);
            for _ in 0..c.array_len(flexible)?.unwrap_or(0) {
                let partition = c.i32()?;
                out.push(EpochAt {
                    topic: topic.clone(),
                    partition,
                    at: c.pos,
                });
                skip(&mut c, 4 + 8)?; // current leader epoch, timestamp
                c.tags(flexible)?;
            }
            c.tags(flexible)?;
        }
        Some(out)
    };
    walk().ok_or(PeekError::MalformedBody {
        api: ApiKey::ListOffsets,
        version: v,
        reason: "partitions run past the frame",
    })
}

/// Every partition of an OffsetForLeaderEpoch request (v2+).
pub fn offset_for_leader_epoch_request(
    payload: &[u8],
    header: &RequestHeaderPeek,
) -> Result<Vec<ValidationAt>, PeekError> {
    let v = header.api_version;
    let malformed = |reason| PeekError::MalformedBody {
        api: ApiKey::OffsetForLeaderEpoch,
        version: v,
        reason,
    };
    if v < 2 {
        return Err(malformed("versions before 2 carry no current leader epoch"));
    }
    let flexible = v >= 4;
    let walk = || -> Option<Vec<ValidationAt>> {
        let mut c = Cursor::new(payload, header.body_offset);
        if v >= 3 {
            skip(&mut c, 4)?; // replica id
        }
        let mut out = Vec::new();
        for _ in 0..c.array_len(flexible)?.unwrap_or(0) {
            let topic = text(c.string(flexible)?);
            for _ in 0..c.array_len(flexible)?.unwrap_or(0) {
                let partition = c.i32()?;
                let current_at = c.pos;
                skip(&mut c, 4)?;
                let leader_epoch_at = c.pos;
                skip(&mut c, 4)?;
                c.tags(flexible)?;
                out.push(ValidationAt {
                    topic: topic.clone(),
                    partition,
                    current_at,
                    leader_epoch_at,
                });
            }
            c.tags(flexible)?;
        }
        Some(out)
    };
    walk().ok_or_else(|| malformed("partitions run past the frame"))
}

/// Every partition of an OffsetCommit request (v6+ carry an epoch).
pub fn offset_commit_request(
    payload: &[u8],
    header: &RequestHeaderPeek,
) -> Result<Vec<CommitAt>, PeekError> {
    let v = header.api_version;
    if v < 6 {
        return Ok(Vec::new());
    }
    let flexible = v >= 8;
    let walk = || -> Option<Vec<CommitAt>> {
        let mut c = Cursor::new(payload, header.body_offset);
        c.string(flexible)?; // group id
        skip(&mut c, 4)?; // generation id or member epoch
        c.string(flexible)?; // member id
        if v >= 7 {
            c.string(flexible)?; // group instance id
        }
        let mut out = Vec::new();
        for _ in 0..c.array_len(flexible)?.unwrap_or(0) {
            let topic = text(c.string(flexible)?);
            for _ in 0..c.array_len(flexible)?.unwrap_or(0) {
                let partition = c.i32()?;
                let offset_at = c.pos;
                skip(&mut c, 8)?;
                let epoch_at = c.pos;
                skip(&mut c, 4)?;
                c.string(flexible)?; // metadata
                c.tags(flexible)?;
                out.push(CommitAt {
                    topic: topic.clone(),
                    partition,
                    offset_at,
                    epoch_at,
                });
            }
            c.tags(flexible)?;
        }
        Some(out)
    };
    walk().ok_or(PeekError::MalformedBody {
        api: ApiKey::OffsetCommit,
        version: v,
        reason: "partitions run past the frame",
    })
}

/// Where the body of a response starts: after the correlation id and, for
/// flexible header versions, the tagged fields.
fn response_body(payload: &[u8], api: ApiKey, version: i16) -> Option<Cursor<'_>> {
    let mut c = Cursor::new(payload, 0);
    c.i32()?;
    if api.response_header_version(version) >= 1 {
        c.skip_tagged_fields()?;
    }
    Some(c)
}

/// The `partitionLeaderEpoch` of every (v2) record batch in a Fetch
/// response (v4-v11): what a consumer records as the epoch of its
/// position.
pub fn fetch_response(payload: &[u8], version: i16) -> Option<Vec<usize>> {
    if !(4..=11).contains(&version) {
        return None;
    }
    let mut c = response_body(payload, ApiKey::Fetch, version)?;
    c.i32()?; // throttle time
    if version >= 7 {
        skip(&mut c, 2 + 4)?; // error code, session id
    }
    let mut out = Vec::new();
    for _ in 0..c.array_len(false)?.unwrap_or(0) {
        c.nullable_string()?;
        for _ in 0..c.array_len(false)?.unwrap_or(0) {
            // partition, error code, high watermark, last stable offset
            skip(&mut c, 4 + 2 + 8 + 8)?;
            if version >= 5 {
                skip(&mut c, 8)?; // log start offset
            }
            if let Some(aborted) = c.array_len(false)? {
                skip(&mut c, aborted.checked_mul(16)?)?;
            }
            if version >= 11 {
                skip(&mut c, 4)?; // preferred read replica
            }
            let len = c.i32()?;
            if len < 0 {
                continue;
            }
            let start = c.pos;
            let records = c.take(len as usize)?;
            batch_epochs(records, start, &mut out);
        }
    }
    Some(out)
}

/// Positions of `partitionLeaderEpoch` in the batches of a record set
/// starting at `offset`; a partial batch at the end (a fetch cut at its size
/// limit) still has its header patched when the header is whole.
fn batch_epochs(records: &[u8], offset: usize, out: &mut Vec<usize>) {
    const EPOCH_AT: usize = 12;
    const MAGIC_AT: usize = 16;
    let mut at = 0usize;
    while let Some(header) = records.get(at..at + MAGIC_AT + 1) {
        let length = i32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        if header[MAGIC_AT] == 2 {
            out.push(offset + at + EPOCH_AT);
        }
        if length <= 0 {
            break;
        }
        at = match at.checked_add(12 + length as usize) {
            Some(next) => next,
            None => break,
        };
    }
}

/// `leader_epoch` of every partition of a ListOffsets response (v4+).
pub fn list_offsets_response(payload: &[u8], version: i16) -> Option<Vec<usize>> {
    if version < 4 {
        return Some(Vec::new());
    }
    let flexible = version >= 6;
    let mut c = response_body(payload, ApiKey::ListOffsets, version)?;
    c.i32()?; // throttle time
    let mut out = Vec::new();
    for _ in 0..c.array_len(flexible)?.unwrap_or(0) {
        c.string(flexible)?;
        for _ in 0..c.array_len(flexible)?.unwrap_or(0) {
            skip(&mut c, 4 + 2 + 8 + 8)?; // partition, error, timestamp, offset
            out.push(c.pos);
            skip(&mut c, 4)?;
            c.tags(flexible)?;
        }
        c.tags(flexible)?;
    }
    Some(out)
}

/// `leader_epoch` of every partition of an OffsetForLeaderEpoch response
/// (v2+).
pub fn offset_for_leader_epoch_response(payload: &[u8], version: i16) -> Option<Vec<usize>> {
    if version < 2 {
        return None;
    }
    let flexible = version >= 4;
    let mut c = response_body(payload, ApiKey::OffsetForLeaderEpoch, version)?;
    c.i32()?; // throttle time
    let mut out = Vec::new();
    for _ in 0..c.array_len(flexible)?.unwrap_or(0) {
        c.string(flexible)?;
        for _ in 0..c.array_len(flexible)?.unwrap_or(0) {
            skip(&mut c, 2 + 4)?; // error code, partition
            out.push(c.pos);
            skip(&mut c, 4 + 8)?; // leader epoch, end offset
            c.tags(flexible)?;
        }
        c.tags(flexible)?;
    }
    Some(out)
}

/// `committed_leader_epoch` of every partition of an OffsetFetch response
/// (v5+).
pub fn offset_fetch_response(payload: &[u8], version: i16) -> Option<Vec<usize>> {
    if version < 5 {
        return Some(Vec::new());
    }
    let flexible = version >= 6;
    let mut c = response_body(payload, ApiKey::OffsetFetch, version)?;
    c.i32()?; // throttle time
    let mut out = Vec::new();
    let topics = |c: &mut Cursor<'_>, out: &mut Vec<usize>| -> Option<()> {
        for _ in 0..c.array_len(flexible)?.unwrap_or(0) {
            c.string(flexible)?;
            for _ in 0..c.array_len(flexible)?.unwrap_or(0) {
                skip(c, 4 + 8)?; // partition, committed offset
                out.push(c.pos);
                skip(c, 4)?;
                c.string(flexible)?; // metadata
                skip(c, 2)?; // error code
                c.tags(flexible)?;
            }
            c.tags(flexible)?;
        }
        Some(())
    };
    if version >= 8 {
        for _ in 0..c.array_len(flexible)?.unwrap_or(0) {
            c.string(flexible)?; // group id
            topics(&mut c, &mut out)?;
            skip(&mut c, 2)?; // error code
            c.tags(flexible)?;
        }
    } else {
        topics(&mut c, &mut out)?;
    }
    Some(out)
}

/// Reads the i32 at `at`.
pub fn read_i32(bytes: &[u8], at: usize) -> Option<i32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Writes `value` at `at` (positions come from the walkers above).
pub fn write_i32(bytes: &mut [u8], at: usize, value: i32) {
    if let Some(b) = bytes.get_mut(at..at + 4) {
        b.copy_from_slice(&value.to_be_bytes());
    }
}

pub fn read_i64(bytes: &[u8], at: usize) -> Option<i64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    Some(i64::from_be_bytes(b.try_into().ok()?))
}

pub fn write_i64(bytes: &mut [u8], at: usize, value: i64) {
    if let Some(b) = bytes.get_mut(at..at + 8) {
        b.copy_from_slice(&value.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::header::peek_request;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::messages::*;
    use kafka_protocol::protocol::{
        encode_request_header_into_buffer, Encodable, HeaderVersion, StrBytes,
    };
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use proptest::prelude::*;

    fn request<M: Encodable>(api: ApiKey, version: i16, body: &M) -> Vec<u8> {
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("t")));
        let mut out = BytesMut::new();
        encode_request_header_into_buffer(&mut out, &header).unwrap();
        body.encode(&mut out, version).unwrap();
        out.to_vec()
    }

    fn response<M: Encodable + HeaderVersion>(version: i16, body: &M) -> Vec<u8> {
        let mut out = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(7)
            .encode(&mut out, M::header_version(version))
            .unwrap();
        body.encode(&mut out, version).unwrap();
        out.to_vec()
    }

    fn name(s: &str) -> TopicName {
        TopicName(StrBytes::from_string(s.to_owned()))
    }

    fn epochs_at(bytes: &[u8], at: impl IntoIterator<Item = usize>) -> Vec<i32> {
        at.into_iter()
            .map(|a| read_i32(bytes, a).unwrap())
            .collect()
    }

    #[test]
    fn fetch_request_epochs_are_found_in_v9_to_v11() {
        use fetch_request::{FetchPartition, FetchTopic};
        let body = FetchRequest::default().with_topics(vec![
            FetchTopic::default()
                .with_topic(name("a"))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_current_leader_epoch(11)
                        .with_fetch_offset(100),
                    FetchPartition::default()
                        .with_partition(1)
                        .with_current_leader_epoch(12),
                ]),
            FetchTopic::default()
                .with_topic(name("bb"))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(5)
                    .with_current_leader_epoch(13)]),
        ]);
        for v in 9..=11 {
            let bytes = request(ApiKey::Fetch, v, &body);
            let header = peek_request(&bytes).unwrap();
            let found = fetch_request(&bytes, &header).unwrap();
            assert_eq!(
                epochs_at(&bytes, found.iter().map(|f| f.at)),
                vec![11, 12, 13]
            );
            assert_eq!(found[2].topic, "bb");
            assert_eq!(found[2].partition, 5);
        }
        let bytes = request(ApiKey::Fetch, 8, &body);
        assert!(fetch_request(&bytes, &peek_request(&bytes).unwrap())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn list_offsets_and_validation_requests_are_walked_in_every_version() {
        use list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
        let body = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
            .with_name(name("t"))
            .with_partitions(vec![
                ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_current_leader_epoch(4),
                ListOffsetsPartition::default()
                    .with_partition_index(1)
                    .with_current_leader_epoch(5),
            ])]);
        for v in 4..=10 {
            let bytes = request(ApiKey::ListOffsets, v, &body);
            let found = list_offsets_request(&bytes, &peek_request(&bytes).unwrap()).unwrap();
            assert_eq!(
                epochs_at(&bytes, found.iter().map(|f| f.at)),
                vec![4, 5],
                "v{v}"
            );
        }
        use offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
        let body = OffsetForLeaderEpochRequest::default().with_topics(vec![
            OffsetForLeaderTopic::default()
                .with_topic(name("t"))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(3)
                    .with_current_leader_epoch(9)
                    .with_leader_epoch(2)]),
        ]);
        for v in 2..=4 {
            let bytes = request(ApiKey::OffsetForLeaderEpoch, v, &body);
            let found =
                offset_for_leader_epoch_request(&bytes, &peek_request(&bytes).unwrap()).unwrap();
            assert_eq!(found.len(), 1);
            assert_eq!(read_i32(&bytes, found[0].current_at), Some(9), "v{v}");
            assert_eq!(read_i32(&bytes, found[0].leader_epoch_at), Some(2), "v{v}");
        }
    }

    #[test]
    fn offset_commit_offsets_and_epochs_are_found_in_v6_to_v9() {
        use offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
        let body = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_member_id(StrBytes::from_static_str("m-1"))
            .with_group_instance_id(Some(StrBytes::from_static_str("static")))
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(name("orders"))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(2)
                    .with_committed_offset(4242)
                    .with_committed_leader_epoch(8)
                    .with_committed_metadata(Some(StrBytes::from_static_str(
                        "meta",
                    )))])]);
        for v in 7..=9 {
            let bytes = request(ApiKey::OffsetCommit, v, &body);
            let found = offset_commit_request(&bytes, &peek_request(&bytes).unwrap()).unwrap();
            assert_eq!(found.len(), 1, "v{v}");
            assert_eq!(read_i64(&bytes, found[0].offset_at), Some(4242));
            assert_eq!(read_i32(&bytes, found[0].epoch_at), Some(8));
            assert_eq!((found[0].topic.as_str(), found[0].partition), ("orders", 2));
        }
    }

    fn batch(base: i64, count: i64, epoch: i32) -> Bytes {
        let records: Vec<Record> = (0..count)
            .map(|i| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: epoch,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: base + i,
                sequence: -1,
                timestamp: 1,
                key: None,
                value: Some(Bytes::from_static(b"v")),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(
            &mut buf,
            &records,
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::None,
            },
        )
        .unwrap();
        buf.freeze()
    }

    #[test]
    fn fetch_response_batch_epochs_are_found_and_a_cut_batch_is_harmless() {
        use fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
        let mut records = BytesMut::new();
        records.extend_from_slice(&batch(0, 3, 21));
        records.extend_from_slice(&batch(3, 2, 22));
        let cut = batch(5, 4, 23);
        records.extend_from_slice(&cut[..cut.len() / 2]);
        let body = FetchResponse::default().with_responses(vec![FetchableTopicResponse::default()
            .with_topic(name("t"))
            .with_partitions(vec![
                PartitionData::default()
                    .with_partition_index(0)
                    .with_aborted_transactions(Some(vec![AbortedTransaction::default()]))
                    .with_records(Some(records.freeze())),
                PartitionData::default()
                    .with_partition_index(1)
                    .with_records(None),
                PartitionData::default()
                    .with_partition_index(2)
                    .with_records(Some(batch(9, 1, 30))),
            ])]);
        for v in 4..=11 {
            let bytes = response(v, &body);
            let found = fetch_response(&bytes, v).unwrap();
            // The encoder writes a batch per record: one epoch per batch.
            let mut epochs = epochs_at(&bytes, found);
            epochs.dedup();
            assert_eq!(epochs, vec![21, 22, 23, 30], "v{v}");
        }
    }

    #[test]
    fn epoch_responses_are_walked() {
        use list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
        let body =
            ListOffsetsResponse::default().with_topics(vec![ListOffsetsTopicResponse::default()
                .with_name(name("t"))
                .with_partitions(vec![ListOffsetsPartitionResponse::default()
                    .with_offset(77)
                    .with_leader_epoch(6)])]);
        for v in 4..=10 {
            let bytes = response(v, &body);
            assert_eq!(
                epochs_at(&bytes, list_offsets_response(&bytes, v).unwrap()),
                vec![6]
            );
        }
        use offset_for_leader_epoch_response::{EpochEndOffset, OffsetForLeaderTopicResult};
        let body = OffsetForLeaderEpochResponse::default().with_topics(vec![
            OffsetForLeaderTopicResult::default()
                .with_topic(name("t"))
                .with_partitions(vec![EpochEndOffset::default()
                    .with_leader_epoch(3)
                    .with_end_offset(99)]),
        ]);
        for v in 2..=4 {
            let bytes = response(v, &body);
            let found = offset_for_leader_epoch_response(&bytes, v).unwrap();
            assert_eq!(epochs_at(&bytes, found), vec![3]);
        }
        use offset_fetch_response::{
            OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
            OffsetFetchResponseTopic, OffsetFetchResponseTopics,
        };
        let single =
            OffsetFetchResponse::default().with_topics(vec![OffsetFetchResponseTopic::default()
                .with_name(name("t"))
                .with_partitions(vec![OffsetFetchResponsePartition::default()
                    .with_committed_offset(5)
                    .with_committed_leader_epoch(14)
                    .with_metadata(Some(StrBytes::from_static_str("m")))])]);
        for v in 5..=7 {
            let bytes = response(v, &single);
            assert_eq!(
                epochs_at(&bytes, offset_fetch_response(&bytes, v).unwrap()),
                vec![14]
            );
        }
        let grouped =
            OffsetFetchResponse::default().with_groups(vec![OffsetFetchResponseGroup::default()
                .with_group_id(GroupId(StrBytes::from_static_str("g")))
                .with_topics(vec![OffsetFetchResponseTopics::default()
                    .with_name(name("t"))
                    .with_partitions(vec![
                        OffsetFetchResponsePartitions::default().with_committed_leader_epoch(15)
                    ])])]);
        for v in 8..=9 {
            let bytes = response(v, &grouped);
            assert_eq!(
                epochs_at(&bytes, offset_fetch_response(&bytes, v).unwrap()),
                vec![15]
            );
        }
    }

    proptest! {
        #[test]
        fn walkers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300), v in 0i16..12) {
            let _ = fetch_response(&data, v);
            let _ = list_offsets_response(&data, v);
            let _ = offset_for_leader_epoch_response(&data, v);
            let _ = offset_fetch_response(&data, v);
            for api in [ApiKey::Fetch, ApiKey::ListOffsets, ApiKey::OffsetForLeaderEpoch, ApiKey::OffsetCommit] {
                let header = RequestHeaderPeek { api_key: api, api_version: v, correlation_id: 0, body_offset: 0 };
                let _ = fetch_request(&data, &header);
                let _ = list_offsets_request(&data, &header);
                let _ = offset_for_leader_epoch_request(&data, &header);
                let _ = offset_commit_request(&data, &header);
            }
        }
    }
}
