//! The agent's state that must survive a kill -9 (restart counts and back-off), in one JSON
//! file under the root dir, replaced atomically (write a temp file, fsync, rename).
//! Everything else is rebuilt from the CRI's labels at start.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Backoff {
    /// The current back-off in milliseconds (0: the next restart is immediate).
    pub delay_ms: u64,
    /// Unix milliseconds of the last restart that raised it.
    pub updated_ms: i64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerState {
    pub restarts: u32,
    pub backoff: Backoff,
}

/// Why a pod was evicted: its status says so for as long as the pod is wanted, and the
/// next agent does not start it again.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Evicted {
    pub reason: String,
    pub message: String,
}

impl From<crate::resources::Refusal> for Evicted {
    fn from(r: crate::resources::Refusal) -> Self {
        Evicted {
            reason: r.reason,
            message: r.message,
        }
    }
}

impl From<Evicted> for crate::resources::Refusal {
    fn from(e: Evicted) -> Self {
        crate::resources::Refusal {
            reason: e.reason,
            message: e.message,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// pod uid → container name → state.
    pub pods: BTreeMap<String, BTreeMap<String, ContainerState>>,
    /// pod uid → its eviction (older state files have none).
    #[serde(default)]
    pub evicted: BTreeMap<String, Evicted>,
}

pub struct Store {
    path: PathBuf,
    pub state: State,
}

impl Store {
    /// Loads `<root>/state.json`; a missing file is an empty state, a corrupt one an error.
    pub fn open(root: &Path) -> anyhow::Result<Store> {
        let path = root.join("state.json");
        let state = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| anyhow::anyhow!("{}: corrupt state: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(anyhow::anyhow!("{}: {e}", path.display())),
        };
        Ok(Store { path, state })
    }

    pub fn container(&mut self, uid: &str, name: &str) -> &mut ContainerState {
        self.state
            .pods
            .entry(uid.to_string())
            .or_default()
            .entry(name.to_string())
            .or_default()
    }

    pub fn get(&self, uid: &str, name: &str) -> Option<&ContainerState> {
        self.state.pods.get(uid)?.get(name)
    }

    pub fn forget_pod(&mut self, uid: &str) -> bool {
        self.state.pods.remove(uid).is_some()
    }

    /// Writes the state atomically.
    pub fn save(&self) -> std::io::Result<()> {
        write_atomic(
            &self.path,
            &serde_json::to_vec(&self.state).unwrap_or_default(),
        )
    }
}

/// Writes `data` to `path` through a temp file beside it and a rename, so that a reader
/// (or a crash) sees the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, data, 0o666)
}

/// [`write_atomic`] of a file only its owner reads (a Secret's): 0600 from its creation.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, data, 0o600)
}

fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // A dotfile: the manifest watcher ignores it.
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path()).unwrap();
        s.container("u", "c").restarts = 3;
        s.save().unwrap();
        let s2 = Store::open(dir.path()).unwrap();
        assert_eq!(s2.get("u", "c").unwrap().restarts, 3);
        std::fs::write(dir.path().join("state.json"), b"{").unwrap();
        assert!(Store::open(dir.path()).is_err());
    }
}
