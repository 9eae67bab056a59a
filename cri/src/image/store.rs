//! The store itself: its directories, the lock, image records, look-ups, removal and
//! garbage collection. Importing is in `import/`, mounting in `rootfs.rs`.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::reference::{parse_reference, validate_digest};
use super::{Image, ImageError, StoreUsage};

/// Where a chain id's layer directory name is recorded (after the directory is complete).
pub(crate) const CHAIN_ID_SUFFIX: &str = ".chainid";
/// Prefix of the staging directories of imports and of directories being deleted.
const TRASH_PREFIX: &str = "trash-";

/// A content-addressed image store under one root directory. Cheap to share: it holds only
/// its path, and every operation re-reads the disk (see the module documentation for the
/// locking).
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// The store's flock, held while it lives.
pub(crate) struct StoreLock {
    _lock: Flock<File>,
}

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A name unique to this process and call: `<pid>-<sequence>`.
pub(crate) fn unique_name() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

/// The filesystem holding `path`, for an error saying it is full: its mount point, type and
/// source, and its size ("/var/lib/rrun-cri (ext4 /dev/vda1, 20.0 GiB)"; not its free space,
/// which a failed pull gives back by removing what it staged). As much as can be found: the
/// path alone when the mount table cannot be read.
pub(crate) fn describe_disk(path: &Path) -> String {
    let mounts = rrun::procfs::mountinfo().unwrap_or_default();
    // The last of the longest matches: a later mount over the same point hides earlier ones.
    let mount = mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.as_os_str().len());
    let Some(m) = mount else {
        return path.display().to_string();
    };
    let space = match nix::sys::statvfs::statvfs(&m.mount_point) {
        Ok(st) => format!(", {}", human_bytes(st.blocks() * st.fragment_size())),
        Err(_) => String::new(),
    };
    format!(
        "{} ({} {}{space})",
        m.mount_point.display(),
        m.fstype,
        m.source
    )
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Is the process whose id starts `name` (`<pid>-...`) gone?
fn owner_is_gone(name: &str) -> bool {
    let Some(pid) = name.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
        return false;
    };
    pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists()
}

pub(crate) fn mkdir_private(path: &Path) -> Result<(), ImageError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(ImageError::io("creating", path))
}

impl ImageStore {
    /// Opens the store at `root`, making its directories if needed, and removes what
    /// crashed imports of dead processes left in `tmp/`.
    pub fn open(root: &Path) -> Result<ImageStore, ImageError> {
        mkdir_private(root)?;
        let root = root
            .canonicalize()
            .map_err(ImageError::io("resolving", root))?;
        // The path goes into overlay's lowerdir/upperdir options, which these characters
        // would split or escape.
        if let Some(bad) = root
            .to_str()
            .and_then(|s| s.chars().find(|c| matches!(c, ',' | ':' | '\\')))
        {
            return Err(ImageError::Store {
                root,
                reason: format!("the path may not contain {bad:?} (overlay mount options)"),
            });
        }
        if root.to_str().is_none() {
            return Err(ImageError::Store {
                root,
                reason: "the path is not UTF-8".into(),
            });
        }
        let store = ImageStore { root };
        for dir in [
            store.blob_dir(),
            store.layers_dir(),
            store.records_dir(),
            store.tmp_dir(),
        ] {
            mkdir_private(&dir)?;
        }
        store.clean_stale()?;
        Ok(store)
    }

    /// The store's root directory (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blob_dir(&self) -> PathBuf {
        self.root.join("blobs/sha256")
    }

    pub(crate) fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }

    pub(crate) fn records_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub(crate) fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The path of the blob `digest` (`sha256:<hex>`, validated).
    pub(crate) fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        validate_digest(digest).map_err(|reason| ImageError::Store {
            root: self.root.clone(),
            reason,
        })?;
        Ok(self.blob_dir().join(&digest["sha256:".len()..]))
    }

    pub(crate) fn layer_path(&self, name: &str) -> PathBuf {
        self.layers_dir().join(name)
    }

    /// Takes the store's flock (blocking): exclusive to change what is stored, shared to
    /// rely on it staying (mounting).
    pub(crate) fn lock(&self, exclusive: bool) -> Result<StoreLock, ImageError> {
        let path = self.root.join("lock");
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
            .map_err(ImageError::io("opening", &path))?;
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        loop {
            match Flock::lock(file, arg) {
                Ok(lock) => return Ok(StoreLock { _lock: lock }),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, e)) => {
                    return Err(ImageError::Io {
                        op: "locking",
                        path,
                        source: io::Error::from(e),
                    })
                }
            }
        }
    }

    fn clean_stale(&self) -> Result<(), ImageError> {
        let tmp = self.tmp_dir();
        for entry in fs::read_dir(&tmp).map_err(ImageError::io("reading", &tmp))? {
            let entry = entry.map_err(ImageError::io("reading", &tmp))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let owner = name.strip_prefix(TRASH_PREFIX).unwrap_or(&name);
            if owner_is_gone(owner) {
                tracing::info!(path = %entry.path().display(), "removing what a dead import left");
                remove_any(&entry.path())?;
            }
        }
        let records = self.records_dir();
        for entry in fs::read_dir(&records).map_err(ImageError::io("reading", &records))? {
            let entry = entry.map_err(ImageError::io("reading", &records))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(owner) = name.strip_prefix(".tmp-") {
                if owner_is_gone(owner) {
                    remove_any(&entry.path())?;
                }
            }
        }
        Ok(())
    }

    /// Every image, oldest import first, read from disk now (other processes may import).
    pub fn list(&self) -> Result<Vec<Image>, ImageError> {
        let dir = self.records_dir();
        let mut images = Vec::new();
        for entry in fs::read_dir(&dir).map_err(ImageError::io("reading", &dir))? {
            let entry = entry.map_err(ImageError::io("reading", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            match self.read_record(&entry.path()) {
                Ok(Some(image)) => images.push(image),
                Ok(None) => {}
                // One damaged record must not hide every other image.
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable image record"),
            }
        }
        images.sort_by(|a, b| {
            a.imported_at_nanos
                .cmp(&b.imported_at_nanos)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(images)
    }

    fn read_record(&self, path: &Path) -> Result<Option<Image>, ImageError> {
        let data = match fs::read(path) {
            Ok(d) => d,
            // Removed between the listing and now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ImageError::io("reading", path)(e)),
        };
        let mut image: Image = serde_json::from_slice(&data).map_err(|e| ImageError::Store {
            root: self.root.clone(),
            reason: format!("image record {}: {e}", path.display()),
        })?;
        image.layer_dirs = image
            .layers
            .iter()
            .map(|l| self.layer_path(&l.dir))
            .collect();
        Ok(Some(image))
    }

    fn record_path(&self, id: &str) -> Result<PathBuf, ImageError> {
        validate_digest(id).map_err(|reason| ImageError::Store {
            root: self.root.clone(),
            reason,
        })?;
        Ok(self
            .records_dir()
            .join(format!("{}.json", &id["sha256:".len()..])))
    }

    /// The image with id `id` (`sha256:<hex>`), read now.
    pub fn get(&self, id: &str) -> Result<Option<Image>, ImageError> {
        self.read_record(&self.record_path(id)?)
    }

    /// Replaces `image`'s record atomically.
    pub(crate) fn write_record(&self, image: &Image) -> Result<(), ImageError> {
        let path = self.record_path(&image.id)?;
        let tmp = self.records_dir().join(format!(".tmp-{}", unique_name()));
        let data = serde_json::to_vec_pretty(image).map_err(|e| ImageError::Store {
            root: self.root.clone(),
            reason: format!("encoding the record of {}: {e}", image.id),
        })?;
        let result = (|| {
            let mut f = File::create(&tmp).map_err(ImageError::io("creating", &tmp))?;
            f.write_all(&data)
                .map_err(ImageError::io("writing", &tmp))?;
            f.sync_all().map_err(ImageError::io("syncing", &tmp))?;
            fs::rename(&tmp, &path).map_err(ImageError::io("renaming into place", &path))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    fn delete_record(&self, id: &str) -> Result<(), ImageError> {
        let path = self.record_path(id)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ImageError::io("removing", &path)(e)),
        }
    }

    /// By id ("sha256:<hex>" or "<hex>", or a unique hex prefix of >= 12 chars), by any repo tag (normalised),
    /// or by repo digest ("name@sha256:...").
    pub fn resolve(&self, reference: &str) -> Result<Option<Image>, ImageError> {
        let images = self.list()?;
        resolve_in(images, reference)
    }

    /// Removes the image record (and its tag), and blobs/layers no other image uses.
    /// `id` may be anything [`ImageStore::resolve`] takes; an unknown image is
    /// [`ImageError::NotFound`]. Whether a container still uses the image is for the caller
    /// to check first: its layers are deleted even if mounted.
    pub fn remove(&self, id: &str) -> Result<(), ImageError> {
        let trash = {
            let _lock = self.lock(true)?;
            let image = self
                .resolve(id)?
                .ok_or_else(|| ImageError::NotFound(id.to_string()))?;
            self.delete_record(&image.id)?;
            self.collect_garbage()?
        };
        // The lock is released: deleting big layer trees must not hold up other users.
        for dir in trash {
            if let Err(e) = remove_any(&dir) {
                tracing::warn!(error = %e, "could not delete a removed layer");
            }
        }
        Ok(())
    }

    /// With the exclusive lock held: deletes blobs no record names, and moves layer
    /// directories no record names into `tmp/` (returned, for deletion after unlocking).
    pub(crate) fn collect_garbage(&self) -> Result<Vec<PathBuf>, ImageError> {
        let images = self.list()?;
        let mut blobs = HashSet::new();
        let mut layers = HashSet::new();
        for image in &images {
            blobs.insert(image.id.trim_start_matches("sha256:").to_string());
            blobs.insert(
                image
                    .manifest_digest
                    .trim_start_matches("sha256:")
                    .to_string(),
            );
            for l in &image.layers {
                blobs.insert(l.digest.trim_start_matches("sha256:").to_string());
                layers.insert(l.dir.clone());
            }
        }
        super::fetch::sweep_ingests(&self.tmp_dir());
        let dir = self.blob_dir();
        for entry in fs::read_dir(&dir).map_err(ImageError::io("reading", &dir))? {
            let entry = entry.map_err(ImageError::io("reading", &dir))?;
            if !blobs.contains(entry.file_name().to_string_lossy().as_ref()) {
                remove_any(&entry.path())?;
            }
        }
        let dir = self.layers_dir();
        let mut trash = Vec::new();
        for entry in fs::read_dir(&dir).map_err(ImageError::io("reading", &dir))? {
            let entry = entry.map_err(ImageError::io("reading", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let layer = name.strip_suffix(CHAIN_ID_SUFFIX).unwrap_or(&name);
            if layers.contains(layer) {
                continue;
            }
            if name.ends_with(CHAIN_ID_SUFFIX) {
                remove_any(&entry.path())?;
            }
        }
        // Second pass, so every dropped layer lost its chain id file (its mark of being
        // complete) before its directory moves.
        for entry in fs::read_dir(&dir).map_err(ImageError::io("reading", &dir))? {
            let entry = entry.map_err(ImageError::io("reading", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if layers.contains(&name) || name.ends_with(CHAIN_ID_SUFFIX) {
                continue;
            }
            let to = self
                .tmp_dir()
                .join(format!("{TRASH_PREFIX}{}-{name}", unique_name()));
            fs::rename(entry.path(), &to)
                .map_err(ImageError::io("moving to the trash", entry.path()))?;
            trash.push(to);
        }
        Ok(trash)
    }

    /// Bytes and inodes used by the store, and its mountpoint path (for ImageFsInfo).
    pub fn usage(&self) -> Result<StoreUsage, ImageError> {
        let mut seen = HashSet::new();
        let mut used_bytes = 0u64;
        let mut stack = vec![self.root.clone()];
        while let Some(path) = stack.pop() {
            let meta = match fs::symlink_metadata(&path) {
                Ok(m) => m,
                // Deleted meanwhile by another user of the store.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ImageError::io("stat", &path)(e)),
            };
            if seen.insert((meta.dev(), meta.ino())) {
                used_bytes += meta.blocks() * 512;
            }
            if meta.is_dir() {
                let entries = match fs::read_dir(&path) {
                    Ok(e) => e,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(ImageError::io("reading", &path)(e)),
                };
                for entry in entries {
                    stack.push(entry.map_err(ImageError::io("reading", &path))?.path());
                }
            }
        }
        Ok(StoreUsage {
            root: self.root.clone(),
            used_bytes,
            inodes_used: seen.len() as u64,
        })
    }
}

/// [`ImageStore::resolve`] over `images`.
pub(crate) fn resolve_in(images: Vec<Image>, reference: &str) -> Result<Option<Image>, ImageError> {
    let reference = reference.trim();
    if reference.is_empty() {
        return Err(ImageError::InvalidReference {
            reference: reference.into(),
            reason: "empty".into(),
        });
    }
    let prefixed = reference.starts_with("sha256:");
    let hex = reference.trim_start_matches("sha256:");
    let looks_like_id = (12..=64).contains(&hex.len())
        && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if looks_like_id {
        let mut matches: Vec<Image> = images
            .iter()
            .filter(|i| i.id.trim_start_matches("sha256:").starts_with(hex))
            .cloned()
            .collect();
        match matches.len() {
            1 => return Ok(matches.pop()),
            0 if prefixed || hex.len() == 64 => return Ok(None),
            0 => {}
            _ => {
                return Err(ImageError::Ambiguous {
                    reference: reference.into(),
                    ids: matches.into_iter().map(|i| i.id).collect(),
                })
            }
        }
    } else if prefixed {
        return Err(ImageError::InvalidReference {
            reference: reference.into(),
            reason: "an image id is sha256: and 12 to 64 lowercase hex digits".into(),
        });
    }
    let parsed = parse_reference(reference)?;
    let name = parsed.to_string();
    let found = images.into_iter().find(|i| {
        if parsed.digest.is_some() {
            i.repo_digests.contains(&name)
        } else {
            i.repo_tags.contains(&name)
        }
    });
    Ok(found)
}

/// Removes a file or a directory tree (not following symlinks); fine if already gone.
pub(crate) fn remove_any(path: &Path) -> Result<(), ImageError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ImageError::io("removing", path)(e)),
    }
}
