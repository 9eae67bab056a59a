//! `get jobs|cronjobs`: the rows of kubectl's printJob and printCronJob.

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::print::{age, human_duration};

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
