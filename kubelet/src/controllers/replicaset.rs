//! The ReplicaSet controller's rules: pod names and template hashes as Kubernetes makes
//! them, the pods a ReplicaSet owns, and which of them go first when it shrinks.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Serialize};

use crate::api::defaults::normal_template;

/// The alphabet of Kubernetes' `rand.String` and `SafeEncodeString`: no vowels (no words)
/// and no look-alikes (0/o, 1/l, 3/e).
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

pub const TEMPLATE_HASH: &str = "pod-template-hash";

/// Five random characters, as the API server's `generateName` appends.
pub fn random_suffix() -> String {
    (0..5)
        .map(|_| ALPHANUMS[fastrand::usize(..ALPHANUMS.len())] as char)
        .collect()
}

/// A random version-4 UUID for an object the agent creates.
pub fn random_uid() -> String {
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    let a = (a & !0xf000) | 0x4000;
    let b = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

/// Drops what the API server's defaulting makes equal: nulls, empty maps and empty lists
/// (`resources: {}` as kubectl sends a Go struct back, against none in a manifest).
fn without_empties(v: serde_json::Value) -> Option<serde_json::Value> {
    use serde_json::Value;
    match v {
        Value::Null => None,
        Value::Object(m) => {
            let m: serde_json::Map<String, Value> = m
                .into_iter()
                .filter_map(|(k, v)| without_empties(v).map(|v| (k, v)))
                .collect();
            (!m.is_empty()).then_some(Value::Object(m))
        }
        Value::Array(a) => {
            let a: Vec<Value> = a
                .into_iter()
                .map(|v| without_empties(v).unwrap_or(Value::Null))
                .collect();
            (!a.is_empty()).then_some(Value::Array(a))
        }
        other => Some(other),
    }
}

/// Two templates are the same but for `pod-template-hash` and empty fields, as
/// `EqualIgnoreHash` compares them (the Deployment controller's test for the ReplicaSet of a
/// template, which an undo through kubectl relies on).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let norm = |t: &PodTemplateSpec| {
        let mut v = serde_json::to_value(normal_template(t)).unwrap_or_default();
        if let Some(l) = v["metadata"]["labels"].as_object_mut() {
            l.remove(TEMPLATE_HASH);
        }
        without_empties(v)
    };
    norm(a) == norm(b)
}

/// The `pod-template-hash` of a template: FNV-32a of the template (with the collision
/// count), its decimal digits encoded through the safe alphabet, as `ComputeHash` does.
/// (Kubernetes hashes a Go dump of the struct, so the value differs from a real cluster's;
/// the shape and its stability are the same.)
///
/// The template's defaults are left out first, so the API's defaulting (which the stored and
/// served templates have) never makes a new revision.
pub fn template_hash(t: &PodTemplateSpec, collisions: Option<i32>) -> String {
    let mut text = serde_json::to_string(&normal_template(t)).unwrap_or_default();
    if let Some(c) = collisions {
        text.push_str(&c.to_string());
    }
    let h = text.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// A pod a ReplicaSet made, kept in the controller's state so a restarted agent has the
/// same pods (same uids: the CRI's are adopted).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OwnedPod {
    pub uid: String,
    pub pod: Pod,
}

impl OwnedPod {
    pub fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or("")
    }

    pub fn created(&self) -> Option<DateTime<Utc>> {
        self.pod.metadata.creation_timestamp.as_ref().map(|t| t.0)
    }
}

/// What the agent last saw of a pod (from its recorded status).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub phase: String,
    pub ready_since: Option<DateTime<Utc>>,
    pub restarts: i32,
    pub ip: Option<String>,
}

impl Observed {
    pub fn ready(&self) -> bool {
        self.ready_since.is_some()
    }

    /// Ready for at least `min_ready` seconds (the Available of Deployments).
    pub fn available(&self, min_ready: i32, now: DateTime<Utc>) -> bool {
        self.ready_since
            .is_some_and(|t| now - t >= chrono::Duration::seconds(i64::from(min_ready.max(0))))
    }

    fn inactive(&self) -> bool {
        self.phase == "Succeeded" || self.phase == "Failed"
    }
}

/// A new pod of `rs` from its template: `<rs>-<5 chars>`, owned by the ReplicaSet.
pub fn new_pod(rs: &ReplicaSet, rs_uid: &str, taken: &dyn Fn(&str) -> bool) -> OwnedPod {
    let rs_name = rs.metadata.name.clone().unwrap_or_default();
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let mut name = format!("{rs_name}-{}", random_suffix());
    while taken(&name) {
        name = format!("{rs_name}-{}", random_suffix());
    }
    let t = template.metadata.unwrap_or_default();
    let uid = random_uid();
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name),
            generate_name: Some(format!("{rs_name}-")),
            namespace: rs.metadata.namespace.clone(),
            labels: t.labels,
            annotations: t.annotations,
            uid: Some(uid.clone()),
            creation_timestamp: Some(Time(Utc::now())),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "ReplicaSet".into(),
                name: rs_name,
                uid: rs_uid.to_string(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    };
    OwnedPod { uid, pod }
}

/// The order in which pods go on a scale-down (the first goes first), as `ActivePods`
/// sorts them: Pending before Unknown before Running, not ready before ready, ready for less
/// time before longer, more restarts before fewer, newer before older.
pub fn deletion_order(pods: &[OwnedPod], obs: &HashMap<String, Observed>) -> Vec<usize> {
    let phase_rank = |p: &str| match p {
        "Running" => 2,
        "Unknown" => 1,
        _ => 0,
    };
    let mut idx: Vec<usize> = (0..pods.len()).collect();
    idx.sort_by(|&a, &b| {
        let (pa, pb) = (&pods[a], &pods[b]);
        let d = Observed::default();
        let (oa, ob) = (
            obs.get(&pa.uid).unwrap_or(&d),
            obs.get(&pb.uid).unwrap_or(&d),
        );
        phase_rank(&oa.phase)
            .cmp(&phase_rank(&ob.phase))
            .then(oa.ready().cmp(&ob.ready()))
            // Both ready: the more recently ready first.
            .then(ob.ready_since.cmp(&oa.ready_since))
            .then(ob.restarts.cmp(&oa.restarts))
            .then(pb.created().cmp(&pa.created()))
    });
    idx
}

/// The ReplicaSet's counts, as its status reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub replicas: i32,
    pub ready: i32,
    pub available: i32,
}

pub fn counts(
    pods: &[OwnedPod],
    obs: &HashMap<String, Observed>,
    min_ready: i32,
    now: DateTime<Utc>,
) -> Counts {
    let mut c = Counts {
        replicas: pods.len() as i32,
        ..Default::default()
    };
    for p in pods {
        if let Some(o) = obs.get(&p.uid) {
            c.ready += i32::from(o.ready());
            c.available += i32::from(o.available(min_ready, now));
        }
    }
    c
}

/// One step of the ReplicaSet controller: finished pods are dropped (to be replaced), then
/// pods are made or removed until `replicas` are active. Returns whether anything changed.
pub fn sync(
    rs: &ReplicaSet,
    rs_uid: &str,
    pods: &mut Vec<OwnedPod>,
    obs: &HashMap<String, Observed>,
    taken: &dyn Fn(&str) -> bool,
) -> bool {
    let want = rs
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1)
        .max(0) as usize;
    let before = pods.len();
    pods.retain(|p| !obs.get(&p.uid).is_some_and(Observed::inactive));
    let mut changed = pods.len() != before;
    if pods.len() > want {
        let order = deletion_order(pods, obs);
        let gone: std::collections::HashSet<usize> =
            order.into_iter().take(pods.len() - want).collect();
        let mut i = 0;
        pods.retain(|_| {
            i += 1;
            !gone.contains(&(i - 1))
        });
        changed = true;
    }
    while pods.len() < want {
        let names: Vec<String> = pods.iter().map(|p| p.name().to_string()).collect();
        let p = new_pod(rs, rs_uid, &|n| taken(n) || names.iter().any(|m| m == n));
        pods.push(p);
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetSpec;

    fn rs(replicas: i32) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-6d4cf56db6".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                template: Some(PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some([("app".to_string(), "web".to_string())].into()),
                        ..Default::default()
                    }),
                    spec: None,
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod_at(secs: i64) -> OwnedPod {
        let mut p = new_pod(&rs(1), "rs-uid", &|_| false);
        p.pod.metadata.creation_timestamp =
            Some(Time(DateTime::from_timestamp(1_000_000 + secs, 0).unwrap()));
        p
    }

    #[test]
    fn names_hashes_and_owner() {
        let p = new_pod(&rs(1), "rs-uid", &|_| false);
        let name = p.name();
        assert!(name.starts_with("web-6d4cf56db6-"), "{name}");
        let suffix = &name["web-6d4cf56db6-".len()..];
        assert_eq!(suffix.len(), 5);
        assert!(suffix.bytes().all(|b| ALPHANUMS.contains(&b)));
        let o = &p.pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!((o.kind.as_str(), o.uid.as_str()), ("ReplicaSet", "rs-uid"));
        assert_eq!(o.controller, Some(true));
        let t = rs(1).spec.unwrap().template.unwrap();
        let h = template_hash(&t, None);
        assert_eq!(h, template_hash(&t, None));
        assert_ne!(h, template_hash(&t, Some(1)));
        assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)));
        assert_eq!(random_uid().len(), 36);
    }

    #[test]
    fn scale_down_ranking() {
        let now = Utc::now();
        let pods = vec![pod_at(0), pod_at(10), pod_at(20), pod_at(30), pod_at(40)];
        let mut obs = HashMap::new();
        let running = |ready: Option<i64>| Observed {
            phase: "Running".into(),
            ready_since: ready.map(|s| now - chrono::Duration::seconds(s)),
            ..Default::default()
        };
        // 0: ready for long; 1: ready recently; 2: running, not ready; 3: pending;
        // 4: ready for long as 0 but newer.
        obs.insert(pods[0].uid.clone(), running(Some(100)));
        obs.insert(pods[1].uid.clone(), running(Some(5)));
        obs.insert(pods[2].uid.clone(), running(None));
        obs.insert(
            pods[3].uid.clone(),
            Observed {
                phase: "Pending".into(),
                ..Default::default()
            },
        );
        obs.insert(pods[4].uid.clone(), running(Some(100)));
        assert_eq!(deletion_order(&pods, &obs), vec![3, 2, 1, 4, 0]);
        let mut more = obs.clone();
        more.get_mut(&pods[0].uid).unwrap().restarts = 3;
        assert_eq!(deletion_order(&pods, &more), vec![3, 2, 1, 0, 4]);
    }

    #[test]
    fn sync_replaces_and_scales() {
        let set = rs(3);
        let mut pods = Vec::new();
        let obs = HashMap::new();
        assert!(sync(&set, "u", &mut pods, &obs, &|_| false));
        assert_eq!(pods.len(), 3);
        assert!(!sync(&set, "u", &mut pods, &obs, &|_| false));
        // A failed pod is replaced by a new one.
        let mut obs = HashMap::new();
        let failed = pods[1].uid.clone();
        obs.insert(
            failed.clone(),
            Observed {
                phase: "Failed".into(),
                ..Default::default()
            },
        );
        assert!(sync(&set, "u", &mut pods, &obs, &|_| false));
        assert_eq!(pods.len(), 3);
        assert!(pods.iter().all(|p| p.uid != failed));
        // Down to 1: the not-ready go first.
        let ready = pods[2].uid.clone();
        obs.insert(
            ready.clone(),
            Observed {
                phase: "Running".into(),
                ready_since: Some(Utc::now()),
                ..Default::default()
            },
        );
        assert!(sync(&rs(1), "u", &mut pods, &obs, &|_| false));
        assert_eq!(pods.len(), 1);
        assert_eq!(pods[0].uid, ready);
        let c = counts(&pods, &obs, 0, Utc::now());
        assert_eq!((c.replicas, c.ready, c.available), (1, 1, 1));
        assert_eq!(counts(&pods, &obs, 60, Utc::now()).available, 0);
    }
}
