//! The monitor's life once its container exists: one single-threaded poll loop that logs
//! the container's output and fans it out to attach clients, serves the control socket
//! (`control.rs`), reaps children, and once the init has exited and its output is drained,
//! writes `exit.json`.

use super::backend::Backend;
use super::log::{Framer, LogFile, RecordWriter, Stream, MAX_LINE};
use super::protocol::ExitStatus;
use super::{attach, control_socket, exit_file, MonitorArgs, DRAIN_TIME};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where the container's output comes from.
pub(super) struct Source {
    pub(super) fd: OwnedFd,
    pub(super) stream: Stream,
    pub(super) framer: Framer,
}

/// A monitor whose container exists.
pub(super) struct Running {
    pub(super) args: MonitorArgs,
    pub(super) pid: i32,
    pub(super) signals: SignalFd,
    pub(super) control: UnixListener,
    /// The attach socket's listener and its clients ([`attach`]).
    pub(super) attach: OwnedFd,
    pub(super) clients: Vec<attach::Client>,
    pub(super) input: attach::Input,
    pub(super) sources: Vec<Source>,
    pub(super) log: RecordWriter<LogFile>,
}

/// What the container's init ended with.
struct Exit {
    code: i32,
    signal: Option<i32>,
    finished_at: SystemTime,
}

impl Running {
    /// The loop, until the container's init has exited and its output is logged.
    pub(super) fn supervise<B: Backend>(&mut self, backend: &B) -> i32 {
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
