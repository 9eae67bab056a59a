//! Harness for the CRI server's end-to-end tests (`tests/cri_*.rs`).
//!
//! A test makes a [`CriServer`] (a guard): private temp dirs for the server's `--root`,
//! its `--runtime-root`, its socket and the pods' log directories, the server spawned
//! from `target/debug/rrun-cri` (or `$RRUN_CRI_BIN`) with its stderr in a file, and a
//! connected [`Client`]. Dropping it (also on panic, when it prints the tail of the
//! server's stderr) kills the server, force-deletes every container the runtime root
//! still has, kills whatever process of the test is left (the server's environment and
//! every container's carry `RRUN_TEST_ID=<name>`), unmounts what is mounted under the
//! temp dirs, removes the test's cgroups (`rrun-test/cri-<name>/...`) and the dirs.
//!
//! The requests the helpers build are shaped like a kubelet's: a pod per
//! [`CriServer::pod_config`] with its own relative cgroup parent and log directory,
//! containers per [`CriServer::container_config`] logging to `<name>.log` in it.
//!
//! Every test gets its own server: nextest runs each test in its own process, in
//! parallel (the VM pass runs a binary's tests as threads of one process: nothing here is
//! per-process). Every wait is bounded by a [`scaled`] timeout. The temp dirs go where
//! overlayfs takes an upper dir (not the VM's `/tmp`, an overlay itself): see
//! `scratch_parent`. The server is built separately (`cargo build -p rrun-cri`); a stale
//! binary tests stale code.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

pub use cri_proto::{api, Client};
pub use rootfs_fixtures::image::{
    write_image, write_images, ArchiveFormat, Compression, ImageSpec as FixtureImage, LayerSpec,
    DEFAULT_PATH,
};
pub use tonic::{Code, Status};

use crate::{
    cgroup_dirs, mounts_under, parse_mountinfo, pids_with_env, remove_cgroups, scaled,
    unmount_all_under,
};

/// The reference under which [`CriServer::import_busybox`] imports the default busybox
/// image (kept as is by the server's name normalisation: it has a registry and a tag).
pub const BUSYBOX: &str = "localhost/rrun-test:1";

/// How long the server may take to create its socket.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The server binary under test: `$RRUN_CRI_BIN`, else `target/debug/rrun-cri`.
pub fn cri_binary() -> PathBuf {
    if let Some(b) = std::env::var_os("RRUN_CRI_BIN").filter(|b| !b.is_empty()) {
        let p = PathBuf::from(b);
        assert!(p.is_file(), "RRUN_CRI_BIN={} does not exist", p.display());
        return p;
    }
    let p = crate::workspace_dir().join("target/debug/rrun-cri");
    assert!(
        p.is_file(),
        "no CRI server binary at {}: build it (cargo build -p rrun-cri) or set RRUN_CRI_BIN",
        p.display()
    );
    p
}

/// The rrun CLI that can read the server's runtime state (the server uses the rrun
/// library, so runc cannot): `target/{debug,release}/rrun`, else the harness's runtime.
fn rrun_cli() -> PathBuf {
    let ws = crate::workspace_dir();
    for p in [ws.join("target/debug/rrun"), ws.join("target/release/rrun")] {
        if p.is_file() {
            return p;
        }
    }
    crate::runtime_binary()
}

/// Where the tests' temp dirs go: the server mounts overlays whose upper dirs live there,
/// and overlayfs refuses an upper dir on overlayfs or 9p (the VM's `/tmp` is an overlay on
/// the host's 9p root). `$RRUN_CRI_TEST_TMPDIR`, else the first of the temp dir,
/// `/var/tmp`, `/run` and `/dev/shm` on another filesystem.
fn scratch_parent() -> PathBuf {
    if let Some(d) = std::env::var_os("RRUN_CRI_TEST_TMPDIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    const OVERLAYFS_MAGIC: i64 = 0x794c_7630;
    const V9FS_MAGIC: i64 = 0x0102_1997;
    let candidates = [
        std::env::temp_dir(),
        PathBuf::from("/var/tmp"),
        PathBuf::from("/run"),
        PathBuf::from("/dev/shm"),
    ];
    for dir in &candidates {
        let Some(fs_type) = fs_type(dir) else {
            continue;
        };
        if fs_type != OVERLAYFS_MAGIC && fs_type != V9FS_MAGIC {
            return dir.clone();
        }
    }
    eprintln!(
        "cri harness: every candidate temp dir is on overlayfs or 9p; using {}",
        candidates[0].display()
    );
    candidates[0].clone()
}

/// `statfs(dir).f_type` of a writable directory, or `None`.
fn fs_type(dir: &Path) -> Option<i64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs fills the zeroed struct; the path is a valid C string.
    let (r, t) = unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        (libc::statfs(c.as_ptr(), &mut st), st.f_type)
    };
    if r != 0 {
        return None;
    }
    // SAFETY: access(2) with a valid C string.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        return None;
    }
    #[allow(clippy::unnecessary_cast)]
    Some(t as i64)
}

/// One test's CRI server and everything it made. See the module docs.
pub struct CriServer {
    name: String,
    tmp: Option<tempfile::TempDir>,
    base: PathBuf,
    root: PathBuf,
    runtime_root: PathBuf,
    socket: PathBuf,
    log_root: PathBuf,
    stderr_path: PathBuf,
    cgroup_parent: String,
    child: Mutex<Option<Child>>,
    client: Mutex<Option<Client>>,
    starts: AtomicUsize,
    ids: Mutex<Vec<String>>,
    options: StartOptions,
}

/// How [`CriServer::start_with`] starts the server beyond the defaults.
#[derive(Default, Clone)]
pub struct StartOptions {
    /// Extra environment of the server.
    pub env: Vec<(String, String)>,
    /// The text of a `--config` TOML file.
    pub config_toml: Option<String>,
    /// A command line the server's runs after (e.g. `nsenter --target PID --net --mount
    /// --`: the stock-kubelet test's node namespaces).
    pub wrap: Vec<String>,
    /// The server's `--cni-conf-dir`; by default an empty dir of the test's, so that no
    /// test runs the machine's own CNI config (podman's bridge in `/etc/cni/net.d`) in
    /// the machine's network namespace.
    pub cni_conf_dir: Option<PathBuf>,
}

impl CriServer {
    /// Makes the dirs, starts the server and connects. `name` goes into dir names, pod
    /// names and the cgroup parent (keep it short).
    pub async fn start(name: &str) -> CriServer {
        Self::start_with(name, StartOptions::default()).await
    }

    /// [`start`](Self::start) with more variables in the server's environment (the
    /// debug build's test hooks, `RRUN_CRI_TEST_*`).
    pub async fn start_with_env(name: &str, env: &[(&str, &str)]) -> CriServer {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Self::start_with(
            name,
            StartOptions {
                env: env.collect(),
                ..StartOptions::default()
            },
        )
        .await
    }

    /// [`CriServer::start`] with the server's command line after `wrap`.
    pub async fn start_in(name: &str, wrap: &[String]) -> CriServer {
        Self::start_with(
            name,
            StartOptions {
                wrap: wrap.to_vec(),
                ..StartOptions::default()
            },
        )
        .await
    }

    /// [`CriServer::start`] with extra environment, a config file or a wrapper.
    pub async fn start_with(name: &str, options: StartOptions) -> CriServer {
        let clean: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(20)
            .collect();
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let unique = format!("{clean}-{}-{n}", std::process::id());
        let parent = scratch_parent();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("rrun-cri-{clean}-"))
            .tempdir_in(&parent)
            .unwrap_or_else(|e| panic!("making the test's temp dir in {}: {e}", parent.display()));
        let base = tmp.path().to_path_buf();
        // Containers running as another user must reach bind-mounted dirs below here.
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        let mk = |d: &str| {
            let p = base.join(d);
            fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
            fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
            p
        };
        let root = mk("root");
        let runtime_root = mk("run");
        let log_root = mk("logs");
        mk("images");
        mk("host");
        let server = CriServer {
            name: format!("cri-{unique}"),
            socket: base.join("cri.sock"),
            stderr_path: base.join("server.stderr"),
            cgroup_parent: format!("{}/cri-{unique}", crate::CGROUP_PARENT),
            tmp: Some(tmp),
            base,
            root,
            runtime_root,
            log_root,
            child: Mutex::new(None),
            client: Mutex::new(None),
            starts: AtomicUsize::new(0),
            ids: Mutex::new(Vec::new()),
            options,
        };
        server.spawn_and_connect().await;
        server
    }

    /// The unique name of this test (`cri-<name>-<pid>-<n>`), also the value of
    /// `RRUN_TEST_ID` in the server's and every container's environment.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The temp dir holding everything of this test.
    pub fn dir(&self) -> &Path {
        &self.base
    }

    /// The server's `--root` (persistent state, images under `images/`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The server's `--runtime-root` (rrun's volatile state).
    pub fn runtime_root(&self) -> &Path {
        &self.runtime_root
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The relative cgroup parent under which every pod of this test gets its own.
    pub fn cgroup_parent(&self) -> &str {
        &self.cgroup_parent
    }

    /// A fresh directory below the test's temp dir (mode 0755), e.g. for a bind mount.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.base.join("host").join(name);
        fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }

    /// The pid of the running server.
    pub fn server_pid(&self) -> Option<i32> {
        self.child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|c| c.id() as i32)
    }

    /// A connected client (cheap clone of the shared connection).
    pub fn client(&self) -> Client {
        self.client
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .expect("the server is not running (after kill9, call restart)")
    }

    pub fn runtime(&self) -> cri_proto::RuntimeServiceClient<tonic::transport::Channel> {
        self.client().runtime
    }

    pub fn images(&self) -> cri_proto::ImageServiceClient<tonic::transport::Channel> {
        self.client().image
    }

    fn spawn(&self) {
        // A socket left by a killed server would look ready at once.
        let _ = fs::remove_file(&self.socket);
        let n = self.starts.fetch_add(1, Ordering::SeqCst);
        let mut err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.stderr_path)
            .expect("opening the server's stderr file");
        let _ = writeln!(err, "----- harness: starting rrun-cri (start #{n}) -----");
        let out = err.try_clone().expect("dup stderr file");
        let mut cmd = match self.options.wrap.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg(cri_binary());
                c
            }
            None => Command::new(cri_binary()),
        };
        cmd.arg("--socket")
            .arg(&self.socket)
            .arg("--root")
            .arg(&self.root)
            .arg("--runtime-root")
            .arg(&self.runtime_root)
            .arg("--cni-conf-dir")
            .arg(
                self.options
                    .cni_conf_dir
                    .clone()
                    .unwrap_or_else(|| self.base.join("cni-conf")),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("RRUN_TEST_ID", &self.name)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "debug,h2=info,tower=info".into()),
            )
            .envs(self.options.env.iter().map(|(k, v)| (k, v)));
        if let Some(toml) = &self.options.config_toml {
            let path = self.base.join("config.toml");
            fs::write(&path, toml).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            cmd.arg("--config").arg(path);
        }
        // SAFETY: prctl is async-signal-safe; a test process killed by its runner must
        // not leave a server behind (the Drop guard would not run).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", cri_binary().display()));
        *self.child.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
    }

    async fn spawn_and_connect(&self) {
        self.spawn();
        let timeout = scaled(READY_TIMEOUT);
        let deadline = Instant::now() + timeout;
        let mut last_err = String::from("socket not created");
        loop {
            // The guard must be gone before a panic (a poisoned lock would make the
            // cleanup panic too).
            let exited = self
                .child
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(st) = exited {
                panic!(
                    "rrun-cri exited ({st}) before serving\n{}",
                    self.stderr_tail(60)
                );
            }
            if self.socket.exists() {
                match Client::connect(&self.socket).await {
                    Ok(mut c) => match c.runtime.version(api::VersionRequest::default()).await {
                        Ok(_) => {
                            *self.client.lock().unwrap_or_else(PoisonError::into_inner) = Some(c);
                            return;
                        }
                        Err(e) => last_err = format!("Version: {e}"),
                    },
                    Err(e) => last_err = e.to_string(),
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "rrun-cri not serving on {} within {timeout:?} ({last_err})\n{}",
                    self.socket.display(),
                    self.stderr_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `kill -9` the server (its containers and monitors are left running).
    pub fn kill9(&self) {
        *self.client.lock().unwrap_or_else(PoisonError::into_inner) = None;
        if let Some(mut c) = self
            .child
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again with the same dirs and reconnects.
    pub async fn restart(&self) {
        self.kill9();
        self.spawn_and_connect().await;
    }

    /// The last `lines` lines of the server's stderr (all starts).
    pub fn stderr_tail(&self, lines: usize) -> String {
        let text = fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "--- rrun-cri stderr (last {} of {} lines, {}) ---\n{}\n--- end of rrun-cri stderr ---",
            all.len() - from,
            all.len(),
            self.stderr_path.display(),
            all[from..].join("\n")
        )
    }

    /// The server's whole stderr so far.
    pub fn stderr(&self) -> String {
        fs::read(&self.stderr_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    // -----------------------------------------------------------------------------------
    // Images
    // -----------------------------------------------------------------------------------

    /// Writes the image archive `spec` describes and imports it with `rrun-cri --root
    /// <root> image import FILE`; returns the image id the fixture computed.
    pub fn import(&self, spec: &FixtureImage) -> String {
        let (path, id) = self.write_archive(spec);
        let out = self.import_file(&path);
        assert!(
            out.status.success(),
            "rrun-cri image import {} failed ({}):\n{}{}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        id
    }

    /// Writes the archive only: (path, image id).
    pub fn write_archive(&self, spec: &FixtureImage) -> (PathBuf, String) {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let ext = match spec.format {
            ArchiveFormat::OciLayoutDir => "",
            _ => ".tar",
        };
        let path = self.base.join("images").join(format!("image-{n}{ext}"));
        let id = write_image(&path, spec)
            .unwrap_or_else(|e| panic!("writing image archive {}: {e:#}", path.display()));
        (path, id)
    }

    /// Runs `rrun-cri --root <root> image import FILE` (not checked).
    pub fn import_file(&self, path: &Path) -> std::process::Output {
        let mut cmd = Command::new(cri_binary());
        cmd.arg("--root")
            .arg(&self.root)
            .args(["image", "import"])
            .arg(path)
            .env("RRUN_TEST_ID", &self.name)
            .stdin(Stdio::null());
        run_with_timeout(cmd, scaled(Duration::from_secs(120)))
    }

    /// Imports the default busybox image as [`BUSYBOX`]; returns its id.
    pub fn import_busybox(&self) -> String {
        self.import(&FixtureImage {
            reference: BUSYBOX.into(),
            ..FixtureImage::default()
        })
    }

    // -----------------------------------------------------------------------------------
    // Requests shaped like a kubelet's
    // -----------------------------------------------------------------------------------

    /// A pod named `name` (unique in this test): uid, namespace `rrun-test`, hostname =
    /// name, its own log directory and relative cgroup parent, labels and annotations,
    /// network/IPC shared in the pod, PID per container (the kubelet's defaults).
    pub fn pod_config(&self, name: &str) -> api::PodSandboxConfig {
        let log_dir = self.log_root.join(name);
        fs::create_dir_all(&log_dir).expect("mkdir pod log dir");
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{}-{name}", self.name),
                namespace: "rrun-test".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: log_dir.display().to_string(),
            dns_config: None,
            port_mappings: vec![],
            labels: HashMap::from([
                ("io.kubernetes.pod.name".into(), name.into()),
                ("rrun-test".into(), self.name.clone()),
            ]),
            annotations: HashMap::from([("rrun.test/pod-annotation".into(), "a=b,c".into())]),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/pod-{name}", self.cgroup_parent),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(pod_namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            windows: None,
        }
    }

    /// A container named `name` of `image` running `command` (empty: the image's
    /// entrypoint/cmd), logging to `<name>.log` in the pod's log directory, with
    /// `RRUN_TEST_ID` in its environment.
    pub fn container_config(
        &self,
        name: &str,
        image: &str,
        command: &[&str],
    ) -> api::ContainerConfig {
        api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(image_spec(image)),
            command: command.iter().map(|s| s.to_string()).collect(),
            envs: vec![kv("RRUN_TEST_ID", &self.name)],
            labels: HashMap::from([
                ("io.kubernetes.container.name".into(), name.into()),
                ("rrun-test".into(), self.name.clone()),
            ]),
            annotations: HashMap::from([(
                "rrun.test/container-annotation".into(),
                "{\"json\": true}".into(),
            )]),
            log_path: format!("{name}.log"),
            linux: Some(api::LinuxContainerConfig {
                resources: Some(api::LinuxContainerResources::default()),
                security_context: Some(api::LinuxContainerSecurityContext {
                    namespace_options: Some(pod_namespaces()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    /// `sh -c script` in busybox: [`container_config`](Self::container_config) of
    /// [`BUSYBOX`].
    pub fn sh_config(&self, name: &str, script: &str) -> api::ContainerConfig {
        self.container_config(name, BUSYBOX, &["sh", "-c", script])
    }

    /// Where the log of container `c` of pod `pod` goes.
    pub fn log_path(pod: &api::PodSandboxConfig, c: &api::ContainerConfig) -> PathBuf {
        Path::new(&pod.log_directory).join(&c.log_path)
    }

    fn track(&self, id: &str) {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(id.to_string());
    }

    /// RunPodSandbox; panics on error.
    pub async fn run_pod(&self, cfg: &api::PodSandboxConfig) -> String {
        let id = self
            .try_run_pod(cfg)
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox: {}", show(&e)));
        assert!(!id.is_empty(), "RunPodSandbox answered an empty id");
        id
    }

    /// RunPodSandbox, the result as is.
    pub async fn try_run_pod(&self, cfg: &api::PodSandboxConfig) -> Result<String, Status> {
        let r = self
            .runtime()
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(cfg.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map(|r| r.into_inner().pod_sandbox_id);
        if let Ok(id) = &r {
            self.track(id);
        }
        r
    }

    /// CreateContainer; panics on error.
    pub async fn create_container(
        &self,
        pod_id: &str,
        pod: &api::PodSandboxConfig,
        cfg: &api::ContainerConfig,
    ) -> String {
        let r = self.try_create_container(pod_id, pod, cfg).await;
        let id = r.unwrap_or_else(|e| {
            panic!(
                "CreateContainer {:?}: {}",
                cfg.metadata.as_ref().map(|m| &m.name),
                show(&e)
            )
        });
        assert!(!id.is_empty(), "CreateContainer answered an empty id");
        id
    }

    /// CreateContainer, the result as is.
    pub async fn try_create_container(
        &self,
        pod_id: &str,
        pod: &api::PodSandboxConfig,
        cfg: &api::ContainerConfig,
    ) -> Result<String, Status> {
        let r = self
            .runtime()
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod_id.into(),
                config: Some(cfg.clone()),
                sandbox_config: Some(pod.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id);
        if let Ok(id) = &r {
            self.track(id);
        }
        r
    }

    /// StartContainer; panics on error.
    pub async fn start_container(&self, id: &str) {
        self.runtime()
            .start_container(api::StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("StartContainer {id}: {}", show(&e)));
    }

    /// CreateContainer + StartContainer.
    pub async fn run_container(
        &self,
        pod_id: &str,
        pod: &api::PodSandboxConfig,
        cfg: &api::ContainerConfig,
    ) -> String {
        let id = self.create_container(pod_id, pod, cfg).await;
        self.start_container(&id).await;
        id
    }

    /// ContainerStatus (verbose) with its info map; panics on error.
    pub async fn container_status_full(&self, id: &str) -> api::ContainerStatusResponse {
        self.runtime()
            .container_status(api::ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .unwrap_or_else(|e| panic!("ContainerStatus {id}: {}", show(&e)))
            .into_inner()
    }

    /// ContainerStatus; panics on error or a missing status.
    pub async fn container_status(&self, id: &str) -> api::ContainerStatus {
        self.container_status_full(id)
            .await
            .status
            .unwrap_or_else(|| panic!("ContainerStatus {id}: no status in the answer"))
    }

    /// PodSandboxStatus; panics on error.
    pub async fn pod_status(&self, id: &str) -> api::PodSandboxStatus {
        self.runtime()
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await
            .unwrap_or_else(|e| panic!("PodSandboxStatus {id}: {}", show(&e)))
            .into_inner()
            .status
            .unwrap_or_else(|| panic!("PodSandboxStatus {id}: no status in the answer"))
    }

    /// The host pid of the container's init, from `info["info"]` (JSON with `pid`, as
    /// containerd answers a verbose ContainerStatus).
    pub async fn container_pid(&self, id: &str) -> i32 {
        let r = self.container_status_full(id).await;
        let info = r.info.get("info").unwrap_or_else(|| {
            panic!(
                "ContainerStatus {id} (verbose): no \"info\" key in info {:?}",
                r.info
            )
        });
        let v: serde_json::Value = serde_json::from_str(info).unwrap_or_else(|e| {
            panic!("ContainerStatus {id}: info[\"info\"] is not JSON ({e}): {info}")
        });
        let pid = v["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("ContainerStatus {id}: no numeric pid in info: {info}"));
        assert!(pid > 0, "ContainerStatus {id}: pid {pid} in info: {info}");
        pid as i32
    }

    /// Polls ContainerStatus until its state is `want`; panics after `timeout` (scaled).
    pub async fn wait_state(
        &self,
        id: &str,
        want: api::ContainerState,
        timeout: Duration,
    ) -> api::ContainerStatus {
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.container_status(id).await;
            if st.state == want as i32 {
                return st;
            }
            if Instant::now() > deadline {
                panic!(
                    "container {id}: state {:?} (reason {:?}), wanted {want:?} within {timeout:?}",
                    api::ContainerState::try_from(st.state),
                    st.reason
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (30 s, scaled) for the container to exit; returns its status.
    pub async fn wait_exited(&self, id: &str) -> api::ContainerStatus {
        self.wait_state(
            id,
            api::ContainerState::ContainerExited,
            Duration::from_secs(30),
        )
        .await
    }

    /// ExecSync, the result as is.
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout_s: i64,
    ) -> Result<api::ExecSyncResponse, Status> {
        self.runtime()
            .exec_sync(api::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: timeout_s,
            })
            .await
            .map(|r| r.into_inner())
    }

    /// ExecSync that must succeed with exit code 0; returns its stdout.
    pub async fn exec_ok(&self, id: &str, cmd: &[&str]) -> String {
        let r = self
            .exec_sync(id, cmd, 0)
            .await
            .unwrap_or_else(|e| panic!("ExecSync {cmd:?} in {id}: {}", show(&e)));
        assert_eq!(
            r.exit_code,
            0,
            "ExecSync {cmd:?} in {id}: exit {}; stdout {:?}; stderr {:?}",
            r.exit_code,
            String::from_utf8_lossy(&r.stdout),
            String::from_utf8_lossy(&r.stderr)
        );
        String::from_utf8_lossy(&r.stdout).into_owned()
    }

    /// StopContainer (timeout in seconds); panics on error.
    pub async fn stop_container(&self, id: &str, timeout_s: i64) {
        self.runtime()
            .stop_container(api::StopContainerRequest {
                container_id: id.into(),
                timeout: timeout_s,
            })
            .await
            .unwrap_or_else(|e| panic!("StopContainer {id}: {}", show(&e)));
    }

    /// RemoveContainer; panics on error.
    pub async fn remove_container(&self, id: &str) {
        self.runtime()
            .remove_container(api::RemoveContainerRequest {
                container_id: id.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("RemoveContainer {id}: {}", show(&e)));
    }

    /// StopPodSandbox then RemovePodSandbox, as the kubelet does; panics on error.
    pub async fn stop_and_remove_pod(&self, id: &str) {
        self.runtime()
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("StopPodSandbox {id}: {}", show(&e)));
        self.runtime()
            .remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("RemovePodSandbox {id}: {}", show(&e)));
    }

    /// ListContainers with `filter`; panics on error.
    pub async fn list_containers(&self, filter: api::ContainerFilter) -> Vec<api::Container> {
        self.runtime()
            .list_containers(api::ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .unwrap_or_else(|e| panic!("ListContainers: {}", show(&e)))
            .into_inner()
            .containers
    }

    /// ListPodSandbox with `filter`; panics on error.
    pub async fn list_pods(&self, filter: Option<api::PodSandboxFilter>) -> Vec<api::PodSandbox> {
        self.runtime()
            .list_pod_sandbox(api::ListPodSandboxRequest { filter })
            .await
            .unwrap_or_else(|e| panic!("ListPodSandbox: {}", show(&e)))
            .into_inner()
            .items
    }

    /// A GetContainerEvents stream, subscribed when this returns.
    pub async fn container_events(&self) -> tonic::Streaming<api::ContainerEventResponse> {
        self.runtime()
            .get_container_events(api::GetEventsRequest {})
            .await
            .unwrap_or_else(|e| panic!("GetContainerEvents: {}", show(&e)))
            .into_inner()
    }

    /// The server with the busybox image imported and one running pod `p` (its config and
    /// id): where most tests start.
    pub async fn with_busybox_pod(name: &str) -> (CriServer, api::PodSandboxConfig, String) {
        let s = CriServer::start(name).await;
        s.import_busybox();
        let pod = s.pod_config("p");
        let id = s.run_pod(&pod).await;
        (s, pod, id)
    }

    /// Ids of pods and containers the helpers made (for leftover checks).
    pub fn ids(&self) -> Vec<String> {
        self.ids
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every path under the server's `--root` and `--runtime-root` (6 levels deep): a
    /// snapshot to diff around a request that must leave nothing behind.
    pub fn state_paths(&self) -> std::collections::BTreeSet<PathBuf> {
        let mut set = std::collections::BTreeSet::new();
        for dir in [&self.root, &self.runtime_root] {
            walk(dir, 6, &mut |p| {
                set.insert(p.to_path_buf());
            });
        }
        set
    }

    // -----------------------------------------------------------------------------------
    // Cleanup
    // -----------------------------------------------------------------------------------

    fn cleanup(&self) {
        self.kill9();
        let cli = rrun_cli();
        for (root, id) in rrun_state_dirs(&self.runtime_root) {
            let mut cmd = Command::new(&cli);
            cmd.arg("--root")
                .arg(&root)
                .args(["delete", "--force"])
                .arg(&id)
                .stdin(Stdio::null());
            let out = run_with_timeout(cmd, scaled(Duration::from_secs(20)));
            if !out.status.success() {
                eprintln!(
                    "cleanup: rrun --root {} delete --force {id}: {}",
                    root.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
        }
        for _ in 0..100 {
            let pids = self.test_processes(None);
            if pids.is_empty() {
                break;
            }
            for p in pids {
                // SAFETY: plain kill(2) of a process of this test.
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unmount_all_under(&self.base);
        remove_cgroups(&self.cgroup_parent);
        // The shared parent goes too once no test uses it (rmdir of a busy one fails).
        for d in cgroup_dirs(crate::CGROUP_PARENT) {
            let _ = fs::remove_dir(&d);
        }
    }

    /// Processes of this test (but `except`): `RRUN_TEST_ID=<name>` in their environment,
    /// one of the test's dirs in their command line, or in one of its cgroups.
    pub fn test_processes(&self, except: Option<i32>) -> Vec<i32> {
        let me = std::process::id() as i32;
        let mut pids: HashSet<i32> = pids_with_env(&self.name).into_iter().collect();
        let needle = self.base.display().to_string();
        if let Ok(rd) = fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
                    continue;
                };
                if let Ok(cl) = fs::read(e.path().join("cmdline")) {
                    if String::from_utf8_lossy(&cl).contains(&needle) {
                        pids.insert(pid);
                    }
                }
            }
        }
        for d in cgroup_dirs(&self.cgroup_parent) {
            collect_cgroup_procs(&d, &mut pids);
        }
        pids.remove(&me);
        if let Some(x) = except {
            pids.remove(&x);
        }
        let mut v: Vec<i32> = pids.into_iter().collect();
        v.sort();
        v
    }

    /// What is left of the test's pods and containers (empty when nothing): mounts
    /// under its dirs, rrun state dirs, cgroups below its parent, processes other than
    /// the server, paths under the server's dirs named after a removed pod or container.
    pub fn leftovers(&self) -> Vec<String> {
        let mut left = Vec::new();
        for m in mounts_under(&self.base) {
            left.push(format!("mount {m}"));
        }
        for (root, id) in rrun_state_dirs(&self.runtime_root) {
            left.push(format!("rrun state {}/{id}", root.display()));
        }
        for d in cgroup_dirs(&self.cgroup_parent) {
            if let Ok(rd) = fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        left.push(format!("cgroup {}", e.path().display()));
                    }
                }
            }
        }
        for p in self.test_processes(self.server_pid()) {
            let cl = fs::read(format!("/proc/{p}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            left.push(format!("process {p}: {cl}"));
        }
        let ids = self.ids();
        for dir in [&self.root, &self.runtime_root] {
            walk(dir, 6, &mut |p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if ids.iter().any(|id| name.contains(id.as_str())) {
                    left.push(format!("path {}", p.display()));
                }
            });
        }
        left
    }
}

impl Drop for CriServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.stderr_tail(150));
        }
        self.cleanup();
        let left = mounts_under(&self.base);
        if !left.is_empty() {
            // Never recurse into a mount (it could be a bind of something outside).
            if let Some(tmp) = self.tmp.take() {
                eprintln!(
                    "cleanup: mounts left under {} ({left:?}): not removing it",
                    tmp.keep().display()
                );
            }
        } else if std::env::var_os("RRUN_TEST_KEEP").is_some() {
            if let Some(tmp) = self.tmp.take() {
                eprintln!("RRUN_TEST_KEEP: leaving {}", tmp.keep().display());
            }
        } else if let Some(tmp) = self.tmp.take() {
            if let Err(e) = tmp.close() {
                eprintln!("cleanup: removing {}: {e}", self.base.display());
            }
        }
    }
}

/// Panics (listing them) unless the server left nothing of its pods and containers:
/// waits up to 10 s (scaled) for exiting processes and late unmounts.
#[track_caller]
pub fn assert_no_leftovers(server: &CriServer) {
    let timeout = scaled(Duration::from_secs(10));
    let deadline = Instant::now() + timeout;
    loop {
        let left = server.leftovers();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            panic!("left behind after {timeout:?}:\n  {}", left.join("\n  "));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// The kubelet's default namespace options: network and IPC of the pod, PID per
/// container.
pub fn pod_namespaces() -> api::NamespaceOption {
    api::NamespaceOption {
        network: api::NamespaceMode::Pod as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        target_id: String::new(),
        userns_options: None,
    }
}

pub fn image_spec(image: &str) -> api::ImageSpec {
    api::ImageSpec {
        image: image.into(),
        ..Default::default()
    }
}

pub fn kv(k: &str, v: &str) -> api::KeyValue {
    api::KeyValue {
        key: k.into(),
        value: v.into(),
    }
}

/// A gRPC status for a message: code and text.
pub fn show(s: &Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Panics unless `r` is an error with `code`; returns the status.
#[track_caller]
pub fn expect_code<T: std::fmt::Debug>(r: Result<T, Status>, code: Code, what: &str) -> Status {
    match r {
        Ok(v) => panic!("{what}: succeeded ({v:?}), expected {code:?}"),
        Err(s) => {
            assert_eq!(
                s.code(),
                code,
                "{what}: expected {code:?}, got {}",
                show(&s)
            );
            assert!(
                !s.message().is_empty(),
                "{what}: {code:?} with an empty message"
            );
            s
        }
    }
}

/// `readlink /proc/<pid>/ns/<kind>`.
pub fn ns_of(pid: i32, kind: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{kind}: {e}"))
        .display()
        .to_string()
}

/// Is this a cgroup v2 (unified) host?
pub fn is_cgroup2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The cgroup directory of `pid` for `controller` (v1: its hierarchy; v2: the unified
/// cgroup), from `/proc/<pid>/cgroup` and the mount table.
pub fn cgroup_dir(pid: i32, controller: &str) -> PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/cgroup: {e}"));
    let mounts = parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    let v2 = is_cgroup2();
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (it.next(), it.next(), it.next()) else {
            continue;
        };
        let path = path.trim_start_matches('/');
        if v2 {
            if ctrls.is_empty() {
                let m = mounts
                    .iter()
                    .find(|m| m.fstype == "cgroup2")
                    .map(|m| m.mount_point.clone())
                    .unwrap_or_else(|| "/sys/fs/cgroup".into());
                return Path::new(&m).join(path);
            }
        } else if ctrls.split(',').any(|c| c == controller) {
            let m = mounts
                .iter()
                .find(|m| {
                    m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == controller)
                })
                .map(|m| m.mount_point.clone())
                .unwrap_or_else(|| format!("/sys/fs/cgroup/{controller}"));
            return Path::new(&m).join(path);
        }
    }
    panic!("no {controller} cgroup for pid {pid} in {text}");
}

/// A cgroup file of `pid` (trimmed), e.g. `("memory", "memory.max")`.
pub fn cgroup_file(pid: i32, controller: &str, file: &str) -> String {
    let p = cgroup_dir(pid, controller).join(file);
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// The memory limit of `pid`'s cgroup in bytes (`None`: unlimited), v1 or v2.
pub fn memory_limit(pid: i32) -> Option<u64> {
    let s = if is_cgroup2() {
        cgroup_file(pid, "memory", "memory.max")
    } else {
        cgroup_file(pid, "memory", "memory.limit_in_bytes")
    };
    if s == "max" {
        return None;
    }
    let v: u64 = s
        .parse()
        .unwrap_or_else(|e| panic!("memory limit {s:?}: {e}"));
    // v1 says "unlimited" with a huge page-rounded number.
    (v < (1u64 << 62)).then_some(v)
}

/// `(quota, period)` of `pid`'s cpu cgroup in microseconds (quota `None`: unlimited).
pub fn cpu_quota(pid: i32) -> (Option<i64>, u64) {
    if is_cgroup2() {
        let s = cgroup_file(pid, "cpu", "cpu.max");
        let mut it = s.split_whitespace();
        let q = it.next().unwrap_or("max");
        let p = it.next().and_then(|p| p.parse().ok()).unwrap_or(100_000);
        (q.parse().ok(), p)
    } else {
        let q: i64 = cgroup_file(pid, "cpu", "cpu.cfs_quota_us")
            .parse()
            .expect("cpu.cfs_quota_us");
        let p: u64 = cgroup_file(pid, "cpu", "cpu.cfs_period_us")
            .parse()
            .expect("cpu.cfs_period_us");
        ((q >= 0).then_some(q), p)
    }
}

/// One line of a CRI log file.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub time: String,
    pub stream: String,
    /// `P` (partial) or `F` (full).
    pub tag: String,
    pub text: String,
}

/// Parses a CRI log (`<RFC3339Nano> <stdout|stderr> <P|F> <text>` lines); panics on a
/// malformed line.
pub fn parse_cri_log(text: &str) -> Vec<LogLine> {
    text.lines()
        .map(|l| {
            let mut it = l.splitn(4, ' ');
            let (Some(time), Some(stream), Some(tag)) = (it.next(), it.next(), it.next()) else {
                panic!("CRI log line without time, stream and tag: {l:?}");
            };
            let text = it.next().unwrap_or("").to_string();
            assert!(
                is_rfc3339(time),
                "CRI log line: {time:?} is not an RFC 3339 timestamp: {l:?}"
            );
            assert!(
                stream == "stdout" || stream == "stderr",
                "CRI log line: stream {stream:?}: {l:?}"
            );
            assert!(tag == "P" || tag == "F", "CRI log line: tag {tag:?}: {l:?}");
            LogLine {
                time: time.into(),
                stream: stream.into(),
                tag: tag.into(),
                text,
            }
        })
        .collect()
}

/// `2006-01-02T15:04:05.999999999Z07:00`-shaped (the fraction is optional).
pub fn is_rfc3339(t: &str) -> bool {
    let b = t.as_bytes();
    if b.len() < 20 {
        return false;
    }
    let digits = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_digit);
    if !(digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19))
    {
        return false;
    }
    let mut rest = &t[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 || n > 9 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z"
        || (rest.len() == 6
            && (rest.starts_with('+') || rest.starts_with('-'))
            && rest.as_bytes()[3] == b':')
}

/// The log file's complete lines ("" while it does not exist): a record being written
/// (no newline yet) is left out.
pub fn read_log(path: &Path) -> String {
    let mut b = fs::read(path).unwrap_or_default();
    let end = b.iter().rposition(|c| *c == b'\n').map_or(0, |i| i + 1);
    b.truncate(end);
    String::from_utf8_lossy(&b).into_owned()
}

/// Polls the CRI log at `path` until one of its lines' text is `needle`; panics after
/// `timeout` (scaled). Returns the parsed log.
pub async fn wait_log_line(path: &Path, needle: &str, timeout: Duration) -> Vec<LogLine> {
    let timeout = scaled(timeout);
    let deadline = Instant::now() + timeout;
    loop {
        let text = read_log(path);
        let lines = parse_cri_log(&text);
        if lines.iter().any(|l| l.text == needle) {
            return lines;
        }
        if Instant::now() > deadline {
            panic!(
                "no line {needle:?} in {} within {timeout:?}; it has:\n{text}",
                path.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cond` every 50 ms; panics with `what` after `timeout` (scaled).
pub async fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let timeout = scaled(timeout);
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asks `fetch` every 200 ms until `done` holds for its answer or `timeout` (scaled) has
/// passed; returns the last answer either way, for the caller's assertions to judge.
pub async fn poll_answer<T, F, Fut>(timeout: Duration, mut fetch: F, done: impl Fn(&T) -> bool) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = Instant::now() + scaled(timeout);
    loop {
        let answer = fetch().await;
        if done(&answer) || Instant::now() > deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The cumulative CPU time of a CRI `CpuUsage`, 0 when absent.
pub fn cpu_usage_ns(cpu: Option<&api::CpuUsage>) -> u64 {
    cpu.and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value)
        .unwrap_or(0)
}

/// Is `pid` alive (and not a zombie)?
pub fn pid_alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X"),
        Err(_) => false,
    }
}

/// Runs `cmd` with stdout/stderr captured; kills it and reports a timeout as a failed
/// output after `timeout`.
fn run_with_timeout(mut cmd: Command, timeout: Duration) -> std::process::Output {
    let dir = std::env::temp_dir();
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let out_p = dir.join(format!("rrun-cri-it-{}-{n}.out", std::process::id()));
    let err_p = dir.join(format!("rrun-cri-it-{}-{n}.err", std::process::id()));
    let (Ok(out), Ok(err)) = (File::create(&out_p), File::create(&err_p)) else {
        panic!("cannot create capture files in {}", dir.display());
    };
    cmd.stdout(out).stderr(err);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = fs::read(&out_p).unwrap_or_default();
    let mut stderr = fs::read(&err_p).unwrap_or_default();
    if Instant::now() > deadline {
        stderr.extend_from_slice(format!("\n(killed after {timeout:?})").as_bytes());
    }
    let _ = fs::remove_file(&out_p);
    let _ = fs::remove_file(&err_p);
    std::process::Output {
        status,
        stdout,
        stderr,
    }
}

/// `(rrun root, container id)` of every rrun state dir (a dir with `state.json`, or an
/// `exec.fifo` of a half-made one) up to 3 levels below `dir`.
fn rrun_state_dirs(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut found = Vec::new();
    walk(dir, 4, &mut |p| {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "state.json" || name == "cgroup.json" || name == "exec.fifo" {
            if let (Some(cdir), Some(root)) = (p.parent(), p.parent().and_then(Path::parent)) {
                if let Some(id) = cdir.file_name().and_then(|n| n.to_str()) {
                    found.push((root.to_path_buf(), id.to_string()));
                }
            }
        }
    });
    found.sort();
    found.dedup();
    found
}

/// Calls `f` on every path below `dir` (not following symlinks, not entering other
/// mounts' pinned files), `depth` levels deep.
fn walk(dir: &Path, depth: usize, f: &mut dyn FnMut(&Path)) {
    if depth == 0 {
        return;
    }
    let Ok(rd) = fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        f(&p);
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&p, depth - 1, f);
        }
    }
}

fn collect_cgroup_procs(dir: &Path, pids: &mut HashSet<i32>) {
    if let Ok(text) = fs::read_to_string(dir.join("cgroup.procs")) {
        pids.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_cgroup_procs(&e.path(), pids);
            }
        }
    }
}

/// `/proc/<pid>/status` of a process (a container's, seen from the host).
pub fn proc_status(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"))
}

/// A tokio runtime for a test that is not `#[tokio::test]`.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a tokio runtime")
        .block_on(f)
}
