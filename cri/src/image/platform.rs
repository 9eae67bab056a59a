//! Which manifest of an index this machine runs, as containerd 1.6 picks it: same OS and
//! architecture, a variant this machine runs (normalised as `platforms.Normalize` does),
//! the best-ranked first; attestation manifests never.

use oci_spec::image::{Arch, Descriptor, ImageIndex, Os};

/// This machine's platform as an index names it; the variant normalised as containerd's
/// `platforms.Normalize` does (amd64 `v1` and arm64 `v8` are no variant, arm is `v7`).
pub(super) fn host_platform() -> (Os, Arch, &'static str) {
    let arch = Arch::default();
    let variant = if arch == Arch::ARM { "v7" } else { "" };
    (Os::Linux, arch, variant)
}

fn normalize_variant(arch: &Arch, variant: &str) -> String {
    match (arch, variant) {
        (Arch::Amd64, "v1") | (Arch::ARM64, "v8") => String::new(),
        (Arch::ARM, "") => "v7".into(),
        _ => variant.to_string(),
    }
}

/// containerd's matcher for a platform (`platforms.Only`): same OS and architecture, and
/// a variant this machine runs (arm v7 runs v6 and v5 images). Lower rank is better.
fn platform_rank(desc: &Descriptor) -> Option<usize> {
    let (os, arch, host_variant) = host_platform();
    let p = desc.platform().as_ref()?;
    if *p.os() != os || *p.architecture() != arch {
        return None;
    }
    let v = normalize_variant(p.architecture(), p.variant().as_deref().unwrap_or(""));
    let accepted: &[&str] = match host_variant {
        "v7" => &["v7", "v6", "v5"],
        _ => &[""],
    };
    accepted.iter().position(|a| *a == v)
}

/// The manifest of an index for this machine: the best-ranked match, first listed on a tie;
/// attestation manifests (platform unknown/unknown) never match.
pub(super) fn choose(index: &ImageIndex) -> Option<&Descriptor> {
    index
        .manifests()
        .iter()
        .filter_map(|d| platform_rank(d).map(|r| (r, d)))
        .min_by_key(|(r, _)| *r)
        .map(|(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

    fn index(entries: &[(&str, &str, Option<&str>)]) -> ImageIndex {
        let manifests: Vec<serde_json::Value> = entries
            .iter()
            .enumerate()
            .map(|(n, (os, arch, variant))| {
                let mut p = serde_json::json!({"os": os, "architecture": arch});
                if let Some(v) = variant {
                    p["variant"] = serde_json::json!(v);
                }
                serde_json::json!({
                    "mediaType": OCI_MANIFEST,
                    "digest": format!("sha256:{:064x}", n),
                    "size": 1,
                    "platform": p,
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({"schemaVersion": 2, "manifests": manifests}))
            .expect("index")
    }

    fn chosen(ix: &ImageIndex) -> Option<usize> {
        let d = choose(ix)?.digest().to_string();
        ix.manifests()
            .iter()
            .position(|m| m.digest().to_string() == d)
    }

    #[test]
    fn the_index_entry_for_this_machine() {
        let (_, arch, _) = host_platform();
        let arch = arch.to_string();
        let other = if arch == "arm64" { "amd64" } else { "arm64" };
        // Attestations (unknown/unknown) and other platforms never; the first match wins.
        let ix = index(&[
            ("unknown", "unknown", None),
            ("linux", other, None),
            ("windows", &arch, None),
            ("linux", &arch, None),
            ("linux", &arch, None),
        ]);
        assert_eq!(chosen(&ix), Some(3));
        assert_eq!(chosen(&index(&[("linux", other, None)])), None);
        if arch == "amd64" {
            // containerd normalises amd64/v1 to amd64; v3 is another platform (1.6).
            let ix = index(&[
                ("linux", "amd64", Some("v3")),
                ("linux", "amd64", Some("v1")),
            ]);
            assert_eq!(chosen(&ix), Some(1));
        }
    }
}
