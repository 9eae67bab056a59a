//! `linux.readonlyPaths`: each is bound onto itself and remounted read-only.

use super::in_root::{fd_path, open_in_root, reopen};
use super::mounts::locked_flags;
use crate::error::{Context, Result};
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use std::os::fd::OwnedFd;
use std::path::Path;

pub(super) fn readonly_path(root: &OwnedFd, path: &Path) -> Result<()> {
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
