//! The child's half: what runs in the cloned process, from the new namespaces to
//! `execve` of the user's program. Any error is sent to the parent as text and the child
//! exits; nothing here returns to the runtime's code.

use super::sync::{Channel, Message};
use super::{ExecConfig, InitConfig};
use crate::error::{Context, Error, Result};
use crate::hooks::{self, HookKind};
use crate::namespaces;
use crate::rootfs::{self, RootfsContext};
use crate::security::seccomp::Filter;
use crate::security::{self, CapabilitySets};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::Signal;
use nix::unistd::{setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, PosixRlimitType, Process};
use std::convert::Infallible;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

pub(super) fn container_main(
    cfg: &InitConfig,
    chan: Channel,
    placement: crate::cgroups::Placement,
    barriers: super::Barriers,
) -> ! {
    let err = match container_setup(cfg, &chan, placement, barriers) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = chan.send(&Message::Failed(err.to_string()));
    exit_now(1)
}

pub(super) fn exec_main(
    cfg: &ExecConfig,
    chan: Channel,
    placement: crate::cgroups::Placement,
) -> ! {
    let err = match exec_setup(cfg, &chan, placement) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    let _ = chan.send(&Message::Failed(err.to_string()));
    exit_now(1)
}

fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process at once without running the runtime's atexit work,
    // which belongs to the parent we were cloned from.
    unsafe { libc::_exit(code) }
}

fn container_setup(
    cfg: &InitConfig,
    chan: &Channel,
    placement: crate::cgroups::Placement,
    barriers: super::Barriers,
) -> Result<Infallible> {
    let spec = cfg.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Invalid("config has no process".into()))?;
    unblock_all_signals()?;
    let plan = &cfg.namespaces;
    let own_user_ns =
        plan.creates(LinuxNamespaceType::User) || plan.joins(LinuxNamespaceType::User);
    protect_runtime_binary(own_user_ns)?;
    if barriers.proceed {
        chan.wait_for(Message::Proceed)?;
    }
    // Into the container's v1 cgroups before anything else (the v2 one we were born in).
    placement.join_v1_self()?;
    drop(placement);
    if plan.creates(LinuxNamespaceType::User) {
        // Become the mapped root, so what we create is owned by the container's root.
        setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
            .ctx(|| "setresgid(0) in the new user namespace".into())?;
        setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
            .ctx(|| "setresuid(0) in the new user namespace".into())?;
    }
    plan.join_in_child()?;
    if plan.creates(LinuxNamespaceType::Cgroup) {
        namespaces::unshare_cgroup()?;
    }
    if plan.creates(LinuxNamespaceType::Time) {
        namespaces::enter_new_time_namespace(&namespaces::time_offsets(spec))?;
    }
    // Modes in the config are exact; the process's own umask is set just before exec.
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());

    if plan.creates(LinuxNamespaceType::Uts) {
        if let Some(h) = spec.hostname() {
            nix::unistd::sethostname(h).ctx(|| format!("sethostname {h:?}"))?;
        }
        if let Some(d) = spec.domainname() {
            set_domainname(d)?;
        }
    }

    if !plan.creates(LinuxNamespaceType::Mount) && !plan.joins(LinuxNamespaceType::Mount) {
        return Err(Error::Invalid(
            "a container needs a mount namespace (add {\"type\": \"mount\"} to linux.namespaces)"
                .into(),
        ));
    }
    let in_user_ns = plan.creates(LinuxNamespaceType::User) || plan.joins(LinuxNamespaceType::User);
    let ctx = RootfsContext {
        spec,
        rootfs: &cfg.rootfs,
        bundle: &cfg.bundle,
        in_user_ns,
        new_cgroup_ns: plan.creates(LinuxNamespaceType::Cgroup),
    };
    rootfs::prepare_propagation(spec)?;
    rootfs::bind_rootfs(spec, &cfg.rootfs)?;
    rootfs::mount_all(&ctx)?;

    // Held across pivot_root, after which the state directory is out of reach by path.
    let fifo = nix::fcntl::open(
        &cfg.fifo,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ctx(|| format!("opening {}", cfg.fifo.display()))?;

    let (create_state, start_state) = if barriers.hooks {
        chan.send(&Message::RunCreateRuntimeHooks)?;
        match chan.recv()? {
            Some(Message::HooksDone {
                create_container,
                start_container,
            }) => (create_container, start_container),
            Some(Message::Failed(reason)) => return Err(Error::Child(reason)),
            other => return Err(Error::Child(format!("protocol error: got {other:?}"))),
        }
    } else {
        // No hook of the container's will read them.
        (String::new(), String::new())
    };
    // createContainer hooks: in the container's namespaces, before pivot_root, so their
    // paths still resolve as on the host.
    hooks::run_all(
        HookKind::CreateContainer,
        &HookKind::CreateContainer.of(spec),
        create_state.as_bytes(),
    )?;

    rootfs::enter_root(&cfg.rootfs, cfg.no_pivot)?;

    if let Some(slave) = start_session(process, cfg.console.as_ref())? {
        rootfs::mount_console(&slave)?;
    }
    // Before finish(): it makes /proc/sys read-only.
    if let Some(sysctls) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
        namespaces::apply_sysctls(sysctls)?;
    }
    rootfs::finish(spec)?;

    let seccomp = cfg.seccomp.as_ref();
    let exe = prepare_process(process, seccomp)?;
    chan.send(&Message::Ready)?;

    // Block until `start` opens the other end of the fifo.
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let mut start = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .ctx(|| "opening exec fifo".into())?;
    hooks::run_all(
        HookKind::StartContainer,
        &HookKind::StartContainer.of(spec),
        start_state.as_bytes(),
    )?;
    start.write_all(b"0").ctx(|| "writing exec fifo".into())?;
    drop(start);
    drop(fifo);
    exec_process(&exe, process, cfg.preserve_fds, seccomp)
}

fn exec_setup(
    cfg: &ExecConfig,
    chan: &Channel,
    placement: crate::cgroups::Placement,
) -> Result<Infallible> {
    let process = cfg.process;
    placement.join_v1_self()?;
    drop(placement);
    unblock_all_signals()?;
    let own_user_ns = cfg
        .namespaces
        .iter()
        .any(|(t, _)| *t == LinuxNamespaceType::User);
    protect_runtime_binary(own_user_ns)?;
    for (typ, f) in &cfg.namespaces {
        if *typ == LinuxNamespaceType::Pid {
            continue;
        }
        nix::sched::setns(f, namespaces::clone_flag(*typ))
            .ctx(|| format!("joining {} namespace", namespaces::proc_name(*typ)))?;
    }
    start_session(process, cfg.console.as_ref())?;
    let exe = prepare_process(process, cfg.seccomp.as_ref())?;
    chan.send(&Message::Ready)?;
    let err = match exec_process(&exe, process, cfg.preserve_fds, cfg.seccomp.as_ref()) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    Err(err)
}

/// A new session; with a terminal, the pty (its master sent over the console socket) as
/// stdio and controlling terminal. Returns the pty slave's path.
fn start_session(process: &Process, console: Option<&UnixStream>) -> Result<Option<PathBuf>> {
    nix::unistd::setsid().ctx(|| "setsid".into())?;
    if !process.terminal().unwrap_or(false) {
        return Ok(None);
    }
    let socket =
        console.ok_or_else(|| Error::Invalid("terminal requested but no console socket".into()))?;
    let size = process
        .console_size()
        .as_ref()
        .map(|b| (b.height() as u16, b.width() as u16));
    crate::tty::setup_terminal(socket, size).map(Some)
}

/// Everything about the process that is the same for an init and an exec: working
/// directory, rlimits, oom score, then identity and privileges. Returns the resolved
/// executable, so a missing program is reported now and not after `start`.
fn prepare_process(process: &Process, seccomp: Option<&Filter>) -> Result<PathBuf> {
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).ctx(|| format!("chdir to cwd {}", cwd.display()))?;
    check_cwd_inside_root(cwd)?;
    for rl in process.rlimits().iter().flatten() {
        setrlimit(rlimit_resource(rl.typ())?, rl.soft(), rl.hard())
            .ctx(|| format!("setrlimit {:?}", rl.typ()))?;
    }
    if let Some(adj) = process.oom_score_adj() {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .ctx(|| format!("setting oom_score_adj to {adj}"))?;
    }
    let exe = find_executable(process)?;
    // Without no_new_privileges, loading a filter takes CAP_SYS_ADMIN: do it while we still
    // hold it (as runc does). With it, the filter goes on last, just before execve.
    if let Some(filter) = seccomp.filter(|_| !nnp(process)) {
        security::seccomp::load(filter)?;
    }
    let caps = CapabilitySets::from_spec(process.capabilities().as_ref())?;
    caps.drop_bounding()?;
    switch_user(process)?;
    caps.apply()?;
    if nnp(process) {
        security::set_no_new_privileges()?;
    }
    let umask = process.user().umask().unwrap_or(0o022);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    Ok(exe)
}

fn switch_user(process: &Process) -> Result<()> {
    let user = process.user();
    let uid = Uid::from_raw(user.uid());
    let gid = Gid::from_raw(user.gid());
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    // setgroups is refused in a user namespace whose setgroups file says "deny"; then
    // additional groups cannot be had, and asking for them is an error.
    let setgroups_allowed = std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true);
    if setgroups_allowed {
        nix::unistd::setgroups(&groups).ctx(|| format!("setgroups {groups:?}"))?;
    } else if !groups.is_empty() {
        return Err(Error::Invalid(
            "additionalGids need setgroups, which this user namespace denies".into(),
        ));
    }
    setresgid(gid, gid, gid).ctx(|| format!("setresgid {gid}"))?;
    security::keep_capabilities(true)?;
    setresuid(uid, uid, uid).ctx(|| format!("setresuid {uid}"))?;
    security::keep_capabilities(false)
}

fn rlimit_resource(t: PosixRlimitType) -> Result<Resource> {
    Ok(match t {
        PosixRlimitType::RlimitCpu => Resource::RLIMIT_CPU,
        PosixRlimitType::RlimitFsize => Resource::RLIMIT_FSIZE,
        PosixRlimitType::RlimitData => Resource::RLIMIT_DATA,
        PosixRlimitType::RlimitStack => Resource::RLIMIT_STACK,
        PosixRlimitType::RlimitCore => Resource::RLIMIT_CORE,
        PosixRlimitType::RlimitRss => Resource::RLIMIT_RSS,
        PosixRlimitType::RlimitNproc => Resource::RLIMIT_NPROC,
        PosixRlimitType::RlimitNofile => Resource::RLIMIT_NOFILE,
        PosixRlimitType::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        PosixRlimitType::RlimitAs => Resource::RLIMIT_AS,
        PosixRlimitType::RlimitLocks => Resource::RLIMIT_LOCKS,
        PosixRlimitType::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        PosixRlimitType::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        PosixRlimitType::RlimitNice => Resource::RLIMIT_NICE,
        PosixRlimitType::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        PosixRlimitType::RlimitRttime => Resource::RLIMIT_RTTIME,
    })
}

/// `args[0]` looked up in the process's own PATH, inside the container, as runc does.
fn find_executable(process: &Process) -> Result<PathBuf> {
    let args = process.args().as_deref().unwrap_or(&[]);
    let prog = args
        .first()
        .ok_or_else(|| Error::Invalid("process.args is empty".into()))?;
    let env = process.env().as_deref().unwrap_or(&[]);
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    resolve_in_path(prog, path_var)
}

pub(crate) fn resolve_in_path(prog: &str, path_var: &str) -> Result<PathBuf> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file())
            && nix::unistd::access(p, nix::unistd::AccessFlags::X_OK).is_ok()
    };
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        if executable(&p) {
            return Ok(p);
        }
        // Worded as runc words them: engines map the runtime's message to an exit code
        // by its text (podman: "no such file or directory" is 127, the rest 126).
        let why = match std::fs::metadata(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                format!("stat {prog}: no such file or directory")
            }
            Err(e) => format!("stat {prog}: {e}"),
            Ok(_) => "permission denied".to_string(),
        };
        return Err(Error::Invalid(format!(
            "exec: {prog:?}: {why} (in the container)"
        )));
    }
    for dir in path_var.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(prog);
        if executable(&p) {
            return Ok(p);
        }
    }
    Err(Error::Invalid(format!(
        "exec: {prog:?}: executable file not found in $PATH ({path_var})"
    )))
}

/// Closes every descriptor the runtime holds (on exec) but stdio and the preserved ones,
/// then becomes the user's program.
fn nnp(process: &Process) -> bool {
    process.no_new_privileges().unwrap_or(false)
}

fn exec_process(
    exe: &Path,
    process: &Process,
    preserve_fds: u32,
    seccomp: Option<&Filter>,
) -> Result<Infallible> {
    close_fds_on_exec(3 + preserve_fds)?;
    let cstr =
        |s: &str| CString::new(s).map_err(|_| Error::Invalid(format!("{s:?} contains a NUL byte")));
    let path = cstr(&exe.to_string_lossy())?;
    let args: Vec<CString> = process
        .args()
        .iter()
        .flatten()
        .map(|a| cstr(a))
        .collect::<Result<_>>()?;
    let env: Vec<CString> = process
        .env()
        .iter()
        .flatten()
        .map(|e| cstr(e))
        .collect::<Result<_>>()?;
    security::lsm::apply_exec_labels(process)?;
    if let Some(filter) = seccomp.filter(|_| nnp(process)) {
        security::seccomp::load(filter)?;
    }
    let err = nix::unistd::execve(&path, &args, &env).unwrap_err();
    Err(err).ctx(|| format!("execve {}", exe.display()))
}

fn close_fds_on_exec(first: u32) -> Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on our descriptors.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: walk our descriptor table instead.
    let dir = std::fs::read_dir("/proc/self/fd").ctx(|| "listing /proc/self/fd".into())?;
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|fd| *fd >= first as i32)
        .collect();
    for fd in fds {
        // SAFETY: setting FD_CLOEXEC touches no memory; a stale fd just fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Until it execs, this process *is* the runtime binary. A container process that could
/// open `/proc/PID/exe` of it now (say during `exec`) could later write to the binary the
/// host runs (CVE-2019-5736). A non-dumpable process's /proc entries need CAP_SYS_PTRACE in
/// the host's user namespace, which no container has; execve of the user's program makes it
/// dumpable again. A container with its own user namespace cannot write a host-root-owned
/// binary anyway, and needs its /proc/self files (owned by its own root) to set up.
fn protect_runtime_binary(own_user_ns: bool) -> Result<()> {
    if own_user_ns {
        return Ok(());
    }
    nix::sys::prctl::set_dumpable(false).ctx(|| "PR_SET_DUMPABLE".into())
}

/// A working directory reached through a descriptor that leaked from the host
/// (`/proc/self/fd/N`, CVE-2024-21626) lies outside the container's root; the kernel then
/// reports it as unreachable. None of our descriptors should allow that, but check anyway.
fn check_cwd_inside_root(cwd: &Path) -> Result<()> {
    match nix::unistd::getcwd() {
        Ok(p) if p.is_absolute() => Ok(()),
        _ => Err(Error::Invalid(format!(
            "cwd {} is outside the container's root",
            cwd.display()
        ))),
    }
}

/// The container's program starts as a fresh process would: no signal blocked, none
/// ignored. execve resets handled signals but keeps ignored ones, and the Rust runtime
/// ignores SIGPIPE in this process (as a parent engine may ignore others): left so, a
/// container's `yes | head` would see EPIPE instead of dying of SIGPIPE.
fn unblock_all_signals() -> Result<()> {
    for sig in nix::sys::signal::Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        reset_disposition(sig).ctx(|| format!("resetting {sig}"))?;
    }
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .ctx(|| "unblocking signals".into())
}

fn reset_disposition(sig: Signal) -> nix::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: installing SIG_DFL runs no code of ours in a signal context.
    unsafe { sigaction(sig, &default) }.map(drop)
}

fn set_domainname(name: &str) -> Result<()> {
    // SAFETY: setdomainname reads `len` bytes from a buffer that lives for the call.
    let r = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    if r != 0 {
        return Err(std::io::Error::last_os_error()).ctx(|| format!("setdomainname {name:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_in_path_or_refused_clearly() {
        assert_eq!(
            resolve_in_path("sh", "/nonexistent:/bin").unwrap(),
            Path::new("/bin/sh")
        );
        let err = resolve_in_path("no-such-prog-xyz", "/bin")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-such-prog-xyz"), "{err}");
        let err = resolve_in_path("/etc/passwd", "").unwrap_err().to_string();
        assert!(err.contains("permission denied"), "{err}");
        let err = resolve_in_path("/no/such/prog", "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such file or directory"), "{err}");
    }
}
