//! kubectl's printing of pods: the table (`get pods`, `-o wide`), `describe pod`, and JSON
//! indented as kubectl does.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// JSON with kubectl's four-space indent.
pub fn json4(v: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if v.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// apimachinery's duration.HumanDuration, as kubectl's AGE column prints it.
pub fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs < 0 {
        return "<invalid>".into();
    }
    if secs < 2 * 60 {
        return format!("{secs}s");
    }
    let mins = secs / 60;
    if mins < 10 {
        let s = secs % 60;
        return if s == 0 {
            format!("{mins}m")
        } else {
            format!("{mins}m{s}s")
        };
    }
    if mins < 3 * 60 {
        return format!("{mins}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = mins % 60;
        return if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let h = hours % 24;
        return if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        };
    }
    format!("{}y", hours / 24 / 365)
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

pub fn age(v: &Value) -> String {
    match time(v) {
        Some(t) => human_duration(Utc::now() - t),
        None => "<unknown>".into(),
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// kubectl's printPod: READY, STATUS, RESTARTS.
pub fn pod_columns(p: &Value) -> (String, String, String) {
    let st = &p["status"];
    let empty = Vec::new();
    let init_specs = p["spec"]["initContainers"].as_array().unwrap_or(&empty);
    let sidecars: Vec<&str> = init_specs
        .iter()
        .filter(|c| c["restartPolicy"] == "Always")
        .map(|c| s(&c["name"]))
        .collect();
    let mut total = p["spec"]["containers"]
        .as_array()
        .map(Vec::len)
        .unwrap_or(0)
        + sidecars.len();
    if total == 0 {
        total = 1;
    }
    let mut reason = s(&st["phase"]).to_string();
    if !s(&st["reason"]).is_empty() {
        reason = s(&st["reason"]).to_string();
    }
    let mut restarts = 0;
    let mut sidecar_restarts = 0;
    let mut ready = 0;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let note = |c: &Value, last: &mut Option<DateTime<Utc>>| {
        if let Some(t) = time(&c["lastState"]["terminated"]["finishedAt"]) {
            if last.is_none_or(|l| t > l) {
                *last = Some(t);
            }
        }
    };
    let mut initializing = false;
    let inits = st["initContainerStatuses"].as_array().unwrap_or(&empty);
    for (i, c) in inits.iter().enumerate() {
        restarts += c["restartCount"].as_i64().unwrap_or(0);
        note(c, &mut last_restart);
        if sidecars.contains(&s(&c["name"])) {
            sidecar_restarts += c["restartCount"].as_i64().unwrap_or(0);
            if c["started"] == true {
                if c["ready"] == true {
                    ready += 1;
                }
                continue;
            }
        }
        let term = &c["state"]["terminated"];
        let wait = &c["state"]["waiting"];
        if term.is_object() && term["exitCode"].as_i64() == Some(0) {
            continue;
        }
        if term.is_object() {
            reason = if s(&term["reason"]).is_empty() {
                match term["signal"].as_i64() {
                    Some(sig) if sig != 0 => format!("Init:Signal:{sig}"),
                    _ => format!("Init:ExitCode:{}", term["exitCode"].as_i64().unwrap_or(0)),
                }
            } else {
                format!("Init:{}", s(&term["reason"]))
            };
        } else if wait.is_object()
            && !s(&wait["reason"]).is_empty()
            && s(&wait["reason"]) != "PodInitializing"
        {
            reason = format!("Init:{}", s(&wait["reason"]));
        } else {
            reason = format!("Init:{i}/{}", init_specs.len());
        }
        initializing = true;
        break;
    }
    let initialized = st["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Initialized" && c["status"] == "True")
    });
    if !initializing || initialized {
        restarts = sidecar_restarts;
        let mut has_running = false;
        let cs = st["containerStatuses"].as_array().unwrap_or(&empty);
        for c in cs.iter().rev() {
            restarts += c["restartCount"].as_i64().unwrap_or(0);
            note(c, &mut last_restart);
            let wait = &c["state"]["waiting"];
            let term = &c["state"]["terminated"];
            if wait.is_object() && !s(&wait["reason"]).is_empty() {
                reason = s(&wait["reason"]).to_string();
            } else if term.is_object() && !s(&term["reason"]).is_empty() {
                reason = s(&term["reason"]).to_string();
            } else if term.is_object() {
                reason = match term["signal"].as_i64() {
                    Some(sig) if sig != 0 => format!("Signal:{sig}"),
                    _ => format!("ExitCode:{}", term["exitCode"].as_i64().unwrap_or(0)),
                };
            } else if c["ready"] == true && c["state"]["running"].is_object() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let pod_ready = st["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            reason = if pod_ready {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }
    if p["metadata"]["deletionTimestamp"].is_string() {
        reason = if st["reason"] == "NodeLost" {
            "Unknown".into()
        } else {
            "Terminating".into()
        };
    }
    let restarts_str = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(Utc::now() - t)),
        _ => restarts.to_string(),
    };
    (format!("{ready}/{total}"), reason, restarts_str)
}

/// Columns padded as kubectl's tabwriter does (min width 6, padding 3; the last unpadded).
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut widths = vec![0; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count() + 3).max(6);
        }
    }
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (i, c) in r.iter().enumerate() {
            if i + 1 == r.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}", w = widths[i]));
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

pub fn pods_table(items: &[Value], wide: bool, namespaces: bool) -> String {
    let mut header: Vec<String> = Vec::new();
    if namespaces {
        header.push("NAMESPACE".into());
    }
    header.extend(["NAME", "READY", "STATUS", "RESTARTS", "AGE"].map(String::from));
    if wide {
        header.extend(["IP", "NODE", "NOMINATED NODE", "READINESS GATES"].map(String::from));
    }
    let mut rows = vec![header];
    for p in items {
        let (ready, status, restarts) = pod_columns(p);
        let mut r = Vec::new();
        if namespaces {
            r.push(s(&p["metadata"]["namespace"]).to_string());
        }
        r.extend([
            s(&p["metadata"]["name"]).to_string(),
            ready,
            status,
            restarts,
            age(&p["metadata"]["creationTimestamp"]),
        ]);
        if wide {
            let none = |v: &str| {
                if v.is_empty() {
                    "<none>".to_string()
                } else {
                    v.to_string()
                }
            };
            r.push(none(s(&p["status"]["podIP"])));
            r.push(none(s(&p["spec"]["nodeName"])));
            r.push("<none>".into());
            r.push("<none>".into());
        }
        rows.push(r);
    }
    table(&rows)
}

pub(crate) fn rfc1123(v: &Value) -> String {
    time(v)
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S %z").to_string())
        .unwrap_or_default()
}

pub(crate) fn map_lines(v: &Value, indent: usize) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => {
            let pad = " ".repeat(indent);
            m.iter()
                .enumerate()
                .map(|(i, (k, val))| {
                    let line = format!("{k}={}", val.as_str().unwrap_or(""));
                    if i == 0 {
                        line
                    } else {
                        format!("{pad}{line}")
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
        }
        _ => "<none>".into(),
    }
}

fn state_lines(out: &mut String, label: &str, st: &Value) {
    if let Some(r) = st.get("running").filter(|r| r.is_object()) {
        out.push_str(&format!(
            "    {label:<16}Running\n      Started:      {}\n",
            rfc1123(&r["startedAt"])
        ));
    } else if let Some(t) = st.get("terminated").filter(|t| t.is_object()) {
        out.push_str(&format!(
            "    {label:<16}Terminated\n      Reason:       {}\n      Exit Code:    {}\n      Started:      {}\n      Finished:     {}\n",
            s(&t["reason"]),
            t["exitCode"].as_i64().unwrap_or(0),
            rfc1123(&t["startedAt"]),
            rfc1123(&t["finishedAt"])
        ));
    } else if let Some(w) = st.get("waiting").filter(|w| w.is_object()) {
        out.push_str(&format!(
            "    {label:<16}Waiting\n      Reason:       {}\n",
            s(&w["reason"])
        ));
    } else if label == "State:" {
        out.push_str(&format!("    {label:<16}Waiting\n"));
    }
}

pub(crate) fn probe_line(p: &Value) -> String {
    let how = if p["exec"].is_object() {
        format!(
            "exec {}",
            serde_json::to_string(&p["exec"]["command"])
                .unwrap_or_default()
                .replace(',', " ")
                .replace('"', "")
        )
    } else if p["httpGet"].is_object() {
        let h = &p["httpGet"];
        let scheme = if s(&h["scheme"]).is_empty() {
            "http".to_string()
        } else {
            s(&h["scheme"]).to_lowercase()
        };
        format!("http-get {scheme}://:{}{}", h["port"], s(&h["path"]))
    } else if p["tcpSocket"].is_object() {
        format!("tcp-socket :{}", p["tcpSocket"]["port"])
    } else {
        format!(
            "grpc <pod>:{} {}",
            p["grpc"]["port"],
            s(&p["grpc"]["service"])
        )
    };
    let n = |k: &str, d: i64| p[k].as_i64().unwrap_or(d);
    format!(
        "{how} delay={}s timeout={}s period={}s #success={} #failure={}",
        n("initialDelaySeconds", 0),
        n("timeoutSeconds", 1),
        n("periodSeconds", 10),
        n("successThreshold", 1),
        n("failureThreshold", 3)
    )
}

fn containers(out: &mut String, title: &str, specs: &Value, statuses: &Value) {
    let Some(specs) = specs.as_array().filter(|a| !a.is_empty()) else {
        return;
    };
    out.push_str(&format!("{title}:\n"));
    let empty = Vec::new();
    let sts = statuses.as_array().unwrap_or(&empty);
    for c in specs {
        let name = s(&c["name"]);
        let st = sts
            .iter()
            .find(|x| x["name"] == name)
            .cloned()
            .unwrap_or(Value::Null);
        out.push_str(&format!("  {name}:\n"));
        out.push_str(&format!("    Container ID:   {}\n", s(&st["containerID"])));
        out.push_str(&format!("    Image:          {}\n", s(&c["image"])));
        out.push_str(&format!("    Image ID:       {}\n", s(&st["imageID"])));
        if let Some(cmd) = c["command"].as_array() {
            out.push_str("    Command:\n");
            for a in cmd {
                out.push_str(&format!("      {}\n", s(a)));
            }
        }
        if let Some(args) = c["args"].as_array() {
            out.push_str("    Args:\n");
            for a in args {
                out.push_str(&format!("      {}\n", s(a)));
            }
        }
        state_lines(out, "State:", &st["state"]);
        state_lines(out, "Last State:", &st["lastState"]);
        out.push_str(&format!(
            "    Ready:          {}\n",
            if st["ready"] == true { "True" } else { "False" }
        ));
        out.push_str(&format!(
            "    Restart Count:  {}\n",
            st["restartCount"].as_i64().unwrap_or(0)
        ));
        for (k, label) in [
            ("livenessProbe", "Liveness"),
            ("readinessProbe", "Readiness"),
            ("startupProbe", "Startup"),
        ] {
            if c[k].is_object() {
                out.push_str(&format!(
                    "    {:<16}{}\n",
                    format!("{label}:"),
                    probe_line(&c[k])
                ));
            }
        }
    }
}

/// `kubectl describe pod`, its main sections.
pub fn describe(p: &Value, events: &Value) -> String {
    let md = &p["metadata"];
    let st = &p["status"];
    let mut out = String::new();
    let line =
        |out: &mut String, k: &str, v: &str| out.push_str(&format!("{:<18}{v}\n", format!("{k}:")));
    line(&mut out, "Name", s(&md["name"]));
    line(&mut out, "Namespace", s(&md["namespace"]));
    line(&mut out, "Priority", "0");
    line(
        &mut out,
        "Node",
        &format!("{}/{}", s(&p["spec"]["nodeName"]), s(&st["hostIP"])),
    );
    line(&mut out, "Start Time", &rfc1123(&st["startTime"]));
    line(&mut out, "Labels", &map_lines(&md["labels"], 18));
    line(&mut out, "Annotations", &map_lines(&md["annotations"], 18));
    line(&mut out, "Status", s(&st["phase"]));
    if !s(&st["reason"]).is_empty() {
        line(&mut out, "Reason", s(&st["reason"]));
        line(&mut out, "Message", s(&st["message"]));
    }
    line(&mut out, "IP", s(&st["podIP"]));
    out.push_str("IPs:\n");
    for ip in st["podIPs"].as_array().into_iter().flatten() {
        out.push_str(&format!("  IP:  {}\n", s(&ip["ip"])));
    }
    containers(
        &mut out,
        "Init Containers",
        &p["spec"]["initContainers"],
        &st["initContainerStatuses"],
    );
    containers(
        &mut out,
        "Containers",
        &p["spec"]["containers"],
        &st["containerStatuses"],
    );
    if let Some(cs) = st["conditions"].as_array() {
        out.push_str("Conditions:\n");
        let mut rows = vec![vec!["  Type".to_string(), "Status".to_string()]];
        for c in cs {
            rows.push(vec![
                format!("  {}", s(&c["type"])),
                s(&c["status"]).to_string(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    line(&mut out, "QoS Class", s(&st["qosClass"]));
    out.push_str(&events_table(events));
    out
}

/// The Events section of `describe`.
pub fn events_table(events: &Value) -> String {
    let mut out = String::new();
    let evs = events["items"].as_array().cloned().unwrap_or_default();
    if evs.is_empty() {
        out.push_str("Events:            <none>\n");
    } else {
        out.push_str("Events:\n");
        let mut rows = vec![
            ["  Type", "Reason", "Age", "From", "Message"]
                .map(String::from)
                .to_vec(),
            ["  ----", "------", "----", "----", "-------"]
                .map(String::from)
                .to_vec(),
        ];
        for e in &evs {
            let count = e["count"].as_i64().unwrap_or(1);
            let age_s = if count > 1 {
                format!(
                    "{} (x{count} over {})",
                    age(&e["lastTimestamp"]),
                    age(&e["firstTimestamp"])
                )
            } else {
                age(&e["lastTimestamp"])
            };
            rows.push(vec![
                format!("  {}", s(&e["type"])),
                s(&e["reason"]).to_string(),
                age_s,
                s(&e["source"]["component"]).to_string(),
                s(&e["message"]).to_string(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_and_columns() {
        let d = chrono::Duration::seconds;
        assert_eq!(human_duration(d(5)), "5s");
        assert_eq!(human_duration(d(119)), "119s");
        assert_eq!(human_duration(d(125)), "2m5s");
        assert_eq!(human_duration(d(600)), "10m");
        assert_eq!(human_duration(d(3 * 3600 + 60)), "3h1m");
        let p = json!({
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "c"}]},
            "status": {"phase": "Running", "containerStatuses": [
                {"name": "c", "ready": false, "restartCount": 2,
                 "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                 "lastState": {"terminated": {"exitCode": 1, "finishedAt": Utc::now().to_rfc3339()}}}
            ]}
        });
        let (ready, status, restarts) = pod_columns(&p);
        assert_eq!(
            (ready.as_str(), status.as_str()),
            ("0/1", "CrashLoopBackOff")
        );
        assert!(restarts.starts_with("2 ("), "{restarts}");
        let t = table(&[
            vec!["NAME".into(), "READY".into()],
            vec!["web".into(), "1/1".into()],
        ]);
        assert_eq!(t, "NAME   READY\nweb    1/1\n");
    }
}
