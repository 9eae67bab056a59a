//! The CRI streaming server: where `Exec`, `Attach` and `PortForward` send the kubelet.
//!
//! The RPCs do not stream themselves: each answers a URL on this HTTP server
//! (`http://ADDR:PORT/exec/TOKEN`, `/attach/TOKEN`, `/portforward/TOKEN`), as containerd's
//! does. The token is random, names the request it was made for, is good for one use and
//! expires after [`TOKEN_TTL`] (the kubelet's own cache keeps URLs that long). The client
//! (the kubelet, or anything it proxies) upgrades the request to a WebSocket speaking the
//! Kubernetes channel protocols ([`websocket`]); the session itself is
//! [`remotecommand`] (exec, attach) or [`portforward`].
//!
//! What runs in the container is the [`Backend`]'s business (the CRI server's
//! `server/streaming.rs`): this module knows only processes with stdio, attach sockets of
//! monitors and network namespaces.

pub mod attach;
mod http_server;
pub mod portforward;
pub mod remotecommand;
pub mod spdy;
mod spdy_session;
mod token;
pub mod websocket;

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cri_proto::api;

pub use token::TOKEN_TTL;

/// A boxed future, for the backend's asynchronous answers.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a URL was made for.
#[derive(Debug, Clone)]
pub enum Request {
    Exec(api::ExecRequest),
    Attach(api::AttachRequest),
    PortForward(api::PortForwardRequest),
}

impl Request {
    fn kind(&self) -> &'static str {
        match self {
            Request::Exec(_) => "exec",
            Request::Attach(_) => "attach",
            Request::PortForward(_) => "portforward",
        }
    }
}

/// Why a streaming request is refused before the upgrade: the HTTP status says which.
#[derive(Debug, thiserror::Error)]
pub enum RefusedError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

/// A process started for an exec session.
pub struct Process {
    pub io: ProcessIo,
    /// Resolves with the exit code (128 + signal when killed) once the process is reaped.
    /// Dropped before that, it kills the process (the client has gone) and reaps it.
    pub exited: BoxFuture<Result<i32, String>>,
}

/// The process's side of its stdio.
pub enum ProcessIo {
    /// Pipes; `None` where the request did not ask for that stream.
    Pipes {
        stdin: Option<tokio::process::ChildStdin>,
        stdout: Option<tokio::process::ChildStdout>,
        stderr: Option<tokio::process::ChildStderr>,
    },
    /// The master of the process's terminal (stdout and stderr are one stream).
    Tty(OwnedFd),
}

/// What the streaming server needs from the CRI server.
pub trait Backend: Send + Sync + 'static {
    /// Whether the request's container or pod is (still) there and running.
    fn check(&self, req: &Request) -> Result<(), RefusedError>;
    /// Starts `req.cmd` in the container.
    fn exec(&self, req: api::ExecRequest) -> BoxFuture<Result<Process, String>>;
    /// The attach socket of the container's monitor.
    fn attach_socket(&self, container_id: &str) -> Result<PathBuf, String>;
    /// The pod's network namespace file (`None`: the node's own, for host-network pods).
    fn network_namespace(&self, pod_id: &str) -> Result<Option<PathBuf>, String>;
}

/// Makes `fd` non-blocking and registers it with tokio's reactor.
pub(crate) fn async_fd(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = OFlag::from_bits_truncate(fcntl(&fd, FcntlArg::F_GETFL)?);
    fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    // SAFETY: an OwnedFd is an open descriptor that stays the same one until it is
    // dropped, and once moved into the AsyncFd only the AsyncFd can drop it.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }
        .map_err(|e| std::io::Error::other(e.to_string()))
}

/// The running streaming server.
pub struct StreamServer {
    addr: SocketAddr,
    tokens: token::Tokens,
}

/// The two configuration keys, containerd's names.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// `stream_server_address`, default `127.0.0.1`.
    pub address: String,
    /// `stream_server_port`, default 0 (an ephemeral port).
    pub port: u16,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            address: "127.0.0.1".to_string(),
            port: 0,
        }
    }
}

/// How long a handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

impl StreamServer {
    /// Binds the listener and serves it on the current tokio runtime.
    pub async fn start(
        config: &StreamConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<Arc<StreamServer>, String> {
        let ip: std::net::IpAddr = config.address.parse().map_err(|_| {
            format!(
                "stream_server_address {:?} is not an IP address",
                config.address
            )
        })?;
        let listener = tokio::net::TcpListener::bind((ip, config.port))
            .await
            .map_err(|e| format!("binding the streaming server to {ip}:{}: {e}", config.port))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("the streaming server's address: {e}"))?;
        let server = Arc::new(StreamServer {
            addr,
            tokens: token::Tokens::default(),
        });
        tokio::spawn(http_server::serve(listener, server.clone(), backend));
        Ok(server)
    }

    /// Where the server listens.
    pub fn address(&self) -> SocketAddr {
        self.addr
    }

    /// A one-time URL for `req`.
    pub fn url(&self, req: Request) -> Result<String, String> {
        let kind = req.kind();
        let token = self.tokens.insert(req)?;
        Ok(format!("http://{}/{kind}/{token}", self.addr))
    }
}
