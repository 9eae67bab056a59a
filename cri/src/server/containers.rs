//! Containers: CreateContainer (the bundle, the monitor that runs `rrun create`), start,
//! stop, removal, status, listing, resource updates, log reopening and the event stream.

use super::pods::sandbox_status;
use super::*;

impl Cri {
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

    pub(super) fn target_pid(&self, config: &api::ContainerConfig) -> Result<Option<i32>, Error> {
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

    pub(super) async fn make_container(
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
    pub(super) fn write_bundle(
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
    pub(super) async fn spawn_monitor(&self, rec: &ContainerRecord) -> Result<i32, Error> {
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
    pub(super) fn destroy_container_files(&self, rec: &ContainerRecord) {
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

    pub(super) fn container(&self, id: &str) -> Result<ContainerRecord, Error> {
        check_id("container", id)?;
        let st = self.state();
        find_by_prefix(&st.containers, id)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| Error::not_found(format!("container {id:?} not found")))
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

    pub(super) fn stop_signal(&self, rec: &ContainerRecord) -> nix::sys::signal::Signal {
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

    pub(super) async fn kill(
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

    pub(super) fn emit(&self, rec: &ContainerRecord, typ: api::ContainerEventType) {
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

    /// Hugepage limits where no hugetlb controller can take them: dropped with a warning,
    /// or refused, by `tolerate_missing_hugetlb_controller` (containerd's rule).
    pub(super) fn hugepage_policy(
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

pub(super) fn image_spec(c: &ContainerRecord) -> api::ImageSpec {
    let mut spec = c.config.image.clone().unwrap_or_default();
    if spec.image.is_empty() {
        spec.image = c.image_ref.clone();
    }
    spec
}

pub(super) fn container_status(c: &ContainerRecord, phase: ContainerPhase) -> api::ContainerStatus {
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
