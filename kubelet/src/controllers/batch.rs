//! Jobs and CronJobs in the controllers' pass: their manifests, their records in the
//! controller state, the pods they publish, and their events (the `job-controller` and
//! `cronjob-controller` as the source, as on a cluster).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde_json::Value;

use super::job::{self, Note, PodObs};
use super::{cronjob, default_ns, parse, sync, Ctl, Objects};
use crate::manifest::Desired;
use crate::state::Shared;

/// Reads a Job or CronJob document into `out` (Err: the API server's validation error).
pub fn scan_doc(
    kind: &str,
    doc: &Value,
    path: &std::path::Path,
    out: &mut Objects,
) -> Result<(), String> {
    if kind == "Job" {
        let mut j: Job = parse(doc)?;
        default_ns(&mut j.metadata)?;
        job::validate(&j)?;
        out.jobs.push((j, path.to_path_buf()));
    } else {
        let mut c: CronJob = parse(doc)?;
        default_ns(&mut c.metadata)?;
        let spec = c.spec.as_ref().ok_or("spec: Required value")?;
        cronjob::schedule(spec)?;
        if let Some(p) = spec.concurrency_policy.as_deref() {
            if !["Allow", "Forbid", "Replace"].contains(&p) {
                return Err(format!(
                    "spec.concurrencyPolicy: Unsupported value: {p:?}: supported values: \"Allow\", \"Forbid\", \"Replace\""
                ));
            }
        }
        let j = Job {
            metadata: Default::default(),
            spec: spec.job_template.spec.clone(),
            status: None,
        };
        job::validate(&j).map_err(|e| format!("spec.jobTemplate.{e}"))?;
        out.cronjobs.push((c, path.to_path_buf()));
    }
    Ok(())
}

/// The Jobs and CronJobs of one file, validated as the agent will (`apply`'s check):
/// (`job.batch/NAME`, the document), or the error naming file, document and field.
pub fn check_file(path: &std::path::Path) -> Result<Vec<(String, Value)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let docs =
        crate::manifest::documents(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        if doc.get("apiVersion").and_then(Value::as_str) != Some("batch/v1") {
            continue;
        }
        let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind != "Job" && kind != "CronJob" {
            continue;
        }
        let mut o = Objects::default();
        scan_doc(kind, doc, path, &mut o)
            .map_err(|e| format!("{}: document {i}: {e}", path.display()))?;
        let name = doc["metadata"]["name"].as_str().unwrap_or("");
        out.push((format!("{}.batch/{name}", kind.to_lowercase()), doc.clone()));
    }
    Ok(out)
}

fn meta_key(m: &ObjectMeta) -> String {
    sync::key(
        m.namespace.as_deref().unwrap_or("default"),
        m.name.as_deref().unwrap_or(""),
    )
}

/// What the agent saw of the Jobs' pods, by uid.
pub fn observe(shared: &Shared) -> HashMap<String, PodObs> {
    let g = shared.lock();
    g.pods
        .values()
        .filter(|p| {
            p.metadata
                .owner_references
                .iter()
                .flatten()
                .any(|o| o.kind == "Job")
        })
        .filter_map(|p| {
            let uid = p.metadata.uid.clone()?;
            let st = p.status.as_ref()?;
            let cs = st
                .container_statuses
                .iter()
                .flatten()
                .chain(st.init_container_statuses.iter().flatten());
            let mut o = PodObs {
                phase: st.phase.clone().unwrap_or_default(),
                ..Default::default()
            };
            for c in cs {
                o.restarts += c.restart_count;
                if let Some(t) = c.state.as_ref().and_then(|s| s.terminated.as_ref()) {
                    o.exits.push((c.name.clone(), t.exit_code));
                }
            }
            o.ready = st
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            Some((uid, o))
        })
        .collect()
}

/// Records the controllers' decisions in the agent's events (a repeat folds into a count).
pub fn record(shared: &Shared, notes: Vec<Note>) {
    if notes.is_empty() {
        return;
    }
    let host = shared.config.node_name.clone();
    let mut g = shared.lock();
    for n in notes {
        let now = Time(Utc::now());
        tracing::info!(object = %format!("{}/{}/{}", n.kind, n.ns, n.name), reason = n.reason, "{}", n.message);
        let same = g.events.iter_mut().rev().take(20).find(|e| {
            e.involved_object.uid.as_deref() == Some(n.uid.as_str())
                && e.reason.as_deref() == Some(n.reason)
                && e.message.as_deref() == Some(n.message.as_str())
        });
        if let Some(e) = same {
            e.count = Some(e.count.unwrap_or(1) + 1);
            e.last_timestamp = Some(now);
            continue;
        }
        let seq = g.events.len();
        let component = if n.kind == "Job" {
            "job-controller"
        } else {
            "cronjob-controller"
        };
        g.events.push_back(Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{}.{:x}{seq:x}",
                    n.name,
                    Utc::now().timestamp_nanos_opt().unwrap_or(0)
                )),
                namespace: Some(n.ns.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some(n.kind.into()),
                api_version: Some("batch/v1".into()),
                name: Some(n.name),
                namespace: Some(n.ns),
                uid: Some(n.uid),
                ..Default::default()
            },
            reason: Some(n.reason.into()),
            message: Some(n.message),
            type_: Some(if n.warning { "Warning" } else { "Normal" }.into()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some(component.into()),
                host: Some(host.clone()),
            }),
            ..Default::default()
        });
        while g.events.len() > crate::state::MAX_EVENTS {
            g.events.pop_front();
        }
    }
}

impl Ctl {
    /// One pass of the CronJob and Job controllers; returns whether the state changed.
    pub(super) fn sync_batch(
        &mut self,
        obs: &HashMap<String, PodObs>,
        now: DateTime<Utc>,
        notes: &mut Vec<Note>,
    ) -> bool {
        let mut changed = false;
        let broken: HashSet<&PathBuf> = self.objects.errors.keys().collect();
        let state = &mut self.state;
        // CronJobs gone from the manifests take their Jobs along (a file that fails to
        // parse keeps what it had).
        let cron_keys: HashSet<String> = self
            .objects
            .cronjobs
            .iter()
            .map(|(c, _)| meta_key(&c.metadata))
            .collect();
        let cron_files: HashMap<String, PathBuf> = state
            .jobs
            .values()
            .filter_map(|r| r.owner.clone().map(|o| (o, r.file.clone())))
            .collect();
        let before = (state.cronjobs.len(), state.jobs.len());
        state.cronjobs.retain(|k, _| {
            cron_keys.contains(k) || cron_files.get(k).is_some_and(|f| broken.contains(f))
        });
        let live: HashSet<String> = state.cronjobs.keys().cloned().collect();
        let job_keys: HashSet<String> = self
            .objects
            .jobs
            .iter()
            .map(|(j, _)| meta_key(&j.metadata))
            .collect();
        state.jobs.retain(|k, r| match &r.owner {
            Some(o) => live.contains(o),
            None => job_keys.contains(k) || broken.contains(&r.file),
        });
        changed |= before != (state.cronjobs.len(), state.jobs.len());
        // Manifest Jobs: adopted once; later edits may change only the mutable fields.
        for (j, file) in &self.objects.jobs {
            let k = meta_key(&j.metadata);
            match state.jobs.get_mut(&k) {
                Some(r) if r.owner.is_some() => {
                    tracing::error!(
                        "invalid manifest: {}: jobs.batch \"{}\" already exists",
                        file.display(),
                        j.metadata.name.as_deref().unwrap_or("")
                    );
                }
                Some(r) => match job::immutable_change(&r.job, j) {
                    Some(e) => {
                        let e = format!("{}: {e}", file.display());
                        if r.refused.as_ref() != Some(&e) {
                            tracing::error!("invalid manifest: {e}");
                            r.refused = Some(e);
                            changed = true;
                        }
                    }
                    None => {
                        changed |= r.refused.take().is_some();
                        changed |= job::update_mutable(r, j);
                        r.file = file.clone();
                    }
                },
                None => {
                    state.jobs.insert(k, job::adopt(j, file.clone(), None, now));
                    changed = true;
                }
            }
        }
        // CronJobs make Jobs.
        let mut cron_view = Vec::new();
        for (c, file) in &self.objects.cronjobs {
            let k = meta_key(&c.metadata);
            let rec = state.cronjobs.entry(k).or_insert_with(|| {
                changed = true;
                cronjob::CronRec::new(now)
            });
            let sched = match cronjob::schedule(c.spec.as_ref().unwrap_or(&Default::default())) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cronjob: {e}");
                    continue;
                }
            };
            changed |= cronjob::sync(c, &sched, rec, &mut state.jobs, file, now, notes);
            cron_view.push((c.clone(), rec.clone()));
        }
        // Jobs make pods.
        let mut taken: HashSet<String> = state
            .replicasets
            .values()
            .flat_map(|r| r.pods.iter().map(|p| p.name().to_string()))
            .collect();
        taken.extend(
            state
                .jobs
                .values()
                .flat_map(|r| r.pods.iter().map(|p| p.name().to_string())),
        );
        let mut expired = Vec::new();
        for (k, r) in state.jobs.iter_mut().filter(|(_, r)| !r.expired) {
            changed |= job::sync(r, obs, now, &|n| taken.contains(n), notes);
            taken.extend(r.pods.iter().map(|p| p.name().to_string()));
            if job::ttl_expired(r, now) {
                expired.push(k.clone());
            }
        }
        for k in expired {
            // The TTL controller deletes the Job; one of a manifest stays deleted while its
            // file is there.
            if state.jobs.get(&k).is_some_and(|r| r.owner.is_some()) {
                state.jobs.remove(&k);
            } else if let Some(r) = state.jobs.get_mut(&k) {
                r.expired = true;
                r.pods.clear();
            }
            changed = true;
        }
        self.view.jobs = state
            .jobs
            .values()
            .filter(|r| !r.expired)
            .map(|r| job::published(r, obs))
            .collect();
        self.view.cronjobs = cron_view
            .iter()
            .map(|(c, r)| cronjob::published(c, r, &state.jobs))
            .collect();
        changed
    }

    /// The pods of the Jobs, for the desired set.
    pub(super) fn batch_pods(&self) -> BTreeMap<String, Desired> {
        let mut out = BTreeMap::new();
        for r in self.state.jobs.values().filter(|r| !r.expired) {
            for p in &r.pods {
                let d = Desired {
                    pod: p.pod.clone().into(),
                    file: r.file.clone(),
                    uid: p.uid.clone(),
                };
                out.insert(d.key(), d);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: once}\nspec:\n  ttlSecondsAfterFinished: 5\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: c, image: busybox}]\n";
    const CRON: &str = "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: tick}\nspec:\n  schedule: '*/5 * * * *'\n  timeZone: UTC\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          containers: [{name: c, image: busybox}]\n";

    fn at(s: i64) -> DateTime<Utc> {
        // 2026-03-01T10:00:00Z
        DateTime::from_timestamp(1_772_359_200 + s, 0).unwrap()
    }

    #[test]
    fn manifests_to_pods_ttl_and_removal() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m");
        std::fs::create_dir(&m).unwrap();
        std::fs::write(m.join("once.yaml"), JOB).unwrap();
        std::fs::write(m.join("tick.yaml"), CRON).unwrap();
        std::fs::write(m.join("bad.yaml"), CRON.replace("*/5 * * * *", "*/5 * * *")).unwrap();
        let objects = super::super::scan(&m);
        assert_eq!((objects.jobs.len(), objects.cronjobs.len()), (1, 1));
        let e = &objects.errors[&m.join("bad.yaml")];
        assert!(
            e.contains("bad.yaml: document 0: spec.schedule: Invalid value"),
            "{e}"
        );
        let h = Ctl::open(dir.path(), "10.96.0.0/12".parse().unwrap()).unwrap();
        let mut c = super::super::lock(&h);
        c.set_objects(objects);
        let mut notes = Vec::new();
        assert!(c.sync_batch(&HashMap::new(), at(1), &mut notes));
        let pods = c.batch_pods();
        assert_eq!(pods.len(), 1);
        assert!(pods.keys().next().unwrap().starts_with("default/once-"));
        // The CronJob's run at 10:05 makes a Job and its pod.
        c.sync_batch(&HashMap::new(), at(301), &mut notes);
        assert_eq!(c.view.jobs.len(), 2);
        assert_eq!(c.batch_pods().len(), 2);
        assert_eq!(
            c.view.cronjobs[0]
                .status
                .as_ref()
                .unwrap()
                .active
                .as_ref()
                .map(Vec::len),
            Some(1)
        );
        // The manifest Job succeeds; 5 s later its TTL removes it (and its pod), for good
        // while its manifest stays.
        let uid = c.state.jobs["default/once"].pods[0].uid.clone();
        let obs: HashMap<String, PodObs> = [(
            uid,
            PodObs {
                phase: "Succeeded".into(),
                ..Default::default()
            },
        )]
        .into();
        c.sync_batch(&obs, at(302), &mut notes);
        assert!(notes
            .iter()
            .any(|n| n.reason == "Completed" && n.name == "once"));
        c.sync_batch(&obs, at(306), &mut notes);
        c.sync_batch(&obs, at(310), &mut notes);
        assert_eq!(c.view.jobs.len(), 1);
        assert_eq!(c.batch_pods().len(), 1);
        assert!(c.state.jobs["default/once"].expired);
        // The CronJob's manifest goes: its Job and pod go with it.
        let mut o = c.objects.clone();
        o.cronjobs.clear();
        c.set_objects(o);
        c.sync_batch(&obs, at(311), &mut notes);
        assert!(c.batch_pods().is_empty());
        assert!(c.view.cronjobs.is_empty());
        assert_eq!(c.state.jobs.len(), 1);
    }
}
