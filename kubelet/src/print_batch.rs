//! `get jobs|cronjobs`: the rows of kubectl's printJob and printCronJob.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::print::{age, human_duration, rfc1123};
use crate::print_describe as d;

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn has(conds: &Value, t: &str) -> bool {
    conds
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == t && c["status"] == "True")
}

/// NAME STATUS COMPLETIONS DURATION AGE.
pub fn job_row(name: String, j: &Value) -> Vec<String> {
    let st = &j["status"];
    let ok = st["succeeded"].as_i64().unwrap_or(0);
    let completions = match j["spec"]["completions"].as_i64() {
        Some(c) => format!("{ok}/{c}"),
        None => match j["spec"]["parallelism"].as_i64().unwrap_or(0) {
            p if p > 1 => format!("{ok}/1 of {p}"),
            _ => format!("{ok}/1"),
        },
    };
    let duration = match (time(&st["startTime"]), time(&st["completionTime"])) {
        (None, _) => String::new(),
        (Some(s), None) => human_duration(Utc::now() - s),
        (Some(s), Some(e)) => human_duration(e - s),
    };
    let c = &st["conditions"];
    let status = if has(c, "Complete") {
        "Complete"
    } else if has(c, "Failed") {
        "Failed"
    } else if j["metadata"]["deletionTimestamp"].is_string() {
        "Terminating"
    } else if has(c, "Suspended") {
        "Suspended"
    } else if has(c, "FailureTarget") {
        "FailureTarget"
    } else if has(c, "SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else {
        "Running"
    };
    vec![
        name,
        status.into(),
        completions,
        duration,
        age(&j["metadata"]["creationTimestamp"]),
    ]
}

/// NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE.
pub fn cronjob_row(name: String, c: &Value) -> Vec<String> {
    let spec = &c["spec"];
    let st = &c["status"];
    vec![
        name,
        spec["schedule"].as_str().unwrap_or("").into(),
        spec["timeZone"].as_str().unwrap_or("<none>").into(),
        match spec["suspend"].as_bool() {
            Some(true) => "True".into(),
            Some(false) => "False".into(),
            None => "<unset>".into(),
        },
        st["active"].as_array().map_or(0, Vec::len).to_string(),
        if st["lastScheduleTime"].is_string() {
            age(&st["lastScheduleTime"])
        } else {
            "<none>".into()
        },
        age(&c["metadata"]["creationTimestamp"]),
    ]
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<unset>".into(),
        other => other.to_string(),
    }
}

fn selector(v: &Value) -> String {
    let m: Vec<String> = v["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
        .collect();
    if m.is_empty() {
        "<unset>".into()
    } else {
        m.join(",")
    }
}

fn none(s: String) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}

/// `kubectl describe job|cronjob`, its main sections.
pub fn describe(plural: &str, o: &Value, events: &Value) -> String {
    let md = &o["metadata"];
    let spec = &o["spec"];
    let st = &o["status"];
    let mut rows: Vec<(&str, String)> = vec![
        ("Name", text(&md["name"])),
        ("Namespace", text(&md["namespace"])),
    ];
    if plural == "jobs" {
        rows.push(("Selector", selector(&spec["selector"])));
        rows.push(("Labels", String::new()));
        rows.push(("Annotations", String::new()));
        rows.push(("Parallelism", text(&spec["parallelism"])));
        rows.push(("Completions", text(&spec["completions"])));
        rows.push(("Completion Mode", text(&spec["completionMode"])));
        rows.push(("Suspend", text(&spec["suspend"])));
        rows.push(("Backoff Limit", text(&spec["backoffLimit"])));
        if st["startTime"].is_string() {
            rows.push(("Start Time", rfc1123(&st["startTime"])));
        }
        if st["completionTime"].is_string() {
            rows.push(("Completed At", rfc1123(&st["completionTime"])));
        }
        let d = job_row(String::new(), o)[3].clone();
        if !d.is_empty() {
            rows.push(("Duration", d));
        }
        if spec["activeDeadlineSeconds"].is_i64() {
            rows.push((
                "Active Deadline Seconds",
                format!("{}s", spec["activeDeadlineSeconds"]),
            ));
        }
        let n = |k: &str| st[k].as_i64().unwrap_or(0);
        rows.push((
            "Pods Statuses",
            format!(
                "{} Active ({} Ready) / {} Succeeded / {} Failed",
                n("active"),
                n("ready"),
                n("succeeded"),
                n("failed")
            ),
        ));
        if spec["completionMode"] == "Indexed" {
            rows.push((
                "Completed Indexes",
                none(st["completedIndexes"].as_str().unwrap_or("").into()),
            ));
        }
        for c in st["conditions"].as_array().into_iter().flatten() {
            if c["status"] == "True" && c["reason"].is_string() {
                rows.push((
                    "Condition",
                    format!("{} ({})", text(&c["type"]), text(&c["reason"])),
                ));
            }
        }
    } else {
        rows.push(("Labels", String::new()));
        rows.push(("Annotations", String::new()));
        rows.push(("Schedule", text(&spec["schedule"])));
        if spec["timeZone"].is_string() {
            rows.push(("Time Zone", text(&spec["timeZone"])));
        }
        rows.push(("Concurrency Policy", text(&spec["concurrencyPolicy"])));
        rows.push((
            "Suspend",
            if spec["suspend"] == true {
                "True"
            } else {
                "False"
            }
            .into(),
        ));
        rows.push((
            "Successful Job History Limit",
            text(&spec["successfulJobsHistoryLimit"]),
        ));
        rows.push((
            "Failed Job History Limit",
            text(&spec["failedJobsHistoryLimit"]),
        ));
        rows.push((
            "Starting Deadline Seconds",
            match spec["startingDeadlineSeconds"].as_i64() {
                Some(s) => format!("{s}s"),
                None => "<unset>".into(),
            },
        ));
        rows.push((
            "Last Schedule Time",
            match st["lastScheduleTime"].is_string() {
                true => rfc1123(&st["lastScheduleTime"]),
                false => "<unset>".into(),
            },
        ));
        let active: Vec<String> = st["active"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| text(&a["name"]))
            .collect();
        rows.push(("Active Jobs", none(active.join(", "))));
    }
    // Tab-separated as kubectl's describers write it; print_describe aligns it.
    let mut out = String::new();
    for (k, v) in rows {
        match k {
            "Labels" => d::labels(&mut out, "", k, &md["labels"]),
            "Annotations" => {
                d::annotations(&mut out, "", k, &md["annotations"]);
                let owner = md["ownerReferences"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|r| r["controller"] == true);
                if let Some(r) = owner {
                    out.push_str(&format!(
                        "Controlled By:\t{}/{}\n",
                        text(&r["kind"]),
                        text(&r["name"])
                    ));
                }
            }
            "Last Schedule Time" => {
                let js = &spec["jobTemplate"]["spec"];
                out.push_str(&format!("Selector:\t{}\n", selector(&js["selector"])));
                out.push_str(&format!("Parallelism:\t{}\n", text(&js["parallelism"])));
                out.push_str(&format!("Completions:\t{}\n", text(&js["completions"])));
                d::pod_template(&mut out, &js["template"]);
                out.push_str(&format!("{k}:\t{v}\n"));
            }
            _ => out.push_str(&format!("{k}:\t{v}\n")),
        }
    }
    if plural == "jobs" {
        d::pod_template(&mut out, &spec["template"]);
    }
    d::finish(out, events)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn columns() {
        let j = json!({"metadata": {"name": "pi", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"completions": 6, "parallelism": 2},
            "status": {"succeeded": 6, "startTime": "2026-01-01T00:00:00Z", "completionTime": "2026-01-01T00:00:42Z",
                "conditions": [{"type": "Complete", "status": "True"}]}});
        let t = crate::print_workloads::table("jobs", &[j], false);
        let mut lines = t.lines();
        assert_eq!(
            lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
            ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
        );
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(&row[..4], ["pi", "Complete", "6/6", "42s"]);
        let q = json!({"metadata": {"name": "q"}, "spec": {"parallelism": 3}, "status": {}});
        assert_eq!(job_row("q".into(), &q)[1..4], ["Running", "0/1 of 3", ""]);
        let c = json!({"metadata": {"name": "tick"}, "spec": {"schedule": "* * * * *", "suspend": false},
            "status": {"active": [{"name": "tick-1"}]}});
        let t = crate::print_workloads::table("cronjobs", &[c], false);
        assert!(
            t.starts_with("NAME   SCHEDULE    TIMEZONE   SUSPEND   ACTIVE   LAST SCHEDULE   AGE"),
            "{t}"
        );
        assert!(
            t.contains("tick   * * * * *   <none>     False     1        <none>"),
            "{t}"
        );
    }
}
