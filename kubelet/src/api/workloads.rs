//! The REST paths of the workloads: Deployments and ReplicaSets (apps/v1), Services and
//! Endpoints (v1), Jobs and CronJobs (batch/v1), as the API server serves them.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, ObjectReference,
};
use serde::Serialize;
use serde_json::{json, Value};

use super::not_found;
use crate::controllers::{self, View};
use crate::state::Shared;

type S = State<Arc<Shared>>;

pub fn routes() -> Router<Arc<Shared>> {
    let mut r = Router::new();
    for (group, plural) in [
        ("/apis/apps/v1", "deployments"),
        ("/apis/apps/v1", "replicasets"),
        ("/api/v1", "services"),
        ("/api/v1", "endpoints"),
        ("/apis/apps/v1", "statefulsets"),
        ("/apis/apps/v1", "daemonsets"),
        ("/apis/apps/v1", "controllerrevisions"),
        ("/api/v1", "persistentvolumeclaims"),
        ("/apis/batch/v1", "jobs"),
        ("/apis/batch/v1", "cronjobs"),
    ] {
        r = r
            .route(
                &format!("{group}/{plural}"),
                get(move |s: S| async move { Json(list(&s, plural, None)) }),
            )
            .route(
                &format!("{group}/namespaces/{{ns}}/{plural}"),
                get(move |s: S, Path(ns): Path<String>| async move {
                    Json(list(&s, plural, Some(&ns)))
                }),
            )
            .route(
                &format!("{group}/namespaces/{{ns}}/{plural}/{{name}}"),
                get(
                    move |s: S, Path((ns, name)): Path<(String, String)>| async move {
                        one(&s, plural, &ns, &name)
                    },
                ),
            );
    }
    r.route(
        "/api/v1/namespaces/{ns}/persistentvolumeclaims/{name}",
        delete(|s: S, Path((ns, name)): Path<(String, String)>| async move {
            delete_claim(&s, &ns, &name)
        }),
    )
}

/// DELETE of a pod a controller owns: the controller replaces it (the manifests' own pods
/// go with their file). The answer is the pod, as the API server's.
pub async fn delete_pod(s: S, Path((ns, name)): Path<(String, String)>) -> Response {
    let mut c = controllers::lock(&s.workloads);
    match controllers::stateful::delete_pod(&mut c, &ns, &name) {
        Some(p) => {
            c.refresh_pods();
            Json(typed(&p, "v1", "Pod")).into_response()
        }
        None => not_found("pods", &name),
    }
}

fn delete_claim(s: &Shared, ns: &str, name: &str) -> Response {
    let mut c = controllers::lock(&s.workloads);
    if !controllers::stateful::delete_claim(&mut c, ns, name) {
        return not_found("persistentvolumeclaims", name);
    }
    match c.view.claims.iter().find(|x| {
        x.metadata.namespace.as_deref() == Some(ns) && x.metadata.name.as_deref() == Some(name)
    }) {
        Some(x) => Json(typed(x, "v1", "PersistentVolumeClaim")).into_response(),
        None => not_found("persistentvolumeclaims", name),
    }
}

fn typed<T: Serialize>(o: &T, api: &str, kind: &str) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or(Value::Null);
    v["apiVersion"] = api.into();
    v["kind"] = kind.into();
    v
}

/// The Endpoints object of a Service (one subset per port, as the endpoints controller
/// writes them for a single port set).
fn endpoints_of(view: &View, svc: &k8s_openapi::api::core::v1::Service) -> Endpoints {
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let by_port = view.endpoints.get(&format!("{ns}/{name}"));
    let mut subsets = Vec::new();
    for p in svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
    {
        let eps = by_port
            .and_then(|m| m.get(&crate::proxy::port_key(p)))
            .cloned()
            .unwrap_or_default();
        if eps.is_empty() {
            continue;
        }
        subsets.push(EndpointSubset {
            addresses: Some(
                eps.iter()
                    .map(|e| EndpointAddress {
                        ip: e.ip.to_string(),
                        target_ref: Some(ObjectReference {
                            kind: Some("Pod".into()),
                            name: Some(e.pod.clone()),
                            namespace: Some(ns.clone()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![EndpointPort {
                name: p.name.clone(),
                port: eps[0].port,
                protocol: p.protocol.clone(),
                ..Default::default()
            }]),
            ..Default::default()
        });
    }
    Endpoints {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name),
            namespace: Some(ns),
            creation_timestamp: svc.metadata.creation_timestamp.clone(),
            labels: svc.metadata.labels.clone(),
            ..Default::default()
        },
        subsets: (!subsets.is_empty()).then_some(subsets),
    }
}

fn items(shared: &Shared, plural: &str) -> Vec<(String, String, Value)> {
    let c = controllers::lock(&shared.workloads);
    let v = &c.view;
    let key = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        (
            m.namespace.clone().unwrap_or_default(),
            m.name.clone().unwrap_or_default(),
        )
    };
    match plural {
        "deployments" => v
            .deployments
            .iter()
            .map(|d| {
                let (n, m) = key(&d.metadata);
                (n, m, typed(d, "apps/v1", "Deployment"))
            })
            .collect(),
        "replicasets" => v
            .replicasets
            .iter()
            .map(|r| {
                let (n, m) = key(&r.metadata);
                (n, m, typed(r, "apps/v1", "ReplicaSet"))
            })
            .collect(),
        "services" => v
            .services
            .iter()
            .map(|s| {
                let (n, m) = key(&s.metadata);
                (n, m, typed(s, "v1", "Service"))
            })
            .collect(),
        "statefulsets" => v
            .statefulsets
            .iter()
            .map(|s| {
                let (n, m) = key(&s.metadata);
                (n, m, typed(s, "apps/v1", "StatefulSet"))
            })
            .collect(),
        "daemonsets" => v
            .daemonsets
            .iter()
            .map(|d| {
                let (n, m) = key(&d.metadata);
                (n, m, typed(d, "apps/v1", "DaemonSet"))
            })
            .collect(),
        "persistentvolumeclaims" => v
            .claims
            .iter()
            .map(|c| {
                let (n, m) = key(&c.metadata);
                (n, m, typed(c, "v1", "PersistentVolumeClaim"))
            })
            .collect(),
        "controllerrevisions" => v
            .revisions
            .iter()
            .map(|r| {
                let s = |k: &str| r["metadata"][k].as_str().unwrap_or("").to_string();
                (s("namespace"), s("name"), r.clone())
            })
            .collect(),
        "jobs" => v
            .jobs
            .iter()
            .map(|j| {
                let (n, m) = key(&j.metadata);
                (n, m, typed(j, "batch/v1", "Job"))
            })
            .collect(),
        "cronjobs" => v
            .cronjobs
            .iter()
            .map(|j| {
                let (n, m) = key(&j.metadata);
                (n, m, typed(j, "batch/v1", "CronJob"))
            })
            .collect(),
        _ => v
            .services
            .iter()
            .map(|s| {
                let (n, m) = key(&s.metadata);
                (n, m, typed(&endpoints_of(v, s), "v1", "Endpoints"))
            })
            .collect(),
    }
}

fn list_kind(plural: &str) -> (&'static str, &'static str) {
    match plural {
        "deployments" => ("apps/v1", "DeploymentList"),
        "replicasets" => ("apps/v1", "ReplicaSetList"),
        "services" => ("v1", "ServiceList"),
        "statefulsets" => ("apps/v1", "StatefulSetList"),
        "daemonsets" => ("apps/v1", "DaemonSetList"),
        "controllerrevisions" => ("apps/v1", "ControllerRevisionList"),
        "persistentvolumeclaims" => ("v1", "PersistentVolumeClaimList"),
        "jobs" => ("batch/v1", "JobList"),
        "cronjobs" => ("batch/v1", "CronJobList"),
        _ => ("v1", "EndpointsList"),
    }
}

fn list(shared: &Shared, plural: &str, ns: Option<&str>) -> Value {
    let items: Vec<Value> = items(shared, plural)
        .into_iter()
        .filter(|(n, _, _)| ns.is_none_or(|x| x == n))
        .map(|(_, _, v)| v)
        .collect();
    let (api, kind) = list_kind(plural);
    json!({"kind": kind, "apiVersion": api, "metadata": {"resourceVersion": "1"}, "items": items})
}

fn one(shared: &Shared, plural: &str, ns: &str, name: &str) -> Response {
    match items(shared, plural)
        .into_iter()
        .find(|(n, m, _)| n == ns && m == name)
    {
        Some((_, _, v)) => Json(v).into_response(),
        None => not_found(plural, name),
    }
}
