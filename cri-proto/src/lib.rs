//! The Kubernetes CRI (runtime.v1, and v1alpha2 on the wire) API for both sides of the socket.
//!
//! The message types, the client stubs and the server traits are the `k8s-cri` crate's,
//! generated from the official `api.proto` by tonic; they are re-exported as [`api`]. This
//! crate adds what every server and client of ours needs on top: the version constants a
//! kubelet checks, [`serve`] (both services on a unix socket created 0600, open to every
//! client's `:authority`, answering v1alpha2 calls too, surviving a handler's panic) and a
//! unix-socket connector for a client. It knows nothing of the runtime.

mod authority;
mod serve;

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// The generated runtime.v1 types, clients and servers.
pub use k8s_cri::v1 as api;

pub use api::image_service_client::ImageServiceClient;
pub use api::image_service_server::{ImageService, ImageServiceServer};
pub use api::runtime_service_client::RuntimeServiceClient;
pub use api::runtime_service_server::{RuntimeService, RuntimeServiceServer};

pub use serve::{serve, ApiVersion, Deadline};

/// `VersionResponse.version`: the version of the kubelet runtime API, which the kubelet's
/// CRI client expects to be "0.1.0".
pub const KUBELET_API_VERSION: &str = "0.1.0";

/// gRPC message size limit, both directions. The kubelet uses 16 MiB; ExecSync output and
/// large list answers need more than tonic's 4 MiB default.
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Socket { path: PathBuf, source: io::Error },
    #[error("{path}: exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("serving on {path}: {source}")]
    Serve {
        path: PathBuf,
        source: tonic::transport::Error,
    },
    #[error("connecting to {path}: {source}")]
    Connect {
        path: PathBuf,
        source: tonic::transport::Error,
    },
}

/// Binds a unix socket for a gRPC server at `path`, readable and writable only by its
/// owner (0600: whoever can talk CRI can run anything as root). A socket file left by a
/// previous server is removed first; any other file there is an error.
///
/// The mode is set with `chmod` on the path right after `bind`; the parent directory is
/// created 0700 if missing, so no other user can reach the socket in between.
fn bind_unix(path: &Path) -> Result<UnixListenerStream, Error> {
    let err = |source| Error::Socket {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::create_dir_all(parent).map_err(err)?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
                .map_err(err)?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) => {
            use std::os::unix::fs::FileTypeExt;
            if !meta.file_type().is_socket() {
                return Err(Error::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(err)?;
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(UnixListenerStream::new(listener))
}

/// A gRPC channel to the server listening on the unix socket at `path`.
pub async fn connect(path: impl AsRef<Path>) -> Result<Channel, Error> {
    let path = path.as_ref().to_path_buf();
    let target = path.clone();
    // The URI is required by tonic but unused: every connection goes to the socket.
    Endpoint::from_static("http://localhost")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let target = target.clone();
            async move { Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(target).await?)) }
        }))
        .await
        .map_err(|source| Error::Connect { path, source })
}

/// Both CRI services over one connection.
#[derive(Clone)]
pub struct Client {
    pub runtime: RuntimeServiceClient<Channel>,
    pub image: ImageServiceClient<Channel>,
}

impl Client {
    pub async fn connect(path: impl AsRef<Path>) -> Result<Self, Error> {
        let channel = connect(path).await?;
        Ok(Self {
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
            image: ImageServiceClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_SIZE)
                .max_encoding_message_size(MAX_MESSAGE_SIZE),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_sets_0600_and_replaces_a_stale_socket() {
        let dir = std::env::temp_dir().join(format!("cri-proto-test-{}", std::process::id()));
        let path = dir.join("sub/cri.sock");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let first = bind_unix(&path).expect("bind");
            drop(first);
            // The socket file stays after the listener is gone; binding again replaces it.
            let _second = bind_unix(&path).expect("rebind over a stale socket");
        });
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn bind_refuses_to_replace_a_regular_file() {
        let dir = std::env::temp_dir().join(format!("cri-proto-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("not-a-socket");
        std::fs::write(&path, b"data").expect("write");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let result = rt.block_on(async { bind_unix(&path).map(|_| ()) });
        assert!(matches!(result, Err(Error::NotASocket { .. })));
        assert_eq!(std::fs::read(&path).expect("read"), b"data");
        std::fs::remove_dir_all(&dir).ok();
    }
}
