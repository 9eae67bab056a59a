//! Exec and attach sessions (the kubelet's "remotecommand" protocol) over a [`Link`].
//!
//! Channels: 0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize (`{"Width":W,"Height":H}`),
//! and from `v5` the client's close message (`255` then the channel; closing stdin
//! closes the process's stdin). The session ends with one message on the error channel:
//! from `v4` a `metav1.Status` (Success, or Failure with reason `NonZeroExitCode` and the
//! code as the `ExitCode` cause: a non-zero exit is a result, not a transport error);
//! before `v4` the error's text alone, nothing on success.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::websocket::{Link, CLOSE_CHANNEL};
use cri_proto::api;

use super::{Backend, Process, ProcessIo};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;

/// The protocol version the client chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V1,
    V2,
    V3,
    V4,
    V5,
}

/// How long the output is still read after the process has exited: a process it left
/// behind in the background may hold the pipes open forever (the monitor's rule).
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// How a session ended.
pub(super) enum Outcome {
    Exited(i32),
    Failed(String),
    /// The client went away: nothing is sent.
    Gone,
}

/// What a remotecommand session is for.
pub enum Target {
    Exec(api::ExecRequest),
    /// With its connection to the monitor, made before the client was answered: once the
    /// client has its answer, the container's output reaches it.
    Attach(api::AttachRequest, OwnedFd),
}

/// The target of an exec or attach request; attach connects to the monitor now.
pub fn target_of(req: super::Request, backend: &dyn Backend) -> Result<Target, String> {
    match req {
        super::Request::Exec(e) => Ok(Target::Exec(e)),
        super::Request::Attach(a) => {
            let conn = backend
                .attach_socket(&a.container_id)
                .and_then(|path| super::attach::connect_monitor(&path))?;
            Ok(Target::Attach(a, conn))
        }
        super::Request::PortForward(_) => Err("a port-forward request is no exec".to_string()),
    }
}

pub async fn run(target: Target, version: Version, link: Link, backend: Arc<dyn Backend>) {
    let Link { incoming, outgoing } = link;
    // The kubelet's words for a non-zero exit name the command.
    let mut what = String::new();
    let outcome = match target {
        Target::Exec(req) => {
            what = format!("error executing command [{}], ", req.cmd.join(" "));
            let want = Want {
                stdout: req.stdout,
                stderr: req.stderr,
            };
            match backend.exec(req).await {
                Ok(p) => exec(p, want, incoming, &outgoing).await,
                Err(e) => Outcome::Failed(e),
            }
        }
        Target::Attach(req, conn) => {
            let want = Want {
                stdout: req.stdout,
                stderr: req.stderr,
            };
            super::attach::attach(conn, req.stdin, want, incoming, &outgoing).await
        }
    };
    let status = match outcome {
        Outcome::Gone => return,
        Outcome::Exited(0) => None,
        Outcome::Exited(code) => Some((
            format!("command terminated with non-zero exit code: {what}exit code {code}"),
            Some(code),
        )),
        Outcome::Failed(msg) => Some((msg, None)),
    };
    if let Some(msg) = status_message(version, status) {
        let _ = outgoing.send((ERROR, msg.into_bytes())).await;
    }
}

/// Which output streams the client asked for.
#[derive(Clone, Copy)]
pub struct Want {
    pub stdout: bool,
    pub stderr: bool,
}

/// The error channel's last message: `None` (success, before v4: nothing is sent).
fn status_message(version: Version, failure: Option<(String, Option<i32>)>) -> Option<String> {
    if version < Version::V4 {
        return failure.map(|(msg, _)| msg);
    }
    let doc = match failure {
        None => serde_json::json!({"metadata": {}, "status": "Success"}),
        Some((message, Some(code))) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Some((message, None)) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "InternalError",
            "code": 500,
        }),
    };
    Some(doc.to_string())
}

/// A resize message: `{"Width":80,"Height":24}`.
pub fn parse_resize(data: &[u8]) -> Option<(u16, u16)> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Size {
        width: u16,
        height: u16,
    }
    let s: Size = serde_json::from_slice(data).ok()?;
    Some((s.width, s.height))
}

/// Copies a stream to a channel until its end.
async fn copy_out(mut from: impl AsyncRead + Unpin, ch: u8, to: mpsc::Sender<(u8, Vec<u8>)>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.send((ch, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn exec(
    process: Process,
    want: Want,
    mut incoming: mpsc::Receiver<(u8, Vec<u8>)>,
    out: &mpsc::Sender<(u8, Vec<u8>)>,
) -> Outcome {
    let Process { io, mut exited } = process;
    let mut readers = tokio::task::JoinSet::new();
    let mut stdin_pipe = None;
    let mut pty = None;
    match io {
        ProcessIo::Pipes {
            stdin,
            stdout,
            stderr,
        } => {
            stdin_pipe = stdin;
            if let Some(s) = stdout.filter(|_| want.stdout) {
                readers.spawn(copy_out(s, STDOUT, out.clone()));
            }
            if let Some(s) = stderr.filter(|_| want.stderr) {
                readers.spawn(copy_out(s, STDERR, out.clone()));
            }
        }
        ProcessIo::Tty(master) => match Pty::new(master) {
            Ok(p) => {
                let p = Arc::new(p);
                let reader = p.clone();
                let to = out.clone();
                readers.spawn(async move { reader.copy_out(STDOUT, to).await });
                pty = Some(p);
            }
            Err(e) => return Outcome::Failed(format!("the exec's terminal: {e}")),
        },
    }
    let input = async {
        while let Some((ch, data)) = incoming.recv().await {
            match ch {
                STDIN => {
                    if let Some(p) = &pty {
                        let _ = p.write_all(&data).await;
                    } else if let Some(s) = stdin_pipe.as_mut() {
                        if s.write_all(&data).await.is_err() {
                            stdin_pipe = None;
                        }
                    }
                }
                RESIZE => {
                    if let (Some(p), Some((w, h))) = (&pty, parse_resize(&data)) {
                        let _ = rrun::pty::set_window_size(p.fd.as_raw_fd(), h, w);
                    }
                }
                // The process sees the end of its input.
                CLOSE_CHANNEL if data.first() == Some(&STDIN) => stdin_pipe = None,
                _ => {}
            }
        }
    };
    let code = tokio::select! {
        code = &mut exited => code,
        () = input => return Outcome::Gone,
    };
    // Everything the process wrote goes out before the status.
    let drained = tokio::time::timeout(DRAIN_TIME, async {
        while readers.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        readers.abort_all();
    }
    match code {
        Ok(code) => Outcome::Exited(code),
        Err(e) => Outcome::Failed(e),
    }
}

/// The master side of a terminal, non-blocking.
pub struct Pty {
    fd: AsyncFd<OwnedFd>,
}

impl Pty {
    pub fn new(fd: OwnedFd) -> std::io::Result<Pty> {
        Ok(Pty {
            fd: super::async_fd(fd)?,
        })
    }

    async fn copy_out(&self, ch: u8, to: mpsc::Sender<(u8, Vec<u8>)>) {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return;
            };
            match guard.try_io(|fd| Ok(nix::unistd::read(fd.get_ref(), &mut buf)?)) {
                Ok(Ok(0)) => return,
                Ok(Ok(n)) => {
                    if to.send((ch, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
                // EIO: every slave descriptor is closed, the terminal's end of file.
                Ok(Err(_)) => return,
                Err(_would_block) => continue,
            }
        }
    }

    async fn write_all(&self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| Ok(nix::unistd::write(fd.get_ref(), data)?)) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_by_version() {
        assert_eq!(status_message(Version::V3, None), None);
        assert_eq!(
            status_message(Version::V2, Some(("boom".into(), None))).as_deref(),
            Some("boom")
        );
        let ok: serde_json::Value =
            serde_json::from_str(&status_message(Version::V4, None).unwrap()).unwrap();
        assert_eq!(ok["status"], "Success");
        let bad: serde_json::Value = serde_json::from_str(
            &status_message(Version::V5, Some(("x".into(), Some(3)))).unwrap(),
        )
        .unwrap();
        assert_eq!(bad["status"], "Failure");
        assert_eq!(bad["reason"], "NonZeroExitCode");
        assert_eq!(bad["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(bad["details"]["causes"][0]["message"], "3");
    }

    #[test]
    fn resize_messages() {
        assert_eq!(
            parse_resize(br#"{"Width":100,"Height":40}"#),
            Some((100, 40))
        );
        assert_eq!(parse_resize(b"{}"), None);
        assert_eq!(parse_resize(b"junk"), None);
    }
}
