//! `get statefulsets|daemonsets|pvc`: the columns kubectl's printers give them; `describe`.

use serde_json::Value;

use crate::print::{self, age, rfc1123};

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

fn count(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// Running / Waiting / Succeeded / Failed of the pods `owner` controls (kubectl's
/// getPodStatusForController: the selector's pods with the owner's uid as controller).
fn pods_status(owner: &Value, pods: &Value) -> String {
    let uid = &owner["metadata"]["uid"];
    let mut n = [0; 4];
    for p in pods["items"].as_array().into_iter().flatten() {
        let ours = p["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["controller"] == true && &r["uid"] == uid);
        if !ours {
            continue;
        }
        match p["status"]["phase"].as_str().unwrap_or("Pending") {
            "Running" => n[0] += 1,
            "Pending" => n[1] += 1,
            "Succeeded" => n[2] += 1,
            "Failed" => n[3] += 1,
            _ => {}
        }
    }
    format!(
        "{} Running / {} Waiting / {} Succeeded / {} Failed",
        n[0], n[1], n[2], n[3]
    )
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// `kubectl describe statefulset|daemonset|pvc NAME` (kubectl 1.30+'s describers). `pods`:
/// the namespace's pods (the counts of a set, a claim's users).
pub fn describe(plural: &str, o: &Value, pods: &Value, events: &Value) -> String {
    use crate::print_describe as d;
    let md = &o["metadata"];
    let spec = &o["spec"];
    let st = &o["status"];
    let mut t = String::new();
    t.push_str(&format!("Name:\t{}\n", str_of(&md["name"])));
    match plural {
        "statefulsets" => {
            t.push_str(&format!("Namespace:\t{}\n", str_of(&md["namespace"])));
            t.push_str(&format!(
                "CreationTimestamp:\t{}\n",
                rfc1123(&md["creationTimestamp"])
            ));
            t.push_str(&format!("Selector:\t{}\n", d::selector(&spec["selector"])));
            d::labels(&mut t, "", "Labels", &md["labels"]);
            d::annotations(&mut t, "", "Annotations", &md["annotations"]);
            t.push_str(&format!(
                "Replicas:\t{} desired | {} total\n",
                spec["replicas"].as_i64().unwrap_or(1),
                count(&st["replicas"])
            ));
            let strategy = &spec["updateStrategy"];
            t.push_str(&format!(
                "Update Strategy:\t{}\n",
                strategy["type"].as_str().unwrap_or("RollingUpdate")
            ));
            let ru = &strategy["rollingUpdate"];
            if let Some(p) = ru["partition"].as_i64() {
                t.push_str(&format!("  Partition:\t{p}\n"));
                if !ru["maxUnavailable"].is_null() {
                    let m = &ru["maxUnavailable"];
                    let m = m.as_str().map_or_else(|| m.to_string(), str::to_string);
                    t.push_str(&format!("  MaxUnavailable:\t{m}\n"));
                }
            }
            t.push_str(&format!("Pods Status:\t{}\n", pods_status(o, pods)));
            d::pod_template(&mut t, &spec["template"]);
            let templates = spec["volumeClaimTemplates"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if templates.is_empty() {
                t.push_str("Volume Claims:\t<none>\n");
            } else {
                t.push_str("Volume Claims:\n");
            }
            for c in &templates {
                t.push_str(&format!("  Name:\t{}\n", str_of(&c["metadata"]["name"])));
                t.push_str(&format!(
                    "  StorageClass:\t{}\n",
                    str_of(&c["spec"]["storageClassName"])
                ));
                d::labels(&mut t, "  ", "Labels", &c["metadata"]["labels"]);
                d::labels(&mut t, "  ", "Annotations", &c["metadata"]["annotations"]);
                t.push_str(&format!(
                    "  Capacity:\t{}\n",
                    c["spec"]["resources"]["requests"]["storage"]
                        .as_str()
                        .unwrap_or("<default>")
                ));
                let m: Vec<&str> = c["spec"]["accessModes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                t.push_str(&format!("  Access Modes:\t[{}]\n", m.join(" ")));
            }
        }
        "daemonsets" => {
            t.push_str(&format!("Namespace:\t{}\n", str_of(&md["namespace"])));
            t.push_str(&format!("Selector:\t{}\n", d::selector(&spec["selector"])));
            t.push_str(&format!(
                "Node-Selector:\t{}\n",
                selector(&spec["template"]["spec"]["nodeSelector"])
            ));
            d::labels(&mut t, "", "Labels", &md["labels"]);
            d::annotations(&mut t, "", "Annotations", &md["annotations"]);
            for (k, title) in [
                (
                    "desiredNumberScheduled",
                    "Desired Number of Nodes Scheduled",
                ),
                (
                    "currentNumberScheduled",
                    "Current Number of Nodes Scheduled",
                ),
                (
                    "updatedNumberScheduled",
                    "Number of Nodes Scheduled with Up-to-date Pods",
                ),
                (
                    "numberAvailable",
                    "Number of Nodes Scheduled with Available Pods",
                ),
                ("numberMisscheduled", "Number of Nodes Misscheduled"),
            ] {
                // No tab: kubectl writes these with a space, outside the alignment.
                t.push_str(&format!("{title}: {}\n", count(&st[k])));
            }
            t.push_str(&format!("Pods Status:\t{}\n", pods_status(o, pods)));
            d::pod_template(&mut t, &spec["template"]);
        }
        _ => {
            let name = str_of(&md["name"]);
            t.push_str(&format!("Namespace:\t{}\n", str_of(&md["namespace"])));
            t.push_str(&format!(
                "StorageClass:\t{}\n",
                str_of(&spec["storageClassName"])
            ));
            let phase = if md["deletionTimestamp"].is_string() {
                "Terminating"
            } else {
                st["phase"].as_str().unwrap_or("Pending")
            };
            t.push_str(&format!("Status:\t{phase}\n"));
            t.push_str(&format!("Volume:\t{}\n", str_of(&spec["volumeName"])));
            d::labels(&mut t, "", "Labels", &md["labels"]);
            d::annotations(&mut t, "", "Annotations", &md["annotations"]);
            let fin: Vec<&str> = md["finalizers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            t.push_str(&format!("Finalizers:\t[{}]\n", fin.join(" ")));
            let bound = !str_of(&spec["volumeName"]).is_empty();
            let (cap, am) = if bound {
                (
                    str_of(&st["capacity"]["storage"]),
                    modes(&st["accessModes"]),
                )
            } else {
                ("", String::new())
            };
            t.push_str(&format!("Capacity:\t{cap}\nAccess Modes:\t{am}\n"));
            if let Some(m) = spec["volumeMode"].as_str() {
                t.push_str(&format!("VolumeMode:\t{m}\n"));
            }
            let mut users: Vec<&str> = pods["items"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| {
                    p["spec"]["volumes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|v| v["persistentVolumeClaim"]["claimName"] == name)
                })
                .map(|p| str_of(&p["metadata"]["name"]))
                .collect();
            users.sort_unstable();
            t.push_str("Used By:\t");
            if users.is_empty() {
                t.push_str("<none>\n");
            }
            for (i, u) in users.iter().enumerate() {
                if i > 0 {
                    t.push('\t');
                }
                t.push_str(&format!("{u}\n"));
            }
        }
    }
    d::finish(t, events)
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
