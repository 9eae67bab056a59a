//! Fetching from a registry through oci-client: retries with back-off, error
//! classification, and blob downloads that a reader can unpack while they arrive.
//!
//! What oci-client does not do, and this file adds:
//! - retries of transient failures (5xx, 429, connection errors) with back-off, and a
//!   dropped blob download resumed where it stopped with an HTTP range request (a registry
//!   that answers the whole blob instead has the part already written skipped);
//! - verification of the digest *and size* of a blob while it streams to disk, over all the
//!   attempts of a resumed download (its own check covers one response only, and none for
//!   a partial one);
//! - a reader of the download that the unpacker consumes as bytes land ([`FeedReader`]):
//!   decompression and untar run beside the download, not after it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use nix::fcntl::{Flock, FlockArg};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use sha2::{Digest as _, Sha256};

use super::fallback::{worth_another_host, BlobHosts};
use super::pull::PullError;

const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// What went wrong with one request, once classified.
pub(crate) enum Failure {
    /// Worth another attempt (5xx, 429, connection reset, ...).
    Transient(String),
    /// Final: the pull fails with this.
    Fatal(PullError),
}

/// The registry's own words from an error envelope.
fn envelope_message(envelope: &oci_client::errors::OciEnvelope) -> String {
    envelope
        .errors
        .iter()
        .map(|e| {
            if e.message.is_empty() {
                format!("{:?}", e.code)
            } else {
                e.message.clone()
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<reqwest::Error>() {
            if r.is_timeout() {
                return true;
            }
        }
        if let Some(io) = err.downcast_ref::<io::Error>() {
            if io.kind() == io::ErrorKind::TimedOut {
                return true;
            }
        }
        cur = err.source();
    }
    false
}

/// Sorts an oci-client error: `what` names the request (for messages), `host` the endpoint.
pub(crate) fn classify(e: OciDistributionError, what: &str, host: &str) -> Failure {
    use OciDistributionError as E;
    let at = |m: String| format!("{what} from {host}: {m}");
    match e {
        E::UnauthorizedError { .. } => Failure::Fatal(PullError::Unauthenticated(at(
            "401 Unauthorized (no or wrong credentials)".into(),
        ))),
        E::AuthenticationFailure(m) => Failure::Fatal(PullError::Unauthenticated(at(format!(
            "the token service refused the credentials: {}",
            m.trim()
        )))),
        E::RegistryError { envelope, .. } => {
            let msg = at(envelope_message(&envelope));
            let code = envelope.errors.first().map(|e| &e.code);
            match code {
                Some(
                    OciErrorCode::ManifestUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::NotFound,
                ) => Failure::Fatal(PullError::NotFound(msg)),
                Some(OciErrorCode::Unauthorized) => Failure::Fatal(PullError::Unauthenticated(msg)),
                Some(OciErrorCode::Denied) => Failure::Fatal(PullError::PermissionDenied(msg)),
                Some(OciErrorCode::Toomanyrequests) => Failure::Transient(msg),
                _ => Failure::Fatal(PullError::Registry(msg)),
            }
        }
        E::ServerError { code, message, .. } => {
            if let Some(f) = super::gateway::failure(code, &message, at) {
                return f;
            }
            let msg = at(format!("HTTP {code}: {}", message.trim()));
            match code {
                404 => Failure::Fatal(PullError::NotFound(msg)),
                401 => Failure::Fatal(PullError::Unauthenticated(msg)),
                403 => Failure::Fatal(PullError::PermissionDenied(msg)),
                429 | 500.. => Failure::Transient(msg),
                _ => Failure::Fatal(PullError::Registry(msg)),
            }
        }
        // oci-client reaches by itself only endpoints without a client certificate (those
        // with one go through the gateway, whose failures are answers).
        E::RequestError(r) if tls_failure(&r) => {
            Failure::Fatal(PullError::Tls(at(tls_message(&r, false))))
        }
        E::RequestError(r) => {
            if r.is_timeout() {
                Failure::Fatal(PullError::Timeout(at(r.to_string())))
            } else if r.is_builder() {
                Failure::Fatal(PullError::Registry(at(r.to_string())))
            } else {
                Failure::Transient(at(error_chain(&r)))
            }
        }
        E::IoError(io) => {
            if is_timeout(&io) {
                Failure::Fatal(PullError::Timeout(at(io.to_string())))
            } else {
                Failure::Transient(at(error_chain(&io)))
            }
        }
        E::DigestError(d) => Failure::Fatal(PullError::Corrupt(at(d.to_string()))),
        other => Failure::Fatal(PullError::Registry(at(other.to_string()))),
    }
}

/// The TLS error in `e`'s chain, if any.
fn rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(r) = err
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

/// A certificate the TLS handshake refused: no retry will change that.
pub(crate) fn tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    rustls_error(e).is_some()
}

/// `e`'s chain, and what the registry's TLS alert means when it concerns the client
/// certificate (the alerts name it only in TLS terms): `client` says whether one was sent.
pub(crate) fn tls_message(e: &(dyn std::error::Error + 'static), client: bool) -> String {
    use rustls::AlertDescription as A;
    let about_client_cert = matches!(
        rustls_error(e),
        Some(rustls::Error::AlertReceived(
            A::CertificateRequired
                | A::BadCertificate
                | A::UnknownCA
                | A::CertificateUnknown
                | A::UnsupportedCertificate
                | A::CertificateExpired
                | A::CertificateRevoked
                | A::AccessDenied
        ))
    );
    let hint = match (about_client_cert, client) {
        (false, _) => "",
        (true, false) => {
            " (the registry asks for a client certificate: give one with `client` for this \
             host in hosts.toml)"
        }
        (true, true) => " (the registry refused the client certificate of hosts.toml's `client`)",
    };
    format!("{}{hint}", error_chain(e))
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    s
}

/// Runs `f` until it succeeds, fails for good or has failed `attempts` times (at most
/// [`ATTEMPTS`]; a mirror gets one, so that the next endpoint is tried at once).
pub(crate) async fn retry<T, F, Fut>(what: &str, attempts: u32, mut f: F) -> Result<T, PullError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failure>>,
{
    let mut delay = FIRST_BACKOFF;
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Transient(m)) if attempt >= attempts.clamp(1, ATTEMPTS) => {
                return Err(PullError::Unavailable(if attempt > 1 {
                    format!("{m} (gave up after {attempt} attempts)")
                } else {
                    m
                }))
            }
            Err(Failure::Transient(m)) => {
                tracing::info!(%what, attempt, error = %m, "retrying after a transient error");
                tokio::time::sleep(delay).await;
                delay *= 2;
                attempt += 1;
            }
        }
    }
}

/// The progress of one download, shared between the task writing it and a reader.
pub(crate) struct Feed {
    state: Mutex<FeedState>,
    cond: Condvar,
}

#[derive(Default)]
struct FeedState {
    written: u64,
    /// `Some(Ok)` once complete *and verified*; `Some(Err)` when it failed or was dropped.
    done: Option<Result<(), String>>,
}

impl Feed {
    pub(crate) fn new() -> Arc<Feed> {
        Arc::new(Feed {
            state: Mutex::new(FeedState::default()),
            cond: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn advance(&self, written: u64) {
        self.lock().written = written;
        self.cond.notify_all();
    }

    fn finish(&self, result: Result<(), String>) {
        let mut st = self.lock();
        if st.done.is_none() {
            st.done = Some(result);
        }
        drop(st);
        self.cond.notify_all();
    }

    /// Blocks until the download ended; its outcome.
    pub(crate) fn wait(&self) -> Result<(), String> {
        let mut st = self.lock();
        loop {
            if let Some(r) = &st.done {
                return r.clone();
            }
            st = self.cond.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// Marks its feed failed if dropped before the download finished (a cancelled pull), so
/// that a reader blocked on it wakes up.
struct FeedGuard(Arc<Feed>);

impl Drop for FeedGuard {
    fn drop(&mut self) {
        self.0.finish(Err("the download was cancelled".into()));
    }
}

/// Reads a file as a download writes it: blocks for bytes not there yet, and returns end of
/// file only when the whole blob arrived and matched its digest and size.
pub(crate) struct FeedReader {
    file: File,
    pos: u64,
    feed: Arc<Feed>,
}

impl FeedReader {
    pub(crate) fn open(path: &Path, feed: Arc<Feed>) -> io::Result<FeedReader> {
        Ok(FeedReader {
            file: File::open(path)?,
            pos: 0,
            feed,
        })
    }
}

impl Read for FeedReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let available = {
            let mut st = self.feed.lock();
            loop {
                if st.written > self.pos {
                    break st.written - self.pos;
                }
                match &st.done {
                    Some(Ok(())) => return Ok(0),
                    Some(Err(e)) => return Err(io::Error::other(e.clone())),
                    None => st = self.feed.cond.wait(st).unwrap_or_else(|p| p.into_inner()),
                }
            }
        };
        let want = buf
            .len()
            .min(usize::try_from(available).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Where a blob downloads to: `tmp/ingest-<hex>` of the store, locked (flock) by the one
/// download writing it, kept when a pull dies half-way so that the next one resumes it.
pub(crate) struct Ingest {
    pub(crate) path: PathBuf,
    file: Flock<File>,
    /// Bytes already there from an earlier, interrupted download.
    pub(crate) resumed: u64,
}

impl Ingest {
    /// Opens (or creates) the ingest file of `digest` under `tmp`; when another process
    /// downloads that blob right now, a fresh private file `private` instead.
    pub(crate) fn open(tmp: &Path, digest: &str, size: u64, private: &Path) -> io::Result<Ingest> {
        let shared = tmp.join(format!("ingest-{}", digest.trim_start_matches("sha256:")));
        let open = |path: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
        };
        // The store's sweep may unlink a free ingest file between our open and our lock:
        // then the locked inode is no longer the path's, and the path is opened again.
        let same = |f: &File, path: &Path| {
            use std::os::unix::fs::MetadataExt;
            match (f.metadata(), std::fs::metadata(path)) {
                (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
                _ => false,
            }
        };
        let mut attempts = 0;
        let (path, file) = loop {
            attempts += 1;
            match Flock::lock(open(&shared)?, FlockArg::LockExclusiveNonblock) {
                Ok(f) if same(&f, &shared) => break (shared, f),
                Ok(_) if attempts < 3 => continue,
                Ok(_) | Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    let f = Flock::lock(open(private)?, FlockArg::LockExclusiveNonblock)
                        .map_err(|(_, e)| io::Error::from(e))?;
                    break (private.to_path_buf(), f);
                }
                Err((_, e)) => return Err(io::Error::from(e)),
            }
        };
        let mut resumed = file.metadata()?.len();
        if resumed > size {
            file.set_len(0)?;
            resumed = 0;
        }
        let mut ingest = Ingest {
            path,
            file,
            resumed,
        };
        ingest.file.seek(io::SeekFrom::Start(resumed))?;
        Ok(ingest)
    }
}

/// sha256 state of the first `len` bytes of `file`.
fn hash_prefix(file: &File, len: u64) -> io::Result<Sha256> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    while off < len {
        let want = buf
            .len()
            .min(usize::try_from(len - off).unwrap_or(usize::MAX));
        let n = file.read_at(&mut buf[..want], off)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "partial blob shrank",
            ));
        }
        hasher.update(&buf[..n]);
        off += n as u64;
    }
    Ok(hasher)
}

/// A blob to download.
pub(crate) struct BlobJob {
    /// The hosts to fetch it from, in order (see `fallback.rs`).
    pub(crate) hosts: Arc<BlobHosts>,
    pub(crate) digest: String,
    pub(crate) size: u64,
    /// Where the verified blob goes (renamed from the ingest file).
    pub(crate) path: PathBuf,
    pub(crate) ingest: Ingest,
    pub(crate) feed: Arc<Feed>,
    /// Called with the bytes received so far (progress display).
    pub(crate) progress: Option<Arc<dyn Fn(u64) + Send + Sync>>,
}

/// Downloads a blob to `job.path`, verifying size and sha256 as it streams; resumes with
/// range requests after transient errors. The feed ends `Ok` only for a verified blob.
pub(crate) async fn download(mut job: BlobJob) -> Result<(), PullError> {
    let guard = FeedGuard(job.feed.clone());
    let mut result = download_inner(&mut job).await;
    match &result {
        // Bad content is not worth resuming.
        Err(PullError::Corrupt(_)) => {
            let _ = std::fs::remove_file(&job.ingest.path);
        }
        Ok(()) => {
            if let Err(e) = std::fs::rename(&job.ingest.path, &job.path) {
                result = Err(PullError::Store(super::ImageError::Io {
                    op: "moving into the staging directory",
                    path: job.path.clone(),
                    source: e,
                }));
            }
        }
        // Kept to resume, unless there is nothing in it.
        Err(_) => {
            if job.ingest.file.metadata().is_ok_and(|m| m.len() == 0) {
                let _ = std::fs::remove_file(&job.ingest.path);
            }
        }
    }
    guard
        .0
        .finish(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
    result
}

async fn download_inner(job: &mut BlobJob) -> Result<(), PullError> {
    let what = format!("blob {}", job.digest);
    let ingest_path = job.ingest.path.clone();
    let io_err = move |op: &'static str, e: io::Error| {
        PullError::Store(super::ImageError::Io {
            op,
            path: ingest_path.clone(),
            source: e,
        })
    };
    let mut written: u64 = job.ingest.resumed;
    let mut hasher = if written > 0 {
        tracing::info!(blob = %job.digest, bytes = written, "resuming a partial download");
        let f = job
            .ingest
            .file
            .try_clone()
            .map_err(|e| io_err("reading", e))?;
        tokio::task::spawn_blocking(move || hash_prefix(&f, written))
            .await
            .map_err(|e| io_err("reading", io::Error::other(e)))?
            .map_err(|e| io_err("reading", e))?
    } else {
        Sha256::new()
    };
    let file: &mut File = &mut job.ingest.file;
    let mut delay = FIRST_BACKOFF;
    let mut attempt = 1;
    let mut at = 0;
    let mut src = job.hosts.first();
    loop {
        // Everything is there already (a pull killed after the last byte, before the
        // rename): nothing to ask for, and a range request from the end would be refused
        // (416). The digest check below decides whether it is kept.
        if written == job.size {
            break;
        }
        let outcome: Result<(), Failure> = async {
            let response = src
                .client
                .pull_blob_stream_partial(&src.reference, job.digest.as_str(), written, None)
                .await
                .map_err(|e| classify(e, &what, &src.host))?;
            let (mut stream, mut skip) = match response {
                oci_client::client::BlobResponse::Partial(s) => (s, 0),
                // No range support: the part already written comes again; skip it.
                oci_client::client::BlobResponse::Full(s) => (s, written),
            };
            while let Some(chunk) = stream.next().await {
                let chunk = chunk
                    .map_err(|e| classify(OciDistributionError::IoError(e), &what, &src.host))?;
                let mut data: &[u8] = &chunk;
                if skip > 0 {
                    let n = data.len().min(usize::try_from(skip).unwrap_or(usize::MAX));
                    data = &data[n..];
                    skip -= n as u64;
                }
                if data.is_empty() {
                    continue;
                }
                if written + data.len() as u64 > job.size {
                    return Err(Failure::Fatal(PullError::Corrupt(format!(
                        "{what} from {}: more than the {} bytes its descriptor says",
                        src.host, job.size
                    ))));
                }
                hasher.update(data);
                // A write of one chunk to the page cache: short enough for an async task.
                file.write_all(data)
                    .map_err(|e| Failure::Fatal(io_err("writing", e)))?;
                written += data.len() as u64;
                job.feed.advance(written);
                if let Some(p) = &job.progress {
                    p(written);
                }
            }
            Ok(())
        }
        .await;
        let failed = match outcome {
            Ok(()) if written == job.size => break,
            // The response ended early: resumed like a dropped connection.
            Ok(()) if attempt < ATTEMPTS => None,
            Ok(()) => Some(PullError::Unavailable(format!(
                "{what} from {}: ended after {written} of {} bytes",
                src.host, job.size
            ))),
            Err(Failure::Fatal(e)) => Some(e),
            Err(Failure::Transient(m)) if attempt >= ATTEMPTS => Some(PullError::Unavailable(
                format!("{m} (gave up after {attempt} attempts)"),
            )),
            Err(Failure::Transient(m)) => {
                tracing::info!(%what, attempt, resume_at = written, error = %m, "resuming a blob download");
                None
            }
        };
        if let Some(e) = failed {
            if at + 1 >= job.hosts.len() || !worth_another_host(&e) {
                return Err(e);
            }
            at += 1;
            let next = job.hosts.get(at).await?;
            tracing::info!(%what, from = %src.host, to = %next.host, resume_at = written, error = %e, "fetching the blob from the next host");
            src = next;
            delay = FIRST_BACKOFF;
            attempt = 1;
            continue;
        }
        tokio::time::sleep(delay).await;
        delay *= 2;
        attempt += 1;
    }
    let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
    if actual != job.digest {
        return Err(PullError::Corrupt(format!(
            "{what} from {}: digest mismatch: got {actual}",
            src.host
        )));
    }
    file.sync_data().map_err(|e| io_err("syncing", e))?;
    Ok(())
}

/// Removes the partial downloads under `tmp` that no download holds (their flock is free):
/// what killed pulls left for a resume that did not come. Run by the store's sweep.
pub(crate) fn sweep_ingests(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("ingest-") {
            continue;
        }
        let path = entry.path();
        let Ok(file) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&path)
        else {
            continue;
        };
        // Held while locked, so no download can start on it before it is gone.
        if let Ok(_lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a partial download");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_leaves_partial_downloads_in_use() {
        let dir = tempfile::tempdir().expect("tempdir");
        let digest = format!("sha256:{}", "a".repeat(64));
        let held = Ingest::open(dir.path(), &digest, 10, &dir.path().join("p")).expect("ingest");
        std::fs::write(
            dir.path().join(format!("ingest-{}", "b".repeat(64))),
            b"abc",
        )
        .expect("w");
        std::fs::write(dir.path().join("other"), b"x").expect("w");
        sweep_ingests(dir.path());
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            vec![format!("ingest-{}", "a".repeat(64)), "other".to_string()]
        );
        drop(held);
        sweep_ingests(dir.path());
        assert!(!dir
            .path()
            .join(format!("ingest-{}", "a".repeat(64)))
            .exists());
    }

    #[test]
    fn a_kept_part_is_resumed_and_rehashed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let digest = format!("sha256:{}", "c".repeat(64));
        let path = dir.path().join(format!("ingest-{}", "c".repeat(64)));
        std::fs::write(&path, b"hello ").expect("w");
        let ingest = Ingest::open(dir.path(), &digest, 11, &dir.path().join("p")).expect("open");
        assert_eq!(ingest.resumed, 6);
        let mut h = hash_prefix(&ingest.file, 6).expect("hash");
        h.update(b"world");
        assert_eq!(
            hex::encode(h.finalize()),
            hex::encode(Sha256::digest(b"hello world"))
        );
        // Longer than the blob: not a prefix of it, started again.
        drop(ingest);
        let ingest = Ingest::open(dir.path(), &digest, 3, &dir.path().join("p")).expect("open");
        assert_eq!(ingest.resumed, 0);
    }
}
