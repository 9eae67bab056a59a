//! The images of a `docker save` tarball: `manifest.json` lists each image's config and
//! layer files (there is no manifest blob: one is made when the image is prepared).

use oci_spec::image::ImageConfiguration;
use serde::Deserialize;

use super::archive::{read_limited, Input};
use super::{bad, parse_json, Candidate, LayerSource};
use crate::image::ImageError;

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

pub(super) fn read_docker(input: &Input) -> Result<Vec<Candidate>, ImageError> {
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
