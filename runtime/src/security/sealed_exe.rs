//! Running the runtime from a view of its own binary that nothing can write to
//! (CVE-2019-5736).
//!
//! A process that is about to become the container's program *is*, until its `execve`,
//! the runtime binary. If the container makes that `execve` run the runtime again (a
//! symlink to `/proc/self/exe`, or a script starting `#!/proc/self/exe`), it can hold
//! `/proc/PID/exe` of the result open and write through it once the process is gone:
//! the host's runtime binary would be overwritten. Being non-dumpable only covers the time
//! before `execve`. So the commands that put processes into containers first re-execute
//! the runtime from a binary that cannot be written through `/proc/self/exe`:
//!
//! - first choice (as runc 1.2 does): the binary as seen through a read-only overlayfs that
//!   is mounted nowhere. The mount API makes it (`fsopen("overlay")`, the binary's
//!   directory as the upper of two lower layers, `fsmount` read-only) without attaching it
//!   to any mount namespace; the binary is opened inside it and `execveat`ed. Nothing is
//!   copied, the page cache is the host file's, and there is no upper layer to copy up to:
//!   a write through the exe link fails with `EROFS`, and nothing leads from the overlay's
//!   file back to the host's.
//! - fallback, when the kernel refuses that (no overlayfs, no new mount API, no
//!   `CAP_SYS_ADMIN` in the initial user namespace): a memfd copy sealed against writes, as
//!   runc before 1.2 and crun do.

use crate::error::{Context, Error, Result};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The seals that make the memfd copy immutable.
fn seals() -> SealFlag {
    SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE
}

/// Does `/proc/self/exe` (opened as `exe`) already resist writes? A sealed memfd, or any
/// file on a read-only overlayfs: a read-only mount cannot be made writable from inside a
/// container, and an overlay's file has no path back to the file below it. (A runtime
/// installed on a read-only overlay, as in a container image, is protected the same way.)
fn protected(exe: &File) -> bool {
    let sealed = fcntl(exe.as_fd(), FcntlArg::F_GET_SEALS)
        .map(|s| SealFlag::from_bits_truncate(s).contains(SealFlag::F_SEAL_WRITE))
        .unwrap_or(false);
    sealed
        || nix::sys::statfs::fstatfs(exe.as_fd()).is_ok_and(|s| {
            s.filesystem_type() == nix::sys::statfs::OVERLAYFS_SUPER_MAGIC
                && s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
        })
}

/// Re-executes the current process, same arguments and environment, from a protected view
/// of its binary (see the module's documentation). Returns at once if it already runs from
/// one; does not return otherwise (but for an error).
pub fn reexec_from_protected_exe() -> Result<()> {
    let mut exe = File::open("/proc/self/exe").ctx(|| "opening /proc/self/exe".into())?;
    if protected(&exe) {
        return Ok(());
    }
    let target: OwnedFd = match read_only_overlay_view() {
        Ok(fd) => fd,
        Err(_) => sealed_memfd_copy(&mut exe)?,
    };
    drop(exe);
    reexec(target.as_fd())
}

/// Escapes a layer path for overlayfs's `lowerdir` list (`:` separates layers).
fn escape_layer(dir: &Path) -> Result<String> {
    let s = dir
        .to_str()
        .ok_or_else(|| Error::Invalid(format!("{} is not UTF-8", dir.display())))?;
    Ok(s.replace('\\', "\\\\").replace(':', "\\:"))
}

/// The runtime binary opened (`O_PATH`) through a read-only overlayfs mounted nowhere.
fn read_only_overlay_view() -> Result<OwnedFd> {
    use rustix::mount::{
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, FsMountFlags, FsOpenFlags,
        MountAttrFlags,
    };
    let path = std::fs::read_link("/proc/self/exe").ctx(|| "readlink /proc/self/exe".into())?;
    // A binary replaced or removed since we started shows as "PATH (deleted)": its
    // directory no longer holds it, so only a copy of what runs now will do.
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::Invalid(format!("{}: no directory", path.display())));
    };
    if !path.is_absolute() || path.as_os_str().as_bytes().ends_with(b" (deleted)") {
        return Err(Error::Invalid(format!("{}: not a file", path.display())));
    }
    let io = |e: rustix::io::Errno| std::io::Error::from(e);
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(io)
        .ctx(|| "fsopen overlay".into())?;
    // A lower-only overlay needs two layers, and overlayfs refuses a layer that is an
    // ancestor of (or the same as) another. The binary's directory on top wins every name;
    // the bottom layer only has to exist: a directory every Linux host has, which cannot
    // hold the runtime's directory (both are kernel file systems).
    let bottom = ["/dev", "/sys"]
        .into_iter()
        .map(Path::new)
        .find(|b| !dir.starts_with(b))
        .ok_or_else(|| Error::Invalid(format!("{}: no second layer", dir.display())))?;
    let lower = format!("{}:{}", escape_layer(dir)?, escape_layer(bottom)?);
    fsconfig_set_string(fs.as_fd(), "lowerdir", lower.as_str())
        .map_err(io)
        .ctx(|| format!("overlay lowerdir={lower}"))?;
    // Inode number mapping is of no use here and logs to dmesg when the layers' file
    // systems differ; leaving it on is harmless, so a refusal is ignored.
    let _ = fsconfig_set_string(fs.as_fd(), "xino", "off");
    fsconfig_create(fs.as_fd())
        .map_err(io)
        .ctx(|| "creating the overlay".into())?;
    let mnt = fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NODEV
            | MountAttrFlags::MOUNT_ATTR_NOSUID,
    )
    .map_err(io)
    .ctx(|| "fsmount overlay".into())?;
    rustix::fs::openat(
        mnt.as_fd(),
        name,
        rustix::fs::OFlags::PATH | rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(io)
    .ctx(|| format!("opening {} in the overlay", name.to_string_lossy()))
}

/// A memfd copy of the running binary, sealed against any change.
fn sealed_memfd_copy(exe: &mut File) -> Result<OwnedFd> {
    let memfd = memfd_create(c"rrun", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .ctx(|| "memfd_create".into())?;
    let mut copy = File::from(memfd);
    // std copies file to file in the kernel (copy_file_range or sendfile).
    std::io::copy(exe, &mut copy).ctx(|| "copying the runtime binary to a memfd".into())?;
    fcntl(copy.as_fd(), FcntlArg::F_ADD_SEALS(seals())).ctx(|| "sealing the memfd".into())?;
    Ok(copy.into())
}

fn reexec(target: BorrowedFd) -> Result<()> {
    let cstrings = |items: Vec<std::ffi::OsString>| -> Vec<CString> {
        items
            .into_iter()
            .filter_map(|s| CString::new(s.as_bytes()).ok())
            .collect()
    };
    let args = cstrings(std::env::args_os().collect());
    let env = cstrings(
        std::env::vars_os()
            .map(|(k, v)| {
                let mut kv = k;
                kv.push("=");
                kv.push(v);
                kv
            })
            .collect(),
    );
    let err = nix::unistd::fexecve(target, &args, &env).unwrap_err();
    Err(err).ctx(|| "re-executing from the protected binary".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_paths_are_escaped() {
        assert_eq!(escape_layer(Path::new("/usr/bin")).unwrap(), "/usr/bin");
        assert_eq!(escape_layer(Path::new("/a:b\\c")).unwrap(), "/a\\:b\\\\c");
    }
}
