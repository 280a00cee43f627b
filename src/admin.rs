//! The admin HTTP API: health, metrics and status.

use crate::cutover::flip::{Direction, Outcome};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::net::TcpListener;

use crate::config::ClusterName;
use crate::proxy::Shared;
use crate::status::{
    ClusterStatus, CutoverStatus, MirrorPartition, Mirroring, Status, VirtualBrokerStatus,
};

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

async fn readiness_report(shared: &Shared) -> crate::cutover::readiness::Readiness {
    let bound = shared.config.upstream.request_timeout();
    match tokio::time::timeout(bound, crate::cutover::readiness::readiness(shared)).await {
        Ok(report) => report,
        Err(_) => crate::cutover::readiness::Readiness {
            ready: false,
            reasons: vec![format!("readiness could not be computed within {bound:?}")],
            notes: Vec::new(),
            groups: Vec::new(),
        },
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

fn mirror_status(shared: &Shared) -> Option<Mirroring> {
    let mirror = shared.mirror()?;
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
    Some(Mirroring {
        mode: mirror.mode(),
        target: mirror.target(),
        lag_records: partitions.iter().map(|p| p.live.lag_records).sum(),
        lag_bytes: partitions.iter().map(|p| p.live.lag_bytes).sum(),
        queued_bytes_in_memory: mirror.queued_bytes(),
        max_queued_bytes: shared.config.mirror.max_queued_bytes,
        divergent_records: partitions.iter().map(|p| p.live.divergent_records).sum(),
        partitions,
    })
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<Status> {
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
    // Read before the await below: a lock guard must not live across it.
    let last_flip = shared
        .last_flip
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let readiness = readiness_report(&shared).await;
    Json(Status {
        primary: shared.primary(),
        mirror: shared.route().mirror,
        cutover: CutoverStatus {
            home: shared.config.route.primary,
            fenced: shared.signals.is_fenced(),
            last_flip,
            carried_offsets: shared.carried.snapshot(),
            leader_epoch_eras: shared.epochs.eras_snapshot(),
            transactional_producers: shared.transactional.all(),
        },
        mirroring: mirror_status(&shared),
        readiness,
        virtual_cluster_id: shared.brokers.cluster_id().to_string(),
        client_connections: shared.active_sessions(),
        clusters,
        virtual_brokers,
    })
}
