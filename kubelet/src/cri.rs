//! The CRI endpoint: one client, reconnected with back-off when the server goes away.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cri_proto::api;
use cri_proto::Client;
use tokio::sync::RwLock;

/// Deadline of an ordinary CRI call (the kubelet's runtime request timeout is 2 min; calls
/// that may wait on a container's exit get their own).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone)]
pub struct Cri {
    path: PathBuf,
    client: Arc<RwLock<Option<Client>>>,
}

impl Cri {
    pub fn new(path: PathBuf) -> Cri {
        Cri {
            path,
            client: Arc::new(RwLock::new(None)),
        }
    }

    /// The client, connecting if needed (`None` while the endpoint is unreachable).
    pub async fn get(&self) -> Option<Client> {
        if let Some(c) = self.client.read().await.clone() {
            return Some(c);
        }
        let mut g = self.client.write().await;
        if g.is_none() {
            match Client::connect(&self.path).await {
                Ok(c) => {
                    // A server that accepts and answers Version is really there.
                    let mut probe = c.runtime.clone();
                    if probe.version(api::VersionRequest::default()).await.is_ok() {
                        tracing::info!(endpoint = %self.path.display(), "connected to the CRI");
                        *g = Some(c);
                    }
                }
                Err(e) => tracing::debug!("CRI: {e}"),
            }
        }
        g.clone()
    }

    /// Drops the client after a transport failure, so the next `get` reconnects.
    pub async fn reset(&self) {
        let mut g = self.client.write().await;
        if g.take().is_some() {
            tracing::warn!(endpoint = %self.path.display(), "lost the CRI endpoint; reconnecting");
        }
    }

    /// Is this error the endpoint being gone (as opposed to a refusal of the request)?
    pub fn is_transport(s: &tonic::Status) -> bool {
        matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown)
            && (s.message().contains("transport")
                || s.message().contains("connect")
                || s.message().contains("broken pipe")
                || s.message().contains("error trying")
                || s.code() == tonic::Code::Unavailable)
    }
}

/// A request with the default deadline.
pub fn req<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(CALL_TIMEOUT);
    r
}
