//! What lives under `--root`: one directory per container holding `state.json` (written
//! atomically: write a temporary file, then rename) and, between `create` and `start`, the
//! `exec.fifo` that the container's init blocks on.
//!
//! The status is never stored: it is derived from the kernel each time (is the init process
//! alive and the same process, judged by its start time; does the fifo still exist), so a
//! crashed runtime can never leave a stale "running" behind.

use crate::error::{Context, Error, Result};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::PathBuf;

pub const DEFAULT_ROOT: &str = "/run/rrun";
const STATE_FILE: &str = "state.json";
const FIFO_FILE: &str = "exec.fifo";
/// The cgroup record, written as soon as the cgroup exists (before `state.json`), so that
/// `delete --force` of a container whose `create` died half-way still removes it.
const CGROUP_FILE: &str = "cgroup.json";

/// The status of a container as the runtime-spec (and runc's `paused`) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        };
        f.write_str(s)
    }
}

/// Everything the runtime needs to find and drive a container after `create` has exited.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    /// The init process as seen from the runtime's PID namespace.
    pub pid: i32,
    /// Field 22 of `/proc/PID/stat`: tells our init from a later process that reused its pid.
    pub pid_start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// RFC 3339 with nanoseconds, UTC.
    pub created: String,
    pub owner: String,
    #[serde(default)]
    pub annotations: HashMap<String, String>,
    /// The config as it was at `create`: `exec` takes its defaults from it and `delete`
    /// runs its poststop hooks even if the bundle has gone.
    pub spec: Spec,
    /// The container's cgroup (none for state written before rrun had cgroups).
    #[serde(default)]
    pub cgroup: Option<crate::cgroups::CgroupRecord>,
}

/// A container id as runc accepts it; it also becomes a directory name, so no `/` or `..`.
pub fn validate_id(id: &str) -> Result<()> {
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.'));
    if id.is_empty() || !ok_chars || id.bytes().all(|b| b == b'.') || id.len() > 1024 {
        return Err(Error::InvalidId(id.to_string()));
    }
    Ok(())
}

/// The directory under `--root` that holds every container's state.
#[derive(Debug, Clone)]
pub struct StateRoot {
    root: PathBuf,
}

impl StateRoot {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateRoot { root: root.into() }
    }

    fn ensure(&self) -> Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.root)
            .ctx(|| format!("creating state root {}", self.root.display()))
    }

    /// Claims the id: `mkdir` is atomic, so two concurrent creates of one id cannot both win.
    pub fn create_dir(&self, id: &str) -> Result<ContainerDir> {
        validate_id(id)?;
        self.ensure()?;
        let path = self.root.join(id);
        match fs::DirBuilder::new().mode(0o711).create(&path) {
            Ok(()) => Ok(ContainerDir {
                id: id.into(),
                path,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(Error::AlreadyExists(id.into()))
            }
            Err(e) => Err(e).ctx(|| format!("creating {}", path.display())),
        }
    }

    /// The directory of `id` whether or not it has a state file yet (a half-made container).
    pub fn open_raw(&self, id: &str) -> Result<Option<ContainerDir>> {
        validate_id(id)?;
        let path = self.root.join(id);
        Ok(path.is_dir().then(|| ContainerDir {
            id: id.into(),
            path,
        }))
    }

    pub fn open(&self, id: &str) -> Result<ContainerDir> {
        validate_id(id)?;
        let path = self.root.join(id);
        if !path.join(STATE_FILE).exists() {
            return Err(Error::NotFound(id.into()));
        }
        Ok(ContainerDir {
            id: id.into(),
            path,
        })
    }

    /// Ids of every container with a state file, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(e).ctx(|| format!("listing {}", self.root.display())),
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join(STATE_FILE).exists())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

/// One container's directory under the state root.
#[derive(Debug, Clone)]
pub struct ContainerDir {
    pub id: String,
    path: PathBuf,
}

impl ContainerDir {
    pub fn fifo_path(&self) -> PathBuf {
        self.path.join(FIFO_FILE)
    }

    pub fn load(&self) -> Result<ContainerRecord> {
        let file = self.path.join(STATE_FILE);
        let data = match fs::read(&file) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(self.id.clone()))
            }
            Err(e) => return Err(e).ctx(|| format!("reading {}", file.display())),
        };
        serde_json::from_slice(&data).map_err(|source| Error::StateCorrupt { path: file, source })
    }

    /// Write-then-rename, so a reader sees the old state or the new one, never half of one.
    pub fn save(&self, record: &ContainerRecord) -> Result<()> {
        let final_path = self.path.join(STATE_FILE);
        let data = serde_json::to_vec(record).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::atomic_file::write(
            &final_path,
            &data,
            0o600,
            crate::atomic_file::Durability::Volatile,
        )
        .ctx(|| format!("writing {}", final_path.display()))
    }

    /// An exclusive lock on the container for operations that change it (start, delete),
    /// released when the returned file is dropped.
    pub fn lock(&self) -> Result<nix::fcntl::Flock<fs::File>> {
        let f = fs::File::open(&self.path).ctx(|| format!("opening {}", self.path.display()))?;
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| e)
            .ctx(|| format!("locking {}", self.path.display()))
    }

    pub fn save_cgroup(&self, rec: &crate::cgroups::CgroupRecord) -> Result<()> {
        let path = self.path.join(CGROUP_FILE);
        let data = serde_json::to_vec(rec).map_err(|e| Error::Invalid(e.to_string()))?;
        fs::write(&path, data).ctx(|| format!("writing {}", path.display()))
    }

    pub fn load_cgroup(&self) -> Option<crate::cgroups::CgroupRecord> {
        let data = fs::read(self.path.join(CGROUP_FILE)).ok()?;
        serde_json::from_slice(&data).ok()
    }

    pub fn remove(&self) -> Result<()> {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).ctx(|| format!("removing {}", self.path.display())),
        }
    }

    /// The status, read from the kernel and the fifo's presence.
    pub fn status(&self, record: &ContainerRecord) -> Status {
        if !process_is(record.pid, record.pid_start_time) {
            return Status::Stopped;
        }
        let frozen = || {
            record
                .cgroup
                .as_ref()
                .is_some_and(|c| crate::cgroups::open(c).is_frozen().unwrap_or(false))
        };
        if self.fifo_path().exists() {
            Status::Created
        } else if frozen() {
            Status::Paused
        } else {
            Status::Running
        }
    }
}

/// The runtime-spec state document (what `rrun state` prints and hooks read on stdin), with
/// runc's extra fields so tools written for runc parse it.
pub fn oci_state(record: &ContainerRecord, status: Status) -> serde_json::Value {
    let pid = if status == Status::Stopped {
        0
    } else {
        record.pid
    };
    serde_json::json!({
        "ociVersion": crate::OCI_VERSION,
        "id": record.id,
        "pid": pid,
        "status": status,
        "bundle": record.bundle,
        "rootfs": record.rootfs,
        "created": record.created,
        "owner": record.owner,
        "annotations": record.annotations,
    })
}

use crate::procfs::process_start_time;

fn process_is(pid: i32, start_time: u64) -> bool {
    pid > 0 && process_start_time(pid) == Some(start_time)
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_could_escape_the_root_are_rejected() {
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\0"] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
        for good in ["a", "my-ctr_1.2", "A+B", "..a"] {
            assert!(validate_id(good).is_ok(), "{good:?} refused");
        }
    }

    #[test]
    fn own_process_has_a_start_time_and_a_dead_pid_has_none() {
        let me = std::process::id() as i32;
        assert!(process_start_time(me).is_some());
        assert!(process_start_time(i32::MAX).is_none());
    }

    #[test]
    fn duplicate_create_is_refused_and_missing_is_not_found() {
        let tmp = tempfile::tempdir().unwrap();
        let root = StateRoot::new(tmp.path().join("state"));
        root.create_dir("c1").unwrap();
        assert!(matches!(
            root.create_dir("c1"),
            Err(Error::AlreadyExists(_))
        ));
        assert!(matches!(root.open("nope"), Err(Error::NotFound(_))));
        assert!(
            root.list().unwrap().is_empty(),
            "no state file yet, so not listed"
        );
    }
}
