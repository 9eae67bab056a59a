//! Field sets as server-side apply tracks them (sigs.k8s.io/structured-merge-diff): the paths
//! of an object's fields, their FieldsV1 encoding in `managedFields`, the comparison of two
//! objects, and the two edits apply makes with them (merging an applied configuration into
//! the live object, removing the fields nobody manages any more).
//!
//! A path is a list of FieldsV1 elements: `f:<name>` a field of a map or struct,
//! `k:{"name":"web"}` an item of an associative list by its keys, `v:<json>` a member of a
//! set, `i:<n>` an item of a list without keys. Which lists are associative comes from the
//! merge keys strategic merge patch uses (`patch::merge_key`), with the keys the API
//! server's schema adds: `ports` are keyed by port and protocol (TCP when left out, the
//! schema's default). `finalizers` is a set; any other list is atomic (one leaf, as
//! `args`). Hand-written: no Rust crate implements structured-merge-diff.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::patch;

/// One field's path, as FieldsV1 elements.
pub type Path = Vec<String>;

/// A set of paths (owned fields). A member is a leaf (scalar, atomic list, empty map) or an
/// item of an associative list (`.` in FieldsV1, beside its own fields).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Set(pub BTreeSet<Path>);

/// How a list field's items are identified.
enum ListKind {
    /// By these fields; a missing one takes the default, if any.
    Keyed(Vec<(&'static str, Option<&'static str>)>),
    Set,
    Atomic,
}

fn list_kind(field: &str, service: bool) -> ListKind {
    match field {
        "finalizers" => ListKind::Set,
        "ports" if service => ListKind::Keyed(vec![("port", None), ("protocol", Some("TCP"))]),
        "ports" => ListKind::Keyed(vec![("containerPort", None), ("protocol", Some("TCP"))]),
        f => match patch::merge_key(f, service) {
            Some(k) => ListKind::Keyed(vec![(k, None)]),
            None => ListKind::Atomic,
        },
    }
}

/// The key of an item (`{"name":"web"}`), None when it lacks a key field.
fn item_key(
    item: &Value,
    keys: &[(&'static str, Option<&'static str>)],
) -> Option<Map<String, Value>> {
    let mut m = Map::new();
    for (k, default) in keys {
        let v = match (item.get(*k), default) {
            (Some(v), _) if !v.is_null() => v.clone(),
            (_, Some(d)) => Value::String((*d).into()),
            _ => return None,
        };
        m.insert((*k).into(), v);
    }
    Some(m)
}

/// The keys of every item, when all have them and no two are the same (else the list is
/// handled as atomic, as nothing better identifies its items).
fn keys_of(items: &[Value], keys: &[(&'static str, Option<&'static str>)]) -> Option<Vec<String>> {
    let mut out = Vec::with_capacity(items.len());
    for i in items {
        let k = format!("k:{}", Value::Object(item_key(i, keys)?));
        if out.contains(&k) {
            return None;
        }
        out.push(k);
    }
    Some(out)
}

fn set_members(items: &[Value]) -> Option<Vec<String>> {
    let out: Vec<String> = items
        .iter()
        .filter(|v| !v.is_object() && !v.is_array())
        .map(|v| format!("v:{v}"))
        .collect();
    (out.len() == items.len()).then_some(out)
}

/// The fields an object sets: each member's path, with its value for a leaf (None for an
/// associative list's item, which is a member without a value of its own).
pub fn fields(obj: &Value, service: bool) -> BTreeMap<Path, Option<Value>> {
    let mut out = BTreeMap::new();
    walk(obj, &mut Vec::new(), "", service, &mut out);
    out
}

fn walk(
    v: &Value,
    path: &mut Path,
    field: &str,
    service: bool,
    out: &mut BTreeMap<Path, Option<Value>>,
) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                if c.is_null() {
                    continue;
                }
                path.push(format!("f:{k}"));
                walk(c, path, k, service, out);
                path.pop();
            }
            return;
        }
        Value::Array(items) => {
            let elems = match list_kind(field, service) {
                ListKind::Keyed(keys) => keys_of(items, &keys).map(|k| (k, true)),
                ListKind::Set => set_members(items).map(|k| (k, false)),
                ListKind::Atomic => None,
            };
            if let Some((elems, keyed)) = elems {
                for (e, item) in elems.into_iter().zip(items) {
                    path.push(e);
                    if keyed {
                        out.insert(path.clone(), None);
                        if let Some(m) = item.as_object() {
                            for (k, c) in m.iter().filter(|(_, c)| !c.is_null()) {
                                path.push(format!("f:{k}"));
                                walk(c, path, k, service, out);
                                path.pop();
                            }
                        }
                    } else {
                        out.insert(path.clone(), Some(item.clone()));
                    }
                    path.pop();
                }
                return;
            }
        }
        _ => {}
    }
    if !path.is_empty() {
        out.insert(path.clone(), Some(v.clone()));
    }
}

/// The fields the API server leaves out of every field set: identity, server-kept metadata,
/// and the status (owned through the status subresource).
pub fn strip(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        for f in ["apiVersion", "kind", "status"] {
            m.remove(f);
        }
    }
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        for f in [
            "name",
            "namespace",
            "creationTimestamp",
            "deletionTimestamp",
            "selfLink",
            "uid",
            "generation",
            "managedFields",
            "resourceVersion",
        ] {
            m.remove(f);
        }
        // `metadata` itself is never a member (an apply naming only the object owns nothing).
        if m.is_empty() {
            o.as_object_mut().map(|r| r.remove("metadata"));
        }
    }
    o
}

/// What changed from one object to another, as field sets.
#[derive(Debug, Default)]
pub struct Changes {
    pub added: Set,
    pub modified: Set,
    pub removed: Set,
}

impl Changes {
    /// Added or modified: the fields a write set.
    pub fn set(&self) -> Set {
        self.added.union(&self.modified)
    }
}

pub fn compare(old: &Value, new: &Value, service: bool) -> Changes {
    let a = fields(&strip(old), service);
    let b = fields(&strip(new), service);
    let mut c = Changes::default();
    for (p, v) in &b {
        match a.get(p) {
            None => {
                c.added.0.insert(p.clone());
            }
            Some(o) if o != v => {
                c.modified.0.insert(p.clone());
            }
            _ => {}
        }
    }
    for p in a.keys().filter(|p| !b.contains_key(*p)) {
        c.removed.0.insert(p.clone());
    }
    c
}

impl Set {
    /// The members of an object's fields.
    pub fn of(obj: &Value, service: bool) -> Set {
        Set(fields(&strip(obj), service).into_keys().collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn union(&self, o: &Set) -> Set {
        Set(self.0.union(&o.0).cloned().collect())
    }

    pub fn intersection(&self, o: &Set) -> Set {
        Set(self.0.intersection(&o.0).cloned().collect())
    }

    pub fn difference(&self, o: &Set) -> Set {
        Set(self.0.difference(&o.0).cloned().collect())
    }

    /// Without the members of `o` nor anything under them (an owner of a removed list item
    /// loses the item's fields too).
    pub fn without_under(&self, o: &Set) -> Set {
        Set(self
            .0
            .iter()
            .filter(|p| !(0..=p.len()).any(|n| o.0.contains(&p[..n])))
            .cloned()
            .collect())
    }

    /// Whether a member lies strictly under `p`.
    pub fn has_under(&self, p: &Path) -> bool {
        self.0
            .range(p.clone()..)
            .take_while(|q| q.starts_with(p))
            .any(|q| q.len() > p.len())
    }

    /// FieldsV1: nested objects by element; a member with children also has `"."`.
    pub fn to_fields_v1(&self) -> Value {
        #[derive(Default)]
        struct Node {
            member: bool,
            kids: BTreeMap<String, Node>,
        }
        fn out(n: &Node) -> Value {
            let mut m: Map<String, Value> =
                n.kids.iter().map(|(k, c)| (k.clone(), out(c))).collect();
            if n.member && !m.is_empty() {
                m.insert(".".into(), Value::Object(Map::new()));
            }
            Value::Object(m)
        }
        let mut root = Node::default();
        for p in &self.0 {
            let mut n = &mut root;
            for e in p {
                n = n.kids.entry(e.clone()).or_default();
            }
            n.member = true;
        }
        out(&root)
    }

    pub fn from_fields_v1(v: &Value) -> Set {
        fn read(v: &Value, path: &mut Path, out: &mut BTreeSet<Path>) {
            let Some(m) = v.as_object() else { return };
            if (m.is_empty() || m.contains_key(".")) && !path.is_empty() {
                out.insert(path.clone());
            }
            for (k, c) in m.iter().filter(|(k, _)| *k != ".") {
                path.push(k.clone());
                read(c, path, out);
                path.pop();
            }
        }
        let mut out = BTreeSet::new();
        read(v, &mut Vec::new(), &mut out);
        Set(out)
    }
}

/// A path as structured-merge-diff prints it in conflicts: `.spec.replicas`,
/// `.spec.template.spec.containers[name="web"].image`, `.metadata.finalizers[="x"]`.
pub fn display(p: &Path) -> String {
    let mut s = String::new();
    for e in p {
        if let Some(f) = e.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = e.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .unwrap_or_default()
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = e.strip_prefix("v:") {
            s.push_str(&format!("[={v}]"));
        } else if let Some(i) = e.strip_prefix("i:") {
            s.push_str(&format!("[{i}]"));
        }
    }
    s
}

/// The index of the item of `items` a `k:`/`v:`/`i:` element names; `field` is the list's.
fn find_item(items: &[Value], elem: &str, field: &str, service: bool) -> Option<usize> {
    if let Some(k) = elem.strip_prefix("k:") {
        let want: Map<String, Value> = serde_json::from_str(k).ok()?;
        let ListKind::Keyed(keys) = list_kind(field, service) else {
            return None;
        };
        return items
            .iter()
            .position(|i| item_key(i, &keys).as_ref() == Some(&want));
    }
    if let Some(v) = elem.strip_prefix("v:") {
        let want: Value = serde_json::from_str(v).ok()?;
        return items.iter().position(|i| *i == want);
    }
    elem.strip_prefix("i:")?
        .parse()
        .ok()
        .filter(|i| *i < items.len())
}

/// Removes the field at `p` from `obj`, then the maps and lists that removal left empty
/// unless `keep` holds them (someone owns the empty container itself).
pub fn remove(obj: &mut Value, p: &Path, keep: &Set, service: bool) {
    fn go(v: &mut Value, p: &[String], field: &str, service: bool) -> bool {
        let Some((e, rest)) = p.split_first() else {
            return false;
        };
        match v {
            Value::Object(m) => {
                let Some(name) = e.strip_prefix("f:") else {
                    return false;
                };
                if rest.is_empty() {
                    return m.remove(name).is_some();
                }
                m.get_mut(name).is_some_and(|c| go(c, rest, name, service))
            }
            Value::Array(items) => {
                let Some(i) = find_item(items, e, field, service) else {
                    return false;
                };
                if rest.is_empty() {
                    items.remove(i);
                    return true;
                }
                go(&mut items[i], rest, field, service)
            }
            _ => false,
        }
    }
    if !go(obj, p, "", service) {
        return;
    }
    // Walk up: a container the removal emptied goes too.
    for n in (1..p.len()).rev() {
        let parent = &p[..n];
        if keep.0.contains(parent) {
            return;
        }
        let Some(v) = lookup(obj, parent, service) else {
            return;
        };
        let empty = match v {
            Value::Object(m) => m.is_empty(),
            Value::Array(a) => a.is_empty(),
            _ => false,
        };
        if !empty {
            return;
        }
        go(obj, parent, "", service);
    }
}

fn lookup<'a>(obj: &'a Value, p: &[String], service: bool) -> Option<&'a Value> {
    let mut v = obj;
    let mut field = "";
    for e in p {
        v = match v {
            Value::Object(m) => {
                let name = e.strip_prefix("f:")?;
                field = name;
                m.get(name)?
            }
            Value::Array(items) => &items[find_item(items, e, field, service)?],
            _ => return None,
        };
    }
    Some(v)
}

/// Merges an applied configuration into the live object: maps field by field, associative
/// lists item by item (new items appended), sets by member; anything else the config's.
/// A null in the config is left out, as if not given.
pub fn merge(live: &mut Value, config: &Value, service: bool) {
    merge_at(live, config, "", service)
}

fn merge_at(live: &mut Value, config: &Value, field: &str, service: bool) {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => {
            for (k, v) in c.iter().filter(|(_, v)| !v.is_null()) {
                match l.get_mut(k) {
                    Some(lv) if !lv.is_null() => merge_at(lv, v, k, service),
                    _ => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(c)) => {
            let kind = list_kind(field, service);
            let (lk, ck) = match &kind {
                ListKind::Keyed(keys) => (keys_of(l, keys), keys_of(c, keys)),
                ListKind::Set => (set_members(l), set_members(c)),
                ListKind::Atomic => (None, None),
            };
            let (Some(lk), Some(ck)) = (lk, ck) else {
                *l = c.clone();
                return;
            };
            for (k, item) in ck.iter().zip(c) {
                match lk.iter().position(|x| x == k) {
                    Some(i) => merge_at(&mut l[i], item, field, service),
                    None => l.push(item.clone()),
                }
            }
        }
        (l, c) => *l = c.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn p(s: &[&str]) -> Path {
        s.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn fields_v1_round_trip_with_associative_lists() {
        let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "image": "x:1", "args": ["a", "b"],
                 "ports": [{"containerPort": 80}], "resources": {}}]}}}});
        let s = Set::of(&dep, false);
        let v = s.to_fields_v1();
        assert_eq!(
            v,
            json!({"f:metadata": {"f:labels": {"f:app": {}}},
                   "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                       "k:{\"name\":\"web\"}": {".": {}, "f:name": {}, "f:image": {}, "f:args": {},
                           "f:resources": {},
                           "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":
                               {".": {}, "f:containerPort": {}}}}}}}}})
        );
        assert_eq!(Set::from_fields_v1(&v), s);
        let image = p(&[
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"web\"}",
            "f:image",
        ]);
        assert!(s.0.contains(&image));
        assert_eq!(
            display(&image),
            ".spec.template.spec.containers[name=\"web\"].image"
        );
        let port = p(&[
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"web\"}",
            "f:ports",
            "k:{\"containerPort\":80,\"protocol\":\"TCP\"}",
        ]);
        assert_eq!(
            display(&port),
            ".spec.template.spec.containers[name=\"web\"].ports[containerPort=80,protocol=\"TCP\"]"
        );
    }

    #[test]
    fn services_key_ports_by_port_and_finalizers_are_a_set() {
        let svc = json!({"metadata": {"finalizers": ["a", "b"]},
                         "spec": {"ports": [{"port": 80, "protocol": "UDP"}]}});
        let s = Set::of(&svc, true);
        assert!(s.0.contains(&p(&["f:metadata", "f:finalizers", "v:\"a\""])));
        assert!(s.0.contains(&p(&[
            "f:spec",
            "f:ports",
            "k:{\"port\":80,\"protocol\":\"UDP\"}",
            "f:port"
        ])));
        // Duplicate keys: the list is atomic.
        let dup = json!({"spec": {"ports": [{"port": 80}, {"port": 80}]}});
        assert!(Set::of(&dup, true).0.contains(&p(&["f:spec", "f:ports"])));
    }

    #[test]
    fn compare_and_merge_by_key() {
        let old = json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "a", "image": "x:1"}, {"name": "b", "image": "y:1"}]}}}});
        let mut new = old.clone();
        merge(
            &mut new,
            &json!({"spec": {"template": {"spec": {"containers": [
            {"name": "b", "image": "y:2"}, {"name": "c", "image": "z:1"}]}}}}),
            false,
        );
        let cs = new["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(cs.len(), 3);
        assert_eq!(cs[0]["image"], "x:1");
        assert_eq!(cs[1]["image"], "y:2");
        let c = compare(&old, &new, false);
        let k = |n: &str, f: &[&str]| {
            let mut v = p(&[
                "f:spec",
                "f:template",
                "f:spec",
                "f:containers",
                &format!("k:{{\"name\":\"{n}\"}}"),
            ]);
            v.extend(f.iter().map(|s| s.to_string()));
            v
        };
        assert_eq!(c.modified.0, [k("b", &["f:image"])].into_iter().collect());
        assert_eq!(
            c.added.0,
            [k("c", &[]), k("c", &["f:image"]), k("c", &["f:name"])]
                .into_iter()
                .collect()
        );
        assert!(c.removed.is_empty());
    }

    #[test]
    fn removal_takes_emptied_containers_along() {
        let mut o = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}});
        remove(
            &mut o,
            &p(&["f:metadata", "f:labels", "f:a"]),
            &Set::default(),
            false,
        );
        assert_eq!(o, json!({"spec": {"x": 1}}));
        let mut o =
            json!({"spec": {"containers": [{"name": "a", "env": [{"name": "V", "value": "1"}]}]}});
        let env = p(&[
            "f:spec",
            "f:containers",
            "k:{\"name\":\"a\"}",
            "f:env",
            "k:{\"name\":\"V\"}",
        ]);
        remove(&mut o, &env, &Set::default(), false);
        assert_eq!(o, json!({"spec": {"containers": [{"name": "a"}]}}));
        let s = Set([p(&["f:a"]), p(&["f:a", "f:b"]), p(&["f:c"])]
            .into_iter()
            .collect());
        assert_eq!(
            s.without_under(&Set([p(&["f:a"])].into_iter().collect()))
                .0
                .len(),
            1
        );
        assert!(s.has_under(&p(&["f:a"])));
        assert!(!s.has_under(&p(&["f:c"])));
    }
}
