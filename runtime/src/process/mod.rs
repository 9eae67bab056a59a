//! Making the container's processes: `clone(2)` straight into the new namespaces (no
//! re-exec of the runtime, no intermediate process), the parent's half of the setup
//! protocol, and supervising a foreground process until it exits.

pub mod init;
pub mod sync;

use crate::error::{Context, Error, Result};
use crate::namespaces::NamespacePlan;
use nix::sched::CloneFlags;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use sync::Message;

/// What the container's init needs to set itself up.
pub struct InitConfig<'a> {
    pub spec: &'a Spec,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// The fifo the init blocks on until `start`.
    pub fifo: PathBuf,
    pub console: Option<UnixStream>,
    pub preserve_fds: u32,
    pub no_pivot: bool,
    pub namespaces: NamespacePlan,
    /// `linux.seccomp`, built (so a bad profile fails before anything is made).
    pub seccomp: Option<crate::security::seccomp::Filter>,
}

/// What an `exec`'d process needs.
pub struct ExecConfig<'a> {
    pub process: &'a Process,
    /// The container's namespaces, opened from its init's `/proc/PID/ns`.
    pub namespaces: Vec<(LinuxNamespaceType, std::fs::File)>,
    /// The container's cgroup: the process is born in it.
    pub cgroup: Option<&'a crate::cgroups::CgroupRecord>,
    pub console: Option<UnixStream>,
    pub preserve_fds: u32,
    /// The container's seccomp filter (its exec'd processes get it too), built.
    pub seccomp: Option<crate::security::seccomp::Filter>,
}

/// Clones the container's init into its namespaces and drives its setup up to the point
/// where it waits on the exec fifo. `at_create_runtime` runs in the runtime's namespaces
/// when the container's namespaces exist (prestart and createRuntime hooks); it gets the
/// init's pid and answers the state documents that the init hands to its own hooks
/// (createContainer, startContainer). The init is in `cgroup` before it goes on from its
/// first barrier: born in the v2 cgroup, and moving itself into the v1 ones (see
/// [`crate::cgroups::Placement`]).
pub fn spawn_init(
    cfg: &InitConfig,
    cgroup: &dyn crate::cgroups::Manager,
    at_create_runtime: impl FnOnce(i32) -> Result<(String, String)>,
) -> Result<i32> {
    ensure_single_threaded()?;
    cfg.namespaces.check_supported()?;
    let placement = cgroup.placement()?;
    let (parent_end, child_end) = sync::channel_pair()?;
    cfg.namespaces.join_pid_for_children()?;
    let flags = cfg.namespaces.clone_flags();
    let (cloned, born_in_cgroup2) = match clone_into_cgroup2(flags, &placement) {
        Some(cloned) => (cloned, true),
        None => (clone_process(flags)?, false),
    };
    // Each barrier is a round trip between the two processes, and each wakeup can wait for
    // a CPU on a busy host: the child stops only where the parent has work to do.
    let userns = cfg.namespaces.creates(LinuxNamespaceType::User);
    let barriers = Barriers {
        proceed: userns || (!born_in_cgroup2 && placement.cgroup2.is_some()),
        hooks: has_create_hooks(cfg.spec),
    };
    let pid = match cloned {
        None => {
            drop(parent_end);
            init::container_main(cfg, child_end, placement, barriers)
        }
        Some(pid) => pid,
    };
    drop(child_end);
    let guard = KillOnDrop(pid);
    if !born_in_cgroup2 {
        placement.add_to_cgroup2(pid.as_raw())?;
    }
    drop(placement);
    if userns {
        let linux = cfg.spec.linux().as_ref();
        let uid = linux
            .and_then(|l| l.uid_mappings().clone())
            .unwrap_or_default();
        let gid = linux
            .and_then(|l| l.gid_mappings().clone())
            .unwrap_or_default();
        crate::namespaces::write_id_maps(pid.as_raw(), &uid, &gid)?;
    }
    if barriers.proceed {
        parent_end.send(&Message::Proceed)?;
    }
    if barriers.hooks {
        parent_end.wait_for(Message::RunCreateRuntimeHooks)?;
        let (create_container, start_container) = at_create_runtime(pid.as_raw())?;
        parent_end.send(&Message::HooksDone {
            create_container,
            start_container,
        })?;
        parent_end.wait_for(Message::Ready)?;
    } else {
        // No hook to run between the child's mounts and its pivot_root: what the parent
        // does there (device rules, once the child's mknods are done; state.json) is done
        // once the child is ready, before `create` returns and so before the container's
        // program can run.
        parent_end.wait_for(Message::Ready)?;
        at_create_runtime(pid.as_raw())?;
    }
    std::mem::forget(guard);
    Ok(pid.as_raw())
}

/// Where the init stops for its parent (see [`spawn_init`]).
#[derive(Clone, Copy)]
pub(crate) struct Barriers {
    /// After clone, for the id maps of a new user namespace, or for the parent to move the
    /// child into the v2 cgroup when clone3 could not put it there.
    pub proceed: bool,
    /// After the mounts, before pivot_root: prestart/createRuntime hooks run in the parent,
    /// and createContainer/startContainer hooks in the child need the state documents.
    pub hooks: bool,
}

fn has_create_hooks(spec: &Spec) -> bool {
    use crate::hooks::HookKind;
    [
        HookKind::Prestart,
        HookKind::CreateRuntime,
        HookKind::CreateContainer,
        HookKind::StartContainer,
    ]
    .into_iter()
    .any(|k| !k.of(spec).is_empty())
}

/// Starts a process inside a running container's namespaces. Returns once the process has
/// `execve`d (or with the reason it could not).
pub fn spawn_exec(cfg: &ExecConfig) -> Result<i32> {
    ensure_single_threaded()?;
    let (parent_end, child_end) = sync::channel_pair()?;
    for (typ, f) in &cfg.namespaces {
        if *typ == LinuxNamespaceType::Pid {
            nix::sched::setns(f, CloneFlags::CLONE_NEWPID)
                .ctx(|| "joining pid namespace".into())?;
        }
    }
    // The exec'd process must be in the container's cgroup before it runs anything, and
    // its setup has no barrier to wait at. It is born in the v2 cgroup and moves itself into
    // the v1 ones first thing (see cgroups::Placement). When the kernel refuses
    // CLONE_INTO_CGROUP, the runtime steps into the cgroup, clones (the child is born
    // there) and steps back into its own cgroups at once.
    let placement = cfg
        .cgroup
        .map(|r| crate::cgroups::open(r).placement())
        .transpose()?
        .unwrap_or_default();
    let mut back = None;
    let cloned = match clone_into_cgroup2(CloneFlags::empty(), &placement) {
        Some(cloned) => Ok(cloned),
        None => {
            if placement.cgroup2.is_some() {
                back = cfg.cgroup.map(crate::cgroups::enter).transpose()?;
            }
            clone_process(CloneFlags::empty())
        }
    };
    if let Ok(None) = cloned {
        drop(parent_end);
        init::exec_main(cfg, child_end, placement)
    }
    drop(placement);
    let left = back.map(|b| b.leave()).transpose();
    let pid = match cloned? {
        Some(pid) => pid,
        None => unreachable!("the child never gets here"),
    };
    if let Err(e) = left {
        drop(KillOnDrop(pid));
        return Err(e.into());
    }
    drop(child_end);
    let guard = KillOnDrop(pid);
    parent_end.wait_for(Message::Ready)?;
    // The channel closes on a successful execve (it is close-on-exec); anything else is
    // the child telling us why execve failed.
    match parent_end.recv()? {
        None => {}
        Some(Message::Failed(reason)) => return Err(Error::Child(reason)),
        Some(other) => return Err(Error::Child(format!("protocol error: got {other:?}"))),
    }
    std::mem::forget(guard);
    Ok(pid.as_raw())
}

/// Kills and reaps a half-made child when setup fails, so nothing is left behind.
struct KillOnDrop(Pid);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGKILL);
        let _ = waitpid(self.0, None);
    }
}

/// The precondition of [`clone_process`] and [`clone_into_cgroup2`], checked where the
/// processes are made rather than trusted to every caller of the library: the child of a
/// multi-threaded process gets a copy of locks (malloc's) that threads which do not exist
/// in it may hold forever. A caller with threads (the CRI server) creates containers from
/// a single-threaded helper process instead.
fn ensure_single_threaded() -> Result<()> {
    match crate::procfs::thread_count() {
        Ok(1) => Ok(()),
        Ok(n) => Err(Error::Invalid(format!(
            "containers are created and exec'd from a single-threaded process, and this \
             one has {n} threads"
        ))),
        Err(e) => Err(e).ctx(|| "reading /proc/self/status".into()),
    }
}

/// `clone(2)` with fork semantics (no new stack, SIGCHLD to the parent) into new
/// namespaces. Returns `None` in the child.
///
/// Hand-rolled because neither std nor nix offers a fork that takes namespace flags, and
/// cloning straight into them saves the extra process runc needs.
fn clone_process(flags: CloneFlags) -> Result<Option<Pid>> {
    let flags = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: without CLONE_VM the child gets a copy of our address space, as with fork;
    // the runtime is single-threaded here, so no lock is held by a thread that does not
    // exist in the child. A null stack means "the same stack pointer" in the copy.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match ret {
        -1 => Err(std::io::Error::last_os_error()).ctx(|| "clone".into()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// `CLONE_INTO_CGROUP` (Linux 5.7): `clone_args.cgroup` is a cgroup v2 directory fd.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` (its first 11 fields, the size Linux 5.7 takes).
/// Defined here because the libc crate has it for some targets only.
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Clones a process (as [`clone_process`]: `Some(None)` in the child) born in the v2 cgroup
/// of `placement`. `None`, with no process made, when there is no v2 cgroup or the kernel
/// refuses `clone3`/`CLONE_INTO_CGROUP` (before 5.7, or a seccomp filter): the caller then
/// makes a plain clone and moves the child itself.
fn clone_into_cgroup2(
    flags: CloneFlags,
    placement: &crate::cgroups::Placement,
) -> Option<Option<Pid>> {
    use std::os::fd::AsRawFd;
    let (_, dir) = placement.cgroup2.as_ref()?;
    let args = CloneArgs {
        flags: flags.bits() as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: dir.as_raw_fd() as u64,
        ..Default::default()
    };
    // SAFETY: as in clone_process: no CLONE_VM, so the child gets a copy of our
    // address space, and a zero stack means "the same stack pointer" in the copy; the
    // runtime is single-threaded here. `args` lives for the call and its size is given.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match ret {
        0 => Some(None),
        pid if pid > 0 => Some(Some(Pid::from_raw(pid as i32))),
        // Any refusal: the caller's plain clone fails the same way if it is not about
        // clone3 itself, and its cgroup.procs write reports a bad cgroup.
        _ => None,
    }
}

/// The signals a foreground runtime relays to its container (all but those the kernel
/// will not let us catch, and SIGCHLD which tells us the container is gone).
pub fn relay_signals() -> SigSet {
    let mut set = SigSet::all();
    for s in [Signal::SIGKILL, Signal::SIGSTOP] {
        set.remove(s);
    }
    set
}

/// Blocks the relayed signals and SIGCHLD in the caller. Done before the container is
/// cloned, so a container that exits at once still leaves its SIGCHLD pending for us:
/// there is no window in which the exit could be missed and the runtime hang.
pub fn block_signals() -> Result<SigSet> {
    let set = relay_signals();
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_BLOCK,
        Some(&set),
        Some(&mut old),
    )
    .ctx(|| "blocking signals".into())?;
    Ok(old)
}

/// Waits for `pid` to exit while relaying every signal the runtime receives to it and, with
/// a terminal, copying between our stdio and the pty master. Returns the exit code as a
/// shell reports it (128 + signal when killed). Signals must already be blocked.
pub fn supervise(pid: i32, master: Option<OwnedFd>) -> Result<i32> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    use std::os::fd::AsFd;

    let sfd = SignalFd::with_flags(
        &relay_signals(),
        SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK,
    )
    .ctx(|| "creating signalfd".into())?;
    let target = Pid::from_raw(pid);
    let stdin = std::io::stdin();
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    if let Some(m) = &master {
        tty_resize_from_stdin(m);
    }
    loop {
        // A status that is already there (the child exited before we got here) is picked up
        // before sleeping, never lost.
        if let Some(code) = reap(target)? {
            if let Some(m) = &master {
                drain(m);
            }
            return Ok(code);
        }
        let mut fds = vec![PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        let stdin_fd = stdin.as_fd();
        if let Some(m) = &master {
            if master_open {
                fds.push(PollFd::new(m.as_fd(), PollFlags::POLLIN));
            }
            if stdin_open {
                fds.push(PollFd::new(stdin_fd, PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e).ctx(|| "poll".into()),
            Ok(_) => {}
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        if ready[0] {
            while let Ok(Some(info)) = sfd.read_signal() {
                let signo = info.ssi_signo as i32;
                if signo == libc::SIGCHLD {
                    continue;
                }
                if signo == libc::SIGWINCH {
                    if let Some(m) = &master {
                        tty_resize_from_stdin(m);
                        continue;
                    }
                }
                if let Ok(sig) = Signal::try_from(signo) {
                    let _ = kill(target, sig);
                }
            }
        }
        if let Some(m) = &master {
            let mut idx = 1;
            if master_open {
                if ready[idx] && !copy(m, &std::io::stdout()) {
                    master_open = false;
                }
                idx += 1;
            }
            if stdin_open && ready.get(idx).copied().unwrap_or(false) && !copy(&stdin, m) {
                stdin_open = false;
            }
        }
    }
}

fn reap(target: Pid) -> Result<Option<i32>> {
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == target => return Ok(Some(code)),
            Ok(WaitStatus::Signaled(p, sig, _)) if p == target => {
                return Ok(Some(128 + sig as i32))
            }
            Ok(WaitStatus::StillAlive) => return Ok(None),
            // Another child (a reparented orphan when we are a subreaper): reaped, go on.
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::ECHILD) => {
                return Err(Error::Invalid(format!("process {target} is not our child")))
            }
            Err(e) => return Err(e).ctx(|| "waitpid".into()),
        }
    }
}

/// Copies what is readable now from `from` to `to`; false at end of file or on error.
fn copy(from: &impl std::os::fd::AsFd, to: &impl std::os::fd::AsFd) -> bool {
    let mut buf = [0u8; 8192];
    match nix::unistd::read(from.as_fd(), &mut buf) {
        Ok(0) | Err(_) => false,
        Ok(n) => write_all(to, &buf[..n]),
    }
}

fn write_all(to: &impl std::os::fd::AsFd, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        match nix::unistd::write(to.as_fd(), data) {
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(_) => return false,
        }
    }
    true
}

/// Reads what the container left in the pty after it exited.
fn drain(master: &OwnedFd) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    loop {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
            return;
        }
        if !copy(master, &std::io::stdout()) {
            return;
        }
    }
}

fn tty_resize_from_stdin(master: &OwnedFd) {
    use std::os::fd::AsRawFd;
    let mut ws: libc::winsize = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes into `ws`, which lives for the call; failure is ignored
    // (stdin is not a terminal).
    if unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) } == 0 {
        let _ = crate::tty::set_window_size(master.as_raw_fd(), ws.ws_row, ws.ws_col);
    }
}
