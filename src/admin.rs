//! The admin HTTP API: health, metrics and status.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
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
        .route_layer(middleware::from_fn_with_state(shared.clone(), require_token));
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
        &format!("no such admin endpoint: {} {}", request.method(), request.uri().path()),
    )
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

#[derive(Serialize)]
struct StatusBody {
    primary: ClusterName,
    mirror: crate::config::MirrorMode,
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
        mirror: shared.config.route.mirror,
        virtual_cluster_id: shared.brokers.cluster_id().to_string(),
        client_connections: shared.active_sessions(),
        clusters,
        virtual_brokers,
    };
    Json(serde_json::to_value(body).unwrap_or_default())
}
