//! Importing archives: an OCI image layout directory, an `oci-archive` tarball (a tar of
//! a layout) or a `docker save` tarball (`manifest.json`), optionally gzip- or
//! zstd-compressed as a whole.
//!
//! An import has two phases. Without the lock, everything is staged under `tmp/<pid>-<n>/`
//! (the same filesystem as the store, so the second phase only renames): a tarball is
//! extracted there, every blob an image needs is hashed against its name and descriptor,
//! and every new layer is unpacked there and its diff id compared with the config's. Then,
//! under the exclusive flock, blobs and layers move into place, records are written and
//! tags move from other images to the imported ones. The staging directory is removed
//! whatever happens, so an archive with one wrong digest leaves nothing behind.
//!
//! Names: `io.containerd.image.name` on an index entry, else
//! `org.opencontainers.image.ref.name` (skopeo writes the whole name there), else docker's
//! `RepoTags`, each normalised (see `reference.rs`). A `ref.name` holding only a tag (as the
//! OCI spec suggests, and few tools write) is read as a repository name: `latest` becomes
//! `docker.io/library/latest:latest`. From an index, the manifest for this machine's
//! platform (linux and its GOARCH) is taken; attestation manifests are skipped.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{
    Arch, Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest, ImageManifestBuilder,
    MediaType, Os, Platform,
};
use serde::Deserialize;

use super::reference::{parse_reference, validate_digest};
use super::store::{mkdir_private, remove_any, unique_name, ImageStore, CHAIN_ID_SUFFIX};
use super::unpack::{self, HashingReader};
use super::{Image, ImageError, Layer};

/// Annotations naming an image in an index.
const CONTAINERD_NAME_ANNOTATION: &str = "io.containerd.image.name";
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// buildx marks attestation manifests with this annotation.
const DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER_TYPES: &[&str] = &[
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];
/// The most a JSON document (index, manifest, config) may hold.
const MAX_JSON: u64 = 64 << 20;
const MAX_INDEX_DEPTH: usize = 4;
const LINK_DEPTH: usize = 16;

/// The staging directory of one import; removed when dropped.
struct Staging {
    dir: PathBuf,
    next: RefCell<u64>,
}

impl Staging {
    fn new(store: &ImageStore) -> Result<Staging, ImageError> {
        let dir = store.tmp_dir().join(unique_name());
        mkdir_private(&dir)?;
        Ok(Staging {
            dir,
            next: RefCell::new(0),
        })
    }

    fn path(&self, prefix: &str) -> PathBuf {
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
struct Blob {
    path: PathBuf,
    digest: String,
    size: u64,
    /// In the staging directory (to be moved into the store), not already in the store.
    staged: bool,
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

struct Input<'a> {
    archive: &'a Path,
    source: Source,
    staging: &'a Staging,
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

fn read_limited(path: &Path, what: &str, archive: &Path) -> Result<Vec<u8>, ImageError> {
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

fn bad(archive: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::BadArchive {
        archive: archive.to_path_buf(),
        reason: reason.into(),
    }
}

impl<'a> Input<'a> {
    fn open(archive: &'a Path, staging: &'a Staging) -> Result<Input<'a>, ImageError> {
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
    fn locate(&self, rel: &str) -> Option<PathBuf> {
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

    fn read_json(&self, rel: &str) -> Result<Option<Vec<u8>>, ImageError> {
        match self.locate(rel) {
            Some(path) => Ok(Some(read_limited(&path, rel, self.archive)?)),
            None => Ok(None),
        }
    }

    /// The archive's file `rel`, hashed, in the staging directory.
    fn blob(&self, rel: &str) -> Result<Blob, ImageError> {
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
    fn blob_for(&self, desc: &Descriptor, what: &str) -> Result<Blob, ImageError> {
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

/// Where a layer's blob comes from.
enum LayerSource {
    /// An OCI manifest's descriptor.
    Descriptor(Box<Descriptor>),
    /// A docker archive's `Layers` path.
    Path(String),
}

/// One image found in the archive.
struct Candidate {
    raw_names: Vec<String>,
    /// The manifest blob; `None` for a docker archive (made in [`ImageStore::prepare`]).
    manifest: Option<Blob>,
    config_blob: Blob,
    config: ImageConfiguration,
    layers: Vec<LayerSource>,
}

/// A candidate staged and checked, ready to commit.
pub(crate) struct Prepared {
    pub(crate) id: String,
    pub(crate) tags: Vec<String>,
    pub(crate) digest_refs: Vec<String>,
    pub(crate) repositories: Vec<String>,
    pub(crate) manifest_digest: Option<String>,
    pub(crate) config: ImageConfiguration,
    /// Blobs to move into the store: (digest, staged path).
    pub(crate) blobs: Vec<(String, Option<PathBuf>)>,
    /// Layers (the `dir` field to fill) with their staged unpacked directory, if new.
    pub(crate) layers: Vec<(Layer, Option<PathBuf>)>,
    pub(crate) size: u64,
    /// The store already had this image when it was staged: only names change.
    pub(crate) known: bool,
}

fn platform_matches(p: &Platform) -> bool {
    *p.os() == Os::Linux && *p.architecture() == Arch::default()
}

fn is_manifest(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageManifest)
        || matches!(mt, MediaType::Other(s) if s == DOCKER_MANIFEST)
}

fn is_index(mt: &MediaType) -> bool {
    matches!(mt, MediaType::ImageIndex)
        || matches!(mt, MediaType::Other(s) if s == DOCKER_MANIFEST_LIST)
}

fn is_layer(mt: &MediaType) -> bool {
    match mt {
        MediaType::ImageLayer
        | MediaType::ImageLayerGzip
        | MediaType::ImageLayerZstd
        | MediaType::ImageLayerNonDistributable
        | MediaType::ImageLayerNonDistributableGzip
        | MediaType::ImageLayerNonDistributableZstd => true,
        MediaType::Other(s) => DOCKER_LAYER_TYPES.contains(&s.as_str()),
        _ => false,
    }
}

fn names_of(desc: &Descriptor) -> Vec<String> {
    let Some(a) = desc.annotations() else {
        return Vec::new();
    };
    a.get(CONTAINERD_NAME_ANNOTATION)
        .or_else(|| a.get(REF_NAME_ANNOTATION))
        .filter(|n| !n.is_empty())
        .map(|n| vec![n.clone()])
        .unwrap_or_default()
}

fn parse_json<T: for<'de> Deserialize<'de>>(
    data: &[u8],
    what: &str,
    archive: &Path,
) -> Result<T, ImageError> {
    serde_json::from_slice(data).map_err(|e| bad(archive, format!("{what}: {e}")))
}

fn read_oci(input: &Input) -> Result<Vec<Candidate>, ImageError> {
    let archive = input.archive;
    if let Some(layout) = input.read_json("oci-layout")? {
        let v: serde_json::Value = parse_json(&layout, "oci-layout", archive)?;
        let version = v["imageLayoutVersion"].as_str().unwrap_or("");
        if !version.starts_with("1.") {
            return Err(bad(
                archive,
                format!("oci-layout: unsupported imageLayoutVersion {version:?}"),
            ));
        }
    }
    let index = input
        .read_json("index.json")?
        .ok_or_else(|| bad(archive, "index.json is missing"))?;
    let index: ImageIndex = parse_json(&index, "index.json", archive)?;
    let mut out: Vec<Candidate> = Vec::new();
    for desc in index.manifests() {
        visit(input, desc, &names_of(desc), 0, &mut out)?;
    }
    // Several index entries for one manifest (one per name) make one image.
    let mut merged: Vec<Candidate> = Vec::new();
    for c in out {
        let digest = c.manifest.as_ref().map(|m| m.digest.clone());
        match merged
            .iter_mut()
            .find(|m| m.manifest.as_ref().map(|b| b.digest.clone()) == digest)
        {
            Some(m) => m.raw_names.extend(c.raw_names),
            None => merged.push(c),
        }
    }
    if merged.is_empty() {
        return Err(bad(
            archive,
            format!("index.json lists no image for linux/{}", Arch::default()),
        ));
    }
    Ok(merged)
}

fn visit(
    input: &Input,
    desc: &Descriptor,
    names: &[String],
    depth: usize,
    out: &mut Vec<Candidate>,
) -> Result<(), ImageError> {
    let archive = input.archive;
    if desc
        .platform()
        .as_ref()
        .is_some_and(|p| !platform_matches(p))
    {
        return Ok(());
    }
    if desc
        .annotations()
        .as_ref()
        .is_some_and(|a| a.contains_key(DOCKER_REFERENCE_TYPE))
    {
        return Ok(());
    }
    let mt = desc.media_type();
    if is_index(mt) {
        if depth >= MAX_INDEX_DEPTH {
            return Err(bad(archive, "image indexes nested too deep"));
        }
        let blob = input.blob_for(desc, "index")?;
        let data = read_limited(&blob.path, &format!("index {}", desc.digest()), archive)?;
        let index: ImageIndex = parse_json(&data, &format!("index {}", desc.digest()), archive)?;
        let before = out.len();
        for d in index.manifests() {
            visit(input, d, names, depth + 1, out)?;
            if out.len() > before {
                break;
            }
        }
        return Ok(());
    }
    if !is_manifest(mt) {
        tracing::debug!(media_type = %mt, "skipping an index entry that is not an image");
        return Ok(());
    }
    let what = format!("manifest {}", desc.digest());
    let manifest_blob = input.blob_for(desc, "manifest")?;
    let data = read_limited(&manifest_blob.path, &what, archive)?;
    let manifest: ImageManifest = parse_json(&data, &what, archive)?;
    let config_type = manifest.config().media_type();
    let config_ok = matches!(config_type, MediaType::ImageConfig)
        || matches!(config_type, MediaType::Other(s) if s == DOCKER_CONFIG);
    if !config_ok {
        return Err(bad(
            archive,
            format!("{what}: not a container image (config media type {config_type})"),
        ));
    }
    let config_blob = input.blob_for(manifest.config(), "config")?;
    let cwhat = format!("config {}", config_blob.digest);
    let config: ImageConfiguration = parse_json(
        &read_limited(&config_blob.path, &cwhat, archive)?,
        &cwhat,
        archive,
    )?;
    let mut layers = Vec::new();
    for l in manifest.layers() {
        if !is_layer(l.media_type()) {
            return Err(bad(
                archive,
                format!(
                    "{what}: layer {}: unsupported media type {}",
                    l.digest(),
                    l.media_type()
                ),
            ));
        }
        layers.push(LayerSource::Descriptor(Box::new(l.clone())));
    }
    out.push(Candidate {
        raw_names: names.to_vec(),
        manifest: Some(manifest_blob),
        config_blob,
        config,
        layers,
    });
    Ok(())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

fn read_docker(input: &Input) -> Result<Vec<Candidate>, ImageError> {
    let archive = input.archive;
    let data = input
        .read_json("manifest.json")?
        .ok_or_else(|| bad(archive, "manifest.json is missing"))?;
    let entries: Vec<DockerEntry> = parse_json(&data, "manifest.json", archive)?;
    let mut out = Vec::new();
    for entry in entries {
        let config_blob = input.blob(&entry.config)?;
        // docker names the config after its digest.
        let stem = entry
            .config
            .rsplit('/')
            .next()
            .unwrap_or("")
            .trim_end_matches(".json");
        if stem.len() == 64
            && stem.bytes().all(|b| b.is_ascii_hexdigit())
            && config_blob.digest != format!("sha256:{stem}")
        {
            return Err(ImageError::DigestMismatch {
                archive: archive.to_path_buf(),
                what: format!("config {}", entry.config),
                expected: format!("sha256:{stem}"),
                actual: config_blob.digest,
            });
        }
        let what = format!("config {}", entry.config);
        let config: ImageConfiguration = parse_json(
            &read_limited(&config_blob.path, &what, archive)?,
            &what,
            archive,
        )?;
        out.push(Candidate {
            raw_names: entry.repo_tags.unwrap_or_default(),
            manifest: None,
            config_blob,
            config,
            layers: entry.layers.into_iter().map(LayerSource::Path).collect(),
        });
    }
    if out.is_empty() {
        return Err(bad(archive, "manifest.json lists no image"));
    }
    Ok(out)
}

/// The chain ids of a list of diff ids (OCI image spec: `ChainID(L0|L1) = sha256(ChainID(L0) + " " + DiffID(L1))`).
pub(crate) fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    use sha2::{Digest as _, Sha256};
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {d}")))
            ),
        };
        out.push(next);
    }
    out
}

fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl ImageStore {
    /// Imports every image of `archive` (a tarball, possibly gzip- or zstd-compressed, or
    /// an OCI layout directory) and returns them as stored (names merged with what the store
    /// had). Importing an image again only adds names; a name another image had moves.
    pub fn import(&self, archive: &Path) -> Result<Vec<Image>, ImageError> {
        let staging = Staging::new(self)?;
        let input = Input::open(archive, &staging)?;
        let candidates = if input.locate("index.json").is_some() {
            read_oci(&input)?
        } else if input.locate("manifest.json").is_some() {
            read_docker(&input)?
        } else {
            return Err(bad(
                archive,
                "neither an OCI image layout (no index.json) nor a docker save archive (no manifest.json)",
            ));
        };
        let known = self.list()?;
        let mut unpacked: HashMap<String, PathBuf> = HashMap::new();
        let mut prepared = Vec::new();
        for c in candidates {
            prepared.push(self.prepare(&input, c, &known, &mut unpacked)?);
        }
        let images = {
            let _lock = self.lock(true)?;
            self.commit(prepared)?
        };
        Ok(images)
    }

    fn prepare(
        &self,
        input: &Input,
        c: Candidate,
        known: &[Image],
        unpacked: &mut HashMap<String, PathBuf>,
    ) -> Result<Prepared, ImageError> {
        let archive = input.archive;
        let id = c.config_blob.digest.clone();
        let mut tags = Vec::new();
        let mut digest_refs = Vec::new();
        let mut repositories = Vec::new();
        for raw in &c.raw_names {
            let r = parse_reference(raw)
                .map_err(|e| bad(archive, format!("image name {raw:?}: {e}")))?;
            match &r.digest {
                Some(d) => {
                    if c.manifest.as_ref().is_some_and(|m| &m.digest != d) {
                        return Err(bad(
                            archive,
                            format!("image name {raw:?} does not match its manifest's digest"),
                        ));
                    }
                    digest_refs.push(r.to_string());
                }
                None => {
                    tags.push(r.to_string());
                    repositories.push(r.repository.clone());
                }
            }
        }
        let diff_ids = c.config.rootfs().diff_ids().clone();
        if diff_ids.len() != c.layers.len() {
            return Err(bad(
                archive,
                format!(
                    "image {id}: {} layers but its config lists {} diff ids",
                    c.layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        for d in &diff_ids {
            validate_digest(d).map_err(|r| bad(archive, format!("config {id}: diff id: {r}")))?;
        }
        if known.iter().any(|i| i.id == id) {
            return Ok(Prepared {
                id,
                tags,
                digest_refs,
                repositories,
                manifest_digest: c.manifest.map(|m| m.digest),
                config: c.config,
                blobs: Vec::new(),
                layers: Vec::new(),
                size: 0,
                known: true,
            });
        }

        let chains = chain_ids(&diff_ids);
        let mut blobs = vec![(
            c.config_blob.digest.clone(),
            c.config_blob.staged.then(|| c.config_blob.path.clone()),
        )];
        let mut layers: Vec<(Layer, Option<PathBuf>)> = Vec::new();
        // Unpacked directories of the layers so far, bottom first.
        let mut dirs: Vec<PathBuf> = Vec::new();
        let mut size = c.config_blob.size;
        for (i, source) in c.layers.iter().enumerate() {
            let (blob, media_type) = match source {
                LayerSource::Descriptor(desc) => {
                    let digest = desc.digest().to_string();
                    let in_store = self.blob_path(&digest).ok().filter(|p| p.is_file());
                    let blob = match in_store {
                        Some(path) => Blob {
                            path,
                            digest,
                            size: desc.size(),
                            staged: false,
                        },
                        None => input.blob_for(desc, "layer")?,
                    };
                    (blob, desc.media_type().to_string())
                }
                LayerSource::Path(rel) => {
                    let blob = input.blob(rel)?;
                    let mut r = io::BufReader::new(
                        File::open(&blob.path).map_err(ImageError::io("opening", &blob.path))?,
                    );
                    let compression =
                        unpack::sniff(&mut r).map_err(ImageError::io("reading", &blob.path))?;
                    (blob, compression.oci_media_type().to_string())
                }
            };
            let layer_err = |reason: String| ImageError::BadLayer {
                archive: archive.to_path_buf(),
                layer: blob.digest.clone(),
                reason,
            };
            let chain = &chains[i];
            let existing = self.find_layer(chain)?;
            let staged_dir = if let Some(name) = &existing {
                // Trust a diff id the store already checked for this very blob.
                let checked = known
                    .iter()
                    .flat_map(|img| &img.layers)
                    .any(|l| l.digest == blob.digest && l.diff_id == diff_ids[i]);
                if !checked {
                    let got = unpack::diff_id(&blob.path).map_err(layer_err)?;
                    if got != diff_ids[i] {
                        return Err(ImageError::DigestMismatch {
                            archive: archive.to_path_buf(),
                            what: format!("uncompressed layer {}", blob.digest),
                            expected: diff_ids[i].clone(),
                            actual: got,
                        });
                    }
                }
                dirs.push(self.layer_path(name));
                None
            } else if let Some(dir) = unpacked.get(chain) {
                dirs.push(dir.clone());
                None
            } else {
                let dest = input.staging.path("layer");
                mkdir_private(&dest)?;
                // The layer's root is the container's `/`: 0755 unless the layer's own `./`
                // entry says otherwise (most layers have none). The store's root stays 0700.
                std::fs::set_permissions(
                    &dest,
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )
                .map_err(ImageError::io("chmod", &dest))?;
                let lowers: Vec<PathBuf> = dirs.iter().rev().cloned().collect();
                let got = unpack::unpack(&blob.path, &dest, &lowers).map_err(|e| match e {
                    unpack::UnpackError::NoSpace(reason) => ImageError::NoSpace {
                        disk: super::store::describe_disk(&dest),
                        reason: format!("layer {}: {reason}", blob.digest),
                    },
                    unpack::UnpackError::Layer(m) => layer_err(m),
                })?;
                if got != diff_ids[i] {
                    return Err(ImageError::DigestMismatch {
                        archive: archive.to_path_buf(),
                        what: format!("uncompressed layer {}", blob.digest),
                        expected: diff_ids[i].clone(),
                        actual: got,
                    });
                }
                unpacked.insert(chain.clone(), dest.clone());
                dirs.push(dest.clone());
                Some(dest)
            };
            size += blob.size;
            blobs.push((blob.digest.clone(), blob.staged.then(|| blob.path.clone())));
            layers.push((
                Layer {
                    digest: blob.digest.clone(),
                    media_type,
                    size: blob.size,
                    diff_id: diff_ids[i].clone(),
                    chain_id: chain.clone(),
                    dir: String::new(),
                },
                staged_dir,
            ));
        }

        let manifest_digest = match c.manifest {
            Some(m) => {
                blobs.push((m.digest.clone(), m.staged.then(|| m.path.clone())));
                m.digest
            }
            None => {
                let (digest, path) = self.make_manifest(input, &c.config_blob, &layers)?;
                blobs.push((digest.clone(), Some(path)));
                digest
            }
        };
        Ok(Prepared {
            id,
            tags,
            digest_refs,
            repositories,
            manifest_digest: Some(manifest_digest),
            config: c.config,
            blobs,
            layers,
            size,
            known: false,
        })
    }

    /// An OCI manifest for a docker archive's image, staged as a blob.
    fn make_manifest(
        &self,
        input: &Input,
        config: &Blob,
        layers: &[(Layer, Option<PathBuf>)],
    ) -> Result<(String, PathBuf), ImageError> {
        let archive = input.archive;
        let digest =
            |d: &str| Digest::from_str(d).map_err(|e| bad(archive, format!("digest {d}: {e}")));
        let mut descs = Vec::new();
        for (l, _) in layers {
            descs.push(Descriptor::new(
                MediaType::from(l.media_type.as_str()),
                l.size,
                digest(&l.digest)?,
            ));
        }
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(Descriptor::new(
                MediaType::ImageConfig,
                config.size,
                digest(&config.digest)?,
            ))
            .layers(descs)
            .build()
            .map_err(|e| bad(archive, format!("making a manifest: {e}")))?;
        let data = serde_json::to_vec(&manifest)
            .map_err(|e| bad(archive, format!("making a manifest: {e}")))?;
        let path = input.staging.path("manifest");
        fs::write(&path, &data).map_err(ImageError::io("writing", &path))?;
        use sha2::{Digest as _, Sha256};
        Ok((
            format!("sha256:{}", hex::encode(Sha256::digest(&data))),
            path,
        ))
    }

    /// The directory name of the complete layer with chain id `chain`, if stored.
    pub(crate) fn find_layer(&self, chain: &str) -> Result<Option<String>, ImageError> {
        let hex = chain.trim_start_matches("sha256:");
        for len in [16, 32, 64] {
            let Some(name) = hex.get(..len) else { break };
            let marker = self.layer_path(&format!("{name}{CHAIN_ID_SUFFIX}"));
            match fs::read_to_string(&marker) {
                Ok(s) if s.trim() == chain => {
                    if self.layer_path(name).is_dir() {
                        return Ok(Some(name.to_string()));
                    }
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(ImageError::io("reading", &marker)(e)),
            }
        }
        Ok(None)
    }

    /// Under the lock: moves a staged layer into `layers/` under the shortest free name.
    fn place_layer(&self, chain: &str, staged: Option<&Path>) -> Result<String, ImageError> {
        if let Some(name) = self.find_layer(chain)? {
            return Ok(name);
        }
        let staged = staged.ok_or_else(|| ImageError::Store {
            root: self.root().to_path_buf(),
            reason: format!("layer {chain} was removed while this import ran; import again"),
        })?;
        let hex = chain.trim_start_matches("sha256:");
        for len in [16, 32, 64] {
            let Some(name) = hex.get(..len) else { break };
            let marker = self.layer_path(&format!("{name}{CHAIN_ID_SUFFIX}"));
            if marker.exists() {
                continue;
            }
            let dir = self.layer_path(name);
            // A directory without its marker is a crashed commit's: never complete.
            remove_any(&dir)?;
            fs::rename(staged, &dir).map_err(ImageError::io("moving into place", &dir))?;
            let tmp = self
                .tmp_dir()
                .join(format!("{}{CHAIN_ID_SUFFIX}", unique_name()));
            fs::write(&tmp, chain).map_err(ImageError::io("writing", &tmp))?;
            fs::rename(&tmp, &marker).map_err(ImageError::io("moving into place", &marker))?;
            return Ok(name.to_string());
        }
        Err(ImageError::Store {
            root: self.root().to_path_buf(),
            reason: format!("no free directory name for layer {chain}"),
        })
    }

    fn place_blob(&self, digest: &str, staged: Option<&Path>) -> Result<(), ImageError> {
        let dst = self.blob_path(digest)?;
        if dst.is_file() {
            return Ok(());
        }
        let staged = staged.ok_or_else(|| ImageError::Store {
            root: self.root().to_path_buf(),
            reason: format!("blob {digest} was removed while this import ran; import again"),
        })?;
        fs::rename(staged, &dst).map_err(ImageError::io("moving into place", &dst))
    }

    /// Under the exclusive lock: moves everything into place, writes the records and moves
    /// tags. Returns the imported images as now stored.
    pub(crate) fn commit(&self, prepared: Vec<Prepared>) -> Result<Vec<Image>, ImageError> {
        let now = now_nanos();
        let mut owners: HashMap<String, String> = HashMap::new();
        let mut ids: Vec<String> = Vec::new();
        for p in prepared {
            let mut image = match self.get(&p.id)? {
                Some(image) => image,
                None if p.known => {
                    return Err(ImageError::Store {
                        root: self.root().to_path_buf(),
                        reason: format!(
                            "image {} was removed while this import ran; import again",
                            p.id
                        ),
                    })
                }
                None => {
                    for (digest, staged) in &p.blobs {
                        self.place_blob(digest, staged.as_deref())?;
                    }
                    let mut layers = Vec::new();
                    for (mut layer, staged) in p.layers {
                        layer.dir = self.place_layer(&layer.chain_id, staged.as_deref())?;
                        layers.push(layer);
                    }
                    Image {
                        id: p.id.clone(),
                        repo_tags: Vec::new(),
                        repo_digests: Vec::new(),
                        size: p.size,
                        config: p.config,
                        manifest_digest: p.manifest_digest.clone().unwrap_or_default(),
                        layer_dirs: Vec::new(),
                        layers,
                        imported_at_nanos: now,
                    }
                }
            };
            // A docker archive has no manifest: an image already stored keeps the one
            // made when it was first imported.
            let md = p
                .manifest_digest
                .clone()
                .unwrap_or_else(|| image.manifest_digest.clone());
            let mut repo_digests: Vec<String> =
                p.repositories.iter().map(|r| format!("{r}@{md}")).collect();
            repo_digests.extend(p.digest_refs.iter().cloned());
            for t in &p.tags {
                if !image.repo_tags.contains(t) {
                    image.repo_tags.push(t.clone());
                }
                owners.insert(t.clone(), p.id.clone());
            }
            for d in repo_digests {
                if !image.repo_digests.contains(&d) {
                    image.repo_digests.push(d);
                }
            }
            self.write_record(&image)?;
            if !ids.contains(&p.id) {
                ids.push(p.id);
            }
        }
        // A name belongs to one image: the one imported last under it (as in containerd).
        for mut other in self.list()? {
            let before = other.repo_tags.len();
            other.repo_tags.retain(|t| match owners.get(t) {
                Some(owner) => *owner == other.id,
                None => true,
            });
            if other.repo_tags.len() != before {
                self.write_record(&other)?;
            }
        }
        let mut images = Vec::new();
        for id in ids {
            if let Some(image) = self.get(&id)? {
                images.push(image);
            }
        }
        Ok(images)
    }
}
