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
//!
//! The archive's files are read through `archive.rs`; its images are found by
//! `oci_layout.rs` or `docker_archive.rs`; `commit.rs` is the second phase (shared with
//! pulls).

mod archive;
mod commit;
mod docker_archive;
mod oci_layout;

pub(crate) use commit::{chain_ids, Prepared};

use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use oci_spec::image::{Descriptor, Digest, ImageConfiguration, ImageManifestBuilder, MediaType};
use serde::Deserialize;

use super::reference::{parse_reference, validate_digest};
use super::store::{mkdir_private, ImageStore};
use super::unpack;
use super::{Image, ImageError, Layer};
use archive::{Blob, Input, Staging};
use docker_archive::read_docker;
use oci_layout::read_oci;

fn bad(archive: &Path, reason: impl Into<String>) -> ImageError {
    ImageError::BadArchive {
        archive: archive.to_path_buf(),
        reason: reason.into(),
    }
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

fn parse_json<T: for<'de> Deserialize<'de>>(
    data: &[u8],
    what: &str,
    archive: &Path,
) -> Result<T, ImageError> {
    serde_json::from_slice(data).map_err(|e| bad(archive, format!("{what}: {e}")))
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
}
