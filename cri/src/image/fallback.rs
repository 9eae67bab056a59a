//! Per-blob fallback across a pull's hosts: a mirror that resolved the manifest but then
//! fails a blob (it lacks it, errs, or is gone) leaves that blob to the next host of
//! `hosts.toml` and finally to the upstream, as containerd's fetcher tries its hosts in
//! order for each blob. The blob's bytes fetched so far are kept: the next host is asked
//! for the rest (the digest names the same bytes everywhere).
//!
//! The next hosts' clients are made, and credentials exchanged, only when a blob needs them.

use std::sync::Arc;
use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::sync::OnceCell;

use super::auth::Credentials;
use super::pull::PullError;
use super::registry::{self, Endpoint};

/// Where a blob is fetched from: a client for one host, the image there, the host's name.
#[derive(Clone)]
pub(crate) struct Source {
    pub(crate) client: Arc<Client>,
    pub(crate) reference: Reference,
    pub(crate) host: String,
    /// Keeps the endpoint's gateway (`gateway.rs`), if any, up as long as its client.
    pub(crate) _endpoint: Endpoint,
}

impl Source {
    pub(crate) fn new(client: Arc<Client>, reference: Reference, ep: &Endpoint) -> Source {
        Source {
            client,
            reference,
            host: format!("{ep:?}"),
            _endpoint: ep.clone(),
        }
    }
}

struct Later {
    endpoint: Endpoint,
    source: OnceCell<Source>,
}

/// The hosts a pull fetches blobs from, in the order they are tried: the one that resolved
/// the manifest, then those after it.
pub(crate) struct BlobHosts {
    first: Source,
    later: Vec<Later>,
    creds: Credentials,
    repo: String,
    timeout: Duration,
}

impl BlobHosts {
    pub(crate) fn new(
        first: Source,
        later: Vec<Endpoint>,
        creds: Credentials,
        repo: String,
        timeout: Duration,
    ) -> BlobHosts {
        BlobHosts {
            first,
            later: later
                .into_iter()
                .map(|endpoint| Later {
                    endpoint,
                    source: OnceCell::new(),
                })
                .collect(),
            creds,
            repo,
            timeout,
        }
    }

    pub(crate) fn first(&self) -> Source {
        self.first.clone()
    }

    /// How many hosts there are.
    pub(crate) fn len(&self) -> usize {
        1 + self.later.len()
    }

    /// Host `i` (0 is the first), its client made on first use.
    pub(crate) async fn get(&self, i: usize) -> Result<Source, PullError> {
        let Some(later) = i.checked_sub(1).and_then(|j| self.later.get(j)) else {
            return Ok(self.first.clone());
        };
        later
            .source
            .get_or_try_init(|| self.connect(&later.endpoint))
            .await
            .cloned()
    }

    async fn connect(&self, ep: &Endpoint) -> Result<Source, PullError> {
        let client = Client::try_from(registry::client_config(ep, self.timeout)?)
            .map_err(|e| PullError::Registry(format!("{ep:?}: {e}")))?;
        // The blob URL holds only the host and the repository.
        let reference = Reference::with_tag(ep.host.clone(), self.repo.clone(), "latest".into());
        // Credentials go to the image's own registry only, not to mirrors.
        let auth = if ep.upstream {
            self.creds
                .for_endpoint(ep, &registry::client_config(ep, self.timeout)?, &self.repo)
                .await?
        } else {
            RegistryAuth::Anonymous
        };
        // Stored, not used yet: oci-client gets a token with them on the first request.
        client
            .store_auth_if_needed(reference.resolve_registry(), &auth)
            .await;
        Ok(Source::new(Arc::new(client), reference, ep))
    }
}

/// Whether a blob that failed with `e` at one host is worth asking the next for: not when
/// the bytes were wrong (a digest names the same bytes everywhere, and a bad blob is not
/// resumed), nor when the local store failed.
pub(crate) fn worth_another_host(e: &PullError) -> bool {
    !matches!(
        e,
        PullError::Corrupt(_) | PullError::Store(_) | PullError::Config { .. }
    )
}
