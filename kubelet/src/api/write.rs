//! Writes through the API: create, replace, patch and delete of ConfigMaps, Secrets,
//! Deployments, StatefulSets, DaemonSets, Jobs, CronJobs, Services and Namespaces.
//!
//! One source of truth, the manifest directory: an object created through the API is a file
//! the agent owns there, `_api_<namespace>_<plural>_<name>.json` (written atomically: temp
//! file, fsync, rename), which the agent reads like any other manifest, so it survives a
//! restart and a `delete` removes it (the controllers then collect the dependents). An object
//! from a user's own manifest file is read-only through the API: a write to it is refused
//! (Forbidden) with a message naming the directory, so the file stays the one place it is
//! defined. Namespaces made through the API are files under `<root-dir>/api-namespaces/`.

// A failed step's error is the request's answer (a Response), made once per request: its
// size on the stack does not matter.
#![allow(clippy::result_large_err)]

use std::path::PathBuf;

use axum::body::Bytes;
use axum::extract::Request;
use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use super::apply::{self, Writer};
use super::front::{not_found, Front, Target};
use super::openapi::{self, Validation};
use super::registry::Kind;
use super::{bad_request, defaults, finalizers, namespaces, patch, protobuf, status_error};
use crate::store::write_atomic;

/// The kinds the API writes.
pub const WRITABLE: &[&str] = &[
    "configmaps",
    "secrets",
    "deployments",
    "statefulsets",
    "daemonsets",
    "services",
    "namespaces",
    "jobs",
    "cronjobs",
];

/// The kinds whose `metadata.generation` counts their spec's changes.
fn generational(plural: &str) -> bool {
    matches!(plural, "deployments" | "statefulsets" | "daemonsets")
}

fn random_uid() -> String {
    let mut b = [0u8; 16];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_ok();
    if !ok {
        b = fastrand::u128(..).to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x: String = b.iter().map(|v| format!("{v:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

fn invalid(kind: &Kind, name: &str, field: &str, why: &str) -> Response {
    status_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{} \"{name}\" is invalid: {field}: {why}", kind.kind),
        Some(json!({"name": name, "group": kind.group, "kind": kind.kind,
                    "causes": [{"reason": "FieldValueRequired", "message": why, "field": field}]})),
    )
}

pub(super) fn conflict(kind: &Kind, name: &str) -> Response {
    status_error(
        StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            kind.qualified()
        ),
        Some(json!({"name": name, "group": kind.group, "kind": kind.plural})),
    )
}

/// An immutable ConfigMap's or Secret's content (data, binaryData, type, the flag itself)
/// cannot change, as the API server's validation says; metadata can.
fn immutable_edit(kind: &Kind, name: &str, stored: &Value, obj: &Value) -> Result<(), Response> {
    if !matches!(kind.plural, "configmaps" | "secrets") {
        return Ok(());
    }
    let parsed = |v: &Value| {
        let mut v = v.clone();
        v["apiVersion"] = "v1".into();
        v["kind"] = kind.kind.into();
        crate::objects::parse_doc(&v).ok().map(|(_, o)| o)
    };
    let (Some(old), Some(new)) = (parsed(stored), parsed(obj)) else {
        return Ok(());
    };
    if !old.immutable || old == new {
        return Ok(());
    }
    let field = if new.immutable { "data" } else { "immutable" };
    let why = "Forbidden: field is immutable when `immutable` is set";
    Err(status_error(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        format!("{} \"{name}\" is invalid: {field}: {why}", kind.kind),
        Some(json!({"name": name, "kind": kind.kind,
                    "causes": [{"reason": "FieldValueForbidden", "message": why, "field": field}]})),
    ))
}

impl Front {
    /// The file that holds an API-made object.
    pub(super) fn managed_path(&self, kind: &Kind, ns: &str, name: &str) -> PathBuf {
        let c = &self.shared.config;
        if kind.plural == "namespaces" {
            return c
                .root_dir
                .join("api-namespaces")
                .join(format!("{name}.json"));
        }
        c.manifest_dir
            .join(format!("_api_{ns}_{}_{name}.json", kind.plural))
    }

    pub(super) fn stored(&self, kind: &Kind, ns: &str, name: &str) -> Option<Value> {
        let b = std::fs::read(self.managed_path(kind, ns, name)).ok()?;
        serde_json::from_slice(&b).ok()
    }

    /// The names of the namespaces made through the API.
    pub(super) fn stored_namespaces(&self) -> Vec<String> {
        let dir = self.shared.config.root_dir.join("api-namespaces");
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_string)
            })
            .collect()
    }

    /// The metadata people set (labels, annotations: the last-applied configuration) of
    /// API-made objects whose listing is rebuilt from content alone.
    pub(super) fn overlay(&self, kind: &Kind, items: &mut [Value]) {
        if !matches!(kind.plural, "configmaps" | "secrets" | "namespaces") {
            return;
        }
        for o in items {
            let ns = o["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
            if let Some(s) = self.stored(kind, &ns, &name) {
                for f in [
                    "labels",
                    "annotations",
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "managedFields",
                    "deletionGracePeriodSeconds",
                    "finalizers",
                ] {
                    if !s["metadata"][f].is_null() {
                        o["metadata"][f] = s["metadata"][f].clone();
                    }
                }
                if kind.plural == "namespaces" && s["metadata"]["deletionTimestamp"].is_string() {
                    o["status"]["phase"] = "Terminating".into();
                }
            }
        }
    }

    pub(super) async fn current(
        &self,
        kind: &'static Kind,
        ns: &str,
        name: &str,
    ) -> Result<Option<Value>, Response> {
        let ns = kind.namespaced.then_some(ns);
        Ok(self
            .objects(kind, ns)
            .await?
            .into_iter()
            .find(|o| o["metadata"]["name"] == name))
    }

    fn store(&self, kind: &Kind, ns: &str, name: &str, obj: &Value) -> Result<(), Response> {
        let path = self.managed_path(kind, ns, name);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        let mut o = obj.clone();
        if let Some(m) = o["metadata"].as_object_mut() {
            m.remove("resourceVersion");
        }
        if let Some(m) = o.as_object_mut() {
            m.remove("status");
        }
        let text = serde_json::to_vec_pretty(&o).unwrap_or_default();
        let write = if kind.plural == "secrets" {
            crate::store::write_private
        } else {
            write_atomic
        };
        write(&path, &text).map_err(|e| {
            status_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("storing {}: {e}", path.display()),
                None,
            )
        })
    }

    pub(super) fn file_owned(&self, kind: &Kind, name: &str) -> Response {
        status_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "{} \"{name}\" is forbidden: it is defined by a manifest file in {}; edit that file (the API changes only the objects made through it)",
                kind.qualified(),
                self.shared.config.manifest_dir.display()
            ),
            Some(json!({"name": name, "group": kind.group, "kind": kind.plural})),
        )
    }

    pub(super) async fn write(&self, t: Target, req: Request) -> Response {
        let kind = t.kind;
        if !WRITABLE.contains(&kind.plural) || t.sub.is_some() {
            return status_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("the server does not allow this method on the requested resource ({} are read-only here)", kind.plural),
                None,
            );
        }
        let method = req.method().clone();
        let ctype = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        // Protobuf is read for create and replace (kubectl's typed clients send it); a
        // patch's media type names its kind of patch, never protobuf.
        let proto = ctype == protobuf::MEDIA_TYPE && method != Method::PATCH;
        if (ctype.contains("protobuf") && !proto) || ctype.contains("cbor") {
            return status_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                format!("the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, {} (got {ctype})", protobuf::MEDIA_TYPE),
                None,
            );
        }
        let dry = req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "dryRun=All"));
        let validation = Validation::from_query(req.uri().query());
        let query = req.uri().query().map(str::to_string);
        let who = Writer::of(query.as_deref(), req.headers(), "");
        if method == Method::PATCH {
            if let Err(r) = apply::check_options(&ctype, query.as_deref()) {
                return r;
            }
        }
        let body: Bytes = match axum::body::to_bytes(req.into_body(), 16 << 20).await {
            Ok(b) => b,
            Err(e) => return bad_request(e.to_string()),
        };
        let parse = |b: &Bytes| -> Result<Value, Response> {
            if proto {
                return protobuf::to_json(b).map_err(|e| {
                    let code = match e {
                        protobuf::Error::Kind { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        _ => StatusCode::BAD_REQUEST,
                    };
                    let reason = match code {
                        StatusCode::BAD_REQUEST => "BadRequest",
                        _ => "UnsupportedMediaType",
                    };
                    status_error(code, reason, e.to_string(), None)
                });
            }
            serde_json::from_slice::<Value>(b)
                .or_else(|_| serde_yaml_ng::from_slice::<Value>(b))
                .map_err(|e| {
                    bad_request(format!(
                        "the request body is not a JSON or YAML object: {e}"
                    ))
                })
        };
        let ns = t.ns.clone().unwrap_or_default();
        let mut warnings = Vec::new();
        let mut checked = |b: &Bytes| {
            let mut obj = parse(b)?;
            warnings = openapi::unknown_fields(kind, &mut obj, validation)?;
            Ok(obj)
        };
        let result = match (method, t.name.clone()) {
            (Method::POST, None) => self.create(kind, &ns, checked(&body), dry, &who).await,
            (Method::PUT, Some(name)) => {
                self.replace(kind, &ns, &name, checked(&body), dry, &who)
                    .await
            }
            (Method::PATCH, Some(name)) if ctype == apply::MEDIA_TYPE => {
                let q = query.as_deref();
                self.apply(kind, &ns, &name, &body, q, dry, validation)
                    .await
            }
            (Method::PATCH, Some(name)) => {
                self.patch(kind, &ns, &name, &ctype, &body, dry, validation, &who)
                    .await
            }
            (Method::DELETE, Some(name)) => {
                let policy = finalizers::policy(query.as_deref(), &body);
                match finalizers::check_policy(kind, policy.as_deref()) {
                    Ok(()) => self.delete(kind, &ns, &name, dry, policy.as_deref()).await,
                    Err(r) => Err(r),
                }
            }
            _ => Err(status_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource".into(),
                None,
            )),
        };
        match result {
            Ok(mut r) => {
                openapi::warn(&mut r, &warnings);
                if !dry {
                    self.settle().await;
                }
                r
            }
            Err(r) => r,
        }
    }

    /// After a write: waits until what the API reads holds it — the manifest scan (objects,
    /// ConfigMaps, Secrets), then a pass of the controllers (the workloads' view).
    async fn settle(&self) {
        self.shared.scans.settle().await;
        self.shared.passes.settle().await;
    }

    pub(super) fn check_body(
        &self,
        kind: &Kind,
        ns: &str,
        obj: &Value,
    ) -> Result<String, Response> {
        if obj["kind"].as_str().is_some_and(|k| k != kind.kind) {
            return Err(bad_request(format!(
                "the kind of the object ({}) does not match the resource ({})",
                obj["kind"].as_str().unwrap_or(""),
                kind.plural
            )));
        }
        if kind.namespaced {
            if let Some(bns) = obj["metadata"]["namespace"].as_str() {
                if bns != ns {
                    return Err(bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request".into(),
                    ));
                }
            }
        }
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        if name.is_empty() {
            return Err(invalid(
                kind,
                "",
                "metadata.name",
                "Required value: name or generateName is required",
            ));
        }
        Ok(name)
    }

    pub(super) async fn create(
        &self,
        kind: &'static Kind,
        ns: &str,
        obj: Result<Value, Response>,
        dry: bool,
        who: &Writer,
    ) -> Result<Response, Response> {
        let mut obj = obj?;
        let name = self.check_body(kind, ns, &obj)?;
        if kind.namespaced && namespaces::terminating(&self.shared, ns) {
            return Err(status_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                format!("{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated", kind.qualified()),
                Some(json!({"name": name, "group": kind.group, "kind": kind.plural,
                            "causes": [{"reason": "NamespaceTerminating", "field": "metadata.namespace",
                                        "message": format!("namespace {ns} is being terminated")}]})),
            ));
        }
        if self.current(kind, ns, &name).await?.is_some() || self.stored(kind, ns, &name).is_some()
        {
            return Err(status_error(
                StatusCode::CONFLICT,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", kind.qualified()),
                Some(json!({"name": name, "group": kind.group, "kind": kind.plural})),
            ));
        }
        obj["apiVersion"] = kind.api_version().into();
        obj["kind"] = kind.kind.into();
        if kind.namespaced {
            obj["metadata"]["namespace"] = ns.into();
        }
        obj["metadata"]["uid"] = random_uid().into();
        obj["metadata"]["creationTimestamp"] =
            Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true).into();
        if generational(kind.plural) {
            obj["metadata"]["generation"] = 1.into();
        }
        finalizers::on_create(&mut obj);
        defaults::apply(kind.plural, &mut obj);
        who.record(kind, None, &mut obj);
        if !dry {
            self.store(kind, ns, &name, &obj)?;
        }
        obj["metadata"]["resourceVersion"] = self.bump().into();
        Ok((StatusCode::CREATED, Json(obj)).into_response())
    }

    async fn replace(
        &self,
        kind: &'static Kind,
        ns: &str,
        name: &str,
        obj: Result<Value, Response>,
        dry: bool,
        who: &Writer,
    ) -> Result<Response, Response> {
        let mut obj = obj?;
        let body_name = self.check_body(kind, ns, &obj)?;
        if body_name != name {
            return Err(bad_request(
                "the name of the object does not match the name on the URL".into(),
            ));
        }
        let Some(cur) = self.current(kind, ns, name).await? else {
            return Err(not_found(kind, name));
        };
        let Some(stored) = self.stored(kind, ns, name) else {
            return Err(self.file_owned(kind, name));
        };
        let given = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !given.is_empty() && cur["metadata"]["resourceVersion"].as_str() != Some(given) {
            return Err(conflict(kind, name));
        }
        self.finish(kind, ns, name, &mut obj, &stored, dry, who)
    }

    /// Keeps what the server owns (identity, creation), bumps the generation when the spec
    /// changed, stores, answers.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn finish(
        &self,
        kind: &Kind,
        ns: &str,
        name: &str,
        obj: &mut Value,
        stored: &Value,
        dry: bool,
        who: &Writer,
    ) -> Result<Response, Response> {
        obj["apiVersion"] = kind.api_version().into();
        obj["kind"] = kind.kind.into();
        obj["metadata"]["name"] = name.into();
        if kind.namespaced {
            obj["metadata"]["namespace"] = ns.into();
        }
        for f in ["uid", "creationTimestamp"] {
            obj["metadata"][f] = stored["metadata"][f].clone();
        }
        immutable_edit(kind, name, stored, obj)?;
        finalizers::on_update(kind, name, stored, obj)?;
        defaults::apply(kind.plural, obj);
        if generational(kind.plural) {
            let g = stored["metadata"]["generation"].as_i64().unwrap_or(1);
            // A file stored before defaulting is the same spec as its defaulted form.
            let mut before = stored.clone();
            defaults::apply(kind.plural, &mut before);
            let changed = obj["spec"] != before["spec"];
            obj["metadata"]["generation"] = (if changed { g + 1 } else { g }).into();
        }
        who.record(kind, Some(stored), obj);
        if dry {
        } else if finalizers::released(obj) && kind.plural != "namespaces" {
            // The last finalizer went: the object goes (a namespace's controller removes it).
            self.remove(kind, ns, name)?;
        } else {
            self.store(kind, ns, name, obj)?;
        }
        obj["metadata"]["resourceVersion"] = self.bump().into();
        Ok(Json(obj.clone()).into_response())
    }

    // The parts of one request, each used once.
    #[allow(clippy::too_many_arguments)]
    async fn patch(
        &self,
        kind: &'static Kind,
        ns: &str,
        name: &str,
        ctype: &str,
        body: &Bytes,
        dry: bool,
        validation: Validation,
        who: &Writer,
    ) -> Result<Response, Response> {
        let p: Value = serde_json::from_slice(body)
            .map_err(|e| bad_request(format!("the patch is not JSON: {e}")))?;
        let Some(cur) = self.current(kind, ns, name).await? else {
            return Err(not_found(kind, name));
        };
        let Some(stored) = self.stored(kind, ns, name) else {
            return Err(self.file_owned(kind, name));
        };
        let mut obj = stored.clone();
        obj["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"].clone();
        // The object as the server has it carries the controller's annotations (a
        // Deployment's revision): `kubectl rollout undo` replaces them by JSON patch, which
        // needs them there.
        if ctype == "application/json-patch+json"
            && obj["metadata"]["annotations"].is_null()
            && cur["metadata"]["annotations"].is_object()
        {
            obj["metadata"]["annotations"] = cur["metadata"]["annotations"].clone();
        }
        match ctype {
            "application/merge-patch+json" => patch::merge(&mut obj, &p),
            "application/json-patch+json" => patch::json_patch(&mut obj, &p).map_err(|e| {
                status_error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e, None)
            })?,
            "application/strategic-merge-patch+json" => {
                patch::strategic(&mut obj, &p, kind.plural == "services")
            }
            other => {
                return Err(status_error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml (got {other:?})"),
                    None,
                ))
            }
        }
        // The API server checks the patched object, not the patch.
        let strategic = ctype == "application/strategic-merge-patch+json";
        let warnings = openapi::unknown_fields_patched(kind, &mut obj, validation, &p, strategic)?;
        let given = obj["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !given.is_empty() && cur["metadata"]["resourceVersion"].as_str() != Some(given) {
            return Err(conflict(kind, name));
        }
        let mut r = self.finish(kind, ns, name, &mut obj, &stored, dry, who)?;
        openapi::warn(&mut r, &warnings);
        Ok(r)
    }

    fn remove(&self, kind: &Kind, ns: &str, name: &str) -> Result<(), Response> {
        let path = self.managed_path(kind, ns, name);
        std::fs::remove_file(&path).map_err(|e| {
            status_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalError",
                format!("removing {}: {e}", path.display()),
                None,
            )
        })
    }

    async fn delete(
        &self,
        kind: &'static Kind,
        ns: &str,
        name: &str,
        dry: bool,
        policy: Option<&str>,
    ) -> Result<Response, Response> {
        let stored = self.stored(kind, ns, name);
        let cur = self.current(kind, ns, name).await?;
        let Some(stored) = stored else {
            return Err(match cur {
                Some(_) => self.file_owned(kind, name),
                None => not_found(kind, name),
            });
        };
        if kind.plural != "namespaces" {
            // Finalizers hold it: marked deleted, kept, answered with the object.
            if let Some(mut kept) = finalizers::on_delete(&stored, policy, &namespaces::now()) {
                if !dry && kept != stored {
                    self.store(kind, ns, name, &kept)?;
                }
                defaults::apply(kind.plural, &mut kept);
                kept["metadata"]["resourceVersion"] = self.bump().into();
                return Ok(Json(kept).into_response());
            }
        }
        if dry {
        } else if kind.plural == "namespaces" {
            // Terminating first; the namespace controller collects (namespaces.rs).
            let mut o = stored.clone();
            if o["metadata"]["deletionTimestamp"].is_null() {
                o["metadata"]["deletionTimestamp"] = namespaces::now().into();
                self.store(kind, ns, name, &o)?;
            }
        } else {
            self.remove(kind, ns, name)?;
        }
        Ok(Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": name, "group": kind.group, "kind": kind.plural,
                        "uid": stored["metadata"]["uid"]},
        }))
        .into_response())
    }

    /// `deployments/scale` and `statefulsets/scale` (autoscaling/v1 Scale): get, and
    /// replace or patch of `spec.replicas`, which `kubectl scale` sends.
    pub(super) async fn scale(&self, t: Target, req: Request) -> Response {
        let kind = t.kind;
        let (ns, Some(name)) = (t.ns.clone().unwrap_or_default(), t.name.clone()) else {
            return bad_request("a scale needs a name".into());
        };
        if !matches!(kind.plural, "deployments" | "statefulsets") {
            return status_error(
                StatusCode::NOT_FOUND,
                "NotFound",
                "the server could not find the requested resource".into(),
                None,
            );
        }
        let method = req.method().clone();
        let ctype = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|h| h.to_str().ok())
            .map(|c| c.split(';').next().unwrap_or("").trim().to_string())
            .unwrap_or_default();
        let who = Writer::of(req.uri().query(), req.headers(), "scale");
        let body = axum::body::to_bytes(req.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        let cur = match self.current(kind, &ns, &name).await {
            Ok(Some(c)) => c,
            Ok(None) => return not_found(kind, &name),
            Err(r) => return r,
        };
        let scale_of = |o: &Value, replicas: Value| {
            json!({
                "kind": "Scale", "apiVersion": "autoscaling/v1",
                "metadata": {"name": name, "namespace": ns, "uid": o["metadata"]["uid"],
                             "resourceVersion": o["metadata"]["resourceVersion"],
                             "creationTimestamp": o["metadata"]["creationTimestamp"]},
                "spec": {"replicas": replicas},
                "status": {"replicas": o["status"]["replicas"].as_i64().unwrap_or(0),
                           "selector": o["spec"]["selector"]["matchLabels"].as_object()
                               .map(|m| m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                                    .collect::<Vec<_>>().join(",")).unwrap_or_default()},
            })
        };
        let current = scale_of(&cur, cur["spec"]["replicas"].clone());
        if method == Method::GET {
            return Json(current).into_response();
        }
        let Some(stored) = self.stored(kind, &ns, &name) else {
            return self.file_owned(kind, &name);
        };
        let p: Value = match serde_json::from_slice(&body) {
            Ok(p) => p,
            Err(e) => return bad_request(format!("the request body is not JSON: {e}")),
        };
        let mut next = current.clone();
        match (method, ctype.as_str()) {
            (Method::PUT, _) => next = p,
            (Method::PATCH, "application/json-patch+json") => {
                if let Err(e) = patch::json_patch(&mut next, &p) {
                    return status_error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e, None);
                }
            }
            (Method::PATCH, _) => patch::merge(&mut next, &p),
            _ => {
                return status_error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource".into(),
                    None,
                )
            }
        }
        let given = next["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !given.is_empty() && cur["metadata"]["resourceVersion"].as_str() != Some(given) {
            return conflict(kind, &name);
        }
        let Some(replicas) = next["spec"]["replicas"].as_i64().filter(|r| *r >= 0) else {
            return invalid(
                kind,
                &name,
                "spec.replicas",
                "Invalid value: must be greater than or equal to 0",
            );
        };
        let mut obj = stored.clone();
        obj["spec"]["replicas"] = replicas.into();
        match self.finish(kind, &ns, &name, &mut obj, &stored, false, &who) {
            Ok(_) => {
                self.settle().await;
                Json(scale_of(&obj, replicas.into())).into_response()
            }
            Err(r) => r,
        }
    }
}
