//! The StatefulSet controller (apps/v1): pods `<set>-0` … `<set>-N-1` with stable names,
//! hostnames and claims (`<template>-<set>-<ordinal>`), made in order (`OrderedReady`: the
//! next only once the one before is Running and Ready; scale-down from the highest ordinal,
//! one at a time) or all at once (`Parallel`); updates by `RollingUpdate` (highest ordinal
//! first, down to `partition`, at most `maxUnavailable` at once) or `OnDelete`; revisions as
//! ControllerRevisions (`controller-revision-hash`), and
//! `persistentVolumeClaimRetentionPolicy`.
//!
//! A pod the controller replaces (deleted, failed, outdated) is recreated under the same
//! name only once the old one is gone from the node, so two pods of one identity never run
//! at once.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetCondition, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

use super::record::Ev;
use super::replicaset::{random_uid, template_hash, Observed, OwnedPod};
use crate::storage::ClaimRec;

pub const REVISION_LABEL: &str = "controller-revision-hash";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
const WHO: (&str, &str, &str) = ("apps/v1", "StatefulSet", "statefulset-controller");

/// A revision of the set's template (a ControllerRevision `<set>-<hash>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Revision {
    pub hash: String,
    pub number: i64,
    pub template: PodTemplateSpec,
    pub created: Time,
}

/// The controller's record of a set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StsRec {
    pub uid: String,
    pub created: Option<Time>,
    /// Ordinal → its pod.
    pub pods: BTreeMap<i32, OwnedPod>,
    /// Pods removed that may still be on the node: name → uid.
    pub leaving: BTreeMap<String, String>,
    pub revisions: Vec<Revision>,
    /// The hash of the revision the set was whole at.
    pub current: String,
    pub service_name: String,
    /// The last spec taken (a refused update keeps it running).
    #[serde(default)]
    pub accepted: Option<StatefulSet>,
    /// `whenDeleted: Delete`, remembered for when the set is gone.
    #[serde(default)]
    pub delete_claims: bool,
    #[serde(default)]
    pub generation: super::generation::Generation,
}

impl StsRec {
    fn revision(&self, hash: &str) -> Option<&Revision> {
        self.revisions.iter().find(|r| r.hash == hash)
    }
}

fn pod_revision(p: &OwnedPod) -> &str {
    p.pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_LABEL))
        .map(String::as_str)
        .unwrap_or("")
}

fn healthy(o: Option<&Observed>) -> bool {
    o.is_some_and(|o| o.phase == "Running" && o.ready())
}

/// The claim of template `t` for `ordinal`, labelled with the set's selector as the
/// controller does.
pub fn claim_for(
    sts: &StatefulSet,
    t: &PersistentVolumeClaim,
    ordinal: i32,
) -> PersistentVolumeClaim {
    let name = sts.metadata.name.clone().unwrap_or_default();
    let mut c = t.clone();
    let tname = t.metadata.name.clone().unwrap_or_default();
    c.metadata = ObjectMeta {
        name: Some(format!("{tname}-{name}-{ordinal}")),
        namespace: sts.metadata.namespace.clone(),
        labels: sts
            .spec
            .as_ref()
            .and_then(|s| s.selector.match_labels.clone()),
        annotations: t.metadata.annotations.clone(),
        ..Default::default()
    };
    c.status = None;
    c
}

fn templates(sts: &StatefulSet) -> Vec<PersistentVolumeClaim> {
    sts.spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.clone())
        .unwrap_or_default()
}

/// Pod `ordinal` of the set at revision `rev`.
fn new_pod(sts: &StatefulSet, uid: &str, rev: &Revision, ordinal: i32) -> OwnedPod {
    let set = sts.metadata.name.clone().unwrap_or_default();
    let name = format!("{set}-{ordinal}");
    let t = rev.template.clone();
    let tm = t.metadata.unwrap_or_default();
    let mut labels = tm.labels.unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), format!("{set}-{}", rev.hash));
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    let mut spec = t.spec.unwrap_or_default();
    spec.hostname = Some(name.clone());
    let svc = sts
        .spec
        .as_ref()
        .and_then(|s| s.service_name.clone())
        .unwrap_or_default();
    if !svc.is_empty() {
        spec.subdomain = Some(svc);
    }
    // Each claim template becomes the volume of the same name (replacing one the template
    // may declare), bound to this ordinal's claim.
    let mut vols: Vec<Volume> = spec.volumes.take().unwrap_or_default();
    for ct in templates(sts) {
        let vname = ct.metadata.name.clone().unwrap_or_default();
        vols.retain(|v| v.name != vname);
        vols.push(Volume {
            name: vname.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: format!("{vname}-{set}-{ordinal}"),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    if !vols.is_empty() {
        spec.volumes = Some(vols);
    }
    let pod_uid = random_uid();
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: sts.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: tm.annotations,
            uid: Some(pod_uid.clone()),
            creation_timestamp: Some(Time(Utc::now())),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "StatefulSet".into(),
                name: set,
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    };
    OwnedPod { uid: pod_uid, pod }
}

/// `maxUnavailable` (an int or a percent of replicas, at least 1).
fn max_unavailable(v: Option<&IntOrString>, replicas: i32) -> Result<i32, String> {
    let n = match v {
        None => 1,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let p: i32 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| format!("Invalid value: \"{s}\": a valid percent string must be a numeric string followed by an ending '%'"))?;
            (p * replicas) / 100
        }
    };
    Ok(n.max(1))
}

/// The retention policy: (whenDeleted, whenScaled) are `Delete`.
fn retention(sts: &StatefulSet) -> (bool, bool) {
    let p = sts
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_claim_retention_policy.clone())
        .unwrap_or_default();
    (
        p.when_deleted.as_deref() == Some("Delete"),
        p.when_scaled.as_deref() == Some("Delete"),
    )
}

fn claim_key(ns: &str, c: &PersistentVolumeClaim) -> String {
    format!("{ns}/{}", c.metadata.name.as_deref().unwrap_or(""))
}

/// One step of a set. Returns (state changed, its status, events).
pub fn sync(
    rec: &mut StsRec,
    sts: &StatefulSet,
    obs: &HashMap<String, Observed>,
    claims: &mut BTreeMap<String, ClaimRec>,
    key: &str,
    now: DateTime<Utc>,
) -> Result<(bool, StatefulSetStatus, Vec<Ev>), String> {
    let mut changed = false;
    let mut evs = Vec::new();
    let spec = sts.spec.clone().unwrap_or_default();
    let ns = sts
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let set = sts.metadata.name.clone().unwrap_or_default();
    let mut meta = sts.metadata.clone();
    if rec.uid.is_empty() {
        rec.uid = random_uid();
        rec.created = Some(Time(now));
        rec.service_name = spec.service_name.clone().unwrap_or_default();
        changed = true;
    }
    changed |= rec.generation.observe(&sts.spec);
    meta.uid = Some(rec.uid.clone());
    let ev = |t, r, m: String| Ev::of(&meta, WHO, t, r, m);
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let on_delete = strategy.type_.as_deref() == Some("OnDelete");
    let ru = strategy.rolling_update.clone().unwrap_or_default();
    let partition = ru.partition.unwrap_or(0).max(0);
    let max_unavail = max_unavailable(ru.max_unavailable.as_ref(), replicas)
        .map_err(|e| format!("spec.updateStrategy.rollingUpdate.maxUnavailable: {e}"))?;

    // The update revision: this template's, made if new (the number after the newest).
    let hash = template_hash(&spec.template, None);
    if rec.revision(&hash).is_none() {
        let number = rec.revisions.iter().map(|r| r.number).max().unwrap_or(0) + 1;
        rec.revisions.push(Revision {
            hash: hash.clone(),
            number,
            template: spec.template.clone(),
            created: Time(now),
        });
        changed = true;
    } else if rec.revisions.iter().map(|r| r.number).max() != rec.revision(&hash).map(|r| r.number)
    {
        // An old template again (an undo): it becomes the newest revision.
        let number = rec.revisions.iter().map(|r| r.number).max().unwrap_or(0) + 1;
        if let Some(r) = rec.revisions.iter_mut().find(|r| r.hash == hash) {
            r.number = number;
        }
        changed = true;
    }
    if rec.current.is_empty() || rec.revision(&rec.current.clone()).is_none() {
        rec.current = hash.clone();
        changed = true;
    }
    let update = rec.revision(&hash).cloned().ok_or("no revision")?;
    let current = rec
        .revision(&rec.current.clone())
        .cloned()
        .unwrap_or(update.clone());
    let (delete_on_delete, delete_on_scale) = retention(sts);

    // Leaving pods that are gone from the node are forgotten.
    let before = rec.leaving.len();
    rec.leaving.retain(|_, uid| obs.contains_key(uid));
    changed |= before != rec.leaving.len();

    // Finished pods are replaced (a set's pods always restart).
    let finished: Vec<i32> = rec
        .pods
        .iter()
        .filter(|(_, p)| {
            obs.get(&p.uid)
                .is_some_and(|o| o.phase == "Failed" || o.phase == "Succeeded")
        })
        .map(|(i, _)| *i)
        .collect();
    for i in finished {
        if let Some(p) = rec.pods.remove(&i) {
            rec.leaving.insert(p.name().to_string(), p.uid.clone());
            evs.push(ev(
                "Normal",
                "SuccessfulDelete",
                format!("delete Pod {} in StatefulSet {set} successful", p.name()),
            ));
            changed = true;
        }
    }

    // Claims of the wanted ordinals (made before their pods, and kept).
    for i in 0..replicas {
        for t in templates(sts) {
            let c = claim_for(sts, &t, i);
            let k = claim_key(&ns, &c);
            match claims.get_mut(&k) {
                Some(r) if r.deleting => {}
                Some(r) => {
                    if r.owner.is_none() {
                        continue;
                    }
                }
                None => {
                    let cname = c.metadata.name.clone().unwrap_or_default();
                    claims.insert(k, ClaimRec::new(c, Some(key.to_string()), now));
                    evs.push(ev(
                        "Normal",
                        "SuccessfulCreate",
                        format!("create Claim {cname} Pod {set}-{i} in StatefulSet {set} success"),
                    ));
                    changed = true;
                }
            }
        }
    }

    // Creation, in ordinal order; OrderedReady waits for each pod to be Running and Ready.
    let mut blocked = false;
    for i in 0..replicas {
        match rec.pods.get(&i) {
            Some(p) => {
                if !parallel && !healthy(obs.get(&p.uid)) {
                    blocked = true;
                    break;
                }
            }
            None => {
                let name = format!("{set}-{i}");
                if rec.leaving.contains_key(&name) {
                    blocked = true;
                    if parallel {
                        continue;
                    }
                    break;
                }
                let rev = if i < partition && !on_delete {
                    &current
                } else {
                    &update
                };
                let p = new_pod(sts, &rec.uid, rev, i);
                evs.push(ev(
                    "Normal",
                    "SuccessfulCreate",
                    format!("create Pod {name} in StatefulSet {set} successful"),
                ));
                rec.pods.insert(i, p);
                changed = true;
                if !parallel {
                    blocked = true;
                    break;
                }
            }
        }
    }

    // Scale-down: highest ordinal first; OrderedReady one at a time, only when the rest is
    // healthy.
    let condemned: Vec<i32> = rec
        .pods
        .keys()
        .copied()
        .filter(|i| *i >= replicas)
        .rev()
        .collect();
    let leaving_now = !rec.leaving.is_empty();
    for i in condemned {
        if !parallel && (blocked || leaving_now) {
            break;
        }
        if let Some(p) = rec.pods.remove(&i) {
            rec.leaving.insert(p.name().to_string(), p.uid.clone());
            evs.push(ev(
                "Normal",
                "SuccessfulDelete",
                format!("delete Pod {} in StatefulSet {set} successful", p.name()),
            ));
            if delete_on_scale {
                for t in templates(sts) {
                    let k = claim_key(&ns, &claim_for(sts, &t, i));
                    if let Some(c) = claims.get_mut(&k) {
                        c.deleting = true;
                    }
                }
            }
            changed = true;
        }
        if !parallel {
            blocked = true;
            break;
        }
    }

    // Rolling update: from the highest ordinal down to the partition, at most
    // maxUnavailable pods unavailable at once.
    if !on_delete && !blocked {
        let unavailable = (0..replicas)
            .filter(|i| rec.pods.get(i).is_none_or(|p| !healthy(obs.get(&p.uid))))
            .count() as i32;
        let mut budget = max_unavail - unavailable;
        let outdated: Vec<i32> = rec
            .pods
            .iter()
            .filter(|(i, p)| {
                **i >= partition && **i < replicas && pod_revision(p) != format!("{set}-{hash}")
            })
            .map(|(i, _)| *i)
            .rev()
            .collect();
        for i in outdated {
            if budget <= 0 {
                break;
            }
            let healthy_now = rec.pods.get(&i).is_some_and(|p| healthy(obs.get(&p.uid)));
            if let Some(p) = rec.pods.remove(&i) {
                rec.leaving.insert(p.name().to_string(), p.uid.clone());
                evs.push(ev(
                    "Normal",
                    "SuccessfulDelete",
                    format!("delete Pod {} in StatefulSet {set} successful", p.name()),
                ));
                changed = true;
            }
            if healthy_now {
                budget -= 1;
            }
        }
    }

    // Status.
    let upd_label = format!("{set}-{hash}");
    let cur_label = format!("{set}-{}", rec.current);
    let pods: Vec<&OwnedPod> = rec.pods.values().collect();
    let count = |f: &dyn Fn(&OwnedPod) -> bool| pods.iter().filter(|p| f(p)).count() as i32;
    let ready = count(&|p| healthy(obs.get(&p.uid)));
    let updated = count(&|p| pod_revision(p) == upd_label);
    let mut current_n = count(&|p| pod_revision(p) == cur_label);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let available = count(&|p| obs.get(&p.uid).is_some_and(|o| o.available(min_ready, now)));
    if updated == replicas
        && ready == replicas
        && pods.len() as i32 == replicas
        && rec.current != hash
    {
        rec.current = hash.clone();
        current_n = updated;
        changed = true;
    }
    // revisionHistoryLimit: the oldest revisions no pod uses go.
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let used: Vec<String> = rec
        .pods
        .values()
        .map(|p| pod_revision(p).to_string())
        .collect();
    let mut spare: Vec<(i64, String)> = rec
        .revisions
        .iter()
        .filter(|r| {
            r.hash != hash && r.hash != rec.current && !used.contains(&format!("{set}-{}", r.hash))
        })
        .map(|r| (r.number, r.hash.clone()))
        .collect();
    spare.sort();
    if spare.len() > limit {
        let drop: Vec<String> = spare[..spare.len() - limit]
            .iter()
            .map(|(_, h)| h.clone())
            .collect();
        rec.revisions.retain(|r| !drop.contains(&r.hash));
        changed = true;
    }
    if rec.delete_claims != delete_on_delete {
        rec.delete_claims = delete_on_delete;
        changed = true;
    }
    let status = StatefulSetStatus {
        replicas: pods.len() as i32,
        ready_replicas: Some(ready),
        current_replicas: Some(current_n),
        updated_replicas: Some(updated),
        available_replicas: Some(available),
        current_revision: Some(format!("{set}-{}", rec.current)),
        update_revision: Some(upd_label),
        observed_generation: Some(rec.generation.number),
        collision_count: Some(0),
        conditions: None::<Vec<StatefulSetCondition>>,
    };
    Ok((changed, status, evs))
}

/// A set that is gone: its pods go; its claims go with it under `whenDeleted: Delete`,
/// else they stay (and a set of the same name takes them again).
pub fn forget(sts_key: &str, delete_claims: bool, claims: &mut BTreeMap<String, ClaimRec>) {
    if delete_claims {
        for c in claims.values_mut() {
            if c.owner.as_deref() == Some(sts_key) {
                c.deleting = true;
            }
        }
    }
}

/// The API server's validation of a set (`field: problem`).
pub fn validate(sts: &StatefulSet, old_service: Option<&str>) -> Result<(), String> {
    let Some(spec) = sts.spec.as_ref() else {
        return Err("spec: Required value".into());
    };
    super::check_selector(Some((&spec.selector, spec.template.metadata.as_ref())))?;
    if let Some(p) = spec.pod_management_policy.as_deref() {
        if p != "OrderedReady" && p != "Parallel" {
            return Err(format!("spec.podManagementPolicy: Unsupported value: \"{p}\": supported values: \"OrderedReady\", \"Parallel\""));
        }
    }
    let rp = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.clone())
        .unwrap_or_else(|| "Always".into());
    if rp != "Always" {
        return Err(format!("spec.template.spec.restartPolicy: Unsupported value: \"{rp}\": supported values: \"Always\""));
    }
    for (i, t) in spec.volume_claim_templates.iter().flatten().enumerate() {
        if t.metadata.name.as_deref().unwrap_or("").is_empty() {
            return Err(format!(
                "spec.volumeClaimTemplates[{i}].metadata.name: Required value"
            ));
        }
        crate::storage::validate(t, &format!("spec.volumeClaimTemplates[{i}]."))?;
    }
    let svc = spec.service_name.clone().unwrap_or_default();
    if let Some(old) = old_service {
        if old != svc {
            return Err("spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden".into());
        }
    }
    Ok(())
}

/// A ControllerRevision's labels: the template's, and the revision's hash (as the
/// controllers label them, so that `kubectl rollout history` finds them by the selector).
pub fn revision_labels(t: &PodTemplateSpec, hash: &str) -> serde_json::Value {
    let mut l = t
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    l.insert(REVISION_LABEL.into(), hash.into());
    serde_json::json!(l)
}

/// A ControllerRevision's data: the strategic merge patch that puts the template back,
/// which `kubectl rollout undo` sends as it is.
pub fn revision_data(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = serde_json::to_value(t).unwrap_or_default();
    t["$patch"] = "replace".into();
    serde_json::json!({"spec": {"template": t}})
}

/// The ControllerRevisions of a set, as the API shows them.
pub fn revisions(rec: &StsRec, sts: &StatefulSet) -> Vec<serde_json::Value> {
    let set = sts.metadata.name.clone().unwrap_or_default();
    rec.revisions
        .iter()
        .map(|r| {
            serde_json::json!({
                "apiVersion": "apps/v1",
                "kind": "ControllerRevision",
                "metadata": {
                    "name": format!("{set}-{}", r.hash),
                    "namespace": sts.metadata.namespace,
                    "creationTimestamp": r.created,
                    "labels": revision_labels(&r.template, &format!("{set}-{}", r.hash)),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": set, "uid": rec.uid, "controller": true, "blockOwnerDeletion": true}],
                },
                "data": revision_data(&r.template),
                "revision": r.number,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts(replicas: i32, image: &str, extra: serde_json::Value) -> StatefulSet {
        let mut v = serde_json::json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "c", "image": image}]}
                },
                "volumeClaimTemplates": [{
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Mi"}}}
                }]
            }
        });
        if let (Some(s), Some(e)) = (v["spec"].as_object_mut(), extra.as_object()) {
            for (k, x) in e {
                s.insert(k.clone(), x.clone());
            }
        }
        serde_json::from_value(v).unwrap()
    }

    fn ready() -> Observed {
        Observed {
            phase: "Running".into(),
            ready_since: Some(Utc::now() - chrono::Duration::seconds(60)),
            ..Default::default()
        }
    }

    struct World {
        rec: StsRec,
        claims: BTreeMap<String, ClaimRec>,
        obs: HashMap<String, Observed>,
    }

    impl World {
        fn new() -> Self {
            World {
                rec: StsRec::default(),
                claims: BTreeMap::new(),
                obs: HashMap::new(),
            }
        }

        /// One pass; every pod made becomes ready at once; removed pods vanish.
        fn step(&mut self, s: &StatefulSet) -> (StatefulSetStatus, Vec<Ev>) {
            let (_, st, evs) = sync(
                &mut self.rec,
                s,
                &self.obs,
                &mut self.claims,
                "default/db",
                Utc::now(),
            )
            .unwrap();
            let live: Vec<String> = self.rec.pods.values().map(|p| p.uid.clone()).collect();
            self.obs.retain(|u, _| live.contains(u));
            for u in live {
                self.obs.entry(u).or_insert_with(ready);
            }
            (st, evs)
        }

        fn names(&self) -> Vec<String> {
            self.rec
                .pods
                .values()
                .map(|p| p.name().to_string())
                .collect()
        }
    }

    fn created(evs: &[Ev]) -> Vec<String> {
        evs.iter()
            .filter(|e| e.reason == "SuccessfulCreate" && e.message.starts_with("create Pod"))
            .map(|e| e.message.split(' ').nth(2).unwrap_or("").to_string())
            .collect()
    }

    fn deleted(evs: &[Ev]) -> Vec<String> {
        evs.iter()
            .filter(|e| e.reason == "SuccessfulDelete")
            .map(|e| e.message.split(' ').nth(2).unwrap_or("").to_string())
            .collect()
    }

    #[test]
    fn ordered_start_scale_and_claims() {
        let mut w = World::new();
        let s3 = sts(3, "v1", serde_json::json!({}));
        let mut order = Vec::new();
        for _ in 0..5 {
            let (_, evs) = w.step(&s3);
            order.extend(created(&evs));
        }
        assert_eq!(order, ["db-0", "db-1", "db-2"]);
        assert_eq!(w.claims.len(), 3);
        assert!(w.claims.contains_key("default/data-db-2"));
        let p0 = &w.rec.pods[&0].pod;
        let spec = p0.spec.as_ref().unwrap();
        assert_eq!(spec.hostname.as_deref(), Some("db-0"));
        assert_eq!(spec.subdomain.as_deref(), Some("db"));
        let v = &spec.volumes.as_ref().unwrap()[0];
        assert_eq!(
            v.persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-db-0"
        );
        // Down to 1: db-2 then db-1, one at a time; the claims stay.
        let s1 = sts(1, "v1", serde_json::json!({}));
        let mut gone = Vec::new();
        for _ in 0..6 {
            let (_, evs) = w.step(&s1);
            let d = deleted(&evs);
            assert!(d.len() <= 1, "{d:?}");
            gone.extend(d);
        }
        assert_eq!(gone, ["db-2", "db-1"]);
        assert_eq!(w.names(), ["db-0"]);
        assert_eq!(w.claims.len(), 3);
        assert!(w.claims.values().all(|c| !c.deleting));
        // whenScaled: Delete marks the claims of the removed ordinals.
        let s3d = sts(
            3,
            "v1",
            serde_json::json!({"persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}}),
        );
        for _ in 0..5 {
            w.step(&s3d);
        }
        let s1d = sts(
            1,
            "v1",
            serde_json::json!({"persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete"}}),
        );
        for _ in 0..6 {
            w.step(&s1d);
        }
        assert!(w.claims["default/data-db-2"].deleting && !w.claims["default/data-db-0"].deleting);
    }

    #[test]
    fn rolling_update_highest_first_with_partition() {
        let mut w = World::new();
        for _ in 0..5 {
            w.step(&sts(3, "v1", serde_json::json!({})));
        }
        let v2 = sts(
            3,
            "v2",
            serde_json::json!({"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 1}}}),
        );
        let mut gone = Vec::new();
        for _ in 0..10 {
            gone.extend(deleted(&w.step(&v2).1));
        }
        assert_eq!(gone, ["db-2", "db-1"]);
        let (st, _) = w.step(&v2);
        assert_eq!(st.updated_replicas, Some(2));
        let v2all = sts(3, "v2", serde_json::json!({}));
        for _ in 0..6 {
            gone.extend(deleted(&w.step(&v2all).1));
        }
        assert_eq!(gone, ["db-2", "db-1", "db-0"]);
        let (st, _) = w.step(&v2all);
        assert_eq!(st.current_revision, st.update_revision);
        assert_eq!(w.rec.revisions.len(), 2);
        // OnDelete: nothing moves until a pod is deleted.
        let v3 = sts(
            3,
            "v3",
            serde_json::json!({"updateStrategy": {"type": "OnDelete"}}),
        );
        for _ in 0..4 {
            assert!(deleted(&w.step(&v3).1).is_empty());
        }
    }

    #[test]
    fn parallel_and_validation() {
        let mut w = World::new();
        let p = sts(
            3,
            "v1",
            serde_json::json!({"podManagementPolicy": "Parallel"}),
        );
        let (_, evs) = w.step(&p);
        assert_eq!(created(&evs).len(), 3);
        let mut bad = sts(1, "v1", serde_json::json!({}));
        bad.spec
            .as_mut()
            .unwrap()
            .volume_claim_templates
            .as_mut()
            .unwrap()[0]
            .spec
            .as_mut()
            .unwrap()
            .resources = None;
        assert_eq!(
            validate(&bad, None).unwrap_err(),
            "spec.volumeClaimTemplates[0].spec.resources[storage]: Required value"
        );
        let e = validate(&sts(1, "v1", serde_json::json!({})), Some("other")).unwrap_err();
        assert!(
            e.starts_with("spec: Forbidden: updates to statefulset spec"),
            "{e}"
        );
    }
}
