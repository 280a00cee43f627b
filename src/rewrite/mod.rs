//! Response rewrites: decode, change what names a real broker or a real
//! cluster, encode. Each concern is a pure function over a decoded message so
//! that it can be unit-tested and fuzzed without a socket.

pub mod api_versions;
pub mod brokers;

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, DescribeClusterResponse, FindCoordinatorResponse, MetadataResponse, ProduceResponse,
    ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes, VersionRange};

use crate::protocol::frame::LENGTH_PREFIX;

/// Where a rewritten broker can be reached: a virtual broker of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    pub node_id: i32,
    pub host: StrBytes,
    pub port: i32,
}

/// API ranges keyed by api key, as one cluster advertises them.
pub type ApiRanges = BTreeMap<i16, VersionRange>;

/// What a rewrite needs from the proxy, for the cluster the response came from.
pub trait RewriteContext {
    /// The virtual broker standing for `node_id` of this response's cluster.
    /// `real` is the broker's real address when the response carries it.
    fn virtual_broker(&self, node_id: i32, real: Option<(&str, i32)>) -> Advertised;
    /// The stable cluster id clients see, whichever cluster serves them.
    fn virtual_cluster_id(&self) -> StrBytes;
    /// Records the versions the answering cluster supports.
    fn learn_versions(&self, ranges: &ApiRanges);
    /// The versions the answering cluster supports, when known.
    fn own_versions(&self) -> Option<ApiRanges>;
    /// The versions of the other configured cluster, when known, so that
    /// clients never negotiate a version one of the two lacks.
    fn other_cluster_versions(&self) -> Option<ApiRanges>;
    /// A partition leader epoch of this response's cluster as clients see
    /// it (see `cutover::epochs`).
    fn present_epoch(&self, real: i32) -> i32 {
        real
    }
    /// The id clients see for `topic`, whose real id here is `real`.
    fn present_topic_id(&self, _topic: &str, real: uuid::Uuid) -> uuid::Uuid {
        real
    }
}

/// Which responses the proxy must rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseRewrite {
    ApiVersions,
    Metadata,
    FindCoordinator,
    DescribeCluster,
    /// Produce v10+ may carry leader hints naming real brokers.
    ProduceLeaderHints,
}

impl ResponseRewrite {
    pub fn for_request(api: ApiKey, version: i16) -> Option<ResponseRewrite> {
        match api {
            ApiKey::ApiVersions => Some(ResponseRewrite::ApiVersions),
            ApiKey::Metadata => Some(ResponseRewrite::Metadata),
            ApiKey::FindCoordinator => Some(ResponseRewrite::FindCoordinator),
            ApiKey::DescribeCluster => Some(ResponseRewrite::DescribeCluster),
            ApiKey::Produce if version >= 10 => Some(ResponseRewrite::ProduceLeaderHints),
            _ => None,
        }
    }

    fn api(self) -> ApiKey {
        match self {
            ResponseRewrite::ApiVersions => ApiKey::ApiVersions,
            ResponseRewrite::Metadata => ApiKey::Metadata,
            ResponseRewrite::FindCoordinator => ApiKey::FindCoordinator,
            ResponseRewrite::DescribeCluster => ApiKey::DescribeCluster,
            ResponseRewrite::ProduceLeaderHints => ApiKey::Produce,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RewriteError(String);

impl RewriteError {
    fn from_anyhow(context: &str, e: anyhow::Error) -> RewriteError {
        RewriteError(format!("{context}: {e:#}"))
    }
}

/// Rewrites one response frame payload (header and body, no length prefix).
/// Returns the new frame, length prefix included, or `None` when nothing had
/// to change and the original bytes can go back to the client.
pub fn rewrite_response(
    kind: ResponseRewrite,
    version: i16,
    payload: Bytes,
    ctx: &dyn RewriteContext,
) -> Result<Option<Bytes>, RewriteError> {
    let api = kind.api();
    let header_version = api.response_header_version(version);
    let mut buf = payload;
    let header = ResponseHeader::decode(&mut buf, header_version)
        .map_err(|e| RewriteError::from_anyhow("response header", e))?;
    let body = buf;
    match kind {
        ResponseRewrite::ApiVersions => {
            if api_versions::error_code(&body)? == api_versions::UNSUPPORTED_VERSION {
                let theirs = ctx
                    .own_versions()
                    .and_then(|r| r.get(&(ApiKey::ApiVersions as i16)).copied());
                let response = api_versions::unsupported_version_response(theirs);
                return encode(&header, header_version, &response, 0).map(Some);
            }
            let response = api_versions::decode(body, version)?;
            let response = api_versions::clamp(response, ctx);
            encode(&header, header_version, &response, version).map(Some)
        }
        ResponseRewrite::Metadata => {
            let response = decode_body::<MetadataResponse>(ApiKey::Metadata, body, version)?;
            let response = brokers::metadata(response, ctx);
            encode(&header, header_version, &response, version).map(Some)
        }
        ResponseRewrite::FindCoordinator => {
            let response =
                decode_body::<FindCoordinatorResponse>(ApiKey::FindCoordinator, body, version)?;
            let response = brokers::find_coordinator(response, version, ctx);
            encode(&header, header_version, &response, version).map(Some)
        }
        ResponseRewrite::DescribeCluster => {
            let response =
                decode_body::<DescribeClusterResponse>(ApiKey::DescribeCluster, body, version)?;
            let response = brokers::describe_cluster(response, ctx);
            encode(&header, header_version, &response, version).map(Some)
        }
        ResponseRewrite::ProduceLeaderHints => {
            let response = decode_body::<ProduceResponse>(ApiKey::Produce, body, version)?;
            match brokers::produce_leader_hints(response, ctx) {
                Some(response) => encode(&header, header_version, &response, version).map(Some),
                None => Ok(None),
            }
        }
    }
}

/// Decodes a response body once its shape shows every array holds what its
/// count claims (see `protocol::shapes`).
pub(crate) fn decode_body<M: Decodable>(
    api: ApiKey,
    mut body: Bytes,
    version: i16,
) -> Result<M, RewriteError> {
    crate::protocol::shapes::check_response(api, version, &body).map_err(RewriteError)?;
    let message =
        M::decode(&mut body, version).map_err(|e| RewriteError::from_anyhow("response body", e))?;
    // Some brokers write an extra empty tag section; the re-encoded response
    // is well-formed either way.
    if !body.is_empty() {
        tracing::debug!(extra = body.len(), "bytes after a response body ignored");
    }
    Ok(message)
}

/// Encodes a response frame, length prefix included.
pub fn encode<M: Encodable>(
    header: &ResponseHeader,
    header_version: i16,
    body: &M,
    version: i16,
) -> Result<Bytes, RewriteError> {
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + body.compute_size(version)?))
        .map_err(|e| RewriteError::from_anyhow("sizing the rewritten response", e))?;
    let mut out = BytesMut::with_capacity(LENGTH_PREFIX + size);
    out.extend_from_slice(&(size as u32).to_be_bytes());
    header
        .encode(&mut out, header_version)
        .and_then(|_| body.encode(&mut out, version))
        .map_err(|e| RewriteError::from_anyhow("encoding the rewritten response", e))?;
    // The length prefix must match what was written, or the client's stream
    // goes out of step (the protocol crate sizes some fields it then skips,
    // such as tags at or above 2^31).
    if out.len() != LENGTH_PREFIX + size {
        return Err(RewriteError(format!(
            "encoded {} bytes where {size} were computed",
            out.len() - LENGTH_PREFIX
        )));
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::test_support::FakeContext;
    use super::*;
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::BrokerId;

    fn payload<M: Encodable>(api: ApiKey, version: i16, body: &M) -> Bytes {
        let mut out = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(42)
            .encode(&mut out, api.response_header_version(version))
            .unwrap();
        body.encode(&mut out, version).unwrap();
        out.freeze()
    }

    #[test]
    fn batched_find_coordinator_answers_are_rewritten_in_every_version() {
        for version in 4..=6 {
            let body =
                FindCoordinatorResponse::default().with_coordinators(vec![Coordinator::default()
                    .with_key(StrBytes::from_static_str("g"))
                    .with_node_id(BrokerId(3))
                    .with_host(StrBytes::from_static_str("10.0.0.3"))
                    .with_port(9092)]);
            let frame = rewrite_response(
                ResponseRewrite::FindCoordinator,
                version,
                payload(ApiKey::FindCoordinator, version, &body),
                &FakeContext::default(),
            )
            .unwrap()
            .unwrap();
            let mut rest = frame.slice(LENGTH_PREFIX..);
            ResponseHeader::decode(&mut rest, 1).unwrap();
            let out = FindCoordinatorResponse::decode(&mut rest, version).unwrap();
            assert_eq!(out.coordinators[0].node_id, BrokerId(100), "v{version}");
            assert_eq!(out.coordinators[0].host.as_str(), "127.0.0.1");
        }
    }

    #[test]
    fn a_tag_the_crate_would_drop_is_refused_not_sent_with_a_wrong_length() {
        // Metadata v9 whose top-level tag section holds tag 2^31: the crate
        // counts it when sizing but skips it when writing.
        let bytes: &[u8] = &[
            0, 0, 0, 0x2a, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1, 0x80, 0x80, 0x80,
            0x80, 0x08, 0,
        ];
        let result = rewrite_response(
            ResponseRewrite::Metadata,
            9,
            Bytes::copy_from_slice(bytes),
            &FakeContext::default(),
        );
        if let Ok(Some(frame)) = result {
            let declared = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
            assert_eq!(
                declared,
                frame.len() - LENGTH_PREFIX,
                "length prefix matches"
            );
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    /// An in-memory stand-in for the broker registry: virtual id = 100 + n
    /// in order of first sight, all on 127.0.0.1:(9100 + id).
    #[derive(Default)]
    pub(crate) struct FakeContext {
        pub(crate) ids: RefCell<HashMap<i32, i32>>,
        pub(crate) learned: RefCell<Option<ApiRanges>>,
        pub(crate) other: Option<ApiRanges>,
        pub(crate) own: Option<ApiRanges>,
    }

    impl RewriteContext for FakeContext {
        fn virtual_broker(&self, node_id: i32, _real: Option<(&str, i32)>) -> Advertised {
            let mut ids = self.ids.borrow_mut();
            let next = 100 + ids.len() as i32;
            let id = *ids.entry(node_id).or_insert(next);
            Advertised {
                node_id: id,
                host: StrBytes::from_static_str("127.0.0.1"),
                port: 9100 + id,
            }
        }
        fn virtual_cluster_id(&self) -> StrBytes {
            StrBytes::from_static_str("virtual-cluster")
        }
        fn learn_versions(&self, ranges: &ApiRanges) {
            *self.learned.borrow_mut() = Some(ranges.clone());
        }
        fn other_cluster_versions(&self) -> Option<ApiRanges> {
            self.other.clone()
        }
        fn own_versions(&self) -> Option<ApiRanges> {
            self.own.clone()
        }
    }
}
