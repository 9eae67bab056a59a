//! One configured mount: a bind (remounted for its flags, keeping the ones the kernel
//! locked), a `cgroup` mount (see `cgroup_mount.rs`), or a filesystem (tmpfs with
//! `tmpcopyup` filled by `copy_up.rs`), then its propagation.

use super::cgroup_mount::mount_cgroup;
use super::copy_up::{copy_tree, open_readable_dir};
use super::in_root::{create_file_in_root, fd_path, mkdir_all_in_root, reopen};
use super::mount_options::{parse_mount_options, MountOptions};
use super::RootfsContext;
use crate::error::{Context, Error, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, Mode};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::Mount;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

pub(super) fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
}

pub(super) fn mount_one(ctx: &RootfsContext, root: &OwnedFd, m: &Mount) -> Result<()> {
    let dest = m.destination();
    let opts = parse_mount_options(m.options().as_deref().unwrap_or(&[]))
        .map_err(|e| Error::Invalid(format!("mount {}: {e}", dest.display())))?;
    let typ = m.typ().as_deref().unwrap_or("");
    let fail = |what: &str| format!("mounting {typ} {} on {}", what, dest.display());

    if typ == "cgroup" || typ == "cgroup2" {
        return mount_cgroup(ctx, root, dest, &opts);
    }

    if is_bind(m) {
        let source = m
            .source()
            .as_ref()
            .map(|s| absolute_source(ctx.bundle, s))
            .ok_or_else(|| {
                Error::Invalid(format!("bind mount {} has no source", dest.display()))
            })?;
        let meta =
            std::fs::metadata(&source).ctx(|| format!("bind mount source {}", source.display()))?;
        let target = if meta.is_dir() {
            mkdir_all_in_root(root, dest)?
        } else {
            create_file_in_root(root, dest)?
        };
        let target_path = fd_path(&target);
        let bind_flags = opts.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
        mount(
            Some(&source),
            target_path.as_str(),
            None::<&str>,
            bind_flags,
            None::<&str>,
        )
        .ctx(|| fail(&source.display().to_string()))?;
        // A bind mount ignores every other flag: they take a remount, which must keep the
        // flags the kernel locked on the source (nosuid/nodev/noexec in a user namespace).
        let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
        if !extra.is_empty() {
            let mounted = reopen(root, dest)?;
            let locked = locked_flags(Path::new(&fd_path(&mounted)))? & !opts.clear;
            mount(
                None::<&str>,
                fd_path(&mounted).as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra | locked,
                None::<&str>,
            )
            .ctx(|| format!("remounting bind mount {} with its options", dest.display()))?;
        }
        return apply_propagation(root, dest, &opts);
    }

    let target = mkdir_all_in_root(root, dest)?;
    let target_path = fd_path(&target);
    if opts.copy_up && typ != "tmpfs" {
        return Err(Error::Invalid(format!(
            "mount {}: tmpcopyup is only for tmpfs mounts",
            dest.display()
        )));
    }
    // Opened before the mount covers it: the descriptor keeps naming the image's directory.
    let copy_from = if opts.copy_up {
        Some(open_readable_dir(&target).ctx(|| format!("opening {} to copy up", dest.display()))?)
    } else {
        None
    };
    let source = m
        .source()
        .as_ref()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| typ.to_string());
    let mut data = opts.data.clone();
    if matches!(typ, "tmpfs" | "devpts") {
        data.extend(crate::security::lsm::mount_label_option(ctx.spec));
    }
    let data = data.join(",");
    let data = (!data.is_empty()).then_some(data);
    let flags = opts.flags & !MsFlags::MS_REMOUNT;
    let result = mount(
        Some(source.as_str()),
        target_path.as_str(),
        Some(typ),
        flags,
        data.as_deref(),
    );
    match result {
        Ok(()) => {}
        // sysfs cannot be mounted where the network namespace is not ours (host network in
        // a user namespace): bind the host's, as runc does.
        Err(nix::errno::Errno::EPERM) if typ == "sysfs" => {
            mount(
                Some("/sys"),
                target_path.as_str(),
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .ctx(|| fail("/sys"))?;
        }
        Err(e) => return Err(e).ctx(|| fail(&source)),
    }
    if let Some(from) = copy_from {
        let copy = || -> Result<()> {
            let top = || "the tmpfs".to_string();
            let to = open_readable_dir(&reopen(root, dest)?).ctx(top)?;
            copy_tree(&from, &to, 0)?;
            let st = fstat(from.as_fd()).ctx(top)?;
            nix::unistd::fchown(
                to.as_fd(),
                Some(Uid::from_raw(st.st_uid)),
                Some(Gid::from_raw(st.st_gid)),
            )
            .ctx(top)?;
            nix::sys::stat::fchmod(to.as_fd(), Mode::from_bits_truncate(st.st_mode & 0o7777))
                .ctx(top)?;
            Ok(())
        };
        copy().map_err(|e| Error::Invalid(format!("tmpcopyup of {}: {e}", dest.display())))?;
    }
    apply_propagation(root, dest, &opts)
}

fn apply_propagation(root: &OwnedFd, dest: &Path, opts: &MountOptions) -> Result<()> {
    if opts.propagation.is_empty() {
        return Ok(());
    }
    let mounted = reopen(root, dest)?;
    for p in &opts.propagation {
        mount(
            None::<&str>,
            fd_path(&mounted).as_str(),
            None::<&str>,
            *p,
            None::<&str>,
        )
        .ctx(|| format!("setting propagation of {}", dest.display()))?;
    }
    Ok(())
}

fn absolute_source(bundle: &Path, source: &Path) -> PathBuf {
    if source.is_absolute() {
        source.to_path_buf()
    } else {
        bundle.join(source)
    }
}

/// Flags of the mount at `path` that an unprivileged remount may not drop.
pub(super) fn locked_flags(path: &Path) -> Result<MsFlags> {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let st = statvfs(path).ctx(|| format!("statvfs {}", path.display()))?;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    Ok(out)
}
