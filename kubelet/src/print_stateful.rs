//! `get statefulsets|daemonsets|pvc`: the columns kubectl's printers give them.

use serde_json::Value;

use crate::print::{self, age};

/// The API group and plural of a resource name kubectl accepts.
pub fn resource(r: &str) -> Option<(&'static str, &'static str)> {
    Some(match r {
        "statefulsets" | "statefulset" | "sts" => ("/apis/apps/v1", "statefulsets"),
        "daemonsets" | "daemonset" | "ds" => ("/apis/apps/v1", "daemonsets"),
        "persistentvolumeclaims" | "persistentvolumeclaim" | "pvc" => {
            ("/api/v1", "persistentvolumeclaims")
        }
        "controllerrevisions" | "controllerrevision" => ("/apis/apps/v1", "controllerrevisions"),
        _ => return None,
    })
}

pub fn singular(plural: &str) -> Option<&'static str> {
    Some(match plural {
        "statefulsets" => "statefulset.apps",
        "daemonsets" => "daemonset.apps",
        "persistentvolumeclaims" => "persistentvolumeclaim",
        "controllerrevisions" => "controllerrevision.apps",
        _ => return None,
    })
}

fn n(v: &Value) -> String {
    v.as_i64().unwrap_or(0).to_string()
}

/// kubectl's short access modes (`RWO,RWOP`).
fn modes(v: &Value) -> String {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            o => o,
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn selector(v: &Value) -> String {
    let m = v.as_object().cloned().unwrap_or_default();
    if m.is_empty() {
        return "<none>".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect::<Vec<_>>()
        .join(",")
}

/// The table of one of these kinds (None: not one of them).
pub fn table(plural: &str, items: &[Value], namespaces: bool) -> Option<String> {
    let header: &[&str] = match plural {
        "statefulsets" => &["NAME", "READY", "AGE"],
        "daemonsets" => &[
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE SELECTOR",
            "AGE",
        ],
        "persistentvolumeclaims" => &[
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE",
        ],
        "controllerrevisions" => &["NAME", "CONTROLLER", "REVISION", "AGE"],
        _ => return None,
    };
    let mut rows = Vec::new();
    let mut h: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    if namespaces {
        h.insert(0, "NAMESPACE".into());
    }
    rows.push(h);
    for it in items {
        let name = it["metadata"]["name"].as_str().unwrap_or("").to_string();
        let st = &it["status"];
        let created = &it["metadata"]["creationTimestamp"];
        let mut row = match plural {
            "statefulsets" => vec![
                name,
                format!(
                    "{}/{}",
                    n(&st["readyReplicas"]),
                    it["spec"]["replicas"].as_i64().unwrap_or(1)
                ),
                age(created),
            ],
            "daemonsets" => vec![
                name,
                n(&st["desiredNumberScheduled"]),
                n(&st["currentNumberScheduled"]),
                n(&st["numberReady"]),
                n(&st["updatedNumberScheduled"]),
                n(&st["numberAvailable"]),
                selector(&it["spec"]["template"]["spec"]["nodeSelector"]),
                age(created),
            ],
            "persistentvolumeclaims" => {
                let bound = st["phase"] == "Bound";
                let phase = if it["metadata"]["deletionTimestamp"].is_string() {
                    "Terminating"
                } else {
                    st["phase"].as_str().unwrap_or("Pending")
                };
                vec![
                    name,
                    phase.into(),
                    it["spec"]["volumeName"].as_str().unwrap_or("").into(),
                    if bound {
                        st["capacity"]["storage"].as_str().unwrap_or("").into()
                    } else {
                        String::new()
                    },
                    if bound {
                        modes(&st["accessModes"])
                    } else {
                        String::new()
                    },
                    it["spec"]["storageClassName"].as_str().unwrap_or("").into(),
                    it["spec"]["volumeAttributesClassName"]
                        .as_str()
                        .unwrap_or("<unset>")
                        .into(),
                    age(created),
                ]
            }
            _ => {
                let owner = &it["metadata"]["ownerReferences"][0];
                vec![
                    name,
                    format!(
                        "{}/{}",
                        owner["kind"].as_str().unwrap_or("").to_lowercase() + ".apps",
                        owner["name"].as_str().unwrap_or("")
                    ),
                    n(&it["revision"]),
                    age(created),
                ]
            }
        };
        if namespaces {
            row.insert(0, it["metadata"]["namespace"].as_str().unwrap_or("").into());
        }
        rows.push(row);
    }
    Some(print::table(&rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns() {
        let c = json!({"metadata": {"name": "data-db-0"}, "spec": {"volumeName": "pvc-1", "storageClassName": "local-path"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Mi"}, "accessModes": ["ReadWriteOnce"]}});
        let t = table("persistentvolumeclaims", &[c], false).unwrap();
        let row = t.lines().nth(1).unwrap();
        assert!(
            row.starts_with(
                "data-db-0   Bound    pvc-1    1Mi        RWO            local-path     <unset>"
            ),
            "{t}"
        );
        let d = json!({"metadata": {"name": "agent"}, "spec": {"template": {"spec": {"nodeSelector": {"disk": "ssd"}}}},
            "status": {"desiredNumberScheduled": 1, "currentNumberScheduled": 1, "numberReady": 1, "updatedNumberScheduled": 1, "numberAvailable": 1}});
        let t = table("daemonsets", &[d], false).unwrap();
        assert!(t.contains("disk=ssd"), "{t}");
        let s = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 2}});
        let t = table("statefulsets", &[s], false).unwrap();
        assert!(t.lines().nth(1).unwrap().starts_with("db     2/3"), "{t}");
        assert_eq!(resource("pvc"), Some(("/api/v1", "persistentvolumeclaims")));
        assert!(table("pods", &[], false).is_none());
    }
}
