//! The monitor's set-up and the container's creation: signals, the state directory's
//! sockets and pid file, the container's stdio (pipes, or a pty received on the console
//! socket), and the create itself from a short-lived forked child.

use super::backend::{self, Answer, Backend};
use super::log::{Framer, LogFile, RecordWriter, Stream, MAX_LINE};
use super::protocol::{error_chain, Failure, HelperAnswer};
use super::supervise::{Running, Source};
use super::{attach, control_socket, null_onto, pid_file, sys, MonitorArgs};
use nix::fcntl::OFlag;
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::ForkResult;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// Sets the monitor up and creates the container. On failure, everything made is gone.
pub(super) fn start_container<B: Backend>(
    args: &MonitorArgs,
    backend: &B,
) -> Result<Running, Failure> {
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
