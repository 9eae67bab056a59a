//! The pod cgroups of the cgroupfs driver's tree: the runtime makes them as the parents of
//! the containers' cgroups; the agent removes them with the pod (as the kubelet does).

use std::path::PathBuf;

/// Every mount point of a cgroup hierarchy (v2: one; v1: one per controller).
fn hierarchies() -> Vec<PathBuf> {
    let base = PathBuf::from("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base];
    }
    std::fs::read_dir(&base)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes `<root>/kubepods[/class]/pod<uid>` (and what is empty below it) wherever present.
pub fn remove_pod(cgroup_root: &str, uid: &str) {
    let root = cgroup_root.trim_matches('/');
    for h in hierarchies() {
        for class in ["", "burstable/", "besteffort/"] {
            let rel = format!("{root}/kubepods/{class}pod{uid}");
            let dir = h.join(rel.trim_start_matches('/'));
            if dir.is_dir() {
                remove_tree(&dir);
            }
        }
    }
}

/// rmdir depth first; a cgroup with processes stays (and is logged).
fn remove_tree(dir: &std::path::Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    if let Err(e) = std::fs::remove_dir(dir) {
        tracing::warn!("removing the cgroup {}: {e}", dir.display());
    }
}
