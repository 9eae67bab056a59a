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

/// The discovery document at `path`, if it is one.
pub fn document(path: &str) -> Option<Value> {
    let path = path.trim_end_matches('/');
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
    }
}
