#![no_main]

//! Arbitrary bytes as the body of every broker response switchyard decodes,
//! in every version: the shape walk never panics, and a body it lets
//! through decodes with the protocol crate without asking for memory the
//! body does not hold (a corrupt count must not abort the process).

use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;
use switchyard::protocol::shapes::check_response;

fn decode<M: Decodable>(body: &[u8], version: i16) {
    let mut buf = bytes::Bytes::copy_from_slice(body);
    let _ = M::decode(&mut buf, version);
}

fuzz_target!(|data: &[u8]| {
    let [which, version, body @ ..] = data else {
        return;
    };
    let version = i16::from(*version % 20);
    let (api, decode): (ApiKey, fn(&[u8], i16)) = match which % 13 {
        0 => (ApiKey::Metadata, decode::<MetadataResponse>),
        1 => (ApiKey::FindCoordinator, decode::<FindCoordinatorResponse>),
        2 => (ApiKey::DescribeCluster, decode::<DescribeClusterResponse>),
        3 => (ApiKey::ApiVersions, decode::<ApiVersionsResponse>),
        4 => (ApiKey::Produce, decode::<ProduceResponse>),
        5 => (ApiKey::OffsetCommit, decode::<OffsetCommitResponse>),
        6 => (ApiKey::OffsetFetch, decode::<OffsetFetchResponse>),
        7 => (ApiKey::Fetch, decode::<FetchResponse>),
        8 => (ApiKey::ListOffsets, decode::<ListOffsetsResponse>),
        9 => (ApiKey::InitProducerId, decode::<InitProducerIdResponse>),
        10 => (ApiKey::CreateTopics, decode::<CreateTopicsResponse>),
        11 => (ApiKey::DescribeConfigs, decode::<DescribeConfigsResponse>),
        _ => (ApiKey::LeaveGroup, decode::<LeaveGroupResponse>),
    };
    if check_response(api, version, body).is_ok() {
        decode(body, version);
    }
});
