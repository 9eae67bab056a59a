//! A container's root filesystem: an overlay of the image's layers (read-only lowerdirs,
//! shared by every container of the image) with a per-container upper dir.
//!
//! The mount is made in the server's (the host's) mount namespace, then made private. That
//! matters for what happens after it: the runtime clones the container's mount namespace
//! from the host's, and mounts it makes under the rootfs there (`/proc`, `/dev`, ...) must
//! not propagate back to this mount, nor unmounting it here reach into containers. What
//! private cannot prevent is the propagation of the mount event itself when the directory
//! holding `<container_dir>` is on a shared mount (systemd makes `/` shared): copies then
//! appear in the peers of that mount, as they do with containerd. A server that wants none
//! can make its state directory a private mount of its own.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::store::{remove_any, ImageStore};
use super::{Image, ImageError};

/// How many stacked mounts `unmount_rootfs` takes off before giving up.
const MAX_STACKED: usize = 16;

/// Makes a directory unless there is one; says whether it made it.
fn mkdir(path: &Path, mode: u32) -> Result<bool, ImageError> {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(false),
        Err(e) => Err(ImageError::io("creating", path)(e)),
    }
}

pub(crate) fn is_mounted(path: &Path) -> Result<bool, ImageError> {
    let table = rrun::procfs::mountinfo().map_err(|e| ImageError::Store {
        root: path.to_path_buf(),
        reason: format!("reading /proc/self/mountinfo: {e}"),
    })?;
    Ok(table.iter().any(|m| m.mount_point == path))
}

fn option_safe(path: &Path) -> Result<&str, ImageError> {
    match path.to_str() {
        Some(s) if !s.contains([',', ':', '\\']) => Ok(s),
        _ => Err(ImageError::Store {
            root: path.to_path_buf(),
            reason:
                "a container directory for an overlay mount must be UTF-8 without ',', ':' or '\\'"
                    .into(),
        }),
    }
}

impl ImageStore {
    /// Mounts the image's rootfs for a container: overlayfs with the image's layers as lowerdirs (top layer first)
    /// and `<container_dir>/upper` + `<container_dir>/work` made here; mounted at `<container_dir>/rootfs`,
    /// which it returns. A single-layer image still gets an overlay (the upper dir is per container).
    ///
    /// `container_dir` is made if missing. Fails if something is already mounted there;
    /// leaves no mount behind when it fails.
    pub fn mount_rootfs(&self, image: &Image, container_dir: &Path) -> Result<PathBuf, ImageError> {
        // Shared: a concurrent `remove` must not delete the layers while they are mounted.
        let _lock = self.lock(false)?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(container_dir)
            .map_err(ImageError::io("creating", container_dir))?;
        let container_dir = container_dir
            .canonicalize()
            .map_err(ImageError::io("resolving", container_dir))?;
        let rootfs = container_dir.join("rootfs");
        option_safe(&container_dir)?;
        if is_mounted(&rootfs)? {
            return Err(ImageError::AlreadyMounted(rootfs));
        }
        let mut lowers = Vec::new();
        for layer in image.layers.iter().rev() {
            let dir = self.layer_path(&layer.dir);
            if !dir.is_dir() {
                return Err(ImageError::Store {
                    root: self.root().to_path_buf(),
                    reason: format!(
                        "layer {} of image {} is not in the store (was the image removed?)",
                        layer.diff_id, image.id
                    ),
                });
            }
            lowers.push(dir);
        }
        let mut created = Vec::new();
        let result = self.mount_overlay(image, &container_dir, lowers, &mut created);
        if result.is_err() {
            // Only what this call made: an upper dir from before holds a container's writes.
            for dir in created.iter().rev() {
                let _ = remove_any(dir);
            }
        }
        result
    }

    fn mount_overlay(
        &self,
        image: &Image,
        container_dir: &Path,
        mut lowers: Vec<PathBuf>,
        created: &mut Vec<PathBuf>,
    ) -> Result<PathBuf, ImageError> {
        let upper = container_dir.join("upper");
        let work = container_dir.join("work");
        let rootfs = container_dir.join("rootfs");
        let mut make = |path: &Path, mode: u32| -> Result<(), ImageError> {
            if mkdir(path, mode)? {
                created.push(path.to_path_buf());
            }
            Ok(())
        };
        if lowers.is_empty() {
            // overlayfs needs a lowerdir; an image without layers gets an empty one.
            let empty = container_dir.join("empty");
            make(&empty, 0o755)?;
            lowers.push(empty);
        }
        make(&upper, 0o755)?;
        make(&work, 0o700)?;
        make(&rootfs, 0o755)?;
        // The merged root takes the upper dir's owner and mode: give it the top layer's.
        let top = fs::metadata(&lowers[0]).map_err(ImageError::io("stat", &lowers[0]))?;
        std::os::unix::fs::chown(&upper, Some(top.uid()), Some(top.gid()))
            .map_err(ImageError::io("chown", &upper))?;
        fs::set_permissions(&upper, fs::Permissions::from_mode(top.mode() & 0o7777))
            .map_err(ImageError::io("chmod", &upper))?;

        let lowerdir: Vec<&str> = lowers
            .iter()
            .map(|p| p.to_str().unwrap_or_default())
            .collect();
        // index=off, as containerd sets it: the inode index ties lower layers to one upper
        // dir, and these layers are shared by every container of the image.
        let options = format!(
            "lowerdir={},upperdir={},workdir={},index=off",
            lowerdir.join(":"),
            option_safe(&upper)?,
            option_safe(&work)?
        );
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|p| usize::try_from(p).ok())
            .unwrap_or(4096);
        if options.len() >= page {
            return Err(ImageError::Store {
                root: self.root().to_path_buf(),
                reason: format!(
                    "image {} has too many layers ({}) for one overlay mount: its options take {} bytes, more than a page",
                    image.id,
                    image.layers.len(),
                    options.len()
                ),
            });
        }
        mount(
            Some("overlay"),
            &rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .map_err(|source| ImageError::Mount {
            op: "mounting the overlay at",
            path: rootfs.clone(),
            source,
        })?;
        if let Err(source) = mount(
            None::<&str>,
            &rootfs,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        ) {
            let _ = umount2(&rootfs, MntFlags::MNT_DETACH);
            return Err(ImageError::Mount {
                op: "making private the overlay at",
                path: rootfs,
                source,
            });
        }
        Ok(rootfs)
    }

    /// Unmounts `<container_dir>/rootfs` (lazily if busy) and removes upper/work; fine if not mounted.
    /// The empty `rootfs` directory is removed too; `container_dir` itself is left.
    pub fn unmount_rootfs(container_dir: &Path) -> Result<(), ImageError> {
        let container_dir = match container_dir.canonicalize() {
            Ok(p) => p,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ImageError::io("resolving", container_dir)(e)),
        };
        let rootfs = container_dir.join("rootfs");
        for _ in 0..MAX_STACKED {
            if !is_mounted(&rootfs)? {
                break;
            }
            match umount2(&rootfs, MntFlags::empty()) {
                Ok(()) => {}
                Err(Errno::EBUSY) => {
                    umount2(&rootfs, MntFlags::MNT_DETACH).map_err(|source| ImageError::Mount {
                        op: "unmounting (lazily)",
                        path: rootfs.clone(),
                        source,
                    })?
                }
                Err(Errno::EINVAL | Errno::ENOENT) => break,
                Err(source) => {
                    return Err(ImageError::Mount {
                        op: "unmounting",
                        path: rootfs,
                        source,
                    })
                }
            }
        }
        if is_mounted(&rootfs)? {
            return Err(ImageError::Store {
                root: rootfs,
                reason: format!("still mounted after {MAX_STACKED} unmounts"),
            });
        }
        for dir in ["upper", "work", "empty"] {
            remove_any(&container_dir.join(dir))?;
        }
        match fs::remove_dir(&rootfs) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ImageError::io("removing", &rootfs)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_mounted() {
        assert!(is_mounted(Path::new("/")).unwrap());
    }
}
