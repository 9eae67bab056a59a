//! One pass of the StatefulSet and DaemonSet controllers and the claims' provisioner over
//! the controller state, beside the Deployments' (`sync.rs`).

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{DaemonSet, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::record::Ev;
use super::replicaset::Observed;
use super::{daemonset, statefulset, sync, Ctl, Objects};
use crate::manifest::Desired;

fn key(m: &ObjectMeta) -> String {
    sync::key(
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or(""),
    )
}

/// A StatefulSet whose `serviceName` changed keeps running as it was; the file says why.
pub fn vet(c: &Ctl, o: &mut Objects) {
    for (s, path) in o.statefulsets.iter_mut() {
        let k = key(&s.metadata);
        let Some(rec) = c.state.statefulsets.get(&k) else {
            continue;
        };
        if let Err(e) = statefulset::validate(s, Some(&rec.service_name)) {
            let name = s.metadata.name.clone().unwrap_or_default();
            o.errors.insert(
                path.clone(),
                format!(
                    "{}: StatefulSet.apps \"{name}\" is invalid: {e}",
                    path.display()
                ),
            );
            if let Some(old) = &rec.accepted {
                *s = old.clone();
            }
        }
    }
}

/// The sets, then the claims (whose pods the sets just made or removed).
pub fn pass(
    c: &mut Ctl,
    obs: &HashMap<String, Observed>,
    used: &BTreeSet<String>,
    now: DateTime<Utc>,
) -> (bool, Vec<Ev>) {
    let mut changed = false;
    let mut evs = Vec::new();
    let st = &mut c.state;
    // StatefulSets that are gone: their pods go, their claims by the retention policy.
    let wanted: BTreeSet<String> = c
        .objects
        .statefulsets
        .iter()
        .map(|(s, _)| key(&s.metadata))
        .collect();
    let gone: Vec<String> = st
        .statefulsets
        .keys()
        .filter(|k| !wanted.contains(*k))
        .cloned()
        .collect();
    for k in gone {
        if let Some(rec) = st.statefulsets.remove(&k) {
            statefulset::forget(&k, rec.delete_claims, &mut st.claims);
            changed = true;
        }
    }
    let mut sets: Vec<StatefulSet> = Vec::new();
    let mut revisions = Vec::new();
    for (s, _) in &c.objects.statefulsets {
        let k = key(&s.metadata);
        let rec = st.statefulsets.entry(k.clone()).or_default();
        match statefulset::sync(rec, s, obs, &mut st.claims, &k, now) {
            Ok((ch, status, e)) => {
                changed |= ch;
                evs.extend(e);
                if rec.accepted.as_ref() != Some(s) {
                    rec.accepted = Some(s.clone());
                    changed = true;
                }
                revisions.extend(statefulset::revisions(rec, s));
                let mut s = s.clone();
                s.metadata.uid = Some(rec.uid.clone());
                s.metadata.creation_timestamp = rec.created.clone();
                s.metadata.generation = Some(rec.generation.number);
                // The API server's default, which kubectl's status viewer reads.
                if let Some(spec) = s.spec.as_mut() {
                    spec.update_strategy.get_or_insert_with(|| {
                        serde_json::from_value(
                            serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
                        )
                        .unwrap_or_default()
                    });
                }
                s.status = Some(status);
                sets.push(s);
            }
            Err(e) => tracing::warn!(statefulset = %k, "{e}"),
        }
    }
    let wanted: BTreeSet<String> = c
        .objects
        .daemonsets
        .iter()
        .map(|(d, _)| key(&d.metadata))
        .collect();
    let before = st.daemonsets.len();
    st.daemonsets.retain(|k, _| wanted.contains(k));
    changed |= before != st.daemonsets.len();
    let mut daemons: Vec<DaemonSet> = Vec::new();
    for (d, _) in &c.objects.daemonsets {
        let k = key(&d.metadata);
        let rec = st.daemonsets.entry(k.clone()).or_default();
        match daemonset::sync(rec, d, &c.node, obs, now) {
            Ok((ch, status, e)) => {
                changed |= ch;
                evs.extend(e);
                revisions.extend(daemonset::revisions(rec, d));
                let mut d = d.clone();
                d.metadata.uid = Some(rec.uid.clone());
                d.metadata.generation = Some(rec.generation.number);
                if let Some(spec) = d.spec.as_mut() {
                    spec.update_strategy.get_or_insert_with(|| {
                        serde_json::from_value(serde_json::json!({"type": "RollingUpdate",
                            "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}))
                        .unwrap_or_default()
                    });
                }
                d.metadata.creation_timestamp = rec.created.clone();
                d.status = Some(status);
                daemons.push(d);
            }
            Err(e) => tracing::warn!(daemonset = %k, "{e}"),
        }
    }
    // The claims: the pods just made count as users (they bind the claims they name).
    let mut used = used.clone();
    for r in st.statefulsets.values() {
        for p in r.pods.values() {
            used.extend(crate::storage::claims_of(&p.pod));
        }
    }
    let manifest: Vec<_> = c.objects.claims.iter().map(|(p, _)| p.clone()).collect();
    let classes: Vec<_> = c.objects.classes.iter().map(|(s, _)| s.clone()).collect();
    let (ch, cev) = crate::storage::sync(
        &mut st.claims,
        &manifest,
        &classes,
        &used,
        &c.node.storage_root,
        now,
    );
    changed |= ch;
    evs.extend(cev.into_iter().map(|e| {
        Ev::of(
            &e.claim.metadata,
            ("v1", "PersistentVolumeClaim", "persistentvolume-controller"),
            e.type_,
            e.reason,
            e.message,
        )
    }));
    c.view.statefulsets = sets;
    c.view.revisions = revisions;
    c.view.daemonsets = daemons;
    c.view.claims = st.claims.values().map(|r| r.published()).collect();
    (changed, evs)
}

/// The pods of the sets, as desired pods (the file is the set's manifest).
pub fn wanted_pods(c: &Ctl, out: &mut std::collections::BTreeMap<String, Desired>) {
    let file_of = |k: &str| {
        c.objects
            .statefulsets
            .iter()
            .find(|(s, _)| key(&s.metadata) == k)
            .map(|(_, p)| p.clone())
            .or_else(|| {
                c.objects
                    .daemonsets
                    .iter()
                    .find(|(d, _)| key(&d.metadata) == k)
                    .map(|(_, p)| p.clone())
            })
            .unwrap_or_default()
    };
    let sts = c
        .state
        .statefulsets
        .iter()
        .flat_map(|(k, r)| r.pods.values().map(move |p| (k, p)));
    let ds = c
        .state
        .daemonsets
        .iter()
        .flat_map(|(k, r)| r.pods.iter().map(move |p| (k, p)));
    for (k, p) in sts.chain(ds) {
        let d = Desired {
            pod: p.pod.clone().into(),
            file: file_of(k),
            uid: p.uid.clone(),
        };
        out.insert(d.key(), d);
    }
}

/// A pod deleted through the API: a set's pod is replaced by its controller (a
/// StatefulSet's under the same name once the old one is gone). Returns the pod.
pub fn delete_pod(c: &mut Ctl, ns: &str, name: &str) -> Option<k8s_openapi::api::core::v1::Pod> {
    let k = sync::key(ns, name);
    for r in c.state.statefulsets.values_mut() {
        let ord = r
            .pods
            .iter()
            .find(|(_, p)| crate::manifest::key(&p.pod) == k)
            .map(|(i, _)| *i);
        if let Some(p) = ord.and_then(|i| r.pods.remove(&i)) {
            r.leaving.insert(p.name().to_string(), p.uid.clone());
            return Some(p.pod);
        }
    }
    for r in c.state.daemonsets.values_mut() {
        if let Some(i) = r
            .pods
            .iter()
            .position(|p| crate::manifest::key(&p.pod) == k)
        {
            return Some(r.pods.remove(i).pod);
        }
    }
    for r in c.state.replicasets.values_mut() {
        if let Some(i) = r
            .pods
            .iter()
            .position(|p| crate::manifest::key(&p.pod) == k)
        {
            return Some(r.pods.remove(i).pod);
        }
    }
    None
}

/// A claim deleted through the API (a StatefulSet's; the manifests' own go with their file).
pub fn delete_claim(c: &mut Ctl, ns: &str, name: &str) -> bool {
    match c.state.claims.get_mut(&sync::key(ns, name)) {
        Some(r) if r.owner.is_some() => {
            r.deleting = true;
            true
        }
        _ => false,
    }
}
