//! Server-side printing: the API server's printer columns for each kind (its
//! `pkg/printers/internalversion` names, descriptions and `-o wide` priorities) and the cells
//! of one object, and the meta.k8s.io/v1 Table they make.

use serde_json::{json, Value};

use super::registry::{col, Column, Kind, AGE, NAME};
use crate::print::{age, pod_columns};

fn s(v: &Value) -> String {
    v.as_str().unwrap_or("").to_string()
}

fn n(v: &Value) -> Value {
    json!(v.as_i64().unwrap_or(0))
}

fn or_none(v: String) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v
    }
}

fn name(o: &Value) -> Value {
    json!(s(&o["metadata"]["name"]))
}

fn created(o: &Value) -> Value {
    json!(age(&o["metadata"]["creationTimestamp"]))
}

/// `k=v,k2=v2` of a map (a selector), as the API server prints selectors.
fn pairs(m: &Value) -> String {
    m.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn containers_images(tpl: &Value) -> (String, String) {
    let cs = tpl["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let names: Vec<String> = cs.iter().map(|c| s(&c["name"])).collect();
    let images: Vec<String> = cs.iter().map(|c| s(&c["image"])).collect();
    (names.join(","), images.join(","))
}

const CONTAINERS: Column = col("Containers", 1, "Names of each container in the template.");
const IMAGES: Column = col(
    "Images",
    1,
    "Images referenced by each container in the template.",
);
const SELECTOR: Column = col("Selector", 1, "Label selector for pods.");

pub const POD: &[Column] = &[
    NAME,
    col("Ready", 0, "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", 0, "The aggregate status of the containers in this pod."),
    col("Restarts", 0, "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    AGE,
    col("IP", 1, "IP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
    col("Node", 1, "NodeName is a request to schedule this pod onto a specific node."),
    col("Nominated Node", 1, "nominatedNodeName is set only when this pod preempts other pods on the node."),
    col("Readiness Gates", 1, "If specified, all readiness gates will be evaluated for pod readiness."),
];

pub fn pod(o: &Value) -> Vec<Value> {
    let (ready, status, restarts) = pod_columns(o);
    vec![
        name(o),
        json!(ready),
        json!(status),
        json!(restarts),
        created(o),
        json!(or_none(s(&o["status"]["podIP"]))),
        json!(or_none(s(&o["spec"]["nodeName"]))),
        json!(or_none(s(&o["status"]["nominatedNodeName"]))),
        json!("<none>"),
    ]
}

pub const CONFIGMAP: &[Column] = &[NAME, col("Data", 0, "Number of data in configmap"), AGE];

fn count(m: &Value) -> usize {
    m.as_object().map(|m| m.len()).unwrap_or(0)
}

pub fn configmap(o: &Value) -> Vec<Value> {
    let k = count(&o["data"]) + count(&o["binaryData"]);
    vec![name(o), json!(k), created(o)]
}

pub const SECRET: &[Column] = &[
    NAME,
    col("Type", 0, "The type of the secret"),
    col("Data", 0, "The number of data in the secret"),
    AGE,
];

pub fn secret(o: &Value) -> Vec<Value> {
    vec![
        name(o),
        json!(s(&o["type"])),
        json!(count(&o["data"])),
        created(o),
    ]
}

pub const SERVICE: &[Column] = &[
    NAME,
    col("Type", 0, "The type of the service."),
    col("Cluster-IP", 0, "The IP address of the service."),
    col("External-IP", 0, "The external IP address of the service."),
    col("Port(s)", 0, "The ports of the service."),
    AGE,
    SELECTOR,
];

pub fn service(o: &Value) -> Vec<Value> {
    let ports: Vec<String> = o["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            let port = p["port"].as_i64().unwrap_or(0);
            match p["nodePort"].as_i64() {
                Some(np) if np != 0 => format!("{port}:{np}/{proto}"),
                _ => format!("{port}/{proto}"),
            }
        })
        .collect();
    let ty = o["spec"]["type"].as_str().unwrap_or("ClusterIP");
    let ext = if ty == "LoadBalancer" {
        "<pending>"
    } else {
        "<none>"
    };
    vec![
        name(o),
        json!(ty),
        json!(o["spec"]["clusterIP"].as_str().unwrap_or("None")),
        json!(ext),
        json!(or_none(ports.join(","))),
        created(o),
        json!(or_none(pairs(&o["spec"]["selector"]))),
    ]
}

pub const ENDPOINTS: &[Column] = &[NAME, col("Endpoints", 0, "Endpoints of the service"), AGE];

pub fn endpoints(o: &Value) -> Vec<Value> {
    let mut all = Vec::new();
    for sub in o["subsets"].as_array().into_iter().flatten() {
        for a in sub["addresses"].as_array().into_iter().flatten() {
            for p in sub["ports"].as_array().into_iter().flatten() {
                all.push(format!(
                    "{}:{}",
                    s(&a["ip"]),
                    p["port"].as_i64().unwrap_or(0)
                ));
            }
        }
    }
    let text = match all.len() {
        0 => "<none>".to_string(),
        1..=3 => all.join(","),
        k => format!("{} + {} more...", all[..3].join(","), k - 3),
    };
    vec![name(o), json!(text), created(o)]
}

pub const EVENT: &[Column] = &[
    col("Last Seen", 0, "Time when last this event was recorded"),
    col("Type", 0, "Type of this event (Normal, Warning), new types could be added in the future."),
    col("Reason", 0, "A short, machine understandable string that gives the reason for this event being generated."),
    col("Object", 0, "The object this Event is about."),
    col("Message", 0, "A human-readable description of the status of this operation."),
];

pub fn event(o: &Value) -> Vec<Value> {
    let last = if o["lastTimestamp"].is_string() {
        &o["lastTimestamp"]
    } else if o["eventTime"].is_string() {
        &o["eventTime"]
    } else {
        &o["metadata"]["creationTimestamp"]
    };
    let io = &o["involvedObject"];
    vec![
        json!(age(last)),
        json!(s(&o["type"])),
        json!(s(&o["reason"])),
        json!(format!(
            "{}/{}",
            s(&io["kind"]).to_lowercase(),
            s(&io["name"])
        )),
        json!(s(&o["message"]).trim().to_string()),
    ]
}

pub const NAMESPACE: &[Column] = &[NAME, col("Status", 0, "The status of the namespace"), AGE];

pub fn namespace(o: &Value) -> Vec<Value> {
    vec![
        name(o),
        json!(o["status"]["phase"].as_str().unwrap_or("Active")),
        created(o),
    ]
}

pub const NODE: &[Column] = &[
    NAME,
    col("Status", 0, "The status of the node"),
    col("Roles", 0, "The roles of the node"),
    AGE,
    col("Version", 0, "Kubelet Version reported by the node."),
    col("Internal-IP", 1, "List of addresses reachable to the node. Queried from cloud provider, if available."),
    col("External-IP", 1, "List of addresses reachable to the node. Queried from cloud provider, if available."),
    col("OS-Image", 1, "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
    col("Kernel-Version", 1, "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
    col("Container-Runtime", 1, "Container runtime version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
];

pub fn node(o: &Value) -> Vec<Value> {
    let ready = o["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")
        .map(|c| {
            if c["status"] == "True" {
                "Ready"
            } else {
                "NotReady"
            }
        })
        .unwrap_or("Unknown");
    let addr = |ty: &str| {
        o["status"]["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["type"] == ty)
            .map(|a| s(&a["address"]))
            .unwrap_or_else(|| "<none>".into())
    };
    let info = &o["status"]["nodeInfo"];
    vec![
        name(o),
        json!(ready),
        json!("<none>"),
        created(o),
        json!(s(&info["kubeletVersion"])),
        json!(addr("InternalIP")),
        json!(addr("ExternalIP")),
        json!(s(&info["osImage"])),
        json!(s(&info["kernelVersion"])),
        json!(s(&info["containerRuntimeVersion"])),
    ]
}

pub const PVC: &[Column] = &[
    NAME,
    col("Status", 0, "The status of the claim"),
    col("Volume", 0, "The volume bound to the claim"),
    col("Capacity", 0, "The capacity of the volume"),
    col("Access Modes", 0, "The access modes of the volume"),
    col("StorageClass", 0, "The storage class of the claim"),
    col(
        "VolumeAttributesClass",
        0,
        "The volume attributes class of the claim",
    ),
    AGE,
    col("VolumeMode", 1, "The volume mode of the claim"),
];

pub fn pvc(o: &Value) -> Vec<Value> {
    let modes: Vec<String> = o["status"]["accessModes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| match m.as_str().unwrap_or("") {
            "ReadWriteOnce" => "RWO".to_string(),
            "ReadOnlyMany" => "ROX".into(),
            "ReadWriteMany" => "RWX".into(),
            "ReadWriteOncePod" => "RWOP".into(),
            other => other.into(),
        })
        .collect();
    vec![
        name(o),
        json!(s(&o["status"]["phase"])),
        json!(s(&o["spec"]["volumeName"])),
        json!(s(&o["status"]["capacity"]["storage"])),
        json!(modes.join(",")),
        json!(or_none(s(&o["spec"]["storageClassName"]))),
        json!(or_none(s(&o["spec"]["volumeAttributesClassName"]))),
        created(o),
        json!(o["spec"]["volumeMode"].as_str().unwrap_or("Filesystem")),
    ]
}

pub const DEPLOYMENT: &[Column] = &[
    NAME,
    col("Ready", 0, "Number of the pod with ready state"),
    col("Up-to-date", 0, "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
    col("Available", 0, "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub fn deployment(o: &Value) -> Vec<Value> {
    let st = &o["status"];
    let (c, i) = containers_images(&o["spec"]["template"]);
    vec![
        name(o),
        json!(format!(
            "{}/{}",
            st["readyReplicas"].as_i64().unwrap_or(0),
            o["spec"]["replicas"].as_i64().unwrap_or(0)
        )),
        n(&st["updatedReplicas"]),
        n(&st["availableReplicas"]),
        created(o),
        json!(c),
        json!(i),
        json!(pairs(&o["spec"]["selector"]["matchLabels"])),
    ]
}

pub const REPLICASET: &[Column] = &[
    NAME,
    col("Desired", 0, "Number of desired pods."),
    col("Current", 0, "Number of actual replicas."),
    col("Ready", 0, "Number of ready replicas."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub fn replicaset(o: &Value) -> Vec<Value> {
    let (c, i) = containers_images(&o["spec"]["template"]);
    vec![
        name(o),
        n(&o["spec"]["replicas"]),
        n(&o["status"]["replicas"]),
        n(&o["status"]["readyReplicas"]),
        created(o),
        json!(c),
        json!(i),
        json!(pairs(&o["spec"]["selector"]["matchLabels"])),
    ]
}

pub const STATEFULSET: &[Column] = &[
    NAME,
    col("Ready", 0, "Number of the pod with ready state"),
    AGE,
    CONTAINERS,
    IMAGES,
];

pub fn statefulset(o: &Value) -> Vec<Value> {
    let (c, i) = containers_images(&o["spec"]["template"]);
    vec![
        name(o),
        json!(format!(
            "{}/{}",
            o["status"]["readyReplicas"].as_i64().unwrap_or(0),
            o["spec"]["replicas"].as_i64().unwrap_or(0)
        )),
        created(o),
        json!(c),
        json!(i),
    ]
}

pub const DAEMONSET: &[Column] = &[
    NAME,
    col("Desired", 0, "The desired number of daemon pods."),
    col("Current", 0, "The current number of daemon pods."),
    col("Ready", 0, "The number of daemon pods that are ready."),
    col(
        "Up-to-date",
        0,
        "The number of daemon pods that run the desired pod template.",
    ),
    col(
        "Available",
        0,
        "The number of daemon pods that are available.",
    ),
    col("Node Selector", 0, "The node selector for the daemon pods."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub fn daemonset(o: &Value) -> Vec<Value> {
    let st = &o["status"];
    let (c, i) = containers_images(&o["spec"]["template"]);
    vec![
        name(o),
        n(&st["desiredNumberScheduled"]),
        n(&st["currentNumberScheduled"]),
        n(&st["numberReady"]),
        n(&st["updatedNumberScheduled"]),
        n(&st["numberAvailable"]),
        json!(or_none(pairs(
            &o["spec"]["template"]["spec"]["nodeSelector"]
        ))),
        created(o),
        json!(c),
        json!(i),
        json!(pairs(&o["spec"]["selector"]["matchLabels"])),
    ]
}

pub const CONTROLLERREVISION: &[Column] = &[
    NAME,
    col("Controller", 0, "Controller of the object"),
    col("Revision", 0, "Revision of the ControllerRevision"),
    AGE,
];

pub fn controllerrevision(o: &Value) -> Vec<Value> {
    let owner = o["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|a| a.iter().find(|r| r["controller"] == true))
        .map(|r| {
            let group = s(&r["apiVersion"]);
            let group = group.split_once('/').map(|(g, _)| g).unwrap_or("");
            let kind = s(&r["kind"]).to_lowercase();
            if group.is_empty() {
                format!("{kind}/{}", s(&r["name"]))
            } else {
                format!("{kind}.{group}/{}", s(&r["name"]))
            }
        })
        .unwrap_or_else(|| "<none>".into());
    vec![name(o), json!(owner), n(&o["revision"]), created(o)]
}

pub const JOB: &[Column] = &[
    NAME,
    col("Status", 0, "Status of the job."),
    col("Completions", 0, "The completion status of the job."),
    col("Duration", 0, "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub fn job(o: &Value) -> Vec<Value> {
    let st = &o["status"];
    let cond = |t: &str| {
        st["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    let status = if cond("Complete") {
        "Complete"
    } else if cond("Failed") {
        "Failed"
    } else if cond("Suspended") {
        "Suspended"
    } else {
        "Running"
    };
    let completions = match o["spec"]["completions"].as_i64() {
        Some(c) => format!("{}/{c}", st["succeeded"].as_i64().unwrap_or(0)),
        None => format!(
            "{}/1 of {}",
            st["succeeded"].as_i64().unwrap_or(0),
            o["spec"]["parallelism"].as_i64().unwrap_or(1)
        ),
    };
    let parse = |v: &Value| {
        v.as_str()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&chrono::Utc))
    };
    let duration = match (parse(&st["startTime"]), parse(&st["completionTime"])) {
        (Some(a), Some(b)) => crate::print::human_duration(b - a),
        (Some(a), None) => crate::print::human_duration(chrono::Utc::now() - a),
        _ => String::new(),
    };
    let (c, i) = containers_images(&o["spec"]["template"]);
    vec![
        name(o),
        json!(status),
        json!(completions),
        json!(duration),
        created(o),
        json!(c),
        json!(i),
        json!(pairs(&o["spec"]["selector"]["matchLabels"])),
    ]
}

pub const CRONJOB: &[Column] = &[
    NAME,
    col("Schedule", 0, "The schedule in Cron format."),
    col("Timezone", 0, "The timezone of the schedule."),
    col("Suspend", 0, "Whether the cron job is suspended."),
    col("Active", 0, "The number of active jobs."),
    col("Last Schedule", 0, "When the job was last scheduled."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub fn cronjob(o: &Value) -> Vec<Value> {
    let last = &o["status"]["lastScheduleTime"];
    let (c, i) = containers_images(&o["spec"]["jobTemplate"]["spec"]["template"]);
    vec![
        name(o),
        json!(s(&o["spec"]["schedule"])),
        json!(or_none(s(&o["spec"]["timeZone"]))),
        json!(o["spec"]["suspend"]
            .as_bool()
            .unwrap_or(false)
            .to_string()
            .to_lowercase()),
        json!(o["status"]["active"].as_array().map(Vec::len).unwrap_or(0)),
        json!(if last.is_string() {
            age(last)
        } else {
            "<none>".into()
        }),
        created(o),
        json!(c),
        json!(i),
        json!(pairs(
            &o["spec"]["jobTemplate"]["spec"]["selector"]["matchLabels"]
        )),
    ]
}

pub const ENDPOINTSLICE: &[Column] = &[
    NAME,
    col(
        "AddressType",
        0,
        "Type of address contained in this endpoint slice.",
    ),
    col("Ports", 0, "Ports contained in this endpoint slice."),
    col(
        "Endpoints",
        0,
        "Endpoints contained in this endpoint slice.",
    ),
    AGE,
];

pub fn endpointslice(o: &Value) -> Vec<Value> {
    let ports: Vec<String> = o["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["port"].as_i64().unwrap_or(0).to_string())
        .collect();
    let eps: Vec<String> = o["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
        .map(|a| s(&a))
        .collect();
    let eps = match eps.len() {
        0 => "<unset>".to_string(),
        1..=3 => eps.join(","),
        k => format!("{} + {} more...", eps[..3].join(","), k - 3),
    };
    vec![
        name(o),
        json!(s(&o["addressType"])),
        json!(if ports.is_empty() {
            "<unset>".into()
        } else {
            ports.join(",")
        }),
        json!(eps),
        created(o),
    ]
}

/// The object of a row: the whole object, or (the default) its PartialObjectMetadata.
fn row_object(o: &Value, include: &str) -> Value {
    match include {
        "Object" => o.clone(),
        "None" => Value::Null,
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": o["metadata"],
        }),
    }
}

pub fn columns(k: &Kind) -> Value {
    Value::Array(
        k.columns
            .iter()
            .map(|c| {
                json!({"name": c.name, "type": c.ty, "format": c.format,
                       "description": c.description, "priority": c.priority})
            })
            .collect(),
    )
}

/// A meta.k8s.io/v1 Table of `items` (`headers`: with the column definitions).
pub fn table(k: &Kind, items: &[Value], rv: &str, include: &str, headers: bool) -> Value {
    let rows: Vec<Value> = items
        .iter()
        .map(|o| json!({"cells": (k.cells)(o), "object": row_object(o, include)}))
        .collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "rows": rows,
    });
    if headers {
        t["columnDefinitions"] = columns(k);
    }
    t
}
