//! The per-container monitor and the exec helper: the two modes of `rrun-cri` that put
//! processes into containers.
//!
//! The CRI server is multi-threaded, and rrun makes a container's processes with a raw
//! `clone`, which is only safe from a single-threaded process (a lock held by another
//! thread, malloc's say, stays locked forever in the child). So the server never clones:
//! it spawns `rrun-cri monitor` (one per container, living as long as the container) or
//! `rrun-cri exec-sync` (one per ExecSync), which run before any thread exists.
//!
//! ```text
//! rrun-cri monitor --runtime-root DIR --id ID --bundle DIR --log-path FILE --state-dir DIR [--tty]
//! ```
//!
//! - becomes the small `rrun-cri-monitor` binary when it is installed beside `rrun-cri`
//!   (exec, same pid: see `src/bin/rrun-cri-monitor.rs` for why), which calls
//!   `rrun-cri monitor --helper create|oom-kills|delete` back for the runtime's work (the
//!   server starts that binary directly when it is there, with `--runtime-exe` first);
//! - re-executes itself from a protected view of the binary, then forks: the parent waits for
//!   the child's report and exits (0 on success, 1 on failure); the child calls `setsid`
//!   (it outlives the server and never gets its signals) and is the monitor, non-dumpable
//!   and a child subreaper for its whole life;
//! - creates the container (not started: the server calls `Runtime::start`) with its
//!   stdout and stderr on pipes (with `--tty`, the pty master from a console socket,
//!   logged as stdout) and `/dev/null` on stdin, writes `<state-dir>/monitor.pid`, then
//!   writes one line on its stdout: `{"pid":1234}` or `{"error":"..."}` (and exits 1,
//!   nothing of the container left), and closes it;
//! - then, single-threaded, in one poll loop: copies the container's output to
//!   `--log-path` in the CRI log format ([`log`]) and to the clients of
//!   `<state-dir>/attach.sock` ([`attach`]: Attach sessions, which may also write the
//!   container's stdin, a pipe with `--stdin`); answers `reopen\n` on
//!   `<state-dir>/ctl.sock` with `ok\n` (or `error: ...\n`) once the log file is reopened;
//!   reaps every child; when the container's init has exited, reads its streams until end
//!   of file (at most [`DRAIN_TIME`] more), writes `<state-dir>/exit.json`
//!   (`{"exit_code":137,"signal":9,"finished_at_ns":N,"oom_killed":true}`) and exits 0.
//!   SIGTERM, SIGINT, SIGHUP and SIGPIPE do nothing to it.
//!
//! ```text
//! rrun-cri exec-sync --runtime-root DIR --id ID --process FILE --status-file FILE [--timeout SECS]
//! ```
//!
//! See [`exec_sync`].
//!
//! ```text
//! rrun-cri-monitor --pod-init
//! ```
//!
//! See [`pod_init`]: the pid 1 of a pod that shares one pid namespace.

pub mod attach;
mod backend;
mod exec_sync;
pub mod log;
mod pod_init;
pub mod protocol;
mod sys;

pub use backend::Helper;
pub use exec_sync::{run_exec_sync, ExecSyncArgs};
pub use pod_init::run_pod_init;

use backend::{Answer, Backend, InProcess, ViaExe};
use protocol::{error_chain, ExitStatus, Failure, HelperAnswer, StartReport};

use log::{Framer, LogFile, RecordWriter, Stream, MAX_LINE};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long the monitor still reads the container's streams after its init has exited,
/// waiting for end of file: a process that escaped the container's end (a daemon without
/// its own PID namespace) may hold them open forever.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

/// How long a control client may take to send its request and read the answer.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(1);

/// Arguments of `rrun-cri monitor`.
#[derive(Debug, Clone, clap::Args)]
pub struct MonitorArgs {
    /// The rrun state root (the runtime's `--root`).
    #[arg(long, value_name = "DIR")]
    pub runtime_root: PathBuf,
    /// The container's id.
    #[arg(long)]
    pub id: String,
    /// The OCI bundle (config.json and rootfs).
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,
    /// The CRI log file (created with its parents; reopened on request).
    #[arg(long, value_name = "FILE")]
    pub log_path: PathBuf,
    /// Where monitor.pid, ctl.sock and exit.json go.
    #[arg(long, value_name = "DIR")]
    pub state_dir: PathBuf,
    /// The container has a terminal: its pty output is logged as stdout.
    #[arg(long)]
    pub tty: bool,
    /// The container's stdin is a pipe that attach sessions write to (else /dev/null).
    #[arg(long)]
    pub stdin: bool,
    /// The container's stdin is closed when the first attach session that wrote to it ends.
    #[arg(long)]
    pub stdin_once: bool,
    /// (internal) Run one operation for a monitor (`rrun-cri-monitor`) and answer on
    /// `--result-fd`.
    #[arg(long, hide = true, requires = "result_fd")]
    pub helper: Option<Helper>,
    #[arg(long, hide = true, value_name = "FD")]
    pub result_fd: Option<i32>,
}

/// The name of the small monitor binary, installed next to `rrun-cri`.
pub const MONITOR_BINARY: &str = "rrun-cri-monitor";

/// The files of `--state-dir`.
pub fn pid_file(state_dir: &Path) -> PathBuf {
    state_dir.join("monitor.pid")
}

pub fn control_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("ctl.sock")
}

pub fn exit_file(state_dir: &Path) -> PathBuf {
    state_dir.join("exit.json")
}

/// Where a `--tty` container's console socket is (as `rrun::pty::console_pair` makes it).
pub fn console_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("console.sock")
}

/// `rrun-cri monitor`: runs the monitor; returns the process's exit code. Must be called
/// before any other thread exists.
///
/// The monitor proper is the small [`MONITOR_BINARY`] next to this one, when it is there:
/// this process becomes it (exec, same pid), and it calls back into this binary (`--helper`)
/// for what needs the runtime. Without it, the monitor runs in this binary (more memory).
pub fn run_monitor(args: &MonitorArgs) -> i32 {
    if let Some(helper) = args.helper {
        return backend::run_helper(args, helper, args.result_fd.unwrap_or(-1));
    }
    match exec_small_monitor(args) {
        Ok(()) => {}
        Err(Some(e)) => eprintln!("rrun-cri monitor: {e}; monitoring from this binary"),
        Err(None) => {}
    }
    run_with(args, &InProcess)
}

/// `rrun-cri-monitor`'s entry: the monitor, calling `runtime_exe` (the big `rrun-cri`) for
/// the runtime's operations.
pub fn run_small_monitor(args: &MonitorArgs, runtime_exe: &Path) -> i32 {
    run_with(args, &ViaExe(runtime_exe.to_path_buf()))
}

/// Becomes [`MONITOR_BINARY`] if it is next to this executable: `Err(None)` when it is
/// not, `Err(Some(why))` when exec failed.
fn exec_small_monitor(args: &MonitorArgs) -> Result<(), Option<String>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let exe = std::env::current_exe().map_err(|_| None)?;
    let small = exe.with_file_name(MONITOR_BINARY);
    if !small.is_file() {
        return Err(None);
    }
    let mut argv: Vec<&std::ffi::OsStr> =
        vec![small.as_os_str(), "--runtime-exe".as_ref(), exe.as_os_str()];
    argv.extend([
        "--runtime-root".as_ref(),
        args.runtime_root.as_os_str(),
        "--id".as_ref(),
        args.id.as_ref(),
        "--bundle".as_ref(),
        args.bundle.as_os_str(),
        "--log-path".as_ref(),
        args.log_path.as_os_str(),
        "--state-dir".as_ref(),
        args.state_dir.as_os_str(),
    ]);
    for (on, flag) in [
        (args.tty, "--tty"),
        (args.stdin, "--stdin"),
        (args.stdin_once, "--stdin-once"),
    ] {
        if on {
            argv.push(flag.as_ref());
        }
    }
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| Some("an argument holds a NUL byte".to_string()))?;
    let Some(path) = argv.first() else {
        return Err(None);
    };
    let err = nix::unistd::execv(path, &argv).err();
    Err(Some(format!("executing {}: {err:?}", small.display())))
}

/// Parses `rrun-cri-monitor`'s arguments: `--runtime-exe FILE` then those of
/// `rrun-cri monitor` (as [`run_monitor`] passes them).
pub fn parse_small_monitor_args(
    argv: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<(PathBuf, MonitorArgs), String> {
    let mut exe = None;
    let mut args = MonitorArgs {
        runtime_root: PathBuf::new(),
        id: String::new(),
        bundle: PathBuf::new(),
        log_path: PathBuf::new(),
        state_dir: PathBuf::new(),
        tty: false,
        stdin: false,
        stdin_once: false,
        helper: None,
        result_fd: None,
    };
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        match flag.to_str() {
            Some("--tty") => {
                args.tty = true;
                continue;
            }
            Some("--stdin") => {
                args.stdin = true;
                continue;
            }
            Some("--stdin-once") => {
                args.stdin_once = true;
                continue;
            }
            _ => {}
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{} needs a value", flag.to_string_lossy()))?;
        match flag.to_str().unwrap_or("") {
            "--runtime-exe" => exe = Some(PathBuf::from(value)),
            "--runtime-root" => args.runtime_root = value.into(),
            "--id" => {
                args.id = value
                    .into_string()
                    .map_err(|_| "--id is not UTF-8".to_string())?
            }
            "--bundle" => args.bundle = value.into(),
            "--log-path" => args.log_path = value.into(),
            "--state-dir" => args.state_dir = value.into(),
            _ => return Err(format!("unknown argument {}", flag.to_string_lossy())),
        }
    }
    let missing = [
        ("--runtime-exe", exe.is_none()),
        ("--runtime-root", args.runtime_root.as_os_str().is_empty()),
        ("--id", args.id.is_empty()),
        ("--bundle", args.bundle.as_os_str().is_empty()),
        ("--log-path", args.log_path.as_os_str().is_empty()),
        ("--state-dir", args.state_dir.as_os_str().is_empty()),
    ];
    if let Some((flag, _)) = missing.iter().find(|(_, m)| *m) {
        return Err(format!("missing {flag}"));
    }
    Ok((exe.unwrap_or_default(), args))
}

fn run_with<B: Backend>(args: &MonitorArgs, backend: &B) -> i32 {
    if let Err(e) = rrun::reexec_from_protected_exe() {
        return report_error(&format!(
            "re-executing from a protected view of the binary: {e}"
        ));
    }
    if let Err(e) = sys::ensure_single_threaded() {
        return report_error(&e);
    }
    // Before anything of the container exists: with hostPID, a container's process could
    // otherwise open /proc/<monitor>/exe or its memory.
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        return report_error(&format!("prctl(PR_SET_DUMPABLE, 0): {e}"));
    }
    let (ready_r, ready_w) = match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => return report_error(&format!("pipe: {e}")),
    };
    match sys::fork() {
        Err(e) => report_error(&format!("fork: {e}")),
        Ok(ForkResult::Parent { .. }) => {
            drop(ready_w);
            wait_for_report(ready_r)
        }
        Ok(ForkResult::Child) => {
            drop(ready_r);
            monitor_main(args, backend, ready_w)
        }
    }
}

/// The spawned process, after the fork: waits until the monitor has reported on the
/// stdout they share, then ends (the monitor lives on, reparented).
fn wait_for_report(ready: OwnedFd) -> i32 {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(&ready, &mut byte) {
            Ok(1) if byte[0] == b'0' => return 0,
            Ok(1) => return 1,
            Ok(_) => return report_error("the monitor died before reporting"),
            Err(Errno::EINTR) => continue,
            Err(e) => return report_error(&format!("waiting for the monitor: {e}")),
        }
    }
}

/// Writes the one report line on stdout.
fn report(r: &StartReport) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(r.to_line().as_bytes());
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Reports `f` as the monitor's one line and on stderr; answers the exit code.
pub fn report_failure(f: Failure) -> i32 {
    eprintln!("rrun-cri monitor: {f}");
    report(&StartReport::Failed(f));
    1
}

/// Reports `msg`, a failure of ours (Internal), as the monitor's one line.
pub fn report_error(msg: &str) -> i32 {
    report_failure(Failure::from(msg.to_string()))
}

/// The monitor proper (the forked child).
fn monitor_main<B: Backend>(args: &MonitorArgs, backend: &B, ready: OwnedFd) -> i32 {
    let tell_parent = |ok: bool| {
        let _ = nix::unistd::write(&ready, if ok { b"0" } else { b"1" });
    };
    let mut running = match start_container(args, backend) {
        Ok(r) => r,
        Err(f) => {
            let code = report_failure(f);
            tell_parent(false);
            return code;
        }
    };
    report(&StartReport::Started { pid: running.pid });
    // The server reads the report until end of file: our stdout goes, and the spawned
    // process, holding the other copy, exits when told.
    if let Err(e) = null_onto(&[1]) {
        eprintln!("rrun-cri monitor: closing stdout: {e}");
    }
    let parent = nix::unistd::getppid();
    tell_parent(true);
    drop(ready);
    // Until the spawned process has exited it maps the same pages of the program, and
    // pages mapped twice are not given back below.
    let deadline = Instant::now() + Duration::from_secs(1);
    while nix::unistd::getppid() == parent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    // The setup's code and allocations are done with: the loop runs in what the monitor
    // keeps for its whole life.
    sys::drop_clean_exe_pages();
    sys::trim_heap();
    running.supervise(backend)
}

/// Puts `/dev/null` on the given standard descriptors.
fn null_onto(fds: &[RawFd]) -> Result<(), String> {
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("opening /dev/null: {e}"))?;
    for &fd in fds {
        sys::dup_onto(null.as_fd(), fd).map_err(|e| format!("dup2 /dev/null to {fd}: {e}"))?;
    }
    Ok(())
}

/// Where the container's output comes from.
struct Source {
    fd: OwnedFd,
    stream: Stream,
    framer: Framer,
}

/// A monitor whose container exists.
struct Running {
    args: MonitorArgs,
    pid: i32,
    signals: SignalFd,
    control: UnixListener,
    /// The attach socket's listener and its clients ([`attach`]).
    attach: OwnedFd,
    clients: Vec<attach::Client>,
    input: attach::Input,
    sources: Vec<Source>,
    log: RecordWriter<LogFile>,
}

/// What the container's init ended with.
struct Exit {
    code: i32,
    signal: Option<i32>,
    finished_at: SystemTime,
}

/// Sets the monitor up and creates the container. On failure, everything made is gone.
fn start_container<B: Backend>(args: &MonitorArgs, backend: &B) -> Result<Running, Failure> {
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| format!("prctl(PR_SET_CHILD_SUBREAPER): {e}"))?;
    // The paths may be relative to the server's directory; the monitor leaves it so that
    // it never keeps a mount busy.
    let absolute = |p: &Path| std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()));
    let args = MonitorArgs {
        runtime_root: absolute(&args.runtime_root)?,
        id: args.id.clone(),
        bundle: absolute(&args.bundle)?,
        log_path: absolute(&args.log_path)?,
        state_dir: absolute(&args.state_dir)?,
        tty: args.tty,
        stdin: args.stdin,
        stdin_once: args.stdin_once,
        helper: None,
        result_fd: None,
    };
    std::env::set_current_dir("/").map_err(|e| format!("chdir /: {e}"))?;

    // Blocked rather than ignored: an ignored signal would stay ignored in the container's
    // processes, a blocked one is unblocked by its init. The signalfd reads them all.
    sys::default_sigpipe().map_err(|e| format!("resetting SIGPIPE: {e}"))?;
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGPIPE,
    ] {
        mask.add(s);
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| format!("blocking signals: {e}"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;

    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&args.state_dir)
            .map_err(|e| format!("creating {}: {e}", args.state_dir.display()))?;
    }
    let log = LogFile::open(&args.log_path)
        .map_err(|e| format!("opening the log {}: {e}", args.log_path.display()))?;
    let ctl_path = control_socket(&args.state_dir);
    let control = bind_private(&ctl_path)?;
    let attach_path = attach::socket_path(&args.state_dir);
    let mut made = Made(vec![ctl_path, attach_path.clone()]);
    let attach = attach::bind_listener(&attach_path)?;
    let pid_path = pid_file(&args.state_dir);
    made.0.push(pid_path.clone());
    crate::records::write_file_atomic(&pid_path, std::process::id().to_string().as_bytes())
        .map_err(|e| format!("writing {}: {e}", pid_path.display()))?;

    let ours = [control.as_raw_fd(), attach.as_raw_fd(), signals.as_raw_fd()];
    let (pid, sources, input) = if args.tty {
        create_with_tty(&args, backend, &log, &ours)?
    } else {
        create_with_pipes(&args, backend, &log, &ours)?
    };
    made.keep();
    Ok(Running {
        args,
        pid,
        signals,
        control,
        attach,
        clients: Vec::new(),
        input,
        sources,
        log: RecordWriter::new(log),
    })
}

/// Files removed again unless [`Made::keep`] is called.
struct Made(Vec<PathBuf>);

impl Made {
    fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A unix stream socket at `path` that only root can connect to (0600 from the start: the
/// umask is set around bind, not chmod after it).
fn bind_private(path: &Path) -> Result<UnixListener, String> {
    use nix::sys::stat::{umask, Mode};
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("removing the old {}: {e}", path.display())),
    }
    let old = umask(Mode::from_bits_truncate(0o177));
    let bound = UnixListener::bind(path);
    umask(old);
    let listener = bound.map_err(|e| format!("binding {}: {e}", path.display()))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(listener)
}

fn create_with_pipes<B: Backend>(
    args: &MonitorArgs,
    backend: &B,
    log: &LogFile,
    ours: &[RawFd],
) -> Result<(i32, Vec<Source>, attach::Input), Failure> {
    let pipe = || nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (in_r, in_w) = match args.stdin {
        true => pipe().map(|(r, w)| (Some(r), Some(w)))?,
        false => (None, None),
    };
    let mut keep_out = vec![out_r.as_raw_fd(), err_r.as_raw_fd(), log_fd(log)];
    keep_out.extend(in_w.as_ref().map(|w| w.as_raw_fd()));
    keep_out.extend_from_slice(ours);
    let pid = create_in_child(args, backend, None, Some((out_w, err_w, in_r)), &keep_out)?;
    if let Some(w) = &in_w {
        if let Err(e) = sys::set_nonblocking(w, true) {
            return Err(abandon(args, backend, format!("O_NONBLOCK on a pipe: {e}")));
        }
    }
    let mut sources = Vec::with_capacity(2);
    for (fd, stream) in [(out_r, Stream::Stdout), (err_r, Stream::Stderr)] {
        if let Err(e) = sys::set_nonblocking(&fd, true) {
            return Err(abandon(args, backend, format!("O_NONBLOCK on a pipe: {e}")));
        }
        sources.push(Source {
            fd,
            stream,
            framer: Framer::new(MAX_LINE),
        });
    }
    let input = attach::Input {
        stdin: in_w,
        tty: None,
        once: args.stdin_once,
    };
    Ok((pid, sources, input))
}

fn create_with_tty<B: Backend>(
    args: &MonitorArgs,
    backend: &B,
    log: &LogFile,
    ours: &[RawFd],
) -> Result<(i32, Vec<Source>, attach::Input), Failure> {
    let (console_path, console) = rrun::pty::console_pair(&args.state_dir)
        .map_err(|e| format!("console socket: {}", error_chain(&e)))?;
    let _made = Made(vec![console_path.clone()]);
    let mut keep_out = vec![console.as_raw_fd(), log_fd(log)];
    keep_out.extend_from_slice(ours);
    let pid = create_in_child(args, backend, Some(&console_path), None, &keep_out)?;
    // The runtime connected before making the init, and the init sent the master during
    // its setup: both are queued by now, so none of this waits.
    let master = console
        .set_nonblocking(true)
        .map_err(|e| e.to_string())
        .and_then(|()| console.accept().map_err(|e| e.to_string()))
        .and_then(|(stream, _)| rrun::pty::recv_fd(&stream).map_err(|e| error_chain(&e)))
        .and_then(|fd| {
            sys::set_nonblocking(&fd, true)
                .map(|()| fd)
                .map_err(|e| e.to_string())
        })
        .map_err(|e| {
            abandon(
                args,
                backend,
                format!("receiving the container's terminal: {e}"),
            )
        })?;
    // Attach sessions write to the terminal and resize it through a copy of the master.
    let tty = master
        .try_clone()
        .map_err(|e| abandon(args, backend, format!("dup of the terminal's master: {e}")))?;
    let input = attach::Input {
        stdin: tty.try_clone().ok().filter(|_| args.stdin),
        tty: Some(tty),
        once: args.stdin_once,
    };
    Ok((
        pid,
        vec![Source {
            fd: master,
            stream: Stream::Stdout,
            framer: Framer::new(MAX_LINE),
        }],
        input,
    ))
}

fn log_fd(log: &LogFile) -> RawFd {
    log.raw_fd().unwrap_or(-1)
}

/// A container was made but the monitor cannot watch it: it goes again.
fn abandon<B: Backend>(args: &MonitorArgs, backend: &B, msg: impl Into<Failure>) -> Failure {
    let msg: Failure = msg.into();
    if let Err(e) = backend.delete(args) {
        return Failure::new(
            msg.kind,
            format!("{} (and deleting the container failed: {e})", msg.message),
        );
    }
    msg
}

/// Creates the container from a forked child, which exits as soon as it is made: the init
/// is then reparented to us (we are a subreaper), and none of the creation's code or
/// memory stays in the monitor, which lives as long as the container. `pipes` are the
/// write ends for the init's stdout and stderr; the child closes `close` (our other
/// descriptors) first, so the container never holds them.
fn create_in_child<B: Backend>(
    args: &MonitorArgs,
    backend: &B,
    console: Option<&Path>,
    pipes: Option<(OwnedFd, OwnedFd, Option<OwnedFd>)>,
    close: &[RawFd],
) -> Result<i32, Failure> {
    let (result_r, result_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
    let child = match sys::fork() {
        Err(e) => return Err(format!("fork: {e}").into()),
        Ok(ForkResult::Child) => {
            let mut fds = close.to_vec();
            fds.push(result_r.as_raw_fd());
            sys::close_in_child(&fds);
            let answer = match child_stdio(pipes) {
                Err(e) => Err(e.into()),
                Ok(()) => match backend.create(args, console, &result_w) {
                    Answer::Done(r) => r.map(i64::from),
                    Answer::ExecFailed(e) => Err(e.into()),
                },
            };
            let _ = nix::unistd::write(&result_w, &HelperAnswer::encode(answer));
            sys::exit_now(0)
        }
        Ok(ForkResult::Parent { child }) => child,
    };
    // Our copies of the write ends go at once: end of file must come when the container's
    // processes are gone.
    drop(pipes);
    drop(result_w);
    let answer = backend::read_answer(child, &result_r)?;
    let pid = HelperAnswer::decode(&answer)?;
    i32::try_from(pid).map_err(|_| {
        abandon(
            args,
            backend,
            format!("bad pid from the creating process: {pid}"),
        )
    })
}

/// In the forked child: `/dev/null` (or the stdin pipe's read end) on stdin, the pipes'
/// write ends on stdout and stderr (or, for a terminal, `/dev/null` on stdout too: the init
/// puts its pty on 0-2; stderr stays the monitor's, for the runtime's own warnings).
fn child_stdio(pipes: Option<(OwnedFd, OwnedFd, Option<OwnedFd>)>) -> Result<(), String> {
    match &pipes {
        Some((out_w, err_w, in_r)) => {
            match in_r {
                Some(r) => sys::dup_onto(r.as_fd(), 0).map_err(|e| format!("dup2 stdin: {e}"))?,
                None => null_onto(&[0])?,
            }
            sys::dup_onto(out_w.as_fd(), 1).map_err(|e| format!("dup2 stdout: {e}"))?;
            sys::dup_onto(err_w.as_fd(), 2).map_err(|e| format!("dup2 stderr: {e}"))?;
        }
        None => null_onto(&[0, 1])?,
    }
    Ok(())
}

impl Running {
    /// The loop, until the container's init has exited and its output is logged.
    fn supervise<B: Backend>(&mut self, backend: &B) -> i32 {
        let mut exit: Option<Exit> = None;
        let mut drain_until: Option<Instant> = None;
        // One buffer for the monitor's life; only what a read fills is ever touched.
        let mut buf = [0u8; MAX_LINE];
        self.reap(&mut exit, &mut drain_until);
        loop {
            if let Some(until) = drain_until {
                if self.sources.is_empty() || Instant::now() >= until {
                    break;
                }
            }
            let timeout = match drain_until {
                None => PollTimeout::NONE,
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
                }
            };
            let (sig_ready, ctl_ready, attach_ready, ready, clients_ready) = {
                let mut fds = Vec::with_capacity(3 + self.sources.len() + self.clients.len());
                fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
                fds.push(PollFd::new(self.control.as_fd(), PollFlags::POLLIN));
                fds.push(PollFd::new(self.attach.as_fd(), PollFlags::POLLIN));
                for s in &self.sources {
                    fds.push(PollFd::new(s.fd.as_fd(), PollFlags::POLLIN));
                }
                for c in &self.clients {
                    fds.push(PollFd::new(c.fd(), PollFlags::POLLIN));
                }
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => {
                        // Nothing the loop could do about it; end as if the output were
                        // drained, still writing the exit status once the init is gone.
                        eprintln!("rrun-cri monitor: poll: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
                let is_ready = |f: &PollFd| f.revents().is_some_and(|r| !r.is_empty());
                let mask = |fds: &[PollFd]| -> u64 {
                    fds.iter()
                        .enumerate()
                        .filter(|(_, f)| is_ready(f))
                        .fold(0, |acc, (i, _)| acc | (1 << i))
                };
                let (sources, clients) = fds[3..].split_at(self.sources.len());
                (
                    is_ready(&fds[0]),
                    is_ready(&fds[1]),
                    is_ready(&fds[2]),
                    mask(sources),
                    mask(clients),
                )
            };
            if sig_ready {
                let mut child_exited = false;
                while let Ok(Some(info)) = self.signals.read_signal() {
                    child_exited |= info.ssi_signo == libc::SIGCHLD as u32;
                }
                if child_exited {
                    self.reap(&mut exit, &mut drain_until);
                }
            }
            if ctl_ready {
                self.serve_control();
            }
            // Clients first, from the last (a removal moves the last one into its place),
            // before the output's fan-out may remove any.
            for i in (0..self.clients.len()).rev() {
                if clients_ready & (1 << i) != 0 {
                    attach::read_client(&mut self.clients, i, &mut buf, &mut self.input);
                }
            }
            if attach_ready {
                attach::accept_all(&self.attach, &mut self.clients);
            }
            // From the last, so that removing one keeps the others' indices.
            for i in (0..self.sources.len()).rev() {
                if ready & (1 << i) != 0 && !self.read_source(i, &mut buf) {
                    let mut s = self.sources.remove(i);
                    let log = &mut self.log;
                    s.framer.finish(&mut |h: &[u8], t: &[u8], full: bool| {
                        let _ = log.record(SystemTime::now(), s.stream, h, t, full);
                    });
                }
            }
        }
        for mut s in self.sources.drain(..) {
            let log = &mut self.log;
            s.framer.finish(&mut |h: &[u8], t: &[u8], full: bool| {
                let _ = log.record(SystemTime::now(), s.stream, h, t, full);
            });
        }
        let exit = exit.unwrap_or(Exit {
            // Not reachable (the loop ends only once the init is reaped), but never lose
            // the file the server waits for.
            code: 255,
            signal: None,
            finished_at: SystemTime::now(),
        });
        self.finish(&exit, backend)
    }

    /// Reads what one source has; false at its end.
    fn read_source(&mut self, i: usize, buf: &mut [u8]) -> bool {
        let s = &mut self.sources[i];
        match nix::unistd::read(&s.fd, buf) {
            Ok(0) => false,
            Ok(n) => {
                let head = match s.stream {
                    Stream::Stdout => attach::STDOUT,
                    Stream::Stderr => attach::STDERR,
                };
                if !self.clients.is_empty() {
                    attach::fan_out(&mut self.clients, head, &buf[..n], &mut self.input);
                }
                let log = &mut self.log;
                let stream = s.stream;
                s.framer
                    .feed(&buf[..n], &mut |h: &[u8], t: &[u8], full: bool| {
                        // A log that cannot be written loses these lines; the container
                        // and its exit status matter more.
                        let _ = log.record(SystemTime::now(), stream, h, t, full);
                    });
                true
            }
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => true,
            // EIO: a pty master whose every slave is closed (the terminal's end of file).
            Err(_) => false,
        }
    }

    /// Reaps every child that has exited; notes the init's end.
    fn reap(&mut self, exit: &mut Option<Exit>, drain_until: &mut Option<Instant>) {
        loop {
            let (pid, code, signal) = match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) => (p, code, None),
                Ok(WaitStatus::Signaled(p, sig, _)) => (p, 128 + sig as i32, Some(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("rrun-cri monitor: waitpid: {e}");
                    return;
                }
                Ok(_) => continue,
            };
            if pid.as_raw() == self.pid && exit.is_none() {
                *exit = Some(Exit {
                    code,
                    signal,
                    finished_at: SystemTime::now(),
                });
                *drain_until = Some(Instant::now() + DRAIN_TIME);
            }
        }
    }

    /// Answers the control clients waiting on ctl.sock.
    fn serve_control(&mut self) {
        loop {
            match self.control.accept() {
                Ok((stream, _)) => {
                    self.answer(stream);
                    // A reopen ran code the loop does not otherwise need (rare: at each
                    // log rotation); give its pages back as after the setup.
                    sys::drop_clean_exe_pages();
                    sys::trim_heap();
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // WouldBlock: no one else waits; any other error is the client's loss.
                Err(_) => return,
            }
        }
    }

    /// One request, `reopen\n`, answered `ok\n` after the log is reopened (or `error:
    /// ...\n`). A client is given [`CONTROL_TIMEOUT`]: the loop must not stall on it.
    fn answer(&mut self, mut stream: UnixStream) {
        if stream.set_nonblocking(false).is_err()
            || stream.set_read_timeout(Some(CONTROL_TIMEOUT)).is_err()
            || stream.set_write_timeout(Some(CONTROL_TIMEOUT)).is_err()
        {
            return;
        }
        let mut req = [0u8; 64];
        let mut n = 0;
        while n < req.len() && !req[..n].contains(&b'\n') {
            match stream.read(&mut req[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
        let line = req[..n].split(|&b| b == b'\n').next().unwrap_or_default();
        let answer = if line.trim_ascii() == b"reopen" {
            match self.log.get_mut().reopen() {
                Ok(()) => "ok\n".to_string(),
                Err(e) => format!(
                    "error: reopening {}: {e}\n",
                    self.log.get_ref().path().display()
                ),
            }
        } else {
            "error: unknown request (the only one is \"reopen\")\n".to_string()
        };
        let _ = stream.write_all(answer.as_bytes());
    }

    /// The init is gone and its output logged: exit.json, whatever else failed.
    fn finish<B: Backend>(&mut self, exit: &Exit, backend: &B) -> i32 {
        let oom_killed = match backend.oom_kills(&self.args) {
            Ok(n) => n > 0,
            Err(e) => {
                eprintln!("rrun-cri monitor: OOM count of {}: {e}", self.args.id);
                false
            }
        };
        let finished_at_ns = exit
            .finished_at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let doc = ExitStatus {
            exit_code: exit.code,
            signal: exit.signal,
            finished_at_ns: u64::try_from(finished_at_ns).unwrap_or(u64::MAX),
            oom_killed,
        }
        .to_json();
        let _ = std::fs::remove_file(control_socket(&self.args.state_dir));
        let _ = std::fs::remove_file(attach::socket_path(&self.args.state_dir));
        // Attached sessions see the end of the container's output.
        self.clients.clear();
        let path = exit_file(&self.args.state_dir);
        // The server learns the container's end from this file alone: try hard.
        let mut last_err = None;
        for attempt in 0..5 {
            match crate::records::write_file_atomic(&path, &doc) {
                Ok(()) => return 0,
                Err(e) => last_err = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100 << attempt));
        }
        if let Some(e) = last_err {
            eprintln!("rrun-cri monitor: writing {}: {e}", path.display());
        }
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn argv(items: &[&str]) -> Vec<OsString> {
        items.iter().map(OsString::from).collect()
    }

    #[test]
    fn small_monitor_arguments_round_trip() {
        let (exe, a) = parse_small_monitor_args(argv(&[
            "--runtime-exe",
            "/usr/bin/rrun-cri",
            "--runtime-root",
            "/run/r",
            "--id",
            "c1",
            "--bundle",
            "/b",
            "--log-path",
            "/l/0.log",
            "--state-dir",
            "/s",
            "--tty",
        ]))
        .unwrap();
        assert_eq!(exe, Path::new("/usr/bin/rrun-cri"));
        assert_eq!(a.runtime_root, Path::new("/run/r"));
        assert_eq!(a.id, "c1");
        assert_eq!(a.bundle, Path::new("/b"));
        assert_eq!(a.log_path, Path::new("/l/0.log"));
        assert_eq!(a.state_dir, Path::new("/s"));
        assert!(a.tty);
        assert!(a.helper.is_none());
    }

    #[test]
    fn bad_small_monitor_arguments_are_refused() {
        for bad in [
            &["--id"][..],
            &["--what", "x"],
            &["--runtime-exe", "/x", "--id", "c"],
        ] {
            assert!(parse_small_monitor_args(argv(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn helper_answers_round_trip() {
        let parse = |r| HelperAnswer::decode(&HelperAnswer::encode(r));
        assert_eq!(parse(Ok(1234)), Ok(1234));
        let no = Failure::from("no: such".to_string());
        assert_eq!(parse(Err(no.clone())), Err(no));
        assert!(HelperAnswer::decode(b"").is_err());
        assert!(HelperAnswer::decode(b"ok x").is_err());
        assert!(HelperAnswer::decode(b"junk").is_err());
        // A long message still fits the pipe.
        assert!(HelperAnswer::encode(Err("x".repeat(100_000).into())).len() <= 8192);
    }

    #[test]
    fn error_chain_names_each_cause_once() {
        #[derive(Debug)]
        struct E(&'static str, Option<Box<E>>);
        impl std::fmt::Display for E {
            fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(self.0)
            }
        }
        impl std::error::Error for E {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                self.1.as_deref().map(|e| e as _)
            }
        }
        let e = E(
            "top: low",
            Some(Box::new(E("low", Some(Box::new(E("root", None)))))),
        );
        assert_eq!(error_chain(&e), "top: low: root");
    }
}
