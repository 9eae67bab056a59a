//! What the monitor asks of the runtime: create the container, count its OOM kills, delete
//! it when the monitor cannot watch it. Two ways to do it:
//!
//! - [`InProcess`]: call the rrun library (the monitor runs inside the big `rrun-cri`);
//! - [`ViaExe`]: run `rrun-cri monitor --helper ...` for each (the monitor runs as the
//!   small `rrun-cri-monitor` binary, which must not link the runtime: see
//!   `src/bin/rrun-cri-monitor.rs`).
//!
//! The monitor is generic over the backend, so each binary links only its own.

use super::protocol::{error_chain, Failure, HelperAnswer};
use super::{sys, MonitorArgs};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::ForkResult;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The descriptor on which a helper writes its answer.
pub const RESULT_FD: i32 = 3;

/// What a `rrun-cri monitor --helper` run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Helper {
    /// Create the container (stdio already set for its init); answers the init's pid ([`HelperAnswer`]).
    Create,
    /// Answers the container's OOM kill count.
    OomKills,
    /// Delete the container (`--force`); answers 0.
    Delete,
}

impl Helper {
    fn name(self) -> &'static str {
        match self {
            Helper::Create => "create",
            Helper::OomKills => "oom-kills",
            Helper::Delete => "delete",
        }
    }
}

pub trait Backend {
    /// Creates the container. Called in a forked child whose 0/1/2 are the init's; it may
    /// exec (then the answer comes on `result`) or return the init's pid.
    fn create(&self, args: &MonitorArgs, console: Option<&Path>, result: &OwnedFd) -> Answer;
    fn oom_kills(&self, args: &MonitorArgs) -> Result<u64, String>;
    fn delete(&self, args: &MonitorArgs) -> Result<(), String>;
}

/// What [`Backend::create`] did.
pub enum Answer {
    Done(Result<i32, Failure>),
    /// Not reached by a successful exec; the error of a failed one.
    ExecFailed(String),
}

/// The runtime library, in this process.
pub struct InProcess;

impl Backend for InProcess {
    fn create(&self, args: &MonitorArgs, console: Option<&Path>, _: &OwnedFd) -> Answer {
        Answer::Done(create_here(args, console))
    }

    fn oom_kills(&self, args: &MonitorArgs) -> Result<u64, String> {
        rrun::Runtime::new(&args.runtime_root)
            .oom_kills(&args.id)
            .map_err(|e| error_chain(&e))
    }

    fn delete(&self, args: &MonitorArgs) -> Result<(), String> {
        rrun::Runtime::new(&args.runtime_root)
            .delete(&args.id, true)
            .map_err(|e| error_chain(&e))
    }
}

fn create_here(args: &MonitorArgs, console: Option<&Path>) -> Result<i32, Failure> {
    let opts = rrun::CreateOptions {
        id: args.id.clone(),
        bundle: args.bundle.clone(),
        console_socket: console.map(Path::to_path_buf),
        ..Default::default()
    };
    rrun::Runtime::new(&args.runtime_root)
        .create(&opts)
        .map_err(|e| Failure::runtime(&e))
}

/// The big `rrun-cri` binary at this path, run as a helper for each operation.
pub struct ViaExe(pub PathBuf);

impl ViaExe {
    fn argv(&self, args: &MonitorArgs, helper: Helper) -> Result<Vec<CString>, String> {
        let mut v: Vec<OsString> = vec![self.0.clone().into(), "monitor".into()];
        let mut push = |flag: &str, value: &OsStr| {
            v.push(flag.into());
            v.push(value.to_os_string());
        };
        push("--runtime-root", args.runtime_root.as_os_str());
        push("--id", OsStr::new(&args.id));
        push("--bundle", args.bundle.as_os_str());
        push("--log-path", args.log_path.as_os_str());
        push("--state-dir", args.state_dir.as_os_str());
        push("--helper", OsStr::new(helper.name()));
        push("--result-fd", OsStr::new(&RESULT_FD.to_string()));
        if args.tty {
            v.push("--tty".into());
        }
        v.into_iter()
            .map(|s| CString::new(s.as_bytes()).map_err(|_| "an argument holds a NUL byte".into()))
            .collect()
    }

    /// Puts `result` on [`RESULT_FD`] (inherited) and execs the helper; returns only on
    /// failure.
    fn exec(&self, args: &MonitorArgs, helper: Helper, result: &OwnedFd) -> String {
        let argv = match self.argv(args, helper) {
            Ok(a) => a,
            Err(e) => return e,
        };
        if let Err(e) =
            sys::dup_onto(result.as_fd(), RESULT_FD).and_then(|()| sys::keep_on_exec(RESULT_FD))
        {
            return format!("dup2 to fd {RESULT_FD}: {e}");
        }
        let Some(exe) = argv.first() else {
            return "no helper binary".into();
        };
        let err = nix::unistd::execv(exe, &argv).err();
        format!("executing {}: {err:?}", self.0.display())
    }

    /// Runs a helper that answers and exits (not `create`): fork, exec, wait, read.
    fn run(&self, args: &MonitorArgs, helper: Helper) -> Result<u64, String> {
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe: {e}"))?;
        let child = match sys::fork().map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                drop(r);
                let msg = self.exec(args, helper, &w);
                let _ = nix::unistd::write(&w, &HelperAnswer::encode(Err(msg.into())));
                sys::exit_now(127)
            }
            ForkResult::Parent { child } => child,
        };
        drop(w);
        let answer = read_answer(child, &r)?;
        HelperAnswer::decode(&answer)
            .map(|n| n as u64)
            .map_err(|f| f.message)
    }
}

impl Backend for ViaExe {
    fn create(&self, args: &MonitorArgs, _console: Option<&Path>, result: &OwnedFd) -> Answer {
        Answer::ExecFailed(self.exec(args, Helper::Create, result))
    }

    fn oom_kills(&self, args: &MonitorArgs) -> Result<u64, String> {
        self.run(args, Helper::OomKills)
    }

    fn delete(&self, args: &MonitorArgs) -> Result<(), String> {
        self.run(args, Helper::Delete).map(drop)
    }
}

/// Waits for `child`, then reads its answer from `r` without waiting for end of file (a
/// container's init may hold a copy of the write end until its execve).
pub fn read_answer(child: nix::unistd::Pid, r: &OwnedFd) -> Result<Vec<u8>, String> {
    loop {
        match waitpid(child, None) {
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(format!("waiting for the helper process: {e}")),
            Ok(WaitStatus::Exited(..)) | Ok(WaitStatus::Signaled(..)) => break,
            Ok(_) => continue,
        }
    }
    let mut buf = [0u8; 8192];
    let mut n = 0;
    if sys::set_nonblocking(r, true).is_ok() {
        while n < buf.len() {
            match nix::unistd::read(r, &mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(Errno::EINTR) => continue,
                Err(_) => break,
            }
        }
    }
    Ok(buf[..n].to_vec())
}

/// `rrun-cri monitor --helper H --result-fd FD` (in the big binary).
pub fn run_helper(args: &MonitorArgs, helper: Helper, fd: i32) -> i32 {
    // Before the descriptor is taken (which makes it close-on-exec): `create` re-executes.
    let ready = match helper {
        Helper::Create => prepare_create(),
        Helper::OomKills | Helper::Delete => Ok(()),
    };
    let Some(result) = sys::inherited_fd(fd) else {
        eprintln!("rrun-cri monitor --helper: fd {fd} is not open");
        return 1;
    };
    let answer = ready.map_err(Failure::from).and_then(|()| match helper {
        Helper::Create => {
            let console = args.tty.then(|| super::console_socket(&args.state_dir));
            create_here(args, console.as_deref()).map(i64::from)
        }
        Helper::OomKills => InProcess
            .oom_kills(args)
            .map(|n| n as i64)
            .map_err(Failure::from),
        Helper::Delete => InProcess.delete(args).map(|()| 0).map_err(Failure::from),
    });
    let _ = nix::unistd::write(&result, &HelperAnswer::encode(answer));
    0
}

fn prepare_create() -> Result<(), String> {
    // The init is cloned from this process: it must not be the host's binary (the result
    // descriptor, not close-on-exec, survives the re-exec).
    rrun::reexec_from_protected_exe().map_err(|e| {
        format!(
            "re-executing from a protected view of the binary: {}",
            error_chain(&e)
        )
    })?;
    sys::ensure_single_threaded()?;
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("prctl(PR_SET_DUMPABLE): {e}"))?;
    // Rust's runtime ignored SIGPIPE again when this binary started.
    sys::default_sigpipe().map_err(|e| format!("resetting SIGPIPE: {e}"))
}
