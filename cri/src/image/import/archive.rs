//! The archive being imported, as files: an OCI layout directory read in place, or a
//! tarball extracted into the import's staging directory (its links kept as a map, never
//! created); each file it needs hashed once, as a [`Blob`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::Descriptor;

use super::bad;
use crate::image::reference::validate_digest;
use crate::image::store::{mkdir_private, remove_any, unique_name, ImageStore};
use crate::image::unpack::{self, HashingReader};
use crate::image::ImageError;

/// The most a JSON document (index, manifest, config) may hold.
const MAX_JSON: u64 = 64 << 20;
const LINK_DEPTH: usize = 16;

/// The staging directory of one import; removed when dropped.
pub(super) struct Staging {
    dir: PathBuf,
    next: RefCell<u64>,
}

impl Staging {
    pub(super) fn new(store: &ImageStore) -> Result<Staging, ImageError> {
        let dir = store.tmp_dir().join(unique_name());
        mkdir_private(&dir)?;
        Ok(Staging {
            dir,
            next: RefCell::new(0),
        })
    }

    pub(super) fn path(&self, prefix: &str) -> PathBuf {
        let mut n = self.next.borrow_mut();
        *n += 1;
        self.dir.join(format!("{prefix}{n}"))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = remove_any(&self.dir) {
            tracing::warn!(error = %e, "could not remove an import's staging directory");
        }
    }
}

/// A file of the archive, hashed, in the staging directory (or already in the store).
#[derive(Debug, Clone)]
pub(super) struct Blob {
    pub(super) path: PathBuf,
    pub(super) digest: String,
    pub(super) size: u64,
    /// In the staging directory (to be moved into the store), not already in the store.
    pub(super) staged: bool,
}

enum Source {
    Dir(PathBuf),
    /// An extracted tarball: archive path -> staged file, and archive path -> archive path
    /// for its symlinks and hardlinks.
    Tar {
        files: HashMap<String, PathBuf>,
        links: HashMap<String, String>,
    },
}

pub(super) struct Input<'a> {
    pub(super) archive: &'a Path,
    source: Source,
    pub(super) staging: &'a Staging,
    hashed: RefCell<HashMap<PathBuf, Blob>>,
}

/// A path inside an archive with `.` and `..` resolved; `None` if it climbs above the top.
fn normalize(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        None
    } else {
        Some(parts.join("/"))
    }
}

pub(super) fn read_limited(path: &Path, what: &str, archive: &Path) -> Result<Vec<u8>, ImageError> {
    let file = File::open(path).map_err(ImageError::io("opening", path))?;
    let mut data = Vec::new();
    file.take(MAX_JSON + 1)
        .read_to_end(&mut data)
        .map_err(ImageError::io("reading", path))?;
    if data.len() as u64 > MAX_JSON {
        return Err(bad(
            archive,
            format!("{what} is larger than {MAX_JSON} bytes"),
        ));
    }
    Ok(data)
}

impl<'a> Input<'a> {
    pub(super) fn open(archive: &'a Path, staging: &'a Staging) -> Result<Input<'a>, ImageError> {
        let meta = fs::metadata(archive).map_err(ImageError::io("opening", archive))?;
        let source = if meta.is_dir() {
            Source::Dir(archive.to_path_buf())
        } else {
            extract(archive, staging)?
        };
        Ok(Input {
            archive,
            source,
            staging,
            hashed: RefCell::new(HashMap::new()),
        })
    }

    /// Where the archive's file `rel` is, if it has one.
    pub(super) fn locate(&self, rel: &str) -> Option<PathBuf> {
        let rel = normalize(rel)?;
        match &self.source {
            Source::Dir(dir) => {
                let path = dir.join(&rel);
                path.is_file().then_some(path)
            }
            Source::Tar { files, links } => {
                let mut rel = rel;
                for _ in 0..LINK_DEPTH {
                    if let Some(f) = files.get(&rel) {
                        return Some(f.clone());
                    }
                    rel = links.get(&rel)?.clone();
                }
                None
            }
        }
    }

    pub(super) fn read_json(&self, rel: &str) -> Result<Option<Vec<u8>>, ImageError> {
        match self.locate(rel) {
            Some(path) => Ok(Some(read_limited(&path, rel, self.archive)?)),
            None => Ok(None),
        }
    }

    /// The archive's file `rel`, hashed, in the staging directory.
    pub(super) fn blob(&self, rel: &str) -> Result<Blob, ImageError> {
        let path = self
            .locate(rel)
            .ok_or_else(|| bad(self.archive, format!("{rel} is missing")))?;
        if let Some(b) = self.hashed.borrow().get(&path) {
            return Ok(b.clone());
        }
        let blob = match &self.source {
            Source::Dir(_) => {
                let dst = self.staging.path("b");
                let src = File::open(&path).map_err(ImageError::io("opening", &path))?;
                let mut r = HashingReader::new(src);
                let mut out = File::create(&dst).map_err(ImageError::io("creating", &dst))?;
                io::copy(&mut r, &mut out).map_err(ImageError::io("copying", &path))?;
                let (digest, size) = r.finish();
                Blob {
                    path: dst,
                    digest,
                    size,
                    staged: true,
                }
            }
            Source::Tar { .. } => {
                let src = File::open(&path).map_err(ImageError::io("opening", &path))?;
                let mut r = HashingReader::new(src);
                io::copy(&mut r, &mut io::sink()).map_err(ImageError::io("reading", &path))?;
                let (digest, size) = r.finish();
                Blob {
                    path: path.clone(),
                    digest,
                    size,
                    staged: true,
                }
            }
        };
        self.hashed.borrow_mut().insert(path, blob.clone());
        Ok(blob)
    }

    /// The blob a descriptor names, checked against its digest and size.
    pub(super) fn blob_for(&self, desc: &Descriptor, what: &str) -> Result<Blob, ImageError> {
        let digest = desc.digest().to_string();
        validate_digest(&digest).map_err(|r| bad(self.archive, format!("{what}: {r}")))?;
        let rel = format!("blobs/sha256/{}", &digest["sha256:".len()..]);
        let blob = self.blob(&rel)?;
        if blob.digest != digest {
            return Err(ImageError::DigestMismatch {
                archive: self.archive.to_path_buf(),
                what: format!("{what} {rel}"),
                expected: digest,
                actual: blob.digest,
            });
        }
        if blob.size != desc.size() {
            return Err(bad(
                self.archive,
                format!(
                    "{what} {rel}: {} bytes, its descriptor says {}",
                    blob.size,
                    desc.size()
                ),
            ));
        }
        Ok(blob)
    }
}

/// Extracts the regular files of a tarball into the staging directory, keeping its links
/// as a map (nothing is created from them, so they cannot point anywhere).
fn extract(archive: &Path, staging: &Staging) -> Result<Source, ImageError> {
    let file = File::open(archive).map_err(ImageError::io("opening", archive))?;
    let reader = unpack::decompressed(file).map_err(ImageError::io("reading", archive))?;
    let mut tar = tar::Archive::new(reader);
    let mut files = HashMap::new();
    let mut links = HashMap::new();
    let not_tar = |e: io::Error| bad(archive, format!("not a readable tar archive: {e}"));
    for entry in tar.entries().map_err(not_tar)? {
        let mut entry = entry.map_err(not_tar)?;
        let raw = entry.path_bytes().into_owned();
        let Some(rel) = std::str::from_utf8(&raw).ok().and_then(normalize) else {
            continue;
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let dst = staging.path("f");
                let mut out = File::create(&dst).map_err(ImageError::io("creating", &dst))?;
                io::copy(&mut entry, &mut out)
                    .map_err(|e| bad(archive, format!("reading {rel}: {e}")))?;
                files.insert(rel, dst);
            }
            kind @ (tar::EntryType::Symlink | tar::EntryType::Link) => {
                let Some(target) = entry.link_name_bytes() else {
                    continue;
                };
                let Ok(target) = std::str::from_utf8(&target) else {
                    continue;
                };
                let resolved = if kind == tar::EntryType::Link || target.starts_with('/') {
                    normalize(target)
                } else {
                    let parent = rel.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
                    normalize(&format!("{parent}/{target}"))
                };
                if let Some(resolved) = resolved {
                    links.insert(rel, resolved);
                }
            }
            _ => {}
        }
    }
    if files.is_empty() {
        return Err(bad(archive, "not an image archive: it holds no files"));
    }
    Ok(Source::Tar { files, links })
}
