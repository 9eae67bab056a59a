//! Loading and checking a bundle's `config.json`; the default spec of `rrun spec`; the
//! `rrun features` document; signal names for `rrun kill`.
//!
//! [`validate`] runs before anything touches the kernel, so a bad bundle fails with a message
//! that names the offending field (in the JSON spelling, e.g. `linux.namespaces[2].path`)
//! instead of an errno from deep inside the container's init. It checks what runc's
//! `libcontainer/configs/validate` checks, and a few things runc leaves to the kernel.
//!
//! One file per mechanism: this one loads, [`validate`](validate()) checks, [`default_spec`]
//! is `rrun spec`, [`features`](features()) is `rrun features`, [`parse_signal`] is `kill`'s.

mod default;
mod features;
mod signal;
mod validate;

pub use default::default_spec;
pub use features::{features, CAPABILITIES, HOOKS, MOUNT_OPTIONS};
pub use signal::parse_signal;
pub use validate::{validate, validate_process};

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capability, Process, Spec};

/// The name of the configuration file inside a bundle.
pub const CONFIG_FILE: &str = "config.json";

/// What can be wrong with a bundle's configuration (or a signal name).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The bundle has no `config.json`.
    #[error("bundle {bundle}: {path} does not exist (is this an OCI bundle?)")]
    MissingConfig { bundle: PathBuf, path: PathBuf },
    /// `config.json` (or a `--process` file) exists but cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not valid JSON or does not match the runtime-spec schema. serde's message
    /// names the line and column.
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The configuration parses but breaks a rule; `field` is the JSON path of the culprit.
    #[error("invalid config: {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A signal name or number that `kill` does not know.
    #[error("unknown signal {0:?}: use a name (KILL, SIGKILL, sigterm) or a number (9)")]
    UnknownSignal(String),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Reads `bundle/config.json`, parses it and [`validate`]s it.
pub fn load_bundle(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join(CONFIG_FILE);
    let text = match fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SpecError::MissingConfig {
                bundle: bundle.to_path_buf(),
                path,
            })
        }
        Err(source) => return Err(SpecError::Read { path, source }),
    };
    let spec: Spec = parse_lenient(&text, &path, &["process"])?;
    validate(&spec, bundle)?;
    Ok(spec)
}

/// Parses `text` (the file at `path`) as a `T`. runtime-spec: a capability that cannot be
/// mapped to the kernel "MUST be logged as a warning" and the runtime "SHOULD NOT fail" (runc
/// warns too), but oci-spec refuses names it does not know. So when parsing fails, unknown
/// names are taken out of the capability sets found at `process_at` (the JSON path of the
/// process object: `["process"]` in a config, `[]` in an `exec --process` file), each is
/// warned about on stderr, and the rest is parsed again. Any other error is reported as is.
fn parse_lenient<T: serde::de::DeserializeOwned>(
    text: &[u8],
    path: &Path,
    process_at: &[&str],
) -> Result<T, SpecError> {
    // The usual file parses at once; only a failing one pays for a second look.
    let source = match serde_json::from_slice(text) {
        Ok(value) => return Ok(value),
        Err(source) => source,
    };
    match without_unknown_capabilities(text, process_at) {
        Some((value, dropped)) => {
            for name in dropped {
                eprintln!(
                    "rrun: warning: unknown capability {name} in {} ignored",
                    path.display()
                );
            }
            Ok(value)
        }
        None => Err(SpecError::Parse {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `text` parsed as a `T` once the capability names oci-spec does not know are removed, with
/// those names; `None` when there were none or the JSON fails for another reason too.
fn without_unknown_capabilities<T: serde::de::DeserializeOwned>(
    text: &[u8],
    process_at: &[&str],
) -> Option<(T, Vec<String>)> {
    let mut value: serde_json::Value = serde_json::from_slice(text).ok()?;
    let mut process = &mut value;
    for key in process_at {
        process = process.get_mut(*key)?;
    }
    let sets = process.get_mut("capabilities")?.as_object_mut()?;
    let mut dropped = Vec::new();
    for list in sets.values_mut() {
        if let Some(items) = list.as_array_mut() {
            items.retain(|item| {
                let known = serde_json::from_value::<Capability>(item.clone()).is_ok();
                if !known {
                    dropped.push(item.to_string());
                }
                known
            });
        }
    }
    if dropped.is_empty() {
        return None;
    }
    dropped.sort();
    dropped.dedup();
    serde_json::from_value(value)
        .ok()
        .map(|parsed| (parsed, dropped))
}

/// Reads and checks a process description, as given to `exec --process FILE`.
pub fn load_process(path: &Path) -> Result<Process, SpecError> {
    let text = fs::read(path).map_err(|source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let process: Process = parse_lenient(&text, path, &[])?;
    validate_process(&process)?;
    Ok(process)
}

/// The container's root filesystem: `root.path`, made absolute against the bundle (without
/// resolving symlinks). Without `root` (which [`validate`] rejects) it is `<bundle>/rootfs`.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> PathBuf {
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    let joined = bundle.join(root); // an absolute root.path replaces the bundle
    std::path::absolute(&joined).unwrap_or(joined)
}

#[cfg(test)]
mod tests;
