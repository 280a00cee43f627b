//! The admin HTTP API: health, metrics and status.

use crate::cutover::flip::{Direction, Outcome};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio::net::TcpListener;

use crate::config::ClusterName;
use crate::proxy::Shared;

pub(crate) async fn serve(shared: Arc<Shared>, listener: TcpListener) {
    let shutdown = shared.shutdown_token();
    let app = router(shared);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/mirror", post(set_mirror))
        .route("/flip", post(flip))
        .route("/rollback", post(rollback))
        .route("/finalize", post(finalize))
        .route("/readiness", get(readiness))
        .route_layer(middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(protected)
        .fallback(not_found)
        .with_state(shared)
}

async fn require_token(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(token) = shared.config.admin.token.as_deref() else {
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented == Some(token) {
        next.run(request).await
    } else {
        error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token")
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn not_found(request: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!(
            "no such admin endpoint: {} {}",
            request.method(),
            request.uri().path()
        ),
    )
}

async fn readiness_value(shared: &Shared) -> serde_json::Value {
    let bound = shared.config.upstream.request_timeout();
    match tokio::time::timeout(bound, crate::cutover::readiness::readiness(shared)).await {
        Ok(report) => serde_json::to_value(report).unwrap_or_default(),
        Err(_) => serde_json::json!({
            "ready": false,
            "reasons": [format!("readiness could not be computed within {bound:?}")],
        }),
    }
}

async fn readiness(State(shared): State<Arc<Shared>>) -> Response {
    let bound = shared.config.upstream.request_timeout();
    match tokio::time::timeout(bound, crate::cutover::readiness::readiness(&shared)).await {
        Ok(report) => Json(report).into_response(),
        Err(_) => error(
            StatusCode::GATEWAY_TIMEOUT,
            &format!("readiness could not be computed within {bound:?}"),
        ),
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    if shared.shutdown_token().is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn metrics() -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::metrics::prometheus().render(),
    )
        .into_response()
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FlipRequest {
    /// Flip although readiness names reasons (offsets that do not
    /// translate are then left uncommitted on the new primary).
    #[serde(default)]
    force: bool,
}

async fn flip(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    run_flip(shared, body, Direction::Flip).await
}

async fn rollback(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    run_flip(shared, body, Direction::Rollback).await
}

async fn run_flip(shared: Arc<Shared>, body: axum::body::Bytes, direction: Direction) -> Response {
    let path = match direction {
        Direction::Flip => "/flip",
        Direction::Rollback => "/rollback",
    };
    let request: FlipRequest = if body.iter().all(u8::is_ascii_whitespace) {
        FlipRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(request) => request,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    &format!("POST {path} takes no body or {{\"force\": true | false}}: {e}"),
                )
            }
        }
    };
    // The flip runs to its end even when the caller hangs up: a half-done
    // flip is never left behind.
    let task =
        tokio::spawn(
            async move { crate::cutover::flip::run(&shared, direction, request.force).await },
        );
    match task.await {
        Ok(report) => {
            let status = match report.outcome {
                Outcome::Flipped => StatusCode::OK,
                Outcome::Refused => StatusCode::CONFLICT,
                Outcome::Aborted => StatusCode::SERVICE_UNAVAILABLE,
            };
            (status, Json(report)).into_response()
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the flip task failed: {e}"),
        ),
    }
}

async fn finalize(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    if !body.iter().all(u8::is_ascii_whitespace) && &body[..] != b"{}" {
        return error(StatusCode::BAD_REQUEST, "POST /finalize takes no body");
    }
    match crate::cutover::flip::finalize(&shared) {
        Ok(route) => Json(serde_json::json!({ "route": route, "finalized": true })).into_response(),
        Err(message) => error(StatusCode::CONFLICT, &message),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MirrorRequest {
    mode: crate::config::MirrorMode,
}

async fn set_mirror(State(shared): State<Arc<Shared>>, body: axum::body::Bytes) -> Response {
    let request: MirrorRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("POST /mirror takes {{\"mode\": \"off\" | \"sync\" | \"async\"}}: {e}"),
            )
        }
    };
    match shared.set_mirror_mode(request.mode) {
        Ok(route) => Json(serde_json::json!({ "route": route })).into_response(),
        Err(reason) => error(StatusCode::CONFLICT, &reason),
    }
}

#[derive(Serialize)]
struct MirrorPartition {
    topic: String,
    partition: i32,
    #[serde(flatten)]
    live: crate::mirror::PartitionStatus,
    translation_segments: usize,
    translated_from: Option<i64>,
    translated_to: Option<i64>,
}

fn mirror_status(shared: &Shared) -> serde_json::Value {
    let Some(mirror) = shared.mirror() else {
        return serde_json::Value::Null;
    };
    let live = mirror.status();
    let segments = mirror.translation().snapshot();
    let mut keys: Vec<(String, i32)> = live.keys().cloned().collect();
    keys.extend(segments.keys().cloned());
    keys.sort();
    keys.dedup();
    let partitions: Vec<MirrorPartition> = keys
        .into_iter()
        .map(|key| {
            let seg = segments.get(&key);
            MirrorPartition {
                live: live.get(&key).cloned().unwrap_or_default(),
                translation_segments: seg.map_or(0, |s| s.segments().len()),
                translated_from: seg.and_then(|s| s.first_a()),
                translated_to: seg.and_then(|s| s.end_a()),
                topic: key.0,
                partition: key.1,
            }
        })
        .collect();
    let lag_records: i64 = partitions.iter().map(|p| p.live.lag_records).sum();
    let lag_bytes: u64 = partitions.iter().map(|p| p.live.lag_bytes).sum();
    let divergent: i64 = partitions.iter().map(|p| p.live.divergent_records).sum();
    serde_json::json!({
        "mode": mirror.mode(),
        "target": mirror.target(),
        "lag_records": lag_records,
        "lag_bytes": lag_bytes,
        // Of the lag, what is held in memory (the rest waits in the journal).
        "queued_bytes_in_memory": mirror.queued_bytes(),
        "max_queued_bytes": shared.config.mirror.max_queued_bytes,
        "divergent_records": divergent,
        "partitions": partitions,
    })
}

#[derive(Serialize)]
struct StatusBody {
    primary: ClusterName,
    mirror: crate::config::MirrorMode,
    cutover: serde_json::Value,
    mirroring: serde_json::Value,
    /// Whether a flip would be lossless now, per group and partition.
    readiness: serde_json::Value,
    virtual_cluster_id: String,
    client_connections: usize,
    clusters: Vec<ClusterStatus>,
    virtual_brokers: Vec<VirtualBrokerStatus>,
}

#[derive(Serialize)]
struct ClusterStatus {
    name: ClusterName,
    bootstrap: String,
    api_versions_known: bool,
}

#[derive(Serialize)]
struct VirtualBrokerStatus {
    virtual_id: i32,
    cluster: ClusterName,
    node_id: i32,
    real_address: Option<String>,
    listen_port: Option<u16>,
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let clusters = [ClusterName::A, ClusterName::B]
        .into_iter()
        .filter_map(|name| {
            shared.config.cluster(name).map(|c| ClusterStatus {
                name,
                bootstrap: c.bootstrap.clone(),
                api_versions_known: shared.known_versions(name).is_some(),
            })
        })
        .collect();
    let virtual_brokers = shared
        .brokers
        .records()
        .into_iter()
        .map(|(r, port)| VirtualBrokerStatus {
            virtual_id: r.virtual_id,
            cluster: r.cluster,
            node_id: r.node_id,
            real_address: r.address,
            listen_port: port,
        })
        .collect();
    let body = StatusBody {
        primary: shared.primary(),
        mirror: shared.route().mirror,
        cutover: serde_json::json!({
            "home": shared.config.route.primary,
            "fenced": shared.signals.is_fenced(),
            "last_flip": *shared.last_flip.lock().unwrap_or_else(|p| p.into_inner()),
            "carried_offsets": shared.carried.snapshot(),
            "leader_epoch_eras": shared.epochs.eras_snapshot(),
            "transactional_producers": shared.transactional.all(),
        }),
        mirroring: mirror_status(&shared),
        readiness: readiness_value(&shared).await,
        virtual_cluster_id: shared.brokers.cluster_id().to_string(),
        client_connections: shared.active_sessions(),
        clusters,
        virtual_brokers,
    };
    Json(serde_json::to_value(body).unwrap_or_default())
}
