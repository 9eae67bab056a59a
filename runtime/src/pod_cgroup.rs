//! A cgroup that a caller keeps above its containers' cgroups: the CRI server's pod cgroup
//! (a pod's `cgroup_parent`), made, read and removed by the same cgroup driver (v2, or the
//! v1 hierarchies of a hybrid host) that places the containers under it.

use std::path::Path;

use crate::cgroups::{self, Manager};
pub use crate::cgroups::{CgroupError, CgroupRecord, Stats};

/// A cgroup made by [`PodCgroup::create`], or reopened from its record.
pub struct PodCgroup(Box<dyn Manager>);

impl PodCgroup {
    /// Creates the cgroup `path` (absolute in the hierarchy, or relative to this process's
    /// own cgroup, as a container's `cgroupsPath`). [`CgroupError::Exists`] when it is there
    /// already: rrun only removes cgroups it made.
    pub fn create(path: &Path) -> Result<PodCgroup, CgroupError> {
        Ok(PodCgroup(cgroups::create(Some(path), "pod")?))
    }

    /// The cgroup of a record saved earlier (also by another process).
    pub fn open(record: &CgroupRecord) -> PodCgroup {
        PodCgroup(cgroups::open(record))
    }

    /// What to save to reopen it later.
    pub fn record(&self) -> &CgroupRecord {
        self.0.record()
    }

    /// The counters of the cgroup and everything below it, in runc's `events --stats` shape.
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        self.0.stats()
    }

    /// Every process in the cgroup and below it.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        self.0.pids()
    }

    /// Removes the directories that were created for it (once its processes are gone).
    pub fn destroy(&self) -> Result<(), CgroupError> {
        self.0.destroy()
    }
}

/// Whether `/sys/fs/cgroup` is the cgroup v2 unified hierarchy.
pub fn is_unified() -> bool {
    cgroups::is_unified()
}

/// Whether containers here can be limited by the cgroup controller `name` (`hugetlb`,
/// `memory`, ...): enabled at the v2 root, or a v1 hierarchy of it that this process is in.
pub fn controller_available(name: &str) -> bool {
    if cgroups::is_unified() {
        return std::fs::read_to_string(Path::new(cgroups::CGROUP_ROOT).join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|x| x == name));
    }
    cgroups::own_cgroups().is_ok_and(|v| {
        v.iter()
            .any(|(ctrls, _)| ctrls.split(',').any(|c| c == name))
    })
}
