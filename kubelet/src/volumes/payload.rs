//! The files of ConfigMap, Secret, downward API and projected volumes, as the kubelet
//! computes them: every key (or the listed `items`, with their paths and modes), the
//! volume's `defaultMode` (0644 when left out), and `optional` sources that may be missing.

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod};

use super::atomic_writer::{File, Payload};
use crate::env::{self, Facts};
use crate::objects::Kind;

pub const DEFAULT_MODE: i32 = 0o644;

/// A ConfigMap's or Secret's files.
#[allow(clippy::too_many_arguments)]
pub fn object(
    facts: &Facts,
    ns: &str,
    kind: Kind,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    optional: bool,
    out: &mut Payload,
) -> Result<(), String> {
    let Some(obj) = facts.objects.get(kind, ns, name) else {
        if optional {
            return Ok(());
        }
        return Err(format!("{} \"{name}\" not found", kind.resource()));
    };
    let mode = |m: Option<i32>| (m.unwrap_or(default_mode) & 0o7777) as u32;
    match items {
        None => {
            for (k, v) in &obj.data {
                out.insert(
                    k.clone(),
                    File {
                        data: v.clone(),
                        mode: mode(None),
                    },
                );
            }
        }
        Some(items) => {
            for it in items {
                let Some(v) = obj.data.get(&it.key) else {
                    if optional {
                        continue;
                    }
                    return Err(format!(
                        "{} references non-existent {} key: {}",
                        kind.resource(),
                        if kind == Kind::ConfigMap {
                            "config"
                        } else {
                            "secret"
                        },
                        it.key
                    ));
                };
                out.insert(
                    it.path.clone(),
                    File {
                        data: v.clone(),
                        mode: mode(it.mode),
                    },
                );
            }
        }
    }
    Ok(())
}

/// Downward API files: fields of the pod and resources of its containers.
pub fn downward(
    pod: &Pod,
    facts: &Facts,
    items: Option<&Vec<DownwardAPIVolumeFile>>,
    default_mode: i32,
    out: &mut Payload,
) -> Result<(), String> {
    let first = &crate::spec::spec(pod).containers;
    for it in items.into_iter().flatten() {
        let data = if let Some(f) = &it.field_ref {
            env::field_value(pod, facts, &f.field_path)?
        } else if let Some(r) = &it.resource_field_ref {
            let Some(c) = first.first() else {
                return Err("downwardAPI: the pod has no containers".into());
            };
            env::resource_value(pod, c, r, facts)?
        } else {
            String::new()
        };
        out.insert(
            it.path.clone(),
            File {
                data: data.into_bytes(),
                mode: (it.mode.unwrap_or(default_mode) & 0o7777) as u32,
            },
        );
    }
    Ok(())
}
