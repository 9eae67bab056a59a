//! The building blocks of `kubectl describe` for the workload kinds: the text its describers
//! write (tab-separated cells) and the elastic tabstops of Go's `text/tabwriter` that
//! align it (minwidth 0, padding 2, as kubectl's `tabbedString`).

use serde_json::Value;

/// Go's `text/tabwriter` as kubectl configures it. Hand-rolled: no crate offline, and the
/// rule is short — a tab-terminated cell belongs to a column block made of the
/// consecutive lines that have a cell in that column; the block is as wide as its widest
/// cell plus 2. The last cell of a line (not tab-terminated) is not aligned.
pub fn tabbed(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .map(|l| l.split('\t').collect())
        .collect();
    let mut widths: Vec<Vec<usize>> = lines.iter().map(|l| vec![0; l.len()]).collect();
    blocks(&lines, &mut widths, 0, 0, lines.len());
    let mut out = String::new();
    for (line, w) in lines.iter().zip(&widths) {
        let last = line.len() - 1;
        for (i, cell) in line.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<0$}", w[i]));
            }
        }
        out.push('\n');
    }
    out
}

fn blocks(lines: &[Vec<&str>], widths: &mut [Vec<usize>], col: usize, from: usize, to: usize) {
    let mut i = from;
    while i < to {
        if col + 1 >= lines[i].len() {
            i += 1;
            continue;
        }
        let mut j = i;
        let mut width = 0;
        while j < to && col + 1 < lines[j].len() {
            width = width.max(lines[j][col].chars().count() + 2);
            j += 1;
        }
        for w in &mut widths[i..j] {
            w[col] = width;
        }
        blocks(lines, widths, col + 1, i, j);
        i = j;
    }
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// `Title:\tk=v` and one `\tk=v` line per further label, sorted (printLabelsMultiline).
pub fn labels(out: &mut String, indent: &str, title: &str, m: &Value) {
    out.push_str(&format!("{indent}{title}:\t"));
    let items: Vec<(&String, &Value)> = m.as_object().into_iter().flatten().collect();
    if items.is_empty() {
        out.push_str("<none>\n");
    }
    for (i, (k, v)) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&format!("{indent}\t"));
        }
        out.push_str(&format!("{k}={}\n", s(v)));
    }
}

/// Annotations as kubectl prints them: `k: v`, without the last-applied configuration.
pub fn annotations(out: &mut String, indent: &str, title: &str, m: &Value) {
    out.push_str(&format!("{indent}{title}:\t"));
    let items: Vec<(&String, &Value)> = m
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "kubectl.kubernetes.io/last-applied-configuration")
        .collect();
    if items.is_empty() {
        out.push_str("<none>\n");
    }
    for (i, (k, v)) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(&format!("{indent}\t"));
        }
        let v = s(v).trim_end_matches('\n');
        if v.len() + k.len() + 2 > 140 || v.contains('\n') {
            out.push_str(&format!("{k}:\n"));
            for l in v.split('\n') {
                let l: String = l.chars().take(138).collect();
                out.push_str(&format!("{indent}\t  {l}\n"));
            }
        } else {
            out.push_str(&format!("{k}: {v}\n"));
        }
    }
}

/// A label selector as `metav1.LabelSelectorAsSelector` prints it (sorted, `k=v,k in (a,b)`).
pub fn selector(sel: &Value) -> String {
    let mut parts: Vec<(String, String)> = sel["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), format!("{k}={}", s(v))))
        .collect();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = s(&e["key"]).to_string();
        let mut vals: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .map(s)
            .collect();
        vals.sort_unstable();
        let text = match s(&e["operator"]) {
            "In" => format!("{key} in ({})", vals.join(",")),
            "NotIn" => format!("{key} notin ({})", vals.join(",")),
            "Exists" => key.clone(),
            _ => format!("!{key}"),
        };
        parts.push((key, text));
    }
    parts.sort();
    if parts.is_empty() {
        return "<none>".into();
    }
    parts
        .into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

fn ports(c: &Value, field: &str) -> String {
    c["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| field == "containerPort" || p[field].as_i64().unwrap_or(0) != 0)
        .map(|p| {
            format!(
                "{}/{}",
                p[field].as_i64().unwrap_or(0),
                p["protocol"].as_str().unwrap_or("TCP")
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn or_none(v: String) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v
    }
}

fn container(out: &mut String, c: &Value) {
    out.push_str(&format!("   {}:\n", s(&c["name"])));
    out.push_str(&format!("    Image:\t{}\n", s(&c["image"])));
    for (field, one, many) in [
        ("containerPort", "Port", "Ports"),
        ("hostPort", "Host Port", "Host Ports"),
    ] {
        let p = ports(c, field);
        let title = if p.contains(',') { many } else { one };
        out.push_str(&format!("    {title}:\t{}\n", or_none(p)));
    }
    for (field, title) in [("command", "Command"), ("args", "Args")] {
        let Some(a) = c[field].as_array().filter(|a| !a.is_empty()) else {
            continue;
        };
        out.push_str(&format!("    {title}:\n"));
        for l in a.iter().flat_map(|x| s(x).split('\n')) {
            out.push_str(&format!("      {l}\n"));
        }
    }
    for (field, title) in [("limits", "Limits"), ("requests", "Requests")] {
        let Some(m) = c["resources"][field].as_object().filter(|m| !m.is_empty()) else {
            continue;
        };
        out.push_str(&format!("    {title}:\n"));
        for (k, v) in m {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            out.push_str(&format!("      {k}:\t{v}\n"));
        }
    }
    for (k, label) in [
        ("livenessProbe", "Liveness"),
        ("readinessProbe", "Readiness"),
        ("startupProbe", "Startup"),
    ] {
        if c[k].is_object() {
            out.push_str(&format!(
                "    {label}:\t{}\n",
                crate::print::probe_line(&c[k])
            ));
        }
    }
    let env = c["env"].as_array().cloned().unwrap_or_default();
    out.push_str(&format!(
        "    Environment:{}\n",
        if env.is_empty() { "\t<none>" } else { "" }
    ));
    for e in &env {
        let name = s(&e["name"]);
        let from = &e["valueFrom"];
        if let Some(f) = from["fieldRef"].as_object() {
            let f = Value::Object(f.clone());
            out.push_str(&format!(
                "      {name}:\t ({}:{})\n",
                f["apiVersion"].as_str().unwrap_or("v1"),
                s(&f["fieldPath"])
            ));
        } else if from["secretKeyRef"].is_object() || from["configMapKeyRef"].is_object() {
            let (r, what) = if from["secretKeyRef"].is_object() {
                (&from["secretKeyRef"], "in secret")
            } else {
                (&from["configMapKeyRef"], "of config map")
            };
            out.push_str(&format!(
                "      {name}:\t<set to the key '{}' {what} '{}'>\tOptional: {}\n",
                s(&r["key"]),
                s(&r["name"]),
                r["optional"] == true
            ));
        } else {
            for (i, l) in s(&e["value"]).split('\n').enumerate() {
                if i == 0 {
                    out.push_str(&format!("      {name}:\t{l}\n"));
                } else {
                    out.push_str(&format!("      \t{l}\n"));
                }
            }
        }
    }
    let mut mounts = c["volumeMounts"].as_array().cloned().unwrap_or_default();
    mounts.sort_by(|a, b| s(&a["mountPath"]).cmp(s(&b["mountPath"])));
    out.push_str(&format!(
        "    Mounts:{}\n",
        if mounts.is_empty() { "\t<none>" } else { "" }
    ));
    for m in &mounts {
        let mut flags = vec![if m["readOnly"] == true { "ro" } else { "rw" }.to_string()];
        if !s(&m["subPath"]).is_empty() {
            flags.push(format!("path={:?}", s(&m["subPath"])));
        }
        out.push_str(&format!(
            "      {} from {} ({})\n",
            s(&m["mountPath"]),
            s(&m["name"]),
            flags.join(",")
        ));
    }
}

fn volume(out: &mut String, v: &Value) {
    out.push_str(&format!("   {}:\n", s(&v["name"])));
    if let Some(c) = v["persistentVolumeClaim"].as_object() {
        out.push_str(&format!(
            "    Type:\tPersistentVolumeClaim (a reference to a PersistentVolumeClaim in the same namespace)\n    ClaimName:\t{}\n    ReadOnly:\t{}\n",
            c.get("claimName").and_then(Value::as_str).unwrap_or(""),
            c.get("readOnly") == Some(&Value::Bool(true))
        ));
    } else if let Some(e) = v["emptyDir"].as_object() {
        out.push_str(&format!(
            "    Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)\n    Medium:\t{}\n    SizeLimit:\t{}\n",
            e.get("medium").and_then(Value::as_str).unwrap_or(""),
            e.get("sizeLimit").and_then(Value::as_str).unwrap_or("<unset>")
        ));
    } else if let Some(h) = v["hostPath"].as_object() {
        out.push_str(&format!(
            "    Type:\tHostPath (bare host directory volume)\n    Path:\t{}\n    HostPathType:\t{}\n",
            h.get("path").and_then(Value::as_str).unwrap_or(""),
            h.get("type").and_then(Value::as_str).unwrap_or("")
        ));
    } else if let Some(c) = v["configMap"].as_object() {
        out.push_str(&format!(
            "    Type:\tConfigMap (a volume populated by a ConfigMap)\n    Name:\t{}\n    Optional:\t{}\n",
            c.get("name").and_then(Value::as_str).unwrap_or(""),
            c.get("optional") == Some(&Value::Bool(true))
        ));
    } else if let Some(c) = v["secret"].as_object() {
        out.push_str(&format!(
            "    Type:\tSecret (a volume populated by a Secret)\n    SecretName:\t{}\n    Optional:\t{}\n",
            c.get("secretName").and_then(Value::as_str).unwrap_or(""),
            c.get("optional") == Some(&Value::Bool(true))
        ));
    }
}

/// `Pod Template:` (DescribePodTemplate) of kubectl 1.30 and later.
pub fn pod_template(out: &mut String, t: &Value) {
    out.push_str("Pod Template:\n");
    labels(out, "  ", "Labels", &t["metadata"]["labels"]);
    if t["metadata"]["annotations"]
        .as_object()
        .is_some_and(|m| !m.is_empty())
    {
        annotations(out, "  ", "Annotations", &t["metadata"]["annotations"]);
    }
    let spec = &t["spec"];
    if !s(&spec["serviceAccountName"]).is_empty() {
        out.push_str(&format!(
            "  Service Account:\t{}\n",
            s(&spec["serviceAccountName"])
        ));
    }
    for (field, title) in [
        ("initContainers", "Init Containers"),
        ("containers", "Containers"),
    ] {
        let cs = spec[field].as_array().cloned().unwrap_or_default();
        if cs.is_empty() {
            if field == "containers" {
                out.push_str("  Containers: <none>\n");
            }
            continue;
        }
        out.push_str(&format!("  {title}:\n"));
        for c in &cs {
            container(out, c);
        }
    }
    let vols = spec["volumes"].as_array().cloned().unwrap_or_default();
    if vols.is_empty() {
        out.push_str("  Volumes:\t<none>\n");
    } else {
        out.push_str("  Volumes:\n");
        for v in &vols {
            volume(out, v);
        }
    }
    labels(out, "  ", "Node-Selectors", &spec["nodeSelector"]);
    out.push_str("  Tolerations:\t");
    let tols = spec["tolerations"].as_array().cloned().unwrap_or_default();
    if tols.is_empty() {
        out.push_str("<none>\n");
    }
    for (i, t) in tols.iter().enumerate() {
        if i > 0 {
            out.push_str("  \t");
        }
        let mut line = s(&t["key"]).to_string();
        if !s(&t["value"]).is_empty() {
            line.push_str(&format!("={}", s(&t["value"])));
        }
        if !s(&t["effect"]).is_empty() {
            line.push_str(&format!(":{}", s(&t["effect"])));
        }
        if s(&t["operator"]) == "Exists" && s(&t["value"]).is_empty() {
            line.push_str(" op=Exists");
        }
        if let Some(n) = t["tolerationSeconds"].as_i64() {
            line.push_str(&format!(" for {n}s"));
        }
        out.push_str(&format!("{line}\n"));
    }
}

/// The Events section: `Events:\t<none>` inside the tabbed text when there are none,
/// else kubectl's table (its own block: kubectl flushes the writer before it).
pub fn events(out: &mut String, events: &Value) -> Option<String> {
    let mut evs = events["items"].as_array().cloned().unwrap_or_default();
    // kubectl sorts them by their last time (RFC 3339 in UTC: text order is time order).
    evs.sort_by(|a, b| s(&a["lastTimestamp"]).cmp(s(&b["lastTimestamp"])));
    if evs.is_empty() {
        out.push_str("Events:\t<none>\n");
        return None;
    }
    let mut t = String::from(
        "Events:\n  Type\tReason\tAge\tFrom\tMessage\n  ----\t------\t----\t----\t-------\n",
    );
    for e in &evs {
        let count = e["count"].as_i64().unwrap_or(1);
        let age = if count > 1 {
            format!(
                "{} (x{count} over {})",
                crate::print::age(&e["lastTimestamp"]),
                crate::print::age(&e["firstTimestamp"])
            )
        } else {
            crate::print::age(&e["lastTimestamp"])
        };
        t.push_str(&format!(
            "  {}\t{}\t{age}\t{}\t{}\n",
            s(&e["type"]),
            s(&e["reason"]),
            s(&e["source"]["component"]),
            s(&e["message"]).trim()
        ));
    }
    Some(tabbed(&t))
}

/// The tabbed text, aligned, and the events table after it.
pub fn finish(mut text: String, evs: &Value) -> String {
    let table = events(&mut text, evs);
    let mut out = tabbed(&text);
    if let Some(t) = table {
        out.push_str(&t);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn aligns_like_go_tabwriter() {
        let t = tabbed("Name:\tdb\nCreationTimestamp:\tnow\nPod Template:\n  Labels:\tapp=db\n\tx=y\n  Containers:\n   c:\n    Image:\tbusybox\n    Host Port:\t<none>\n");
        assert_eq!(
            t,
            "Name:               db\nCreationTimestamp:  now\nPod Template:\n  Labels:  app=db\n           x=y\n  Containers:\n   c:\n    Image:      busybox\n    Host Port:  <none>\n"
        );
        assert_eq!(
            selector(&json!({"matchLabels": {"b": "2", "a": "1"},
                "matchExpressions": [{"key": "c", "operator": "In", "values": ["y", "x"]}]})),
            "a=1,b=2,c in (x,y)"
        );
    }
}
