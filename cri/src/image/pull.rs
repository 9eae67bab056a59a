//! Pulling images from registries (the OCI distribution API, through oci-client) into the
//! store.
//!
//! A pull resolves the reference on the first endpoint that answers (mirrors of
//! `hosts.toml`, then the registry: see `registry.rs`), picks this machine's manifest from an
//! index as containerd does, then fetches the config and the layers. Layers download at
//! once (at most `max_concurrent_downloads`), each verified as it streams to a file of the
//! pull's staging directory, while one thread unpacks them bottom first, each reading its
//! download as it lands (see `fetch.rs`). Blobs and layers the store has are not fetched.
//! Everything is staged under `tmp/` and committed as an import is (`import/commit.rs`):
//! under the store's exclusive lock, by renames, the image record last; a pull that fails
//! or is cancelled leaves nothing.
//!
//! Two pulls of one image in this process do the work once: the second waits for the
//! first (a lock per manifest digest), then finds the image stored. Pulls of images that
//! share layers take per-layer locks (in one global order, so they cannot deadlock), so a
//! shared layer is fetched and unpacked once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference as OciReference};
use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use tokio::sync::{OwnedMutexGuard, Semaphore};

use super::auth::{self, Credentials};
use super::fallback::{self, BlobHosts};
use super::fetch::{self, BlobJob, Feed, FeedReader};
use super::import::{chain_ids, Prepared};
use super::platform::{choose, host_platform};
use super::reference::{parse_reference, validate_digest};
use super::registry::{self, Endpoint, RegistryConfig};
use super::store::{mkdir_private, remove_any, unique_name, ImageStore};
use super::unpack;
use super::{Image, ImageError, Layer};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const DOCKER_SCHEMA1: &[&str] = &[
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
const ACCEPT: &[&str] = &[OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST];
/// Layer media types a pull takes (the compression is sniffed from the bytes anyway).
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
];
/// The most a manifest or config may hold.
const MAX_JSON: u64 = 16 << 20;

/// Why a pull failed. Messages name the image, the registry and the blob concerned; none
/// holds a credential.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("{0}")]
    InvalidReference(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("no progress: {0}")]
    Timeout(String),
    #[error("corrupt content: {0}")]
    Corrupt(String),
    #[error("unsupported image: {0}")]
    Unsupported(String),
    #[error("registry error: {0}")]
    Registry(String),
    #[error("invalid credentials: {0}")]
    BadAuth(String),
    #[error("registry configuration {}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
    #[error(transparent)]
    Store(#[from] ImageError),
}

/// Progress of one layer, for a display.
#[derive(Debug, Clone)]
pub struct LayerProgress {
    pub index: usize,
    pub digest: String,
    pub done: u64,
    pub total: u64,
}

pub type ProgressFn = Arc<dyn Fn(&LayerProgress) + Send + Sync>;

/// Pulls into one store; shared by every request of a server (cheap to clone).
#[derive(Clone)]
pub struct Puller {
    store: ImageStore,
    config: RegistryConfig,
    locks: Arc<Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>>,
}

/// The manifest chosen for this machine, with what it came from.
struct Resolved {
    /// Where the blobs come from: the endpoint that resolved it, then the next ones.
    hosts: Arc<BlobHosts>,
    /// The digest the name points at (an index's, for a multi-platform image).
    top_digest: String,
    manifest_digest: String,
    manifest_bytes: Vec<u8>,
    manifest: ImageManifest,
}

fn media_type_of(bytes: &[u8]) -> (Option<String>, bool, i64) {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
        #[serde(rename = "schemaVersion")]
        schema_version: Option<i64>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(p) => (
            p.media_type,
            p.manifests.is_some(),
            p.schema_version.unwrap_or(0),
        ),
        Err(_) => (None, false, 0),
    }
}

/// A store lock entry: the same name gives the same mutex while anyone holds it.
fn lock_for(
    locks: &Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    key: &str,
) -> Arc<tokio::sync::Mutex<()>> {
    let mut map = locks.lock().unwrap_or_else(|p| p.into_inner());
    map.retain(|_, w| w.strong_count() > 0);
    if let Some(m) = map.get(key).and_then(Weak::upgrade) {
        return m;
    }
    let m = Arc::new(tokio::sync::Mutex::new(()));
    map.insert(key.to_string(), Arc::downgrade(&m));
    m
}

/// The staging directory of one pull; removed when dropped.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        if let Err(e) = remove_any(&self.0) {
            tracing::warn!(error = %e, "could not remove a pull's staging directory");
        }
    }
}

fn blocking_err(e: tokio::task::JoinError) -> PullError {
    PullError::Registry(format!("a pull thread failed: {e}"))
}

impl Puller {
    pub fn new(store: ImageStore, config: RegistryConfig) -> Puller {
        Puller {
            store,
            config,
            locks: Arc::default(),
        }
    }

    /// Pulls `reference` (normalised as the kubelet does) and returns the image as stored.
    pub async fn pull(
        &self,
        reference: &str,
        auth: Option<&cri_proto::api::AuthConfig>,
        progress: Option<ProgressFn>,
    ) -> Result<Image, PullError> {
        let creds = Credentials::from_cri(auth)?;
        self.pull_with(reference, &creds, progress)
            .await
            .map_err(|e| match e {
                // Wherever the disk filled up (a download, untar, the commit), the answer
                // names the filesystem.
                PullError::Store(e) => PullError::Store(e.naming_the_disk(self.store.root())),
                e => creds.redact_error(e),
            })
    }

    async fn pull_with(
        &self,
        reference: &str,
        creds: &Credentials,
        progress: Option<ProgressFn>,
    ) -> Result<Image, PullError> {
        let started = Instant::now();
        let parsed =
            parse_reference(reference).map_err(|e| PullError::InvalidReference(e.to_string()))?;
        let name = parsed.to_string();
        let resolved = self.resolve(&parsed, creds).await?;

        // The same image pulled twice at once: the second waits here, then finds it stored.
        let image_lock = lock_for(
            &self.locks,
            &format!("manifest {}", resolved.manifest_digest),
        );
        let _image_guard = image_lock.lock().await;

        let (tags, digest_refs) = match &parsed.digest {
            Some(_) => (Vec::new(), vec![name.clone()]),
            None => (
                vec![name.clone()],
                vec![format!("{}@{}", parsed.repository, resolved.top_digest)],
            ),
        };
        let (config_digest, config_bytes, config_staged) = self.config_of(&resolved).await?;
        let config: ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| PullError::Unsupported(format!("{name}: config {config_digest}: {e}")))?;
        let id = config_digest.clone();
        let store = self.store.clone();
        let known = {
            let id = id.clone();
            tokio::task::spawn_blocking(move || store.get(&id))
                .await
                .map_err(blocking_err)??
                .is_some()
        };
        let staging = Staging(self.store.tmp_dir().join(unique_name()));
        mkdir_private(&staging.0)?;
        let mut prepared = Prepared {
            id: id.clone(),
            tags,
            digest_refs,
            repositories: Vec::new(),
            manifest_digest: Some(resolved.manifest_digest.clone()),
            config,
            blobs: Vec::new(),
            layers: Vec::new(),
            size: 0,
            known,
        };
        let mut fetched = 0u64;
        let _layer_guards;
        if !known {
            let config_path = staging.0.join("config");
            if let Some(bytes) = &config_staged {
                std::fs::write(&config_path, bytes)
                    .map_err(ImageError::io("writing", &config_path))?;
            }
            let manifest_path = staging.0.join("manifest");
            std::fs::write(&manifest_path, &resolved.manifest_bytes)
                .map_err(ImageError::io("writing", &manifest_path))?;
            prepared.blobs.push((
                config_digest.clone(),
                config_staged.as_ref().map(|_| config_path),
            ));
            prepared
                .blobs
                .push((resolved.manifest_digest.clone(), Some(manifest_path)));
            let (layers, guards, bytes) = self
                .fetch_layers(&resolved, &prepared.config, &staging.0, &name, progress)
                .await?;
            _layer_guards = guards;
            fetched = bytes;
            prepared.size =
                config_bytes.len() as u64 + layers.iter().map(|(l, _)| l.size).sum::<u64>();
            for (l, staged_blob, staged_dir) in layers.iter().map(|(l, s)| (l, &s.0, &s.1)) {
                prepared.blobs.push((l.digest.clone(), staged_blob.clone()));
                prepared.layers.push((l.clone(), staged_dir.clone()));
            }
        }
        let store = self.store.clone();
        let image = tokio::task::spawn_blocking(move || {
            let _lock = store.lock(true)?;
            let mut images = store.commit(vec![prepared])?;
            images.pop().ok_or_else(|| ImageError::NotFound(id.clone()))
        })
        .await
        .map_err(blocking_err)??;
        drop(staging);
        let secs = started.elapsed().as_secs_f64();
        tracing::info!(
            image = %name,
            id = %image.id,
            size = image.size,
            downloaded = fetched,
            seconds = format!("{secs:.2}"),
            rate_mib_s = format!("{:.1}", fetched as f64 / (1 << 20) as f64 / secs.max(1e-3)),
            "pulled"
        );
        Ok(image)
    }

    /// The manifest for this machine, from the first endpoint that has it.
    async fn resolve(
        &self,
        parsed: &super::Reference,
        creds: &Credentials,
    ) -> Result<Resolved, PullError> {
        let (registry_host, repo) = parsed
            .repository
            .split_once('/')
            .ok_or_else(|| PullError::InvalidReference(parsed.to_string()))?;
        let endpoints = registry::endpoints(self.config.config_path.as_deref(), registry_host)?;
        let mut last: Option<PullError> = None;
        for (i, ep) in endpoints.iter().enumerate() {
            if parsed.digest.is_none() && !ep.resolve {
                continue;
            }
            let later = endpoints[i + 1..].to_vec();
            match self.resolve_at(ep, later, repo, parsed, creds).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    let e = creds.redact_error(e);
                    tracing::info!(endpoint = ?ep, error = %e, "could not resolve the image there");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            PullError::NotFound(format!("{parsed}: no endpoint may resolve it"))
        }))
    }

    async fn resolve_at(
        &self,
        ep: &Endpoint,
        later: Vec<Endpoint>,
        repo: &str,
        parsed: &super::Reference,
        creds: &Credentials,
    ) -> Result<Resolved, PullError> {
        let timeout = self.config.image_pull_progress_timeout;
        let client = Arc::new(
            Client::try_from(registry::client_config(ep, timeout)?)
                .map_err(|e| PullError::Registry(format!("{ep:?}: {e}")))?,
        );
        let reference = match (&parsed.digest, &parsed.tag) {
            (Some(d), _) => OciReference::with_digest(ep.host.clone(), repo.into(), d.clone()),
            (None, Some(t)) => OciReference::with_tag(ep.host.clone(), repo.into(), t.clone()),
            (None, None) => OciReference::with_tag(ep.host.clone(), repo.into(), "latest".into()),
        };
        // Credentials go to the image's own registry only, not to mirrors.
        let auth = if ep.upstream {
            creds
                .for_endpoint(ep, &registry::client_config(ep, timeout)?, repo)
                .await?
        } else {
            RegistryAuth::Anonymous
        };
        let host = format!("{ep:?}");
        let what = format!("manifest of {parsed}");
        let attempts = if ep.upstream { 5 } else { 1 };
        let (bytes, digest) = fetch::retry(&what, attempts, || {
            let client = client.clone();
            let reference = reference.clone();
            let auth = auth.clone();
            let what = what.clone();
            let host = host.clone();
            async move {
                match client.pull_manifest_raw(&reference, &auth, ACCEPT).await {
                    Ok(v) => Ok(v),
                    Err(e) => Err(unauthorized(
                        e, &client, ep, timeout, &reference, &auth, &what, &host,
                    )
                    .await),
                }
            }
        })
        .await?;
        let top_digest = digest;
        let (mt, is_index, schema) = media_type_of(&bytes);
        if schema == 1 || mt.as_deref().is_some_and(|m| DOCKER_SCHEMA1.contains(&m)) {
            return Err(PullError::Unsupported(format!(
                "{parsed}: Docker schema 1 manifests are not supported (deprecated; push the \
                 image again with a current client)"
            )));
        }
        let (manifest_digest, manifest_bytes) =
            if is_index || matches!(mt.as_deref(), Some(OCI_INDEX | DOCKER_LIST)) {
                let index: ImageIndex = serde_json::from_slice(&bytes).map_err(|e| {
                    PullError::Unsupported(format!("{parsed}: index {top_digest}: {e}"))
                })?;
                let chosen = choose(&index).ok_or_else(|| {
                    let (os, arch, variant) = host_platform();
                    PullError::NotFound(format!(
                    "{parsed}: the index {top_digest} has no manifest for {os}/{arch}{}{variant}",
                    if variant.is_empty() { "" } else { "/" }
                ))
                })?;
                let child_digest = chosen.digest().to_string();
                let child_ref = reference.clone_with_digest(child_digest.clone());
                let what = format!("manifest {child_digest} of {parsed}");
                // oci-client checks the body against the digest of a by-digest reference.
                let (child, _) = fetch::retry(&what, attempts, || {
                    let client = client.clone();
                    let child_ref = child_ref.clone();
                    let auth = auth.clone();
                    let what = what.clone();
                    let host = host.clone();
                    async move {
                        let accept = &[OCI_MANIFEST, DOCKER_MANIFEST];
                        match client.pull_manifest_raw(&child_ref, &auth, accept).await {
                            Ok(v) => Ok(v),
                            Err(e) => Err(unauthorized(
                                e, &client, ep, timeout, &child_ref, &auth, &what, &host,
                            )
                            .await),
                        }
                    }
                })
                .await?;
                (child_digest, child.to_vec())
            } else {
                (top_digest.clone(), bytes.to_vec())
            };
        let manifest: ImageManifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
            PullError::Unsupported(format!("{parsed}: manifest {manifest_digest}: {e}"))
        })?;
        validate_digest(&manifest_digest).map_err(|r| PullError::Unsupported(r.to_string()))?;
        let first = fallback::Source::new(client, reference, ep);
        Ok(Resolved {
            hosts: Arc::new(BlobHosts::new(
                first,
                later,
                creds.clone(),
                repo.to_string(),
                timeout,
            )),
            top_digest,
            manifest_digest,
            manifest_bytes,
            manifest,
        })
    }

    /// The config's digest and bytes; the bytes again when fetched (to stage), `None` when
    /// the store had the blob.
    async fn config_of(
        &self,
        r: &Resolved,
    ) -> Result<(String, Vec<u8>, Option<Vec<u8>>), PullError> {
        let desc = r.manifest.config();
        let digest = desc.digest().to_string();
        validate_digest(&digest)
            .map_err(|e| PullError::Unsupported(format!("config digest: {e}")))?;
        if desc.size() > MAX_JSON {
            return Err(PullError::Unsupported(format!(
                "config {digest}: {} bytes is more than {MAX_JSON}",
                desc.size()
            )));
        }
        let local = self.store.blob_path(&digest)?;
        if let Ok(bytes) = std::fs::read(&local) {
            return Ok((digest, bytes, None));
        }
        let what = format!("config {digest}");
        let mut at = 0;
        let bytes = loop {
            let src = r.hosts.get(at).await?;
            let last = at + 1 >= r.hosts.len();
            let got = fetch::retry(&what, if last { 5 } else { 2 }, || {
                let src = src.clone();
                let digest = digest.clone();
                let what = what.clone();
                async move {
                    let mut out = Vec::new();
                    src.client
                        .pull_blob(&src.reference, digest.as_str(), &mut out)
                        .await
                        .map_err(|e| fetch::classify(e, &what, &src.host))?;
                    Ok(out)
                }
            })
            .await;
            match got {
                Ok(b) => break b,
                Err(e) if !last && fallback::worth_another_host(&e) => {
                    tracing::info!(%what, from = %src.host, error = %e, "fetching the blob from the next host");
                    at += 1;
                }
                Err(e) => return Err(e),
            }
        };
        if bytes.len() as u64 != desc.size() {
            return Err(PullError::Corrupt(format!(
                "{what}: {} bytes, its descriptor says {}",
                bytes.len(),
                desc.size()
            )));
        }
        Ok((digest, bytes.clone(), Some(bytes)))
    }

    /// Fetches and unpacks the layers the store lacks. Returns each layer with its staged
    /// blob and directory (`None`: in the store), the guards of the layer locks (held until
    /// the commit) and the bytes downloaded.
    #[allow(clippy::type_complexity)]
    async fn fetch_layers(
        &self,
        r: &Resolved,
        config: &ImageConfiguration,
        staging: &Path,
        name: &str,
        progress: Option<ProgressFn>,
    ) -> Result<
        (
            Vec<(Layer, (Option<PathBuf>, Option<PathBuf>))>,
            Vec<OwnedMutexGuard<()>>,
            u64,
        ),
        PullError,
    > {
        let descs = r.manifest.layers();
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != descs.len() {
            return Err(PullError::Unsupported(format!(
                "{name}: {} layers but its config lists {} diff ids",
                descs.len(),
                diff_ids.len()
            )));
        }
        for (d, diff) in descs.iter().zip(&diff_ids) {
            let mt = d.media_type().to_string();
            if mt.contains("foreign") || mt.contains("nondistributable") {
                return Err(PullError::Unsupported(format!(
                    "{name}: layer {} is a foreign (non-distributable) layer ({mt}): it is not \
                     in the registry and rrun-cri does not fetch it from elsewhere",
                    d.digest()
                )));
            }
            if !LAYER_TYPES.contains(&mt.as_str()) {
                return Err(PullError::Unsupported(format!(
                    "{name}: layer {} has media type {mt:?}, not an image layer",
                    d.digest()
                )));
            }
            validate_digest(d.digest().as_ref())
                .and_then(|_| validate_digest(diff))
                .map_err(|e| PullError::Unsupported(format!("{name}: layer: {e}")))?;
        }
        let chains = chain_ids(&diff_ids);
        let mut keys: Vec<String> = chains.iter().map(|c| format!("layer {c}")).collect();
        keys.sort();
        keys.dedup();
        let mut guards = Vec::new();
        for k in keys {
            guards.push(lock_for(&self.locks, &k).lock_owned().await);
        }

        // What the store has, now that no pull of this process can be adding it.
        let store = self.store.clone();
        let chains2 = chains.clone();
        let digests: Vec<String> = descs.iter().map(|d| d.digest().to_string()).collect();
        let digests2 = digests.clone();
        let (have_layer, have_blob) = tokio::task::spawn_blocking(move || {
            let mut layers = Vec::new();
            for c in &chains2 {
                layers.push(store.find_layer(c)?);
            }
            let mut blobs = Vec::new();
            for d in &digests2 {
                let p = store.blob_path(d)?;
                blobs.push(p.is_file().then_some(p));
            }
            Ok::<_, ImageError>((layers, blobs))
        })
        .await
        .map_err(blocking_err)??;

        let semaphore = Arc::new(Semaphore::new(self.config.max_concurrent_downloads.max(1)));
        let mut downloads = tokio::task::JoinSet::new();
        let mut sources: Vec<Source> = Vec::new();
        let mut fetched = 0u64;
        let mut seen: HashMap<String, (PathBuf, PathBuf, Arc<Feed>)> = HashMap::new();
        for (i, d) in descs.iter().enumerate() {
            let digest = digests[i].clone();
            if let Some(path) = &have_blob[i] {
                sources.push(Source::Store(path.clone()));
                continue;
            }
            if let Some((ingest, _, feed)) = seen.get(&digest) {
                let reader = FeedReader::open(ingest, feed.clone())
                    .map_err(ImageError::io("opening", ingest))?;
                sources.push(Source::Same(reader, feed.clone()));
                continue;
            }
            let path = staging.join(format!("blob-{i}"));
            let private = staging.join(format!("ingest-{i}"));
            let ingest = fetch::Ingest::open(&self.store.tmp_dir(), &digest, d.size(), &private)
                .map_err(ImageError::io("opening a download", &private))?;
            let feed = Feed::new();
            feed.advance(ingest.resumed);
            // Opened now: the download renames the file once verified.
            let reader = FeedReader::open(&ingest.path, feed.clone())
                .map_err(ImageError::io("opening", &ingest.path))?;
            fetched += d.size() - ingest.resumed;
            let on_progress = progress.clone().map(|p| {
                let digest = digest.clone();
                let total = d.size();
                Arc::new(move |done: u64| {
                    p(&LayerProgress {
                        index: i,
                        digest: digest.clone(),
                        done,
                        total,
                    })
                }) as Arc<dyn Fn(u64) + Send + Sync>
            });
            let ingest_path = ingest.path.clone();
            let job = BlobJob {
                hosts: r.hosts.clone(),
                digest: digest.clone(),
                size: d.size(),
                path: path.clone(),
                feed: feed.clone(),
                ingest,
                progress: on_progress,
            };
            let sem = semaphore.clone();
            downloads.spawn(async move {
                let _permit = sem.acquire_owned().await;
                fetch::download(job).await
            });
            seen.insert(digest, (ingest_path, path.clone(), feed.clone()));
            sources.push(Source::Download(reader, path, feed));
        }

        // Unpacking, bottom layer first, beside the downloads.
        let store = self.store.clone();
        let staging = staging.to_path_buf();
        let diff2 = diff_ids.clone();
        let name2 = name.to_string();
        let unpacker = tokio::task::spawn_blocking(move || {
            unpack_all(&store, &staging, sources, have_layer, &diff2, &name2)
        });
        let mut first_err: Option<PullError> = None;
        while let Some(res) = downloads.join_next().await {
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                    // Stop the others: each marks its feed failed, which ends the unpacker.
                    downloads.abort_all();
                }
                Err(e) if e.is_cancelled() => {}
                Err(e) => {
                    first_err.get_or_insert(blocking_err(e));
                    downloads.abort_all();
                }
            }
        }
        let unpacked = unpacker.await.map_err(blocking_err)?;
        // A download's own error says more than the unpacker's "the download failed".
        if let Some(e) = first_err {
            // Partial blobs are kept for the next pull only after network trouble (and a
            // cancelled or killed pull); after any other failure nothing stays.
            if !matches!(e, PullError::Unavailable(_) | PullError::Timeout(_)) {
                for (ingest, _, _) in seen.values() {
                    let _ = std::fs::remove_file(ingest);
                }
            }
            return Err(e);
        }
        let staged = unpacked?;
        let mut out = Vec::new();
        for (i, d) in descs.iter().enumerate() {
            let blob = match &have_blob[i] {
                Some(_) => None,
                None => Some(seen[&digests[i]].1.clone()),
            };
            out.push((
                Layer {
                    digest: digests[i].clone(),
                    media_type: d.media_type().to_string(),
                    size: d.size(),
                    diff_id: diff_ids[i].clone(),
                    chain_id: chains[i].clone(),
                    dir: String::new(),
                },
                (blob, staged[i].clone()),
            ));
        }
        Ok((out, guards, fetched))
    }
}

/// Classifies a failed manifest request; a 401 quotes the registry's own message, which
/// oci-client drops (see `auth::registry_message`).
#[allow(clippy::too_many_arguments)]
async fn unauthorized(
    e: oci_client::errors::OciDistributionError,
    client: &Client,
    ep: &Endpoint,
    timeout: std::time::Duration,
    reference: &OciReference,
    auth: &RegistryAuth,
    what: &str,
    host: &str,
) -> fetch::Failure {
    let oci_client::errors::OciDistributionError::UnauthorizedError { url } = &e else {
        return fetch::classify(e, what, host);
    };
    let said = match registry::client_config(ep, timeout) {
        Ok(config) => auth::registry_message(client, &config, ep, reference, auth, url).await,
        Err(_) => None,
    };
    match said {
        Some(m) => fetch::Failure::Fatal(PullError::Unauthenticated(format!(
            "{what} from {host}: 401 Unauthorized: {m}"
        ))),
        None => fetch::classify(e, what, host),
    }
}

/// Where the unpacker reads a layer's blob from.
enum Source {
    Store(PathBuf),
    /// A download: a reader of it, where it ends up once verified, its progress.
    Download(FeedReader, PathBuf, Arc<Feed>),
    /// The same blob as an earlier layer of this image.
    Same(FeedReader, Arc<Feed>),
}

/// Unpacks the layers the store lacks into the staging directory, bottom first, each from
/// its download as it arrives. Returns each layer's staged directory (`None`: stored).
fn unpack_all(
    store: &ImageStore,
    staging: &Path,
    sources: Vec<Source>,
    have_layer: Vec<Option<String>>,
    diff_ids: &[String],
    name: &str,
) -> Result<Vec<Option<PathBuf>>, PullError> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let mut out = Vec::new();
    for (i, source) in sources.into_iter().enumerate() {
        let layer = |reason: String| PullError::Corrupt(format!("{name}: layer {i}: {reason}"));
        if let Some(dir) = &have_layer[i] {
            // Stored under the same chain id: its content was checked against this diff id
            // chain. A blob fetched for it is still checked before the store keeps it.
            if let Source::Download(_, path, feed) = &source {
                feed.wait().map_err(layer)?;
                let got = unpack::diff_id(path).map_err(layer)?;
                if got != diff_ids[i] {
                    return Err(layer(format!(
                        "uncompressed digest {got}, the config says {}",
                        diff_ids[i]
                    )));
                }
            }
            dirs.push(store.layer_path(dir));
            out.push(None);
            continue;
        }
        let dest = staging.join(format!("layer-{i}"));
        mkdir_private(&dest)?;
        std::fs::set_permissions(&dest, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(ImageError::io("chmod", &dest))?;
        let lowers: Vec<PathBuf> = dirs.iter().rev().cloned().collect();
        let got = match source {
            Source::Store(path) => unpack::unpack(&path, &dest, &lowers),
            Source::Download(reader, _, feed) | Source::Same(reader, feed) => {
                let got = unpack::unpack_from(reader, &dest, &lowers);
                // The reader ends only on a verified blob; a failed download is its error.
                if let Err(e) = feed.wait() {
                    return Err(layer(e));
                }
                got
            }
        }
        .map_err(|e| match e {
            unpack::UnpackError::NoSpace(reason) => PullError::Store(ImageError::NoSpace {
                disk: super::store::describe_disk(&dest),
                reason: format!("{name}: layer {i}: {reason}"),
            }),
            unpack::UnpackError::Layer(m) => layer(m),
        })?;
        if got != diff_ids[i] {
            return Err(layer(format!(
                "uncompressed digest {got}, the config says {}",
                diff_ids[i]
            )));
        }
        dirs.push(dest.clone());
        out.push(Some(dest));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_kinds_are_told_apart() {
        let (mt, is_index, schema) = media_type_of(br#"{"schemaVersion":2,"manifests":[]}"#);
        assert!(is_index && mt.is_none() && schema == 2);
        let (mt, is_index, _) = media_type_of(
            format!(r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}"}}"#).as_bytes(),
        );
        assert_eq!(mt.as_deref(), Some(DOCKER_MANIFEST));
        assert!(!is_index);
        assert_eq!(media_type_of(br#"{"schemaVersion":1,"fsLayers":[]}"#).2, 1);
    }
}
