//! ApiVersions: advertise only what the proxy parses, intersected with what
//! the answering cluster and the other configured cluster support.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::protocol::VersionRange;

use super::{decode_body, ApiRanges, RewriteContext, RewriteError};
use crate::protocol::versions::proxy_versions;

pub const UNSUPPORTED_VERSION: i16 = 35;

/// The error code, the first field of every ApiVersions response version.
pub fn error_code(body: &[u8]) -> Result<i16, RewriteError> {
    body.get(..2)
        .map(|b| i16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| RewriteError("ApiVersions response has no error code".into()))
}

pub fn decode(body: Bytes, version: i16) -> Result<ApiVersionsResponse, RewriteError> {
    decode_body(ApiKey::ApiVersions, body, version)
}

pub fn ranges_of(response: &ApiVersionsResponse) -> ApiRanges {
    response
        .api_keys
        .iter()
        .map(|k| {
            (
                k.api_key,
                VersionRange {
                    min: k.min_version,
                    max: k.max_version,
                },
            )
        })
        .collect()
}

pub fn clamp(mut response: ApiVersionsResponse, ctx: &dyn RewriteContext) -> ApiVersionsResponse {
    ctx.learn_versions(&ranges_of(&response));
    let other = ctx.other_cluster_versions();
    response.api_keys = response
        .api_keys
        .into_iter()
        .filter_map(|entry| {
            let api = ApiKey::try_from(entry.api_key).ok()?;
            let mut range = proxy_versions(api)?.intersect(&VersionRange {
                min: entry.min_version,
                max: entry.max_version,
            });
            if let Some(other) = &other {
                range = range.intersect(other.get(&entry.api_key)?);
            }
            (!range.is_empty()).then(|| {
                ApiVersion::default()
                    .with_api_key(entry.api_key)
                    .with_min_version(range.min)
                    .with_max_version(range.max)
            })
        })
        .collect();
    response
}

/// The answer to an ApiVersions request of a version that the proxy or the
/// cluster does not support: what a broker sends, UNSUPPORTED_VERSION in v0,
/// listing the ApiVersions range both support so that the client retries
/// with it. With the cluster's range unknown it offers v0, which every
/// broker answers.
///
/// Brokers differ in how they encode this error (Kafka uses v0; some
/// implementations keep the request's flexible encoding), so the proxy never
/// forwards theirs.
pub fn unsupported_version_response(cluster: Option<VersionRange>) -> ApiVersionsResponse {
    let ours = proxy_versions(ApiKey::ApiVersions).unwrap_or(VersionRange { min: 0, max: 0 });
    let range = match cluster {
        Some(theirs) if !ours.intersect(&theirs).is_empty() => ours.intersect(&theirs),
        _ => VersionRange { min: 0, max: 0 },
    };
    ApiVersionsResponse::default()
        .with_error_code(UNSUPPORTED_VERSION)
        .with_api_keys(vec![ApiVersion::default()
            .with_api_key(ApiKey::ApiVersions as i16)
            .with_min_version(range.min)
            .with_max_version(range.max)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rewrite::test_support::FakeContext;
    use crate::rewrite::{rewrite_response, ResponseRewrite};
    use bytes::BytesMut;
    use kafka_protocol::messages::ResponseHeader;
    use kafka_protocol::protocol::Encodable;

    fn entry(api: ApiKey, min: i16, max: i16) -> ApiVersion {
        ApiVersion::default()
            .with_api_key(api as i16)
            .with_min_version(min)
            .with_max_version(max)
    }

    fn upstream() -> ApiVersionsResponse {
        ApiVersionsResponse::default().with_api_keys(vec![
            entry(ApiKey::Produce, 0, 13),
            entry(ApiKey::Fetch, 0, 17),
            entry(ApiKey::Metadata, 0, 12),
            entry(ApiKey::ConsumerGroupHeartbeat, 0, 1),
            entry(ApiKey::Vote, 0, 1),
            ApiVersion::default()
                .with_api_key(9999)
                .with_min_version(0)
                .with_max_version(1),
        ])
    }

    #[test]
    fn clamps_to_proxy_table_and_drops_what_it_cannot_parse() {
        let ctx = FakeContext::default();
        let out = clamp(upstream(), &ctx);
        let ranges = ranges_of(&out);
        assert_eq!(
            ranges[&(ApiKey::Produce as i16)],
            VersionRange { min: 3, max: 12 }
        );
        assert_eq!(
            ranges[&(ApiKey::Fetch as i16)],
            VersionRange { min: 4, max: 10 }
        );
        assert_eq!(
            ranges[&(ApiKey::Metadata as i16)],
            VersionRange { min: 0, max: 12 }
        );
        assert!(!ranges.contains_key(&(ApiKey::ConsumerGroupHeartbeat as i16)));
        assert!(!ranges.contains_key(&9999));
        assert_eq!(ctx.learned.borrow().as_ref().unwrap().len(), 6);
    }

    #[test]
    fn intersects_with_the_other_cluster() {
        let mut other = ApiRanges::new();
        other.insert(ApiKey::Produce as i16, VersionRange { min: 2, max: 8 });
        other.insert(ApiKey::Metadata as i16, VersionRange { min: 0, max: 12 });
        let ctx = FakeContext {
            other: Some(other),
            ..Default::default()
        };
        let ranges = ranges_of(&clamp(upstream(), &ctx));
        assert_eq!(
            ranges[&(ApiKey::Produce as i16)],
            VersionRange { min: 3, max: 8 }
        );
        assert!(
            !ranges.contains_key(&(ApiKey::Fetch as i16)),
            "B has no Fetch"
        );
    }

    #[test]
    fn unsupported_version_answer_is_replaced_by_a_v0_one() {
        let mut payload = BytesMut::new();
        ResponseHeader::default()
            .with_correlation_id(5)
            .encode(&mut payload, 0)
            .unwrap();
        // A flexible-encoded error body, as some brokers send: not v0.
        payload.extend_from_slice(&[0, 35, 1, 0, 0, 0, 0]);
        let mut own = ApiRanges::new();
        own.insert(ApiKey::ApiVersions as i16, VersionRange { min: 0, max: 2 });
        let ctx = FakeContext {
            own: Some(own),
            ..Default::default()
        };
        let out = rewrite_response(ResponseRewrite::ApiVersions, 3, payload.freeze(), &ctx)
            .unwrap()
            .unwrap();
        let mut body = out.slice(8..);
        let decoded =
            <ApiVersionsResponse as kafka_protocol::protocol::Decodable>::decode(&mut body, 0)
                .unwrap();
        assert_eq!(decoded.error_code, UNSUPPORTED_VERSION);
        assert_eq!(
            ranges_of(&decoded)[&(ApiKey::ApiVersions as i16)],
            VersionRange { min: 0, max: 2 }
        );
        assert!(body.is_empty());
    }
}
