//! `get configmaps|secrets` and `describe configmap|secret`: what kubectl prints. A Secret's
//! values never reach the terminal here: `get` shows counts, `describe` byte counts (its
//! `-o json|yaml` is the API's, base64 as kubectl shows it).

use base64::Engine;
use serde_json::Value;

use crate::print::{self, age};

/// The API group and plural of a resource name kubectl accepts.
pub fn resource(r: &str) -> Option<(&'static str, &'static str)> {
    Some(match r {
        "configmaps" | "configmap" | "cm" => ("/api/v1", "configmaps"),
        "secrets" | "secret" => ("/api/v1", "secrets"),
        _ => return None,
    })
}

pub fn singular(plural: &str) -> Option<&'static str> {
    Some(match plural {
        "configmaps" => "configmap",
        "secrets" => "secret",
        _ => return None,
    })
}

fn count(v: &Value) -> usize {
    v.as_object().map_or(0, |m| m.len())
}

/// kubectl's columns: `NAME DATA AGE` for ConfigMaps (data and binaryData keys counted),
/// `NAME TYPE DATA AGE` for Secrets; `-o wide` adds none.
pub fn table(plural: &str, items: &[Value], namespaces: bool) -> Option<String> {
    let header: &[&str] = match plural {
        "configmaps" => &["NAME", "DATA", "AGE"],
        "secrets" => &["NAME", "TYPE", "DATA", "AGE"],
        _ => return None,
    };
    let mut h: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    if namespaces {
        h.insert(0, "NAMESPACE".into());
    }
    let mut rows = vec![h];
    for it in items {
        let md = &it["metadata"];
        let name = md["name"].as_str().unwrap_or("").to_string();
        let created = age(&md["creationTimestamp"]);
        let mut row = if plural == "configmaps" {
            let n = count(&it["data"]) + count(&it["binaryData"]);
            vec![name, n.to_string(), created]
        } else {
            let t = it["type"].as_str().unwrap_or("Opaque").to_string();
            vec![name, t, count(&it["data"]).to_string(), created]
        };
        if namespaces {
            row.insert(0, md["namespace"].as_str().unwrap_or("").to_string());
        }
        rows.push(row);
    }
    Some(print::table(&rows))
}

/// Go's tabwriter as kubectl's describers set it up (padding 2): the cells before a tab,
/// in a run of lines that have one, are padded to the widest of the run.
fn tabbed(text: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].contains('\t') {
            out.push_str(lines[i]);
            i += 1;
            continue;
        }
        let end = (i..lines.len())
            .find(|&j| !lines[j].contains('\t'))
            .unwrap_or(lines.len());
        let width = lines[i..end]
            .iter()
            .filter_map(|l| l.split_once('\t'))
            .map(|(c, _)| c.chars().count())
            .max()
            .unwrap_or(0)
            + 2;
        for l in &lines[i..end] {
            if let Some((c, rest)) = l.split_once('\t') {
                out.push_str(&format!("{c:<width$}{rest}"));
            }
        }
        i = end;
    }
    out
}

/// kubectl's `printLabelsMultiline` / `printAnnotationsMultiline` (sorted; the
/// last-applied-configuration annotation left out).
fn multiline(out: &mut String, title: &str, v: &Value, sep: &str) {
    let m: Vec<(&String, &Value)> = v
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "kubectl.kubernetes.io/last-applied-configuration")
        .collect();
    if m.is_empty() {
        out.push_str(&format!("{title}:\t<none>\n"));
        return;
    }
    for (i, (k, val)) in m.iter().enumerate() {
        let lead = if i == 0 {
            format!("{title}:")
        } else {
            String::new()
        };
        out.push_str(&format!("{lead}\t{k}{sep}{}\n", val.as_str().unwrap_or("")));
    }
}

fn head(out: &mut String, o: &Value) {
    let md = &o["metadata"];
    out.push_str(&format!("Name:\t{}\n", md["name"].as_str().unwrap_or("")));
    out.push_str(&format!(
        "Namespace:\t{}\n",
        md["namespace"].as_str().unwrap_or("")
    ));
    multiline(out, "Labels", &md["labels"], "=");
    multiline(out, "Annotations", &md["annotations"], ": ");
}

fn decoded_len(v: &Value) -> usize {
    let s = v.as_str().unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_or(0, |b| b.len())
}

/// `kubectl describe configmap`: the text data in full, binary data as byte counts, then
/// the events.
pub fn describe_configmap(o: &Value, events: &Value) -> String {
    let mut out = String::new();
    head(&mut out, o);
    out.push_str("\nData\n====\n");
    for (k, v) in o["data"].as_object().into_iter().flatten() {
        out.push_str(&format!("{k}:\n----\n{}\n\n", v.as_str().unwrap_or("")));
    }
    out.push_str("\nBinaryData\n====\n");
    for (k, v) in o["binaryData"].as_object().into_iter().flatten() {
        out.push_str(&format!("{k}: {} bytes\n", decoded_len(v)));
    }
    out.push('\n');
    if events["items"].as_array().is_none_or(|a| a.is_empty()) {
        out.push_str("Events:\t<none>\n");
        tabbed(&out)
    } else {
        tabbed(&out) + &print::events_table(events)
    }
}

/// `kubectl describe secret`: the type and each key's size in bytes, never a value.
pub fn describe_secret(o: &Value) -> String {
    let mut out = String::new();
    head(&mut out, o);
    out.push_str(&format!(
        "\nType:\t{}\n",
        o["type"].as_str().unwrap_or("Opaque")
    ));
    out.push_str("\nData\n====\n");
    for (k, v) in o["data"].as_object().into_iter().flatten() {
        out.push_str(&format!("{k}:\t{} bytes\n", decoded_len(v)));
    }
    tabbed(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn describes_as_kubectl() {
        let cm = json!({"metadata": {"name": "settings", "namespace": "default", "labels": {"app": "web", "tier": "x"}},
            "data": {"greeting": "hello", "app.conf": "a=1\n"}, "binaryData": {"blob": "AAEC/w=="}});
        assert_eq!(
            describe_configmap(&cm, &json!({"items": []})),
            "Name:         settings\nNamespace:    default\nLabels:       app=web\n              tier=x\nAnnotations:  <none>\n\nData\n====\napp.conf:\n----\na=1\n\n\ngreeting:\n----\nhello\n\n\nBinaryData\n====\nblob: 4 bytes\n\nEvents:  <none>\n"
        );
        let s = json!({"metadata": {"name": "creds", "namespace": "default"}, "type": "Opaque",
            "data": {"pw": "czNjcjN0", "username": "YWRtaW4="}});
        assert_eq!(
            describe_secret(&s),
            "Name:         creds\nNamespace:    default\nLabels:       <none>\nAnnotations:  <none>\n\nType:  Opaque\n\nData\n====\npw:        6 bytes\nusername:  5 bytes\n"
        );
    }

    #[test]
    fn tables() {
        let items = [
            json!({"metadata": {"name": "creds", "namespace": "ns"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}}),
        ];
        let t = table("secrets", &items, true).unwrap();
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "NAMESPACE   NAME    TYPE                DATA   AGE"
        );
        assert!(
            lines[1].starts_with("ns          creds   kubernetes.io/tls   2      "),
            "{t}"
        );
        let cm =
            [json!({"metadata": {"name": "c"}, "data": {"a": "x"}, "binaryData": {"b": "AA=="}})];
        let t = table("configmaps", &cm, false).unwrap();
        assert!(t.starts_with("NAME   DATA   AGE\nc      2      "), "{t}");
    }
}
