//! Running the runtime from a sealed in-memory copy of its own binary (CVE-2019-5736).
//!
//! A process that is about to become the container's program *is*, until its `execve`,
//! the runtime binary. If the container makes that `execve` run the runtime again (a
//! symlink to `/proc/self/exe`, or a script starting `#!/proc/self/exe`), it can hold
//! `/proc/PID/exe` of the result open and write through it once the process is gone:
//! the host's runtime binary would be overwritten. Being non-dumpable only covers the time
//! before `execve`. So the commands that put processes into containers first re-execute
//! the runtime from a memfd copy sealed against writes, as runc and crun do: then
//! `/proc/self/exe` is never the host's file.

use crate::error::{Context, Result};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;

/// The seals that make the copy immutable.
fn seals() -> SealFlag {
    SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE
}

/// Is this process already running from a sealed copy?
fn running_sealed(exe: &File) -> bool {
    fcntl(exe.as_fd(), FcntlArg::F_GET_SEALS)
        .map(|s| SealFlag::from_bits_truncate(s).contains(SealFlag::F_SEAL_WRITE))
        .unwrap_or(false)
}

/// Re-executes the current process, same arguments and environment, from a sealed memfd
/// copy of its binary. Returns at once if it already runs from one; does not return
/// otherwise (but for an error).
pub fn reexec_from_sealed_copy() -> Result<()> {
    let mut exe = File::open("/proc/self/exe").ctx(|| "opening /proc/self/exe".into())?;
    if running_sealed(&exe) {
        return Ok(());
    }
    let memfd = memfd_create(c"rrun", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .ctx(|| "memfd_create".into())?;
    let mut copy = File::from(memfd);
    // std copies file to file in the kernel (copy_file_range or sendfile).
    std::io::copy(&mut exe, &mut copy).ctx(|| "copying the runtime binary to a memfd".into())?;
    fcntl(copy.as_fd(), FcntlArg::F_ADD_SEALS(seals())).ctx(|| "sealing the memfd".into())?;
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
    let err = nix::unistd::fexecve(copy.as_fd(), &args, &env).unwrap_err();
    Err(err).ctx(|| "re-executing from the sealed copy".into())
}
