//! Connections to the real brokers.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader};
use kafka_protocol::protocol::{encode_request_header_into_buffer, Encodable, StrBytes};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::FramedRead;

use super::{Shared, Target};
use crate::config::ClusterName;
use crate::error::SessionError;
use crate::protocol::frame::{Frame, FrameCodec};
use crate::rewrite::api_versions;

/// Opens the upstream connection for a client that connected to `target`,
/// trying each candidate address in turn.
pub(super) async fn connect(
    shared: &Shared,
    cluster: ClusterName,
    target: Target,
) -> Result<(TcpStream, String), SessionError> {
    let mut candidates = match target {
        Target::Bootstrap => Vec::new(),
        Target::VirtualBroker(id) => shared.brokers.upstream_for(id, cluster),
    };
    if candidates.is_empty() {
        candidates = shared.bootstrap_addrs(cluster);
    }
    let timeout = shared.config.upstream.connect_timeout();
    let mut reasons = Vec::new();
    for addr in &candidates {
        match tokio::time::timeout(timeout, TcpStream::connect(addr.as_str())).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, addr.clone()));
            }
            Ok(Err(e)) => reasons.push(format!("{addr}: {e}")),
            Err(_) => reasons.push(format!("{addr}: no answer within {timeout:?}")),
        }
    }
    Err(SessionError::UpstreamConnect {
        cluster,
        tried: candidates.join(","),
        reason: if reasons.is_empty() {
            "no broker address known".into()
        } else {
            reasons.join("; ")
        },
    })
}

/// Asks `cluster` which API versions it supports, until it answers, so that
/// the versions advertised to clients also fit the cluster they are not on
/// yet.
pub(super) async fn probe_versions(shared: Arc<Shared>, cluster: ClusterName) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match ask_versions(&shared, cluster).await {
            Ok(ranges) => {
                shared.learn_versions(cluster, &ranges);
                return;
            }
            Err(reason) => {
                shared.metrics.upstream_error(cluster, "versions_probe");
                tracing::warn!(%cluster, %reason, "cannot learn API versions yet; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

async fn ask_versions(
    shared: &Shared,
    cluster: ClusterName,
) -> Result<crate::rewrite::ApiRanges, String> {
    let (mut stream, addr) = connect(shared, cluster, Target::Bootstrap)
        .await
        .map_err(|e| e.to_string())?;
    let request = api_versions_request(0).map_err(|e| e.to_string())?;
    stream
        .write_all(request.wire_bytes())
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut frames = FramedRead::new(stream, FrameCodec::new(1 << 20));
    let frame = tokio::time::timeout(shared.config.upstream.request_timeout(), frames.next())
        .await
        .map_err(|_| format!("{addr}: no ApiVersions answer"))?
        .ok_or_else(|| format!("{addr}: closed the connection"))?
        .map_err(|e| format!("{addr}: {e}"))?;
    let payload = frame.payload_bytes();
    if payload.len() < 4 {
        return Err(format!(
            "{addr}: ApiVersions answer of {} bytes",
            payload.len()
        ));
    }
    let body: Bytes = payload.slice(4..);
    let response = api_versions::decode(body, 0).map_err(|e| format!("{addr}: {e}"))?;
    Ok(api_versions::ranges_of(&response))
}

fn api_versions_request(version: i16) -> anyhow::Result<Frame> {
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("switchyard")));
    let mut payload = BytesMut::new();
    encode_request_header_into_buffer(&mut payload, &header)?;
    ApiVersionsRequest::default().encode(&mut payload, version)?;
    Ok(Frame::from_payload(&payload))
}
