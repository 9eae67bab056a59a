//! The DaemonSet controller (apps/v1) for this one node: a pod here when the template's
//! `nodeSelector`, required node affinity and tolerations fit the node (its labels and
//! taints are the agent's `--node-labels` and `--register-with-taints`), none when not;
//! `RollingUpdate` (`maxUnavailable`, `maxSurge`) and `OnDelete`; the controller's
//! default tolerations and its node-name affinity added to its pods.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodTemplateSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use super::record::Ev;
use super::replicaset::{random_suffix, random_uid, template_hash, Observed, OwnedPod};

const WHO: (&str, &str, &str) = ("apps/v1", "DaemonSet", "daemonset-controller");
pub const HASH_LABEL: &str = "controller-revision-hash";

/// What the node is, for the controllers: its name, labels and taints.
#[derive(Debug, Clone, Default)]
pub struct NodeConf {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    /// The local provisioner's data root.
    pub storage_root: std::path::PathBuf,
}

impl NodeConf {
    /// The node's labels: the well-known ones the kubelet sets, then `--node-labels`.
    pub fn new(
        name: &str,
        labels: &[(String, String)],
        taints: Vec<Taint>,
        storage_root: std::path::PathBuf,
    ) -> Self {
        let mut l = BTreeMap::new();
        l.insert("kubernetes.io/hostname".to_string(), name.to_string());
        l.insert("kubernetes.io/os".to_string(), "linux".to_string());
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            a => a,
        };
        l.insert("kubernetes.io/arch".to_string(), arch.to_string());
        l.extend(labels.iter().cloned());
        NodeConf {
            name: name.into(),
            labels: l,
            taints,
            storage_root,
        }
    }
}

/// `--node-labels`: `key=value,key2=value2`.
pub fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("invalid label {p:?}: expected key=value"))?;
            if k.is_empty() {
                return Err(format!("invalid label {p:?}: empty key"));
            }
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

/// `--register-with-taints`: `key=value:Effect,key:Effect`.
pub fn parse_taints(s: &str) -> Result<Vec<Taint>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (kv, effect) = p
                .rsplit_once(':')
                .ok_or_else(|| format!("invalid taint spec: {p}"))?;
            if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
                return Err(format!(
                    "invalid taint effect: {effect}, unsupported taint effect"
                ));
            }
            let (k, v) = match kv.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (kv, None),
            };
            if k.is_empty() {
                return Err(format!("invalid taint spec: {p}"));
            }
            Ok(Taint {
                key: k.into(),
                value: v,
                effect: effect.into(),
                time_added: None,
            })
        })
        .collect()
}

fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if t.effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        _ => {
            t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
                && !key.is_empty()
        }
    }
}

fn requirement(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let vals = r.values.clone().unwrap_or_default();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| vals.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !vals.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(w)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                vals.first().and_then(|w| w.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > w
            } else {
                v < w
            }
        }
        _ => false,
    }
}

fn term(t: &NodeSelectorTerm, node: &NodeConf) -> bool {
    let exprs = t.match_expressions.iter().flatten();
    let fields = t.match_fields.iter().flatten();
    let has_any = t.match_expressions.as_ref().is_some_and(|v| !v.is_empty())
        || t.match_fields.as_ref().is_some_and(|v| !v.is_empty());
    has_any
        && exprs
            .clone()
            .all(|r| requirement(r, node.labels.get(&r.key).map(String::as_str)))
        && fields.clone().all(|r| {
            let v = (r.key == "metadata.name").then_some(node.name.as_str());
            requirement(r, v)
        })
}

/// Why the node should not run the set's pod (None: it should), in the scheduler's words.
pub fn misfit(ds: &DaemonSet, node: &NodeConf) -> Option<String> {
    let spec = ds.spec.as_ref()?.template.spec.as_ref()?;
    for (k, v) in spec.node_selector.iter().flatten() {
        if node.labels.get(k) != Some(v) {
            return Some("node(s) didn't match Pod's node affinity/selector".into());
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    if let Some(sel) = required {
        if !sel.node_selector_terms.iter().any(|t| term(t, node)) {
            return Some("node(s) didn't match Pod's node affinity/selector".into());
        }
    }
    let tolerations = with_default_tolerations(
        spec.tolerations.clone().unwrap_or_default(),
        spec.host_network == Some(true),
    );
    for taint in &node.taints {
        if taint.effect == "PreferNoSchedule" {
            continue;
        }
        if !tolerations.iter().any(|t| tolerates(t, taint)) {
            return Some(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                taint.key,
                taint.value.as_deref().unwrap_or("")
            ));
        }
    }
    None
}

/// The tolerations the DaemonSet controller adds to its pods.
fn with_default_tolerations(mut ts: Vec<Toleration>, host_network: bool) -> Vec<Toleration> {
    let mut add = |key: &str, effect: &str| {
        let t = Toleration {
            key: Some(key.into()),
            operator: Some("Exists".into()),
            effect: Some(effect.into()),
            ..Default::default()
        };
        if !ts.iter().any(|x| x.key == t.key && x.effect == t.effect) {
            ts.push(t);
        }
    };
    add("node.kubernetes.io/not-ready", "NoExecute");
    add("node.kubernetes.io/unreachable", "NoExecute");
    add("node.kubernetes.io/disk-pressure", "NoSchedule");
    add("node.kubernetes.io/memory-pressure", "NoSchedule");
    add("node.kubernetes.io/pid-pressure", "NoSchedule");
    add("node.kubernetes.io/unschedulable", "NoSchedule");
    if host_network {
        add("node.kubernetes.io/network-unavailable", "NoSchedule");
    }
    ts
}

/// The controller's record of a set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DsRec {
    pub uid: String,
    pub created: Option<Time>,
    pub pods: Vec<OwnedPod>,
    /// Template hash → revision number.
    pub revisions: BTreeMap<String, i64>,
    /// Template hash → the template (the ControllerRevisions' data).
    #[serde(default)]
    pub templates: BTreeMap<String, PodTemplateSpec>,
    #[serde(default)]
    pub generation: super::generation::Generation,
}

fn new_pod(ds: &DaemonSet, uid: &str, hash: &str, node: &NodeConf) -> OwnedPod {
    let name = ds.metadata.name.clone().unwrap_or_default();
    let t = ds.spec.clone().unwrap_or_default().template;
    let tm = t.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    labels.insert("pod-template-generation".into(), "1".into());
    let mut spec = t.spec.unwrap_or_default();
    spec.tolerations = Some(with_default_tolerations(
        spec.tolerations.take().unwrap_or_default(),
        spec.host_network == Some(true),
    ));
    // The controller pins its pod to the node by name.
    let pin = NodeSelectorTerm {
        match_fields: Some(vec![NodeSelectorRequirement {
            key: "metadata.name".into(),
            operator: "In".into(),
            values: Some(vec![node.name.clone()]),
        }]),
        match_expressions: None,
    };
    let aff = spec.affinity.get_or_insert_with(Affinity::default);
    let na = aff.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![pin],
    });
    spec.node_name = Some(node.name.clone());
    let pod_uid = random_uid();
    OwnedPod {
        uid: pod_uid.clone(),
        pod: Pod {
            metadata: ObjectMeta {
                name: Some(format!("{name}-{}", random_suffix())),
                generate_name: Some(format!("{name}-")),
                namespace: ds.metadata.namespace.clone(),
                labels: Some(labels),
                annotations: tm.annotations,
                uid: Some(pod_uid),
                creation_timestamp: Some(Time(Utc::now())),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "DaemonSet".into(),
                    name,
                    uid: uid.into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..Default::default()
            },
            spec: Some(spec),
            status: None,
        },
    }
}

fn scaled(v: Option<&IntOrString>, default: i32) -> Result<i32, String> {
    Ok(match v {
        None => default,
        Some(IntOrString::Int(i)) => *i,
        // One node: a percent rounds up for surge and down for unavailable, of 1.
        Some(IntOrString::String(s)) => {
            let p: i32 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("Invalid value: \"{s}\": a valid percent string must be a numeric string followed by an ending '%'"))?;
            i32::from(p > 0)
        }
    })
}

/// One step of a set on this node. Returns (changed, status, events).
pub fn sync(
    rec: &mut DsRec,
    ds: &DaemonSet,
    node: &NodeConf,
    obs: &HashMap<String, Observed>,
    now: DateTime<Utc>,
) -> Result<(bool, DaemonSetStatus, Vec<Ev>), String> {
    let mut changed = false;
    let mut evs = Vec::new();
    let spec = ds.spec.clone().unwrap_or_default();
    if rec.uid.is_empty() {
        rec.uid = random_uid();
        rec.created = Some(Time(now));
        changed = true;
    }
    changed |= rec.generation.observe(&ds.spec);
    let mut meta = ds.metadata.clone();
    meta.uid = Some(rec.uid.clone());
    let ev = |t, r, m: String| Ev::of(&meta, WHO, t, r, m);
    let hash = template_hash(&spec.template, None);
    let max_rev = rec.revisions.values().copied().max().unwrap_or(0);
    if rec.revisions.get(&hash) != Some(&max_rev) || max_rev == 0 {
        rec.revisions.insert(hash.clone(), max_rev + 1);
        changed = true;
    }
    if !rec.templates.contains_key(&hash) {
        rec.templates.insert(hash.clone(), spec.template.clone());
        changed = true;
    }
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let on_delete = strategy.type_.as_deref() == Some("OnDelete");
    let ru = strategy.rolling_update.clone().unwrap_or_default();
    let surge = scaled(ru.max_surge.as_ref(), 0)
        .map_err(|e| format!("spec.updateStrategy.rollingUpdate.maxSurge: {e}"))?;
    let unavailable = scaled(ru.max_unavailable.as_ref(), 1)
        .map_err(|e| format!("spec.updateStrategy.rollingUpdate.maxUnavailable: {e}"))?;
    if !on_delete && surge == 0 && unavailable == 0 {
        return Err("spec.updateStrategy.rollingUpdate.maxUnavailable: Invalid value: 0: may not be 0 when `maxSurge` is 0".into());
    }
    let hash_of = |p: &OwnedPod| {
        p.pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(HASH_LABEL))
            .cloned()
            .unwrap_or_default()
    };
    let ready = |p: &OwnedPod| {
        obs.get(&p.uid)
            .is_some_and(|o| o.phase == "Running" && o.ready())
    };
    let delete = |rec: &mut DsRec, uid: &str, evs: &mut Vec<Ev>| {
        if let Some(i) = rec.pods.iter().position(|p| p.uid == uid) {
            let p = rec.pods.remove(i);
            evs.push(ev(
                "Normal",
                "SuccessfulDelete",
                format!("Deleted pod: {}", p.name()),
            ));
        }
    };
    // Failed pods are replaced.
    let failed: Vec<String> = rec
        .pods
        .iter()
        .filter(|p| {
            obs.get(&p.uid)
                .is_some_and(|o| o.phase == "Failed" || o.phase == "Succeeded")
        })
        .map(|p| p.uid.clone())
        .collect();
    for u in failed {
        delete(rec, &u, &mut evs);
        changed = true;
    }
    let misfit = misfit(ds, node);
    if misfit.is_some() {
        let all: Vec<String> = rec.pods.iter().map(|p| p.uid.clone()).collect();
        for u in all {
            delete(rec, &u, &mut evs);
            changed = true;
        }
    } else if rec.pods.is_empty() {
        let p = new_pod(ds, &rec.uid, &hash, node);
        evs.push(ev(
            "Normal",
            "SuccessfulCreate",
            format!("Created pod: {}", p.name()),
        ));
        rec.pods.push(p);
        changed = true;
    } else if !on_delete {
        let new: Vec<&OwnedPod> = rec.pods.iter().filter(|p| hash_of(p) == hash).collect();
        let old: Vec<String> = rec
            .pods
            .iter()
            .filter(|p| hash_of(p) != hash)
            .map(|p| p.uid.clone())
            .collect();
        if !old.is_empty() {
            if surge > 0 {
                // Surge: the new pod first; the old one goes once the new is ready.
                match new.first() {
                    None => {
                        let p = new_pod(ds, &rec.uid, &hash, node);
                        evs.push(ev(
                            "Normal",
                            "SuccessfulCreate",
                            format!("Created pod: {}", p.name()),
                        ));
                        rec.pods.push(p);
                        changed = true;
                    }
                    Some(n) if ready(n) => {
                        for u in old {
                            delete(rec, &u, &mut evs);
                        }
                        changed = true;
                    }
                    Some(_) => {}
                }
            } else {
                for u in old {
                    delete(rec, &u, &mut evs);
                }
                changed = true;
            }
        }
    }
    let cur = rec.pods.len() as i32;
    let desired = i32::from(misfit.is_none());
    let n_ready = rec.pods.iter().filter(|p| ready(p)).count() as i32;
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let available = rec
        .pods
        .iter()
        .filter(|p| obs.get(&p.uid).is_some_and(|o| o.available(min_ready, now)))
        .count() as i32;
    let updated = rec.pods.iter().filter(|p| hash_of(p) == hash).count() as i32;
    let status = DaemonSetStatus {
        current_number_scheduled: cur.min(1),
        desired_number_scheduled: desired,
        number_misscheduled: if desired == 0 { cur } else { 0 },
        number_ready: n_ready.min(1),
        updated_number_scheduled: Some(updated.min(1)),
        number_available: Some(available.min(1)),
        number_unavailable: Some((desired - available.min(1)).max(0)),
        observed_generation: Some(rec.generation.number),
        collision_count: None,
        conditions: None,
    };
    Ok((changed, status, evs))
}

/// The ControllerRevisions of a set, as the API shows them (those whose template is known:
/// a record from before they were kept has only the numbers).
pub fn revisions(rec: &DsRec, ds: &DaemonSet) -> Vec<serde_json::Value> {
    let name = ds.metadata.name.clone().unwrap_or_default();
    rec.revisions
        .iter()
        .filter_map(|(hash, number)| {
            let t = rec.templates.get(hash)?;
            Some(serde_json::json!({
                "apiVersion": "apps/v1",
                "kind": "ControllerRevision",
                "metadata": {
                    "name": format!("{name}-{hash}"),
                    "namespace": ds.metadata.namespace,
                    "creationTimestamp": rec.created,
                    "labels": super::statefulset::revision_labels(t, hash),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": name, "uid": rec.uid, "controller": true, "blockOwnerDeletion": true}],
                },
                "data": super::statefulset::revision_data(t),
                "revision": number,
            }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(extra: serde_json::Value, image: &str) -> DaemonSet {
        let mut v = serde_json::json!({
            "metadata": {"name": "agent", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "c", "image": image}]}
                }
            }
        });
        if let (Some(s), Some(e)) = (
            v["spec"]["template"]["spec"].as_object_mut(),
            extra.as_object(),
        ) {
            for (k, x) in e {
                s.insert(k.clone(), x.clone());
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn node(labels: &str, taints: &str) -> NodeConf {
        NodeConf::new(
            "n1",
            &parse_labels(labels).unwrap(),
            parse_taints(taints).unwrap(),
            "/x".into(),
        )
    }

    #[test]
    fn fit_by_selector_affinity_and_taints() {
        let sel = ds(serde_json::json!({"nodeSelector": {"disk": "ssd"}}), "v1");
        assert!(misfit(&sel, &node("disk=ssd", "")).is_none());
        assert!(misfit(&sel, &node("disk=hdd", "")).is_some());
        let aff = ds(
            serde_json::json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]},
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["other"]}]}
            ]}}}}),
            "v1",
        );
        assert!(misfit(&aff, &node("zone=b", "")).is_none());
        assert!(misfit(&aff, &node("zone=c", "")).is_some());
        let plain = ds(serde_json::json!({}), "v1");
        let e = misfit(&plain, &node("", "dedicated=infra:NoSchedule")).unwrap();
        assert_eq!(e, "node(s) had untolerated taint {dedicated: infra}");
        assert!(misfit(&plain, &node("", "x=y:PreferNoSchedule")).is_none());
        // The controller's own tolerations: a not-ready node keeps its daemons.
        assert!(misfit(&plain, &node("", "node.kubernetes.io/not-ready:NoExecute")).is_none());
        let tol = ds(
            serde_json::json!({"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]}),
            "v1",
        );
        assert!(misfit(&tol, &node("", "dedicated=infra:NoSchedule")).is_none());
        assert!(parse_taints("a=b:Bad").is_err());
        assert!(parse_labels("nokey").is_err());
    }

    #[test]
    fn one_pod_and_updates() {
        let n = node("", "");
        let mut rec = DsRec::default();
        let mut obs = HashMap::new();
        let step = |rec: &mut DsRec, d: &DaemonSet, obs: &mut HashMap<String, Observed>| {
            let (_, st, evs) = sync(rec, d, &n, obs, Utc::now()).unwrap();
            for p in &rec.pods {
                obs.entry(p.uid.clone()).or_insert(Observed {
                    phase: "Running".into(),
                    ready_since: Some(Utc::now() - chrono::Duration::seconds(5)),
                    ..Default::default()
                });
            }
            (st, evs)
        };
        let v1 = ds(serde_json::json!({}), "v1");
        step(&mut rec, &v1, &mut obs);
        let (st, _) = step(&mut rec, &v1, &mut obs);
        assert_eq!((st.desired_number_scheduled, st.number_ready), (1, 1));
        let tols = rec.pods[0]
            .pod
            .spec
            .as_ref()
            .unwrap()
            .tolerations
            .clone()
            .unwrap();
        assert!(tols
            .iter()
            .any(|t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")));
        // Surge: two pods for a moment, then the new one alone.
        let mut v2 = ds(serde_json::json!({}), "v2");
        v2.spec.as_mut().unwrap().update_strategy = serde_json::from_value(serde_json::json!(
            {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}))
        .unwrap();
        step(&mut rec, &v2, &mut obs);
        assert_eq!(rec.pods.len(), 2);
        step(&mut rec, &v2, &mut obs);
        assert_eq!(rec.pods.len(), 1);
        let first = rec.pods[0].uid.clone();
        // OnDelete: a new template changes nothing.
        let mut v3 = ds(serde_json::json!({}), "v3");
        v3.spec.as_mut().unwrap().update_strategy =
            serde_json::from_value(serde_json::json!({"type": "OnDelete"})).unwrap();
        step(&mut rec, &v3, &mut obs);
        assert_eq!(rec.pods[0].uid, first);
        // A node that stops matching loses the pod.
        let sel = ds(serde_json::json!({"nodeSelector": {"disk": "ssd"}}), "v3");
        let (st, _) = step(&mut rec, &sel, &mut obs);
        assert!(rec.pods.is_empty() && st.desired_number_scheduled == 0);
    }
}
