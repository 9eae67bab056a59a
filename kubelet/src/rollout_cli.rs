//! The agent CLI's rollout faces, in kubectl's words and exit codes: `rollout
//! status|history|undo|restart` of Deployments, StatefulSets and DaemonSets, `rollout
//! pause|resume` of Deployments, and `scale` of Deployments and StatefulSets.
//!
//! The manifest directory is the source of truth, so every change (undo, scale, pause,
//! resume, restart) is written back into the file that defines the object: the file is read,
//! the one document that holds the object is changed and re-serialized in place (the other
//! documents keep their text and comments), and the file is replaced atomically. The agent
//! then picks the file up like any edit. History comes from what the controllers keep:
//! a Deployment's ReplicaSets (`deployment.kubernetes.io/revision`), a StatefulSet's or
//! DaemonSet's ControllerRevisions, read through the agent's API as kubectl reads them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use chrono::{SecondsFormat, Utc};
use serde_json::Value;

use crate::cli::Api;

/// The kinds these commands take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl Kind {
    /// `deployment/NAME` (and kubectl's other spellings of the kind).
    pub fn parse(target: &str) -> Result<(Kind, &str)> {
        let (k, name) = target
            .split_once('/')
            .filter(|(_, n)| !n.is_empty())
            .ok_or_else(|| anyhow!("{target}: expected TYPE/NAME (e.g. deployment/web)"))?;
        let kind = match k {
            "deployment" | "deployments" | "deploy" | "deployment.apps" => Kind::Deployment,
            "statefulset" | "statefulsets" | "sts" | "statefulset.apps" => Kind::StatefulSet,
            "daemonset" | "daemonsets" | "ds" | "daemonset.apps" => Kind::DaemonSet,
            other => bail!("the server doesn't have a resource type \"{other}\""),
        };
        Ok((kind, name))
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
        }
    }

    fn plural(self) -> &'static str {
        match self {
            Kind::Deployment => "deployments",
            Kind::StatefulSet => "statefulsets",
            Kind::DaemonSet => "daemonsets",
        }
    }

    /// `deployment.apps`, as kubectl names an object in its messages.
    fn singular(self) -> String {
        format!("{}.apps", self.name().to_lowercase())
    }

    fn path(self, ns: &str, name: &str) -> String {
        format!("/apis/apps/v1/namespaces/{ns}/{}/{name}", self.plural())
    }
}

/// What `rollout` was asked.
pub struct Rollout<'a> {
    pub action: &'a str,
    pub target: &'a str,
    pub namespace: &'a str,
    pub timeout: Option<Duration>,
    pub revision: Option<i64>,
    pub to_revision: Option<i64>,
}

pub async fn rollout(api: &Api, r: &Rollout<'_>) -> Result<()> {
    let (kind, name) = Kind::parse(r.target)?;
    let ns = r.namespace;
    let obj = || async { api.get(&kind.path(ns, name)).await };
    let who = format!("{}/{name}", kind.singular());
    let gr = format!("{}.apps", kind.plural());
    match r.action {
        "status" => status(api, kind, ns, name, r.timeout).await,
        "history" => {
            let o = obj().await?;
            print!("{}", history(api, kind, &o, r.revision).await?);
            Ok(())
        }
        "undo" => undo(api, kind, &obj().await?, r.to_revision.unwrap_or(0)).await,
        "pause" | "resume" => {
            if kind != Kind::Deployment {
                let verb = if r.action == "pause" {
                    "pausing"
                } else {
                    "resuming"
                };
                bail!("{gr} \"{name}\" {verb} is not supported");
            }
            let o = obj().await?;
            let pause = r.action == "pause";
            if o["spec"]["paused"].as_bool().unwrap_or(false) == pause {
                let state = if pause {
                    "already paused"
                } else {
                    "not paused"
                };
                bail!("{gr} \"{name}\" is {state}");
            }
            edit(api, kind, ns, name, |d| {
                if pause {
                    d["spec"]["paused"] = true.into();
                } else if let Some(s) = d["spec"].as_object_mut() {
                    s.remove("paused");
                }
            })
            .await?;
            println!("{who} {}d", r.action);
            Ok(())
        }
        "restart" => {
            let o = obj().await?;
            if o["spec"]["paused"].as_bool().unwrap_or(false) {
                bail!("{gr} \"{name}\" can't restart paused deployment (run rollout resume first)");
            }
            let now = Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true);
            edit(api, kind, ns, name, |d| {
                d["spec"]["template"]["metadata"]["annotations"]
                    ["kubectl.kubernetes.io/restartedAt"] = now.into();
            })
            .await?;
            println!("{who} restarted");
            Ok(())
        }
        other => bail!(
            "unknown rollout action \"{other}\": status, history, undo, pause, resume or restart"
        ),
    }
}

/// `scale deployment/NAME --replicas N` (and statefulset/NAME).
pub async fn scale(api: &Api, target: &str, replicas: i32, ns: &str) -> Result<()> {
    let (kind, name) = Kind::parse(target)?;
    if kind == Kind::DaemonSet {
        bail!("cannot scale a daemonset: it runs one pod per matching node");
    }
    if replicas < 0 {
        bail!("The {} \"{name}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0", kind.name());
    }
    api.get(&kind.path(ns, name)).await?;
    edit(api, kind, ns, name, |d| {
        d["spec"]["replicas"] = replicas.into()
    })
    .await?;
    println!("{}/{name} scaled", kind.singular());
    Ok(())
}

/// One revision of an object's template.
struct Revision {
    number: i64,
    template: Value,
    cause: Option<String>,
}

/// The revisions the controllers keep for the object, oldest first.
async fn revisions(api: &Api, kind: Kind, o: &Value) -> Result<Vec<Revision>> {
    let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
    let uid = o["metadata"]["uid"].as_str().unwrap_or("");
    let owned = |x: &Value| {
        x["metadata"]["ownerReferences"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["uid"] == uid && r["controller"] == true)
    };
    let cause = |x: &Value| {
        x["metadata"]["annotations"]["kubernetes.io/change-cause"]
            .as_str()
            .map(str::to_string)
    };
    let mut out: Vec<Revision> = if kind == Kind::Deployment {
        let list = api
            .get(&format!("/apis/apps/v1/namespaces/{ns}/replicasets"))
            .await?;
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| owned(r))
            .filter_map(|r| {
                let number = r["metadata"]["annotations"][crate::controllers::deployment::REVISION]
                    .as_str()?
                    .parse()
                    .ok()?;
                let mut template = r["spec"]["template"].clone();
                if let Some(l) = template["metadata"]["labels"].as_object_mut() {
                    l.remove(crate::controllers::replicaset::TEMPLATE_HASH);
                }
                Some(Revision {
                    number,
                    template,
                    cause: cause(r),
                })
            })
            .collect()
    } else {
        let list = api
            .get(&format!(
                "/apis/apps/v1/namespaces/{ns}/controllerrevisions"
            ))
            .await?;
        list["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| owned(r))
            .map(|r| {
                let mut template = r["data"]["spec"]["template"].clone();
                if let Some(t) = template.as_object_mut() {
                    t.remove("$patch");
                }
                Revision {
                    number: r["revision"].as_i64().unwrap_or(0),
                    template,
                    cause: cause(r),
                }
            })
            .collect()
    };
    out.sort_by_key(|r| r.number);
    Ok(out)
}

/// `rollout history`: kubectl's table, or one revision's pod template.
async fn history(api: &Api, kind: Kind, o: &Value, revision: Option<i64>) -> Result<String> {
    let name = o["metadata"]["name"].as_str().unwrap_or("");
    let who = format!("{}/{name}", kind.singular());
    let revs = revisions(api, kind, o).await?;
    if let Some(n) = revision.filter(|n| *n > 0) {
        let r = revs
            .iter()
            .find(|r| r.number == n)
            .ok_or_else(|| anyhow!("unable to find the specified revision"))?;
        return Ok(format!(
            "{who} with revision #{n}\n{}",
            describe_template(&r.template)
        ));
    }
    let width = revs
        .iter()
        .map(|r| r.number.to_string().len())
        .chain(["REVISION".len()])
        .max()
        .unwrap_or(8)
        + 2;
    let mut out = format!("{who} \n{:<width$}CHANGE-CAUSE\n", "REVISION");
    for r in &revs {
        out.push_str(&format!(
            "{:<width$}{}\n",
            r.number,
            r.cause.as_deref().unwrap_or("<none>")
        ));
    }
    out.push('\n');
    Ok(out)
}

/// A pod template as `kubectl describe` prints it (the parts people compare revisions by).
pub fn describe_template(t: &Value) -> String {
    let kv = |m: &Value, indent: &str| {
        let items: Vec<String> = m
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect();
        if items.is_empty() {
            "<none>".to_string()
        } else {
            items.join(&format!("\n{indent}"))
        }
    };
    let mut out = String::from("Pod Template:\n");
    out.push_str(&format!(
        "  Labels:\t{}\n",
        kv(&t["metadata"]["labels"], "\t")
    ));
    if t["metadata"]["annotations"].is_object() {
        out.push_str(&format!(
            "  Annotations:\t{}\n",
            kv(&t["metadata"]["annotations"], "\t")
        ));
    }
    out.push_str("  Containers:\n");
    for c in t["spec"]["containers"].as_array().into_iter().flatten() {
        out.push_str(&format!("   {}:\n", c["name"].as_str().unwrap_or("")));
        out.push_str(&format!(
            "    Image:\t{}\n",
            c["image"].as_str().unwrap_or("")
        ));
        let ports: Vec<String> = c["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                format!(
                    "{}/{}",
                    p["containerPort"],
                    p["protocol"].as_str().unwrap_or("TCP")
                )
            })
            .collect();
        out.push_str(&format!(
            "    Port:\t{}\n",
            if ports.is_empty() {
                "<none>".into()
            } else {
                ports.join(", ")
            }
        ));
        for (field, title) in [("command", "Command"), ("args", "Args")] {
            if let Some(a) = c[field].as_array() {
                out.push_str(&format!("    {title}:\n"));
                for x in a {
                    out.push_str(&format!("      {}\n", x.as_str().unwrap_or("")));
                }
            }
        }
        let env: Vec<String> = c["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                format!(
                    "      {}:\t{}",
                    e["name"].as_str().unwrap_or(""),
                    e["value"].as_str().unwrap_or("")
                )
            })
            .collect();
        if env.is_empty() {
            out.push_str("    Environment:\t<none>\n");
        } else {
            out.push_str(&format!("    Environment:\n{}\n", env.join("\n")));
        }
    }
    let vols: Vec<&str> = t["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str())
        .collect();
    out.push_str(&format!(
        "  Volumes:\t{}\n\n",
        if vols.is_empty() {
            "<none>".into()
        } else {
            vols.join(", ")
        }
    ));
    out
}

/// Two templates are the same revision as the Deployment controller tells them apart.
fn same_template(a: &Value, b: &Value) -> bool {
    let typed = |v: &Value| {
        serde_json::from_value::<k8s_openapi::api::core::v1::PodTemplateSpec>(v.clone()).ok()
    };
    match (typed(a), typed(b)) {
        (Some(a), Some(b)) => crate::controllers::replicaset::equal_ignore_hash(&a, &b),
        _ => false,
    }
}

/// `rollout undo [--to-revision N]`: the revision's template goes back into the manifest.
async fn undo(api: &Api, kind: Kind, o: &Value, to: i64) -> Result<()> {
    let name = o["metadata"]["name"].as_str().unwrap_or("");
    let ns = o["metadata"]["namespace"].as_str().unwrap_or("default");
    if kind == Kind::Deployment && o["spec"]["paused"].as_bool().unwrap_or(false) {
        bail!("you cannot rollback a paused deployment; resume it first with 'kubectl rollout resume deployment/{name}' and try again");
    }
    let revs = revisions(api, kind, o).await?;
    let target = if to > 0 {
        revs.iter()
            .find(|r| r.number == to)
            .ok_or_else(|| anyhow!("unable to find specified revision {to} in history"))?
    } else {
        // The previous revision: the newest but one (kubectl's rule).
        revs.iter().rev().nth(1).ok_or_else(|| {
            anyhow!(
                "no rollout history found for {} \"{name}\"",
                kind.name().to_lowercase()
            )
        })?
    };
    let who = format!("{}/{name}", kind.singular());
    if same_template(&target.template, &o["spec"]["template"]) {
        println!(
            "{who} skipped rollback (current template already matches revision {})",
            target.number
        );
        return Ok(());
    }
    let t = target.template.clone();
    edit(api, kind, ns, name, |d| d["spec"]["template"] = t).await?;
    println!("{who} rolled back");
    Ok(())
}

/// Changes the object in the manifest file that defines it (one atomic write).
async fn edit(
    api: &Api,
    kind: Kind,
    ns: &str,
    name: &str,
    change: impl FnOnce(&mut Value),
) -> Result<()> {
    let dir = crate::cli::manifest_dir(api).await?;
    let (path, text, index, doc) = find(&dir, kind, ns, name)?;
    let mut new = doc.clone();
    change(&mut new);
    if new == doc {
        return Ok(());
    }
    let generation = |o: &Value| o["metadata"]["generation"].as_i64().unwrap_or(0);
    let before = generation(&api.get(&kind.path(ns, name)).await?);
    let out = rewrite(&path, &text, index, &new)?;
    crate::store::write_atomic(&path, out.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    // The API server has the new generation when kubectl's write returns; the agent reads
    // the file a moment later. Waiting for it here lets a `rollout status` right after see
    // the change, not the state before it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if generation(&api.get(&kind.path(ns, name)).await?) > before {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "warning: {} was written, but the agent has not taken the change yet (see its log)",
        path.display()
    );
    Ok(())
}

/// The file, its text, and the index and content of the document that defines the object.
fn find(dir: &Path, kind: Kind, ns: &str, name: &str) -> Result<(PathBuf, String, usize, Value)> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .flatten()
        .filter(|e| crate::manifest::is_manifest_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    paths.sort();
    for p in paths {
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        let Ok(docs) = crate::manifest::documents(&p, &text) else {
            continue;
        };
        let hit = docs.iter().position(|d| {
            d["apiVersion"] == "apps/v1"
                && d["kind"] == kind.name()
                && d["metadata"]["name"] == name
                && d["metadata"]["namespace"].as_str().unwrap_or("default") == ns
        });
        if let Some(i) = hit {
            let doc = docs[i].clone();
            return Ok((p, text, i, doc));
        }
    }
    bail!(
        "Error from server (NotFound): {}.apps \"{name}\" not found in the manifest directory {}",
        kind.plural(),
        dir.display()
    )
}

/// The file's text with document `index` replaced by `new`. YAML: only that document's
/// text changes (the others keep theirs, comments included); JSON: re-encoded.
fn rewrite(path: &Path, text: &str, index: usize, new: &Value) -> Result<String> {
    if path.extension().is_some_and(|e| e == "json") {
        let docs = crate::manifest::documents(path, text).map_err(|e| anyhow!(e))?;
        let mut out = String::new();
        for (i, d) in docs.iter().enumerate() {
            let d = if i == index { new } else { d };
            out.push_str(&serde_json::to_string_pretty(d)?);
            out.push('\n');
        }
        return Ok(out);
    }
    // Documents are separated by `---` lines; a chunk that holds no document (comments
    // only, or empty) is not counted, as the YAML reader does not count it.
    let mut chunks: Vec<String> = vec![String::new()];
    let mut seps: Vec<String> = Vec::new();
    for line in text.split_inclusive('\n') {
        let bare = line.trim_end();
        if bare == "---" || bare.starts_with("--- ") || bare.starts_with("---#") {
            seps.push(line.to_string());
            chunks.push(String::new());
        } else if let Some(last) = chunks.last_mut() {
            last.push_str(line);
        }
    }
    let mut seen = 0;
    let mut replaced = false;
    for chunk in chunks.iter_mut() {
        let v: Value = serde_yaml_ng::from_str(chunk).unwrap_or(Value::Null);
        if v.is_null() {
            continue;
        }
        if seen == index {
            *chunk = serde_yaml_ng::to_string(new)?;
            replaced = true;
            break;
        }
        seen += 1;
    }
    if !replaced || seps.iter().any(|s| s.trim_end() != "---") {
        // A layout this splitter does not follow (content on a `---` line): every document
        // is written again.
        let docs = crate::manifest::documents(path, text).map_err(|e| anyhow!(e))?;
        let parts: Result<Vec<String>, _> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| serde_yaml_ng::to_string(if i == index { new } else { d }))
            .collect();
        return Ok(parts?.join("---\n"));
    }
    let mut out = chunks[0].clone();
    for (sep, chunk) in seps.iter().zip(&chunks[1..]) {
        out.push_str(sep);
        out.push_str(chunk);
    }
    Ok(out)
}

/// kubectl's `StatefulSetStatusViewer` and `DaemonSetStatusViewer`: the line to print and
/// whether the rollout is complete.
fn set_status(kind: Kind, o: &Value) -> Result<(String, bool)> {
    let name = o["metadata"]["name"].as_str().unwrap_or("");
    let st = &o["status"];
    let n = |v: &Value| v.as_i64().unwrap_or(0);
    let strategy = o["spec"]["updateStrategy"]["type"]
        .as_str()
        .unwrap_or("RollingUpdate");
    if strategy != "RollingUpdate" {
        bail!("rollout status is only available for RollingUpdate strategy type");
    }
    let observed = n(&o["metadata"]["generation"]) <= n(&st["observedGeneration"]);
    if kind == Kind::DaemonSet {
        if !observed {
            return Ok((
                "Waiting for daemon set spec update to be observed...".into(),
                false,
            ));
        }
        let want = n(&st["desiredNumberScheduled"]);
        let updated = n(&st["updatedNumberScheduled"]);
        let available = n(&st["numberAvailable"]);
        if updated < want {
            return Ok((format!("Waiting for daemon set \"{name}\" rollout to finish: {updated} out of {want} new pods have been updated..."), false));
        }
        if available < want {
            return Ok((format!("Waiting for daemon set \"{name}\" rollout to finish: {available} of {want} updated pods are available..."), false));
        }
        return Ok((
            format!("daemon set \"{name}\" successfully rolled out"),
            true,
        ));
    }
    if !observed || n(&st["observedGeneration"]) == 0 {
        return Ok((
            "Waiting for statefulset spec update to be observed...".into(),
            false,
        ));
    }
    let replicas = o["spec"]["replicas"].as_i64().unwrap_or(1);
    let ready = n(&st["readyReplicas"]);
    if ready < replicas {
        return Ok((
            format!("Waiting for {} pods to be ready...", replicas - ready),
            false,
        ));
    }
    let updated = n(&st["updatedReplicas"]);
    // With `rollingUpdate` set (the API server sets it, partition 0) kubectl reports the
    // partitioned roll out.
    let ru = &o["spec"]["updateStrategy"]["rollingUpdate"];
    if ru.is_object() {
        let partition = n(&ru["partition"]);
        if !ru["partition"].is_null() && updated < replicas - partition {
            return Ok((format!("Waiting for partitioned roll out to finish: {updated} out of {} new pods have been updated...", replicas - partition), false));
        }
        return Ok((
            format!("partitioned roll out complete: {updated} new pods have been updated..."),
            true,
        ));
    }
    let update = st["updateRevision"].as_str().unwrap_or("");
    let current = st["currentRevision"].as_str().unwrap_or("");
    if update != current {
        return Ok((
            format!("waiting for statefulset rolling update to complete {updated} pods at revision {update}..."),
            false,
        ));
    }
    Ok((
        format!(
            "statefulset rolling update complete {} pods at revision {current}...",
            n(&st["currentReplicas"])
        ),
        true,
    ))
}

/// `rollout status`: prints each new state until the rollout completes.
async fn status(
    api: &Api,
    kind: Kind,
    ns: &str,
    name: &str,
    timeout: Option<Duration>,
) -> Result<()> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut last = String::new();
    loop {
        let o = api.get(&kind.path(ns, name)).await?;
        let (line, done) = match kind {
            Kind::Deployment => crate::cli::deployment_status(&o)?,
            _ => set_status(kind, &o)?,
        };
        if line != last {
            println!("{line}");
            last = line;
        }
        if done {
            return Ok(());
        }
        if deadline.is_some_and(|t| Instant::now() >= t) {
            bail!("timed out waiting for the condition");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrite_keeps_other_documents() {
        let text = "# the service\napiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\n# the app\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n";
        let new = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": 3}});
        let out = rewrite(Path::new("x.yaml"), text, 1, &new).unwrap();
        assert!(out.starts_with(
            "# the service\napiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\n"
        ));
        let docs = crate::manifest::documents(Path::new("x.yaml"), &out).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1], new);
        // A leading separator and a comment-only chunk are not documents.
        let text2 = format!("---\n# nothing\n---\n{text}");
        let out = rewrite(Path::new("x.yaml"), &text2, 1, &new).unwrap();
        assert_eq!(
            crate::manifest::documents(Path::new("x.yaml"), &out).unwrap()[1],
            new
        );
        let json = rewrite(Path::new("x.json"), "{\"a\": 1}", 0, &new).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), new);
    }

    #[test]
    fn statefulset_and_daemonset_status_lines() {
        let sts = |gen: i64, st: Value| serde_json::json!({"metadata": {"name": "db", "generation": gen}, "spec": {"replicas": 3}, "status": st});
        let line = |o: &Value, k| set_status(k, o).unwrap();
        assert_eq!(
            line(
                &sts(2, serde_json::json!({"observedGeneration": 1})),
                Kind::StatefulSet
            )
            .0,
            "Waiting for statefulset spec update to be observed..."
        );
        assert_eq!(
            line(
                &sts(
                    2,
                    serde_json::json!({"observedGeneration": 2, "readyReplicas": 2})
                ),
                Kind::StatefulSet
            )
            .0,
            "Waiting for 1 pods to be ready..."
        );
        assert_eq!(
            line(&sts(2, serde_json::json!({"observedGeneration": 2, "readyReplicas": 3, "updatedReplicas": 1, "updateRevision": "db-b", "currentRevision": "db-a"})), Kind::StatefulSet).0,
            "waiting for statefulset rolling update to complete 1 pods at revision db-b..."
        );
        assert_eq!(
            line(
                &sts(
                    2,
                    serde_json::json!({"observedGeneration": 2, "readyReplicas": 3, "currentReplicas": 3, "updateRevision": "db-b", "currentRevision": "db-b"})
                ),
                Kind::StatefulSet
            ),
            (
                "statefulset rolling update complete 3 pods at revision db-b...".into(),
                true
            )
        );
        let part = serde_json::json!({"metadata": {"name": "db", "generation": 1}, "spec": {"replicas": 3, "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}}, "status": {"observedGeneration": 1, "readyReplicas": 3, "updatedReplicas": 3}});
        assert_eq!(
            line(&part, Kind::StatefulSet),
            (
                "partitioned roll out complete: 3 new pods have been updated...".into(),
                true
            )
        );
        let ds = serde_json::json!({"metadata": {"name": "agent", "generation": 1}, "spec": {}, "status": {"observedGeneration": 1, "desiredNumberScheduled": 1, "updatedNumberScheduled": 1, "numberAvailable": 0}});
        assert_eq!(
            line(&ds, Kind::DaemonSet).0,
            "Waiting for daemon set \"agent\" rollout to finish: 0 of 1 updated pods are available..."
        );
        let od = serde_json::json!({"metadata": {"name": "agent"}, "spec": {"updateStrategy": {"type": "OnDelete"}}});
        assert!(set_status(Kind::DaemonSet, &od).is_err());
    }

    #[test]
    fn kinds() {
        assert_eq!(
            Kind::parse("deploy/web").unwrap(),
            (Kind::Deployment, "web")
        );
        assert_eq!(Kind::parse("sts/db").unwrap(), (Kind::StatefulSet, "db"));
        assert!(Kind::parse("pod/x").is_err());
        assert!(Kind::parse("deployment/").is_err());
    }
}
