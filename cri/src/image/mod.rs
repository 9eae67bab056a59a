//! The image store: a content-addressed local store of container images, imported from OCI
//! image layouts, `oci-archive` tarballs and `docker save` tarballs, and their root
//! filesystems mounted as overlays for containers.
//!
//! # Layout (under the store root, `<--root>/images` for the server)
//!
//! ```text
//! lock                      flock: exclusive while committing an import or removing, shared while mounting
//! blobs/sha256/<hex>        manifests, configs and (compressed) layer blobs, named by their sha256
//! layers/<name>/            one unpacked layer (overlayfs whiteouts), used as an overlay lowerdir
//! layers/<name>.chainid     the layer's full chain id; written after the dir is complete
//! images/<config hex>.json  one image record (an [`Image`] as JSON)
//! tmp/<pid>-<n>/            staging of an import or a pull in progress (same filesystem, for renames)
//! ```
//!
//! Layers are keyed by their **chain id** (the diff id of the layer and of every layer below
//! it, as containerd's snapshotter keys them), not by their diff id alone: a layer tar may
//! leave parent directories implicit, and those take the metadata of the same directory in
//! the layers below, so the unpacked result depends on the parents. `<name>` is the first
//! 16 hex digits of the chain id, or more where two chains share a prefix, which keeps the
//! overlay `lowerdir=` string short (it must fit in a page).
//!
//! # Checks
//!
//! Every blob an image needs is hashed as it is copied into the store and refused when its
//! sha256 differs from its name or descriptor (nothing is kept then); every layer's
//! uncompressed stream is hashed against the config's `rootfs.diff_ids`. See [`unpack`] for
//! what layer entries are refused.
//!
//! # Concurrency
//!
//! The store may be used by several threads and processes at once (the server, and
//! `rrun-cri image import` run beside it). An import stages and verifies everything under
//! `tmp/` without the lock, then takes the exclusive flock only to move blobs and layers into
//! place and write records. Records are replaced atomically (write, then rename), so reads
//! (`list`, `resolve`) take no lock and always re-read the records from disk. The flock
//! calls block: from async code call the store in `spawn_blocking`.

mod auth;
pub mod command;
mod fallback;
mod fetch;
mod gateway;
mod import;
mod platform;
pub mod pull;
mod reference;
pub mod registry;
mod rootfs;
mod store;
pub mod unpack;

#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use pull::{LayerProgress, PullError, Puller};
pub use reference::{normalize_reference, parse_reference, Reference};
pub use registry::RegistryConfig;
pub use store::ImageStore;

/// What can go wrong in the image store. Every message names the file or image concerned.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    #[error("{}: {reason}", archive.display())]
    BadArchive { archive: PathBuf, reason: String },
    #[error("{}: {what}: digest mismatch: expected {expected}, found {actual}", archive.display())]
    DigestMismatch {
        archive: PathBuf,
        what: String,
        expected: String,
        actual: String,
    },
    #[error("{}: layer {layer}: {reason}", archive.display())]
    BadLayer {
        archive: PathBuf,
        layer: String,
        reason: String,
    },
    #[error("{}: a root filesystem is already mounted there", .0.display())]
    AlreadyMounted(PathBuf),
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("image reference {reference:?} is ambiguous: it matches {ids:?}")]
    Ambiguous { reference: String, ids: Vec<String> },
    #[error("image store {}: {reason}", root.display())]
    Store { root: PathBuf, reason: String },
    /// A filesystem of the store is full; `disk` names it (mount point, device, space).
    #[error("no space left on the image filesystem {disk}: {reason}")]
    NoSpace { disk: String, reason: String },
    #[error("{op} {}: {source}", path.display())]
    Mount {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
}

impl ImageError {
    /// Is this a full filesystem (ENOSPC, EDQUOT), whichever step met it?
    pub fn is_no_space(&self) -> bool {
        match self {
            ImageError::NoSpace { .. } => true,
            ImageError::Io { source, .. } => unpack::is_no_space(source.raw_os_error()),
            _ => false,
        }
    }

    /// A failure for want of space, as [`ImageError::NoSpace`] naming the filesystem of
    /// `path`; any other error unchanged.
    pub(crate) fn naming_the_disk(self, path: &Path) -> ImageError {
        if !self.is_no_space() {
            return self;
        }
        match self {
            ImageError::NoSpace { reason, .. } => ImageError::NoSpace {
                disk: store::describe_disk(path),
                reason,
            },
            other => ImageError::NoSpace {
                disk: store::describe_disk(path),
                reason: other.to_string(),
            },
        }
    }

    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { op, path, source }
    }
}

/// One layer of an image, bottom layer first in [`Image::layers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// The stored (usually compressed) blob's digest.
    pub digest: String,
    /// The blob's media type (for docker archives, the OCI type matching its compression).
    pub media_type: String,
    /// The blob's size in bytes.
    pub size: u64,
    /// The digest of the uncompressed tar.
    pub diff_id: String,
    /// The chain id: this layer's identity with all the layers below it.
    pub chain_id: String,
    /// Its directory name under `layers/`.
    pub dir: String,
}

/// An image in the store (its record under `images/`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// `sha256:<hex of the config blob>`, as containerd reports it.
    pub id: String,
    /// Normalised names (`docker.io/library/busybox:latest`).
    pub repo_tags: Vec<String>,
    /// `repository@sha256:<manifest digest>` for each repository it was imported under.
    pub repo_digests: Vec<String>,
    /// The compressed layer blobs plus the config blob, in bytes.
    pub size: u64,
    pub config: oci_spec::image::ImageConfiguration,
    /// The manifest's digest (for a docker archive, of the OCI manifest made on import).
    pub manifest_digest: String,
    /// Bottom layer first.
    pub layers: Vec<Layer>,
    /// The unpacked layer directories, bottom first (absolute; filled when read).
    #[serde(skip)]
    pub layer_dirs: Vec<PathBuf>,
    /// When it was first imported, in nanoseconds since the epoch.
    #[serde(default)]
    pub imported_at_nanos: i64,
}

/// Disk use of the store, for ImageFsInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreUsage {
    /// The store's root directory (what ImageFsInfo reports as the mountpoint).
    pub root: PathBuf,
    /// Bytes allocated to the store's files (st_blocks, hardlinked files counted once).
    pub used_bytes: u64,
    /// Inodes used by the store.
    pub inodes_used: u64,
}
