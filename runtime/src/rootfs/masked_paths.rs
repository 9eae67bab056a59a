//! `linux.maskedPaths`: a directory is covered by an empty read-only tmpfs, a file by
//! `/dev/null`.

use super::in_root::{fd_path, open_in_root};
use crate::error::{Context, Error, Result};
use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, makedev, SFlag};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

pub(super) fn mask_path(root: &OwnedFd, path: &Path) -> Result<()> {
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
