//! Shared by the `rewrite_*` targets: a small `RewriteContext` and the checks
//! every rewritten response must pass.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Decodable, StrBytes, VersionRange};
use switchyard::rewrite::{
    rewrite_response, Advertised, ApiRanges, ResponseRewrite, RewriteContext,
};

/// Virtual id = 1000 + n in order of first sight, on 127.0.0.1:(9000 + id).
#[derive(Default)]
pub struct Ctx {
    ids: RefCell<HashMap<i32, i32>>,
    own: Option<ApiRanges>,
    other: Option<ApiRanges>,
}

impl Ctx {
    /// `mode` bit 0: the answering cluster's versions are known; bit 1: the
    /// other cluster's are.
    pub fn new(mode: u16) -> Ctx {
        let ranges = || {
            (0i16..80)
                .map(|k| {
                    (
                        k,
                        VersionRange {
                            min: 0,
                            max: k % 7 + 1,
                        },
                    )
                })
                .collect::<BTreeMap<_, _>>()
        };
        Ctx {
            ids: RefCell::default(),
            own: (mode & 1 != 0).then(ranges),
            other: (mode & 2 != 0).then(ranges),
        }
    }
}

impl RewriteContext for Ctx {
    fn virtual_broker(&self, node_id: i32, _real: Option<(&str, i32)>) -> Advertised {
        let mut ids = self.ids.borrow_mut();
        let next = 1000 + ids.len() as i32;
        let id = *ids.entry(node_id).or_insert(next);
        Advertised {
            node_id: id,
            host: StrBytes::from_static_str("127.0.0.1"),
            port: 9000 + id,
        }
    }
    fn virtual_cluster_id(&self) -> StrBytes {
        StrBytes::from_static_str("virtual-cluster")
    }
    fn learn_versions(&self, _ranges: &ApiRanges) {}
    fn own_versions(&self) -> Option<ApiRanges> {
        self.own.clone()
    }
    fn other_cluster_versions(&self) -> Option<ApiRanges> {
        self.other.clone()
    }
}

/// Whether `payload` is a well-formed `M` response of `version`, as the
/// protocol crate reads it: a response the proxy must be able to rewrite.
/// Its shape is walked first, as the proxy does, so that a corrupt count
/// never reaches the crate here either.
fn decodes<M: Decodable>(api: ApiKey, version: i16, payload: &[u8]) -> bool {
    let mut buf = Bytes::copy_from_slice(payload);
    ResponseHeader::decode(&mut buf, api.response_header_version(version)).is_ok()
        && switchyard::protocol::shapes::check_response(api, version, &buf).is_ok()
        && M::decode(&mut buf, version).is_ok()
}

/// Input: 2 bytes (low 4 bits: the request version; bits 8-9: which
/// cluster versions the context knows), then a response payload (header and
/// body, no length prefix). `M` is the response type of `kind`.
pub fn run<M: Decodable>(kind: ResponseRewrite, api: ApiKey, data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let raw = u16::from_be_bytes(*head);
    let version = (raw % 16) as i16;
    let ctx = Ctx::new(raw >> 8);
    let result = rewrite_response(kind, version, Bytes::copy_from_slice(rest), &ctx);
    let out = match result {
        Ok(Some(out)) => out,
        Ok(None) => return,
        Err(e) => {
            // A response the protocol crate reads must not be refused.
            assert!(
                !decodes::<M>(api, version, rest),
                "{kind:?} v{version}: a well-formed response was refused: {e}"
            );
            return;
        }
    };
    assert!(
        out.len() >= 8,
        "{kind:?} v{version}: output of {} bytes",
        out.len()
    );
    let declared = u32::from_be_bytes([out[0], out[1], out[2], out[3]]) as usize;
    assert_eq!(
        declared,
        out.len() - 4,
        "{kind:?} v{version}: length prefix disagrees with the bytes written"
    );
    assert_eq!(
        &out[4..8],
        &rest[..4],
        "{kind:?} v{version}: correlation id changed"
    );
    // What the proxy sends must itself be a well-formed response.
    if let Err(e) = rewrite_response(kind, version, out.slice(4..), &ctx) {
        panic!("{kind:?} v{version}: the rewritten response does not decode: {e}");
    }
}
