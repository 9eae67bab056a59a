//! Label selectors (`=`, `==`, `!=`, `in`, `notin`, `key`, `!key`) and field selectors
//! (`=`, `==`, `!=` on a dotted path of the object) as list and watch take them.

use serde_json::Value;

#[derive(Debug, PartialEq)]
enum Req {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    Absent(String),
}

#[derive(Debug, Default)]
pub struct Selector {
    labels: Vec<Req>,
    fields: Vec<Req>,
}

/// Splits on commas outside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let (mut out, mut cur, mut depth) = (Vec::new(), String::new(), 0);
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn set(v: &str) -> Result<Vec<String>, String> {
    let inner = v
        .trim()
        .strip_prefix('(')
        .and_then(|v| v.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set, found {v:?}"))?;
    Ok(inner.split(',').map(|x| x.trim().to_string()).collect())
}

fn parse(s: &str, set_based: bool) -> Result<Vec<Req>, String> {
    let mut out = Vec::new();
    for p in split_top(s) {
        let r = if let Some((k, v)) = p.split_once("!=") {
            Req::Ne(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = p.split_once("==") {
            Req::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = p.split_once('=') {
            Req::Eq(k.trim().into(), v.trim().into())
        } else if !set_based {
            return Err(format!("invalid selector: {p:?}"));
        } else if let Some((k, v)) = p.split_once(" notin ") {
            Req::NotIn(k.trim().into(), set(v)?)
        } else if let Some((k, v)) = p.split_once(" in ") {
            Req::In(k.trim().into(), set(v)?)
        } else if let Some(k) = p.strip_prefix('!') {
            Req::Absent(k.trim().into())
        } else {
            Req::Exists(p)
        };
        out.push(r);
    }
    Ok(out)
}

impl Selector {
    pub fn new(labels: Option<&str>, fields: Option<&str>) -> Result<Selector, String> {
        Ok(Selector {
            labels: labels
                .map(|l| parse(l, true))
                .transpose()?
                .unwrap_or_default(),
            fields: fields
                .map(|f| parse(f, false))
                .transpose()?
                .unwrap_or_default(),
        })
    }

    pub fn matches(&self, o: &Value) -> bool {
        let labels = &o["metadata"]["labels"];
        let label = |k: &str| labels.get(k).and_then(Value::as_str);
        let ok_labels = self.labels.iter().all(|r| match r {
            Req::Eq(k, v) => label(k) == Some(v.as_str()),
            Req::Ne(k, v) => label(k) != Some(v.as_str()),
            Req::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Req::NotIn(k, vs) => !label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Req::Exists(k) => label(k).is_some(),
            Req::Absent(k) => label(k).is_none(),
        });
        ok_labels
            && self.fields.iter().all(|r| match r {
                Req::Eq(k, v) => field(o, k) == *v,
                Req::Ne(k, v) => field(o, k) != *v,
                _ => true,
            })
    }
}

/// The value at a dotted path, as a field selector compares it (absent: "").
fn field(o: &Value, path: &str) -> String {
    let mut cur = o;
    for part in path.split('.') {
        cur = &cur[part];
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_and_fields() {
        let o = json!({"metadata": {"name": "a", "namespace": "default", "labels": {"app": "web", "tier": "fe"}}, "status": {"phase": "Running"}});
        let m = |l: Option<&str>, f: Option<&str>| Selector::new(l, f).unwrap().matches(&o);
        assert!(m(Some("app=web"), None));
        assert!(m(Some("app==web,tier"), None));
        assert!(!m(Some("app!=web"), None));
        assert!(m(Some("app in (web, db),!missing"), None));
        assert!(!m(Some("tier notin (fe)"), None));
        assert!(m(None, Some("metadata.name=a,status.phase=Running")));
        assert!(!m(None, Some("metadata.name!=a")));
        assert!(m(None, Some("spec.nodeName=")));
        assert!(Selector::new(None, Some("x in (a)")).is_err());
    }
}
