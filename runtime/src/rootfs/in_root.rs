//! Resolving paths inside the rootfs: every lookup is an `openat2(RESOLVE_IN_ROOT)`
//! relative to the rootfs's descriptor, and mounts are made onto `/proc/self/fd/N`, so a
//! symlink in the rootfs (even one swapped in while we work) can never lead outside it.

use crate::error::{Context, Error, Result};
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

pub(super) fn open_dir(path: &Path) -> Result<OwnedFd> {
    nix::fcntl::open(
        path,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .ctx(|| format!("opening {}", path.display()))
}

/// `/proc/self/fd/N`: a path for mount(2) that names exactly the file we resolved.
pub(super) fn fd_path(fd: &OwnedFd) -> String {
    format!("/proc/self/fd/{}", fd.as_raw_fd())
}

fn in_root_how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// Opens `path` (taken as relative to the root even if absolute) with every symlink
/// resolved as if `root` were `/`.
pub(super) fn open_in_root(root: &OwnedFd, path: &Path, extra: OFlag) -> nix::Result<OwnedFd> {
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
pub(super) fn mkdir_all_in_root(root: &OwnedFd, path: &Path) -> Result<OwnedFd> {
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
pub(super) fn create_file_in_root(root: &OwnedFd, path: &Path) -> Result<OwnedFd> {
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

pub(super) fn split_parent(path: &Path) -> Result<(PathBuf, String)> {
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

/// Opens what is mounted at `path` now. The fd used to make a mount still names the
/// directory underneath (and so does its `/proc/self/fd` link), so the path is resolved
/// again, still confined to the root.
pub(super) fn reopen(root: &OwnedFd, path: &Path) -> Result<OwnedFd> {
    open_in_root(root, path, OFlag::empty()).ctx(|| format!("reopening {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_relative_to_the_root() {
        assert_eq!(relative(Path::new("/dev/null")), Path::new("dev/null"));
        assert_eq!(relative(Path::new("/")), Path::new("."));
    }
}
