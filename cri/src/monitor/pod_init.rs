//! The pid 1 of a pod-wide pid namespace (`shareProcessNamespace`).
//!
//! A pid namespace, unlike net, IPC or UTS, cannot live on a bind mount alone: once its
//! first process (its init) is gone, the kernel refuses every new process in it. So a pod
//! whose containers share one needs a process that outlives them all, and that reaps the
//! orphans they leave (the namespace's orphans are reparented to its init): this one, the
//! only job kept of containerd's pause container.
//!
//! ```text
//! rrun-cri-monitor --pod-init      (or the hidden `rrun-cri pod-init`)
//! ```
//!
//! Unshares a pid namespace, forks its init and prints `{"pid":N}` (the init's pid in the
//! caller's namespace) or `{"error":"..."}` on stdout, then exits. The init has no stdio,
//! is in a session of its own (the server's signals never reach it) and is not dumpable.
//! It waits for SIGCHLD with every signal blocked and reaps; nothing but SIGKILL from an
//! ancestor namespace ends it (the kernel drops signals to a pid-namespace init that has
//! no handler for them). It stays in the server's cgroup: on cgroup v2 the pod's cgroup,
//! whose children have controllers enabled, may hold no process of its own.

use super::sys;
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{ForkResult, Pid};
use std::os::fd::AsFd;

/// Runs the pod init's starter; returns the starter's exit code.
pub fn run_pod_init() -> i32 {
    if let Err(e) = sys::ensure_single_threaded() {
        return super::report_error(&e);
    }
    // Blocked before the fork, so that no SIGCHLD is missed between the fork and the
    // init's first wait; the mask is inherited.
    if let Err(e) =
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::all()), None)
    {
        return super::report_error(&format!("blocking signals: {e}"));
    }
    if let Err(e) = unshare(CloneFlags::CLONE_NEWPID) {
        return super::report_error(&format!("unshare(CLONE_NEWPID): {e}"));
    }
    match sys::fork() {
        Err(e) => super::report_error(&format!("fork of the pod's pid 1: {e}")),
        Ok(ForkResult::Parent { child }) => {
            println!(
                "{}",
                super::protocol::StartReport::Started {
                    pid: child.as_raw()
                }
                .to_line()
            );
            0
        }
        Ok(ForkResult::Child) => init(),
    }
}

fn init() -> ! {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        // The starter's stdout is the server's pipe: holding it would keep the server
        // waiting for its end forever.
        for fd in 0..=2 {
            let _ = sys::dup_onto(null.as_fd(), fd);
        }
    }
    sys::close_fds_from(3);
    let _ = nix::unistd::setsid();
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = std::env::set_current_dir("/");
    // It lives as long as the pod: keep only the loop's pages.
    sys::trim_heap();
    sys::drop_clean_exe_pages();
    let sigchld = {
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        set
    };
    loop {
        // Reap everything that has exited, then sleep until the next SIGCHLD.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        if sigchld.wait().is_err() {
            // Only EINTR is possible, and with every signal blocked not even that.
            continue;
        }
    }
}
