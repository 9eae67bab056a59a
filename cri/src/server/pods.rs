//! Pod sandboxes: RunPodSandbox (pinned namespaces, the pod cgroup, the CNI ADD), stop,
//! removal, status and listing.

use super::*;

impl Cri {
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

    pub(super) fn make_sandbox(
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
    pub(super) fn pod_init_command(&self) -> std::process::Command {
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
    pub(super) fn small_monitor_binary(&self) -> Option<PathBuf> {
        let small = self
            .inner
            .config
            .exe
            .with_file_name(monitor::MONITOR_BINARY);
        small.is_file().then_some(small)
    }

    /// Removes what the pod holds on the machine: its pid 1, namespaces, shm, cgroup,
    /// directories.
    pub(super) fn destroy_sandbox_files(&self, rec: &SandboxRecord) {
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

    pub(super) fn sandbox(&self, id: &str) -> Result<SandboxRecord, Error> {
        check_id("pod sandbox", id)?;
        let st = self.state();
        find_by_prefix(&st.sandboxes, id)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| Error::not_found(format!("pod sandbox {id:?} not found")))
    }

    pub(super) fn sandbox_containers(&self, sandbox_id: &str) -> Vec<String> {
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
}

pub(super) fn make_pod_cgroup(
    parent: &str,
) -> Result<Option<rrun::pod_cgroup::CgroupRecord>, Error> {
    match rrun::pod_cgroup::PodCgroup::create(Path::new(parent)) {
        Ok(cg) => Ok(Some(cg.record().clone())),
        Err(rrun::pod_cgroup::CgroupError::Exists(_)) => Ok(None),
        Err(e) => Err(Error::invalid_argument(format!(
            "cgroup_parent {parent:?}: {e}"
        ))),
    }
}

pub(super) fn sandbox_state(s: &SandboxRecord) -> api::PodSandboxState {
    match s.state {
        SandboxState::Ready => api::PodSandboxState::SandboxReady,
        SandboxState::NotReady => api::PodSandboxState::SandboxNotready,
    }
}

pub(super) fn sandbox_status(s: &SandboxRecord) -> api::PodSandboxStatus {
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
