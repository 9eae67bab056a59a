//! The pod cgroups of the cgroupfs driver's tree. The agent makes a pod's cgroup with its
//! pod-level limits before the sandbox (as the kubelet's pod container manager does), the
//! runtime makes the containers' cgroups below it, and the agent removes it with the pod.
//! The eviction manager reads the pods' memory use from the top of the tree.

use std::path::{Path, PathBuf};

use crate::resources::PodLimits;

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

fn v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The v1 hierarchy that holds `controller` (`cpu,cpuacct` holds `cpu`).
fn v1_hierarchy(controller: &str) -> Option<PathBuf> {
    hierarchies().into_iter().find(|h| {
        h.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.split(',').any(|c| c == controller))
    })
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| format!("writing {value:?} to {}: {e}", dir.join(file).display()))
}

/// cgroup v1 cpu.shares to v2 cpu.weight (the conversion runc and the kubelet use).
fn weight(shares: i64) -> i64 {
    1 + ((shares.clamp(2, 262_144) - 2) * 9999) / 262_142
}

/// Makes the pod's cgroup `rel` (`/<root>/kubepods/.../pod<uid>`) with `limits`. On v1 in
/// the cpu and memory hierarchies (the runtime makes the others); on v2 with the cpu and
/// memory controllers enabled in every ancestor, as the runtime does for its containers.
pub fn make_pod(rel: &str, limits: &PodLimits) -> Result<(), String> {
    let rel = rel.trim_start_matches('/');
    if v2() {
        let base = PathBuf::from("/sys/fs/cgroup");
        let dir = base.join(rel);
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        // A v2 controller reaches a cgroup only through every ancestor's subtree_control;
        // one already enabled is not written again.
        let mut parent = base.clone();
        for part in Path::new(rel).components() {
            let enabled =
                std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
            for c in ["cpu", "memory"] {
                if !enabled.split_whitespace().any(|e| e == c) {
                    write(&parent, "cgroup.subtree_control", &format!("+{c}"))?;
                }
            }
            parent.push(part);
        }
        write(&dir, "cpu.weight", &weight(limits.cpu_shares).to_string())?;
        let quota = limits
            .cpu_quota
            .map_or_else(|| "max".to_string(), |q| q.to_string());
        write(&dir, "cpu.max", &format!("{quota} {}", PodLimits::PERIOD))?;
        let mem = limits
            .memory
            .map_or_else(|| "max".to_string(), |m| m.to_string());
        return write(&dir, "memory.max", &mem);
    }
    let cpu = v1_hierarchy("cpu").ok_or("no cpu cgroup hierarchy is mounted")?;
    let dir = cpu.join(rel);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    write(&dir, "cpu.shares", &limits.cpu_shares.to_string())?;
    write(&dir, "cpu.cfs_period_us", &PodLimits::PERIOD.to_string())?;
    write(
        &dir,
        "cpu.cfs_quota_us",
        &limits.cpu_quota.unwrap_or(-1).to_string(),
    )?;
    let mem = v1_hierarchy("memory").ok_or("no memory cgroup hierarchy is mounted")?;
    let dir = mem.join(rel);
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    write(
        &dir,
        "memory.limit_in_bytes",
        &limits.memory.unwrap_or(-1).to_string(),
    )
}

/// The working set of cgroup `rel` (usage minus inactive file pages, as cAdvisor counts
/// it for the kubelet); 0 when the cgroup does not exist yet.
pub fn working_set(rel: &str) -> i64 {
    let rel = rel.trim_start_matches('/');
    let (dir, usage_file, inactive_key) = if v2() {
        (
            PathBuf::from("/sys/fs/cgroup").join(rel),
            "memory.current",
            "inactive_file",
        )
    } else {
        let Some(h) = v1_hierarchy("memory") else {
            return 0;
        };
        (h.join(rel), "memory.usage_in_bytes", "total_inactive_file")
    };
    let usage: i64 = std::fs::read_to_string(dir.join(usage_file))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let inactive: i64 = std::fs::read_to_string(dir.join("memory.stat"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == inactive_key).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0);
    (usage - inactive).max(0)
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
fn remove_tree(dir: &Path) {
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

#[cfg(test)]
mod tests {
    use super::weight;

    #[test]
    fn shares_to_weight() {
        assert_eq!(weight(2), 1);
        assert_eq!(weight(1024), 39);
        assert_eq!(weight(262_144), 10_000);
    }
}
