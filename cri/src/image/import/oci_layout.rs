//! The images of an OCI image layout (`oci-layout`, `index.json`, `blobs/`): the index is
//! walked to this machine's platform, attestations skipped, and each manifest, config and
//! layer descriptor checked against its blob.

use oci_spec::image::{
    Arch, Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Os, Platform,
};

use super::archive::{read_limited, Input};
use super::{bad, parse_json, Candidate, LayerSource};
use crate::image::ImageError;

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
const MAX_INDEX_DEPTH: usize = 4;

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

pub(super) fn read_oci(input: &Input) -> Result<Vec<Candidate>, ImageError> {
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
