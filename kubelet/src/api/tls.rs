//! The API's HTTPS face: a CA and a serving certificate made at the first start under
//! `<root>/pki/` (the CA and the bearer token are kept across restarts; the serving
//! certificate is signed again at each start, so it always names the address served), the
//! admin kubeconfig (`<root>/kubeconfig`, 0600, as k3s writes its own), the bearer-token
//! check, and the TLS accept loop.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use base64::Engine;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::status_error;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("making a certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("the TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("binding the API address {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Makes (or loads) the PKI, writes `<root>/kubeconfig`, binds `addr` and serves `router`
/// there behind the token check. Returns the kubeconfig's path.
pub async fn start(root: &Path, addr: SocketAddr, router: Router) -> Result<PathBuf, TlsError> {
    let pki = ensure(root, addr)?;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| TlsError::Bind(addr, e))?;
    let kubeconfig = root.join("kubeconfig");
    write_kubeconfig(&kubeconfig, &pki, addr)?;
    let creds = Arc::new(Credentials {
        admin: pki.token.clone(),
        root: root.to_path_buf(),
    });
    let router = router.layer(axum::middleware::from_fn_with_state(creds, require_token));
    tokio::spawn(serve(listener, pki.server, router));
    Ok(kubeconfig)
}

/// What the HTTPS listener and the kubeconfig are made from.
pub struct Pki {
    pub ca_pem: String,
    pub token: String,
    pub server: Arc<rustls::ServerConfig>,
}

const CA_NAME: &str = "rrun-kubelet-ca";

/// The CA's parameters: fixed, so that the stored key and these make the same issuer at
/// every start (the stored `ca.crt` is what clients trust).
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T, TlsError> {
    r.map_err(|e| TlsError::Io(path.to_path_buf(), e))
}

/// Writes a private file (0600) atomically: a reader never sees half of it.
fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let mut f = io(
        &tmp,
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp),
    )?;
    io(&tmp, f.write_all(data))?;
    io(&tmp, f.sync_all())?;
    io(
        &tmp,
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)),
    )?;
    io(path, std::fs::rename(&tmp, path))
}

fn read_opt(path: &Path) -> Result<Option<String>, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(TlsError::Io(path.to_path_buf(), e)),
    }
}

/// 32 bytes of the kernel's randomness, as hex.
fn random_token(path: &Path) -> Result<String, TlsError> {
    let mut b = [0u8; 32];
    io(path, getrandom(&mut b))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(buf)
}

/// `<root>/pki/` (0700), made if needed.
fn pki_dir(root: &Path) -> Result<PathBuf, TlsError> {
    let dir = root.join("pki");
    io(&dir, std::fs::create_dir_all(&dir))?;
    io(
        &dir,
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)),
    )?;
    Ok(dir)
}

/// Loads or makes the CA: its key and its certificate (PEM).
fn ca(dir: &Path) -> Result<(KeyPair, String), TlsError> {
    let (key_path, crt_path) = (dir.join("ca.key"), dir.join("ca.crt"));
    Ok(match (read_opt(&key_path)?, read_opt(&crt_path)?) {
        (Some(k), Some(c)) => (KeyPair::from_pem(&k)?, c),
        _ => {
            let key = KeyPair::generate()?;
            let cert = ca_params()?.self_signed(&key)?;
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            write_private(&crt_path, cert.pem().as_bytes())?;
            (key, cert.pem())
        }
    })
}

/// The API's CA certificate (PEM), made at the first call: what pods get as the
/// `kube-root-ca.crt` ConfigMap's `ca.crt`, whether or not the HTTPS API is served.
pub fn root_ca(root: &Path) -> Result<String, TlsError> {
    ca(&pki_dir(root)?).map(|(_, pem)| pem)
}

/// Loads or makes the CA, the token and the serving certificate for `addr`.
pub fn ensure(root: &Path, addr: SocketAddr) -> Result<Pki, TlsError> {
    let dir = pki_dir(root)?;
    let tok_path = dir.join("token");
    let (ca_key, ca_pem) = ca(&dir)?;
    let token = match read_opt(&tok_path)?.map(|t| t.trim().to_string()) {
        Some(t) if !t.is_empty() => t,
        _ => {
            let t = random_token(&tok_path)?;
            write_private(&tok_path, t.as_bytes())?;
            t
        }
    };
    let issuer = Issuer::new(ca_params()?, ca_key);
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    let ip = addr.ip().to_string();
    if !names.contains(&ip) && !addr.ip().is_unspecified() {
        names.push(ip);
    }
    let mut sp = CertificateParams::new(names)?;
    sp.distinguished_name
        .push(DnType::CommonName, "rrun-kubelet-apiserver");
    sp.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let srv_key = KeyPair::generate()?;
    let srv = sp.signed_by(&srv_key, &issuer)?;
    let chain = vec![CertificateDer::from(srv.der().to_vec())];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(srv_key.serialize_der()));
    // ring, as the rest of the project: no C library to build. rustls deprecates it for
    // its lack of post-quantum key exchange, which a loopback admin API can do without.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    // HTTP/1.1 only: watches stream as chunked bodies and exec upgrades the connection.
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Pki {
        ca_pem,
        token,
        server: Arc::new(server),
    })
}

/// The admin kubeconfig at `path` (0600): this node's API, its CA, the token.
pub fn write_kubeconfig(path: &Path, pki: &Pki, addr: SocketAddr) -> Result<(), TlsError> {
    let host = match addr.ip() {
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    };
    let ca = base64::engine::general_purpose::STANDARD.encode(pki.ca_pem.as_bytes());
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: rrun\n  cluster:\n    server: https://{host}:{port}\n    certificate-authority-data: {ca}\n\
         users:\n- name: rrun-admin\n  user:\n    token: {token}\n\
         contexts:\n- name: rrun\n  context:\n    cluster: rrun\n    user: rrun-admin\n    namespace: default\n\
         current-context: rrun\npreferences: {{}}\n",
        port = addr.port(),
        token = pki.token,
    );
    write_private(path, text.as_bytes())
}

/// The bearer tokens the API takes: the admin's (anything goes), and service account tokens
/// of this node's issuer (`volumes::token`), which may do what `service_account::authorize`
/// lets them.
pub struct Credentials {
    pub admin: String,
    /// The agent's root dir, where the token issuer's key is.
    pub root: PathBuf,
}

/// Answers 401 (as the API server words it) unless the request bears a token the API
/// takes, and 403 when a service account's token asks for more than it may.
pub async fn require_token(
    State(creds): State<Arc<Credentials>>,
    req: Request,
    next: Next,
) -> Response {
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim);
    if given.is_some_and(|t| same(t.as_bytes(), creds.admin.as_bytes())) {
        return next.run(req).await;
    }
    match given.and_then(|t| crate::volumes::token::authenticate(&creds.root, t)) {
        Some(user) => {
            let uri = req.uri();
            let (method, path) = (req.method().as_str(), uri.path());
            let query = uri.query().unwrap_or("");
            match crate::service_account::authorize(method, path, query, &user) {
                Ok(()) => next.run(req).await,
                Err(msg) => status_error(StatusCode::FORBIDDEN, "Forbidden", msg, None),
            }
        }
        _ => status_error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized".into(),
            None,
        ),
    }
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Accepts TLS connections on `listener` and serves `router` on each (HTTP/1.1, upgrades
/// allowed).
pub async fn serve(listener: TcpListener, config: Arc<rustls::ServerConfig>, router: Router) {
    let acceptor = TlsAcceptor::from(config);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("the API port: accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let svc = TowerToHyperService::new(router);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), svc)
                .with_upgrades()
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pki_kept_across_starts_and_kubeconfig_private() {
        let d = tempfile::tempdir().unwrap();
        let addr: SocketAddr = "127.0.0.1:6443".parse().unwrap();
        let a = ensure(d.path(), addr).unwrap();
        let b = ensure(d.path(), addr).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_eq!(a.token, b.token);
        assert_eq!(a.token.len(), 64);
        let kc = d.path().join("kubeconfig");
        write_kubeconfig(&kc, &a, addr).unwrap();
        let mode = std::fs::metadata(&kc).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&kc).unwrap();
        assert!(text.contains("server: https://127.0.0.1:6443"), "{text}");
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
