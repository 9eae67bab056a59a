//! The API server's validation of a Job (batch/v1) as this agent applies it: the fields
//! and values it refuses, worded as the API server words them, and the fields that may not
//! change once the Job exists.

use k8s_openapi::api::batch::v1::Job;

use super::job::{spec_of, user_template};

/// The API server's validation of a Job (the errors word it the same way).
pub fn validate(job: &Job) -> Result<(), String> {
    let Some(s) = job.spec.as_ref() else {
        return Err("spec: Required value".into());
    };
    for (f, v) in [
        ("parallelism", s.parallelism),
        ("completions", s.completions),
        ("backoffLimit", s.backoff_limit),
        ("ttlSecondsAfterFinished", s.ttl_seconds_after_finished),
    ] {
        if let Some(v) = v.filter(|v| *v < 0) {
            return Err(format!(
                "spec.{f}: Invalid value: {v}: must be greater than or equal to 0"
            ));
        }
    }
    if let Some(v) = s.active_deadline_seconds.filter(|v| *v <= 0) {
        return Err(format!(
            "spec.activeDeadlineSeconds: Invalid value: {v}: must be greater than 0"
        ));
    }
    match s.completion_mode.as_deref() {
        None | Some("NonIndexed") => {}
        Some("Indexed") if s.completions.is_none() => {
            return Err(
                "spec.completions: Required value: when completion mode is Indexed".into(),
            )
        }
        Some("Indexed") => {}
        Some(m) => {
            return Err(format!(
                "spec.completionMode: Unsupported value: {m:?}: supported values: \"NonIndexed\", \"Indexed\""
            ))
        }
    }
    let policy = s
        .template
        .spec
        .as_ref()
        .and_then(|p| p.restart_policy.as_deref())
        .unwrap_or("Always");
    if policy != "OnFailure" && policy != "Never" {
        return Err(format!(
            "spec.template.spec.restartPolicy: Unsupported value: {policy:?}: supported values: \"OnFailure\", \"Never\""
        ));
    }
    if let Some(p) = &s.pod_failure_policy {
        if policy != "Never" {
            return Err(format!(
                "spec.template.spec.restartPolicy: Invalid value: {policy:?}: only \"Never\" is supported when podFailurePolicy is specified"
            ));
        }
        for (i, r) in p.rules.iter().enumerate() {
            if !["FailJob", "Ignore", "Count", "FailIndex"].contains(&r.action.as_str()) {
                return Err(format!(
                    "spec.podFailurePolicy.rules[{i}].action: Unsupported value: {:?}: supported values: \"Count\", \"FailIndex\", \"FailJob\", \"Ignore\"",
                    r.action
                ));
            }
            if let Some(e) = &r.on_exit_codes {
                if e.operator != "In" && e.operator != "NotIn" {
                    return Err(format!(
                        "spec.podFailurePolicy.rules[{i}].onExitCodes.operator: Unsupported value: {:?}: supported values: \"In\", \"NotIn\"",
                        e.operator
                    ));
                }
                if e.operator == "In" && e.values.contains(&0) {
                    return Err(format!(
                        "spec.podFailurePolicy.rules[{i}].onExitCodes.values[{}]: Invalid value: 0: must not be 0 for the In operator",
                        e.values.iter().position(|v| *v == 0).unwrap_or(0)
                    ));
                }
            }
        }
    }
    match (&s.selector, s.manual_selector) {
        (Some(_), Some(true)) => super::check_selector(
            s.selector
                .as_ref()
                .map(|sel| (sel, s.template.metadata.as_ref())),
        )?,
        (Some(_), _) => {
            return Err("spec.selector: Invalid value: `selector` will be auto-generated".into())
        }
        _ => {}
    }
    Ok(())
}

/// The fields the API server refuses to change on an update, compared with the adopted Job.
pub fn immutable_change(adopted: &Job, job: &Job) -> Option<String> {
    let (old, new) = (spec_of(adopted), spec_of(job));
    let (old_t, new_t) = (user_template(&old.template), user_template(&new.template));
    let name = job.metadata.name.as_deref().unwrap_or("");
    let what = if old_t != new_t {
        "spec.template"
    } else if new.completions.is_some() && new.completions != old.completions {
        "spec.completions"
    } else if new.completion_mode.unwrap_or_else(|| "NonIndexed".into())
        != old.completion_mode.unwrap_or_default()
    {
        "spec.completionMode"
    } else {
        return None;
    };
    Some(format!(
        "Job.batch \"{name}\" is invalid: {what}: Invalid value: the new value: field is immutable"
    ))
}
