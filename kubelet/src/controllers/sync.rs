//! One pass of the workload controllers over the controller state: each Deployment moves its
//! ReplicaSets one rollout step, each ReplicaSet makes or removes pods, and the statuses
//! users see are computed.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec, ReplicaSetStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference, Time};
use serde::{Deserialize, Serialize};

use super::deployment::{self, Set, DESIRED_REPLICAS, MAX_REPLICAS, REVISION};
use super::replicaset::{self, random_uid, Counts, Observed, OwnedPod, TEMPLATE_HASH};

/// A ReplicaSet the agent keeps: from a manifest, or made by a Deployment (`owner`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RsRec {
    pub rs: ReplicaSet,
    pub pods: Vec<OwnedPod>,
    /// The owning Deployment's `namespace/name`.
    pub owner: Option<String>,
}

impl RsRec {
    pub fn uid(&self) -> &str {
        self.rs.metadata.uid.as_deref().unwrap_or("")
    }

    pub fn replicas(&self) -> i32 {
        self.rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
    }

    fn set_replicas(&mut self, n: i32) -> bool {
        let spec = self.rs.spec.get_or_insert_with(Default::default);
        let changed = spec.replicas != Some(n);
        spec.replicas = Some(n);
        changed
    }

    pub fn revision(&self) -> i64 {
        self.rs
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(REVISION))
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    }

    fn annotate(&mut self, k: &str, v: String) {
        self.rs
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(k.into(), v);
    }

    fn min_ready(&self) -> i32 {
        self.rs
            .spec
            .as_ref()
            .and_then(|s| s.min_ready_seconds)
            .unwrap_or(0)
    }

    pub fn counts(&self, obs: &HashMap<String, Observed>, now: DateTime<Utc>) -> Counts {
        replicaset::counts(&self.pods, obs, self.min_ready(), now)
    }

    fn set(&self, obs: &HashMap<String, Observed>, now: DateTime<Utc>) -> Set {
        let c = self.counts(obs, now);
        Set {
            replicas: self.replicas(),
            pods: c.replicas,
            available: c.available,
        }
    }

    /// The ReplicaSet with its status, as the API shows it.
    pub fn published(&self, obs: &HashMap<String, Observed>, now: DateTime<Utc>) -> ReplicaSet {
        let c = self.counts(obs, now);
        let mut rs = self.rs.clone();
        rs.status = Some(ReplicaSetStatus {
            replicas: c.replicas,
            fully_labeled_replicas: Some(c.replicas),
            ready_replicas: Some(c.ready),
            available_replicas: Some(c.available),
            observed_generation: Some(1),
            ..Default::default()
        });
        rs
    }
}

/// A Deployment's controller-side record.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeployRec {
    pub uid: String,
    pub created: Option<Time>,
    /// The last time the rollout moved (for progressDeadlineSeconds).
    pub progress_at: Option<Time>,
    /// What moved last: (new replicas, new available, old replicas).
    pub progress_mark: (i32, i32, i32),
    #[serde(default)]
    pub generation: super::generation::Generation,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub deployments: BTreeMap<String, DeployRec>,
    pub replicasets: BTreeMap<String, RsRec>,
    #[serde(default)]
    pub services: BTreeMap<String, crate::proxy::SvcRec>,
    #[serde(default)]
    pub statefulsets: BTreeMap<String, super::statefulset::StsRec>,
    #[serde(default)]
    pub daemonsets: BTreeMap<String, super::daemonset::DsRec>,
    #[serde(default)]
    pub claims: BTreeMap<String, crate::storage::ClaimRec>,
    pub jobs: BTreeMap<String, super::job::JobRec>,
    #[serde(default)]
    pub cronjobs: BTreeMap<String, super::cronjob::CronRec>,
}

pub fn key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

fn meta_key(m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    key(
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or(""),
    )
}

/// Keeps the manifests' own ReplicaSets: the spec follows the manifest, the pods stay.
pub fn sync_standalone(state: &mut State, sets: &[ReplicaSet]) -> bool {
    let mut changed = false;
    let wanted: Vec<String> = sets.iter().map(|r| meta_key(&r.metadata)).collect();
    let before = state.replicasets.len();
    state
        .replicasets
        .retain(|k, r| r.owner.is_some() || wanted.contains(k));
    changed |= before != state.replicasets.len();
    for rs in sets {
        let k = meta_key(&rs.metadata);
        let rec = state.replicasets.entry(k).or_insert_with(|| {
            changed = true;
            let mut rs = rs.clone();
            rs.metadata.uid = Some(random_uid());
            rs.metadata.creation_timestamp = Some(Time(Utc::now()));
            RsRec {
                rs,
                pods: Vec::new(),
                owner: None,
            }
        });
        if rec.rs.spec != rs.spec || rec.rs.metadata.labels != rs.metadata.labels {
            rec.rs.spec = rs.spec.clone();
            rec.rs.metadata.labels = rs.metadata.labels.clone();
            changed = true;
        }
    }
    changed
}

/// Makes and removes each ReplicaSet's pods.
pub fn sync_pods(state: &mut State, obs: &HashMap<String, Observed>) -> bool {
    let names: std::collections::HashSet<String> = state
        .replicasets
        .values()
        .flat_map(|r| r.pods.iter().map(|p| p.name().to_string()))
        .collect();
    let mut changed = false;
    for rec in state.replicasets.values_mut() {
        let uid = rec.uid().to_string();
        changed |= replicaset::sync(&rec.rs, &uid, &mut rec.pods, obs, &|n| names.contains(n));
    }
    changed
}

/// Removes the Deployments that are gone, with their ReplicaSets (and so their pods).
pub fn forget_deployments(state: &mut State, wanted: &[String]) -> bool {
    let before = (state.deployments.len(), state.replicasets.len());
    state.deployments.retain(|k, _| wanted.contains(k));
    state
        .replicasets
        .retain(|_, r| r.owner.as_ref().is_none_or(|o| wanted.contains(o)));
    before != (state.deployments.len(), state.replicasets.len())
}

fn selector_with(sel: &LabelSelector, hash: &str) -> LabelSelector {
    let mut s = sel.clone();
    s.match_labels
        .get_or_insert_with(Default::default)
        .insert(TEMPLATE_HASH.into(), hash.into());
    s
}

/// One step of a Deployment; returns (state changed, its status).
pub fn sync_deployment(
    state: &mut State,
    d: &Deployment,
    obs: &HashMap<String, Observed>,
    now: DateTime<Utc>,
) -> Result<(bool, DeploymentStatus), String> {
    let dkey = meta_key(&d.metadata);
    let ns = d
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = d.metadata.name.clone().unwrap_or_default();
    let spec = d.spec.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let mut changed = false;
    let rec = state.deployments.entry(dkey.clone()).or_insert_with(|| {
        changed = true;
        DeployRec {
            uid: random_uid(),
            created: Some(Time(now)),
            progress_at: Some(Time(now)),
            progress_mark: (-1, -1, -1),
            generation: Default::default(),
        }
    });
    changed |= rec.generation.observe(&d.spec);
    let generation = rec.generation.number;
    let duid = rec.uid.clone();
    let mut hash = replicaset::template_hash(&spec.template, None);
    let mut new_key = key(&ns, &format!("{name}-{hash}"));
    let mut owned: Vec<String> = state
        .replicasets
        .iter()
        .filter(|(_, r)| r.owner.as_deref() == Some(dkey.as_str()))
        .map(|(k, _)| k.clone())
        .collect();
    // The new ReplicaSet is the one whose template equals the Deployment's (FindNewReplicaSet):
    // the same template written back with its empty fields spelled out (an undo through
    // kubectl) hashes differently but is the same revision.
    if !state.replicasets.contains_key(&new_key) {
        let same = owned.iter().find(|k| {
            state.replicasets[*k]
                .rs
                .spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| replicaset::equal_ignore_hash(t, &spec.template))
        });
        if let Some(k) = same {
            new_key = k.clone();
            hash = k
                .rsplit_once('-')
                .map(|(_, h)| h.to_string())
                .unwrap_or(hash);
        }
    }
    let max_rev = owned
        .iter()
        .map(|k| state.replicasets[k].revision())
        .max()
        .unwrap_or(0);
    let paused = spec.paused.unwrap_or(false);
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    if !state.replicasets.contains_key(&new_key) && !paused {
        let mut template = spec.template.clone();
        let tm = template.metadata.get_or_insert_with(Default::default);
        tm.labels
            .get_or_insert_with(Default::default)
            .insert(TEMPLATE_HASH.into(), hash.clone());
        let mut labels = tm.labels.clone();
        if let Some(l) = labels.as_mut() {
            l.insert(TEMPLATE_HASH.into(), hash.clone());
        }
        let mut rs = ReplicaSet {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(format!("{name}-{hash}")),
                namespace: Some(ns.clone()),
                uid: Some(random_uid()),
                labels,
                creation_timestamp: Some(Time(now)),
                owner_references: Some(vec![OwnerReference {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    name: name.clone(),
                    uid: duid.clone(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector: selector_with(&spec.selector, &hash),
                template: Some(template),
            }),
            status: None,
        };
        rs.metadata.annotations = Some(BTreeMap::new());
        state.replicasets.insert(
            new_key.clone(),
            RsRec {
                rs,
                pods: Vec::new(),
                owner: Some(dkey.clone()),
            },
        );
        owned.push(new_key.clone());
        changed = true;
    }
    let has_new = state.replicasets.contains_key(&new_key);
    if let Some(new) = state.replicasets.get_mut(&new_key) {
        // A new template, or an old one again (an undo): it becomes the newest revision.
        if new.revision() == 0 || (new.revision() < max_rev) {
            new.annotate(REVISION, (max_rev + 1).to_string());
            changed = true;
        }
        if new.min_ready() != min_ready {
            if let Some(s) = new.rs.spec.as_mut() {
                s.min_ready_seconds = Some(min_ready);
            }
            changed = true;
        }
    }
    let mut olds: Vec<String> = owned.iter().filter(|k| **k != new_key).cloned().collect();
    olds.sort_by_key(|k| {
        state.replicasets[k]
            .rs
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
    });
    let old_sets: Vec<Set> = olds
        .iter()
        .map(|k| state.replicasets[k].set(obs, now))
        .collect();
    let new_set = state
        .replicasets
        .get(&new_key)
        .map(|r| r.set(obs, now))
        .unwrap_or_default();
    let strategy = spec.strategy.clone().unwrap_or_default();
    let recreate = strategy.type_.as_deref() == Some("Recreate");
    let ru = strategy.rolling_update.unwrap_or_default();
    let (surge, unavailable) = if recreate {
        (0, replicas)
    } else {
        deployment::fenceposts(ru.max_surge.as_ref(), ru.max_unavailable.as_ref(), replicas)
            .map_err(|e| format!("spec.strategy.rollingUpdate.{e}"))?
    };
    if has_new && !paused {
        let (new_n, old_n) = if recreate {
            let (n, o) = deployment::recreate(replicas, &old_sets);
            (n.unwrap_or(new_set.replicas), o)
        } else {
            deployment::rolling(replicas, surge, unavailable, new_set, &old_sets)
        };
        if let Some(new) = state.replicasets.get_mut(&new_key) {
            changed |= new.set_replicas(new_n);
            new.annotate(DESIRED_REPLICAS, replicas.to_string());
            new.annotate(MAX_REPLICAS, (replicas + surge).to_string());
        }
        for (k, n) in olds.iter().zip(old_n) {
            if let Some(r) = state.replicasets.get_mut(k) {
                changed |= r.set_replicas(n);
            }
        }
    }
    // revisionHistoryLimit: the oldest empty revisions go.
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let mut empty: Vec<(i64, String)> = olds
        .iter()
        .filter(|k| {
            let r = &state.replicasets[*k];
            r.replicas() == 0 && r.pods.is_empty()
        })
        .map(|k| (state.replicasets[k].revision(), k.clone()))
        .collect();
    empty.sort();
    if empty.len() > limit {
        for (_, k) in &empty[..empty.len() - limit] {
            state.replicasets.remove(k);
            changed = true;
        }
    }
    // Status.
    let mut total = Counts::default();
    for k in &owned {
        if let Some(r) = state.replicasets.get(k) {
            let c = r.counts(obs, now);
            total.replicas += c.replicas;
            total.ready += c.ready;
            total.available += c.available;
        }
    }
    let new_c = state
        .replicasets
        .get(&new_key)
        .map(|r| r.counts(obs, now))
        .unwrap_or_default();
    let old_replicas: i32 = olds
        .iter()
        .filter_map(|k| state.replicasets.get(k))
        .map(RsRec::replicas)
        .sum();
    let rec = state.deployments.entry(dkey).or_default();
    let mark = (new_c.replicas, new_c.available, old_replicas);
    if rec.progress_mark != mark {
        rec.progress_mark = mark;
        rec.progress_at = Some(Time(now));
    }
    let complete =
        new_c.replicas == replicas && new_c.available == replicas && total.replicas == replicas;
    let deadline = i64::from(spec.progress_deadline_seconds.unwrap_or(600));
    let stalled = !complete
        && !paused
        && rec
            .progress_at
            .as_ref()
            .is_some_and(|t| (now - t.0).num_seconds() > deadline);
    let progress_since = rec.progress_at.clone();
    let available_ok = total.available >= replicas - unavailable;
    let cond = |t: &str, ok: bool, reason: &str, message: String, since: Option<Time>| {
        DeploymentCondition {
            type_: t.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_transition_time: since.clone(),
            last_update_time: since,
        }
    };
    let rs_name = format!("{name}-{hash}");
    let progressing = if paused {
        cond(
            "Progressing",
            false,
            "DeploymentPaused",
            "Deployment is paused".into(),
            progress_since,
        )
    } else if complete {
        cond(
            "Progressing",
            true,
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            progress_since,
        )
    } else if stalled {
        cond(
            "Progressing",
            false,
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
            progress_since,
        )
    } else {
        cond(
            "Progressing",
            true,
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs_name}\" is progressing."),
            progress_since,
        )
    };
    let available = if available_ok {
        cond(
            "Available",
            true,
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.".into(),
            None,
        )
    } else {
        cond(
            "Available",
            false,
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.".into(),
            None,
        )
    };
    let status = DeploymentStatus {
        replicas: Some(total.replicas),
        updated_replicas: Some(new_c.replicas),
        ready_replicas: Some(total.ready),
        available_replicas: Some(total.available),
        unavailable_replicas: Some((replicas - total.available).max(0)),
        observed_generation: Some(generation),
        conditions: Some(vec![available, progressing]),
        ..Default::default()
    };
    Ok((changed, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(image: &str, replicas: i32, limit: i32) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "revisionHistoryLimit": limit,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": image}]}
                }
            }
        }))
        .unwrap()
    }

    /// Every pod Running and Ready for long.
    fn all_ready(state: &State) -> HashMap<String, Observed> {
        state
            .replicasets
            .values()
            .flat_map(|r| r.pods.iter())
            .map(|p| {
                (
                    p.uid.clone(),
                    Observed {
                        phase: "Running".into(),
                        ready_since: Some(Utc::now() - chrono::Duration::seconds(60)),
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    fn step(state: &mut State, d: &Deployment) -> DeploymentStatus {
        let obs = all_ready(state);
        let (_, st) = sync_deployment(state, d, &obs, Utc::now()).unwrap();
        sync_pods(state, &obs);
        st
    }

    #[test]
    fn rollout_keeps_revisions() {
        let mut state = State::default();
        let v1 = deployment("v1", 3, 1);
        for _ in 0..4 {
            step(&mut state, &v1);
        }
        assert_eq!(state.replicasets.len(), 1);
        let rs1 = state.replicasets.keys().next().unwrap().clone();
        assert_eq!(state.replicasets[&rs1].pods.len(), 3);
        assert_eq!(state.replicasets[&rs1].revision(), 1);
        let pod = &state.replicasets[&rs1].pods[0].pod;
        let hash = &rs1["default/web-".len()..];
        assert_eq!(
            pod.metadata.labels.as_ref().unwrap().get(TEMPLATE_HASH),
            Some(&hash.to_string())
        );
        let v2 = deployment("v2", 3, 1);
        let mut most = 0;
        for _ in 0..20 {
            step(&mut state, &v2);
            let pods: usize = state.replicasets.values().map(|r| r.pods.len()).sum();
            most = most.max(pods);
        }
        // Never more than replicas + maxSurge pods.
        assert_eq!(most, 4);
        let st = step(&mut state, &v2);
        assert_eq!(st.updated_replicas, Some(3));
        assert_eq!(st.replicas, Some(3));
        let rs2 = state
            .replicasets
            .keys()
            .find(|k| **k != rs1)
            .unwrap()
            .clone();
        assert_eq!(state.replicasets[&rs2].revision(), 2);
        assert_eq!(state.replicasets[&rs1].replicas(), 0);
        // Back to v1: the old ReplicaSet is reused and becomes revision 3.
        for _ in 0..20 {
            step(&mut state, &v1);
        }
        assert_eq!(state.replicasets[&rs1].revision(), 3);
        assert_eq!(state.replicasets[&rs1].pods.len(), 3);
        // v3 with a history limit of 1: only the newest old revision stays.
        let v3 = deployment("v3", 3, 1);
        for _ in 0..20 {
            step(&mut state, &v3);
        }
        assert_eq!(state.replicasets.len(), 2);
        assert!(state.replicasets.contains_key(&rs1));
        assert!(!state.replicasets.contains_key(&rs2));
        forget_deployments(&mut state, &[]);
        assert!(state.replicasets.is_empty() && state.deployments.is_empty());
    }

    #[test]
    fn an_old_template_with_empty_fields_is_its_old_revision() {
        let mut state = State::default();
        let v1 = deployment("v1", 1, 10);
        for _ in 0..4 {
            step(&mut state, &v1);
        }
        for _ in 0..10 {
            step(&mut state, &deployment("v2", 1, 10));
        }
        // v1 as kubectl's undo writes it back: `resources: {}` spelled out.
        let mut back = v1.clone();
        back.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .resources = Some(Default::default());
        for _ in 0..10 {
            step(&mut state, &back);
        }
        assert_eq!(state.replicasets.len(), 2);
        let revs: Vec<(i64, i32)> = state
            .replicasets
            .values()
            .map(|r| (r.revision(), r.replicas()))
            .collect();
        assert!(revs.contains(&(3, 1)) && revs.contains(&(2, 0)), "{revs:?}");
    }

    #[test]
    fn not_ready_new_pods_hold_the_rollout() {
        let mut state = State::default();
        let v1 = deployment("v1", 2, 10);
        for _ in 0..3 {
            step(&mut state, &v1);
        }
        let v2 = deployment("v2", 2, 10);
        let ready_v1 = all_ready(&state);
        for _ in 0..5 {
            sync_deployment(&mut state, &v2, &ready_v1, Utc::now()).unwrap();
            sync_pods(&mut state, &ready_v1);
        }
        let counts: Vec<(i64, usize)> = state
            .replicasets
            .values()
            .map(|r| (r.revision(), r.pods.len()))
            .collect();
        assert!(
            counts.contains(&(1, 2)) && counts.contains(&(2, 1)),
            "{counts:?}"
        );
        // Past the deadline, the Deployment says so.
        let mut d = v2.clone();
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(1);
        let later = Utc::now() + chrono::Duration::seconds(5);
        let (_, st) = sync_deployment(&mut state, &d, &ready_v1, later).unwrap();
        let p = st
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Progressing")
            .unwrap();
        assert_eq!(p.reason.as_deref(), Some("ProgressDeadlineExceeded"));
    }
}
