//! `subPath` mounts, resolved as the kubelet does since CVE-2017-1002101: the path must
//! stay inside its volume after symlinks are followed, and what is mounted is the file
//! descriptor opened component by component without following symlinks, bind-mounted
//! under the pod's `volume-subpaths` directory. A container that swaps a component for a
//! symlink between the check and the mount makes the open fail instead of escaping.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};

/// Checks `sub` as the API server does: relative, no `..` element.
pub fn validate(sub: &str) -> Result<(), String> {
    let p = Path::new(sub);
    if p.is_absolute() {
        return Err(format!("subPath {sub:?}: must be a relative path"));
    }
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(format!("subPath {sub:?}: must not contain '..'"));
    }
    Ok(())
}

/// Opens `rel` under the directory `base` one component at a time, never following a
/// symlink; missing components are created as directories.
fn open_beneath(base: &Path, rel: &Path) -> Result<OwnedFd, String> {
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut fd = nix::fcntl::open(base, flags | OFlag::O_DIRECTORY, Mode::empty())
        .map_err(|e| format!("{}: {e}", base.display()))?;
    for c in rel.components() {
        let Component::Normal(name) = c else {
            continue;
        };
        let next = match openat(&fd, name, flags, Mode::empty()) {
            Err(nix::errno::Errno::ENOENT) => {
                mkdirat(&fd, name, Mode::from_bits_truncate(0o755))
                    .map_err(|e| format!("creating {}: {e}", rel.display()))?;
                openat(&fd, name, flags, Mode::empty())
            }
            r => r,
        }
        .map_err(|e| format!("opening {}: {e}", rel.display()))?;
        let st = fstat(&next).map_err(|e| e.to_string())?;
        if SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFLNK {
            return Err(format!(
                "subpath {:?}: a symlink appeared while it was being opened",
                rel.display()
            ));
        }
        fd = next;
    }
    Ok(fd)
}

/// Resolves `sub` inside the volume at `vol` and bind-mounts it at `target` (created as an
/// empty file or directory, like what it mounts). A `target` already mounted is kept: a
/// restarted container finds the same mount.
pub fn prepare(vol: &Path, sub: &str, target: &Path) -> Result<(), String> {
    validate(sub)?;
    if super::is_mount_point(target) {
        return Ok(());
    }
    let base = std::fs::canonicalize(vol).map_err(|e| format!("{}: {e}", vol.display()))?;
    let full = base.join(sub);
    let rel: PathBuf = match std::fs::canonicalize(&full) {
        Ok(resolved) => resolved
            .strip_prefix(&base)
            .map(Path::to_path_buf)
            .map_err(|_| {
                format!(
                    "subpath {:?} not within volume path {:?}",
                    full.display().to_string(),
                    base.display().to_string()
                )
            })?,
        // Missing: created below, component by component, refusing symlinks.
        Err(_) => PathBuf::from(sub),
    };
    let fd = open_beneath(&base, &rel)?;
    let st = fstat(&fd).map_err(|e| e.to_string())?;
    let is_dir = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) == SFlag::S_IFDIR;
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    let made = if is_dir {
        std::fs::create_dir_all(target)
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(target)
            .map(|_| ())
    };
    made.map_err(|e| format!("{}: {e}", target.display()))?;
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    mount(
        Some(&source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("bind-mounting subpath {sub:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_escapes() {
        assert!(validate("../x").is_err());
        assert!(validate("a/../../x").is_err());
        assert!(validate("/etc").is_err());
        assert!(validate("a/b").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::os::unix::fs::symlink("/etc", vol.join("esc")).unwrap();
        std::os::unix::fs::symlink("../..", vol.join("up")).unwrap();
        let t = dir.path().join("t");
        for sub in ["esc", "esc/passwd", "up"] {
            let e = prepare(&vol, sub, &t).unwrap_err();
            assert!(e.contains("not within volume path"), "{sub}: {e}");
        }
        // Missing beyond a symlink: refused at the symlink, nothing created outside.
        let e = prepare(&vol, "up/rrun-never-made", &t).unwrap_err();
        assert!(e.contains("symlink"), "{e}");
        assert!(!dir
            .path()
            .parent()
            .unwrap()
            .join("rrun-never-made")
            .exists());
        // A missing path is created inside the volume; a dangling escape is refused.
        std::os::unix::fs::symlink("/nonexistent-rrun", vol.join("dangling")).unwrap();
        assert!(open_beneath(&vol, Path::new("dangling/x")).is_err());
        open_beneath(&vol, Path::new("new/dir")).unwrap();
        assert!(vol.join("new/dir").is_dir());
    }
}
