//! The Job controller's rules (batch/v1): pods made from the template until `completions`
//! succeed, at most `parallelism` at once; failures counted against `backoffLimit` with the
//! controller's exponential back-off between them; `podFailurePolicy` on exit codes;
//! `activeDeadlineSeconds`, `suspend` and `ttlSecondsAfterFinished`; `Indexed` completion.
//! Pure: the caller passes the clock and what the agent saw of the pods.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobSpec, JobStatus, PodFailurePolicyRule};
use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, ObjectMeta, OwnerReference, Time,
};
use serde::{Deserialize, Serialize};

pub use super::job_validation::{immutable_change, validate};
use super::replicaset::{random_suffix, random_uid};

pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
pub const JOB_NAME: &str = "batch.kubernetes.io/job-name";
/// The controller's `DefaultJobPodFailureBackOff` and `MaxJobPodFailureBackOff`.
const BACKOFF_BASE_SECS: i64 = 10;
const BACKOFF_MAX_SECS: i64 = 360;

/// What became of a finished pod, for the Job's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Succeeded,
    Failed,
    /// Failed, but a podFailurePolicy `Ignore` rule matched: not counted, replaced.
    Ignored,
}

/// A pod the Job made; finished ones stay (for `logs`) until the Job goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobPod {
    pub uid: String,
    pub pod: Pod,
    pub index: Option<i32>,
    pub outcome: Option<Outcome>,
    pub finished: Option<DateTime<Utc>>,
}

impl JobPod {
    pub fn name(&self) -> &str {
        self.pod.metadata.name.as_deref().unwrap_or("")
    }
}

/// A Job the agent keeps: from a manifest, or made by a CronJob (`owner`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobRec {
    /// The Job as adopted: metadata (uid, creation time, the controller's labels) and spec.
    pub job: Job,
    /// Start and completion times and conditions (the counts are computed).
    pub status: JobStatus,
    pub pods: Vec<JobPod>,
    pub file: PathBuf,
    /// The owning CronJob's `namespace/name`.
    pub owner: Option<String>,
    /// Active pods removed when the Job failed (they count as failed, as with the controller).
    #[serde(default)]
    pub lost: i32,
    /// Its TTL ran out while its manifest is still there: gone from the API, pods removed.
    #[serde(default)]
    pub expired: bool,
    /// The owning CronJob saw it finish (SawCompletedJob said once).
    #[serde(default)]
    pub seen: bool,
    /// The last refused update of its manifest (said once).
    #[serde(default)]
    pub refused: Option<String>,
}

/// What the agent saw of a Job's pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodObs {
    pub phase: String,
    pub ready: bool,
    pub restarts: i32,
    /// (container, exit code) of the terminated containers.
    pub exits: Vec<(String, i32)>,
}

/// A controller decision, as an event on the Job or CronJob.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    pub kind: &'static str,
    pub ns: String,
    pub name: String,
    pub uid: String,
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

pub(super) fn spec_of(job: &Job) -> JobSpec {
    job.spec.clone().unwrap_or_default()
}

fn indexed(s: &JobSpec) -> bool {
    s.completion_mode.as_deref() == Some("Indexed")
}

/// A new record for `job`: a uid, and the labels and selector the controller adds.
pub fn adopt(job: &Job, file: PathBuf, owner: Option<String>, now: DateTime<Utc>) -> JobRec {
    let mut job = job.clone();
    let uid = random_uid();
    let name = job.metadata.name.clone().unwrap_or_default();
    job.metadata.uid = Some(uid.clone());
    job.metadata.creation_timestamp = Some(Time(now));
    job.metadata
        .namespace
        .get_or_insert_with(|| "default".into());
    let ours = [
        (CONTROLLER_UID, uid.clone()),
        (JOB_NAME, name.clone()),
        ("controller-uid", uid.clone()),
        ("job-name", name),
    ];
    let spec = job.spec.get_or_insert_with(Default::default);
    if spec.completions.is_none() && spec.parallelism.is_none() {
        spec.completions = Some(1);
    }
    spec.parallelism.get_or_insert(1);
    spec.backoff_limit.get_or_insert(6);
    spec.completion_mode
        .get_or_insert_with(|| "NonIndexed".into());
    spec.suspend.get_or_insert(false);
    let tl = spec
        .template
        .metadata
        .get_or_insert_with(Default::default)
        .labels
        .get_or_insert_with(Default::default);
    for (k, v) in &ours {
        tl.insert(k.to_string(), v.clone());
    }
    if spec.selector.is_none() {
        spec.selector = Some(LabelSelector {
            match_labels: Some([(CONTROLLER_UID.to_string(), uid.clone())].into()),
            ..Default::default()
        });
    }
    let labels = job.metadata.labels.get_or_insert_with(Default::default);
    for (k, v) in ours {
        labels.entry(k.to_string()).or_insert(v);
    }
    JobRec {
        job,
        status: JobStatus::default(),
        pods: Vec::new(),
        file,
        owner,
        lost: 0,
        expired: false,
        seen: false,
        refused: None,
    }
}

/// The template without the labels the controller adds (and empty maps as none).
pub(super) fn user_template(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    let mut m = t.metadata.take().unwrap_or_default();
    if let Some(l) = m.labels.as_mut() {
        for k in [CONTROLLER_UID, JOB_NAME, "controller-uid", "job-name"] {
            l.remove(k);
        }
    }
    if m.labels.as_ref().is_some_and(|l| l.is_empty()) {
        m.labels = None;
    }
    t.metadata = (m != ObjectMeta::default()).then_some(m);
    t
}

/// Takes the mutable fields of an updated manifest; returns whether any changed.
pub fn update_mutable(rec: &mut JobRec, job: &Job) -> bool {
    let new = spec_of(job);
    let s = rec.job.spec.get_or_insert_with(Default::default);
    let before = s.clone();
    s.parallelism = Some(new.parallelism.unwrap_or(1));
    s.suspend = Some(new.suspend.unwrap_or(false));
    s.active_deadline_seconds = new.active_deadline_seconds;
    s.ttl_seconds_after_finished = new.ttl_seconds_after_finished;
    s.backoff_limit = Some(new.backoff_limit.unwrap_or(6));
    *s != before
}

fn cond_true<'a>(st: &'a JobStatus, t: &str) -> Option<&'a JobCondition> {
    st.conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == t && c.status == "True")
}

/// `Complete` or `Failed`, with when.
pub fn finished(rec: &JobRec) -> Option<(&'static str, DateTime<Utc>)> {
    for t in ["Complete", "Failed"] {
        if let Some(c) = cond_true(&rec.status, t) {
            let at = c
                .last_transition_time
                .as_ref()
                .map(|t| t.0)
                .unwrap_or_else(Utc::now);
            return Some((
                if t == "Complete" {
                    "Complete"
                } else {
                    "Failed"
                },
                at,
            ));
        }
    }
    None
}

/// The TTL-after-finished controller's rule: the Job goes `ttl` seconds after it finished.
pub fn ttl_expired(rec: &JobRec, now: DateTime<Utc>) -> bool {
    let ttl = spec_of(&rec.job).ttl_seconds_after_finished;
    match (ttl, finished(rec)) {
        (Some(ttl), Some((_, at))) => now >= at + chrono::Duration::seconds(i64::from(ttl)),
        _ => false,
    }
}

fn set_cond(st: &mut JobStatus, t: &str, ok: bool, reason: &str, msg: &str, now: DateTime<Utc>) {
    let conds = st.conditions.get_or_insert_with(Vec::new);
    let status = if ok { "True" } else { "False" };
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == t) {
        if c.status != status {
            c.last_transition_time = Some(Time(now));
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(msg.into());
        c.last_probe_time = Some(Time(now));
        return;
    }
    conds.push(JobCondition {
        type_: t.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(msg.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

/// The first podFailurePolicy rule matching a failed pod's exit codes: (rule index, action,
/// container, exit code). Exit code 0 never matches, as with the controller.
fn policy_match<'a>(
    rules: &'a [PodFailurePolicyRule],
    exits: &[(String, i32)],
) -> Option<(usize, &'a str, String, i32)> {
    for (i, r) in rules.iter().enumerate() {
        let Some(req) = &r.on_exit_codes else {
            continue;
        };
        for (c, code) in exits {
            if *code == 0 || req.container_name.as_ref().is_some_and(|n| n != c) {
                continue;
            }
            let inside = req.values.contains(code);
            if (req.operator == "In") == inside {
                return Some((i, r.action.as_str(), c.clone(), *code));
            }
        }
    }
    None
}

/// The delay the controller waits after `failures` failures in a row: 10 s, doubled for
/// each further failure, at most 6 min.
pub fn backoff(failures: u32) -> chrono::Duration {
    if failures == 0 {
        return chrono::Duration::zero();
    }
    let secs = BACKOFF_BASE_SECS.saturating_mul(1i64 << (failures - 1).min(20));
    chrono::Duration::seconds(secs.min(BACKOFF_MAX_SECS))
}

/// `0-2,4`: the completed indexes as the status lists them.
pub fn ranges(idx: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = idx.iter().copied().peekable();
    while let Some(a) = it.next() {
        let mut b = a;
        while it.peek() == Some(&(b + 1)) {
            b += 1;
            it.next();
        }
        out.push(if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        });
    }
    out.join(",")
}

/// A pod of the Job from its template: `<job>-<5 chars>` (Indexed: `<job>-<index>-<5 chars>`,
/// hostname `<job>-<index>`, the index in an annotation, a label and `JOB_COMPLETION_INDEX`).
pub fn new_pod(job: &Job, index: Option<i32>, taken: &dyn Fn(&str) -> bool) -> JobPod {
    let name = job.metadata.name.clone().unwrap_or_default();
    let uid_job = job.metadata.uid.clone().unwrap_or_default();
    let t = spec_of(job).template;
    let prefix = match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    };
    let mut pname = format!("{prefix}{}", random_suffix());
    while taken(&pname) {
        pname = format!("{prefix}{}", random_suffix());
    }
    let m = t.metadata.unwrap_or_default();
    let mut labels = m.labels.unwrap_or_default();
    let mut annotations = m.annotations.unwrap_or_default();
    let mut spec = t.spec.unwrap_or_default();
    if let Some(i) = index {
        labels.insert(COMPLETION_INDEX.into(), i.to_string());
        annotations.insert(COMPLETION_INDEX.into(), i.to_string());
        spec.hostname.get_or_insert_with(|| format!("{name}-{i}"));
        let env = EnvVar {
            name: "JOB_COMPLETION_INDEX".into(),
            value: None,
            value_from: Some(EnvVarSource {
                field_ref: Some(ObjectFieldSelector {
                    api_version: Some("v1".into()),
                    field_path: format!("metadata.annotations['{COMPLETION_INDEX}']"),
                }),
                ..Default::default()
            }),
        };
        for c in spec
            .containers
            .iter_mut()
            .chain(spec.init_containers.iter_mut().flatten())
        {
            let list = c.env.get_or_insert_with(Vec::new);
            if !list.iter().any(|e| e.name == env.name) {
                list.push(env.clone());
            }
        }
    }
    let uid = random_uid();
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some(pname),
            generate_name: Some(prefix),
            namespace: job.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            uid: Some(uid.clone()),
            creation_timestamp: Some(Time(Utc::now())),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "Job".into(),
                name,
                uid: uid_job,
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    };
    JobPod {
        uid,
        pod,
        index,
        outcome: None,
        finished: None,
    }
}

fn note(rec: &JobRec, warning: bool, reason: &'static str, message: String) -> Note {
    Note {
        kind: "Job",
        ns: rec.job.metadata.namespace.clone().unwrap_or_default(),
        name: rec.job.metadata.name.clone().unwrap_or_default(),
        uid: rec.job.metadata.uid.clone().unwrap_or_default(),
        warning,
        reason,
        message,
    }
}

/// Removes the active pods (finished ones stay); returns how many went.
fn remove_active(rec: &mut JobRec, notes: &mut Vec<Note>) -> i32 {
    let gone: Vec<String> = rec
        .pods
        .iter()
        .filter(|p| p.outcome.is_none())
        .map(|p| p.name().to_string())
        .collect();
    rec.pods.retain(|p| p.outcome.is_some());
    for n in &gone {
        notes.push(note(
            rec,
            false,
            "SuccessfulDelete",
            format!("Deleted pod: {n}"),
        ));
    }
    gone.len() as i32
}

fn fail(
    rec: &mut JobRec,
    reason: &'static str,
    msg: String,
    now: DateTime<Utc>,
    notes: &mut Vec<Note>,
) {
    rec.lost += remove_active(rec, notes);
    set_cond(&mut rec.status, "Failed", true, reason, &msg, now);
    notes.push(note(rec, true, reason, msg));
}

/// One step of the Job controller. Returns whether the record changed.
pub fn sync(
    rec: &mut JobRec,
    obs: &HashMap<String, PodObs>,
    now: DateTime<Utc>,
    taken: &dyn Fn(&str) -> bool,
    notes: &mut Vec<Note>,
) -> bool {
    let before = (rec.status.clone(), rec.pods.len(), rec.lost);
    let outcomes_before: Vec<Option<Outcome>> = rec.pods.iter().map(|p| p.outcome).collect();
    if finished(rec).is_some() {
        remove_active(rec, notes);
        return before != (rec.status.clone(), rec.pods.len(), rec.lost);
    }
    let spec = spec_of(&rec.job);
    let rules = spec
        .pod_failure_policy
        .as_ref()
        .map(|p| p.rules.clone())
        .unwrap_or_default();
    // Newly finished pods.
    let mut fail_job = None;
    let ns = rec.job.metadata.namespace.clone().unwrap_or_default();
    for p in rec.pods.iter_mut().filter(|p| p.outcome.is_none()) {
        let Some(o) = obs.get(&p.uid) else {
            continue;
        };
        let outcome = match o.phase.as_str() {
            "Succeeded" => Outcome::Succeeded,
            "Failed" => match policy_match(&rules, &o.exits) {
                Some((i, "FailJob", c, code)) => {
                    fail_job.get_or_insert(format!(
                        "Container {c} for pod {ns}/{} failed with exit code {code} matching FailJob rule at index {i}",
                        p.name()
                    ));
                    Outcome::Failed
                }
                Some((_, "Ignore", _, _)) => Outcome::Ignored,
                _ => Outcome::Failed,
            },
            _ => continue,
        };
        p.outcome = Some(outcome);
        p.finished = Some(now);
    }
    if let Some(msg) = fail_job {
        fail(rec, "PodFailurePolicy", msg, now, notes);
        return true;
    }
    // Suspend and resume.
    if spec.suspend == Some(true) {
        if cond_true(&rec.status, "Suspended").is_none() {
            remove_active(rec, notes);
            set_cond(
                &mut rec.status,
                "Suspended",
                true,
                "JobSuspended",
                "Job suspended",
                now,
            );
            rec.status.start_time = None;
            notes.push(note(rec, false, "Suspended", "Job suspended".into()));
            return true;
        }
        return outcomes_before != rec.pods.iter().map(|p| p.outcome).collect::<Vec<_>>();
    }
    if cond_true(&rec.status, "Suspended").is_some() {
        set_cond(
            &mut rec.status,
            "Suspended",
            false,
            "JobResumed",
            "Job resumed",
            now,
        );
        notes.push(note(rec, false, "Resumed", "Job resumed".into()));
    }
    let start = rec.status.start_time.get_or_insert(Time(now)).0;
    if let Some(ads) = spec.active_deadline_seconds {
        if now >= start + chrono::Duration::seconds(ads) {
            fail(
                rec,
                "DeadlineExceeded",
                "Job was active longer than specified deadline".into(),
                now,
                notes,
            );
            return true;
        }
    }
    let count = |o: Outcome| rec.pods.iter().filter(|p| p.outcome == Some(o)).count() as i32;
    let failed = count(Outcome::Failed) + rec.lost;
    let limit = spec.backoff_limit.unwrap_or(6);
    let on_failure = spec
        .template
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        == Some("OnFailure");
    let restarts: i32 = rec
        .pods
        .iter()
        .filter(|p| p.outcome.is_none())
        .filter_map(|p| obs.get(&p.uid))
        .map(|o| o.restarts)
        .sum();
    let past_on_failure = on_failure
        && if limit == 0 {
            restarts > 0
        } else {
            restarts >= limit
        };
    if failed > limit || past_on_failure {
        fail(
            rec,
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit".into(),
            now,
            notes,
        );
        return true;
    }
    // Completion.
    let is_indexed = indexed(&spec);
    let done_idx: BTreeSet<i32> = rec
        .pods
        .iter()
        .filter(|p| p.outcome == Some(Outcome::Succeeded))
        .filter_map(|p| p.index)
        .collect();
    let succeeded = if is_indexed {
        done_idx.len() as i32
    } else {
        count(Outcome::Succeeded)
    };
    let active = rec.pods.iter().filter(|p| p.outcome.is_none()).count() as i32;
    let complete = match spec.completions {
        Some(c) => succeeded >= c,
        // A work queue: done when one pod succeeded and none is left running.
        None => succeeded > 0 && active == 0,
    };
    if complete {
        remove_active(rec, notes);
        rec.status.completion_time = Some(Time(now));
        set_cond(&mut rec.status, "Complete", true, "", "", now);
        if let Some(c) = rec.status.conditions.as_mut().and_then(|c| c.last_mut()) {
            c.reason = None;
            c.message = None;
        }
        notes.push(note(rec, false, "Completed", "Job completed".into()));
        return true;
    }
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let want = match spec.completions {
        None if succeeded > 0 => 0,
        None => parallelism,
        Some(c) => parallelism.min(c - succeeded),
    };
    let mut changed = before != (rec.status.clone(), rec.pods.len(), rec.lost)
        || outcomes_before != rec.pods.iter().map(|p| p.outcome).collect::<Vec<_>>();
    if active > want {
        // The newest go first.
        let mut extra = active - want;
        let mut i = rec.pods.len();
        while extra > 0 && i > 0 {
            i -= 1;
            if rec.pods[i].outcome.is_none() {
                let p = rec.pods.remove(i);
                notes.push(note(
                    rec,
                    false,
                    "SuccessfulDelete",
                    format!("Deleted pod: {}", p.name()),
                ));
                extra -= 1;
            }
        }
        return true;
    }
    if active < want {
        let last_success = rec
            .pods
            .iter()
            .filter(|p| p.outcome == Some(Outcome::Succeeded))
            .filter_map(|p| p.finished)
            .max();
        let fails: Vec<DateTime<Utc>> = rec
            .pods
            .iter()
            .filter(|p| p.outcome == Some(Outcome::Failed))
            .filter_map(|p| p.finished)
            .filter(|f| last_success.is_none_or(|s| *f > s))
            .collect();
        if let Some(last) = fails.iter().max() {
            if now < *last + backoff(fails.len() as u32) {
                return changed;
            }
        }
        let mut free: Vec<i32> = if is_indexed {
            let busy: BTreeSet<i32> = rec
                .pods
                .iter()
                .filter(|p| p.outcome.is_none())
                .filter_map(|p| p.index)
                .collect();
            (0..spec.completions.unwrap_or(0))
                .filter(|i| !done_idx.contains(i) && !busy.contains(i))
                .collect()
        } else {
            Vec::new()
        };
        free.reverse();
        for _ in active..want {
            let index = if is_indexed {
                match free.pop() {
                    Some(i) => Some(i),
                    None => break,
                }
            } else {
                None
            };
            let names: Vec<String> = rec.pods.iter().map(|p| p.name().to_string()).collect();
            let p = new_pod(&rec.job, index, &|n| {
                taken(n) || names.iter().any(|m| m == n)
            });
            notes.push(note(
                rec,
                false,
                "SuccessfulCreate",
                format!("Created pod: {}", p.name()),
            ));
            rec.pods.push(p);
            changed = true;
        }
    }
    changed
}

/// The Job with its status, as the API shows it.
pub fn published(rec: &JobRec, obs: &HashMap<String, PodObs>) -> Job {
    let mut job = rec.job.clone();
    let mut st = rec.status.clone();
    let count = |o: Outcome| rec.pods.iter().filter(|p| p.outcome == Some(o)).count() as i32;
    let active: Vec<&JobPod> = rec.pods.iter().filter(|p| p.outcome.is_none()).collect();
    let done_idx: BTreeSet<i32> = rec
        .pods
        .iter()
        .filter(|p| p.outcome == Some(Outcome::Succeeded))
        .filter_map(|p| p.index)
        .collect();
    let spec = spec_of(&rec.job);
    st.active = Some(active.len() as i32).filter(|n| *n > 0);
    st.ready = Some(
        active
            .iter()
            .filter(|p| obs.get(&p.uid).is_some_and(|o| o.ready))
            .count() as i32,
    );
    st.succeeded = Some(if indexed(&spec) {
        done_idx.len() as i32
    } else {
        count(Outcome::Succeeded)
    })
    .filter(|n| *n > 0);
    st.failed = Some(count(Outcome::Failed) + rec.lost).filter(|n| *n > 0);
    st.terminating = Some(0);
    if indexed(&spec) {
        st.completed_indexes = Some(ranges(&done_idx)).filter(|s| !s.is_empty());
    }
    job.status = Some(st);
    job
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{PodFailurePolicy, PodFailurePolicyOnExitCodesRequirement};
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    pub fn job(name: &str, completions: Option<i32>, parallelism: i32) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                completions,
                parallelism: Some(parallelism),
                backoff_limit: Some(2),
                template: PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        restart_policy: Some("Never".into()),
                        containers: vec![Container {
                            name: "c".into(),
                            image: Some("busybox".into()),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn phase(obs: &mut HashMap<String, PodObs>, p: &JobPod, ph: &str, code: i32) {
        obs.insert(
            p.uid.clone(),
            PodObs {
                phase: ph.into(),
                exits: vec![("c".into(), code)],
                ..Default::default()
            },
        );
    }

    fn active(rec: &JobRec) -> Vec<JobPod> {
        rec.pods
            .iter()
            .filter(|p| p.outcome.is_none())
            .cloned()
            .collect()
    }

    #[test]
    fn completions_and_parallelism() {
        let mut rec = adopt(&job("pi", Some(5), 2), PathBuf::new(), None, at(0));
        let mut obs = HashMap::new();
        let mut notes = Vec::new();
        let mut most = 0;
        for s in 0..20 {
            sync(&mut rec, &obs, at(s), &|_| false, &mut notes);
            let a = active(&rec);
            most = most.max(a.len());
            if let Some(p) = a.first() {
                phase(&mut obs, p, "Succeeded", 0);
            }
        }
        assert_eq!(most, 2);
        let j = published(&rec, &obs);
        let st = j.status.unwrap();
        assert_eq!(st.succeeded, Some(5));
        assert_eq!(st.active, None);
        assert!(st.completion_time.is_some() && st.start_time.is_some());
        assert_eq!(finished(&rec).map(|f| f.0), Some("Complete"));
        let p = &rec.pods[0].pod;
        let name = p.metadata.name.as_deref().unwrap();
        assert!(name.starts_with("pi-") && name.len() == 8, "{name}");
        let l = p.metadata.labels.as_ref().unwrap();
        assert_eq!(l["job-name"], "pi");
        assert_eq!(l[CONTROLLER_UID], rec.job.metadata.uid.clone().unwrap());
        assert_eq!(p.metadata.owner_references.as_ref().unwrap()[0].kind, "Job");
        assert!(notes.iter().any(|n| n.reason == "Completed"));
        assert_eq!(
            notes
                .iter()
                .filter(|n| n.reason == "SuccessfulCreate")
                .count(),
            5
        );
        // The TTL.
        rec.job.spec.as_mut().unwrap().ttl_seconds_after_finished = Some(30);
        let (_, when) = finished(&rec).unwrap();
        assert!(!ttl_expired(&rec, when + chrono::Duration::seconds(29)));
        assert!(ttl_expired(&rec, when + chrono::Duration::seconds(30)));
    }

    #[test]
    fn backoff_between_failures_until_the_limit() {
        let mut rec = adopt(&job("f", Some(1), 1), PathBuf::new(), None, at(0));
        let mut obs = HashMap::new();
        let mut notes = Vec::new();
        let mut created = Vec::new();
        for s in 0..200 {
            sync(&mut rec, &obs, at(s), &|_| false, &mut notes);
            for p in active(&rec) {
                if !created.iter().any(|(u, _)| *u == p.uid) {
                    created.push((p.uid.clone(), s));
                }
                phase(&mut obs, &p, "Failed", 1);
            }
        }
        let times: Vec<i64> = created.iter().map(|c| c.1).collect();
        // Fails at once; the next pods wait 10 s, then 20 s.
        assert_eq!(times, vec![0, 11, 32], "{times:?}");
        let (what, _) = finished(&rec).unwrap();
        assert_eq!(what, "Failed");
        let c = cond_true(&rec.status, "Failed").unwrap();
        assert_eq!(c.reason.as_deref(), Some("BackoffLimitExceeded"));
        assert_eq!(published(&rec, &obs).status.unwrap().failed, Some(3));
        assert!(notes
            .iter()
            .any(|n| n.reason == "BackoffLimitExceeded" && n.warning));
        assert_eq!(backoff(1).num_seconds(), 10);
        assert_eq!(backoff(3).num_seconds(), 40);
        assert_eq!(backoff(10).num_seconds(), 360);
    }

    #[test]
    fn indexed_pods() {
        let mut j = job("idx", Some(3), 3);
        j.spec.as_mut().unwrap().completion_mode = Some("Indexed".into());
        validate(&j).unwrap();
        let mut rec = adopt(&j, PathBuf::new(), None, at(0));
        let mut obs = HashMap::new();
        let mut notes = Vec::new();
        sync(&mut rec, &obs, at(0), &|_| false, &mut notes);
        let mut idx: Vec<i32> = rec.pods.iter().filter_map(|p| p.index).collect();
        idx.sort();
        assert_eq!(idx, vec![0, 1, 2]);
        let p1 = rec
            .pods
            .iter()
            .find(|p| p.index == Some(1))
            .unwrap()
            .clone();
        let s = p1.pod.spec.as_ref().unwrap();
        assert_eq!(s.hostname.as_deref(), Some("idx-1"));
        assert!(p1.name().starts_with("idx-1-"));
        assert_eq!(
            p1.pod.metadata.annotations.as_ref().unwrap()[COMPLETION_INDEX],
            "1"
        );
        let env = &s.containers[0].env.as_ref().unwrap()[0];
        assert_eq!(env.name, "JOB_COMPLETION_INDEX");
        // Index 1 fails: it comes back as index 1 after the back-off.
        for p in rec.pods.clone() {
            if p.index != Some(1) {
                phase(&mut obs, &p, "Succeeded", 0);
            }
        }
        sync(&mut rec, &obs, at(1), &|_| false, &mut notes);
        phase(&mut obs, &p1, "Failed", 3);
        sync(&mut rec, &obs, at(2), &|_| false, &mut notes);
        assert!(active(&rec).is_empty());
        let st = published(&rec, &obs).status.unwrap();
        assert_eq!(st.completed_indexes.as_deref(), Some("0,2"));
        sync(&mut rec, &obs, at(11), &|_| false, &mut notes);
        assert!(active(&rec).is_empty());
        sync(&mut rec, &obs, at(12), &|_| false, &mut notes);
        let a = active(&rec);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].index, Some(1));
        phase(&mut obs, &a[0], "Succeeded", 0);
        sync(&mut rec, &obs, at(13), &|_| false, &mut notes);
        assert_eq!(finished(&rec).map(|f| f.0), Some("Complete"));
        assert_eq!(
            published(&rec, &obs)
                .status
                .unwrap()
                .completed_indexes
                .as_deref(),
            Some("0-2")
        );
    }

    #[test]
    fn pod_failure_policy_deadline_and_suspend() {
        let mut j = job("p", Some(2), 1);
        j.spec.as_mut().unwrap().pod_failure_policy = Some(PodFailurePolicy {
            rules: vec![
                PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: None,
                        operator: "In".into(),
                        values: vec![7],
                    }),
                    on_pod_conditions: None,
                },
                PodFailurePolicyRule {
                    action: "FailJob".into(),
                    on_exit_codes: Some(PodFailurePolicyOnExitCodesRequirement {
                        container_name: Some("c".into()),
                        operator: "In".into(),
                        values: vec![42],
                    }),
                    on_pod_conditions: None,
                },
            ],
        });
        validate(&j).unwrap();
        let mut rec = adopt(&j, PathBuf::new(), None, at(0));
        let mut obs = HashMap::new();
        let mut notes = Vec::new();
        sync(&mut rec, &obs, at(0), &|_| false, &mut notes);
        let p = active(&rec)[0].clone();
        phase(&mut obs, &p, "Failed", 7);
        sync(&mut rec, &obs, at(1), &|_| false, &mut notes);
        // Ignored: not counted, replaced at once (no back-off).
        assert_eq!(active(&rec).len(), 1);
        assert_eq!(published(&rec, &obs).status.unwrap().failed, None);
        let p = active(&rec)[0].clone();
        phase(&mut obs, &p, "Failed", 42);
        sync(&mut rec, &obs, at(2), &|_| false, &mut notes);
        let c = cond_true(&rec.status, "Failed").unwrap();
        assert_eq!(c.reason.as_deref(), Some("PodFailurePolicy"));
        assert!(c
            .message
            .as_ref()
            .unwrap()
            .contains("exit code 42 matching FailJob rule at index 1"));

        // activeDeadlineSeconds.
        let mut j = job("d", Some(1), 1);
        j.spec.as_mut().unwrap().active_deadline_seconds = Some(5);
        let mut rec = adopt(&j, PathBuf::new(), None, at(0));
        let obs = HashMap::new();
        sync(&mut rec, &obs, at(0), &|_| false, &mut notes);
        sync(&mut rec, &obs, at(4), &|_| false, &mut notes);
        assert!(finished(&rec).is_none());
        sync(&mut rec, &obs, at(5), &|_| false, &mut notes);
        let c = cond_true(&rec.status, "Failed").unwrap();
        assert_eq!(c.reason.as_deref(), Some("DeadlineExceeded"));
        assert!(active(&rec).is_empty());
        assert_eq!(published(&rec, &obs).status.unwrap().failed, Some(1));

        // suspend: no pods, no start time; resumed: pods again.
        let mut j = job("s", Some(1), 1);
        j.spec.as_mut().unwrap().suspend = Some(true);
        let mut rec = adopt(&j, PathBuf::new(), None, at(0));
        sync(&mut rec, &obs, at(0), &|_| false, &mut notes);
        assert!(rec.pods.is_empty() && rec.status.start_time.is_none());
        j.spec.as_mut().unwrap().suspend = Some(false);
        assert!(update_mutable(&mut rec, &j));
        sync(&mut rec, &obs, at(1), &|_| false, &mut notes);
        assert_eq!(active(&rec).len(), 1);
        assert_eq!(rec.status.start_time.as_ref().map(|t| t.0), Some(at(1)));
    }

    #[test]
    fn validation_and_immutability() {
        let mut j = job("v", Some(1), 1);
        j.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .restart_policy = None;
        assert_eq!(
            validate(&j).unwrap_err(),
            "spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""
        );
        let mut j = job("v", None, 1);
        j.spec.as_mut().unwrap().completion_mode = Some("Indexed".into());
        assert!(validate(&j)
            .unwrap_err()
            .starts_with("spec.completions: Required value"));
        let mut j = job("v", Some(1), 1);
        j.spec.as_mut().unwrap().selector = Some(LabelSelector::default());
        assert!(validate(&j)
            .unwrap_err()
            .contains("`selector` will be auto-generated"));
        let j = job("v", Some(1), 1);
        let rec = adopt(&j, PathBuf::new(), None, at(0));
        assert_eq!(immutable_change(&rec.job, &j), None);
        let mut j2 = j.clone();
        j2.spec
            .as_mut()
            .unwrap()
            .template
            .spec
            .as_mut()
            .unwrap()
            .containers[0]
            .image = Some("other".into());
        let e = immutable_change(&rec.job, &j2).unwrap();
        assert!(
            e.starts_with("Job.batch \"v\" is invalid: spec.template: Invalid value"),
            "{e}"
        );
        assert!(e.ends_with("field is immutable"));
        let mut j3 = j.clone();
        j3.spec.as_mut().unwrap().parallelism = Some(3);
        assert_eq!(immutable_change(&rec.job, &j3), None);
        assert_eq!(ranges(&[0, 1, 2, 4, 6, 7].into()), "0-2,4,6-7");
    }
}
