//! `get deployments|replicasets|services|endpoints`: the columns kubectl prints.

use serde_json::Value;

use crate::print::{self, age};

/// The API group and plural of a resource name kubectl accepts.
pub fn resource(r: &str) -> Option<(&'static str, &'static str)> {
    Some(match r {
        "deployments" | "deployment" | "deploy" => ("/apis/apps/v1", "deployments"),
        "replicasets" | "replicaset" | "rs" => ("/apis/apps/v1", "replicasets"),
        "services" | "service" | "svc" => ("/api/v1", "services"),
        "endpoints" | "ep" => ("/api/v1", "endpoints"),
        "jobs" | "job" => ("/apis/batch/v1", "jobs"),
        "cronjobs" | "cronjob" | "cj" => ("/apis/batch/v1", "cronjobs"),
        _ => return crate::print_stateful::resource(r),
    })
}

pub fn singular(plural: &str) -> &str {
    match plural {
        "deployments" => "deployment.apps",
        "replicasets" => "replicaset.apps",
        "services" => "service",
        "endpoints" => "endpoints",
        "jobs" => "job.batch",
        "cronjobs" => "cronjob.batch",
        _ => crate::print_stateful::singular(plural).unwrap_or("pod"),
    }
}

fn n(v: &Value) -> String {
    v.as_i64().unwrap_or(0).to_string()
}

fn ports(svc: &Value) -> String {
    let ps: Vec<String> = svc["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_i64() {
                Some(np) => format!("{}:{np}/{proto}", n(&p["port"])),
                None => format!("{}/{proto}", n(&p["port"])),
            }
        })
        .collect();
    if ps.is_empty() {
        "<none>".into()
    } else {
        ps.join(",")
    }
}

/// kubectl's ENDPOINTS column: up to three `ip:port`, then `+ N more...`.
fn endpoints(ep: &Value) -> String {
    let mut all = Vec::new();
    for s in ep["subsets"].as_array().into_iter().flatten() {
        for a in s["addresses"].as_array().into_iter().flatten() {
            for p in s["ports"].as_array().into_iter().flatten() {
                all.push(format!(
                    "{}:{}",
                    a["ip"].as_str().unwrap_or(""),
                    n(&p["port"])
                ));
            }
        }
    }
    match all.len() {
        0 => "<none>".into(),
        1..=3 => all.join(","),
        k => format!("{} + {} more...", all[..3].join(","), k - 3),
    }
}

pub fn table(plural: &str, items: &[Value], namespaces: bool) -> String {
    if let Some(t) = crate::print_stateful::table(plural, items, namespaces) {
        return t;
    }
    let header: &[&str] = match plural {
        "deployments" => &["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        "replicasets" => &["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        "services" => &[
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ],
        "jobs" => &["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
        "cronjobs" => &[
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE",
        ],
        _ => &["NAME", "ENDPOINTS", "AGE"],
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
            "deployments" => vec![
                name,
                format!(
                    "{}/{}",
                    n(&st["readyReplicas"]),
                    it["spec"]["replicas"].as_i64().unwrap_or(1)
                ),
                n(&st["updatedReplicas"]),
                n(&st["availableReplicas"]),
                age(created),
            ],
            "replicasets" => vec![
                name,
                n(&it["spec"]["replicas"]),
                n(&st["replicas"]),
                n(&st["readyReplicas"]),
                age(created),
            ],
            "services" => vec![
                name,
                it["spec"]["type"].as_str().unwrap_or("ClusterIP").into(),
                it["spec"]["clusterIP"].as_str().unwrap_or("None").into(),
                "<none>".into(),
                ports(it),
                age(created),
            ],
            "jobs" => crate::print_batch::job_row(name, it),
            "cronjobs" => crate::print_batch::cronjob_row(name, it),
            _ => vec![name, endpoints(it), age(created)],
        };
        if namespaces {
            row.insert(0, it["metadata"]["namespace"].as_str().unwrap_or("").into());
        }
        rows.push(row);
    }
    print::table(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080}]}});
        let t = table("services", &[svc], false);
        assert!(t.starts_with("NAME   TYPE"), "{t}");
        assert!(
            t.contains("10.96.0.10") && t.contains("80:30080/TCP"),
            "{t}"
        );
        let ep = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": [{"ip": "10.88.0.2"}, {"ip": "10.88.0.3"}, {"ip": "10.88.0.4"}, {"ip": "10.88.0.5"}], "ports": [{"port": 8080}]}]});
        assert_eq!(
            endpoints(&ep),
            "10.88.0.2:8080,10.88.0.3:8080,10.88.0.4:8080 + 1 more..."
        );
        let d = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3}, "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let t = table("deployments", &[d], false);
        assert!(
            t.lines()
                .nth(1)
                .unwrap()
                .starts_with("web    2/3     3            2"),
            "{t}"
        );
        assert_eq!(resource("svc"), Some(("/api/v1", "services")));
        assert_eq!(resource("pods"), None);
    }
}
