//! The CRI server's state and the operations behind its RPCs.
//!
//! Records live on disk ([`crate::records`]) and in memory (a map guarded by a mutex that is
//! never held across an await or a blocking call). Every operation that blocks on the
//! kernel or the runtime library runs on tokio's blocking pool. Operations that clone into
//! a container (create, exec) never run in this multi-threaded process: they run in a
//! fresh single-threaded process of our own binary, the monitor or the exec helper.

mod image_service;
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

    // -----------------------------------------------------------------------------------
    // Pod sandboxes
    // -----------------------------------------------------------------------------------

    pub async fn run_pod_sandbox(
        &self,
        config: api::PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<String, Error> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Error::invalid_argument("PodSandboxConfig.metadata is required"))?;
        if meta.name.is_empty() {
            return Err(Error::invalid_argument(
                "PodSandboxConfig.metadata.name is required",
            ));
        }
        check_name("PodSandboxConfig.metadata.name", &meta.name)?;
        check_name("PodSandboxConfig.metadata.namespace", &meta.namespace)?;
        check_name("PodSandboxConfig.metadata.uid", &meta.uid)?;
        if !config.hostname.is_empty() {
            crate::sandbox::validate_hostname(&config.hostname)
                .map_err(|e| Error::invalid_argument(format!("PodSandboxConfig.{e}")))?;
        }
        if !matches!(runtime_handler.as_str(), "" | "rrun" | "runc") {
            return Err(Error::invalid_argument(format!(
                "runtime handler {runtime_handler:?} is not configured (this server has \"rrun\")"
            )));
        }
        let key = sandbox_key(&meta);
        let id = new_id()?;
        {
            let mut st = self.state();
            if st.reserved.contains(&key)
                || st.sandboxes.values().any(|s| {
                    s.config.metadata.as_ref().map(sandbox_key).as_deref() == Some(key.as_str())
                })
            {
                return Err(Error::already_exists(format!(
                    "pod sandbox {:?} (namespace {:?}, uid {:?}, attempt {}) already exists",
                    meta.name, meta.namespace, meta.uid, meta.attempt
                )));
            }
            st.reserved.insert(key.clone());
        }
        let me = self.clone();
        let id2 = id.clone();
        let made = blocking(move || me.make_sandbox(&id2, config, runtime_handler)).await;
        self.state().reserved.remove(&key);
        let rec = made?;
        tracing::info!("pod {} ({}/{}) ready", id, meta.namespace, meta.name);
        self.state().sandboxes.insert(id.clone(), rec);
        Ok(id)
    }

    fn make_sandbox(
        &self,
        id: &str,
        config: api::PodSandboxConfig,
        runtime_handler: String,
    ) -> Result<SandboxRecord, Error> {
        use crate::sandbox::*;
        let own = OwnNamespaces::of(&config);
        let hostname = hostname_of(&config);
        let run_dir = self.pod_run_dir(id);
        let dir = self.inner.store.sandbox_dir(id);
        let requested_parent = config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default();
        let cgroup_parent = if requested_parent.is_empty() {
            format!("rrun-cri/pod-{}", &id[..12])
        } else {
            requested_parent
        };
        let mut rec = SandboxRecord {
            id: id.to_string(),
            config,
            runtime_handler,
            created_at: crate::records::now_ns(),
            state: SandboxState::Ready,
            namespaces: Default::default(),
            cgroup_parent,
            cgroup: None,
            run_dir: run_dir.clone(),
            dir: dir.clone(),
            shm: None,
            pod_init: None,
        };
        let result = (|| {
            write_pod_files(&dir, &rec.config, &hostname).map_err(internal)?;
            rec.namespaces = pin_namespaces(&run_dir, own, &hostname).map_err(internal)?;
            if let Some(netns) = &rec.namespaces.net {
                self.inner
                    .network
                    .setup(id, netns, &rec.config, &dir)
                    .map_err(|e| crate::error::network_error(id, "setup", e))?;
            }
            if shares_pid_namespace(&rec.config) {
                let (init, pid_ns) =
                    start_pod_init(self.pod_init_command(), &run_dir).map_err(internal)?;
                rec.pod_init = Some(init);
                rec.namespaces.pid = Some(pid_ns);
            }
            if own.ipc {
                rec.shm = Some(mount_shm(&run_dir).map_err(internal)?);
            }
            rec.cgroup = make_pod_cgroup(&rec.cgroup_parent)?;
            self.inner.store.save_sandbox(&rec).map_err(internal)
        })();
        if let Err(e) = result {
            self.destroy_sandbox_files(&rec);
            return Err(e);
        }
        Ok(rec)
    }

    /// The command that starts a pod's pid 1: the small monitor binary when it is installed
    /// beside the server (a few hundred KiB for the pod's whole life), else the server's own.
    fn pod_init_command(&self) -> std::process::Command {
        if let Some(small) = self.small_monitor_binary() {
            let mut cmd = std::process::Command::new(small);
            cmd.arg("--pod-init");
            cmd
        } else {
            let mut cmd = std::process::Command::new(&self.inner.config.exe);
            cmd.arg("pod-init");
            cmd
        }
    }

    /// [`monitor::MONITOR_BINARY`] beside the server's executable, when it is installed.
    fn small_monitor_binary(&self) -> Option<PathBuf> {
        let small = self
            .inner
            .config
            .exe
            .with_file_name(monitor::MONITOR_BINARY);
        small.is_file().then_some(small)
    }

    /// Removes what the pod holds on the machine: its pid 1, namespaces, shm, cgroup,
    /// directories.
    fn destroy_sandbox_files(&self, rec: &SandboxRecord) {
        if let Err(e) = self.inner.network.teardown(&rec.id) {
            tracing::warn!("pod {}: {e}", rec.id);
        }
        if let Some(init) = &rec.pod_init {
            crate::sandbox::stop_pod_init(init);
        }
        crate::sandbox::unpin_namespaces(&rec.namespaces);
        if let Some(shm) = &rec.shm {
            crate::sandbox::unmount_shm(shm);
        }
        if let Some(cg) = &rec.cgroup {
            if let Err(e) = rrun::pod_cgroup::PodCgroup::open(cg).destroy() {
                tracing::warn!("pod {}: removing its cgroup: {e}", rec.id);
            }
        }
        let _ = std::fs::remove_dir_all(&rec.run_dir);
        let _ = self.inner.store.remove_sandbox(&rec.id);
    }

    fn sandbox(&self, id: &str) -> Result<SandboxRecord, Error> {
        check_id("pod sandbox", id)?;
        let st = self.state();
        find_by_prefix(&st.sandboxes, id)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| Error::not_found(format!("pod sandbox {id:?} not found")))
    }

    fn sandbox_containers(&self, sandbox_id: &str) -> Vec<String> {
        self.state()
            .containers
            .values()
            .filter(|c| c.sandbox_id == sandbox_id)
            .map(|c| c.id.clone())
            .collect()
    }

    pub async fn stop_pod_sandbox(&self, id: &str) -> Result<(), Error> {
        let rec = match self.sandbox(id) {
            Ok(rec) => rec,
            // Stopping a pod that is gone is not an error (CRI: idempotent).
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for cid in self.sandbox_containers(&rec.id) {
            self.stop_container(&cid, 0).await?;
        }
        let me = self.clone();
        let mut rec2 = rec.clone();
        let rec2 = blocking(move || {
            me.inner
                .network
                .teardown(&rec2.id)
                .map_err(|e| crate::error::network_error(&rec2.id, "teardown", e))?;
            // The network namespace goes with the pod's network (as containerd's stop);
            // IPC and UTS stay until removal, when no container can use them any more.
            if let Some(net) = rec2.namespaces.net.take() {
                crate::sandbox::unpin_namespaces(&crate::records::PinnedNamespaces {
                    net: Some(net),
                    ..Default::default()
                });
            }
            // A pod-wide pid namespace ends with its pid 1, as with containerd's pause.
            if let Some(init) = &rec2.pod_init {
                crate::sandbox::stop_pod_init(init);
            }
            if let Some(pid) = rec2.namespaces.pid.take() {
                crate::sandbox::unpin_namespaces(&crate::records::PinnedNamespaces {
                    pid: Some(pid),
                    ..Default::default()
                });
            }
            rec2.state = SandboxState::NotReady;
            me.inner.store.save_sandbox(&rec2).map_err(internal)?;
            Ok(rec2)
        })
        .await?;
        self.state().sandboxes.insert(rec2.id.clone(), rec2);
        Ok(())
    }

    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), Error> {
        let rec = match self.sandbox(id) {
            Ok(rec) => rec,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for cid in self.sandbox_containers(&rec.id) {
            self.remove_container(&cid).await?;
        }
        let me = self.clone();
        let rec2 = rec.clone();
        blocking(move || {
            // A DEL that fails keeps the pod, so that the kubelet's retry sends it again.
            me.inner
                .network
                .teardown(&rec2.id)
                .map_err(|e| crate::error::network_error(&rec2.id, "teardown", e))?;
            me.destroy_sandbox_files(&rec2);
            Ok(())
        })
        .await?;
        self.state().sandboxes.remove(&rec.id);
        tracing::info!("pod {} removed", rec.id);
        Ok(())
    }

    pub fn pod_sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatus, Error> {
        let rec = self.sandbox(id)?;
        let mut status = sandbox_status(&rec);
        let mut ips = self.inner.network.pod_ips(&rec.id).into_iter();
        status.network = Some(api::PodSandboxNetworkStatus {
            ip: ips.next().unwrap_or_default(),
            additional_ips: ips.map(|ip| api::PodIp { ip }).collect(),
        });
        Ok(status)
    }

    pub fn list_pod_sandbox(&self, filter: Option<api::PodSandboxFilter>) -> Vec<api::PodSandbox> {
        let st = self.state();
        let f = filter.unwrap_or_default();
        let by_id = (!f.id.is_empty())
            .then(|| find_by_prefix(&st.sandboxes, &f.id).map(|(k, _)| k.clone()))
            .map(|k| k.unwrap_or_default());
        let mut out: Vec<api::PodSandbox> = st
            .sandboxes
            .values()
            .filter(|s| by_id.as_ref().is_none_or(|id| &s.id == id))
            .filter(|s| {
                f.state
                    .as_ref()
                    .is_none_or(|v| v.state == sandbox_state(s) as i32)
            })
            .filter(|s| labels_match(&s.config.labels, &f.label_selector))
            .map(|s| api::PodSandbox {
                id: s.id.clone(),
                metadata: s.config.metadata.clone(),
                state: sandbox_state(s) as i32,
                created_at: s.created_at,
                labels: s.config.labels.clone(),
                annotations: s.config.annotations.clone(),
                runtime_handler: s.runtime_handler.clone(),
            })
            .collect();
        out.sort_by_key(|p| p.created_at);
        out
    }

    // -----------------------------------------------------------------------------------
    // Containers
    // -----------------------------------------------------------------------------------

    pub async fn create_container(
        &self,
        pod_id: &str,
        config: api::ContainerConfig,
    ) -> Result<String, Error> {
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| Error::invalid_argument("ContainerConfig.metadata is required"))?;
        if meta.name.is_empty() {
            return Err(Error::invalid_argument(
                "ContainerConfig.metadata.name is required",
            ));
        }
        check_name("ContainerConfig.metadata.name", &meta.name)?;
        let image_name = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .unwrap_or_default();
        if image_name.is_empty() {
            return Err(Error::invalid_argument(
                "ContainerConfig.image.image is required",
            ));
        }
        let sandbox = self.sandbox(pod_id)?;
        if sandbox.state != SandboxState::Ready {
            return Err(Error::failed_precondition(format!(
                "pod sandbox {} is not ready: it was stopped",
                sandbox.id
            )));
        }
        let image = self
            .inner
            .images
            .resolve(&image_name)
            .map_err(internal)?
            .ok_or_else(|| Error::not_found(format!("image {image_name:?} not found")))?;
        let key = container_key(&sandbox.id, &meta);
        let id = new_id()?;
        let target_pid = self.target_pid(&config)?;
        {
            let mut st = self.state();
            let taken = st.reserved.contains(&key)
                || st.containers.values().any(|c| {
                    c.config
                        .metadata
                        .as_ref()
                        .map(|m| container_key(&c.sandbox_id, m))
                        .as_deref()
                        == Some(key.as_str())
                });
            if taken {
                return Err(Error::already_exists(format!(
                    "container {:?} (attempt {}) already exists in pod sandbox {}",
                    meta.name, meta.attempt, sandbox.id
                )));
            }
            st.reserved.insert(key.clone());
        }
        let image_ref = crate::image::normalize_reference(&image_name).unwrap_or(image_name);
        let dir = self.inner.store.container_dir(&id);
        let log_path = match (
            sandbox.config.log_directory.as_str(),
            config.log_path.as_str(),
        ) {
            (_, "") | ("", _) => PathBuf::new(),
            (d, p) => Path::new(d).join(p),
        };
        let rec = ContainerRecord {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            config,
            image_id: image.id.clone(),
            image_ref,
            created_at: crate::records::now_ns(),
            started_at: 0,
            pid: 0,
            log_path,
            dir,
            monitor_dir: self.monitor_dir(&id),
            exit: None,
        };
        // The making runs in a task of its own: a caller that gives up (its deadline, which
        // cri-proto's serve enforces by dropping this future, or a closed connection) leaves
        // what was made to be removed rather than half-made.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let me = self.clone();
        tokio::spawn(async move {
            let result = me.make_container(rec, sandbox, image, target_pid).await;
            me.state().reserved.remove(&key);
            let rec = match result {
                Ok(rec) => rec,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            me.state().containers.insert(rec.id.clone(), rec.clone());
            me.emit(&rec, api::ContainerEventType::ContainerCreatedEvent);
            tracing::info!("container {} created (pid {})", rec.id, rec.pid);
            if tx.send(Ok(rec.id.clone())).is_err() {
                tracing::info!("container {}: its creator gave up; removing it", rec.id);
                if let Err(e) = me.remove_container(&rec.id).await {
                    tracing::warn!("container {}: removing it: {e}", rec.id);
                }
            }
        });
        rx.await
            .unwrap_or_else(|_| Err(internal("the container's creation task ended")))
    }

    fn target_pid(&self, config: &api::ContainerConfig) -> Result<Option<i32>, Error> {
        let target = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref())
            .filter(|o| o.pid == api::NamespaceMode::Target as i32)
            .map(|o| o.target_id.clone());
        let Some(target) = target else {
            return Ok(None);
        };
        let st = self.state();
        let (_, c) = find_by_prefix(&st.containers, &target).ok_or_else(|| {
            Error::not_found(format!(
                "pid namespace target container {target:?} not found"
            ))
        })?;
        Ok(Some(c.pid))
    }

    async fn make_container(
        &self,
        mut rec: ContainerRecord,
        sandbox: SandboxRecord,
        image: crate::image::Image,
        target_pid: Option<i32>,
    ) -> Result<ContainerRecord, Error> {
        // Saved first with pid 0: a server killed from here on finds the half-made
        // container on restart and removes it.
        let me = self.clone();
        let rec0 = rec.clone();
        let prepared = blocking(move || {
            me.inner.store.save_container(&rec0).map_err(internal)?;
            test_hook_delay("RRUN_CRI_TEST_CREATE_DELAY_MS");
            let result = me.write_bundle(&rec0, &sandbox, &image, target_pid);
            if result.is_err() {
                me.destroy_container_files(&rec0);
            }
            result
        })
        .await;
        prepared?;
        match self.spawn_monitor(&rec).await {
            Ok(pid) => rec.pid = pid,
            Err(e) => {
                let me = self.clone();
                let rec0 = rec.clone();
                let _ = blocking(move || {
                    me.destroy_container_files(&rec0);
                    Ok(())
                })
                .await;
                return Err(e);
            }
        }
        let me = self.clone();
        let rec1 = rec.clone();
        blocking(move || me.inner.store.save_container(&rec1).map_err(internal)).await?;
        Ok(rec)
    }

    /// The bundle: the image's rootfs mounted, config.json written, the log's directory made.
    fn write_bundle(
        &self,
        rec: &ContainerRecord,
        sandbox: &SandboxRecord,
        image: &crate::image::Image,
        target_pid: Option<i32>,
    ) -> Result<(), Error> {
        let rootfs = self
            .inner
            .images
            .mount_rootfs(image, &rec.dir)
            .map_err(internal)?;
        let image_name = rec.image_ref.clone();
        let mut spec = crate::ocispec::container_spec(&crate::ocispec::SpecInputs {
            id: &rec.id,
            sandbox,
            config: &rec.config,
            image: image.config.config().as_ref(),
            image_name: &image_name,
            rootfs: &rootfs,
            target_pid,
        })
        .map_err(Error::from)?;
        if let Some(res) = spec
            .linux_mut()
            .as_mut()
            .and_then(|l| l.resources_mut().as_mut())
        {
            self.hugepage_policy(&rec.id, res)?;
        }
        let path = rec.dir.join("config.json");
        crate::records::write_json_atomic(&path, &spec).map_err(internal)?;
        // Checked the way `rrun create` will check it, so a bad request is an
        // InvalidArgument here and not an error from the monitor.
        rrun::spec::validate(&spec, &rec.dir)
            .map_err(|e| Error::invalid_argument(e.to_string()))?;
        if let Some(parent) = rec.log_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| internal(format!("creating {}: {e}", parent.display())))?;
        }
        std::fs::create_dir_all(&rec.monitor_dir)
            .map_err(|e| internal(format!("creating {}: {e}", rec.monitor_dir.display())))?;
        Ok(())
    }

    /// Starts the container's monitor, which creates the container; answers the init's pid.
    async fn spawn_monitor(&self, rec: &ContainerRecord) -> Result<i32, Error> {
        use tokio::io::AsyncReadExt;
        let tty = rec.config.tty;
        let stderr_path = rec.monitor_dir.join("monitor.log");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| internal(format!("creating {}: {e}", stderr_path.display())))?;
        // The small monitor binary directly when it is installed beside the server: going
        // through `rrun-cri monitor`, which only execs it, costs one exec of the big binary.
        let exe = &self.inner.config.exe;
        let mut cmd = if let Some(small) = self.small_monitor_binary() {
            let mut cmd = tokio::process::Command::new(small);
            cmd.arg("--runtime-exe").arg(exe);
            cmd
        } else {
            let mut cmd = tokio::process::Command::new(exe);
            cmd.arg("monitor");
            cmd
        };
        cmd.arg("--runtime-root")
            .arg(&self.inner.config.runtime_root)
            .arg("--id")
            .arg(&rec.id)
            .arg("--bundle")
            .arg(&rec.dir)
            .arg("--log-path")
            .arg(if rec.log_path.as_os_str().is_empty() {
                Path::new("/dev/null")
            } else {
                &rec.log_path
            })
            .arg("--state-dir")
            .arg(&rec.monitor_dir);
        if tty {
            cmd.arg("--tty");
        }
        // Attach sessions write to the container's stdin through its monitor.
        if rec.config.stdin {
            cmd.arg("--stdin");
        }
        if rec.config.stdin_once {
            cmd.arg("--stdin-once");
        }
        cmd.stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| internal(format!("starting the monitor {}: {e}", exe.display())))?;
        let mut out = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = stdout.read_to_string(&mut out).await;
        }
        let _ = child.wait().await;
        let report = monitor::protocol::StartReport::parse(&out, || {
            let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            format!("the monitor died without a report: {}", log.trim())
        });
        match report {
            monitor::protocol::StartReport::Started { pid } => Ok(pid),
            monitor::protocol::StartReport::Failed(f) => {
                Err(Error::from(f).context(format_args!("creating container {}", rec.id)))
            }
        }
    }

    /// Removes the container from the runtime, unmounts its rootfs and removes its dirs.
    fn destroy_container_files(&self, rec: &ContainerRecord) {
        match self.inner.runtime.delete(&rec.id, true) {
            Ok(()) | Err(rrun::Error::NotFound(_)) => {}
            Err(e) => tracing::warn!("container {}: runtime delete: {e}", rec.id),
        }
        if let Err(e) = ImageStore::unmount_rootfs(&rec.dir) {
            tracing::warn!("container {}: unmounting its rootfs: {e}", rec.id);
        }
        let _ = std::fs::remove_dir_all(&rec.monitor_dir);
        if let Err(e) = self.inner.store.remove_container(&rec.id) {
            tracing::warn!("container {}: {e}", rec.id);
        }
    }

    fn container(&self, id: &str) -> Result<ContainerRecord, Error> {
        check_id("container", id)?;
        let st = self.state();
        find_by_prefix(&st.containers, id)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| Error::not_found(format!("container {id:?} not found")))
    }

    /// Reads the monitor's exit file into the record once it exists.
    fn refresh_exit(&self, id: &str) -> Option<ExitRecord> {
        let rec = self.state().containers.get(id).cloned()?;
        if rec.exit.is_some() {
            return rec.exit;
        }
        let exit = read_exit(&rec)?;
        let mut rec = rec;
        rec.exit = Some(exit.clone());
        if let Err(e) = self.inner.store.save_container(&rec) {
            tracing::warn!("container {id}: saving its exit: {e}");
        }
        let newly = {
            let mut st = self.state();
            match st.containers.get_mut(id) {
                Some(c) if c.exit.is_none() => {
                    *c = rec.clone();
                    true
                }
                _ => false,
            }
        };
        if newly {
            self.emit(&rec, api::ContainerEventType::ContainerStoppedEvent);
        }
        Some(exit)
    }

    pub fn phase(&self, rec: &ContainerRecord) -> ContainerPhase {
        if rec.exit.is_some() || self.refresh_exit(&rec.id).is_some() {
            return ContainerPhase::Exited;
        }
        test_hook_delay("RRUN_CRI_TEST_EXIT_READ_DELAY_MS");
        match self.inner.runtime.status(&rec.id) {
            Ok(rrun::Status::Created | rrun::Status::Creating) => ContainerPhase::Created,
            Ok(rrun::Status::Running | rrun::Status::Paused) => ContainerPhase::Running,
            // The init is gone. Whether the monitor is alive is asked before the exit file
            // is read again: the monitor writes the file and then ends, so a monitor seen
            // gone has written it (or never will). Asked the other way round, a monitor
            // that writes and ends between the two looks like one that died first.
            _ => {
                let alive = monitor_alive(rec);
                if self.refresh_exit(&rec.id).is_none() && alive {
                    // Still draining the pipes before it writes the exit file.
                    ContainerPhase::Running
                } else {
                    ContainerPhase::Exited
                }
            }
        }
    }

    pub async fn start_container(&self, id: &str) -> Result<(), Error> {
        let rec = self.container(id)?;
        if self.phase(&rec) != ContainerPhase::Created {
            return Err(Error::failed_precondition(format!(
                "container {} is not in the created state",
                rec.id
            )));
        }
        // Taken before the start: the program runs (and may end) before `start` returns.
        let started_at = crate::records::now_ns();
        let me = self.clone();
        let cid = rec.id.clone();
        blocking(move || me.inner.runtime.start(&cid).map_err(Error::from)).await?;
        let mut rec = rec;
        rec.started_at = started_at;
        let me = self.clone();
        let rec1 = rec.clone();
        blocking(move || me.inner.store.save_container(&rec1).map_err(internal)).await?;
        self.state().containers.insert(rec.id.clone(), rec.clone());
        self.emit(&rec, api::ContainerEventType::ContainerStartedEvent);
        self.watch_exit(rec.id.clone());
        Ok(())
    }

    /// Notices the container's end as it happens (for the event stream), by polling the
    /// monitor's exit file; a stopped container's status is read on demand anyway.
    fn watch_exit(&self, id: String) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let exists = me.state().containers.contains_key(&id);
                if !exists {
                    return;
                }
                let me2 = me.clone();
                let id2 = id.clone();
                let done = tokio::task::spawn_blocking(move || me2.refresh_exit(&id2).is_some())
                    .await
                    .unwrap_or(true);
                if done {
                    return;
                }
            }
        });
    }

    /// Re-arms the exit watchers after a restart.
    pub fn watch_running(&self) {
        let ids: Vec<String> = self
            .state()
            .containers
            .values()
            .filter(|c| c.exit.is_none() && c.started_at > 0)
            .map(|c| c.id.clone())
            .collect();
        for id in ids {
            self.watch_exit(id);
        }
    }

    /// Waits until the monitor has written the container's exit, at most `limit`.
    async fn wait_exit(&self, id: &str, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let me = self.clone();
            let id2 = id.to_string();
            let done = tokio::task::spawn_blocking(move || {
                me.refresh_exit(&id2).is_some() || me.init_gone(&id2)
            })
            .await
            .unwrap_or(false);
            if done {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The runtime says stopped and the monitor is gone without an exit file (it was
    /// killed): nothing more will come.
    fn init_gone(&self, id: &str) -> bool {
        let Some(rec) = self.state().containers.get(id).cloned() else {
            return true;
        };
        let stopped = !matches!(
            self.inner.runtime.status(id),
            Ok(s) if s != rrun::Status::Stopped
        );
        stopped && !monitor_alive(&rec)
    }

    pub async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), Error> {
        if timeout < 0 {
            return Err(Error::invalid_argument(format!(
                "StopContainer timeout {timeout} is negative (0: kill at once)"
            )));
        }
        let rec = self.container(id)?;
        match self.phase(&rec) {
            ContainerPhase::Exited => return Ok(()),
            ContainerPhase::Created => {
                // Never started: kill the waiting init (the kubelet stops such containers too).
                self.kill(&rec.id, nix::sys::signal::Signal::SIGKILL, true)
                    .await?;
                self.wait_exit(&rec.id, Duration::from_secs(10)).await;
                return Ok(());
            }
            ContainerPhase::Running => {}
        }
        if timeout > 0 {
            let signal = self.stop_signal(&rec);
            self.kill(&rec.id, signal, false).await?;
            if self
                .wait_exit(&rec.id, Duration::from_secs(timeout as u64))
                .await
            {
                return Ok(());
            }
        }
        self.kill(&rec.id, nix::sys::signal::Signal::SIGKILL, true)
            .await?;
        if !self.wait_exit(&rec.id, Duration::from_secs(30)).await {
            return Err(Error::deadline_exceeded(format!(
                "container {} did not exit within 30s of SIGKILL",
                rec.id
            )));
        }
        Ok(())
    }

    fn stop_signal(&self, rec: &ContainerRecord) -> nix::sys::signal::Signal {
        let from_image = self
            .inner
            .images
            .resolve(&rec.image_id)
            .ok()
            .flatten()
            .and_then(|i| {
                i.config
                    .config()
                    .as_ref()
                    .and_then(|c| c.stop_signal().clone())
            });
        from_image
            .and_then(|s| rrun::spec::parse_signal(&s).ok())
            .unwrap_or(nix::sys::signal::Signal::SIGTERM)
    }

    async fn kill(
        &self,
        id: &str,
        signal: nix::sys::signal::Signal,
        all: bool,
    ) -> Result<(), Error> {
        let me = self.clone();
        let id = id.to_string();
        blocking(move || match me.inner.runtime.kill(&id, signal, all) {
            // Gone between our look and the signal: what stop wanted.
            Ok(()) | Err(rrun::Error::WrongState { .. }) => Ok(()),
            Err(e) => Err(Error::from(e)),
        })
        .await
    }

    pub async fn remove_container(&self, id: &str) -> Result<(), Error> {
        let rec = match self.container(id) {
            Ok(rec) => rec,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        if self.phase(&rec) != ContainerPhase::Exited {
            self.kill(&rec.id, nix::sys::signal::Signal::SIGKILL, true)
                .await?;
            self.wait_exit(&rec.id, Duration::from_secs(30)).await;
        }
        let me = self.clone();
        let rec2 = rec.clone();
        blocking(move || {
            me.destroy_container_files(&rec2);
            Ok(())
        })
        .await?;
        self.state().containers.remove(&rec.id);
        self.emit(&rec, api::ContainerEventType::ContainerDeletedEvent);
        Ok(())
    }

    pub fn list_containers(&self, filter: Option<api::ContainerFilter>) -> Vec<api::Container> {
        let f = filter.unwrap_or_default();
        let recs: Vec<ContainerRecord> = {
            let st = self.state();
            let by_id = (!f.id.is_empty())
                .then(|| find_by_prefix(&st.containers, &f.id).map(|(k, _)| k.clone()))
                .map(|k| k.unwrap_or_default());
            let by_pod = (!f.pod_sandbox_id.is_empty()).then(|| {
                find_by_prefix(&st.sandboxes, &f.pod_sandbox_id)
                    .map(|(k, _)| k.clone())
                    .unwrap_or_default()
            });
            st.containers
                .values()
                .filter(|c| by_id.as_ref().is_none_or(|id| &c.id == id))
                .filter(|c| by_pod.as_ref().is_none_or(|p| &c.sandbox_id == p))
                .filter(|c| labels_match(&c.config.labels, &f.label_selector))
                .cloned()
                .collect()
        };
        let mut out: Vec<api::Container> = recs
            .iter()
            .map(|c| (c, self.phase(c)))
            .filter(|(_, p)| {
                f.state
                    .as_ref()
                    .is_none_or(|v| v.state == p.to_cri() as i32)
            })
            .map(|(c, p)| api::Container {
                id: c.id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: c.config.metadata.clone(),
                image: Some(image_spec(c)),
                image_ref: c.image_id.clone(),
                state: p.to_cri() as i32,
                created_at: c.created_at,
                labels: c.config.labels.clone(),
                annotations: c.config.annotations.clone(),
                image_id: c.image_id.clone(),
            })
            .collect();
        out.sort_by_key(|c| c.created_at);
        out
    }

    pub fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<api::ContainerStatusResponse, Error> {
        let rec = self.container(id)?;
        let phase = self.phase(&rec);
        let rec = self.state().containers.get(&rec.id).cloned().unwrap_or(rec);
        let mut status = container_status(&rec, phase);
        if phase == ContainerPhase::Exited && rec.exit.is_none() {
            status.exit_code = 255;
            status.reason = "Error".into();
            status.message =
                "the container's monitor ended before the container: its exit status is unknown"
                    .into();
        }
        let mut info = HashMap::new();
        if verbose {
            let spec = std::fs::read_to_string(rec.dir.join("config.json"))
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
            let doc = serde_json::json!({
                "pid": rec.pid,
                "sandboxID": rec.sandbox_id,
                "image": rec.image_id,
                "runtimeSpec": spec,
                "monitorDir": rec.monitor_dir,
            });
            info.insert("info".to_string(), doc.to_string());
        }
        Ok(api::ContainerStatusResponse {
            status: Some(status),
            info,
        })
    }

    pub async fn update_container_resources(
        &self,
        id: &str,
        resources: Option<api::LinuxContainerResources>,
    ) -> Result<(), Error> {
        let mut rec = self.container(id)?;
        if self.phase(&rec) == ContainerPhase::Exited {
            return Err(Error::failed_precondition(format!(
                "container {} has exited: its resources cannot change",
                rec.id
            )));
        }
        let Some(r) = resources else { return Ok(()) };
        let mut res = crate::ocispec::resources_only(&r).map_err(Error::from)?;
        self.hugepage_policy(&rec.id, &mut res)?;
        let me = self.clone();
        let cid = rec.id.clone();
        blocking(move || me.inner.runtime.update(&cid, &res).map_err(Error::from)).await?;
        let mut linux = rec.config.linux.clone().unwrap_or_default();
        linux.resources = Some(r);
        rec.config.linux = Some(linux);
        let me = self.clone();
        let rec1 = rec.clone();
        blocking(move || me.inner.store.save_container(&rec1).map_err(internal)).await?;
        self.state().containers.insert(rec.id.clone(), rec);
        Ok(())
    }

    pub async fn reopen_container_log(&self, id: &str) -> Result<(), Error> {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
        let rec = self.container(id)?;
        if self.phase(&rec) != ContainerPhase::Running {
            return Err(Error::failed_precondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        let sock = monitor::control_socket(&rec.monitor_dir);
        let talk = async {
            let mut s = tokio::net::UnixStream::connect(&sock).await?;
            s.write_all(b"reopen\n").await?;
            let mut line = String::new();
            tokio::io::BufReader::new(s).read_line(&mut line).await?;
            Ok::<_, std::io::Error>(line)
        };
        let line = tokio::time::timeout(Duration::from_secs(10), talk)
            .await
            .map_err(|_| Error::deadline_exceeded("the monitor did not answer the reopen"))?
            .map_err(|e| internal(format!("{}: {e}", sock.display())))?;
        match line.trim() {
            "ok" => Ok(()),
            other => Err(internal(format!("reopening the log: {other}"))),
        }
    }

    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<api::ExecSyncResponse, Error> {
        use tokio::io::AsyncReadExt;
        if cmd.is_empty() {
            return Err(Error::invalid_argument("ExecSync needs a command"));
        }
        if timeout < 0 {
            return Err(Error::invalid_argument(format!(
                "ExecSync timeout {timeout} is negative (0: no timeout)"
            )));
        }
        let rec = self.container(id)?;
        if self.phase(&rec) != ContainerPhase::Running {
            return Err(Error::failed_precondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        let process = self.exec_process(&rec, cmd)?;
        let tag = new_id()?;
        let process_file = rec.monitor_dir.join(format!("exec-{}.json", &tag[..12]));
        let status_file = rec.monitor_dir.join(format!("exec-{}.status", &tag[..12]));
        crate::records::write_json_atomic(&process_file, &process).map_err(internal)?;
        let mut child = tokio::process::Command::new(&self.inner.config.exe)
            .arg("exec-sync")
            .arg("--runtime-root")
            .arg(&self.inner.config.runtime_root)
            .arg("--id")
            .arg(&rec.id)
            .arg("--process")
            .arg(&process_file)
            .arg("--status-file")
            .arg(&status_file)
            .arg("--timeout")
            .arg(timeout.max(0).to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| internal(format!("starting the exec helper: {e}")))?;
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let limit = cri_proto::MAX_MESSAGE_SIZE as u64 / 2;
        let (out, err) = tokio::join!(
            async {
                let mut v = Vec::new();
                if let Some(s) = stdout.as_mut() {
                    let _ = s.take(limit).read_to_end(&mut v).await;
                }
                v
            },
            async {
                let mut v = Vec::new();
                if let Some(s) = stderr.as_mut() {
                    let _ = s.take(limit).read_to_end(&mut v).await;
                }
                v
            }
        );
        let _ = child.wait().await;
        let status =
            monitor::protocol::ExecStatus::parse(std::fs::read(&status_file).ok().as_deref());
        let _ = std::fs::remove_file(&process_file);
        let _ = std::fs::remove_file(&status_file);
        let exit_code = match status {
            monitor::protocol::ExecStatus::Failed(f) => {
                return Err(Error::from(f).context(format_args!("exec in container {}", rec.id)));
            }
            monitor::protocol::ExecStatus::Exited {
                timed_out: true, ..
            } => {
                return Err(Error::deadline_exceeded(format!(
                    "command timed out after {timeout}s"
                )));
            }
            monitor::protocol::ExecStatus::Exited { exit_code, .. } => exit_code,
        };
        Ok(api::ExecSyncResponse {
            stdout: out,
            stderr: err,
            exit_code,
        })
    }

    /// The exec'd process: the container's own process settings with another command.
    fn exec_process(
        &self,
        rec: &ContainerRecord,
        cmd: Vec<String>,
    ) -> Result<oci_spec::runtime::Process, Error> {
        let spec: oci_spec::runtime::Spec =
            crate::records::read_json(&rec.dir.join("config.json")).map_err(internal)?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(cmd));
        process.set_terminal(Some(false));
        process.set_oom_score_adj(None);
        Ok(process)
    }

    fn emit(&self, rec: &ContainerRecord, typ: api::ContainerEventType) {
        if self.inner.events.receiver_count() == 0 {
            return;
        }
        let pod = self
            .state()
            .sandboxes
            .get(&rec.sandbox_id)
            .map(sandbox_status);
        let phase = match typ {
            api::ContainerEventType::ContainerCreatedEvent => ContainerPhase::Created,
            api::ContainerEventType::ContainerStartedEvent => ContainerPhase::Running,
            _ => ContainerPhase::Exited,
        };
        let statuses = match typ {
            api::ContainerEventType::ContainerDeletedEvent => vec![],
            _ => vec![container_status(rec, phase)],
        };
        let _ = self.inner.events.send(api::ContainerEventResponse {
            container_id: rec.id.clone(),
            container_event_type: typ as i32,
            created_at: crate::records::now_ns(),
            pod_sandbox_status: pod,
            containers_statuses: statuses,
        });
    }

    pub fn subscribe(&self) -> broadcast::Receiver<api::ContainerEventResponse> {
        self.inner.events.subscribe()
    }

    // -----------------------------------------------------------------------------------
    // Stats
    // -----------------------------------------------------------------------------------

    pub fn container_stats(&self, id: &str) -> Result<api::ContainerStats, Error> {
        let rec = self.container(id)?;
        Ok(self.stats_of(&rec))
    }

    fn stats_of(&self, rec: &ContainerRecord) -> api::ContainerStats {
        let raw = if self.phase(rec) == ContainerPhase::Exited {
            None
        } else {
            self.inner.runtime.stats(&rec.id).ok()
        };
        stats::container_stats(rec, raw.as_ref())
    }

    pub fn list_container_stats(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Vec<api::ContainerStats> {
        let f = filter.unwrap_or_default();
        let recs: Vec<ContainerRecord> = {
            let st = self.state();
            st.containers
                .values()
                .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
                .filter(|c| {
                    f.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&f.pod_sandbox_id)
                })
                .filter(|c| labels_match(&c.config.labels, &f.label_selector))
                .cloned()
                .collect()
        };
        // Like the kubelet's cadvisor-less path: only containers that run have stats.
        recs.iter()
            .filter(|c| self.phase(c) != ContainerPhase::Exited)
            .map(|c| self.stats_of(c))
            .collect()
    }

    pub fn pod_sandbox_stats(&self, id: &str) -> Result<api::PodSandboxStats, Error> {
        let rec = self.sandbox(id)?;
        let containers: Vec<ContainerRecord> = self
            .state()
            .containers
            .values()
            .filter(|c| c.sandbox_id == rec.id)
            .cloned()
            .collect();
        let running: Vec<api::ContainerStats> = containers
            .iter()
            .filter(|c| self.phase(c) != ContainerPhase::Exited)
            .map(|c| self.stats_of(c))
            .collect();
        let pod_raw = rec
            .cgroup
            .as_ref()
            .and_then(|cg| rrun::pod_cgroup::PodCgroup::open(cg).stats().ok());
        let pids = rec
            .cgroup
            .as_ref()
            .and_then(|cg| rrun::pod_cgroup::PodCgroup::open(cg).pids().ok())
            .map(|p| p.len() as u64);
        Ok(stats::pod_stats(&rec, pod_raw.as_ref(), pids, running))
    }

    pub fn list_pod_sandbox_stats(
        &self,
        filter: Option<api::PodSandboxStatsFilter>,
    ) -> Vec<api::PodSandboxStats> {
        let f = filter.unwrap_or_default();
        let ids: Vec<String> = self
            .state()
            .sandboxes
            .values()
            .filter(|s| f.id.is_empty() || s.id.starts_with(&f.id))
            .filter(|s| labels_match(&s.config.labels, &f.label_selector))
            .filter(|s| s.state == SandboxState::Ready)
            .map(|s| s.id.clone())
            .collect();
        ids.iter()
            .filter_map(|id| self.pod_sandbox_stats(id).ok())
            .collect()
    }

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

/// The pod's cgroup: made (and so later removed) by this server unless the kubelet made it
/// already.
impl Cri {
    /// Hugepage limits where no hugetlb controller can take them: dropped with a warning,
    /// or refused, by `tolerate_missing_hugetlb_controller` (containerd's rule).
    fn hugepage_policy(
        &self,
        container: &str,
        res: &mut oci_spec::runtime::LinuxResources,
    ) -> Result<(), Error> {
        let wanted = matches!(res.hugepage_limits(), Some(l) if !l.is_empty());
        if self.inner.hugetlb || !wanted {
            return Ok(());
        }
        if !self.inner.config.tolerate_missing_hugetlb_controller {
            return Err(Error::failed_precondition(
                "hugepage limits need the hugetlb cgroup controller, which this node does not \
                 have (set tolerate_missing_hugetlb_controller = true to skip them)",
            ));
        }
        tracing::warn!(
            container,
            "hugetlb cgroup controller missing: hugepage limits skipped \
             (tolerate_missing_hugetlb_controller)"
        );
        res.set_hugepage_limits(None);
        Ok(())
    }
}

/// Whether a container's cgroup can get hugepage limits here: on cgroup v2 the controller
/// is enabled at the root; on v1 (and hybrid, where rrun uses the v1 hierarchies) a
/// hugetlb hierarchy is mounted.
fn hugetlb_controller_available() -> bool {
    rrun::pod_cgroup::controller_available("hugetlb")
}

fn make_pod_cgroup(parent: &str) -> Result<Option<rrun::pod_cgroup::CgroupRecord>, Error> {
    match rrun::pod_cgroup::PodCgroup::create(Path::new(parent)) {
        Ok(cg) => Ok(Some(cg.record().clone())),
        Err(rrun::pod_cgroup::CgroupError::Exists(_)) => Ok(None),
        Err(e) => Err(Error::invalid_argument(format!(
            "cgroup_parent {parent:?}: {e}"
        ))),
    }
}

fn read_exit(rec: &ContainerRecord) -> Option<ExitRecord> {
    let data = std::fs::read(monitor::exit_file(&rec.monitor_dir)).ok()?;
    let exit = monitor::protocol::ExitStatus::parse(&data).ok()?;
    let exit_code = exit.exit_code;
    let oom = exit.oom_killed;
    let finished_at = match i64::try_from(exit.finished_at_ns) {
        Ok(0) | Err(_) => crate::records::now_ns(),
        Ok(t) => t,
    };
    let reason = if oom {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    Some(ExitRecord {
        exit_code,
        finished_at,
        reason: reason.into(),
        message: String::new(),
    })
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

fn monitor_alive(rec: &ContainerRecord) -> bool {
    let Ok(pid) = std::fs::read_to_string(monitor::pid_file(&rec.monitor_dir)) else {
        return false;
    };
    let Ok(pid) = pid.trim().parse::<i32>() else {
        return false;
    };
    // The pid must still be a monitor of this container (pids are reused).
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains("monitor") && c.contains(&rec.id)
        })
        .unwrap_or(false)
}

fn sandbox_state(s: &SandboxRecord) -> api::PodSandboxState {
    match s.state {
        SandboxState::Ready => api::PodSandboxState::SandboxReady,
        SandboxState::NotReady => api::PodSandboxState::SandboxNotready,
    }
}

fn sandbox_status(s: &SandboxRecord) -> api::PodSandboxStatus {
    let options = s
        .config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|c| c.namespace_options.clone());
    api::PodSandboxStatus {
        id: s.id.clone(),
        metadata: s.config.metadata.clone(),
        state: sandbox_state(s) as i32,
        created_at: s.created_at,
        network: Some(api::PodSandboxNetworkStatus::default()),
        linux: Some(api::LinuxPodSandboxStatus {
            namespaces: Some(api::Namespace { options }),
        }),
        labels: s.config.labels.clone(),
        annotations: s.config.annotations.clone(),
        runtime_handler: s.runtime_handler.clone(),
    }
}

fn image_spec(c: &ContainerRecord) -> api::ImageSpec {
    let mut spec = c.config.image.clone().unwrap_or_default();
    if spec.image.is_empty() {
        spec.image = c.image_ref.clone();
    }
    spec
}

fn container_status(c: &ContainerRecord, phase: ContainerPhase) -> api::ContainerStatus {
    let exit = c.exit.clone().unwrap_or_default();
    api::ContainerStatus {
        id: c.id.clone(),
        metadata: c.config.metadata.clone(),
        state: phase.to_cri() as i32,
        created_at: c.created_at,
        started_at: c.started_at,
        finished_at: exit.finished_at,
        exit_code: exit.exit_code,
        image: Some(image_spec(c)),
        image_ref: c.image_id.clone(),
        reason: exit.reason,
        message: exit.message,
        labels: c.config.labels.clone(),
        annotations: c.config.annotations.clone(),
        mounts: c.config.mounts.clone(),
        log_path: c.log_path.to_string_lossy().into_owned(),
        resources: c
            .config
            .linux
            .as_ref()
            .and_then(|l| l.resources.clone())
            .map(|r| api::ContainerResources {
                linux: Some(r),
                ..Default::default()
            }),
        image_id: c.image_id.clone(),
        user: None,
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
