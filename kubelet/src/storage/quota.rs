//! Project quotas: a claim's directory gets its own project id (inherited by what is made
//! in it) and a hard block limit of its `requests.storage`, as local-path-style
//! provisioners with quota support do. Filesystems mounted without `prjquota` (or without
//! quota support at all) say so, and the claim is then reported as not enforced.

use std::os::fd::AsRawFd;
use std::path::Path;

/// `struct fsxattr` of `<linux/fs.h>`.
#[repr(C)]
#[derive(Default)]
struct FsXattr {
    xflags: u32,
    extsize: u32,
    nextents: u32,
    projid: u32,
    cowextsize: u32,
    pad: [u8; 8],
}

/// `struct if_dqblk` of `<linux/quota.h>`.
#[repr(C)]
#[derive(Default)]
struct IfDqblk {
    bhardlimit: u64,
    bsoftlimit: u64,
    curspace: u64,
    ihardlimit: u64,
    isoftlimit: u64,
    curinodes: u64,
    btime: u64,
    itime: u64,
    valid: u32,
}

const FS_IOC_FSGETXATTR: libc::c_ulong = 0x801c_581f;
const FS_IOC_FSSETXATTR: libc::c_ulong = 0x401c_5820;
const FS_XFLAG_PROJINHERIT: u32 = 0x200;
const PRJQUOTA: libc::c_int = 2;
const Q_SETQUOTA: libc::c_int = 0x80_0008;
const QIF_BLIMITS: u32 = 1;
const SYS_QUOTACTL_FD: libc::c_long = 443;

fn qcmd(cmd: libc::c_int, type_: libc::c_int) -> libc::c_int {
    (cmd << 8) | (type_ & 0xff)
}

fn xattr_ioctl(fd: i32, req: libc::c_ulong, x: &mut FsXattr) -> std::io::Result<()> {
    // SAFETY: `x` is a live `struct fsxattr` the kernel reads or fills, for the call only.
    let r = unsafe { libc::ioctl(fd, req as _, x as *mut FsXattr) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn set_quota(fd: i32, id: u32, d: &IfDqblk) -> std::io::Result<()> {
    // SAFETY: quotactl_fd(2) reads `d`, a live `struct if_dqblk`, during the call only.
    let r = unsafe {
        libc::syscall(
            SYS_QUOTACTL_FD,
            fd,
            qcmd(Q_SETQUOTA, PRJQUOTA),
            id,
            d as *const IfDqblk,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Gives `dir` project `id` with a hard limit of `bytes`. The error says why the limit is
/// not enforced.
pub fn apply(dir: &Path, id: u32, bytes: i64) -> Result<(), String> {
    let f = std::fs::File::open(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let fd = f.as_raw_fd();
    // The limit first: a filesystem without project quotas refuses it, and the directory
    // then keeps no project id.
    let blocks = (bytes.max(0) as u64).div_ceil(1024);
    let limit = IfDqblk {
        bhardlimit: blocks,
        bsoftlimit: blocks,
        valid: QIF_BLIMITS,
        ..Default::default()
    };
    set_quota(fd, id, &limit).map_err(|e| match e.raw_os_error() {
        Some(libc::ESRCH) => {
            "project quotas are not enabled on this filesystem (mount it with prjquota)".to_string()
        }
        Some(libc::ENOSYS) => "the kernel has no quotactl_fd".to_string(),
        _ => format!("project quota: {e}"),
    })?;
    let mut x = FsXattr::default();
    xattr_ioctl(fd, FS_IOC_FSGETXATTR, &mut x).map_err(|e| format!("FS_IOC_FSGETXATTR: {e}"))?;
    x.projid = id;
    x.xflags |= FS_XFLAG_PROJINHERIT;
    xattr_ioctl(fd, FS_IOC_FSSETXATTR, &mut x).map_err(|e| format!("FS_IOC_FSSETXATTR: {e}"))
}

/// Lifts the limit of project `id` (its directory is going).
pub fn clear(dir: &Path, id: u32) {
    if let Ok(f) = std::fs::File::open(dir) {
        let none = IfDqblk {
            valid: QIF_BLIMITS,
            ..Default::default()
        };
        let _ = set_quota(f.as_raw_fd(), id, &none);
    }
}
