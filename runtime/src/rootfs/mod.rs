//! The container's filesystem view: mount propagation, the rootfs bind, every configured
//! mount, `/dev` (devices, symlinks, ptmx), `pivot_root` (or `MS_MOVE` + `chroot` for
//! `--no-pivot`), masked and read-only paths, and a read-only root.
//!
//! Every destination inside the rootfs is opened with `openat2(RESOLVE_IN_ROOT)` and the
//! mount is made onto `/proc/self/fd/N`, so a symlink in the rootfs (even one swapped in
//! while we work) can never send a mount outside it.

mod cgroup_mount;
mod copy_up;
mod devices;
mod in_root;
mod masked_paths;
mod mount_options;
mod mounts;
mod readonly_paths;

pub use devices::mount_console;
pub use mount_options::parse_mount_options;

use crate::error::{Context, Error, Result};
use crate::procfs::{mountinfo, MountInfo};
use devices::{create_device, default_devices, dev_symlinks};
use in_root::{create_file_in_root, open_dir};
use masked_paths::mask_path;
use mount_options::propagation_flag;
use mounts::{is_bind, locked_flags, mount_one};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, fchdir, pivot_root};
use oci_spec::runtime::{Mount, Spec};
use readonly_paths::readonly_path;
use std::os::fd::AsFd;
use std::path::Path;

/// What rootfs setup needs beyond the spec.
pub struct RootfsContext<'a> {
    pub spec: &'a Spec,
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    /// In a user namespace devices cannot be made with mknod: bind the host's instead.
    pub in_user_ns: bool,
    /// The container has its own cgroup namespace (cgroup mounts show only its subtree).
    pub new_cgroup_ns: bool,
}

/// Step 1, before any mount: our mounts must not leak to the host, and the host's may
/// reach us only as `rootfsPropagation` allows.
///
/// An unbindable `/` cannot be the source of the rootfs bind (EINVAL; runc 1.1 fails so), so
/// the set-up runs under rslave then, and step 5 applies the requested propagation after
/// `pivot_root`.
pub fn prepare_propagation(spec: &Spec) -> Result<()> {
    let flags = configured_root_propagation(spec)?
        .filter(|f| !f.contains(MsFlags::MS_UNBINDABLE))
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
        .ctx(|| "setting propagation of / in the container's mount namespace".into())
}

fn configured_root_propagation(spec: &Spec) -> Result<Option<MsFlags>> {
    let Some(p) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
    else {
        return Ok(None);
    };
    match propagation_flag(p) {
        Some(f) => Ok(Some(f)),
        None => Err(Error::Invalid(format!("unknown rootfsPropagation {p:?}"))),
    }
}

/// Step 2: makes the rootfs a mount point of its own (pivot_root needs one), with a parent
/// mount that is not shared (pivot_root refuses a shared one).
pub fn bind_rootfs(spec: &Spec, rootfs: &Path) -> Result<()> {
    // After step 1's default (rslave), or any other recursive propagation but rshared, no
    // mount is shared: only otherwise is the mount table worth reading.
    let may_be_shared = configured_root_propagation(spec)?.is_some_and(|f| {
        f.contains(MsFlags::MS_SHARED) || !f.intersects(MsFlags::MS_REC | MsFlags::MS_UNBINDABLE)
    });
    if let Some(parent) = may_be_shared
        .then(|| mount_point_of(rootfs))
        .transpose()?
        .flatten()
    {
        if parent.shared {
            mount(
                None::<&str>,
                &parent.mount_point,
                None::<&str>,
                MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .ctx(|| format!("making {} private", parent.mount_point.display()))?;
        }
    }
    mount(
        Some(rootfs),
        rootfs,
        Some("bind"),
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("bind-mounting rootfs {}", rootfs.display()))
}

/// Step 3: the configured mounts, then `/dev`'s devices and links.
pub fn mount_all(ctx: &RootfsContext) -> Result<()> {
    let root = open_dir(ctx.rootfs)?;
    let mounts: &[Mount] = ctx.spec.mounts().as_deref().unwrap_or(&[]);
    for m in mounts {
        mount_one(ctx, &root, m)?;
    }
    let dev_is_ours = mounts
        .iter()
        .any(|m| m.destination() == Path::new("/dev") && !is_bind(m));
    if dev_is_ours {
        for dev in default_devices() {
            let configured = ctx
                .spec
                .linux()
                .as_ref()
                .and_then(|l| l.devices().as_ref())
                .is_some_and(|ds| ds.iter().any(|d| d.path() == dev.path()));
            if !configured {
                create_device(&root, &dev, ctx.in_user_ns)?;
            }
        }
        dev_symlinks(&root)?;
    }
    if let Some(devices) = ctx.spec.linux().as_ref().and_then(|l| l.devices().as_ref()) {
        for dev in devices {
            create_device(&root, dev, ctx.in_user_ns)?;
        }
    }
    if ctx
        .spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false)
    {
        // The pty slave is bound here once it exists (after pivot_root).
        create_file_in_root(&root, Path::new("/dev/console"))?;
    }
    Ok(())
}

/// Step 4: swap the root. The old root is detached lazily, after making sure its
/// unmount cannot propagate back to the host.
pub fn enter_root(rootfs: &Path, no_pivot: bool) -> Result<()> {
    if no_pivot {
        chdir(rootfs).ctx(|| format!("chdir {}", rootfs.display()))?;
        mount(
            Some(rootfs),
            "/",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .ctx(|| "moving rootfs onto / (--no-pivot)".into())?;
        nix::unistd::chroot(".").ctx(|| "chroot into rootfs".into())?;
        return chdir("/").ctx(|| "chdir /".into());
    }
    let old_root = open_dir(Path::new("/"))?;
    let new_root = open_dir(rootfs)?;
    fchdir(new_root.as_fd()).ctx(|| "fchdir to rootfs".into())?;
    pivot_root(".", ".").ctx(|| format!("pivot_root to {}", rootfs.display()))?;
    fchdir(old_root.as_fd()).ctx(|| "fchdir to old root".into())?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| "making old root a slave".into())?;
    umount2(".", MntFlags::MNT_DETACH).ctx(|| "detaching old root".into())?;
    chdir("/").ctx(|| "chdir /".into())
}

/// Step 5, inside the new root: masked paths, read-only paths, the root's own propagation
/// and read-only flag.
pub fn finish(spec: &Spec) -> Result<()> {
    let root = open_dir(Path::new("/"))?;
    let linux = spec.linux().as_ref();
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        mask_path(&root, Path::new(p))?;
    }
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        readonly_path(&root, Path::new(p))?;
    }
    if let Some(flags) = configured_root_propagation(spec)? {
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
            .ctx(|| "applying rootfsPropagation to /".into())?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        let locked = locked_flags(Path::new("/"))?;
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked,
            None::<&str>,
        )
        .ctx(|| "remounting / read-only".into())?;
    }
    Ok(())
}

/// The mount that contains `path` (the longest mount point that is a prefix of it).
fn mount_point_of(path: &Path) -> Result<Option<MountInfo>> {
    Ok(mountinfo()
        .ctx(|| "reading /proc/self/mountinfo".into())?
        .into_iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len()))
}
