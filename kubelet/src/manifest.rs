//! The manifest directory: `.yaml`, `.yml` and `.json` files of one or more documents, each a
//! v1 Pod, parsed into k8s-openapi's types, and watched for changes.
//!
//! YAML is read with `serde_yaml_ng`: the maintained continuation of dtolnay's `serde_yaml`
//! (archived in 2024), with the same serde model, multi-document reader and libyaml-based
//! parser; `serde_yml`, the other fork, has had unsound releases and an unclear upkeep.
//!
//! A file that stops parsing (an editor's partial write, a typo) keeps the pods it had when
//! it last parsed, as the kubelet keeps running what it runs; its error is reported.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde::Deserialize;
use serde_json::Value;
use tokio::sync::mpsc;

/// A pod wanted by a manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// Shared: the loops copy the desired pods many times a second.
    pub pod: std::sync::Arc<Pod>,
    pub file: PathBuf,
    pub uid: String,
}

impl Desired {
    pub fn key(&self) -> String {
        key(&self.pod)
    }
}

/// `namespace/name`.
pub fn key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// Is `name` a file the agent reads (not an editor's temp file or a hidden one)?
pub fn is_manifest_name(name: &str) -> bool {
    !(name.starts_with('.')
        || name.starts_with('#')
        || name.ends_with('~')
        || name.ends_with(".swp")
        || name.ends_with(".swx"))
        && [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

/// What identifies the directory's files as they are now (name, inode, size, mtime): the
/// scan loop compares it with the last one, as the API also serves some files directly
/// (objects Terminating, namespaces) and a watch must look again when one is edited.
pub fn fingerprint(dir: &Path) -> Vec<(std::ffi::OsString, u64, u64, i64, i64)> {
    use std::os::unix::fs::MetadataExt;
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| is_manifest_name(&e.file_name().to_string_lossy()))
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.file_name(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
        })
        .collect();
    out.sort();
    out
}

/// A stable uid for a manifest's pod: the kubelet derives static pods' uids from their
/// content and source the same way, so an edit makes a new pod and a restart the same one.
pub fn uid_of(file: &Path, doc: &Value) -> String {
    let text = format!("{}\n{}", file.display(), doc);
    let h = |seed: u64| {
        text.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    let (a, b) = (h(0xcbf2_9ce4_8422_2325), h(0x8422_2325_cbf2_9ce4));
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

pub fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(dns_label)
}

/// Checks what the API server would refuse; the error names the field.
pub fn validate(pod: &Pod) -> Result<(), String> {
    let name = pod.metadata.name.as_deref().unwrap_or("");
    if name.is_empty() {
        return Err("metadata.name: Required value".into());
    }
    if !dns_subdomain(name) {
        return Err(format!(
            "metadata.name: Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'"
        ));
    }
    if let Some(ns) = pod.metadata.namespace.as_deref() {
        if !dns_label(ns) {
            return Err(format!("metadata.namespace: Invalid value: {ns:?}"));
        }
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Err("spec: Required value".into());
    };
    if spec.containers.is_empty() {
        return Err("spec.containers: Required value".into());
    }
    let mut seen = std::collections::HashSet::new();
    let all = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| ("initContainers", c))
        .chain(spec.containers.iter().map(|c| ("containers", c)));
    for (i, (list, c)) in all.enumerate() {
        let at = format!("spec.{list}[{i}]");
        if !dns_label(&c.name) {
            return Err(format!("{at}.name: Invalid value: {:?}", c.name));
        }
        if !seen.insert(c.name.clone()) {
            return Err(format!("{at}.name: Duplicate value: {:?}", c.name));
        }
        if c.image.as_deref().unwrap_or("").is_empty() {
            return Err(format!("{at}.image: Required value"));
        }
        if let Some(p) = c.image_pull_policy.as_deref() {
            if !["Always", "IfNotPresent", "Never"].contains(&p) {
                return Err(format!(
                    "{at}.imagePullPolicy: Unsupported value: {p:?}: supported values: \"Always\", \"IfNotPresent\", \"Never\""
                ));
            }
        }
        crate::resources::amounts(c).map_err(|e| format!("{at}.{e}"))?;
    }
    if let Some(p) = spec.restart_policy.as_deref() {
        if !["Always", "OnFailure", "Never"].contains(&p) {
            return Err(format!(
                "spec.restartPolicy: Unsupported value: {p:?}: supported values: \"Always\", \"OnFailure\", \"Never\""
            ));
        }
    }
    Ok(())
}

/// Parses one document into a Pod; the error names the field.
pub fn parse_doc(doc: &Value) -> Result<Pod, String> {
    let kind = doc.get("kind").and_then(Value::as_str).unwrap_or("");
    let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if kind.is_empty() {
        return Err("kind: Required value".into());
    }
    if kind != "Pod" || api != "v1" {
        return Err(format!(
            "apiVersion/kind: {api}/{kind} is not supported yet (only v1/Pod)"
        ));
    }
    let doc = &crate::volumes::octal_modes(doc.clone());
    let mut pod: Pod = serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        format!("{path}: {}", e.inner())
    })?;
    if pod.metadata.namespace.is_none() {
        pod.metadata.namespace = Some("default".into());
    }
    validate(&pod)?;
    Ok(pod)
}

/// The documents of a file, as JSON values (empty documents skipped).
pub fn documents(path: &Path, text: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    if path.extension().is_some_and(|e| e == "json") {
        for (i, v) in serde_json::Deserializer::from_str(text)
            .into_iter::<Value>()
            .enumerate()
        {
            out.push(v.map_err(|e| format!("document {i}: {e}"))?);
        }
        return Ok(out);
    }
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(de).map_err(|e| format!("document {i}: {e}"))?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// One file's pods, or the error naming file, document and field.
pub fn load_file(path: &Path) -> Result<Vec<Desired>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let docs = documents(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut pods = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        // ConfigMaps and Secrets are `objects`'; Deployments, ReplicaSets and Services the
        // controllers' (`controllers::scan`).
        if crate::objects::is_object(doc) || crate::controllers::is_workload(doc) {
            continue;
        }
        let mut pod =
            parse_doc(doc).map_err(|e| format!("{}: document {i}: {e}", path.display()))?;
        // Admitted once, here: the directory's pods are then the desired ones, shared.
        crate::service_account::admit(&mut pod);
        pods.push(Desired {
            uid: uid_of(path, doc),
            pod: pod.into(),
            file: path.to_path_buf(),
        });
    }
    Ok(pods)
}

/// The manifest directory's state: the pods of each file, and the errors.
#[derive(Debug, Default)]
pub struct Dir {
    files: HashMap<PathBuf, Vec<Desired>>,
    pub errors: BTreeMap<PathBuf, String>,
}

impl Dir {
    /// Re-reads the directory. A file that no longer parses keeps its last good pods.
    pub fn rescan(&mut self, dir: &Path) {
        let mut present = Vec::new();
        match std::fs::read_dir(dir) {
            Ok(rd) => {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if is_manifest_name(&name) && e.path().is_file() {
                        present.push(e.path());
                    }
                }
            }
            Err(e) => {
                self.errors
                    .insert(dir.to_path_buf(), format!("{}: {e}", dir.display()));
                return;
            }
        }
        self.errors.clear();
        self.files.retain(|p, _| present.contains(p));
        for p in present {
            match load_file(&p) {
                // A file read again as it was keeps its pods: they are the ones the agent
                // holds as desired (shared), not a second copy of each.
                Ok(pods) if self.files.get(&p) == Some(&pods) => {}
                Ok(pods) => {
                    self.files.insert(p, pods);
                }
                Err(e) => {
                    self.errors.insert(p, e);
                }
            }
        }
    }

    /// The wanted pods by key; of two files naming the same pod, the first by path wins.
    pub fn desired(&self) -> BTreeMap<String, Desired> {
        let mut paths: Vec<&PathBuf> = self.files.keys().collect();
        paths.sort();
        let mut out = BTreeMap::new();
        for p in paths {
            for d in &self.files[p] {
                out.entry(d.key()).or_insert_with(|| d.clone());
            }
        }
        out
    }
}

/// Whether a watcher's event may change what the directory's manifests say. notify's
/// inotify backend also reports opens and read-only closes: the scan's own reads would
/// otherwise wake the next scan, a loop of a scan every debounce period. A closed write
/// still wakes it (a writer's last word on a file).
fn changes_manifests(ev: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode};
    use notify::EventKind;
    let read = matches!(ev.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write));
    !read
        && ev.paths.iter().any(|p| {
            p.file_name()
                .map(|n| is_manifest_name(&n.to_string_lossy()))
                .unwrap_or(true)
        })
}

/// Watches `dir` (inotify through `notify`) and sends a tick per burst of changes (debounced
/// 100 ms) and every 20 s (the kubelet's file check period, in case an event was lost).
pub fn watch(
    dir: PathBuf,
    tx: mpsc::UnboundedSender<()>,
) -> notify::Result<notify::RecommendedWatcher> {
    use notify::Watcher;
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.as_ref().map_or(true, changes_manifests) {
            let _ = raw_tx.send(());
        }
    })?;
    w.watch(&dir, notify::RecursiveMode::NonRecursive)?;
    tokio::spawn(async move {
        loop {
            let got = tokio::time::timeout(Duration::from_secs(20), raw_rx.recv()).await;
            if let Ok(None) = got {
                return;
            }
            // Debounce: a burst of events (write, close, rename) is one reload.
            while let Ok(Some(())) =
                tokio::time::timeout(Duration::from_millis(100), raw_rx.recv()).await
            {}
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    Ok(w)
}

/// The scans of the directory, counted, so a writer of a manifest can wait until the agent's
/// view holds its write: the API answers a write only then, as the API server answers
/// after its store has the object (a `kubectl apply` right after a create must find it).
pub struct Scans {
    kick: mpsc::UnboundedSender<()>,
    started: std::sync::atomic::AtomicU64,
    done: tokio::sync::watch::Sender<u64>,
}

impl Scans {
    /// `kick` wakes the loop (for the scans, the sender of the channel `watch` feeds).
    pub fn new(kick: mpsc::UnboundedSender<()>) -> Self {
        Scans {
            kick,
            started: Default::default(),
            done: tokio::sync::watch::channel(0).0,
        }
    }

    /// The scan loop calls this before it reads the directory; the number goes to `end`.
    pub fn begin(&self) -> u64 {
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1
    }

    /// The scan loop calls this once the scan's result is in the agent's state.
    pub fn end(&self, n: u64) {
        self.done.send_replace(n);
    }

    /// After a write: waits for a scan that began after this call. Bounded, so a stuck
    /// scan loop makes a slow answer, not a hung one.
    pub async fn settle(&self) {
        let want = self.started.load(std::sync::atomic::Ordering::SeqCst) + 1;
        let mut rx = self.done.subscribe();
        let _ = self.kick.send(());
        let _ = tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|d| *d >= want)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_do_not_wake_the_scan() {
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind};
        use notify::{Event, EventKind};
        let ev = |kind, name: &str| Event::new(kind).add_path(PathBuf::from("/m").join(name));
        let open = EventKind::Access(AccessKind::Open(AccessMode::Any));
        let closed = EventKind::Access(AccessKind::Close(AccessMode::Read));
        assert!(!changes_manifests(&ev(open, "p.yaml")));
        assert!(!changes_manifests(&ev(closed, "p.yaml")));
        let written = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert!(changes_manifests(&ev(written, "p.yaml")));
        assert!(changes_manifests(&ev(
            EventKind::Modify(ModifyKind::Any),
            "p.yaml"
        )));
        assert!(changes_manifests(&ev(
            EventKind::Create(CreateKind::File),
            "p.json"
        )));
        assert!(!changes_manifests(&ev(
            EventKind::Create(CreateKind::File),
            ".p.yaml.swp"
        )));
    }

    #[test]
    fn documents_errors_and_names() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.yaml");
        std::fs::write(
            &f,
            "apiVersion: v1\nkind: Pod\nmetadata: {name: one}\nspec:\n  containers: [{name: c, image: busybox}]\n---\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: two}\nspec:\n  containers: [{name: c, image: busybox, ports: [{containerPort: notanumber}]}]\n",
        )
        .unwrap();
        let e = load_file(&f).unwrap_err();
        assert!(
            e.contains("a.yaml: document 1: spec.containers[0].ports[0].containerPort"),
            "{e}"
        );
        std::fs::write(
            &f,
            "apiVersion: v1\nkind: Pod\nmetadata: {name: one}\nspec: {containers: [{name: c}]}\n",
        )
        .unwrap();
        let e = load_file(&f).unwrap_err();
        assert!(
            e.contains("spec.containers[0].image: Required value"),
            "{e}"
        );
        assert!(is_manifest_name("p.yaml"));
        for n in [
            ".p.yaml.swp",
            "p.yaml~",
            ".#p.yaml",
            ".hidden.yaml",
            "notes.txt",
            "p.yaml.swp",
        ] {
            assert!(!is_manifest_name(n), "{n}");
        }
        let doc = serde_json::json!({"a": 1});
        assert_eq!(uid_of(&f, &doc), uid_of(&f, &doc));
        assert_ne!(uid_of(&f, &doc), uid_of(&f, &serde_json::json!({"a": 2})));
    }
}
