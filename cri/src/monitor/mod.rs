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
mod control;
mod create;
mod exec_sync;
pub mod log;
mod pod_init;
pub mod protocol;
mod small_monitor;
mod supervise;
mod sys;

pub use backend::Helper;
pub use exec_sync::{run_exec_sync, ExecSyncArgs};
pub use pod_init::run_pod_init;
pub use small_monitor::parse_small_monitor_args;

use backend::{Backend, InProcess, ViaExe};
use create::start_container;
use protocol::{Failure, StartReport};
use small_monitor::exec_small_monitor;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::unistd::ForkResult;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the monitor still reads the container's streams after its init has exited,
/// waiting for end of file: a process that escaped the container's end (a daemon without
/// its own PID namespace) may hold them open forever.
pub const DRAIN_TIME: Duration = Duration::from_secs(2);

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
