//! The runc-compatible operations on containers, built from the modules below. The CLI is
//! a thin layer over this; so will the CRI server be.

use crate::cgroups::{self, Event, Manager, OomCount, Stats};
use crate::error::{Context, Error, Result};
use crate::hooks::{self, HookKind};
use crate::namespaces::{self, NamespacePlan};
use crate::process::{self, ExecConfig, InitConfig};
use crate::spec;
use crate::state::{self, ContainerDir, ContainerRecord, StateRoot, Status};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Options of `create` (and `run`).
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: u32,
    pub no_pivot: bool,
}

/// Options of `exec`.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: u32,
}

/// Entry point of every operation: the state root (`--root`).
pub struct Runtime {
    root: StateRoot,
}

impl Runtime {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Runtime {
            root: StateRoot::new(root),
        }
    }

    /// The ids of the containers under the state directory.
    pub fn ids(&self) -> Result<Vec<String>> {
        self.root.list()
    }

    /// The process a container was created with (`exec` starts from it, as runc's).
    pub fn process(&self, id: &str) -> Result<Process> {
        Ok(self.load(id)?.1.spec.process().clone().unwrap_or_default())
    }

    /// A container's status (`creating`, `created`, `running`, `paused`, `stopped`).
    pub fn status(&self, id: &str) -> Result<Status> {
        Ok(self.load(id)?.2)
    }

    /// Creates the container: namespaces, mounts, devices, process attributes, all set up,
    /// its init waiting on the exec fifo. On failure nothing of it remains.
    pub fn create(&self, opts: &CreateOptions) -> Result<i32> {
        let (bundle, spec) = load_bundle(&opts.bundle)?;
        self.create_from(opts, &bundle, &spec)
    }

    /// [`Runtime::create`] for a bundle the caller has loaded with [`load_bundle`] already.
    pub fn create_from(&self, opts: &CreateOptions, bundle: &Path, spec: &Spec) -> Result<i32> {
        crate::security::lsm::check(spec)?;
        let terminal = spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false);
        match (terminal, &opts.console_socket) {
            (true, None) => return Err(Error::Invalid(
                "process.terminal is true: a --console-socket is needed to receive the terminal"
                    .into(),
            )),
            (false, Some(_)) => {
                return Err(Error::Invalid(
                    "--console-socket given but process.terminal is false".into(),
                ))
            }
            _ => {}
        }
        let dir = self.root.create_dir(&opts.id)?;
        let result = self.create_in(&dir, opts, bundle, spec);
        if result.is_err() {
            let _ = remove_half_made(&dir);
        }
        result
    }

    fn create_in(
        &self,
        dir: &ContainerDir,
        opts: &CreateOptions,
        bundle: &Path,
        spec: &Spec,
    ) -> Result<i32> {
        let fifo = dir.fifo_path();
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o622))
            .ctx(|| format!("mkfifo {}", fifo.display()))?;
        // World-writable so the init can still open it after switching to the container's user.
        std::fs::set_permissions(&fifo, std::fs::Permissions::from_mode(0o622))
            .ctx(|| format!("chmod {}", fifo.display()))?;
        let console = opts
            .console_socket
            .as_deref()
            .map(crate::tty::connect_console_socket)
            .transpose()?;
        let mut record = ContainerRecord {
            id: opts.id.clone(),
            pid: 0,
            pid_start_time: 0,
            bundle: bundle.to_path_buf(),
            rootfs: spec::rootfs_path(spec, bundle),
            created: state::now_rfc3339(),
            owner: String::new(),
            annotations: spec.annotations().clone().unwrap_or_default(),
            spec: spec.clone(),
            cgroup: None,
        };
        // Made and limited before the init is cloned; the init is moved in before it may
        // go past its first barrier (so before it makes its cgroup namespace).
        let cgroup = make_cgroup(dir, spec, &opts.id)?;
        record.cgroup = Some(cgroup.record().clone());
        let cfg = InitConfig {
            spec,
            bundle: bundle.to_path_buf(),
            rootfs: record.rootfs.clone(),
            fifo,
            console,
            preserve_fds: opts.preserve_fds,
            no_pivot: opts.no_pivot,
            namespaces: NamespacePlan::from_spec(spec)?,
            seccomp: build_seccomp(spec)?,
        };
        let pid = process::spawn_init(&cfg, cgroup.as_ref(), |pid| {
            // The init has made the container's /dev: the device rules can go in now.
            if let (_, Some(devices)) = cgroups::split_devices(cgroups::resources_of(spec)) {
                cgroup.apply(&devices)?;
            }
            record.pid = pid;
            record.pid_start_time = crate::procfs::process_start_time(pid).unwrap_or(0);
            // Saved before the hooks run, so a hook that asks `rrun state` finds it.
            dir.save(&record)?;
            let state_json = state::oci_state(&record, Status::Creating).to_string();
            hooks::run_all(
                HookKind::Prestart,
                &HookKind::Prestart.of(spec),
                state_json.as_bytes(),
            )?;
            hooks::run_all(
                HookKind::CreateRuntime,
                &HookKind::CreateRuntime.of(spec),
                state_json.as_bytes(),
            )?;
            Ok((
                state_json,
                state::oci_state(&record, Status::Created).to_string(),
            ))
        })?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid)?;
        }
        Ok(pid)
    }

    /// Lets the init `execve` the user's program; runs the poststart hooks.
    pub fn start(&self, id: &str) -> Result<()> {
        let dir = self.root.open(id)?;
        let _lock = dir.lock()?;
        let record = dir.load()?;
        let status = dir.status(&record);
        if status != Status::Created {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                action: "start",
                wanted: "created",
            });
        }
        release_init(&dir, &record)?;
        let _ = std::fs::remove_file(dir.fifo_path());
        let state_json = state::oci_state(&record, Status::Running).to_string();
        // A failing poststart hook is reported, but the container keeps running (runtime-spec).
        hooks::run_all_warning(
            HookKind::Poststart,
            &HookKind::Poststart.of(&record.spec),
            state_json.as_bytes(),
        );
        Ok(())
    }

    pub(crate) fn load(&self, id: &str) -> Result<(ContainerDir, ContainerRecord, Status)> {
        let dir = self.root.open(id)?;
        let record = dir.load()?;
        let status = dir.status(&record);
        Ok((dir, record, status))
    }

    /// The runtime-spec state document.
    pub fn state(&self, id: &str) -> Result<serde_json::Value> {
        let (_, record, status) = self.load(id)?;
        Ok(state::oci_state(&record, status))
    }

    pub fn list(&self) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for id in self.root.list()? {
            // A container deleted while we list is simply not listed.
            if let Ok(v) = self.state(&id) {
                out.push(v);
            }
        }
        Ok(out)
    }

    pub fn kill(&self, id: &str, signal: Signal, all: bool) -> Result<()> {
        let (_, record, status) = self.load(id)?;
        // `--all` is also for a stopped container, as in runc: the init of a container
        // without its own pid namespace can exit before its children, and containerd's
        // shim then runs `kill --all` to end what is left in the cgroup.
        if status == Status::Stopped && !all {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                action: "kill",
                wanted: "created or running",
            });
        }
        if all {
            if let Some(c) = &record.cgroup {
                return Ok(cgroups::open(c).kill_all(signal)?);
            }
            for pid in container_pids(&record)? {
                let _ = kill(Pid::from_raw(pid), signal);
            }
            return Ok(());
        }
        kill(Pid::from_raw(record.pid), signal).ctx(|| format!("kill {} {signal}", record.pid))
    }

    /// Removes a stopped container (any container with `force`), running its poststop hooks.
    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let dir = match self.root.open(id) {
            Ok(d) => d,
            Err(Error::NotFound(_)) if force => {
                if let Some(raw) = self.root.open_raw(id)? {
                    remove_half_made(&raw)?;
                }
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let _lock = dir.lock()?;
        let record = match dir.load() {
            Ok(r) => r,
            // A state directory without readable state is a half-made container: with
            // --force it goes.
            Err(_) if force => return remove_half_made(&dir),
            Err(e) => return Err(e),
        };
        let status = dir.status(&record);
        match status {
            Status::Stopped => {}
            // A created container has not run anything: deleting it is always allowed.
            Status::Created => self.destroy(&record)?,
            _ if force => self.destroy(&record)?,
            _ => {
                return Err(Error::WrongState {
                    id: id.into(),
                    status: status.to_string(),
                    action: "delete",
                    wanted: "stopped (or use --force)",
                })
            }
        }
        if let Some(c) = &record.cgroup {
            let cg = cgroups::open(c);
            // Stragglers of a container without its own PID namespace die with it.
            let _ = cg.kill_all(Signal::SIGKILL);
            cg.destroy()?;
        }
        let state_json = state::oci_state(&record, Status::Stopped).to_string();
        hooks::run_all_warning(
            HookKind::Poststop,
            &HookKind::Poststop.of(&record.spec),
            state_json.as_bytes(),
        );
        dir.remove()?;
        Ok(())
    }

    /// Kills every process of the container and waits until the init is gone.
    fn destroy(&self, record: &ContainerRecord) -> Result<()> {
        if let Some(c) = &record.cgroup {
            let _ = cgroups::open(c).kill_all(Signal::SIGKILL);
        }
        for pid in container_pids(record)? {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = kill(Pid::from_raw(record.pid), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(10);
        while crate::procfs::process_start_time(record.pid) == Some(record.pid_start_time) {
            // Our own child (run, or a caller that is the init's parent) must be reaped.
            let _ = nix::sys::wait::waitpid(
                Pid::from_raw(record.pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            );
            if Instant::now() > deadline {
                return Err(Error::Invalid(format!(
                    "container {} init {} did not die after SIGKILL",
                    record.id, record.pid
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Pids of the container's processes, as seen from the runtime.
    pub fn pids(&self, id: &str) -> Result<Vec<i32>> {
        let (_, record, status) = self.load(id)?;
        if status == Status::Stopped {
            return Ok(vec![]);
        }
        if let Some(c) = &record.cgroup {
            return Ok(cgroups::open(c).pids()?);
        }
        container_pids(&record)
    }

    /// Starts `process` in the container's namespaces. Returns its pid once it has exec'd.
    pub fn exec(&self, id: &str, process: &Process, opts: &ExecOptions) -> Result<i32> {
        let (_, record, status) = self.load(id)?;
        if status == Status::Stopped || status == Status::Paused {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                action: "exec",
                wanted: "created or running",
            });
        }
        spec::validate_process(process)?;
        crate::security::lsm::check_process(process)?;
        let terminal = process.terminal().unwrap_or(false);
        if terminal && opts.console_socket.is_none() {
            return Err(Error::Invalid("--tty needs a --console-socket".into()));
        }
        let console = opts
            .console_socket
            .as_deref()
            .map(crate::tty::connect_console_socket)
            .transpose()?;
        let types = record
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_ref())
            .map(|ns| ns.iter().map(|n| n.typ()).collect::<Vec<_>>())
            .unwrap_or_default();
        let ns = namespaces::open_process_namespaces(record.pid, types.into_iter())?;
        // The init must still be the one we made, now that we hold its namespaces.
        if crate::procfs::process_start_time(record.pid) != Some(record.pid_start_time) {
            return Err(Error::WrongState {
                id: id.into(),
                status: "stopped".into(),
                action: "exec",
                wanted: "running",
            });
        }
        let pid = process::spawn_exec(&ExecConfig {
            process,
            namespaces: ns,
            cgroup: record.cgroup.as_ref(),
            console,
            preserve_fds: opts.preserve_fds,
            seccomp: build_seccomp(&record.spec)?,
        })?;
        if let Some(p) = &opts.pid_file {
            write_pid_file(p, pid)?;
        }
        Ok(pid)
    }
}

/// Creates the container's cgroup, remembers it in the state directory at once (so a
/// `delete --force` after a crash finds it) and writes the config's limits.
fn make_cgroup(dir: &ContainerDir, spec: &Spec, id: &str) -> Result<Box<dyn Manager>> {
    let linux = spec.linux().as_ref();
    let cg = cgroups::create(linux.and_then(|l| l.cgroups_path().as_deref()), id)?;
    if let Err(e) = dir.save_cgroup(cg.record()) {
        let _ = cg.destroy();
        return Err(e);
    }
    // Device rules wait until the init has made the container's /dev (a deny-all rule
    // would forbid its mknods); runc too writes them once the rootfs is set up.
    let (res, _) = cgroups::split_devices(cgroups::resources_of(spec));
    cg.apply(&res)?;
    Ok(cg)
}

/// Removes a container directory whose state may be incomplete, with its cgroup.
fn remove_half_made(dir: &ContainerDir) -> Result<()> {
    if let Some(c) = dir.load_cgroup() {
        let cg = cgroups::open(&c);
        let _ = cg.kill_all(Signal::SIGKILL);
        cg.destroy()?;
    }
    dir.remove()
}

/// The container's seccomp filter, compiled now, in the runtime, so that a profile the
/// kernel or libseccomp cannot take fails here with nothing made.
fn build_seccomp(spec: &Spec) -> Result<Option<crate::security::seccomp::Filter>> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(crate::security::seccomp::build)
        .transpose()
}

/// The bundle's absolute path and its checked config.
pub fn load_bundle(bundle: &Path) -> Result<(PathBuf, Spec)> {
    let bundle = std::fs::canonicalize(bundle).ctx(|| format!("bundle {}", bundle.display()))?;
    let spec = spec::load_bundle(&bundle)?;
    Ok((bundle, spec))
}

/// Opens the exec fifo for reading, which lets the init go on, and waits for its byte. An
/// init that dies first gives end-of-file instead, and `start` fails rather than hangs.
fn release_init(dir: &ContainerDir, record: &ContainerRecord) -> Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::io::Read;
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let fifo_path = dir.fifo_path();
    let mut fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo_path)
        .ctx(|| format!("opening {}", fifo_path.display()))?;
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u8)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => {
                if crate::procfs::process_start_time(record.pid) != Some(record.pid_start_time) {
                    return Err(Error::Child(
                        "the container's init exited before it was started".into(),
                    ));
                }
                continue;
            }
            Ok(_) => {}
            Err(e) => return Err(e).ctx(|| "poll exec fifo".into()),
        }
        let mut buf = [0u8; 1];
        match fifo.read(&mut buf) {
            Ok(1) => return Ok(()),
            Ok(_) => {
                return Err(Error::Child(
                    "the container's init exited during start (a startContainer hook failed?)"
                        .into(),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e).ctx(|| "reading exec fifo".into()),
        }
    }
}

/// Every process of the container: with its own PID namespace, all processes in that
/// namespace; otherwise the init and its descendants.
fn container_pids(record: &ContainerRecord) -> Result<Vec<i32>> {
    if crate::procfs::process_start_time(record.pid) != Some(record.pid_start_time) {
        return Ok(vec![]);
    }
    let own_pid_ns = record
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::Pid));
    let ns_of = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let init_ns = ns_of(record.pid);
    let mut procs: Vec<(i32, i32)> = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .ctx(|| "listing /proc".into())?
        .flatten()
    {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Some(ppid) = parent_pid(pid) else {
            continue;
        };
        procs.push((pid, ppid));
    }
    let mut out: Vec<i32> =
        if own_pid_ns && init_ns.is_some() && init_ns != ns_of(std::process::id() as i32) {
            procs
                .iter()
                .map(|(p, _)| *p)
                .filter(|p| ns_of(*p) == init_ns)
                .collect()
        } else {
            let mut set = vec![record.pid];
            let mut grew = true;
            while grew {
                grew = false;
                for (p, pp) in &procs {
                    if set.contains(pp) && !set.contains(p) {
                        set.push(*p);
                        grew = true;
                    }
                }
            }
            set
        };
    out.sort_unstable();
    Ok(out)
}

fn parent_pid(pid: i32) -> Option<i32> {
    crate::procfs::stat(pid).map(|s| s.ppid)
}

fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    crate::atomic_file::write(
        path,
        pid.to_string().as_bytes(),
        0o644,
        crate::atomic_file::Durability::Volatile,
    )
    .ctx(|| format!("writing pid file {}", path.display()))
}

/// Used by `run`: the console socket pair for a foreground terminal that we proxy ourselves.
pub fn console_pair(dir: &Path) -> Result<(PathBuf, std::os::unix::net::UnixListener)> {
    let path = dir.join("console.sock");
    let _ = std::fs::remove_file(&path);
    let l = std::os::unix::net::UnixListener::bind(&path)
        .ctx(|| format!("binding {}", path.display()))?;
    Ok((path, l))
}

/// Accepts the one connection on a console socket and takes the pty master from it.
pub fn receive_master(listener: &std::os::unix::net::UnixListener) -> Result<std::os::fd::OwnedFd> {
    let (stream, _): (UnixStream, _) = listener
        .accept()
        .ctx(|| "accepting console connection".into())?;
    crate::tty::recv_fd(&stream)
}

/// Resource control of a live container: pause/resume, update, stats and events.
impl Runtime {
    fn cgroup_of(
        &self,
        id: &str,
        action: &'static str,
    ) -> Result<(ContainerDir, ContainerRecord, Status, Box<dyn Manager>)> {
        let (dir, record, status) = self.load(id)?;
        let Some(c) = &record.cgroup else {
            return Err(Error::Invalid(format!(
                "container {id:?} has no cgroup: {action} needs one"
            )));
        };
        let cg = cgroups::open(c);
        Ok((dir, record, status, cg))
    }

    /// Freezes every process of the container (`state` then says `paused`).
    pub fn pause(&self, id: &str) -> Result<()> {
        let (dir, _, _, cg) = self.cgroup_of(id, "pause")?;
        let _lock = dir.lock()?;
        let status = dir.status(&dir.load()?);
        if status != Status::Running && status != Status::Created {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                action: "pause",
                wanted: "running or created",
            });
        }
        Ok(cg.freeze()?)
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        let (dir, _, _, cg) = self.cgroup_of(id, "resume")?;
        let _lock = dir.lock()?;
        let status = dir.status(&dir.load()?);
        if status != Status::Paused {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                action: "resume",
                wanted: "paused",
            });
        }
        Ok(cg.thaw()?)
    }

    /// Writes `res` to the container's cgroup and keeps it in the saved config, so what
    /// `state.json` says stays what the kernel enforces.
    pub fn update(&self, id: &str, res: &oci_spec::runtime::LinuxResources) -> Result<()> {
        let (dir, _, _, cg) = self.cgroup_of(id, "update")?;
        let _lock = dir.lock()?;
        let mut record = dir.load()?;
        let status = dir.status(&record);
        if status == Status::Stopped {
            return Err(Error::WrongState {
                id: id.into(),
                status: status.to_string(),
                action: "update",
                wanted: "created, running or paused",
            });
        }
        cg.apply(res)?;
        let mut linux = record.spec.linux().clone().unwrap_or_default();
        let merged = cgroups::merge_resources(linux.resources().as_ref(), res)?;
        linux.set_resources(Some(merged));
        record.spec.set_linux(Some(linux));
        dir.save(&record)
    }

    /// The container's cgroup counters (`rrun events --stats` prints them as an
    /// [`Event::Stats`]).
    pub fn stats(&self, id: &str) -> Result<Stats> {
        let (_, _, _, cg) = self.cgroup_of(id, "stats")?;
        Ok(cg.stats()?)
    }

    /// How many processes of the container the kernel's OOM killer has killed; tells an
    /// OOM kill from another SIGKILL (valid until `delete`).
    pub fn oom_kills(&self, id: &str) -> Result<u64> {
        let (_, _, _, cg) = self.cgroup_of(id, "oom count")?;
        Ok(cg.oom_kills()?)
    }

    /// Streams events until the container stops: [`Event::Oom`] when the OOM killer
    /// strikes (seen within 50 ms), and [`Event::Stats`] every `interval`. `emit` returning
    /// an error ends the stream.
    pub fn events(
        &self,
        id: &str,
        interval: Duration,
        mut emit: impl FnMut(&Event) -> Result<()>,
    ) -> Result<()> {
        let (dir, record, _, cg) = self.cgroup_of(id, "events")?;
        let mut ooms = cg.oom_kills()?;
        let mut next_stats = Instant::now() + interval;
        loop {
            let n = cg.oom_kills()?;
            if n > ooms {
                emit(&Event::Oom {
                    id: id.to_string(),
                    data: OomCount { oom_kill: n },
                })?;
                ooms = n;
            }
            if dir.status(&record) == Status::Stopped {
                return Ok(());
            }
            if Instant::now() >= next_stats {
                emit(&Event::Stats {
                    id: id.to_string(),
                    data: Box::new(cg.stats()?),
                })?;
                next_stats += interval;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
