//! runc's `tmpcopyup`: a new tmpfs starts with a copy of what the image has at its
//! destination, made without ever following a symlink.

use crate::error::{Context, Error, Result};
use nix::fcntl::OFlag;
use nix::sys::stat::{mknodat, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};

/// A directory descriptor that can be read (`fd` may be an `O_PATH` one).
pub(super) fn open_readable_dir(fd: &OwnedFd) -> nix::Result<OwnedFd> {
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
pub(super) fn copy_tree(from: &OwnedFd, to: &OwnedFd, depth: usize) -> Result<()> {
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
