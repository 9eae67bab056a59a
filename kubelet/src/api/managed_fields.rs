//! `metadata.managedFields` as the API server keeps them: one entry per manager (name,
//! operation Apply or Update, apiVersion, subresource) with the fields it owns (FieldsV1),
//! and the two ways a write moves ownership (sigs.k8s.io/structured-merge-diff's Updater):
//!
//! - an Update (create, replace, merge/JSON/strategic patch, a scale) gives its manager the
//!   fields it added or changed, taking them from the others without conflict, and drops the
//!   fields it removed from everyone;
//! - an Apply makes its manager own exactly the fields of its configuration: a field it set
//!   to a value another manager's differs from is a conflict (unless forced, which takes the
//!   field from the others); fields it applied before and no longer does are removed from
//!   the object unless someone else owns them. Same value: shared ownership.
//!
//! Left out: the cap of ten Update entries (the API server folds the oldest into
//! `ancient-changes`), conversion between API versions (each kind has one here), unions.

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};

use super::fieldset::{self, Path, Set};

pub const APPLY: &str = "Apply";
pub const UPDATE: &str = "Update";
/// kubectl's own server-side apply manager: the one that migrates from client-side apply.
const KUBECTL: &str = "kubectl";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub set: Set,
}

impl Entry {
    /// The same manager: appliers are one whatever their apiVersion, updaters one per
    /// apiVersion (the API server's manager identifier).
    fn same(&self, o: &Entry) -> bool {
        self.manager == o.manager
            && self.operation == o.operation
            && self.subresource == o.subresource
            && (self.operation == APPLY || self.api_version == o.api_version)
    }

    /// As conflicts name it: `"kubectl-scale" with subresource "scale" using apps/v1`.
    pub fn describe(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == UPDATE {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The entries of an object (the ones it can read; a malformed entry is dropped).
pub fn decode(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some(Entry {
                manager: e["manager"].as_str().unwrap_or("").into(),
                operation: e["operation"]
                    .as_str()
                    .filter(|o| [APPLY, UPDATE].contains(o))?
                    .into(),
                api_version: e["apiVersion"].as_str().unwrap_or("").into(),
                time: e["time"].as_str().map(str::to_string),
                subresource: e["subresource"].as_str().unwrap_or("").into(),
                set: Set::from_fields_v1(&e["fieldsV1"]),
            })
        })
        .collect()
}

/// Writes the entries into the object, in the API server's order (Apply before Update,
/// then by time, manager, apiVersion, subresource); empty sets are left out.
pub fn encode(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        (
            &a.operation,
            &a.time,
            &a.manager,
            &a.api_version,
            &a.subresource,
        )
            .cmp(&(
                &b.operation,
                &b.time,
                &b.manager,
                &b.api_version,
                &b.subresource,
            ))
    });
    let list: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = json!({"manager": e.manager, "operation": e.operation,
                               "apiVersion": e.api_version, "fieldsType": "FieldsV1",
                               "fieldsV1": e.set.to_fields_v1()});
            if let Some(t) = &e.time {
                v["time"] = t.clone().into();
            }
            if !e.subresource.is_empty() {
                v["subresource"] = e.subresource.clone().into();
            }
            v
        })
        .collect();
    if let Some(m) = obj["metadata"].as_object_mut() {
        if list.is_empty() {
            m.remove("managedFields");
        } else {
            m.insert("managedFields".into(), list.into());
        }
    }
}

/// The entries a write starts from: the ones the new object carries when it brings a
/// non-empty list (a client may set them), none when it brings an empty list (the API
/// server's reset), else the live object's.
fn starting(old: Option<&Value>, new: &Value) -> Vec<Entry> {
    match new["metadata"]["managedFields"].as_array() {
        Some(a) if !a.is_empty() => decode(new),
        Some(_) => Vec::new(),
        None => old.map(decode).unwrap_or_default(),
    }
}

/// Records an Update by `manager` turning `old` (None on create) into `new`.
pub fn update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: &str,
    service: bool,
) {
    let mut entries = starting(old, new);
    let changes = fieldset::compare(old.unwrap_or(&json!({})), new, service);
    let me = Entry {
        manager: manager.into(),
        operation: UPDATE.into(),
        api_version: api_version.into(),
        time: None,
        subresource: subresource.into(),
        set: Set::default(),
    };
    let taken = changes.set();
    for e in entries.iter_mut().filter(|e| !e.same(&me)) {
        e.set = e.set.difference(&taken).without_under(&changes.removed);
    }
    if !taken.is_empty() {
        match entries.iter_mut().find(|e| e.same(&me)) {
            Some(e) => {
                e.set = e.set.without_under(&changes.removed).union(&taken);
                e.time = Some(now());
            }
            None => entries.push(Entry {
                set: taken,
                time: Some(now()),
                ..me
            }),
        }
    } else if let Some(e) = entries.iter_mut().find(|e| e.same(&me)) {
        e.set = e.set.without_under(&changes.removed);
    }
    encode(new, entries);
}

/// One field another manager owns with a different value.
#[derive(Debug, PartialEq)]
pub struct Conflict {
    pub owner: String,
    pub path: Path,
}

/// The API server's message for a rejected apply.
pub fn conflict_message(cs: &[Conflict]) -> String {
    if let [c] = cs {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            c.owner,
            fieldset::display(&c.path)
        );
    }
    let mut owners: Vec<&String> = cs.iter().map(|c| &c.owner).collect();
    owners.sort();
    owners.dedup();
    let mut lines = Vec::new();
    for o in owners {
        lines.push(format!("conflicts with {o}:"));
        for c in cs.iter().filter(|c| &c.owner == o) {
            lines.push(format!("- {}", fieldset::display(&c.path)));
        }
    }
    format!(
        "Apply failed with {} conflicts: {}",
        cs.len(),
        lines.join("\n")
    )
}

/// What an apply asks.
pub struct Applied<'a> {
    pub config: &'a Value,
    pub manager: &'a str,
    pub api_version: &'a str,
    pub force: bool,
    pub service: bool,
}

/// Applies `a.config` to `live` (None: the object is new, `a.config` its whole content).
/// The object with its managedFields, or the conflicts.
pub fn apply(live: Option<&Value>, a: &Applied) -> Result<Value, Vec<Conflict>> {
    let base = live.cloned().unwrap_or_else(|| json!({}));
    let mut entries = decode(&base);
    if live.is_some() && entries.is_empty() {
        // An object from before any managedFields: its fields are someone's (the API server's
        // placeholder manager), so an apply does not silently take them.
        entries.push(Entry {
            manager: "before-first-apply".into(),
            operation: UPDATE.into(),
            api_version: a.api_version.into(),
            time: Some(now()),
            subresource: String::new(),
            set: Set::of(&base, a.service),
        });
    }
    match apply_once(&base, &entries, a, a.force) {
        Err(conflicts) if a.manager == KUBECTL && !a.force => {
            // kubectl's migration from client-side apply: conflicts on fields of the
            // last-applied configuration are taken over.
            let allowed = base["metadata"]["annotations"][LAST_APPLIED]
                .as_str()
                .and_then(|t| serde_json::from_str::<Value>(t).ok())
                .map(|v| Set::of(&v, a.service))
                .unwrap_or_default();
            if conflicts.iter().all(|c| allowed.0.contains(&c.path)) {
                apply_once(&base, &entries, a, true)
            } else {
                Err(conflicts
                    .into_iter()
                    .filter(|c| !allowed.0.contains(&c.path))
                    .collect())
            }
        }
        r => r,
    }
}

fn apply_once(
    base: &Value,
    entries: &[Entry],
    a: &Applied,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let mut entries = entries.to_vec();
    let me = Entry {
        manager: a.manager.into(),
        operation: APPLY.into(),
        api_version: a.api_version.into(),
        time: Some(now()),
        subresource: String::new(),
        set: Set::of(a.config, a.service),
    };
    let mut config = a.config.clone();
    if let Some(m) = config["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    let mut merged = base.clone();
    fieldset::merge(&mut merged, &config, a.service);
    let last = entries
        .iter()
        .position(|e| e.same(&me))
        .map(|i| entries.remove(i).set)
        .unwrap_or_default();
    // Fields this manager applied before and no longer does, which nobody else owns, go.
    let owned = entries.iter().fold(me.set.clone(), |s, e| s.union(&e.set));
    let gone: Vec<Path> = last
        .difference(&owned)
        .0
        .into_iter()
        .filter(|p| !owned.has_under(p))
        .collect();
    // The topmost only: an item's key fields go with it (removing them first would lose
    // the item's identity).
    for p in gone
        .iter()
        .filter(|p| !(1..p.len()).any(|n| gone.contains(&p[..n].to_vec())))
    {
        fieldset::remove(&mut merged, p, &owned, a.service);
    }
    let changes = fieldset::compare(base, &merged, a.service);
    let changed = changes.set();
    let mut conflicts = Vec::new();
    for e in &entries {
        for p in e.set.intersection(&changed).0 {
            conflicts.push(Conflict {
                owner: e.describe(),
                path: p,
            });
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }
    for e in entries.iter_mut() {
        e.set = e.set.difference(&changed).without_under(&changes.removed);
    }
    // The time moves only when the apply changed something (a no-op keeps the entry).
    let unchanged = changed.is_empty() && changes.removed.is_empty() && last == me.set;
    let prior_time = base["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["manager"] == a.manager && e["operation"] == APPLY)
        .and_then(|e| e["time"].as_str().map(str::to_string));
    let time = if unchanged {
        prior_time.or(me.time.clone())
    } else {
        me.time.clone()
    };
    entries.push(Entry { time, ..me });
    if a.manager == KUBECTL && base["metadata"]["annotations"][LAST_APPLIED].is_string() {
        // The API server keeps kubectl's client-side annotation in step with its
        // server-side applies, so a later client-side apply computes from this config.
        let mut last = config.clone();
        if let Some(m) = last["metadata"]["annotations"].as_object_mut() {
            m.remove(LAST_APPLIED);
        }
        merged["metadata"]["annotations"][LAST_APPLIED] = last.to_string().into();
    }
    encode(&mut merged, entries);
    Ok(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                   {"name": "web", "image": image}]}}}})
    }

    fn applied<'a>(config: &'a Value, manager: &'a str, force: bool) -> Applied<'a> {
        Applied {
            config,
            manager,
            api_version: "apps/v1",
            force,
            service: false,
        }
    }

    fn owners(o: &Value) -> Vec<(String, Value)> {
        o["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["manager"].as_str().unwrap().to_string(),
                    e["fieldsV1"].clone(),
                )
            })
            .collect()
    }

    #[test]
    fn update_takes_changed_fields_from_others() {
        let mut o = dep(1, "x:1");
        update(None, &mut o, "kubectl-create", "apps/v1", "", false);
        assert_eq!(owners(&o).len(), 1);
        let mut scaled = o.clone();
        scaled["spec"]["replicas"] = 3.into();
        update(Some(&o), &mut scaled, "kubectl", "apps/v1", "scale", false);
        let es = decode(&scaled);
        assert_eq!(es.len(), 2);
        let replicas: Path = vec!["f:spec".into(), "f:replicas".into()];
        let create = es.iter().find(|e| e.manager == "kubectl-create").unwrap();
        assert!(!create.set.0.contains(&replicas));
        let scale = es.iter().find(|e| e.manager == "kubectl").unwrap();
        assert_eq!(scale.set.0.iter().collect::<Vec<_>>(), vec![&replicas]);
        assert_eq!(scale.subresource, "scale");
        assert_eq!(
            scale.describe(),
            "\"kubectl\" with subresource \"scale\" using apps/v1"
        );
    }

    #[test]
    fn apply_conflicts_unless_same_value_or_forced() {
        let mut live = dep(1, "x:1");
        update(
            None,
            &mut live,
            "kubectl-client-side-apply",
            "apps/v1",
            "",
            false,
        );
        // Same values: shared, no conflict.
        let same = dep(1, "x:1");
        let o = apply(Some(&live), &applied(&same, "mgr", false)).unwrap();
        assert_eq!(owners(&o).len(), 2);
        let c = dep(2, "x:1");
        let err = apply(Some(&o), &applied(&c, "mgr", false)).unwrap_err();
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        let c2 = dep(2, "x:2");
        let err = apply(Some(&o), &applied(&c2, "mgr", false)).unwrap_err();
        assert_eq!(
            conflict_message(&err),
            "Apply failed with 2 conflicts: conflicts with \"kubectl-client-side-apply\" using apps/v1:\n- .spec.replicas\n- .spec.template.spec.containers[name=\"web\"].image"
        );
        let forced = apply(Some(&o), &applied(&c, "mgr", true)).unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        let es = decode(&forced);
        let replicas: Path = vec!["f:spec".into(), "f:replicas".into()];
        assert!(es
            .iter()
            .find(|e| e.manager == "mgr")
            .unwrap()
            .set
            .0
            .contains(&replicas));
        assert!(!es
            .iter()
            .find(|e| e.manager == "kubectl-client-side-apply")
            .unwrap()
            .set
            .0
            .contains(&replicas));
        // Now mgr alone owns replicas: changing it again is no conflict.
        assert!(apply(Some(&forced), &applied(&dep(5, "x:1"), "mgr", false)).is_ok());
    }

    #[test]
    fn dropped_fields_go_unless_someone_else_owns_them() {
        let mut c1 = dep(1, "x:1");
        c1["metadata"]["labels"] = json!({"a": "1", "b": "2"});
        c1["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "side", "image": "s:1", "env": [{"name": "V", "value": "1"}]}));
        let o = apply(None, &applied(&c1, "a", false)).unwrap();
        assert_eq!(
            o["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        // Manager b shares label b.
        let shared = json!({"metadata": {"name": "web", "labels": {"b": "2"}}});
        let o = apply(Some(&o), &applied(&shared, "b", false)).unwrap();
        // a drops label a, label b, the sidecar.
        let c2 = dep(1, "x:1");
        let o = apply(Some(&o), &applied(&c2, "a", false)).unwrap();
        assert_eq!(o["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(
            o["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let fs = owners(&o);
        assert_eq!(fs.len(), 2, "{fs:?}");
        // b drops its label too: the labels map goes.
        let none = json!({"metadata": {"name": "web"}});
        let o = apply(Some(&o), &applied(&none, "b", false)).unwrap();
        assert!(o["metadata"]["labels"].is_null(), "{o}");
        assert_eq!(owners(&o).len(), 1, "{o}");
    }

    #[test]
    fn kubectl_takes_over_client_side_applied_fields() {
        let mut live = dep(1, "x:1");
        live["metadata"]["annotations"] = json!({LAST_APPLIED: dep(1, "x:1").to_string()});
        update(
            None,
            &mut live,
            "kubectl-client-side-apply",
            "apps/v1",
            "",
            false,
        );
        let c = dep(2, "x:1");
        assert!(apply(Some(&live), &applied(&c, "other", false)).is_err());
        let o = apply(Some(&live), &applied(&c, "kubectl", false)).unwrap();
        assert_eq!(o["spec"]["replicas"], 2);
        let last: Value =
            serde_json::from_str(o["metadata"]["annotations"][LAST_APPLIED].as_str().unwrap())
                .unwrap();
        assert_eq!(last["spec"]["replicas"], 2);
    }

    #[test]
    fn objects_without_managed_fields_belong_to_before_first_apply() {
        let live = dep(1, "x:1");
        let err = apply(Some(&live), &applied(&dep(3, "x:1"), "m", false)).unwrap_err();
        assert_eq!(err[0].owner, "\"before-first-apply\" using apps/v1");
    }
}
