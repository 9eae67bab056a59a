//! The CronJob controller's rules (batch/v1): when a Job is due, what happens to a run that
//! was missed (the agent was down, or `Forbid` held it back), `concurrencyPolicy`,
//! `startingDeadlineSeconds` and the history limits. Pure: the caller passes the clock, so
//! schedules, missed runs and time zones are tested without waiting.
//!
//! Schedules are read by `croner` (the five POSIX/Vixie fields and the `@hourly`-style
//! macros); time zones come from `chrono-tz` (the IANA database built into the binary, so the
//! node needs no /usr/share/zoneinfo); without `timeZone` the agent's local zone is used, as
//! kube-controller-manager uses its own.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{DateTime, Local, TimeZone, Utc};
use croner::parser::{CronParser, Seconds};
use croner::Cron;
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::{Deserialize, Serialize};

use super::job::{self, JobRec, Note};
use super::replicaset::random_uid;

pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// A CronJob's controller-side record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CronRec {
    pub uid: String,
    pub created: DateTime<Utc>,
    pub last_schedule: Option<DateTime<Utc>>,
    pub last_successful: Option<DateTime<Utc>>,
    /// The scheduled time a one-off event (JobAlreadyActive, MissSchedule,
    /// TooManyMissedTimes) was last given for, so it is said once, not every pass.
    #[serde(default)]
    pub noted: Option<(DateTime<Utc>, String)>,
}

impl CronRec {
    pub fn new(now: DateTime<Utc>) -> Self {
        CronRec {
            uid: random_uid(),
            created: now,
            last_schedule: None,
            last_successful: None,
            noted: None,
        }
    }
}

/// A parsed schedule in its zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: Option<chrono_tz::Tz>,
}

/// The schedule and zone of a CronJob, or the API server's validation error.
pub fn schedule(spec: &CronJobSpec) -> Result<Schedule, String> {
    let s = spec.schedule.trim();
    if s.contains("TZ=") {
        return Err(format!(
            "spec.schedule: Invalid value: {s:?}: cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
        ));
    }
    // robfig/cron (what Kubernetes uses) knows `@midnight`; croner does not.
    let text = if s.eq_ignore_ascii_case("@midnight") {
        "0 0 * * *"
    } else {
        s
    };
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .build()
        .parse(text)
        .map_err(|e| format!("spec.schedule: Invalid value: {s:?}: {e}"))?;
    let tz =
        match spec.time_zone.as_deref() {
            None => None,
            Some(z) => Some(chrono_tz::Tz::from_str(z).map_err(|_| {
                format!("spec.timeZone: Invalid value: {z:?}: unknown time zone {z}")
            })?),
        };
    Ok(Schedule { cron, tz })
}

impl Schedule {
    fn step<Z: TimeZone>(
        &self,
        z: &Z,
        t: DateTime<Utc>,
        fwd: bool,
        incl: bool,
    ) -> Option<DateTime<Utc>> {
        let local = t.with_timezone(z);
        let r = if fwd {
            self.cron.find_next_occurrence(&local, incl)
        } else {
            self.cron.find_previous_occurrence(&local, incl)
        };
        r.ok().map(|d| d.with_timezone(&Utc))
    }

    fn go(&self, t: DateTime<Utc>, fwd: bool, incl: bool) -> Option<DateTime<Utc>> {
        match &self.tz {
            Some(z) => self.step(z, t, fwd, incl),
            None => self.step(&Local, t, fwd, incl),
        }
    }

    /// The first scheduled time after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.go(t, true, false)
    }

    /// The last scheduled time after `earliest` and not after `now`, with how many such
    /// times there are (the missed runs), as `mostRecentScheduleTime` counts them.
    pub fn most_recent(
        &self,
        earliest: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Option<(DateTime<Utc>, i64)> {
        let t1 = self.next_after(earliest)?;
        if t1 > now {
            return None;
        }
        let t2 = self.next_after(t1)?;
        if t2 > now {
            return Some((t1, 1));
        }
        let recent = self.go(now, false, true)?;
        let gap = (t2 - t1).num_seconds().max(1);
        Some((recent, (now - t1).num_seconds() / gap + 1))
    }
}

/// The Job of a scheduled time: `<cronjob>-<minutes since the epoch>`, owned by the CronJob.
pub fn job_for(cj: &CronJob, uid: &str, at: DateTime<Utc>, sched: &Schedule) -> Job {
    let name = cj.metadata.name.clone().unwrap_or_default();
    let spec = cj.spec.clone().unwrap_or_default();
    let t = spec.job_template;
    let m = t.metadata.unwrap_or_default();
    let mut annotations = m.annotations.unwrap_or_default();
    let stamp = match &sched.tz {
        Some(z) => at.with_timezone(z).to_rfc3339(),
        None => at.with_timezone(&Local).to_rfc3339(),
    };
    annotations.insert(SCHEDULED_TIMESTAMP.into(), stamp);
    Job {
        metadata: ObjectMeta {
            name: Some(format!("{name}-{}", at.timestamp().div_euclid(60))),
            namespace: cj.metadata.namespace.clone(),
            labels: m.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name,
                uid: uid.into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: t.spec,
        status: None,
    }
}

/// kubectl's `create job NAME --from=cronjob/CJ`: the template's Job, marked as made by hand.
pub fn manual_job(cj: &serde_json::Value, name: &str) -> Result<serde_json::Value, String> {
    let cj: CronJob =
        serde_json::from_value(cj.clone()).map_err(|e| format!("the CronJob: {e}"))?;
    let t = cj.spec.clone().unwrap_or_default().job_template;
    let m = t.metadata.unwrap_or_default();
    let mut annotations = m.annotations.unwrap_or_default();
    annotations.insert("cronjob.kubernetes.io/instantiate".into(), "manual".into());
    let job = Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: cj.metadata.namespace.clone(),
            labels: m.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name: cj.metadata.name.clone().unwrap_or_default(),
                uid: cj.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: t.spec,
        status: None,
    };
    let mut v = serde_json::to_value(&job).map_err(|e| e.to_string())?;
    v["apiVersion"] = "batch/v1".into();
    v["kind"] = "Job".into();
    Ok(v)
}

fn note(cj: &CronJob, uid: &str, warning: bool, reason: &'static str, message: String) -> Note {
    Note {
        kind: "CronJob",
        ns: cj.metadata.namespace.clone().unwrap_or_default(),
        name: cj.metadata.name.clone().unwrap_or_default(),
        uid: uid.into(),
        warning,
        reason,
        message,
    }
}

fn job_name(r: &JobRec) -> String {
    r.job.metadata.name.clone().unwrap_or_default()
}

/// One step of the CronJob controller over its Jobs (`jobs`, keyed `namespace/name`, all
/// the agent's). Returns whether anything changed.
pub fn sync(
    cj: &CronJob,
    sched: &Schedule,
    rec: &mut CronRec,
    jobs: &mut BTreeMap<String, JobRec>,
    file: &std::path::Path,
    now: DateTime<Utc>,
    notes: &mut Vec<Note>,
) -> bool {
    let ns = cj
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let key = format!("{ns}/{}", cj.metadata.name.as_deref().unwrap_or(""));
    let spec = cj.spec.clone().unwrap_or_default();
    let uid = rec.uid.clone();
    let mut changed = false;
    // Finished Jobs: said once, and the last success remembered.
    for r in jobs
        .values_mut()
        .filter(|r| r.owner.as_deref() == Some(key.as_str()))
    {
        if let Some((how, at)) = job::finished(r) {
            if !r.seen {
                r.seen = true;
                changed = true;
                notes.push(note(
                    cj,
                    &uid,
                    false,
                    "SawCompletedJob",
                    format!("Saw completed job: {}, condition: {how}", job_name(r)),
                ));
                if how == "Complete" && rec.last_successful.is_none_or(|t| t < at) {
                    rec.last_successful = Some(at);
                }
            }
        }
    }
    // History limits: the oldest finished Jobs beyond them go.
    for (want, limit) in [
        ("Complete", spec.successful_jobs_history_limit.unwrap_or(3)),
        ("Failed", spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let mut done: Vec<(DateTime<Utc>, String)> = jobs
            .iter()
            .filter(|(_, r)| r.owner.as_deref() == Some(key.as_str()))
            .filter(|(_, r)| job::finished(r).is_some_and(|f| f.0 == want))
            .map(|(k, r)| {
                let start = r
                    .status
                    .start_time
                    .as_ref()
                    .or(r.job.metadata.creation_timestamp.as_ref())
                    .map(|t| t.0)
                    .unwrap_or(now);
                (start, k.clone())
            })
            .collect();
        done.sort();
        let extra = done.len().saturating_sub(limit.max(0) as usize);
        for (_, k) in done.into_iter().take(extra) {
            if let Some(r) = jobs.remove(&k) {
                notes.push(note(
                    cj,
                    &uid,
                    false,
                    "SuccessfulDelete",
                    format!("Deleted job {}", job_name(&r)),
                ));
                changed = true;
            }
        }
    }
    if spec.suspend == Some(true) {
        return changed;
    }
    let earliest = {
        let mut e = rec.last_schedule.unwrap_or(rec.created);
        if let Some(sds) = spec.starting_deadline_seconds {
            e = e.max(now - chrono::Duration::seconds(sds));
        }
        e
    };
    let Some((at, missed)) = sched.most_recent(earliest, now) else {
        return changed;
    };
    let mut once = |reason: &str| {
        let fresh = rec.noted.as_ref() != Some(&(at, reason.to_string()));
        if fresh {
            rec.noted = Some((at, reason.to_string()));
        }
        fresh
    };
    if missed > 100 && once("TooManyMissedTimes") {
        notes.push(note(cj, &uid, true, "TooManyMissedTimes", format!(
            "too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
        )));
        changed = true;
    }
    if let Some(sds) = spec.starting_deadline_seconds {
        if at + chrono::Duration::seconds(sds) < now {
            if once("MissSchedule") {
                notes.push(note(
                    cj,
                    &uid,
                    true,
                    "MissSchedule",
                    format!("Missed scheduled time to start a job: {}", at.to_rfc2822()),
                ));
                changed = true;
            }
            return changed;
        }
    }
    let jname = format!(
        "{}-{}",
        cj.metadata.name.as_deref().unwrap_or(""),
        at.timestamp().div_euclid(60)
    );
    let jkey = format!("{ns}/{jname}");
    if jobs.contains_key(&jkey) || rec.last_schedule == Some(at) {
        return changed;
    }
    let active: Vec<String> = jobs
        .iter()
        .filter(|(_, r)| r.owner.as_deref() == Some(key.as_str()) && job::finished(r).is_none())
        .map(|(k, _)| k.clone())
        .collect();
    match spec.concurrency_policy.as_deref().unwrap_or("Allow") {
        "Forbid" if !active.is_empty() => {
            if once("JobAlreadyActive") {
                notes.push(note(cj, &uid, false, "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid".into()));
                changed = true;
            }
            return changed;
        }
        "Replace" => {
            for k in active {
                if let Some(r) = jobs.remove(&k) {
                    notes.push(note(
                        cj,
                        &uid,
                        false,
                        "SuccessfulDelete",
                        format!("Deleted job {}", job_name(&r)),
                    ));
                }
            }
        }
        _ => {}
    }
    let j = job_for(cj, &uid, at, sched);
    jobs.insert(jkey, job::adopt(&j, file.to_path_buf(), Some(key), now));
    notes.push(note(
        cj,
        &uid,
        false,
        "SuccessfulCreate",
        format!("Created job {jname}"),
    ));
    rec.last_schedule = Some(at);
    true
}

/// The CronJob with its status, as the API shows it.
pub fn published(cj: &CronJob, rec: &CronRec, jobs: &BTreeMap<String, JobRec>) -> CronJob {
    let mut cj = cj.clone();
    let key = format!(
        "{}/{}",
        cj.metadata.namespace.as_deref().unwrap_or("default"),
        cj.metadata.name.as_deref().unwrap_or("")
    );
    cj.metadata.uid = Some(rec.uid.clone());
    cj.metadata.creation_timestamp = Some(Time(rec.created));
    let spec = cj.spec.get_or_insert_with(Default::default);
    spec.concurrency_policy
        .get_or_insert_with(|| "Allow".into());
    spec.suspend.get_or_insert(false);
    spec.successful_jobs_history_limit.get_or_insert(3);
    spec.failed_jobs_history_limit.get_or_insert(1);
    let active: Vec<ObjectReference> = jobs
        .values()
        .filter(|r| r.owner.as_deref() == Some(key.as_str()) && job::finished(r).is_none())
        .map(|r| ObjectReference {
            api_version: Some("batch/v1".into()),
            kind: Some("Job".into()),
            name: r.job.metadata.name.clone(),
            namespace: r.job.metadata.namespace.clone(),
            uid: r.job.metadata.uid.clone(),
            ..Default::default()
        })
        .collect();
    cj.status = Some(CronJobStatus {
        active: (!active.is_empty()).then_some(active),
        last_schedule_time: rec.last_schedule.map(Time),
        last_successful_time: rec.last_successful.map(Time),
    });
    cj
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobSpec, JobTemplateSpec};
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use std::collections::HashMap;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cronjob(schedule: &str, policy: &str, tz: Option<&str>) -> CronJob {
        CronJob {
            metadata: ObjectMeta {
                name: Some("tick".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(CronJobSpec {
                schedule: schedule.into(),
                time_zone: tz.map(Into::into),
                concurrency_policy: Some(policy.into()),
                job_template: JobTemplateSpec {
                    metadata: None,
                    spec: Some(JobSpec {
                        template: PodTemplateSpec {
                            metadata: None,
                            spec: Some(PodSpec {
                                restart_policy: Some("Never".into()),
                                containers: vec![Container {
                                    name: "c".into(),
                                    ..Default::default()
                                }],
                                ..Default::default()
                            }),
                        },
                        ..Default::default()
                    }),
                },
                ..Default::default()
            }),
            status: None,
        }
    }

    fn spec(s: &str, tz: Option<&str>) -> CronJobSpec {
        cronjob(s, "Allow", tz).spec.unwrap()
    }

    #[test]
    fn schedules_macros_and_zones() {
        let s = schedule(&spec("*/15 * * * *", Some("UTC"))).unwrap();
        assert_eq!(
            s.next_after(utc("2026-03-01T10:07:00Z")),
            Some(utc("2026-03-01T10:15:00Z"))
        );
        let h = schedule(&spec("@hourly", Some("UTC"))).unwrap();
        assert_eq!(
            h.next_after(utc("2026-03-01T10:00:00Z")),
            Some(utc("2026-03-01T11:00:00Z"))
        );
        let d = schedule(&spec("@midnight", Some("UTC"))).unwrap();
        assert_eq!(
            d.next_after(utc("2026-03-01T10:00:00Z")),
            Some(utc("2026-03-02T00:00:00Z"))
        );
        // 09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer.
        let ny = schedule(&spec("0 9 * * *", Some("America/New_York"))).unwrap();
        assert_eq!(
            ny.next_after(utc("2026-01-10T00:00:00Z")),
            Some(utc("2026-01-10T14:00:00Z"))
        );
        assert_eq!(
            ny.next_after(utc("2026-07-10T00:00:00Z")),
            Some(utc("2026-07-10T13:00:00Z"))
        );
        // Day-of-week names and ranges.
        let w = schedule(&spec("30 8 * * MON-FRI", Some("UTC"))).unwrap();
        // 2026-03-07 is a Saturday.
        assert_eq!(
            w.next_after(utc("2026-03-07T00:00:00Z")),
            Some(utc("2026-03-09T08:30:00Z"))
        );
        for (bad, want) in [
            ("61 * * * *", "spec.schedule: Invalid value: \"61 * * * *\""),
            ("* * * *", "spec.schedule: Invalid value"),
            (
                "TZ=UTC * * * * *",
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ),
        ] {
            let e = schedule(&spec(bad, None)).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
        let e = schedule(&spec("* * * * *", Some("Mars/Olympus"))).unwrap_err();
        assert_eq!(
            e,
            "spec.timeZone: Invalid value: \"Mars/Olympus\": unknown time zone Mars/Olympus"
        );
    }

    fn run(
        cj: &CronJob,
        rec: &mut CronRec,
        jobs: &mut BTreeMap<String, JobRec>,
        now: DateTime<Utc>,
    ) -> Vec<Note> {
        let s = schedule(cj.spec.as_ref().unwrap()).unwrap();
        let mut notes = Vec::new();
        sync(
            cj,
            &s,
            rec,
            jobs,
            std::path::Path::new("c.yaml"),
            now,
            &mut notes,
        );
        notes
    }

    /// Finishes every active Job of `jobs` (its pods succeed at once).
    fn finish_all(jobs: &mut BTreeMap<String, JobRec>, now: DateTime<Utc>, phase: &str) {
        for r in jobs.values_mut() {
            let mut notes = Vec::new();
            job::sync(r, &HashMap::new(), now, &|_| false, &mut notes);
            let obs: HashMap<String, job::PodObs> = r
                .pods
                .iter()
                .map(|p| {
                    (
                        p.uid.clone(),
                        job::PodObs {
                            phase: phase.into(),
                            ..Default::default()
                        },
                    )
                })
                .collect();
            let spec = r.job.spec.as_mut().unwrap();
            spec.backoff_limit = Some(0);
            job::sync(r, &obs, now, &|_| false, &mut notes);
        }
    }

    #[test]
    fn names_missed_runs_and_deadline() {
        let cj = cronjob("*/5 * * * *", "Allow", Some("UTC"));
        let mut rec = CronRec::new(utc("2026-03-01T10:01:00Z"));
        let mut jobs = BTreeMap::new();
        assert!(run(&cj, &mut rec, &mut jobs, utc("2026-03-01T10:04:59Z")).is_empty());
        let n = run(&cj, &mut rec, &mut jobs, utc("2026-03-01T10:05:01Z"));
        let at = utc("2026-03-01T10:05:00Z");
        let want = format!("tick-{}", at.timestamp() / 60);
        assert_eq!(n[0].reason, "SuccessfulCreate");
        assert_eq!(n[0].message, format!("Created job {want}"));
        assert!(jobs.contains_key(&format!("default/{want}")));
        let j = &jobs[&format!("default/{want}")].job;
        assert_eq!(
            j.metadata.owner_references.as_ref().unwrap()[0].kind,
            "CronJob"
        );
        assert_eq!(
            j.metadata.annotations.as_ref().unwrap()[SCHEDULED_TIMESTAMP],
            "2026-03-01T10:05:00+00:00"
        );
        assert_eq!(rec.last_schedule, Some(at));
        // Same minute again: nothing.
        assert!(run(&cj, &mut rec, &mut jobs, utc("2026-03-01T10:05:30Z")).is_empty());
        // Down for 3 hours (36 runs missed): one catch-up, the most recent, no burst.
        let n = run(&cj, &mut rec, &mut jobs, utc("2026-03-01T13:02:00Z"));
        assert_eq!(n.len(), 1, "{n:?}");
        assert_eq!(jobs.len(), 2);
        assert_eq!(rec.last_schedule, Some(utc("2026-03-01T13:00:00Z")));
        // Down for 10 hours: more than 100 missed, the controller's warning, still one run.
        let n = run(&cj, &mut rec, &mut jobs, utc("2026-03-01T23:31:00Z"));
        assert_eq!(n[0].reason, "TooManyMissedTimes");
        assert!(
            n[0].message
                .starts_with("too many missed start times: 126."),
            "{}",
            n[0].message
        );
        assert_eq!(n[1].reason, "SuccessfulCreate");
        assert_eq!(jobs.len(), 3);
        // With startingDeadlineSeconds: a run older than the deadline is not started.
        let mut late = cj.clone();
        late.spec.as_mut().unwrap().starting_deadline_seconds = Some(60);
        assert!(run(&late, &mut rec, &mut jobs, utc("2026-03-01T23:37:30Z")).is_empty());
        assert_eq!(jobs.len(), 3);
        let n = run(&late, &mut rec, &mut jobs, utc("2026-03-01T23:40:30Z"));
        assert_eq!(n[0].reason, "SuccessfulCreate");
        // And the deadline keeps a long outage from counting 100s of misses.
        let n = run(&late, &mut rec, &mut jobs, utc("2026-03-03T00:00:10Z"));
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].reason, "SuccessfulCreate");
    }

    #[test]
    fn manual_job_from_the_template() {
        let mut cj = cronjob("* * * * *", "Allow", None);
        cj.metadata.uid = Some("u1".into());
        let v = manual_job(&serde_json::to_value(&cj).unwrap(), "by-hand").unwrap();
        assert_eq!(v["kind"], "Job");
        assert_eq!(v["metadata"]["name"], "by-hand");
        assert_eq!(
            v["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"],
            "manual"
        );
        assert_eq!(v["metadata"]["ownerReferences"][0]["uid"], "u1");
        assert_eq!(v["spec"]["template"]["spec"]["restartPolicy"], "Never");
    }

    #[test]
    fn forbid_replace_and_history() {
        let t0 = utc("2026-03-01T10:00:30Z");
        let min = |m: i64| t0 + chrono::Duration::minutes(m);
        // Forbid: the next minute waits for the running Job, then starts (late, not twice).
        let cj = cronjob("* * * * *", "Forbid", Some("UTC"));
        let mut rec = CronRec::new(utc("2026-03-01T10:00:10Z"));
        let mut jobs = BTreeMap::new();
        run(&cj, &mut rec, &mut jobs, min(1));
        assert_eq!(jobs.len(), 1);
        let n = run(&cj, &mut rec, &mut jobs, min(2));
        assert_eq!(n[0].reason, "JobAlreadyActive");
        assert!(run(
            &cj,
            &mut rec,
            &mut jobs,
            min(2) + chrono::Duration::seconds(1)
        )
        .is_empty());
        assert_eq!(jobs.len(), 1);
        finish_all(
            &mut jobs,
            min(2) + chrono::Duration::seconds(10),
            "Succeeded",
        );
        let n = run(
            &cj,
            &mut rec,
            &mut jobs,
            min(2) + chrono::Duration::seconds(11),
        );
        assert_eq!(n[0].reason, "SawCompletedJob");
        assert_eq!(
            n[0].message,
            format!(
                "Saw completed job: tick-{}, condition: Complete",
                utc("2026-03-01T10:01:00Z").timestamp() / 60
            )
        );
        assert_eq!(n[1].reason, "SuccessfulCreate");
        assert_eq!(jobs.len(), 2);
        assert!(rec.last_successful.is_some());
        let p = published(&cj, &rec, &jobs);
        assert_eq!(
            p.status.as_ref().unwrap().active.as_ref().map(Vec::len),
            Some(1)
        );

        // Replace: the running Job goes for the new one.
        let cj = cronjob("* * * * *", "Replace", Some("UTC"));
        let mut rec = CronRec::new(utc("2026-03-01T10:00:10Z"));
        let mut jobs = BTreeMap::new();
        run(&cj, &mut rec, &mut jobs, min(1));
        let first: Vec<String> = jobs.keys().cloned().collect();
        let n = run(&cj, &mut rec, &mut jobs, min(2));
        assert_eq!(n[0].reason, "SuccessfulDelete");
        assert_eq!(jobs.len(), 1);
        assert!(!jobs.contains_key(&first[0]));

        // History: 2 successful and 1 failed kept; the oldest go.
        let mut cj = cronjob("* * * * *", "Allow", Some("UTC"));
        cj.spec.as_mut().unwrap().successful_jobs_history_limit = Some(2);
        let mut rec = CronRec::new(utc("2026-03-01T10:00:10Z"));
        let mut jobs = BTreeMap::new();
        for m in 1..=5 {
            run(&cj, &mut rec, &mut jobs, min(m));
            finish_all(
                &mut jobs,
                min(m) + chrono::Duration::seconds(5),
                if m == 2 || m == 3 {
                    "Failed"
                } else {
                    "Succeeded"
                },
            );
        }
        let n = run(
            &cj,
            &mut rec,
            &mut jobs,
            min(5) + chrono::Duration::seconds(20),
        );
        assert!(n.iter().any(|n| n.reason == "SuccessfulDelete"), "{n:?}");
        let kinds: Vec<&str> = jobs
            .values()
            .filter_map(|r| job::finished(r).map(|f| f.0))
            .collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "Complete").count(),
            2,
            "{kinds:?}"
        );
        assert_eq!(
            kinds.iter().filter(|k| **k == "Failed").count(),
            1,
            "{kinds:?}"
        );

        // suspend: nothing is scheduled.
        let mut cj = cronjob("* * * * *", "Allow", Some("UTC"));
        cj.spec.as_mut().unwrap().suspend = Some(true);
        let mut rec = CronRec::new(utc("2026-03-01T10:00:10Z"));
        let mut jobs = BTreeMap::new();
        run(&cj, &mut rec, &mut jobs, min(3));
        assert!(jobs.is_empty());
    }
}
