//! What the server keeps on disk about pods and containers.
//!
//! Every record is written (atomically: a temporary file, fsync, rename) before the call
//! that made it answers, so a server killed at any moment comes back with what it had
//! promised: nothing lives only in memory. The CRI types are stored as they came in (they
//! derive serde), so labels, annotations and every other field round-trip unchanged.

use std::fs;
use std::path::{Path, PathBuf};

use cri_proto::api;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: corrupt record: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `value` as JSON at `path` so that a reader sees either the old or the new file,
/// never a torn one, also across a crash.
pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let data = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &data)
}

pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    write_file_atomic(path, data).map_err(io(path))
}

/// Writes `data` to `path` atomically (the runtime's [`rrun::atomic_file`]), readable by
/// its owner only: records hold pod configs.
pub fn write_file_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    rrun::atomic_file::write(path, data, 0o600, rrun::atomic_file::Durability::Synced)
}

pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let data = fs::read(path).map_err(io(path))?;
    serde_json::from_slice(&data).map_err(|source| StoreError::Corrupt {
        path: path.to_path_buf(),
        source,
    })
}

/// Pinned namespaces of a pod: bind mounts of `/proc/.../ns/*` that keep each namespace
/// alive with no process in it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PinnedNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The pod-wide pid namespace (shareProcessNamespace), alive while its init is.
    #[serde(default)]
    pub pid: Option<PathBuf>,
}

/// The pid 1 of a pod-wide pid namespace (`monitor::run_pod_init`), as the host sees it.
/// The start time (clock ticks after boot, /proc/PID/stat field 22) tells it from a later
/// process that got the same pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInit {
    pub pid: i32,
    pub start_time: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub config: api::PodSandboxConfig,
    pub runtime_handler: String,
    /// Unix nanoseconds.
    pub created_at: i64,
    pub state: SandboxState,
    pub namespaces: PinnedNamespaces,
    /// The `linux.cgroup_parent` of the request as the containers' cgroups use it.
    pub cgroup_parent: String,
    /// The pod's cgroup, when this server created it (and so removes it).
    pub cgroup: Option<rrun::pod_cgroup::CgroupRecord>,
    /// Volatile per-pod directory: pinned namespace files, the pod's /dev/shm.
    pub run_dir: PathBuf,
    /// Persistent per-pod directory: hostname, hosts, resolv.conf given to every container.
    pub dir: PathBuf,
    /// The pod's /dev/shm (a tmpfs) when the pod has its own IPC namespace.
    pub shm: Option<PathBuf>,
    /// The init of the pod's pid namespace, when its containers share one.
    #[serde(default)]
    pub pod_init: Option<PodInit>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    /// Unix nanoseconds.
    pub finished_at: i64,
    pub reason: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub config: api::ContainerConfig,
    /// `sha256:<hex>` of the image's config.
    pub image_id: String,
    /// The image's name as the request gave it, normalised.
    pub image_ref: String,
    pub created_at: i64,
    pub started_at: i64,
    /// The init's pid (host pid namespace) once created.
    pub pid: i32,
    /// Absolute path of the CRI log file, or empty.
    pub log_path: PathBuf,
    /// Persistent per-container directory: the bundle (config.json, rootfs mount, upper dir).
    pub dir: PathBuf,
    /// The monitor's directory (exit.json, ctl.sock, monitor.pid).
    pub monitor_dir: PathBuf,
    /// Set once the container's end has been seen.
    pub exit: Option<ExitRecord>,
}

/// The directories of every record.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

const SANDBOX_FILE: &str = "sandbox.json";
const CONTAINER_FILE: &str = "container.json";

impl Store {
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for sub in ["sandboxes", "containers"] {
            let d = root.join(sub);
            fs::create_dir_all(&d).map_err(io(&d))?;
        }
        Ok(Store {
            root: root.to_path_buf(),
        })
    }

    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.root.join("sandboxes").join(id)
    }

    pub fn container_dir(&self, id: &str) -> PathBuf {
        self.root.join("containers").join(id)
    }

    pub fn save_sandbox(&self, rec: &SandboxRecord) -> Result<(), StoreError> {
        let dir = self.sandbox_dir(&rec.id);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        write_json_atomic(&dir.join(SANDBOX_FILE), rec)
    }

    pub fn save_container(&self, rec: &ContainerRecord) -> Result<(), StoreError> {
        let dir = self.container_dir(&rec.id);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        write_json_atomic(&dir.join(CONTAINER_FILE), rec)
    }

    pub fn remove_sandbox(&self, id: &str) -> Result<(), StoreError> {
        remove_dir(&self.sandbox_dir(id))
    }

    pub fn remove_container(&self, id: &str) -> Result<(), StoreError> {
        remove_dir(&self.container_dir(id))
    }

    /// Every saved sandbox. A directory without a readable record is a create that died
    /// half-way; it is returned in `orphans` for the caller to clean up.
    pub fn load_sandboxes(&self) -> Result<Loaded<SandboxRecord>, StoreError> {
        self.load_all("sandboxes", SANDBOX_FILE)
    }

    pub fn load_containers(&self) -> Result<Loaded<ContainerRecord>, StoreError> {
        self.load_all("containers", CONTAINER_FILE)
    }

    fn load_all<T: DeserializeOwned>(
        &self,
        sub: &str,
        file: &str,
    ) -> Result<Loaded<T>, StoreError> {
        let dir = self.root.join(sub);
        let mut out = Loaded {
            records: Vec::new(),
            orphans: Vec::new(),
        };
        for entry in fs::read_dir(&dir).map_err(io(&dir))? {
            let entry = entry.map_err(io(&dir))?;
            let path = entry.path().join(file);
            match read_json(&path) {
                Ok(rec) => out.records.push(rec),
                Err(e) => {
                    tracing::warn!("{e}: treating {} as half-made", entry.path().display());
                    out.orphans.push(entry.path());
                }
            }
        }
        Ok(out)
    }
}

pub struct Loaded<T> {
    pub records: Vec<T>,
    pub orphans: Vec<PathBuf>,
}

fn remove_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StoreError::Io {
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

/// Unix nanoseconds now.
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_the_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exit.json");
        write_file_atomic(&p, b"first").unwrap();
        write_file_atomic(&p, b"second").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        // No temporary file left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn sandbox_records_round_trip_labels_and_annotations() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let mut config = api::PodSandboxConfig::default();
        config.labels.insert("app".into(), "web".into());
        config.annotations.insert(
            "kubernetes.io/config.seen".into(),
            "2026-12-01T00:00:00Z".into(),
        );
        let rec = SandboxRecord {
            id: "abc".into(),
            config: config.clone(),
            runtime_handler: String::new(),
            created_at: 1,
            state: SandboxState::Ready,
            namespaces: PinnedNamespaces::default(),
            cgroup_parent: String::new(),
            cgroup: None,
            run_dir: PathBuf::new(),
            dir: store.sandbox_dir("abc"),
            shm: None,
            pod_init: None,
        };
        store.save_sandbox(&rec).expect("save");
        std::fs::create_dir_all(dir.path().join("sandboxes/half-made")).expect("mkdir");
        let loaded = store.load_sandboxes().expect("load");
        assert_eq!(loaded.records.len(), 1);
        assert_eq!(loaded.records[0].config, config);
        assert_eq!(loaded.orphans, vec![dir.path().join("sandboxes/half-made")]);
    }
}
