//! The Kubernetes REST paths for pods (get, list, log), events and the kubelet's /configz,
//! served on the agent's unix socket. Errors are `metav1.Status` objects.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cri_proto::api;
use serde_json::{json, Value};

use super::{bad_request, not_found, status_error};
use crate::cri::req;
use crate::logs;
use crate::reconcile::{attempt, cname, RUNNING};
use crate::spec::{CONTAINER_NAME, POD_UID};
use crate::state::Shared;

type S = State<Arc<Shared>>;

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        // The API server answers both; the Python client asks `/version/`.
        .route("/version", get(version))
        .route("/version/", get(version))
        .route("/configz", get(configz))
        // As the API server, for its administrators (a service account is refused it, as
        // RBAC's default roles do).
        .route("/metrics", get(super::http::metrics))
        .route("/api/v1/pods", get(list_all))
        .route("/api/v1/namespaces/{ns}/pods", get(list_ns))
        .route(
            "/api/v1/namespaces/{ns}/pods/{name}",
            get(get_pod).delete(super::workloads::delete_pod),
        )
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(pod_log))
        .route("/api/v1/events", get(events_all))
        .route("/api/v1/namespaces/{ns}/events", get(events_ns))
        .merge(super::workloads::routes())
        .fallback(|| async {
            status_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource".into(),
                None,
            )
        })
        .method_not_allowed_fallback(|| async {
            status_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".into(),
                None,
            )
        })
        .with_state(shared)
}

async fn version() -> Json<Value> {
    // Every field of version.Info: typed clients (the Python client) refuse a missing one.
    // There is no Go here and the build records no commit or date: empty, and the epoch.
    Json(json!({
        "major": "1", "minor": "33",
        "gitVersion": concat!("v1.33.0-rrun+", env!("CARGO_PKG_VERSION")),
        "gitCommit": "", "gitTreeState": "",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "", "compiler": "rustc",
        "platform": format!("linux/{}", super::local::go_arch()),
    }))
}

async fn configz(State(s): S) -> Json<Value> {
    let c = &s.config;
    Json(json!({"kubeletconfig": {
        "staticPodPath": c.manifest_dir,
        "containerRuntimeEndpoint": format!("unix://{}", c.endpoint.display()),
        "readOnlyPort": c.read_only_port,
        "healthzPort": c.healthz_port,
        "healthzBindAddress": c.healthz_bind,
        "cgroupRoot": c.cgroup_root,
        "maxPods": c.max_pods,
        "podLogsDir": c.pod_logs_dir,
    }}))
}

pub fn pod_list(shared: &Shared, ns: Option<&str>) -> Value {
    let g = shared.lock();
    let items: Vec<Value> = g
        .pods
        .values()
        .filter(|p| ns.is_none_or(|n| p.metadata.namespace.as_deref() == Some(n)))
        .map(|p| {
            let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
            v["apiVersion"] = "v1".into();
            v["kind"] = "Pod".into();
            v
        })
        .collect();
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})
}

async fn list_all(State(s): S) -> Json<Value> {
    Json(pod_list(&s, None))
}

async fn list_ns(State(s): S, Path(ns): Path<String>) -> Json<Value> {
    Json(pod_list(&s, Some(&ns)))
}

async fn get_pod(State(s): S, Path((ns, name)): Path<(String, String)>) -> Response {
    let pod = s.lock().pods.get(&format!("{ns}/{name}")).cloned();
    match pod {
        Some(p) => {
            let mut v = serde_json::to_value(&p).unwrap_or(Value::Null);
            v["apiVersion"] = "v1".into();
            v["kind"] = "Pod".into();
            Json(v).into_response()
        }
        None => not_found("pods", &name),
    }
}

fn events(shared: &Shared, ns: Option<&str>, q: &BTreeMap<String, String>) -> Value {
    // fieldSelector: involvedObject.name=X (what `describe` asks for), comma-separated.
    let mut want: Vec<(String, String)> = Vec::new();
    if let Some(fs) = q.get("fieldSelector") {
        for part in fs.split(',') {
            if let Some((k, v)) = part.split_once('=') {
                want.push((k.trim_end_matches('=').to_string(), v.to_string()));
            }
        }
    }
    let g = shared.lock();
    let items: Vec<Value> = g
        .events
        .iter()
        .filter(|e| ns.is_none_or(|n| e.metadata.namespace.as_deref() == Some(n)))
        .filter(|e| {
            want.iter().all(|(k, v)| match k.as_str() {
                "involvedObject.name" => e.involved_object.name.as_deref() == Some(v),
                "involvedObject.uid" => e.involved_object.uid.as_deref() == Some(v),
                "involvedObject.namespace" => e.involved_object.namespace.as_deref() == Some(v),
                "involvedObject.kind" => e.involved_object.kind.as_deref() == Some(v),
                _ => true,
            })
        })
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
            v["apiVersion"] = "v1".into();
            v["kind"] = "Event".into();
            v
        })
        .collect();
    json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items})
}

async fn events_all(State(s): S, Query(q): Query<BTreeMap<String, String>>) -> Json<Value> {
    Json(events(&s, None, &q))
}

async fn events_ns(
    State(s): S,
    Path(ns): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Json<Value> {
    Json(events(&s, Some(&ns), &q))
}

fn flag(q: &BTreeMap<String, String>, k: &str) -> bool {
    super::query_bool(q.get(k).map(String::as_str))
}

/// `pods/log`: container, previous, follow, tailLines.
async fn pod_log(
    State(s): S,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let pod = s.lock().pods.get(&format!("{ns}/{name}")).cloned();
    let Some(pod) = pod else {
        return not_found("pods", &name);
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let container = match q.get("container") {
        Some(c) => c.clone(),
        None if spec.containers.len() == 1 => spec.containers[0].name.clone(),
        None => {
            let names: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
            return bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            ));
        }
    };
    let known = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .any(|c| c.name == container);
    if !known {
        return bad_request(format!("container {container} is not valid for pod {name}"));
    }
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let previous = flag(&q, "previous");
    let follow = flag(&q, "follow") && !previous;
    let tail_lines: Option<usize> = match q.get("tailLines").map(|t| t.parse()) {
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return bad_request("tailLines: must be a non-negative integer".into()),
        None => None,
    };
    let Some(mut client) = s.cri.get().await else {
        return status_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "the container runtime is unreachable".into(),
            None,
        );
    };
    let mut labels = std::collections::HashMap::new();
    labels.insert(POD_UID.to_string(), uid);
    labels.insert(CONTAINER_NAME.to_string(), container.clone());
    let list = client
        .runtime
        .list_containers(req(api::ListContainersRequest {
            filter: Some(api::ContainerFilter {
                label_selector: labels,
                ..Default::default()
            }),
        }))
        .await;
    let mut found = match list {
        Ok(r) => r.into_inner().containers,
        Err(e) => {
            return status_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                e.message().to_string(),
                None,
            )
        }
    };
    found.retain(|c| cname(c) == container);
    found.sort_by_key(|c| std::cmp::Reverse((attempt(c), c.created_at)));
    let pick = if previous {
        found.get(1)
    } else {
        found.first()
    };
    let Some(ct) = pick.cloned() else {
        let msg = if previous {
            format!("previous terminated container \"{container}\" in pod \"{name}\" not found")
        } else {
            format!("container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating")
        };
        return bad_request(msg);
    };
    let status = client
        .runtime
        .container_status(req(api::ContainerStatusRequest {
            container_id: ct.id.clone(),
            verbose: false,
        }))
        .await
        .ok()
        .and_then(|r| r.into_inner().status);
    let Some(path) = status
        .map(|st| PathBuf::from(st.log_path))
        .filter(|p| !p.as_os_str().is_empty())
    else {
        return bad_request(format!(
            "container \"{container}\" in pod \"{name}\" has no log"
        ));
    };
    let (text, offset) = logs::read_from(&path, 0).unwrap_or_default();
    let text = match tail_lines {
        Some(n) => logs::tail(&text, n),
        None => text,
    };
    if !follow {
        return (StatusCode::OK, [("content-type", "text/plain")], text).into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, Infallible>>(16);
    let shared = s.clone();
    tokio::spawn(async move {
        if tx.send(Ok(text)).await.is_err() {
            return;
        }
        let mut offset = offset;
        loop {
            let running = shared.cri.get().await.map(|c| c.runtime);
            let state = match running {
                Some(mut r) => r
                    .container_status(req(api::ContainerStatusRequest {
                        container_id: ct.id.clone(),
                        verbose: false,
                    }))
                    .await
                    .ok()
                    .and_then(|r| r.into_inner().status)
                    .map(|s| s.state),
                None => None,
            };
            if let Ok((more, next)) = logs::read_from(&path, offset) {
                offset = next;
                if !more.is_empty() && tx.send(Ok(more)).await.is_err() {
                    return;
                }
            }
            if state != Some(RUNNING) {
                return;
            }
            tokio::time::sleep(logs::FOLLOW_POLL).await;
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    (
        StatusCode::OK,
        [("content-type", "text/plain")],
        Body::from_stream(stream),
    )
        .into_response()
}
