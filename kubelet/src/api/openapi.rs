//! The OpenAPI documents: `/openapi/v3` (an index and one OpenAPI 3.0 document per served
//! group/version, its schemas generated from k8s-openapi's types through `schemars`, keyed
//! and shaped as the API server keys and shapes them); `/openapi/v2` is made from the same
//! schemas (openapi_v2.rs).
//! The same schemas decide `fieldValidation` on writes (unknown fields), so what `kubectl
//! explain` shows and what a write accepts agree.

// A refused write's error is the request's answer (a Response), made once per request: its
// size on the stack does not matter (as in write.rs).
#![allow(clippy::result_large_err)]

use std::sync::OnceLock;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::{apps, batch, core, discovery as disc};
use k8s_openapi::schemars::generate::{SchemaGenerator, SchemaSettings};
use k8s_openapi::schemars::JsonSchema;
use serde_json::{json, Map, Value};

use super::registry::{self, Kind};

pub(super) const TITLE: &str = "Kubernetes";
pub(super) const VERSION: &str = concat!("v1.33.0-rrun+", env!("CARGO_PKG_VERSION"));
pub(super) const COMPONENTS: &str = "#/components/schemas/";

/// One group/version's document, made once: its path (`api/v1`, `apis/apps/v1`), body and
/// the hash its URL carries, and its schemas as the field validation reads them.
pub(super) struct Doc {
    pub(super) path: String,
    pub(super) body: Vec<u8>,
    hash: String,
    /// Without their descriptions: most of a document's bytes, which validation does not
    /// read, and as JSON trees kept for the agent's life several MiB (the body has them).
    schemas: Map<String, Value>,
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

pub(super) fn docs() -> &'static [Doc] {
    static DOCS: OnceLock<Vec<Doc>> = OnceLock::new();
    DOCS.get_or_init(|| {
        let mut gvs = vec![("", "v1")];
        gvs.extend(registry::groups());
        gvs.into_iter()
            .map(|(g, v)| {
                let doc = document(g, v);
                let body = serde_json::to_vec(&doc).unwrap_or_default();
                let digest = ring::digest::digest(&ring::digest::SHA512, &body);
                let hash = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
                let mut schemas = match doc["components"]["schemas"].clone() {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                for s in schemas.values_mut() {
                    strip_descriptions(s);
                }
                Doc {
                    path: gv_path(g, v),
                    body,
                    hash,
                    schemas,
                }
            })
            .collect()
    })
}

fn strip_descriptions(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("description");
            m.values_mut().for_each(strip_descriptions);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

/// Puts `T`'s schema (and those it refers to) into the generator; answers its name and kind.
fn add<T: JsonSchema + k8s_openapi::Resource>(gen: &mut SchemaGenerator) -> (String, Value) {
    gen.subschema_for::<T>();
    let gvk = json!([{"group": T::GROUP, "version": T::VERSION, "kind": T::KIND}]);
    (T::schema_name().into_owned(), gvk)
}

type Add = fn(&mut SchemaGenerator) -> (String, Value);

/// The k8s-openapi type of a registry kind.
fn type_of(k: &Kind) -> Option<Add> {
    Some(match (k.group, k.kind) {
        ("", "Pod") => add::<core::v1::Pod>,
        ("", "ConfigMap") => add::<core::v1::ConfigMap>,
        ("", "Secret") => add::<core::v1::Secret>,
        ("", "Service") => add::<core::v1::Service>,
        ("", "Endpoints") => add::<core::v1::Endpoints>,
        ("", "Event") => add::<core::v1::Event>,
        ("", "Namespace") => add::<core::v1::Namespace>,
        ("", "Node") => add::<core::v1::Node>,
        ("", "PersistentVolumeClaim") => add::<core::v1::PersistentVolumeClaim>,
        ("apps", "Deployment") => add::<apps::v1::Deployment>,
        ("apps", "ReplicaSet") => add::<apps::v1::ReplicaSet>,
        ("apps", "StatefulSet") => add::<apps::v1::StatefulSet>,
        ("apps", "DaemonSet") => add::<apps::v1::DaemonSet>,
        ("apps", "ControllerRevision") => add::<apps::v1::ControllerRevision>,
        ("batch", "Job") => add::<batch::v1::Job>,
        ("batch", "CronJob") => add::<batch::v1::CronJob>,
        ("discovery.k8s.io", "EndpointSlice") => add::<disc::v1::EndpointSlice>,
        _ => return None,
    })
}

/// The schemas of a group/version's kinds, with the kinds' `x-kubernetes-group-version-kind`
/// and the list merge keys of strategic merge patch (k8s-openapi leaves both out; kubectl
/// finds a kind's schema by the first and computes `apply`'s patches from the second).
fn schemas(kinds: &[&Kind]) -> Map<String, Value> {
    let mut gen = SchemaSettings::openapi3().into_generator();
    let mut gvks = Vec::new();
    for k in kinds {
        if let Some(add) = type_of(k) {
            gvks.push(add(&mut gen));
        }
    }
    if kinds
        .iter()
        .any(|k| k.subresources.iter().any(|s| s.1 == "Scale"))
    {
        gvks.push(add::<k8s_openapi::api::autoscaling::v1::Scale>(&mut gen));
    }
    let mut schemas = gen.take_definitions(true);
    for (name, gvk) in gvks {
        if let Some(Value::Object(s)) = schemas.get_mut(&name) {
            s.insert("x-kubernetes-group-version-kind".into(), gvk);
            // k8s-openapi's `metadata` is not an Option, so schemars lists it as required;
            // the API server's does not (`explain` would print `-required-` beside it).
            if let Some(Value::Array(req)) = s.get_mut("required") {
                req.retain(|f| f != "metadata");
                if req.is_empty() {
                    s.remove("required");
                }
            }
        }
    }
    for (name, schema) in schemas.iter_mut() {
        let service = name == "io.k8s.api.core.v1.ServiceSpec";
        let Some(Value::Object(props)) = schema.get_mut("properties") else {
            continue;
        };
        for (field, p) in props.iter_mut() {
            if p["type"] != "array" {
                continue;
            }
            if let Some(key) = super::patch::merge_key(field, service) {
                p["x-kubernetes-patch-merge-key"] = key.into();
                p["x-kubernetes-patch-strategy"] = "merge".into();
            }
        }
    }
    schemas
}

/// The operations of the served resources, as far as clients read them: kubectl checks a
/// PATCH's `fieldValidation` parameter to leave validation to the server.
fn paths(gvp: &str, kinds: &[&Kind], schemas: &Map<String, Value>) -> Map<String, Value> {
    let mut paths = Map::new();
    for k in kinds {
        let gvk = json!({"group": k.group, "version": k.version, "kind": k.kind});
        let schema = schemas
            .iter()
            .find(|(_, s)| s["x-kubernetes-group-version-kind"][0] == gvk)
            .map(|(n, _)| json!({"$ref": format!("{COMPONENTS}{n}")}))
            .unwrap_or_else(|| json!({"type": "object"}));
        let write_params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        let body = json!({"content": {"application/json": {"schema": schema}}});
        let op = |verb: &str, action: &str, write: bool| {
            let mut o = json!({
                "operationId": format!("{verb}{}", k.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}},
            });
            if write {
                o["parameters"] = write_params.clone();
            }
            if matches!(action, "post" | "put") {
                o["requestBody"] = body.clone();
            }
            o
        };
        let can = |v: &str| k.verbs.contains(&v);
        let coll = if k.namespaced {
            format!("/{gvp}/namespaces/{{namespace}}/{}", k.plural)
        } else {
            format!("/{gvp}/{}", k.plural)
        };
        let mut c = Map::new();
        if can("list") {
            c.insert("get".into(), op("list", "list", false));
        }
        if can("create") {
            c.insert("post".into(), op("create", "post", true));
        }
        let mut item = Map::new();
        if can("get") {
            item.insert("get".into(), op("read", "get", false));
        }
        if can("update") {
            item.insert("put".into(), op("replace", "put", true));
        }
        if can("patch") {
            item.insert("patch".into(), op("patch", "patch", true));
        }
        if can("delete") {
            item.insert("delete".into(), op("delete", "delete", false));
        }
        paths.insert(format!("{coll}/{{name}}"), Value::Object(item));
        paths.insert(coll, Value::Object(c));
    }
    paths
}

fn document(group: &str, version: &str) -> Value {
    let kinds: Vec<&Kind> = registry::KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    let schemas = schemas(&kinds);
    json!({
        "openapi": "3.0.0",
        "info": {"title": TITLE, "version": VERSION},
        "paths": paths(&gv_path(group, version), &kinds, &schemas),
        "components": {"schemas": schemas},
    })
}

/// `/openapi/v3`: every served group/version with the URL of its document.
fn index() -> Value {
    let paths: Map<String, Value> = docs()
        .iter()
        .map(|d| {
            let url = format!("/openapi/v3/{}?hash={}", d.path, d.hash);
            (d.path.clone(), json!({"serverRelativeURL": url}))
        })
        .collect();
    json!({"paths": paths})
}

/// The answer to a GET of `path` (with `query`), if it is an OpenAPI document. A request
/// with the current hash may be kept for ever (the URL changes with the document), one with
/// another hash is sent to the current URL, as the API server does.
pub fn serve(path: &str, query: Option<&str>) -> Option<Response> {
    let path = path.trim_end_matches('/');
    if path == "/openapi/v3" {
        return Some(axum::Json(index()).into_response());
    }
    let rest = path.strip_prefix("/openapi/v3/")?;
    let doc = docs().iter().find(|d| d.path == rest)?;
    let hash = query
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("hash="));
    let json = HeaderValue::from_static("application/json");
    match hash {
        Some(h) if h != doc.hash => {
            let to = format!("/openapi/v3/{}?hash={}", doc.path, doc.hash);
            let mut r = StatusCode::MOVED_PERMANENTLY.into_response();
            if let Ok(v) = HeaderValue::from_str(&to) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            Some(r)
        }
        Some(_) => Some(
            (
                [
                    (header::CONTENT_TYPE, json),
                    (
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("public, immutable"),
                    ),
                    (header::ETAG, etag(&doc.hash)),
                ],
                doc.body.clone(),
            )
                .into_response(),
        ),
        None => Some(
            (
                [
                    (header::CONTENT_TYPE, json),
                    (
                        header::CACHE_CONTROL,
                        HeaderValue::from_static("no-cache, private"),
                    ),
                    (header::ETAG, etag(&doc.hash)),
                ],
                doc.body.clone(),
            )
                .into_response(),
        ),
    }
}

fn etag(hash: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{hash}\"")).unwrap_or(HeaderValue::from_static("\"\""))
}

/// What a write does with unknown fields (`fieldValidation`; the API server's default is Warn).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    Ignore,
    Warn,
    Strict,
}

impl Validation {
    pub fn from_query(query: Option<&str>) -> Validation {
        match query
            .unwrap_or("")
            .split('&')
            .find_map(|p| p.strip_prefix("fieldValidation="))
        {
            Some("Ignore") => Validation::Ignore,
            Some("Strict") => Validation::Strict,
            _ => Validation::Warn,
        }
    }
}

/// Drops `obj`'s fields that `kind`'s schema does not have, as decoding into the API
/// server's types does; Strict refuses them with the API server's 400 instead. Answers the
/// warnings (one per field) Warn sends back.
pub fn unknown_fields(
    kind: &Kind,
    obj: &mut Value,
    mode: Validation,
) -> Result<Vec<String>, Response> {
    check(kind, obj, mode).map_err(|fields| {
        super::bad_request(format!(
            "{k} in version \"{v}\" cannot be handled as a {k}: strict decoding error: {}",
            fields.join(", "),
            k = kind.kind,
            v = kind.version,
        ))
    })
}

/// The same for the object a patch made, refused as the API server refuses it there: 422,
/// the field `patch` invalid, its value the patch as Go prints a map (strategic merge
/// patch) or the patched object (JSON and merge patch).
pub fn unknown_fields_patched(
    kind: &Kind,
    obj: &mut Value,
    mode: Validation,
    patch: &Value,
    strategic: bool,
) -> Result<Vec<String>, Response> {
    let shown = if strategic {
        go_value(patch)
    } else {
        obj.to_string()
    };
    check(kind, obj, mode).map_err(|fields| {
        let why = format!("strict decoding error: {}", fields.join(", "));
        let message = format!("Invalid value: {shown:?}: {why}");
        super::status_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!(" \"\" is invalid: patch: {message}"),
            Some(json!({"causes": [{"reason": "FieldValueInvalid", "message": message, "field": "patch"}]})),
        )
    })
}

/// `fmt.Sprintf("%+v", v)` of the `map[string]interface{}` Go decodes JSON into.
fn go_value(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::String(s) => s.clone(),
        Value::Bool(_) | Value::Number(_) => v.to_string(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_value).collect::<Vec<_>>().join(" ")),
        // serde_json's map is ordered by key, as Go prints maps.
        Value::Object(m) => format!(
            "map[{}]",
            m.iter()
                .map(|(k, v)| format!("{k}:{}", go_value(v)))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    }
}

/// Warnings for Warn, nothing for Ignore (both drop the fields); the fields for Strict.
fn check(kind: &Kind, obj: &mut Value, mode: Validation) -> Result<Vec<String>, Vec<String>> {
    let Some(doc) = docs()
        .iter()
        .find(|d| d.path == gv_path(kind.group, kind.version))
    else {
        return Ok(Vec::new());
    };
    let gvk = json!({"group": kind.group, "version": kind.version, "kind": kind.kind});
    let Some(schema) = doc
        .schemas
        .values()
        .find(|s| s["x-kubernetes-group-version-kind"][0] == gvk)
    else {
        return Ok(Vec::new());
    };
    let mut found = Vec::new();
    let strict = mode == Validation::Strict;
    walk(&doc.schemas, schema, obj, "", &mut found, strict);
    let fields: Vec<String> = found
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    match mode {
        Validation::Strict if !fields.is_empty() => Err(fields),
        Validation::Warn => Ok(fields),
        _ => Ok(Vec::new()),
    }
}

/// Puts warnings on an answer as the API server does (`Warning: 299 - "text"`), which kubectl
/// prints as `Warning: text`.
pub fn warn(r: &mut Response, warnings: &[String]) {
    for w in warnings {
        let text = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{text}\"")) {
            r.headers_mut().append(header::WARNING, v);
        }
    }
}

/// The schema behind `$ref` (or a lone `allOf` around one, the API server's way of putting
/// a description beside a reference).
fn resolve<'a>(all: &'a Map<String, Value>, s: &'a Value) -> &'a Value {
    let mut s = s;
    for _ in 0..8 {
        if let Some(r) = s["$ref"].as_str() {
            match r.strip_prefix(COMPONENTS).and_then(|n| all.get(n)) {
                Some(t) => s = t,
                None => return s,
            }
        } else if let Some([one]) = s["allOf"].as_array().map(Vec::as_slice) {
            s = one;
        } else {
            return s;
        }
    }
    s
}

fn walk(
    all: &Map<String, Value>,
    schema: &Value,
    v: &mut Value,
    at: &str,
    found: &mut Vec<String>,
    keep: bool,
) {
    let s = resolve(all, schema);
    if s["x-kubernetes-preserve-unknown-fields"] == true {
        return;
    }
    match v {
        Value::Object(m) => {
            if let Some(props) = s["properties"].as_object() {
                let mut drop = Vec::new();
                for (k, child) in m.iter_mut() {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    match props.get(k) {
                        Some(p) => walk(all, p, child, &path, found, keep),
                        None => {
                            found.push(path);
                            drop.push(k.clone());
                        }
                    }
                }
                if !keep {
                    for k in drop {
                        m.remove(&k);
                    }
                }
            } else if let Some(ap) = s.get("additionalProperties").filter(|a| a.is_object()) {
                for (k, child) in m.iter_mut() {
                    let path = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    walk(all, ap, child, &path, found, keep);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item) = s.get("items") {
                for (i, child) in items.iter_mut().enumerate() {
                    walk(all, item, child, &format!("{at}[{i}]"), found, keep);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(path: &str) -> Value {
        let d = docs().iter().find(|d| d.path == path).unwrap();
        serde_json::from_slice(&d.body).unwrap()
    }

    #[test]
    fn index_lists_every_group_version_with_its_hash() {
        let i = index();
        let paths = i["paths"].as_object().unwrap();
        let names: Vec<&str> = paths.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "api/v1",
                "apis/apps/v1",
                "apis/batch/v1",
                "apis/discovery.k8s.io/v1"
            ]
        );
        let url = paths["apis/apps/v1"]["serverRelativeURL"].as_str().unwrap();
        assert!(url.starts_with("/openapi/v3/apis/apps/v1?hash="), "{url}");
        assert_eq!(url.len(), "/openapi/v3/apis/apps/v1?hash=".len() + 128);
    }

    #[test]
    fn schemas_are_the_api_servers() {
        let apps = doc("apis/apps/v1");
        assert_eq!(apps["openapi"], "3.0.0");
        let s = &apps["components"]["schemas"];
        let d = &s["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            d["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "version": "v1", "kind": "Deployment"}])
        );
        // A reference keeps its description beside it, in an allOf as the API server has it.
        let spec = &d["properties"]["spec"];
        assert_eq!(
            spec["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert_eq!(
            spec["description"],
            "Specification of the desired behavior of the Deployment."
        );
        // Everything referred to is there.
        let text = apps.to_string();
        for r in text.split("\"$ref\":\"").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            let name = name.strip_prefix(COMPONENTS).unwrap();
            assert!(s.get(name).is_some(), "{name}");
        }
        assert!(
            s["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]["description"]
                .as_str()
                .unwrap()
                .starts_with("List of containers")
        );
        assert_eq!(
            s["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
                ["x-kubernetes-patch-merge-key"],
            "name"
        );
        assert_eq!(
            s["io.k8s.api.autoscaling.v1.Scale"]["x-kubernetes-group-version-kind"][0]["group"],
            "autoscaling"
        );
        assert!(d.get("required").is_none(), "{}", d["required"]);
        let core = doc("api/v1");
        let pod = &core["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["group"], "");
        assert_eq!(
            core["components"]["schemas"]["io.k8s.api.core.v1.ServiceSpec"]["properties"]["ports"]
                ["x-kubernetes-patch-merge-key"],
            "port"
        );
    }

    #[test]
    fn paths_carry_kind_and_field_validation() {
        let apps = doc("apis/apps/v1");
        let d = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        assert_eq!(
            d["patch"]["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
        assert!(d["patch"]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "fieldValidation"));
        let c = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"];
        assert_eq!(c["post"]["x-kubernetes-action"], "post");
        let core = doc("api/v1");
        assert!(core["paths"]["/api/v1/nodes/{name}"]["get"].is_object());
    }

    #[test]
    fn hash_query() {
        let d = &docs()[1];
        let ok = serve(
            "/openapi/v3/apis/apps/v1",
            Some(&format!("hash={}", d.hash)),
        )
        .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[header::CACHE_CONTROL], "public, immutable");
        let old = serve("/openapi/v3/apis/apps/v1", Some("hash=0")).unwrap();
        assert_eq!(old.status(), StatusCode::MOVED_PERMANENTLY);
        assert!(serve("/openapi/v3/apis/nosuch/v1", None).is_none());
    }

    #[test]
    fn unknown_fields_as_the_api_server_names_them() {
        let kind = registry::KINDS
            .iter()
            .find(|k| k.kind == "Deployment")
            .unwrap();
        let mut obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d", "labels": {"any": "x"}, "bogus": 1},
            "spec": {"foo": 1, "selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {
                "containers": [{"name": "c", "image": "i", "bar": true,
                                "resources": {"limits": {"cpu": "1"}}}]}}},
        });
        let strict = unknown_fields(kind, &mut obj.clone(), Validation::Strict).unwrap_err();
        assert_eq!(strict.status(), StatusCode::BAD_REQUEST);
        let warn = unknown_fields(kind, &mut obj, Validation::Warn).unwrap();
        assert_eq!(
            warn,
            [
                "unknown field \"metadata.bogus\"",
                "unknown field \"spec.foo\"",
                "unknown field \"spec.template.spec.containers[0].bar\"",
            ]
        );
        // Warn and Ignore drop them, as decoding into the API server's types does.
        assert!(obj["spec"].get("foo").is_none());
        assert_eq!(obj["metadata"]["labels"]["any"], "x");
        assert!(unknown_fields(kind, &mut obj, Validation::Strict)
            .unwrap()
            .is_empty());

        let patch = json!({"data": {"a": "b"}, "metadata": {"foo": 1, "l": [true, null]}});
        assert_eq!(
            go_value(&patch),
            "map[data:map[a:b] metadata:map[foo:1 l:[true <nil>]]]"
        );
        let mut patched = json!({"kind": "Deployment", "metadata": {"name": "d", "foo": 1}});
        let r = unknown_fields_patched(kind, &mut patched, Validation::Strict, &patch, true);
        assert_eq!(r.unwrap_err().status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
