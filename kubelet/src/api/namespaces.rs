//! Namespace deletion, as the API server and its namespace controller do it: a deleted
//! namespace made through the API turns `Terminating` (a `deletionTimestamp` in its file
//! under `<root-dir>/api-namespaces/`), refuses new content, and a controller then deletes
//! the objects made through the API in it (their pods go with their owners) and the
//! namespace last. Objects of manifest files stay: their files define them.
//!
//! The controller waits [`GRACE`] before it collects: the API server's controller starts
//! with discovery and deletes collection by collection, so a client that deletes a file of
//! a namespace and its objects (`kubectl delete -f`, the namespace first) finds each object
//! still there; collecting at once would answer it NotFound.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

use crate::state::Shared;

/// How long a Terminating namespace keeps its content.
const GRACE: Duration = Duration::from_secs(10);

fn dir(shared: &Shared) -> PathBuf {
    shared.config.root_dir.join("api-namespaces")
}

/// The time to stamp a namespace's deletion with.
pub fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Whether a namespace made through the API is being deleted.
pub fn terminating(shared: &Shared, ns: &str) -> bool {
    read(&dir(shared).join(format!("{ns}.json")))
        .is_some_and(|v| v["metadata"]["deletionTimestamp"].is_string())
}

fn read(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Runs the controller: each second, the namespaces Terminating for longer than [`GRACE`]
/// lose their content, then go. It picks up after a restart from the files.
pub fn spawn_controller(shared: Arc<Shared>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if collect(&shared) {
                shared.scans.settle().await;
                shared.changes.mark();
            }
        }
    });
}

/// One pass; whether it removed anything.
fn collect(shared: &Shared) -> bool {
    let mut removed = false;
    for e in std::fs::read_dir(dir(shared))
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = e.path();
        let Some(ns) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"))
            .map(str::to_string)
        else {
            continue;
        };
        let Some(v) = read(&path) else {
            continue;
        };
        let Some(since) = v["metadata"]["deletionTimestamp"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        else {
            continue;
        };
        // Someone's finalizer holds it (finalizers.rs): it waits, Terminating.
        let held = v["metadata"]["finalizers"]
            .as_array()
            .is_some_and(|f| !f.is_empty());
        let age = Utc::now().signed_duration_since(since);
        if age.to_std().unwrap_or_default() < GRACE {
            continue;
        }
        delete_contents(shared, &ns);
        if held {
            continue;
        }
        if let Err(err) = std::fs::remove_file(&path) {
            tracing::warn!(
                "deleting namespace {ns}: removing {}: {err}",
                path.display()
            );
        }
        tracing::info!(namespace = %ns, "namespace deleted with its content");
        removed = true;
    }
    removed
}

/// Removes the files of the objects made through the API in `ns`. Namespace names are DNS
/// labels and plurals have no `_`, so the prefix names this namespace's files only.
fn delete_contents(shared: &Shared, ns: &str) {
    let prefix = format!("_api_{ns}_");
    let dir = &shared.config.manifest_dir;
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix))
        {
            if let Err(err) = std::fs::remove_file(e.path()) {
                tracing::warn!(
                    "deleting namespace {ns}: removing {}: {err}",
                    e.path().display()
                );
            }
        }
    }
}
