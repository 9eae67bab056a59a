//! Finalizers and graceful deletion of the objects made through the API, as the API server
//! and its garbage collector do them:
//!
//! - a DELETE of an object with `metadata.finalizers` (or with `propagationPolicy=Foreground`,
//!   which adds `foregroundDeletion`) stamps `deletionTimestamp` and
//!   `deletionGracePeriodSeconds: 0` into its file and keeps it (answered 200 with the object);
//! - an update that removes the last finalizer of such an object deletes it; new finalizers
//!   cannot be added to it (the API server's validation message);
//! - `foregroundDeletion`: the controllers treat the owner as gone (`controllers::scan` skips
//!   it, so they collect its dependents as after a plain delete) while the API still serves
//!   it from its file; the controller here removes the finalizer once no dependent is left
//!   (its ReplicaSets or Jobs in the controllers' view, its pods still running or
//!   terminating), then the object goes.
//!
//! Namespaces keep their own Terminating mechanism (`namespaces.rs`, whose controller also
//! waits for a namespace's `metadata.finalizers`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use super::registry::Kind;
use super::status_error;
use crate::state::Shared;

/// The finalizer of a foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";

fn names(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_string))
        .collect()
}

/// The propagation policy of a DELETE: the query's, else the body's DeleteOptions (kubectl
/// sends it there), with the old `orphanDependents` flag.
pub fn policy(query: Option<&str>, body: &[u8]) -> Option<String> {
    let from_query = query.and_then(|q| {
        super::front::url_pairs(q)
            .into_iter()
            .find(|(k, _)| k == "propagationPolicy")
            .map(|(_, v)| v)
    });
    if from_query.is_some() {
        return from_query;
    }
    let opts: Value = serde_json::from_slice(body).ok()?;
    if let Some(p) = opts["propagationPolicy"].as_str() {
        return Some(p.to_string());
    }
    (opts["orphanDependents"] == true).then(|| "Orphan".to_string())
}

/// Refuses a DELETE's propagation policy that is not one of the API server's, and
/// `Orphan` for an owner of other objects: here a workload's ReplicaSets, controller pods,
/// Jobs and revisions live only in the controllers' state, beside their owner, and cannot
/// be left standing without it. Silently cascading would delete what was asked to stay.
/// For a kind that owns nothing an orphaning delete is a plain delete.
// The error is the request's answer, made once (as in write.rs).
#[allow(clippy::result_large_err)]
pub fn check_policy(kind: &Kind, policy: Option<&str>) -> Result<(), Response> {
    match policy {
        None | Some("Background" | "Foreground") => Ok(()),
        Some("Orphan") => match owner_kind(kind.plural) {
            Some(_) => Err(status_error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid",
                format!(
                    "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"Orphan\": this node agent cannot keep the dependents of {} apart from their owner; supported values: \"Foreground\", \"Background\"",
                    kind.plural
                ),
                None,
            )),
            None => Ok(()),
        },
        Some(other) => Err(status_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!(
                "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            ),
            None,
        )),
    }
}

/// What a DELETE does to `stored`: the object to keep, marked deleted, when finalizers hold
/// it (None: it goes now). Deleting an object already being deleted changes nothing.
pub fn on_delete(stored: &Value, policy: Option<&str>, now: &str) -> Option<Value> {
    let mut o = stored.clone();
    let mut fins = names(&o);
    if policy == Some("Foreground") && !fins.iter().any(|f| f == FOREGROUND) {
        fins.push(FOREGROUND.into());
    }
    if fins.is_empty() {
        return None;
    }
    o["metadata"]["finalizers"] = json!(fins);
    if o["metadata"]["deletionTimestamp"].is_null() {
        o["metadata"]["deletionTimestamp"] = now.into();
        o["metadata"]["deletionGracePeriodSeconds"] = 0.into();
    }
    Some(o)
}

/// An update of `stored` to `obj`: the deletion fields are the server's (kept from
/// `stored`), and an object being deleted takes no new finalizer.
// The error is the request's answer, made once (as in write.rs).
#[allow(clippy::result_large_err)]
pub fn on_update(kind: &Kind, name: &str, stored: &Value, obj: &mut Value) -> Result<(), Response> {
    for f in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
        match stored["metadata"].get(f) {
            Some(v) if !v.is_null() => obj["metadata"][f] = v.clone(),
            _ => {
                if let Some(m) = obj["metadata"].as_object_mut() {
                    m.remove(f);
                }
            }
        }
    }
    if stored["metadata"]["deletionTimestamp"].is_null() {
        return Ok(());
    }
    let old = names(stored);
    let mut new: Vec<String> = names(obj)
        .into_iter()
        .filter(|f| !old.contains(f))
        .collect();
    if new.is_empty() {
        return Ok(());
    }
    new.sort();
    new.dedup();
    let list = new
        .iter()
        .map(|f| format!("{f:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let why = format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{list}}}");
    Err(status_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!(
            "{} \"{name}\" is invalid: metadata.finalizers: {why}",
            kind.kind
        ),
        Some(json!({"name": name, "group": kind.group, "kind": kind.kind,
                    "causes": [{"reason": "FieldValueForbidden", "message": why,
                                "field": "metadata.finalizers"}]})),
    ))
}

/// A created object is not being deleted, whatever the client sent.
pub fn on_create(obj: &mut Value) {
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("deletionTimestamp");
        m.remove("deletionGracePeriodSeconds");
    }
}

/// Whether an object is being deleted and nothing holds it any more.
pub fn released(obj: &Value) -> bool {
    obj["metadata"]["deletionTimestamp"].is_string() && names(obj).is_empty()
}

/// Whether a workload document is being deleted in the foreground: the controllers let it
/// go (collecting its dependents) while its file stays.
pub fn foreground(doc: &Value) -> bool {
    doc["metadata"]["deletionTimestamp"].is_string() && names(doc).iter().any(|f| f == FOREGROUND)
}

/// The API-made objects of `plural` being deleted, from their files (for the API to serve
/// those the controllers no longer show).
pub fn terminating(manifest_dir: &Path, plural: &str) -> Vec<Value> {
    api_files(manifest_dir)
        .into_iter()
        .filter(|(_, p, _)| p == plural)
        .filter_map(|(path, _, _)| read(&path))
        .filter(|o| o["metadata"]["deletionTimestamp"].is_string())
        .collect()
}

/// The files `_api_<ns>_<plural>_<name>.json`, with their plural and namespace.
fn api_files(dir: &Path) -> Vec<(PathBuf, String, String)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            let rest = n.strip_prefix("_api_")?.strip_suffix(".json")?;
            let mut parts = rest.splitn(3, '_');
            let (ns, plural) = (parts.next()?, parts.next()?);
            Some((e.path(), plural.to_string(), ns.to_string()))
        })
        .collect()
}

fn read(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Runs the garbage collector's part: each second, the foreground deletions whose
/// dependents are gone lose their finalizer, and the objects no finalizer holds any more go.
pub fn spawn_controller(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if collect(&shared) {
                shared.scans.settle().await;
                shared.changes.mark();
            }
        }
    });
}

fn collect(shared: &Shared) -> bool {
    let mut changed = false;
    for (path, plural, ns) in api_files(&shared.config.manifest_dir) {
        let Some(mut o) = read(&path) else {
            continue;
        };
        if o["metadata"]["deletionTimestamp"].is_null() {
            continue;
        }
        let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut fins = names(&o);
        if fins.iter().any(|f| f == FOREGROUND) && !has_dependents(shared, &plural, &ns, &name) {
            fins.retain(|f| f != FOREGROUND);
            o["metadata"]["finalizers"] = json!(fins);
            let text = serde_json::to_vec_pretty(&o).unwrap_or_default();
            let written = if plural == "secrets" {
                crate::store::write_private(&path, &text)
            } else {
                crate::store::write_atomic(&path, &text)
            };
            if let Err(e) = written {
                tracing::warn!("foreground deletion of {plural} {ns}/{name}: {e}");
                continue;
            }
            changed = true;
        }
        if fins.is_empty() {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!("{plural} {ns}/{name} deleted (no finalizer left)");
                    changed = true;
                }
                Err(e) => tracing::warn!("deleting {}: {e}", path.display()),
            }
        }
    }
    changed
}

/// The kind named in its dependents' owner references, for the API-made kinds that own
/// other objects (their ReplicaSets, Jobs, revisions and pods).
fn owner_kind(plural: &str) -> Option<&'static str> {
    Some(match plural {
        "deployments" => "Deployment",
        "statefulsets" => "StatefulSet",
        "daemonsets" => "DaemonSet",
        "jobs" => "Job",
        "cronjobs" => "CronJob",
        _ => return None,
    })
}

/// Whether something `plural`/`name` owns is still there: the objects the controllers show
/// with it as owner (a Deployment's ReplicaSets, a CronJob's Jobs), and the pods the agent
/// still lists (running or terminating) that it or those own. Once the controllers have
/// dropped a ReplicaSet or Job, its pods are known by its name (`<owner>-<suffix>`, the
/// suffix a hash or a schedule time, without `-`).
fn has_dependents(shared: &Shared, plural: &str, ns: &str, name: &str) -> bool {
    let Some(owner_kind) = owner_kind(plural) else {
        return false;
    };
    let owned_by =
        |refs: &Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>,
         kind: &str,
         n: &str| { refs.iter().flatten().any(|r| r.kind == kind && r.name == n) };
    let in_ns = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
        m.namespace.as_deref().unwrap_or("default") == ns
    };
    {
        let c = crate::controllers::lock(&shared.workloads);
        let v = &c.view;
        let sets = v.replicasets.iter().any(|r| {
            in_ns(&r.metadata) && owned_by(&r.metadata.owner_references, owner_kind, name)
        });
        let jobs = v.jobs.iter().any(|j| {
            in_ns(&j.metadata) && owned_by(&j.metadata.owner_references, owner_kind, name)
        });
        if sets || jobs {
            return true;
        }
    }
    let child_kind = match plural {
        "deployments" => Some("ReplicaSet"),
        "cronjobs" => Some("Job"),
        _ => None,
    };
    let prefix = format!("{name}-");
    let mine = |p: &Pod| {
        in_ns(&p.metadata)
            && p.metadata.owner_references.iter().flatten().any(|r| {
                (r.kind == owner_kind && r.name == name)
                    || child_kind.is_some_and(|k| {
                        r.kind == k
                            && r.name
                                .strip_prefix(&prefix)
                                .is_some_and(|s| !s.is_empty() && !s.contains('-'))
                    })
            })
    };
    shared.lock().pods.values().any(|p| mine(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn delete_keeps_what_finalizers_hold() {
        let plain = json!({"metadata": {"name": "a"}});
        assert_eq!(on_delete(&plain, None, NOW), None);
        assert_eq!(on_delete(&plain, Some("Background"), NOW), None);
        let held = json!({"metadata": {"name": "a", "finalizers": ["example.com/x"]}});
        let kept = on_delete(&held, Some("Background"), NOW).unwrap();
        assert_eq!(kept["metadata"]["deletionTimestamp"], NOW);
        assert_eq!(kept["metadata"]["deletionGracePeriodSeconds"], 0);
        assert_eq!(kept["metadata"]["finalizers"], json!(["example.com/x"]));
        // A second delete changes nothing.
        assert_eq!(
            on_delete(&kept, None, "2027-01-01T00:00:00Z").as_ref(),
            Some(&kept)
        );
        let fg = on_delete(&plain, Some("Foreground"), NOW).unwrap();
        assert_eq!(fg["metadata"]["finalizers"], json!([FOREGROUND]));
        assert!(foreground(&fg));
        assert!(!released(&fg));
    }

    #[test]
    fn updates() {
        let kind = super::super::registry::find("", "configmaps").unwrap();
        let stored = on_delete(
            &json!({"metadata": {"name": "a", "finalizers": ["x/a", "x/b"]}}),
            None,
            NOW,
        )
        .unwrap();
        // The client cannot move the deletion fields.
        let mut o = json!({"metadata": {"name": "a", "finalizers": ["x/a"]}});
        on_update(kind, "a", &stored, &mut o).unwrap();
        assert_eq!(o["metadata"]["deletionTimestamp"], NOW);
        assert!(!released(&o));
        o["metadata"]["finalizers"] = Value::Null;
        assert!(released(&o));
        let mut o = json!({"metadata": {"name": "a", "finalizers": ["x/a", "x/c"]}});
        let r = on_update(kind, "a", &stored, &mut o).unwrap_err();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        // Not being deleted: anything goes, and no deletion field sneaks in.
        let live = json!({"metadata": {"name": "a"}});
        let mut o = json!({"metadata": {"name": "a", "finalizers": ["x/c"],
                                         "deletionTimestamp": NOW}});
        on_update(kind, "a", &live, &mut o).unwrap();
        assert!(o["metadata"]["deletionTimestamp"].is_null());
        assert!(!released(&o));
    }

    #[test]
    fn policies() {
        assert_eq!(
            policy(
                None,
                br#"{"kind":"DeleteOptions","propagationPolicy":"Foreground"}"#
            ),
            Some("Foreground".into())
        );
        assert_eq!(
            policy(Some("propagationPolicy=Orphan"), b""),
            Some("Orphan".into())
        );
        assert_eq!(
            policy(None, br#"{"orphanDependents":true}"#),
            Some("Orphan".into())
        );
        assert_eq!(policy(None, b""), None);
    }

    #[test]
    fn orphan_refused_for_owners_only() {
        let deploy = super::super::registry::find("apps", "deployments").unwrap();
        let cm = super::super::registry::find("", "configmaps").unwrap();
        assert!(check_policy(deploy, Some("Background")).is_ok());
        assert!(check_policy(deploy, Some("Foreground")).is_ok());
        assert!(check_policy(deploy, None).is_ok());
        let r = check_policy(deploy, Some("Orphan")).unwrap_err();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(check_policy(cm, Some("Orphan")).is_ok());
        let r = check_policy(cm, Some("Sideways")).unwrap_err();
        assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
