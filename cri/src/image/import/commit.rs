//! The second phase of an import (and of a pull): under the store's exclusive lock,
//! staged blobs and layers move into place, records are written and tags move to the
//! images committed last.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;

use crate::image::store::{remove_any, unique_name, ImageStore, CHAIN_ID_SUFFIX};
use crate::image::{Image, ImageError, Layer};

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
