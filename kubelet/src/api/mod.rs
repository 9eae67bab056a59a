//! The agent's faces: the Kubernetes REST API for what it runs (on `<root-dir>/kubelet.sock`;
//! the CLI is a client of it) and the kubelet's HTTP ports on loopback (read-only: `/pods`,
//! `/healthz`, `/metrics`; healthz). The API serves `/metrics` too.

mod apply;
pub mod defaults;
pub mod discovery;
mod fieldset;
pub mod finalizers;
pub mod front;
pub mod http;
pub mod local;
mod managed_fields;
mod namespaces;
pub mod openapi;
mod openapi_v2;
mod openapi_v2_proto;
mod paging;
pub mod patch;
pub mod protobuf;
mod protobuf_json;
pub mod registry;
pub mod rest;
pub mod select;
pub mod stream;
pub mod table;
pub mod tls;
pub mod workloads;
pub mod write;

/// The API's routes, the same on the unix socket and on the HTTPS port.
/// The API's background work: the namespace controller, the finalizers' collector.
pub fn spawn_controllers(shared: std::sync::Arc<crate::state::Shared>) {
    namespaces::spawn_controller(shared.clone());
    finalizers::spawn_controller(shared);
}

pub fn router(shared: std::sync::Arc<crate::state::Shared>) -> axum::Router {
    front::router(shared)
}

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// A `metav1.Status` failure as the API server words it.
pub fn status_error(
    code: StatusCode,
    reason: &str,
    message: String,
    details: Option<serde_json::Value>,
) -> Response {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    (code, Json(body)).into_response()
}

pub fn not_found(kind: &str, name: &str) -> Response {
    status_error(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{kind} \"{name}\" not found"),
        Some(json!({"name": name, "kind": kind})),
    )
}

pub fn bad_request(message: String) -> Response {
    status_error(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

/// A boolean query parameter as the API server converts it: present and not `0`, `f` or
/// `false` (any case) is true (the Python client sends `watch=True`).
fn query_bool(v: Option<&str>) -> bool {
    v.is_some_and(|v| !(v == "0" || v.eq_ignore_ascii_case("f") || v.eq_ignore_ascii_case("false")))
}
