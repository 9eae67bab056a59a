//! `rrun-cri exec-sync`: one process run in a container for ExecSync, from a fresh
//! single-threaded process (see the module above for why).
//!
//! ```text
//! rrun-cri exec-sync --runtime-root DIR --id ID --process FILE --status-file FILE [--timeout SECS]
//! ```
//!
//! `FILE` is an OCI `Process` (JSON). The process inherits this helper's stdin, stdout and
//! stderr (the server's pipes). It is our child (rrun clones it from us), so we wait for
//! it; with `--timeout` > 0 it is killed (SIGKILL) when the time is up. Then
//! an [`ExecStatus`] goes to the status file (atomically) and the helper
//! exits 0. SIGTERM to the helper kills the process (SIGKILL), which is then reaped as
//! usual: the streaming server's way to end an exec whose client has gone. With
//! `--console-socket`, the process gets a terminal whose master goes to that socket (the
//! process's `terminal` must be true). On an error (unknown container, bad process) the message goes to stderr,
//! a failed [`ExecStatus`] to the status file, and the helper exits 1.

use super::protocol::{error_chain, ExecStatus, Failure};
use super::sys;
use crate::error::ErrorKind;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Arguments of `rrun-cri exec-sync`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecSyncArgs {
    /// The rrun state root (the runtime's `--root`).
    #[arg(long, value_name = "DIR")]
    pub runtime_root: PathBuf,
    /// The container's id.
    #[arg(long)]
    pub id: String,
    /// The process to run: an OCI runtime-spec `Process` as JSON.
    #[arg(long, value_name = "FILE")]
    pub process: PathBuf,
    /// Where the result goes (written atomically).
    #[arg(long, value_name = "FILE")]
    pub status_file: PathBuf,
    /// Kill the process after this many seconds (0: never).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub timeout: u64,
    /// Where the runtime sends the master of the process's terminal.
    #[arg(long, value_name = "PATH")]
    pub console_socket: Option<PathBuf>,
}

/// Runs the helper; returns the process's exit code. Must be called before any other
/// thread exists.
pub fn run_exec_sync(args: &ExecSyncArgs) -> i32 {
    let (status, code) = match exec_and_wait(args) {
        Ok((exit_code, timed_out)) => (
            ExecStatus::Exited {
                exit_code,
                timed_out,
            },
            0,
        ),
        Err(msg) => {
            eprintln!("rrun-cri exec-sync: {msg}");
            // What the runtime met running the process: containerd's Unknown.
            (ExecStatus::Failed(Failure::new(ErrorKind::Unknown, msg)), 1)
        }
    };
    let doc = serde_json::to_vec(&status).unwrap_or_default();
    if let Err(e) = crate::records::write_file_atomic(&args.status_file, &doc) {
        eprintln!(
            "rrun-cri exec-sync: writing {}: {e}",
            args.status_file.display()
        );
        return 1;
    }
    code
}

/// Runs the process; answers its exit code (128 + signal when killed) and whether the
/// timeout killed it.
fn exec_and_wait(args: &ExecSyncArgs) -> Result<(i32, bool), String> {
    rrun::reexec_from_protected_exe().map_err(|e| {
        format!(
            "re-executing from a protected view of the binary: {}",
            error_chain(&e)
        )
    })?;
    sys::ensure_single_threaded()?;
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("prctl(PR_SET_DUMPABLE, 0): {e}"))?;
    let text = std::fs::read(&args.process)
        .map_err(|e| format!("reading {}: {e}", args.process.display()))?;
    let process: oci_spec::runtime::Process = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: not an OCI process: {e}", args.process.display()))?;
    // Blocked before the process exists, so its exit is never missed: it stays pending
    // for the signalfd. The process's init clears the mask it inherits.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.add(Signal::SIGTERM);
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| format!("blocking SIGCHLD: {e}"))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("signalfd: {e}"))?;
    let pid = rrun::Runtime::new(&args.runtime_root)
        .exec(
            &args.id,
            &process,
            &rrun::ExecOptions {
                console_socket: args.console_socket.clone(),
                ..Default::default()
            },
        )
        .map_err(|e| error_chain(&e))?;
    let pid = Pid::from_raw(pid);
    // A timeout too far away to represent is no timeout.
    let deadline = (args.timeout > 0)
        .then(|| Instant::now().checked_add(Duration::from_secs(args.timeout)))
        .flatten();
    let mut timed_out = false;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok((code, timed_out)),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok((128 + sig as i32, timed_out)),
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("waiting for process {pid}: {e}")),
        }
        let timeout = match deadline {
            Some(d) if !timed_out => {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    // The process is ours and not reaped yet: the pid cannot be reused.
                    let _ = kill(pid, Signal::SIGKILL);
                    timed_out = true;
                    continue;
                }
                PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX)
            }
            _ => PollTimeout::NONE,
        };
        let mut fds = [PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        while let Ok(Some(info)) = sfd.read_signal() {
            if info.ssi_signo == Signal::SIGTERM as u32 {
                // Not reaped yet: the pid is still this process.
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
    }
}
