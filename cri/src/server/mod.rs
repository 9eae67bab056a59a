//! The CRI server's state and the operations behind its RPCs.
//!
//! Records live on disk ([`crate::records`]) and in memory (a map guarded by a mutex that is
//! never held across an await or a blocking call). Every operation that blocks on the
//! kernel or the runtime library runs on tokio's blocking pool. Operations that clone into
//! a container (create, exec) never run in this multi-threaded process: they run in a
//! fresh single-threaded process of our own binary, the monitor or the exec helper.

//!
//! One file per mechanism: `pods.rs` (sandboxes), `containers.rs` (a container's life and
//! the event stream), `exits.rs` (learning that a container ended), `exec.rs` (ExecSync),
//! `stats.rs` (stats from cgroups), `streaming.rs` (the URLs of Exec/Attach/PortForward);
//! `runtime_service.rs` and `image_service.rs` are the gRPC faces over them. This file holds
//! the shared state, start-up and recovery, and the checks every request's ids go through.

mod containers;
mod exec;
mod exits;
mod image_service;
mod pods;
mod runtime_service;
pub mod stats;
mod streaming;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, ErrorKind};
use cri_proto::api;
use tokio::sync::broadcast;

use crate::image::ImageStore;
use crate::monitor;
use crate::records::{ContainerRecord, ExitRecord, SandboxRecord, SandboxState, Store};

/// Where the server keeps what, and how it is reached.
#[derive(Debug, Clone)]
pub struct Config {
    /// Persistent state: records, images, bundles (`--root`).
    pub root: PathBuf,
    /// The runtime's state root (`--runtime-root`); the server's volatile dirs are in its
    /// `cri/` subdirectory.
    pub runtime_root: PathBuf,
    /// The `rrun-cri` binary, started as the monitor and the exec helper.
    pub exe: PathBuf,
    /// Hugepage limits on a node without the hugetlb cgroup controller are skipped with a
    /// warning (true, containerd's default) or refused (false). The kubelet sends a limit
    /// of 0 for every page size the node has, so false fails every container there.
    pub tolerate_missing_hugetlb_controller: bool,
    /// Registries: hosts.toml directory, download concurrency, progress timeout.
    pub registry: crate::image::RegistryConfig,
    /// Where the CNI config and plugins are.
    pub cni: crate::network::CniSettings,
}

/// The server: shared by both services.
#[derive(Clone)]
pub struct Cri {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    store: Store,
    images: ImageStore,
    puller: crate::image::Puller,
    runtime: rrun::Runtime,
    state: Mutex<State>,
    events: broadcast::Sender<api::ContainerEventResponse>,
    /// Whether the cgroup controller for hugepage limits is there (probed once).
    hugetlb: bool,
    network: crate::network::Network,
    /// Where Exec, Attach and PortForward send their clients (`streaming.rs`).
    streaming: std::sync::OnceLock<Arc<crate::streaming::StreamServer>>,
}

#[derive(Default)]
struct State {
    sandboxes: HashMap<String, SandboxRecord>,
    containers: HashMap<String, ContainerRecord>,
    /// Names being created, so two concurrent requests for one name cannot both win.
    reserved: HashSet<String>,
}

/// The CRI state of a container, derived from its record and the monitor's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerPhase {
    Created,
    Running,
    Exited,
}

impl ContainerPhase {
    fn to_cri(self) -> api::ContainerState {
        match self {
            ContainerPhase::Created => api::ContainerState::ContainerCreated,
            ContainerPhase::Running => api::ContainerState::ContainerRunning,
            ContainerPhase::Exited => api::ContainerState::ContainerExited,
        }
    }
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::internal(e)
}

/// Where the tests make a handler panic, to prove that the server survives it:
/// `RRUN_CRI_FAULT=<name>` in the server's environment. Debug builds only.
fn fault_point(name: &str) {
    if cfg!(debug_assertions) && std::env::var("RRUN_CRI_FAULT").is_ok_and(|v| v == name) {
        panic!("fault injected at {name:?} (RRUN_CRI_FAULT)");
    }
}

/// Runs blocking work on tokio's blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal(format!("worker thread failed: {e}")))?
}

/// A new random id: 64 hex digits, as containerd's.
fn new_id() -> Result<String, Error> {
    let mut bytes = [0u8; 32];
    getrandom(&mut bytes).map_err(|e| internal(format!("getrandom: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

fn sandbox_key(m: &api::PodSandboxMetadata) -> String {
    format!("pod\0{}\0{}\0{}\0{}", m.name, m.namespace, m.uid, m.attempt)
}

fn container_key(sandbox: &str, m: &api::ContainerMetadata) -> String {
    format!("ctr\0{sandbox}\0{}\0{}", m.name, m.attempt)
}

/// Does every `selector` label appear in `labels` with the same value?
fn labels_match(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The longest id (or id prefix) looked up: ours are 64 hex digits.
const MAX_ID_LEN: usize = 128;

/// An id that no record can have (a path, a NUL, a huge string) is the caller's mistake,
/// not an unknown id: InvalidArgument, before it goes anywhere near a lookup.
fn check_id(what: &str, id: &str) -> Result<(), Error> {
    let shown: String = id.chars().take(40).collect();
    if id.len() > MAX_ID_LEN {
        return Err(Error::invalid_argument(format!(
            "{what} id {shown:?}... is {} bytes long (at most {MAX_ID_LEN})",
            id.len()
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(Error::invalid_argument(format!(
            "{what} id {shown:?} has the character {c:?} (ids are letters, digits, '-', '_' and '.')"
        )));
    }
    // `.` and `..` name directories, never a record.
    if !id.is_empty() && id.chars().all(|c| c == '.') {
        return Err(Error::invalid_argument(format!(
            "{what} id {shown:?} is only dots"
        )));
    }
    Ok(())
}

/// The longest name Kubernetes gives an object (a DNS subdomain).
const MAX_NAME_LEN: usize = 253;

/// A pod's or container's name, namespace or uid: what Kubernetes could have sent (no
/// `/`, no control characters, at most 253 bytes); they name records, never paths.
fn check_name(field: &str, name: &str) -> Result<(), Error> {
    let shown: String = name.chars().take(40).collect();
    if name.len() > MAX_NAME_LEN {
        return Err(Error::invalid_argument(format!(
            "{field} {shown:?}... is {} bytes long (at most {MAX_NAME_LEN})",
            name.len()
        )));
    }
    if let Some(c) = name.chars().find(|c| *c == '/' || c.is_control()) {
        return Err(Error::invalid_argument(format!(
            "{field} {shown:?} has the character {c:?}"
        )));
    }
    Ok(())
}

/// A unique record whose id is `id` or starts with it (crictl and kubelet users pass
/// truncated ids).
fn find_by_prefix<'a, T>(map: &'a HashMap<String, T>, id: &str) -> Option<(&'a String, &'a T)> {
    if id.is_empty() {
        return None;
    }
    if let Some(kv) = map.get_key_value(id) {
        return Some(kv);
    }
    let mut it = map.iter().filter(|(k, _)| k.starts_with(id));
    let first = it.next()?;
    it.next().is_none().then_some(first)
}

impl Cri {
    /// Opens the stores and brings the records up to date with what happened while no
    /// server ran: containers that exited, half-made creates, reboots.
    pub async fn open(config: Config) -> anyhow::Result<Self> {
        use anyhow::Context;
        std::fs::create_dir_all(&config.root)
            .with_context(|| format!("creating {}", config.root.display()))?;
        let store = Store::open(&config.root).context("opening the record store")?;
        let images =
            ImageStore::open(&config.root.join("images")).context("opening the image store")?;
        let runtime = rrun::Runtime::new(&config.runtime_root);
        let puller = crate::image::Puller::new(images.clone(), config.registry.clone());
        let (events, _) = broadcast::channel(1024);
        let network =
            crate::network::Network::open(config.cni.clone(), config.root.join("cni/results"));
        let cri = Cri {
            inner: Arc::new(Inner {
                config,
                store,
                images,
                puller,
                runtime,
                state: Mutex::new(State::default()),
                events,
                hugetlb: hugetlb_controller_available(),
                network,
                streaming: Default::default(),
            }),
        };
        let me = cri.clone();
        tokio::task::spawn_blocking(move || me.recover())
            .await
            .context("recovery thread")??;
        Ok(cri)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the maps consistent (each update is one
        // insert or remove), so a poisoned lock is still usable.
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn cri_dir(&self) -> PathBuf {
        self.inner.config.runtime_root.join("cri")
    }

    fn pod_run_dir(&self, id: &str) -> PathBuf {
        self.cri_dir().join("pods").join(id)
    }

    /// Short on purpose: the monitor's control socket lives here, and a unix socket path
    /// has at most 107 bytes.
    fn monitor_dir(&self, id: &str) -> PathBuf {
        self.cri_dir().join("m").join(&id[..id.len().min(32)])
    }

    pub fn images(&self) -> &ImageStore {
        &self.inner.images
    }

    pub fn puller(&self) -> &crate::image::Puller {
        &self.inner.puller
    }

    // -----------------------------------------------------------------------------------
    // Recovery
    // -----------------------------------------------------------------------------------

    fn recover(&self) -> anyhow::Result<()> {
        let sandboxes = self.inner.store.load_sandboxes()?;
        for orphan in &sandboxes.orphans {
            tracing::warn!("removing half-made pod {}", orphan.display());
            let _ = std::fs::remove_dir_all(orphan);
        }
        let containers = self.inner.store.load_containers()?;
        for orphan in &containers.orphans {
            tracing::warn!("removing half-made container {}", orphan.display());
            let _ = ImageStore::unmount_rootfs(orphan);
            let _ = std::fs::remove_dir_all(orphan);
        }
        let mut known = HashSet::new();
        let mut state = State::default();
        for mut rec in sandboxes.records {
            if rec.state == SandboxState::Ready {
                let ns = &rec.namespaces;
                let alive = [&ns.net, &ns.ipc, &ns.uts, &ns.pid]
                    .into_iter()
                    .flatten()
                    .all(|p| crate::sandbox::is_pinned(p))
                    && rec
                        .pod_init
                        .as_ref()
                        .is_none_or(crate::sandbox::pod_init_alive);
                if !alive {
                    tracing::warn!(
                        "pod {}: its namespaces or its pid 1 are gone (reboot?): not ready",
                        rec.id
                    );
                    rec.state = SandboxState::NotReady;
                    let _ = self.inner.store.save_sandbox(&rec);
                }
            }
            state.sandboxes.insert(rec.id.clone(), rec);
        }
        for rec in containers.records {
            if rec.pid == 0 {
                // Its create never answered: the kubelet never learnt of it.
                tracing::warn!("removing container {} whose create did not finish", rec.id);
                self.destroy_container_files(&rec);
                continue;
            }
            known.insert(rec.id.clone());
            state.containers.insert(rec.id.clone(), rec);
        }
        // Runtime containers no record names were made by a create that died before it
        // saved anything.
        if let Ok(ids) = self.inner.runtime.ids() {
            for id in ids.into_iter().filter(|id| !known.contains(id)) {
                tracing::warn!("deleting runtime container {id} that no record names");
                let _ = self.inner.runtime.delete(&id, true);
            }
        }
        let ids: Vec<String> = state.containers.keys().cloned().collect();
        self.inner
            .network
            .collect_garbage(|id| state.sandboxes.contains_key(id));
        *self.state() = state;
        for id in ids {
            let _ = self.refresh_exit(&id);
        }
        Ok(())
    }
}

impl Cri {
    // -----------------------------------------------------------------------------------
    // Images
    // -----------------------------------------------------------------------------------

    /// Ids of containers that use the image.
    pub fn image_users(&self, image_id: &str) -> Vec<String> {
        self.state()
            .containers
            .values()
            .filter(|c| c.image_id == image_id)
            .map(|c| c.id.clone())
            .collect()
    }
}

/// Whether a container's cgroup can get hugepage limits here: on cgroup v2 the controller
/// is enabled at the root; on v1 (and hybrid, where rrun uses the v1 hierarchies) a
/// hugetlb hierarchy is mounted.
fn hugetlb_controller_available() -> bool {
    rrun::pod_cgroup::controller_available("hugetlb")
}

/// Debug builds only: sleeps for the milliseconds in the variable `name`, so that a test
/// can widen a window between two steps (a race a loaded machine hits now and then).
fn test_hook_delay(name: &str) {
    if cfg!(debug_assertions) {
        if let Some(ms) = std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok()) {
            std::thread::sleep(Duration::from_millis(ms));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_name_paths_are_invalid_arguments() {
        for bad in [
            ".",
            "..",
            "...",
            "../x",
            "a/b",
            "a\0",
            &"a".repeat(MAX_ID_LEN + 1),
        ] {
            let e = check_id("pod sandbox", bad).expect_err(bad);
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad:?}");
        }
        for good in ["", "a", "a.b", ".a", &"f".repeat(64)] {
            check_id("pod sandbox", good).unwrap_or_else(|e| panic!("{good:?}: {e}"));
        }
    }
}
