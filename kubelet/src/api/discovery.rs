//! The classic discovery documents (`/api`, `/api/v1`, `/apis`, `/apis/<group>/<version>`)
//! from the registry. Aggregated discovery is left out: clients fall back to these.

use serde_json::{json, Value};

use super::registry::{self, Kind};

fn resources(kinds: &[&Kind]) -> Vec<Value> {
    let mut out = Vec::new();
    for k in kinds {
        let mut r = json!({
            "name": k.plural,
            "singularName": k.singular,
            "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": k.verbs,
        });
        if !k.short.is_empty() {
            r["shortNames"] = json!(k.short);
        }
        if !k.categories.is_empty() {
            r["categories"] = json!(k.categories);
        }
        out.push(r);
        for (sub, kind, verbs) in k.subresources {
            let mut s = json!({
                "name": format!("{}/{sub}", k.plural),
                "singularName": "",
                "namespaced": k.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if *kind == "Scale" {
                s["group"] = "autoscaling".into();
                s["version"] = "v1".into();
            }
            out.push(s);
        }
    }
    out
}

fn resource_list(group: &str, version: &str) -> Option<Value> {
    let kinds: Vec<&Kind> = registry::KINDS
        .iter()
        .filter(|k| k.group == group && k.version == version)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources(&kinds),
    }))
}

/// `/openapi/v3` and its per-group-version documents: the paths and operations of the
/// kinds the API writes, each PATCH carrying its kind (`x-kubernetes-group-version-kind`)
/// and the `fieldValidation` parameter, so kubectl leaves validation to the server instead of
/// asking for schemas. The schemas themselves are not served (yet).
fn openapi_v3(path: &str) -> Option<Value> {
    let gv_path = |g: &str, v: &str| {
        if g.is_empty() {
            format!("api/{v}")
        } else {
            format!("apis/{g}/{v}")
        }
    };
    let mut gvs: Vec<(&str, &str)> = vec![("", "v1")];
    gvs.extend(registry::groups());
    if path == "/openapi/v3" {
        let paths: serde_json::Map<String, Value> = gvs
            .iter()
            .map(|(g, v)| {
                let p = gv_path(g, v);
                let url = format!("/openapi/v3/{p}?hash={}", env!("CARGO_PKG_VERSION"));
                (p, json!({"serverRelativeURL": url}))
            })
            .collect();
        return Some(json!({"paths": paths}));
    }
    let rest = path.strip_prefix("/openapi/v3/")?;
    let &(g, v) = gvs.iter().find(|(g, v)| gv_path(g, v) == rest)?;
    let mut paths = serde_json::Map::new();
    for k in registry::KINDS
        .iter()
        .filter(|k| k.group == g && k.version == v && k.verbs.contains(&"patch"))
    {
        let base = if k.namespaced {
            format!("/{rest}/namespaces/{{namespace}}/{}/{{name}}", k.plural)
        } else {
            format!("/{rest}/{}/{{name}}", k.plural)
        };
        let gvk = json!({"group": g, "version": v, "kind": k.kind});
        let params = json!([
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        ]);
        let op = |verb: &str| {
            json!({"operationId": format!("{verb}{}", k.kind), "parameters": params,
                   "x-kubernetes-action": verb, "x-kubernetes-group-version-kind": gvk,
                   "responses": {"200": {"description": "OK"}}})
        };
        paths.insert(
            base,
            json!({"get": op("get"), "put": op("put"), "patch": op("patch"), "delete": op("delete")}),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": concat!("v1.33.0-rrun+", env!("CARGO_PKG_VERSION"))},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}

/// `/openapi/v2` as older clients ask for it (gnostic's protobuf `openapi_v2.Document`):
/// the header of an OpenAPI 2.0 document without definitions, so kubectl's `apply` finds no
/// schema for a kind and computes its patches from the built-in Go types it carries.
pub fn openapi_v2_protobuf() -> Vec<u8> {
    fn field(out: &mut Vec<u8>, num: u8, bytes: &[u8]) {
        out.push((num << 3) | 2);
        let mut n = bytes.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                break;
            }
            out.push(b | 0x80);
        }
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Kubernetes");
    field(
        &mut info,
        2,
        concat!("v1.33.0-rrun+", env!("CARGO_PKG_VERSION")).as_bytes(),
    );
    let mut doc = Vec::new();
    field(&mut doc, 1, b"2.0");
    field(&mut doc, 2, &info);
    field(&mut doc, 8, &[]);
    doc
}

pub fn openapi_v2_json() -> Value {
    json!({"swagger": "2.0",
           "info": {"title": "Kubernetes", "version": concat!("v1.33.0-rrun+", env!("CARGO_PKG_VERSION"))},
           "paths": {}})
}

/// The discovery document at `path`, if it is one.
pub fn document(path: &str) -> Option<Value> {
    let path = path.trim_end_matches('/');
    if path.starts_with("/openapi/v3") {
        return openapi_v3(path);
    }
    match path {
        "/api" => Some(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        })),
        "/api/v1" => resource_list("", "v1"),
        "/apis" => {
            let groups: Vec<Value> = registry::groups()
                .into_iter()
                .map(|(g, v)| {
                    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                    json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                })
                .collect();
            Some(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        _ => {
            let rest = path.strip_prefix("/apis/")?;
            match rest.split('/').collect::<Vec<_>>().as_slice() {
                [g, v] => resource_list(g, v),
                [g] => {
                    let (_, v) = registry::groups().into_iter().find(|(x, _)| x == g)?;
                    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
                    Some(json!({"kind": "APIGroup", "apiVersion": "v1", "name": g,
                                "versions": [gv.clone()], "preferredVersion": gv}))
                }
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents() {
        let v1 = document("/api/v1").unwrap();
        let pods = v1["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "pods")
            .unwrap();
        assert_eq!(pods["shortNames"], json!(["po"]));
        assert_eq!(pods["categories"], json!(["all"]));
        let apps = document("/apis/apps/v1").unwrap();
        assert!(apps["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "deployments/scale" && r["group"] == "autoscaling"));
        let groups = document("/apis").unwrap();
        let names: Vec<&str> = groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, vec!["apps", "batch", "discovery.k8s.io"]);
        assert!(document("/apis/nosuch/v1").is_none());
        assert!(document("/api/v1/pods").is_none());
        let root = document("/openapi/v3").unwrap();
        assert!(root["paths"]["apis/apps/v1"]["serverRelativeURL"].is_string());
        let apps = document("/openapi/v3/apis/apps/v1").unwrap();
        let d = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"];
        assert_eq!(
            d["patch"]["x-kubernetes-group-version-kind"]["kind"],
            "Deployment"
        );
    }
}
