//! The container's filesystem view: mount propagation, the rootfs bind, every configured
//! mount, `/dev` (devices, symlinks, ptmx), `pivot_root` (or `MS_MOVE` + `chroot` for
//! `--no-pivot`), masked and read-only paths, and a read-only root.
//!
//! Every destination inside the rootfs is opened with `openat2(RESOLVE_IN_ROOT)` and the
//! mount is made onto `/proc/self/fd/N`, so a symlink in the rootfs (even one swapped in
//! while we work) can never send a mount outside it.

use crate::error::{Context, Error, Result};
use crate::procfs::{self, mountinfo, CgroupEntry, MountInfo};
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstat, makedev, mknodat, Mode, SFlag};
use nix::unistd::{chdir, fchdir, fchownat, pivot_root, Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType, Mount, Spec};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

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

// ---- mounts ----------------------------------------------------------------------------

/// Mount options split the way mount(2) wants them.
#[derive(Debug, PartialEq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Flags that must be cleared (a later `rw` undoing an earlier `ro`).
    pub clear: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
    /// runc's `tmpcopyup` extension (tmpfs only): the new tmpfs starts with a copy of what
    /// the rootfs has at the destination.
    pub copy_up: bool,
}

pub fn parse_mount_options(options: &[String]) -> Result<MountOptions> {
    let mut out = MountOptions {
        flags: MsFlags::empty(),
        clear: MsFlags::empty(),
        propagation: vec![],
        data: vec![],
        copy_up: false,
    };
    for opt in options {
        if let Some(p) = propagation_flag(opt) {
            out.propagation.push(p);
            continue;
        }
        let (set, flag) = match opt.as_str() {
            "defaults" => continue,
            "ro" => (true, MsFlags::MS_RDONLY),
            "rw" => (false, MsFlags::MS_RDONLY),
            "suid" => (false, MsFlags::MS_NOSUID),
            "nosuid" => (true, MsFlags::MS_NOSUID),
            "dev" => (false, MsFlags::MS_NODEV),
            "nodev" => (true, MsFlags::MS_NODEV),
            "exec" => (false, MsFlags::MS_NOEXEC),
            "noexec" => (true, MsFlags::MS_NOEXEC),
            "sync" => (true, MsFlags::MS_SYNCHRONOUS),
            "async" => (false, MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (true, MsFlags::MS_DIRSYNC),
            "remount" => (true, MsFlags::MS_REMOUNT),
            "mand" => (true, MsFlags::MS_MANDLOCK),
            "nomand" => (false, MsFlags::MS_MANDLOCK),
            "atime" => (false, MsFlags::MS_NOATIME),
            "noatime" => (true, MsFlags::MS_NOATIME),
            "diratime" => (false, MsFlags::MS_NODIRATIME),
            "nodiratime" => (true, MsFlags::MS_NODIRATIME),
            "bind" => (true, MsFlags::MS_BIND),
            "rbind" => (true, MsFlags::MS_BIND | MsFlags::MS_REC),
            "relatime" => (true, MsFlags::MS_RELATIME),
            "norelatime" => (false, MsFlags::MS_RELATIME),
            "strictatime" => (true, MsFlags::MS_STRICTATIME),
            "nostrictatime" => (false, MsFlags::MS_STRICTATIME),
            "lazytime" => (true, MsFlags::MS_LAZYTIME),
            "nolazytime" => (false, MsFlags::MS_LAZYTIME),
            "silent" => (true, MsFlags::MS_SILENT),
            "loud" => (false, MsFlags::MS_SILENT),
            "tmpcopyup" => {
                out.copy_up = true;
                continue;
            }
            "idmap" | "ridmap" => {
                return Err(Error::Invalid(format!(
                    "mount option {opt:?} is not supported"
                )))
            }
            o if o.len() > 1
                && o.starts_with('r')
                && matches!(
                    &o[1..],
                    "ro" | "rw" | "nosuid" | "nodev" | "noexec" | "noatime"
                ) =>
            {
                return Err(Error::Invalid(format!(
                    "recursive mount option {opt:?} is not supported"
                )))
            }
            _ => {
                out.data.push(opt.clone());
                continue;
            }
        };
        if set {
            out.flags |= flag;
            out.clear &= !flag;
        } else {
            out.flags &= !flag;
            out.clear |= flag;
        }
    }
    Ok(out)
}

fn propagation_flag(opt: &str) -> Option<MsFlags> {
    Some(match opt {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o == "bind" || o == "rbind"))
}

fn mount_one(ctx: &RootfsContext, root: &OwnedFd, m: &Mount) -> Result<()> {
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

/// A directory descriptor that can be read (`fd` may be an `O_PATH` one).
fn open_readable_dir(fd: &OwnedFd) -> nix::Result<OwnedFd> {
    nix::fcntl::openat(
        fd.as_fd(),
        ".",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Past this depth a copy-up gives up: an image's tree is never that deep, a hostile one
/// must not exhaust the stack.
const COPY_UP_MAX_DEPTH: usize = 128;

/// Copies the tree under `from` into `to` (runc's `tmpcopyup`) with owners and modes: files,
/// directories, symlinks (as links, never followed) and device/fifo/socket nodes. Every
/// step is relative to a descriptor and refuses to follow a symlink, so a hostile image
/// cannot make it read or write outside the two trees.
fn copy_tree(from: &OwnedFd, to: &OwnedFd, depth: usize) -> Result<()> {
    use nix::fcntl::{openat, readlinkat, AtFlags};
    use nix::sys::stat::{fchmod, fstatat, mkdirat};
    if depth > COPY_UP_MAX_DEPTH {
        return Err(Error::Invalid(format!(
            "deeper than {COPY_UP_MAX_DEPTH} directories"
        )));
    }
    let dir_flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = nix::dir::Dir::openat(from.as_fd(), ".", dir_flags, Mode::empty())
        .ctx(|| "opening a directory".into())?;
    for entry in dir.iter() {
        let entry = entry.ctx(|| "reading a directory".into())?;
        let name = entry.file_name();
        if name.to_bytes() == b"." || name.to_bytes() == b".." {
            continue;
        }
        let named = || name.to_string_lossy().into_owned();
        let st = fstatat(from.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW).ctx(named)?;
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let perm = Mode::from_bits_truncate(st.st_mode & 0o7777);
        let (uid, gid) = (
            Some(Uid::from_raw(st.st_uid)),
            Some(Gid::from_raw(st.st_gid)),
        );
        match kind {
            SFlag::S_IFDIR => {
                mkdirat(to.as_fd(), name, Mode::from_bits_truncate(0o700)).ctx(named)?;
                let src = openat(from.as_fd(), name, dir_flags, Mode::empty()).ctx(named)?;
                let dst = openat(to.as_fd(), name, dir_flags, Mode::empty()).ctx(named)?;
                copy_tree(&src, &dst, depth + 1)?;
                nix::unistd::fchown(dst.as_fd(), uid, gid).ctx(named)?;
                fchmod(dst.as_fd(), perm).ctx(named)?;
            }
            SFlag::S_IFREG => {
                let src = openat(
                    from.as_fd(),
                    name,
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::empty(),
                )
                .ctx(named)?;
                let dst = openat(
                    to.as_fd(),
                    name,
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .ctx(named)?;
                nix::unistd::fchown(dst.as_fd(), uid, gid).ctx(named)?;
                fchmod(dst.as_fd(), perm).ctx(named)?;
                std::io::copy(&mut File::from(src), &mut File::from(dst))
                    .ctx(|| format!("copying {}", name.to_string_lossy()))?;
            }
            SFlag::S_IFLNK => {
                let link = readlinkat(from.as_fd(), name).ctx(named)?;
                nix::unistd::symlinkat(link.as_os_str(), to.as_fd(), name).ctx(named)?;
                fchownat(to.as_fd(), name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW).ctx(named)?;
            }
            _ => {
                mknodat(to.as_fd(), name, kind, perm, st.st_rdev).ctx(named)?;
                fchownat(to.as_fd(), name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW).ctx(named)?;
                // A node this copy just made in a fresh tmpfs (mknod's mode is umasked).
                nix::sys::stat::fchmodat(
                    to.as_fd(),
                    name,
                    perm,
                    nix::sys::stat::FchmodatFlags::FollowSymlink,
                )
                .ctx(named)?;
            }
        }
    }
    Ok(())
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

/// Opens what is mounted at `path` now. The fd used to make a mount still names the
/// directory underneath (and so does its `/proc/self/fd` link), so the path is resolved
/// again, still confined to the root.
fn reopen(root: &OwnedFd, path: &Path) -> Result<OwnedFd> {
    open_in_root(root, path, OFlag::empty()).ctx(|| format!("reopening {}", path.display()))
}

fn absolute_source(bundle: &Path, source: &Path) -> PathBuf {
    if source.is_absolute() {
        source.to_path_buf()
    } else {
        bundle.join(source)
    }
}

/// Flags of the mount at `path` that an unprivileged remount may not drop.
fn locked_flags(path: &Path) -> Result<MsFlags> {
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

// ---- cgroup mounts ---------------------------------------------------------------------

/// A `cgroup` mount shows the container its own cgroups: with a cgroup namespace the
/// kernel does the scoping and we mount the hierarchies; without one we bind the
/// directories of the cgroups the init is in. On v1 and hybrid hosts that is a tmpfs with
/// one directory per hierarchy, as runc lays it out.
fn mount_cgroup(
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

// ---- mount table -----------------------------------------------------------------------

/// The mount that contains `path` (the longest mount point that is a prefix of it).
fn mount_point_of(path: &Path) -> Result<Option<MountInfo>> {
    Ok(mountinfo()
        .ctx(|| "reading /proc/self/mountinfo".into())?
        .into_iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len()))
}

// ---- devices ---------------------------------------------------------------------------

fn device(path: &str, major: i64, minor: i64) -> LinuxDevice {
    let mut d = LinuxDevice::default();
    d.set_path(PathBuf::from(path))
        .set_typ(LinuxDeviceType::C)
        .set_major(major)
        .set_minor(minor)
        .set_file_mode(Some(0o666))
        .set_uid(Some(0))
        .set_gid(Some(0));
    d
}

/// The devices runtime-spec says every container has.
pub fn default_devices() -> Vec<LinuxDevice> {
    vec![
        device("/dev/null", 1, 3),
        device("/dev/zero", 1, 5),
        device("/dev/full", 1, 7),
        device("/dev/random", 1, 8),
        device("/dev/urandom", 1, 9),
        device("/dev/tty", 5, 0),
    ]
}

fn create_device(root: &OwnedFd, dev: &LinuxDevice, bind_host: bool) -> Result<()> {
    let path = dev.path();
    if bind_host {
        let target = create_file_in_root(root, path)?;
        return mount(
            Some(path),
            fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(|| format!("binding host device {}", path.display()));
    }
    let kind = match dev.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(Error::Invalid(format!(
                "device {}: type 'a' cannot be created",
                path.display()
            )))
        }
    };
    let (parent, name) = split_parent(path)?;
    let dir = mkdir_all_in_root(root, &parent)?;
    let perm = Mode::from_bits_truncate(dev.file_mode().unwrap_or(0o666) & 0o7777);
    let rdev = makedev(dev.major() as u64, dev.minor() as u64);
    // A device already in the image (or made by an earlier entry) is replaced.
    let _ = nix::unistd::unlinkat(
        dir.as_fd(),
        name.as_str(),
        nix::unistd::UnlinkatFlags::NoRemoveDir,
    );
    mknodat(dir.as_fd(), name.as_str(), kind, perm, rdev)
        .ctx(|| format!("mknod {}", path.display()))?;
    fchownat(
        dir.as_fd(),
        name.as_str(),
        dev.uid().map(Uid::from_raw),
        dev.gid().map(Gid::from_raw),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .ctx(|| format!("chown {}", path.display()))
}

fn dev_symlinks(root: &OwnedFd) -> Result<()> {
    let dev = mkdir_all_in_root(root, Path::new("/dev"))?;
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("pts/ptmx", "ptmx"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        let _ = nix::unistd::unlinkat(dev.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir);
        nix::unistd::symlinkat(target, dev.as_fd(), name)
            .ctx(|| format!("symlink /dev/{name} -> {target}"))?;
    }
    Ok(())
}

/// Binds the terminal's slave onto `/dev/console` (inside the new root).
pub fn mount_console(slave_path: &Path) -> Result<()> {
    mount(
        Some(slave_path),
        "/dev/console",
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .ctx(|| format!("binding {} on /dev/console", slave_path.display()))
}

// ---- masked and read-only paths --------------------------------------------------------

fn mask_path(root: &OwnedFd, path: &Path) -> Result<()> {
    let target = match open_in_root(root, path, OFlag::empty()) {
        Ok(t) => t,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e).ctx(|| format!("opening masked path {}", path.display())),
    };
    let st = fstat(target.as_fd()).ctx(|| format!("stat {}", path.display()))?;
    let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
    if is_dir {
        mount(
            Some("tmpfs"),
            fd_path(&target).as_str(),
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .ctx(|| format!("masking {}", path.display()))
    } else {
        check_dev_null()?;
        mount(
            Some("/dev/null"),
            fd_path(&target).as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .ctx(|| format!("masking {}", path.display()))
    }
}

/// A container could have replaced `/dev/null` before we mask with it; only the real null
/// device (char 1:3) will do.
fn check_dev_null() -> Result<()> {
    let meta = std::fs::symlink_metadata("/dev/null").ctx(|| "stat /dev/null".into())?;
    if !meta.file_type().is_char_device() || meta.rdev() != makedev(1, 3) {
        return Err(Error::Invalid(
            "/dev/null in the container is not the null device; refusing to mask with it".into(),
        ));
    }
    Ok(())
}

fn readonly_path(root: &OwnedFd, path: &Path) -> Result<()> {
    let target = match open_in_root(root, path, OFlag::empty()) {
        Ok(t) => t,
        Err(nix::errno::Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(e).ctx(|| format!("opening read-only path {}", path.display())),
    };
    let p = fd_path(&target);
    mount(
        Some(p.as_str()),
        p.as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .ctx(|| format!("binding {} onto itself", path.display()))?;
    let mounted = reopen(root, path)?;
    let mp = fd_path(&mounted);
    let locked = locked_flags(Path::new(&mp))?;
    mount(
        None::<&str>,
        mp.as_str(),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | locked,
        None::<&str>,
    )
    .ctx(|| format!("remounting {} read-only", path.display()))
}

// ---- resolving inside the root ---------------------------------------------------------

fn open_dir(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("opening {}", path.display()))
}

/// `/proc/self/fd/N`: a path for mount(2) that names exactly the file we resolved.
fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn in_root_how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Opens `path` (taken as relative to the root even if absolute) with every symlink
/// resolved as if `root` were `/`.
fn open_in_root(root: &OwnedFd, path: &Path, extra: OFlag) -> nix::Result<OwnedFd> {
    let rel = relative(path);
    let how = in_root_how(OFlag::O_PATH | extra);
    let fd = openat2_retrying(root, &rel, how)?;
    // SAFETY: openat2 returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd.into_raw_fd_compat()) })
}

/// The kernel answers EAGAIN when a rename anywhere on the system raced a lookup that went
/// through "..": it asks to be asked again.
fn openat2_retrying(root: &OwnedFd, rel: &Path, how: OpenHow) -> nix::Result<OwnedFd> {
    let mut tries = 0;
    loop {
        match openat2(root.as_fd(), rel, how) {
            Err(nix::errno::Errno::EAGAIN) if tries < 64 => tries += 1,
            other => return other,
        }
    }
}

fn relative(path: &Path) -> PathBuf {
    let rel: PathBuf = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_) | Component::ParentDir))
        .collect();
    if rel.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        rel
    }
}

/// `mkdir -p` inside the root: finds the deepest ancestor that exists, then makes the rest
/// one component at a time, each looked up again in the root (so a symlink raced in
/// between cannot lead out of it).
pub(crate) fn mkdir_all_in_root(root: &OwnedFd, path: &Path) -> Result<OwnedFd> {
    let rel = relative(path);
    let comps: Vec<Component> = rel.components().collect();
    let prefix = |n: usize| -> PathBuf {
        if n == 0 {
            PathBuf::from(".")
        } else {
            comps[..n].iter().collect()
        }
    };
    let mut existing = comps.len();
    let mut current = loop {
        match open_in_root(root, &prefix(existing), OFlag::empty()) {
            Ok(fd) => break fd,
            Err(nix::errno::Errno::ENOENT) if existing > 0 => existing -= 1,
            Err(e) => {
                return Err(e).ctx(|| format!("opening {} in rootfs", prefix(existing).display()))
            }
        }
    };
    for (n, comp) in comps.iter().enumerate().skip(existing) {
        let name = comp.as_os_str();
        match nix::sys::stat::mkdirat(current.as_fd(), name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => return Err(e).ctx(|| format!("mkdir {} in rootfs", prefix(n + 1).display())),
        }
        current = open_in_root(root, &prefix(n + 1), OFlag::O_DIRECTORY)
            .ctx(|| format!("opening {} in rootfs", prefix(n + 1).display()))?;
    }
    Ok(current)
}

/// Makes sure a file exists at `path` inside the root (a bind-mount target) and opens it.
pub(crate) fn create_file_in_root(root: &OwnedFd, path: &Path) -> Result<OwnedFd> {
    match open_in_root(root, path, OFlag::empty()) {
        Ok(fd) => return Ok(fd),
        Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(e).ctx(|| format!("opening {} in rootfs", path.display())),
    }
    let (parent, _) = split_parent(path)?;
    mkdir_all_in_root(root, &parent)?;
    let how = in_root_how(OFlag::O_CREAT | OFlag::O_WRONLY | OFlag::O_NOFOLLOW)
        .mode(Mode::from_bits_truncate(0o644));
    let fd = openat2_retrying(root, &relative(path), how)
        .ctx(|| format!("creating {} in rootfs", path.display()))?;
    drop(fd);
    open_in_root(root, path, OFlag::empty()).ctx(|| format!("opening {} in rootfs", path.display()))
}

fn split_parent(path: &Path) -> Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Invalid(format!("bad path {}", path.display())))?;
    Ok((
        path.parent().unwrap_or(Path::new("/")).to_path_buf(),
        name.to_string(),
    ))
}

/// nix returns `OwnedFd` or `RawFd` from openat2 depending on version; this bridges both.
trait IntoRawFdCompat {
    fn into_raw_fd_compat(self) -> std::os::fd::RawFd;
}
impl IntoRawFdCompat for OwnedFd {
    fn into_raw_fd_compat(self) -> std::os::fd::RawFd {
        std::os::fd::IntoRawFd::into_raw_fd(self)
    }
}
impl IntoRawFdCompat for std::os::fd::RawFd {
    fn into_raw_fd_compat(self) -> std::os::fd::RawFd {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_mount_options(&s(&[
            "nosuid", "ro", "rbind", "rslave", "size=64k", "mode=755",
        ]))
        .unwrap();
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC
        );
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert_eq!(o.data, s(&["size=64k", "mode=755"]));
    }

    #[test]
    fn a_later_option_undoes_an_earlier_one() {
        let o = parse_mount_options(&s(&["ro", "rw", "noexec", "exec"])).unwrap();
        assert!(o.flags.is_empty());
        assert!(o.clear.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC));
    }

    #[test]
    fn unsupported_options_are_errors_not_silently_dropped() {
        assert!(parse_mount_options(&s(&["idmap"])).is_err());
        assert!(parse_mount_options(&s(&["rro"])).is_err());
    }

    #[test]
    fn tmpcopyup_is_a_flag_of_ours_not_filesystem_data() {
        let o = parse_mount_options(&s(&["nosuid", "tmpcopyup", "mode=1777"])).unwrap();
        assert!(o.copy_up);
        assert_eq!(o.data, s(&["mode=1777"]));
        assert!(!parse_mount_options(&s(&["nosuid"])).unwrap().copy_up);
    }

    #[test]
    fn paths_are_made_relative_to_the_root() {
        assert_eq!(relative(Path::new("/dev/null")), Path::new("dev/null"));
        assert_eq!(relative(Path::new("/")), Path::new("."));
    }
}
