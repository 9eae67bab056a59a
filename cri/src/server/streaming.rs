//! Exec, Attach and PortForward: the URLs of the streaming server ([`crate::streaming`]),
//! and what its sessions need from the containers (the [`Backend`]).
//!
//! An exec session's process is run by the exec helper (`rrun-cri exec-sync`, a fresh
//! single-threaded process: the server never clones), with the session's pipes as its
//! stdio, or with `--console-socket` for a terminal whose master the helper's runtime
//! sends here. The helper reaps the process and writes its exit code; a session whose
//! client goes away sends the helper SIGTERM, on which it kills the process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use crate::error::{Error, ErrorKind};
use cri_proto::api;

use super::{new_id, ContainerPhase, Cri};
use crate::records::SandboxState;
use crate::streaming::{
    Backend, BoxFuture, Process, ProcessIo, RefusedError, Request, StreamConfig, StreamServer,
};

impl Cri {
    /// Starts the streaming server (once, at startup).
    pub async fn start_streaming(&self, config: &StreamConfig) -> Result<(), String> {
        let server = StreamServer::start(config, Arc::new(self.clone())).await?;
        tracing::info!("streaming server on http://{}", server.address());
        self.inner
            .streaming
            .set(server)
            .map_err(|_| "the streaming server is already started".to_string())
    }

    /// A one-time URL for `req`, once the request is known to be good.
    pub fn stream_url(&self, req: Request) -> Result<String, Error> {
        match &req {
            Request::Exec(r) if r.cmd.is_empty() => {
                return Err(Error::invalid_argument("Exec needs a command"))
            }
            Request::Exec(r) if r.tty && r.stderr => {
                return Err(Error::invalid_argument(
                    "tty and stderr cannot both be true (a terminal has one output stream)",
                ))
            }
            Request::Exec(r) if !(r.stdin || r.stdout || r.stderr) => {
                return Err(Error::invalid_argument(
                    "one of stdin, stdout, and stderr must be true",
                ))
            }
            Request::Attach(r) if !(r.stdin || r.stdout || r.stderr) => {
                return Err(Error::invalid_argument(
                    "one of stdin, stdout, and stderr must be true",
                ))
            }
            _ => {}
        }
        self.check_target(&req)?;
        let server = self
            .inner
            .streaming
            .get()
            .ok_or_else(|| Error::unavailable("the streaming server is not running"))?;
        server.url(req).map_err(Error::resource_exhausted)
    }

    /// The container (running) or pod (ready) that the request is for.
    fn check_target(&self, req: &Request) -> Result<(), Error> {
        let container = match req {
            Request::Exec(r) => &r.container_id,
            Request::Attach(r) => &r.container_id,
            Request::PortForward(r) => {
                let pod = self.sandbox(&r.pod_sandbox_id)?;
                if pod.state != SandboxState::Ready {
                    return Err(Error::failed_precondition(format!(
                        "pod sandbox {} is not ready",
                        pod.id
                    )));
                }
                return Ok(());
            }
        };
        let rec = self.container(container)?;
        if self.phase(&rec) != ContainerPhase::Running {
            return Err(Error::failed_precondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        Ok(())
    }

    async fn start_exec(&self, req: api::ExecRequest) -> Result<Process, String> {
        let rec = self.container(&req.container_id).map_err(msg)?;
        let mut process = self.exec_process(&rec, req.cmd).map_err(msg)?;
        process.set_terminal(Some(req.tty));
        let tag = new_id().map_err(msg)?;
        let dir = rec.monitor_dir.join(format!("stream-{}", &tag[..12]));
        std::fs::create_dir(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let mut helper = ExecHelper {
            child: None,
            dir: dir.clone(),
            finished: false,
        };
        let process_file = dir.join("process.json");
        let status_file = dir.join("status.json");
        crate::records::write_json_atomic(&process_file, &process).map_err(|e| e.to_string())?;
        let mut cmd = tokio::process::Command::new(&self.inner.config.exe);
        cmd.arg("exec-sync")
            .arg("--runtime-root")
            .arg(&self.inner.config.runtime_root)
            .arg("--id")
            .arg(&rec.id)
            .arg("--process")
            .arg(&process_file)
            .arg("--status-file")
            .arg(&status_file)
            .kill_on_drop(false);
        let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        let console = if req.tty {
            let (path, listener) = rrun::pty::console_pair(&dir).map_err(|e| e.to_string())?;
            listener.set_nonblocking(true).map_err(|e| e.to_string())?;
            let listener =
                tokio::net::UnixListener::from_std(listener).map_err(|e| e.to_string())?;
            cmd.arg("--console-socket").arg(&path);
            cmd.stdin(Stdio::null()).stdout(Stdio::null());
            Some(listener)
        } else {
            cmd.stdin(pipe(req.stdin)).stdout(pipe(req.stdout));
            None
        };
        cmd.stderr(pipe(req.stderr && !req.tty));
        let child = helper.child.insert(
            cmd.spawn()
                .map_err(|e| format!("starting the exec helper: {e}"))?,
        );
        let io = match console {
            None => ProcessIo::Pipes {
                stdin: child.stdin.take(),
                stdout: child.stdout.take(),
                stderr: child.stderr.take(),
            },
            Some(listener) => {
                // The helper's runtime connects and sends the master while it sets the
                // process up; a helper that fails first has exited instead.
                let stream = tokio::select! {
                    accepted = listener.accept() => accepted.map_err(|e| e.to_string())?.0,
                    _ = child.wait() => return Err(helper.wait().await.err().unwrap_or_else(
                        || "the exec helper ended without sending the terminal".to_string())),
                };
                let stream = stream.into_std().map_err(|e| e.to_string())?;
                stream.set_nonblocking(false).map_err(|e| e.to_string())?;
                let master = tokio::task::spawn_blocking(move || rrun::pty::recv_fd(&stream))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("receiving the exec's terminal: {e}"))?;
                ProcessIo::Tty(master)
            }
        };
        Ok(Process {
            io,
            exited: Box::pin(helper.wait()),
        })
    }
}

fn msg(s: Error) -> String {
    s.message().to_string()
}

/// The exec helper of one session. Dropped before the process has been reaped (the
/// client went away), it has the helper kill the process, and reaps the helper.
struct ExecHelper {
    child: Option<tokio::process::Child>,
    dir: PathBuf,
    finished: bool,
}

impl ExecHelper {
    async fn wait(mut self) -> Result<i32, String> {
        let Some(child) = self.child.as_mut() else {
            return Err("no exec helper".to_string());
        };
        let _ = child.wait().await;
        self.finished = true;
        let status = crate::monitor::protocol::ExecStatus::parse(
            std::fs::read(self.dir.join("status.json")).ok().as_deref(),
        );
        match status {
            crate::monitor::protocol::ExecStatus::Failed(f) => Err(f.message),
            crate::monitor::protocol::ExecStatus::Exited { exit_code, .. } => Ok(exit_code),
        }
    }
}

impl Drop for ExecHelper {
    fn drop(&mut self) {
        let dir = std::mem::take(&mut self.dir);
        match self.child.take() {
            Some(mut child) if !self.finished => {
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = child.wait().await;
                        remove_dir(&dir);
                    });
                }
            }
            _ => remove_dir(&dir),
        }
    }
}

fn remove_dir(dir: &Path) {
    if !dir.as_os_str().is_empty() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

impl Backend for Cri {
    fn check(&self, req: &Request) -> Result<(), RefusedError> {
        self.check_target(req).map_err(|s| match s.kind() {
            ErrorKind::NotFound | ErrorKind::InvalidArgument => {
                RefusedError::NotFound(s.message().to_string())
            }
            ErrorKind::FailedPrecondition => RefusedError::Conflict(s.message().to_string()),
            _ => RefusedError::Internal(s.message().to_string()),
        })
    }

    fn exec(&self, req: api::ExecRequest) -> BoxFuture<Result<Process, String>> {
        let me = self.clone();
        Box::pin(async move { me.start_exec(req).await })
    }

    fn attach_socket(&self, container_id: &str) -> Result<PathBuf, String> {
        let rec = self.container(container_id).map_err(msg)?;
        let path = crate::monitor::attach::socket_path(&rec.monitor_dir);
        if !path.exists() {
            return Err(format!(
                "container {} has no attach socket (its monitor has ended, or predates attach)",
                rec.id
            ));
        }
        Ok(path)
    }

    fn network_namespace(&self, pod_id: &str) -> Result<Option<PathBuf>, String> {
        let pod = self.sandbox(pod_id).map_err(msg)?;
        Ok(pod.namespaces.net.clone())
    }
}
