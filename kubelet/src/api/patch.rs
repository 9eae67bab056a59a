//! The three patch kinds kubectl sends: JSON merge patch (RFC 7386), JSON patch (RFC 6902)
//! and strategic merge patch with the built-in types' merge keys (`containers` by name,
//! container `ports` by containerPort, a Service's by port, ...) and its directives
//! (`$patch: replace|delete`, `$retainKeys`, `$deleteFromPrimitiveList/`,
//! `$setElementOrder/`).

use serde_json::{Map, Value};

/// RFC 7386.
pub fn merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

fn pointer_parts(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}"))?;
    Ok(rest
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent<'a>(doc: &'a mut Value, parts: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for p in &parts[..parts.len().saturating_sub(1)] {
        cur = match cur {
            Value::Object(m) => m.get_mut(p),
            Value::Array(a) => p.parse::<usize>().ok().and_then(move |i| a.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("doc is missing path: /{}", parts.join("/")))?;
    }
    Ok(cur)
}

fn add(doc: &mut Value, path: &str, v: Value) -> Result<(), String> {
    let parts = pointer_parts(path)?;
    let Some(last) = parts.last().cloned() else {
        *doc = v;
        return Ok(());
    };
    match parent(doc, &parts)? {
        Value::Object(m) => {
            m.insert(last, v);
        }
        Value::Array(a) => {
            let i = if last == "-" {
                a.len()
            } else {
                last.parse::<usize>()
                    .map_err(|_| format!("invalid index {last:?}"))?
            };
            if i > a.len() {
                return Err(format!("index {i} out of bounds"));
            }
            a.insert(i, v);
        }
        _ => return Err(format!("doc is missing path: {path}")),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let parts = pointer_parts(path)?;
    let last = parts
        .last()
        .cloned()
        .ok_or("cannot remove the whole document")?;
    let missing = || format!("doc is missing path: {path}");
    match parent(doc, &parts)? {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            (i < a.len()).then(|| a.remove(i)).ok_or_else(missing)
        }
        _ => Err(missing()),
    }
}

/// RFC 6902.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch is an array of operations")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("an operation needs a path")?;
        match op["op"].as_str().unwrap_or("") {
            "add" => add(doc, path, op["value"].clone())?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                remove(doc, path)?;
                add(doc, path, op["value"].clone())?;
            }
            "test" => {
                if doc.pointer(path) != Some(&op["value"]) {
                    return Err(format!("testing value {path} failed"));
                }
            }
            "move" => {
                let from = op["from"].as_str().ok_or("move needs from")?;
                let v = remove(doc, from)?;
                add(doc, path, v)?;
            }
            "copy" => {
                let from = op["from"].as_str().ok_or("copy needs from")?;
                let v = doc
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| format!("doc is missing path: {from}"))?;
                add(doc, path, v)?;
            }
            other => return Err(format!("unexpected kind of operation {other:?}")),
        }
    }
    Ok(())
}

/// The merge key of a list field of the built-in types (None: the list is replaced).
pub(super) fn merge_key(field: &str, service: bool) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" if service => "port",
        "ports" => "containerPort",
        "conditions" => "type",
        "hostAliases" => "ip",
        "topologySpreadConstraints" => "topologyKey",
        "ownerReferences" => "uid",
        _ => return None,
    })
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        v => v.clone(),
    }
}

/// Strategic merge patch; `service`: the object is a Service (its `ports` merge by port).
pub fn strategic(target: &mut Value, patch: &Value, service: bool) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$patch" || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(a)), Some(del)) = (t.get_mut(field), v.as_array()) {
                a.retain(|x| !del.contains(x));
            }
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        if v.get("$patch").and_then(Value::as_str) == Some("delete") {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), v, merge_key(k, service)) {
            (Some(Value::Array(cur)), Value::Array(items), Some(key)) => {
                for item in items {
                    let id = &item[key];
                    let pos = cur.iter().position(|c| &c[key] == id);
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    match (pos, delete) {
                        (Some(i), true) => {
                            cur.remove(i);
                        }
                        (None, true) => {}
                        (Some(i), false) => strategic(&mut cur[i], item, service),
                        (None, false) => cur.push(strip_directives(item)),
                    }
                }
                if let Some(order) = p
                    .get(&format!("$setElementOrder/{k}"))
                    .and_then(Value::as_array)
                {
                    let rank = |c: &Value| {
                        order
                            .iter()
                            .position(|o| o[key] == c[key])
                            .unwrap_or(usize::MAX)
                    };
                    cur.sort_by_key(rank);
                }
            }
            (Some(cur @ Value::Object(_)), Value::Object(_), _) => strategic(cur, v, service),
            _ => {
                t.insert(k.clone(), strip_directives(v));
            }
        }
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        t.retain(|k, _| keep.iter().any(|x| x == k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_three_kinds() {
        let mut d = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge(&mut d, &json!({"b": {"c": null, "e": 4}}));
        assert_eq!(d, json!({"a": 1, "b": {"d": 3, "e": 4}}));

        let mut d = json!({"l": [1, 2], "m": {"x": 1}});
        json_patch(
            &mut d,
            &json!([{"op": "add", "path": "/l/-", "value": 3}, {"op": "replace", "path": "/m/x", "value": 2},
                    {"op": "remove", "path": "/l/0"}, {"op": "test", "path": "/m/x", "value": 2}]),
        )
        .unwrap();
        assert_eq!(d, json!({"l": [2, 3], "m": {"x": 2}}));
        assert!(json_patch(&mut d, &json!([{"op": "remove", "path": "/nope"}])).is_err());

        let mut dep = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "a", "image": "x:1", "env": [{"name": "V", "value": "1"}]},
            {"name": "b", "image": "y:1"}]}}}});
        strategic(
            &mut dep,
            &json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                "containers": [{"name": "a", "image": "x:2", "env": [{"name": "W", "value": "2"}]},
                               {"name": "b", "$patch": "delete"}]}}}}),
            false,
        );
        let cs = &dep["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 1);
        assert_eq!(cs[0]["image"], "x:2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
    }
}
