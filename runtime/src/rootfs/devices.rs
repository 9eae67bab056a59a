//! `/dev`: the default and configured device nodes (bound from the host in a user
//! namespace), its standard symlinks, and the console.

use super::in_root::{create_file_in_root, fd_path, mkdir_all_in_root, split_parent};
use crate::error::{Context, Error, Result};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknodat, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

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
pub(super) fn default_devices() -> Vec<LinuxDevice> {
    vec![
        device("/dev/null", 1, 3),
        device("/dev/zero", 1, 5),
        device("/dev/full", 1, 7),
        device("/dev/random", 1, 8),
        device("/dev/urandom", 1, 9),
        device("/dev/tty", 5, 0),
    ]
}

pub(super) fn create_device(root: &OwnedFd, dev: &LinuxDevice, bind_host: bool) -> Result<()> {
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

pub(super) fn dev_symlinks(root: &OwnedFd) -> Result<()> {
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
