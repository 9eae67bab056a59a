//! The objects the API makes from the agent's own state rather than from a route of its
//! own: this node (`Node`), the namespaces, and the ConfigMaps and Secrets in force.

use std::collections::BTreeSet;
use std::path::Path;

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::objects::Kind as ObjKind;
use crate::state::Shared;

/// The namespaces every cluster has.
pub const BUILTIN_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

fn stamp(t: std::time::SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn mtime(p: &Path) -> Option<String> {
    std::fs::metadata(p)
        .and_then(|m| m.modified())
        .ok()
        .map(stamp)
}

/// When this node joined: the first start (its CA was made then).
fn node_created(shared: &Shared) -> String {
    mtime(&shared.config.root_dir.join("pki/ca.crt"))
        .unwrap_or_else(|| stamp(std::time::SystemTime::now()))
}

pub(crate) fn uid_of(text: &str) -> String {
    // A stable uid from the name: FNV-1a, shaped as a UUID.
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d;
    for b in text.bytes() {
        h ^= b as u128;
        h = h.wrapping_mul(0x0000000001000000000000000000013B);
    }
    let x = format!("{h:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// The namespaces: the built-in ones and those any object of the agent is in.
pub fn namespaces(shared: &Shared, seen: impl IntoIterator<Item = String>) -> Vec<Value> {
    let mut names: BTreeSet<String> = BUILTIN_NAMESPACES.iter().map(|s| s.to_string()).collect();
    names.extend(seen);
    let created = node_created(shared);
    names
        .into_iter()
        .map(|n| {
            json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {
                    "name": n,
                    "uid": uid_of(&format!("namespace/{n}")),
                    "creationTimestamp": created,
                    "labels": {"kubernetes.io/metadata.name": n},
                },
                "spec": {"finalizers": ["kubernetes"]},
                "status": {"phase": "Active"},
            })
        })
        .collect()
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// This node, with the CRI runtime's name and version (`runtime`: from its Version call).
pub fn node(shared: &Shared, runtime: Option<(String, String)>) -> Value {
    let c = &shared.config;
    let (cpu, mem) = crate::resources::capacity();
    let alloc = c.allocatable();
    let (cri_up, memory_pressure) = {
        let g = shared.lock();
        (g.cri_up, g.memory_pressure.is_some())
    };
    let now = stamp(std::time::SystemTime::now());
    let (rt, rtv) = runtime.unwrap_or_else(|| ("unknown".into(), "unknown".into()));
    let arch = go_arch();
    let ready = |b: bool| if b { "True" } else { "False" };
    let cond = |ty: &str, status: &str, reason: &str, msg: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": msg,
               "lastHeartbeatTime": now, "lastTransitionTime": node_created(shared)})
    };
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": c.node_name,
            "uid": uid_of(&format!("node/{}", c.node_name)),
            "creationTimestamp": node_created(shared),
            "labels": {
                "kubernetes.io/hostname": c.node_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": arch,
                "beta.kubernetes.io/os": "linux",
                "beta.kubernetes.io/arch": arch,
            },
        },
        "spec": {},
        "status": {
            "capacity": {"cpu": format!("{}", cpu / 1000), "memory": format!("{}Ki", mem / 1024), "pods": c.max_pods.to_string()},
            "allocatable": {"cpu": format!("{}m", alloc.milli_cpu), "memory": format!("{}Ki", alloc.memory / 1024), "pods": alloc.pods.to_string()},
            "conditions": [
                if memory_pressure {
                    cond("MemoryPressure", "True", "KubeletHasInsufficientMemory", "kubelet has insufficient memory available")
                } else {
                    cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available")
                },
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                if cri_up {
                    cond("Ready", ready(true), "KubeletReady", "kubelet is posting ready status")
                } else {
                    cond("Ready", ready(false), "KubeletNotReady", "container runtime is down")
                },
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": c.node_name},
            ],
            "nodeInfo": {
                "machineID": "", "systemUUID": "", "bootID": "",
                "kernelVersion": kernel(),
                "osImage": os_image(),
                "containerRuntimeVersion": format!("{rt}://{rtv}"),
                "kubeletVersion": concat!("v1.33.0-rrun+", env!("CARGO_PKG_VERSION")),
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": arch,
            },
        },
    })
}

/// The ConfigMaps or Secrets in force, as the API shows them (a Secret's data base64, a
/// ConfigMap's non-UTF-8 keys as binaryData).
pub fn config_objects(shared: &Shared, kind: ObjKind) -> Vec<Value> {
    let objects = shared.lock().objects.clone();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    objects
        .iter()
        .filter(|((k, _, _), _, _)| *k == kind)
        .map(|((_, ns, name), o, origin)| {
            let created = origin.and_then(|p| mtime(p));
            let mut v = json!({
                "apiVersion": "v1",
                "kind": kind.as_str(),
                "metadata": {
                    "name": name,
                    "namespace": ns,
                    "uid": uid_of(&format!("{}/{ns}/{name}", kind.as_str())),
                    "creationTimestamp": created,
                },
            });
            if o.immutable {
                v["immutable"] = true.into();
            }
            match kind {
                ObjKind::Secret => {
                    v["type"] = o.type_.clone().into();
                    let data: serde_json::Map<String, Value> = o
                        .data
                        .iter()
                        .map(|(k, b)| (k.clone(), b64(b).into()))
                        .collect();
                    v["data"] = data.into();
                }
                ObjKind::ConfigMap => {
                    let mut data = serde_json::Map::new();
                    let mut bin = serde_json::Map::new();
                    for (k, b) in &o.data {
                        match (o.binary.contains(k), std::str::from_utf8(b)) {
                            (false, Ok(t)) => {
                                data.insert(k.clone(), t.into());
                            }
                            _ => {
                                bin.insert(k.clone(), b64(b).into());
                            }
                        }
                    }
                    if !data.is_empty() {
                        v["data"] = data.into();
                    }
                    if !bin.is_empty() {
                        v["binaryData"] = bin.into();
                    }
                }
            }
            v
        })
        .collect()
}

/// This machine's architecture as Go (and so Kubernetes) names it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    }
}
