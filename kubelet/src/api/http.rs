//! The kubelet's HTTP ports, on loopback: the read-only port (`/pods` as a v1 PodList,
//! `/healthz`, `/metrics`) and the healthz port.

use std::sync::Arc;

use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};

use crate::state::Shared;

pub fn read_only(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/pods",
            get(
                |State(s): State<Arc<Shared>>| async move { Json(super::rest::pod_list(&s, None)) },
            ),
        )
        .route(
            "/pods/",
            get(
                |State(s): State<Arc<Shared>>| async move { Json(super::rest::pod_list(&s, None)) },
            ),
        )
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

/// The Prometheus text exposition of the agent's metrics (the kubelet's, and the API
/// server's own on the API).
pub async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        s.metrics.encode(),
    )
}

pub fn healthz_only(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .with_state(shared)
}

/// `ok` while the agent runs (as the kubelet's healthz, which does not depend on the runtime).
async fn healthz(State(_s): State<Arc<Shared>>) -> impl IntoResponse {
    "ok"
}
