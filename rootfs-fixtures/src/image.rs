//! Container images built from the busybox rootfs, for the CRI server's tests and benchmark:
//! an OCI image layout directory, an `oci-archive` tarball (what `skopeo copy ...
//! oci-archive:` writes) or a `docker save` tarball.
//!
//! ```no_run
//! use rootfs_fixtures::image::{write_image, ArchiveFormat, ImageSpec};
//! let spec = ImageSpec {
//!     reference: "busybox:test".into(),
//!     format: ArchiveFormat::DockerArchive,
//!     ..ImageSpec::default()
//! };
//! let id = write_image(std::path::Path::new("/tmp/busybox.tar"), &spec)?;
//! # anyhow::Ok(())
//! ```
//!
//! The first layer is the busybox rootfs of [`crate::layout_busybox_rootfs`] (`/home/app` owned
//! by [`crate::APP_UID`]); each [`LayerSpec`] adds a layer on top. Everything written is
//! deterministic (fixed mtimes, sorted entries, fixed compressor settings), so the same spec
//! gives the same image id on every run of the same build.
//!
//! This module builds the JSON documents by hand with `serde_json` and depends on neither
//! rrun nor rrun-cri, so the tests that import these images check the store against an
//! independent writer.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

/// The mtime of every entry in every layer (2023-11-14T22:13:20Z).
pub const MTIME: u64 = 1_700_000_000;
/// [`MTIME`] in RFC 3339, the images' `created` time.
pub const CREATED: &str = "2023-11-14T22:13:20Z";

/// The busybox default `PATH`.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The index annotation holding an image's name (as skopeo writes it).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// How the image is packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A tar of an OCI image layout (`skopeo copy ... oci-archive:FILE:NAME`).
    OciArchive,
    /// A `docker save` tarball: `manifest.json`, `<config hex>.json`, `<layer>/layer.tar`.
    DockerArchive,
    /// An OCI image layout directory (`oci-layout`, `index.json`, `blobs/sha256/`).
    OciLayoutDir,
}

/// How layers are compressed. `docker save` writes plain tar layers: use
/// [`Compression::None`] with [`ArchiveFormat::DockerArchive`] for a faithful one (the
/// others make a docker archive with compressed `layer.tar` files, which a loader must sniff).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The OCI layer media type for this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => "application/vnd.oci.image.layer.v1.tar",
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// One layer on top of busybox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LayerSpec {
    /// Regular files to add: path (relative to `/`, or absolute), content and mode
    /// (permission bits, e.g. `0o755`). Missing parent directories are added as
    /// directories (with busybox's metadata where busybox has that directory).
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// Paths to delete from the layers below (an OCI whiteout `.wh.NAME` each).
    pub whiteouts: Vec<String>,
    /// Directories whose lower contents are hidden (an OCI opaque whiteout
    /// `DIR/.wh..wh..opq` each); files of this layer inside them stay visible.
    pub opaque_dirs: Vec<String>,
}

/// What image to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpec {
    /// The name written into the archive (`org.opencontainers.image.ref.name`, or docker's
    /// `RepoTags`), as given: e.g. `busybox:latest`. Empty: no name.
    pub reference: String,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: String,
    pub user: String,
    pub labels: BTreeMap<String, String>,
    pub compression: Compression,
    pub format: ArchiveFormat,
    /// extra layers on top of busybox: files to add and paths to delete (whiteouts) / opaque dirs
    pub extra_layers: Vec<LayerSpec>,
}

impl Default for ImageSpec {
    /// Busybox-like: `cmd ["sh"]`, the default `PATH`, `busybox:latest`, an oci-archive with
    /// gzip layers.
    fn default() -> Self {
        ImageSpec {
            reference: "busybox:latest".into(),
            entrypoint: Vec::new(),
            cmd: vec!["sh".into()],
            env: vec![DEFAULT_PATH.into()],
            workdir: String::new(),
            user: String::new(),
            labels: BTreeMap::new(),
            compression: Compression::Gzip,
            format: ArchiveFormat::OciArchive,
            extra_layers: Vec::new(),
        }
    }
}

/// What [`write_images`] wrote for one image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrittenImage {
    /// The name as given in the spec.
    pub reference: String,
    /// `sha256:<hex of the config blob>`.
    pub id: String,
    /// The OCI manifest's digest (`sha256:...`). For a docker archive, which has no manifest,
    /// this is the digest the manifest would have in an OCI layout with the same layers; a
    /// loader that builds its own manifest may get another one.
    pub manifest_digest: String,
    /// The compressed layer blobs' digests, bottom layer first.
    pub layer_digests: Vec<String>,
    /// The uncompressed layers' digests (the config's `rootfs.diff_ids`), bottom first.
    pub diff_ids: Vec<String>,
    /// Sizes of the compressed layer blobs plus the config blob, in bytes.
    pub size: u64,
}

/// Writes the archive (or layout dir) at `path`; returns the image id ("sha256:<config digest>").
pub fn write_image(path: &Path, spec: &ImageSpec) -> Result<String> {
    let written = write_images(path, spec.format, std::slice::from_ref(spec))?;
    Ok(written.into_iter().next().map(|w| w.id).unwrap_or_default())
}

/// Writes several images into one archive (or layout dir) of `format` (the specs' own
/// `format` is ignored). Blobs shared between them (the busybox layer) are written once;
/// specs that differ only in `reference` give one image with several names.
pub fn write_images(
    path: &Path,
    format: ArchiveFormat,
    specs: &[ImageSpec],
) -> Result<Vec<WrittenImage>> {
    if specs.is_empty() {
        bail!("write_images: no image to write to {}", path.display());
    }
    let mut blobs: BTreeMap<String, Arc<Vec<u8>>> = BTreeMap::new();
    let mut written = Vec::new();
    // For the docker archive: config hex -> (layer blob hexes, repo tags), in first-seen order.
    let mut docker_entries: Vec<(String, Vec<String>, Vec<String>)> = Vec::new();
    let mut index_manifests = Vec::new();

    for spec in specs {
        let mut layer_blobs = Vec::new();
        let mut diff_ids = Vec::new();
        let mut layer_digests = Vec::new();
        let mut layer_descriptors = Vec::new();
        let mut size = 0u64;
        let mut layers: Vec<Arc<Vec<u8>>> = vec![busybox_layer_tar()?];
        let busybox_dirs = busybox_dir_modes()?;
        for extra in &spec.extra_layers {
            layers.push(Arc::new(layer_tar(extra, &busybox_dirs)?));
        }
        for tar in &layers {
            diff_ids.push(digest_of(tar));
            let blob = compressed(tar, spec.compression)?;
            let digest = digest_of(&blob);
            size += blob.len() as u64;
            layer_descriptors.push(json!({
                "mediaType": spec.compression.oci_media_type(),
                "digest": digest,
                "size": blob.len(),
            }));
            layer_digests.push(digest.clone());
            layer_blobs.push(hex_of(&digest).to_string());
            blobs.insert(hex_of(&digest).to_string(), blob);
        }
        let config = serde_json::to_vec(&image_config(spec, &diff_ids))?;
        let config_digest = digest_of(&config);
        size += config.len() as u64;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest,
                "size": config.len(),
            },
            "layers": layer_descriptors,
        }))?;
        let manifest_digest = digest_of(&manifest);
        let mut descriptor = json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
        });
        if !spec.reference.is_empty() {
            descriptor["annotations"] = json!({ REF_NAME_ANNOTATION: spec.reference });
        }
        index_manifests.push(descriptor);

        let config_hex = hex_of(&config_digest).to_string();
        let tags: Vec<String> = if spec.reference.is_empty() || spec.reference.contains('@') {
            Vec::new()
        } else {
            vec![spec.reference.clone()]
        };
        match docker_entries.iter_mut().find(|(c, _, _)| *c == config_hex) {
            Some((_, _, t)) => t.extend(tags),
            None => docker_entries.push((config_hex.clone(), layer_blobs, tags)),
        }
        blobs.insert(config_hex, Arc::new(config));
        blobs.insert(hex_of(&manifest_digest).to_string(), Arc::new(manifest));

        written.push(WrittenImage {
            reference: spec.reference.clone(),
            id: config_digest,
            manifest_digest,
            layer_digests,
            diff_ids,
            size,
        });
    }

    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": index_manifests,
    }))?;
    let oci_layout = br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec();

    match format {
        ArchiveFormat::OciLayoutDir => {
            let blob_dir = path.join("blobs/sha256");
            fs::create_dir_all(&blob_dir)
                .with_context(|| format!("creating {}", blob_dir.display()))?;
            write_file(&path.join("oci-layout"), &oci_layout)?;
            write_file(&path.join("index.json"), &index)?;
            for (hex, data) in &blobs {
                write_file(&blob_dir.join(hex), data)?;
            }
        }
        ArchiveFormat::OciArchive => {
            let mut files: Vec<(String, &[u8])> = vec![
                ("oci-layout".into(), &oci_layout),
                ("index.json".into(), &index),
            ];
            for (hex, data) in &blobs {
                files.push((format!("blobs/sha256/{hex}"), data));
            }
            write_archive(path, &["blobs", "blobs/sha256"], &files)?;
        }
        ArchiveFormat::DockerArchive => {
            let mut manifest = Vec::new();
            let mut repositories: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
            let mut dirs = BTreeSet::new();
            let mut files: Vec<(String, &[u8])> = Vec::new();
            for (config_hex, layer_hexes, tags) in &docker_entries {
                let mut tags = tags.clone();
                tags.dedup();
                let layer_paths: Vec<String> = layer_hexes
                    .iter()
                    .map(|h| format!("{h}/layer.tar"))
                    .collect();
                manifest.push(json!({
                    "Config": format!("{config_hex}.json"),
                    "RepoTags": tags,
                    "Layers": layer_paths,
                }));
                if let Some(top) = layer_hexes.last() {
                    for tag in &tags {
                        let (repo, t) = split_tag(tag);
                        repositories
                            .entry(repo.to_string())
                            .or_default()
                            .insert(t.to_string(), top.clone().into());
                    }
                }
                dirs.extend(layer_hexes.iter().cloned());
            }
            let manifest = serde_json::to_vec(&manifest)?;
            let repositories = serde_json::to_vec(&repositories)?;
            let mut names: BTreeMap<String, &[u8]> = BTreeMap::new();
            for (config_hex, _, _) in &docker_entries {
                let data = blobs
                    .get(config_hex)
                    .with_context(|| format!("config {config_hex} missing"))?;
                names.insert(format!("{config_hex}.json"), data);
            }
            for hex in &dirs {
                let data = blobs
                    .get(hex)
                    .with_context(|| format!("layer {hex} missing"))?;
                names.insert(format!("{hex}/layer.tar"), data);
            }
            files.extend(names);
            files.push(("manifest.json".into(), &manifest));
            files.push(("repositories".into(), &repositories));
            let dirs: Vec<&str> = dirs.iter().map(String::as_str).collect();
            write_archive(path, &dirs, &files)?;
        }
    }
    Ok(written)
}

/// `busybox:1.36` -> (`busybox`, `1.36`); no tag -> `latest`. A ':' before the last '/' is a
/// registry port, not a tag.
fn split_tag(reference: &str) -> (&str, &str) {
    match reference.rfind(':') {
        Some(i) if !reference[i..].contains('/') => (&reference[..i], &reference[i + 1..]),
        _ => (reference, "latest"),
    }
}

/// `sha256:<hex>` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

/// The Go architecture name of this machine, as image configs spell it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

fn image_config(spec: &ImageSpec, diff_ids: &[String]) -> Value {
    let mut config = Map::new();
    if !spec.user.is_empty() {
        config.insert("User".into(), spec.user.clone().into());
    }
    if !spec.env.is_empty() {
        config.insert("Env".into(), json!(spec.env));
    }
    if !spec.entrypoint.is_empty() {
        config.insert("Entrypoint".into(), json!(spec.entrypoint));
    }
    if !spec.cmd.is_empty() {
        config.insert("Cmd".into(), json!(spec.cmd));
    }
    if !spec.workdir.is_empty() {
        config.insert("WorkingDir".into(), spec.workdir.clone().into());
    }
    if !spec.labels.is_empty() {
        config.insert("Labels".into(), json!(spec.labels));
    }
    let mut history =
        vec![json!({ "created": CREATED, "created_by": "rrun-fixtures: busybox rootfs" })];
    for i in 0..spec.extra_layers.len() {
        history.push(json!({ "created": CREATED, "created_by": format!("rrun-fixtures: extra layer {}", i + 1) }));
    }
    json!({
        "created": CREATED,
        "architecture": go_arch(),
        "os": "linux",
        "config": config,
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    })
}

fn compressed(tar: &Arc<Vec<u8>>, compression: Compression) -> Result<Arc<Vec<u8>>> {
    match compression {
        Compression::None => Ok(Arc::clone(tar)),
        Compression::Gzip => {
            // GzBuilder's header has mtime 0 and no file name: deterministic.
            let mut enc = flate2::GzBuilder::new().write(Vec::new(), flate2::Compression::fast());
            enc.write_all(tar)?;
            Ok(Arc::new(enc.finish()?))
        }
        Compression::Zstd => Ok(Arc::new(zstd::encode_all(tar.as_slice(), 3)?)),
    }
}

fn header(kind: EntryType, mode: u32, uid: u64, gid: u64, size: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(uid);
    h.set_gid(gid);
    h.set_mtime(MTIME);
    h.set_size(size);
    h
}

/// Directory path (relative, no trailing slash) -> (mode, uid, gid) in the busybox layer.
type DirModes = HashMap<String, (u32, u64, u64)>;

/// Who owns what in the busybox layer: everything root's except the `app` user's home.
fn busybox_owner(rel: &str) -> (u64, u64) {
    if rel == "home/app" {
        (u64::from(crate::APP_UID), u64::from(crate::APP_GID))
    } else {
        (0, 0)
    }
}

struct BusyboxLayer {
    tar: Arc<Vec<u8>>,
    dirs: DirModes,
}

static BUSYBOX_LAYER: Mutex<Option<Arc<BusyboxLayer>>> = Mutex::new(None);

fn busybox_layer() -> Result<Arc<BusyboxLayer>> {
    let mut cache = BUSYBOX_LAYER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(layer) = cache.as_ref() {
        return Ok(Arc::clone(layer));
    }
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "rrun-fixtures-layer-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _cleanup = RemoveOnDrop(dir.clone());
    crate::layout_busybox_rootfs(&dir)?;
    let layer = Arc::new(tar_directory(&dir)?);
    *cache = Some(Arc::clone(&layer));
    Ok(layer)
}

/// The busybox rootfs as an uncompressed layer tar (built once per process).
pub fn busybox_layer_tar() -> Result<Arc<Vec<u8>>> {
    Ok(Arc::clone(&busybox_layer()?.tar))
}

fn busybox_dir_modes() -> Result<DirModes> {
    Ok(busybox_layer()?.dirs.clone())
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Tars `root` as a layer: entries sorted by path, fixed mtime, ownership from
/// [`busybox_owner`], hardlinks kept as hardlinks.
fn tar_directory(root: &Path) -> Result<BusyboxLayer> {
    let mut paths = Vec::new();
    collect(root, root, &mut paths)?;
    paths.sort();
    let mut builder = tar::Builder::new(Vec::new());
    let mut seen_inodes: HashMap<(u64, u64), String> = HashMap::new();
    let mut dirs = DirModes::new();
    for rel in paths {
        let full = root.join(&rel);
        let meta =
            fs::symlink_metadata(&full).with_context(|| format!("stat {}", full.display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        let (uid, gid) = busybox_owner(&rel);
        let ft = meta.file_type();
        if ft.is_dir() {
            dirs.insert(rel.clone(), (mode, uid, gid));
            let mut h = header(EntryType::Directory, mode, uid, gid, 0);
            builder.append_data(&mut h, format!("{rel}/"), std::io::empty())?;
        } else if ft.is_symlink() {
            let target =
                fs::read_link(&full).with_context(|| format!("readlink {}", full.display()))?;
            let mut h = header(EntryType::Symlink, 0o777, uid, gid, 0);
            builder.append_link(&mut h, &rel, &target)?;
        } else if ft.is_file() {
            let key = (meta.dev(), meta.ino());
            if meta.nlink() > 1 {
                if let Some(first) = seen_inodes.get(&key) {
                    let mut h = header(EntryType::Link, mode, uid, gid, 0);
                    builder.append_link(&mut h, &rel, first)?;
                    continue;
                }
                seen_inodes.insert(key, rel.clone());
            }
            let data = fs::read(&full).with_context(|| format!("reading {}", full.display()))?;
            let mut h = header(EntryType::Regular, mode, uid, gid, data.len() as u64);
            builder.append_data(&mut h, &rel, data.as_slice())?;
        } else {
            bail!(
                "{}: unexpected file type in the busybox rootfs",
                full.display()
            );
        }
    }
    Ok(BusyboxLayer {
        tar: Arc::new(builder.into_inner()?),
        dirs,
    })
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .with_context(|| format!("{} outside {}", path.display(), root.display()))?
            .to_str()
            .with_context(|| format!("{}: not UTF-8", path.display()))?
            .to_string();
        out.push(rel);
        if entry.file_type()?.is_dir() {
            collect(root, &path, out)?;
        }
    }
    Ok(())
}

/// Splits a spec path into its non-empty components, refusing `..`.
fn components(path: &str) -> Result<Vec<&str>> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if parts.is_empty() || parts.contains(&"..") {
        bail!("layer path {path:?}: must name something below / without \"..\"");
    }
    Ok(parts)
}

/// An uncompressed layer tar for `spec`: parent directories first (with busybox's metadata
/// where it has them, as a real diff would carry them), then whiteouts, opaque markers and
/// files, in the spec's order.
fn layer_tar(spec: &LayerSpec, busybox_dirs: &DirModes) -> Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut emitted_dirs = BTreeSet::new();
    let mut dir = |builder: &mut tar::Builder<Vec<u8>>, rel: String| -> Result<()> {
        if emitted_dirs.insert(rel.clone()) {
            let (mode, uid, gid) = busybox_dirs.get(&rel).copied().unwrap_or((0o755, 0, 0));
            let mut h = header(EntryType::Directory, mode, uid, gid, 0);
            builder.append_data(&mut h, format!("{rel}/"), std::io::empty())?;
        }
        Ok(())
    };
    let parents = |parts: &[&str]| -> Vec<String> {
        (1..parts.len()).map(|n| parts[..n].join("/")).collect()
    };

    for path in &spec.whiteouts {
        let parts = components(path)?;
        for p in parents(&parts) {
            dir(&mut builder, p)?;
        }
        let (name, dirs) = parts.split_last().context("empty whiteout path")?;
        let mut wh: Vec<&str> = dirs.to_vec();
        let marker = format!(".wh.{name}");
        wh.push(&marker);
        let mut h = header(EntryType::Regular, 0o644, 0, 0, 0);
        builder.append_data(&mut h, wh.join("/"), std::io::empty())?;
    }
    for path in &spec.opaque_dirs {
        let parts = components(path)?;
        for p in parents(&parts) {
            dir(&mut builder, p)?;
        }
        dir(&mut builder, parts.join("/"))?;
        let mut h = header(EntryType::Regular, 0o644, 0, 0, 0);
        builder.append_data(
            &mut h,
            format!("{}/.wh..wh..opq", parts.join("/")),
            std::io::empty(),
        )?;
    }
    for (path, content, mode) in &spec.files {
        let parts = components(path)?;
        for p in parents(&parts) {
            dir(&mut builder, p)?;
        }
        let mut h = header(
            EntryType::Regular,
            mode & 0o7777,
            0,
            0,
            content.len() as u64,
        );
        builder.append_data(&mut h, parts.join("/"), content.as_slice())?;
    }
    Ok(builder.into_inner()?)
}

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// Writes a tar at `path` with directories `dirs` then `files`, deterministic headers.
fn write_archive(path: &Path, dirs: &[&str], files: &[(String, &[u8])]) -> Result<()> {
    let file = fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut builder = tar::Builder::new(std::io::BufWriter::new(file));
    for d in dirs {
        let mut h = header(EntryType::Directory, 0o755, 0, 0, 0);
        builder.append_data(&mut h, format!("{d}/"), std::io::empty())?;
    }
    for (name, data) in files {
        let mut h = header(EntryType::Regular, 0o644, 0, 0, data.len() as u64);
        builder
            .append_data(&mut h, name, *data)
            .with_context(|| format!("writing {name} into {}", path.display()))?;
    }
    let mut out = builder
        .into_inner()
        .with_context(|| format!("finishing {}", path.display()))?;
    out.flush()
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(name: &str) -> TempDir {
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "rrun-fixtures-test-{name}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn entries(tar: &[u8]) -> Vec<(String, EntryType)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().entry_type(),
                )
            })
            .collect()
    }

    fn layered_spec(format: ArchiveFormat, compression: Compression) -> ImageSpec {
        ImageSpec {
            format,
            compression,
            extra_layers: vec![LayerSpec {
                files: vec![("/etc/motd".into(), b"hi\n".to_vec(), 0o644)],
                whiteouts: vec!["etc/hosts".into()],
                opaque_dirs: vec!["home".into()],
            }],
            ..ImageSpec::default()
        }
    }

    #[test]
    fn ids_are_deterministic_and_formats_agree() {
        let dir = TempDir::new("det");
        let a = write_image(&dir.0.join("a.tar"), &ImageSpec::default()).unwrap();
        let b = write_image(&dir.0.join("b.tar"), &ImageSpec::default()).unwrap();
        assert_eq!(a, b);
        assert_eq!(
            fs::read(dir.0.join("a.tar")).unwrap(),
            fs::read(dir.0.join("b.tar")).unwrap()
        );
        let docker = write_image(
            &dir.0.join("d.tar"),
            &ImageSpec {
                format: ArchiveFormat::DockerArchive,
                ..ImageSpec::default()
            },
        )
        .unwrap();
        // Same config (diff ids do not depend on compression): same id.
        assert_eq!(a, docker);
        assert!(a.starts_with("sha256:") && a.len() == 71, "{a}");
    }

    #[test]
    fn layout_dir_blobs_match_their_names() {
        let dir = TempDir::new("layout");
        let out = dir.0.join("layout");
        let w = write_images(
            &out,
            ArchiveFormat::OciLayoutDir,
            &[layered_spec(ArchiveFormat::OciLayoutDir, Compression::Zstd)],
        )
        .unwrap();
        assert_eq!(w[0].layer_digests.len(), 2);
        for entry in fs::read_dir(out.join("blobs/sha256")).unwrap() {
            let entry = entry.unwrap();
            let data = fs::read(entry.path()).unwrap();
            assert_eq!(
                digest_of(&data),
                format!("sha256:{}", entry.file_name().to_string_lossy())
            );
        }
        let index: Value =
            serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
        assert_eq!(
            index["manifests"][0]["annotations"][REF_NAME_ANNOTATION],
            "busybox:latest"
        );
        assert_eq!(
            index["manifests"][0]["digest"],
            w[0].manifest_digest.as_str()
        );
        let config: Value = serde_json::from_slice(
            &fs::read(out.join("blobs/sha256").join(hex_of(&w[0].id))).unwrap(),
        )
        .unwrap();
        assert_eq!(config["rootfs"]["diff_ids"], json!(w[0].diff_ids));
        assert_eq!(config["config"]["Cmd"], json!(["sh"]));

        // The extra layer decompresses to its diff id and holds the whiteouts.
        let blob = fs::read(
            out.join("blobs/sha256")
                .join(hex_of(&w[0].layer_digests[1])),
        )
        .unwrap();
        let tar = zstd::decode_all(blob.as_slice()).unwrap();
        assert_eq!(digest_of(&tar), w[0].diff_ids[1]);
        let names: Vec<String> = entries(&tar).into_iter().map(|(n, _)| n).collect();
        for want in [
            "etc/",
            "etc/.wh.hosts",
            "home/",
            "home/.wh..wh..opq",
            "etc/motd",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} missing from {names:?}"
            );
        }
    }

    #[test]
    fn docker_archive_shape() {
        let dir = TempDir::new("docker");
        let path = dir.0.join("d.tar");
        let specs = [
            layered_spec(ArchiveFormat::DockerArchive, Compression::None),
            ImageSpec {
                reference: "example.com:5000/other/name:v2".into(),
                ..layered_spec(ArchiveFormat::DockerArchive, Compression::None)
            },
        ];
        let w = write_images(&path, ArchiveFormat::DockerArchive, &specs).unwrap();
        assert_eq!(w[0].id, w[1].id);
        let mut files = HashMap::new();
        let mut a = tar::Archive::new(fs::File::open(&path).unwrap());
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            files.insert(name, data);
        }
        let manifest: Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
        assert_eq!(manifest.as_array().unwrap().len(), 1);
        assert_eq!(
            manifest[0]["RepoTags"],
            json!(["busybox:latest", "example.com:5000/other/name:v2"])
        );
        let layers = manifest[0]["Layers"].as_array().unwrap();
        assert_eq!(layers.len(), 2);
        for (layer, diff_id) in layers.iter().zip(&w[0].diff_ids) {
            assert_eq!(&digest_of(&files[layer.as_str().unwrap()]), diff_id);
        }
        let repos: Value = serde_json::from_slice(&files["repositories"]).unwrap();
        assert!(repos["example.com:5000/other/name"]["v2"].is_string());
        let busybox = entries(&busybox_layer_tar().unwrap());
        assert!(busybox.contains(&("bin/busybox".into(), EntryType::Regular)));
        assert!(busybox.contains(&("bin/sh".into(), EntryType::Symlink)));
    }
}
