//! A `cgroup` mount: the container's view of its own cgroups, on v2, v1 and hybrid hosts.

use super::in_root::{fd_path, mkdir_all_in_root, reopen};
use super::mount_options::MountOptions;
use super::RootfsContext;
use crate::error::{Context, Error, Result};
use crate::procfs::{self, mountinfo, CgroupEntry};
use nix::mount::{mount, MsFlags};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A `cgroup` mount shows the container its own cgroups: with a cgroup namespace the
/// kernel does the scoping and we mount the hierarchies; without one we bind the
/// directories of the cgroups the init is in. On v1 and hybrid hosts that is a tmpfs with
/// one directory per hierarchy, as runc lays it out.
pub(super) fn mount_cgroup(
    ctx: &RootfsContext,
    root: &OwnedFd,
    dest: &Path,
    opts: &MountOptions,
) -> Result<()> {
    let ro = opts.flags
        & (MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
    let hierarchies = cgroup_hierarchies()?;
    // Without a cgroup namespace each hierarchy is bound from our own cgroup in it: one
    // read of /proc/self/cgroup serves them all.
    let own_cgroups = if ctx.new_cgroup_ns {
        Vec::new()
    } else {
        procfs::self_cgroups().ctx(|| "reading /proc/self/cgroup".into())?
    };
    let target = mkdir_all_in_root(root, dest)?;
    let unified_only = hierarchies.len() == 1
        && hierarchies[0].fstype == "cgroup2"
        && hierarchies[0].mount_point == Path::new("/sys/fs/cgroup");
    if unified_only {
        return mount_hierarchy(ctx, &hierarchies[0], &own_cgroups, root, dest, &target, ro);
    }
    mount(
        Some("tmpfs"),
        fd_path(&target).as_str(),
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=755"),
    )
    .ctx(|| format!("mounting tmpfs for cgroups on {}", dest.display()))?;
    let base = reopen(root, dest)?;
    for h in &hierarchies {
        let Some(name) = h.mount_point.file_name() else {
            continue;
        };
        let sub = dest.join(name);
        let dir = mkdir_all_in_root(root, &sub)?;
        mount_hierarchy(ctx, h, &own_cgroups, root, &sub, &dir, ro)?;
    }
    // Co-mounted controllers ("cpu,cpuacct") are reached through symlinks like "cpu".
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_symlink()) {
                if let Ok(link) = std::fs::read_link(e.path()) {
                    let _ = nix::unistd::symlinkat(&link, base.as_fd(), e.file_name().as_os_str());
                }
            }
        }
    }
    if !ro.is_empty() {
        mount(
            None::<&str>,
            fd_path(&base).as_str(),
            None::<&str>,
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | ro,
            None::<&str>,
        )
        .ctx(|| format!("remounting {} read-only", dest.display()))?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn mount_hierarchy(
    ctx: &RootfsContext,
    h: &CgroupHierarchy,
    own_cgroups: &[CgroupEntry],
    root: &OwnedFd,
    path: &Path,
    dir: &OwnedFd,
    flags: MsFlags,
) -> Result<()> {
    let target = fd_path(dir);
    if ctx.new_cgroup_ns {
        let data = (h.fstype == "cgroup").then(|| h.super_options.clone());
        return mount(
            Some(h.fstype.as_str()),
            target.as_str(),
            Some(h.fstype.as_str()),
            flags,
            data.as_deref(),
        )
        .ctx(|| format!("mounting {} {}", h.fstype, h.mount_point.display()));
    }
    let own = own_cgroup_path(h, own_cgroups)?;
    let source = h.mount_point.join(own.trim_start_matches('/'));
    mount(
        Some(&source),
        target.as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("binding cgroup {}", source.display()))?;
    if !flags.is_empty() {
        let mounted = reopen(root, path)?;
        mount(
            None::<&str>,
            fd_path(&mounted).as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
            None::<&str>,
        )
        .ctx(|| format!("remounting cgroup {} read-only", source.display()))?;
    }
    Ok(())
}

#[derive(Debug)]
struct CgroupHierarchy {
    mount_point: PathBuf,
    fstype: String,
    /// For v1: the controllers (and `name=`) that identify the hierarchy.
    super_options: String,
}

fn cgroup_hierarchies() -> Result<Vec<CgroupHierarchy>> {
    let mut out: Vec<CgroupHierarchy> = Vec::new();
    for m in mountinfo().ctx(|| "reading /proc/self/mountinfo".into())? {
        // A later mount on or above a hierarchy hides it (see cgroups::v1::hierarchies).
        out.retain(|h| !h.mount_point.starts_with(&m.mount_point));
        if m.fstype != "cgroup" && m.fstype != "cgroup2" {
            continue;
        }
        // A hierarchy may be mounted more than once; the first mount under /sys/fs/cgroup wins.
        if !m.mount_point.starts_with("/sys/fs/cgroup") {
            continue;
        }
        let super_options = m
            .super_options
            .split(',')
            .filter(|o| *o != "rw" && *o != "ro")
            .collect::<Vec<_>>()
            .join(",");
        out.push(CgroupHierarchy {
            mount_point: m.mount_point,
            fstype: m.fstype,
            super_options,
        });
    }
    Ok(out)
}

/// The path of our own cgroup in hierarchy `h`, from `/proc/self/cgroup`.
fn own_cgroup_path(h: &CgroupHierarchy, own: &[CgroupEntry]) -> Result<String> {
    for entry in own {
        let ctrls = entry.controllers.as_str();
        let matches = if h.fstype == "cgroup2" {
            ctrls.is_empty()
        } else {
            let mut mine: Vec<&str> = ctrls.split(',').collect();
            let mut theirs: Vec<&str> = h.super_options.split(',').collect();
            mine.sort_unstable();
            theirs.sort_unstable();
            !ctrls.is_empty() && mine == theirs
        };
        if matches {
            return Ok(entry.path.to_string_lossy().into_owned());
        }
    }
    Err(Error::Invalid(format!(
        "no cgroup of ours in {}",
        h.mount_point.display()
    )))
}
