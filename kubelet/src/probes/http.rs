//! httpGet probes and hooks as the kubelet's prober makes them: one GET per try on a
//! fresh connection, `User-Agent: kube-probe/<version>`, the manifest's headers (a `Host`
//! header among them replaces the default), success on 2xx and 3xx (the kubelet counts an
//! unfollowed redirect as a success with a warning), and for `scheme: HTTPS` a TLS session
//! that does not verify the server's certificate — the kubelet's prober also sets
//! `InsecureSkipVerify`, since pods serve self-signed certificates.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::header::{HeaderName, HeaderValue, ACCEPT, CONNECTION, HOST, USER_AGENT};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::HTTPGetAction;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// The version the prober names in its User-Agent: the API version the agent serves.
const USER_AGENT_VALUE: &str = "kube-probe/1.34";

/// The kubelet reads at most this much of a probe's answer.
const MAX_BODY: usize = 10 * 1024;

/// One httpGet probe of `host:port` (the pod's address unless the action names a host).
pub(super) async fn get(
    a: &HTTPGetAction,
    pod_host: &str,
    port: u16,
    timeout: Duration,
) -> Result<(), String> {
    let https = a
        .scheme
        .as_deref()
        .is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
    let host = a.host.clone().unwrap_or_else(|| pod_host.to_string());
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let path = match a.path.as_deref() {
        Some(p) if p.starts_with('/') => p.to_string(),
        Some(p) => format!("/{p}"),
        None => "/".to_string(),
    };
    let url = format!(
        "{}://{authority}{path}",
        if https { "https" } else { "http" }
    );
    let mut req = http::Request::get(path.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let headers = req.headers_mut();
    let fixed = |v: &'static str| HeaderValue::from_static(v);
    headers.insert(
        HOST,
        HeaderValue::from_str(&authority).map_err(|e| format!("Get \"{url}\": {e}"))?,
    );
    headers.insert(USER_AGENT, fixed(USER_AGENT_VALUE));
    headers.insert(ACCEPT, fixed("*/*"));
    headers.insert(CONNECTION, fixed("close"));
    for h in a.http_headers.iter().flatten() {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| format!("invalid probe header name {:?}", h.name))?;
        let value = HeaderValue::from_str(&h.value)
            .map_err(|_| format!("invalid value of probe header {:?}", h.name))?;
        headers.insert(name, value);
    }
    let work = async {
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("Get \"{url}\": dial tcp {authority}: {e}"))?;
        if https {
            let name =
                ServerName::try_from(host.clone()).map_err(|e| format!("Get \"{url}\": {e}"))?;
            let tls = tls_connector()?
                .connect(name, tcp)
                .await
                .map_err(|e| format!("Get \"{url}\": tls: {e}"))?;
            send(TokioIo::new(tls), req, &url).await
        } else {
            send(TokioIo::new(tcp), req, &url).await
        }
    };
    let code = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| format!("Get \"{url}\": context deadline exceeded"))??;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

/// Sends `req` on one HTTP/1.1 connection and returns the answer's status code, after
/// reading (at most [`MAX_BODY`] of) its body, so that the server is not cut off mid-write.
async fn send<I>(io: I, req: http::Request<Empty<Bytes>>, url: &str) -> Result<u16, String>
where
    I: hyper::rt::Read + hyper::rt::Write + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("Get \"{url}\": {e}"))?;
    let driver = tokio::spawn(conn);
    let result = async {
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| format!("Get \"{url}\": {e}"))?;
        let code = res.status().as_u16();
        let mut body = res.into_body();
        let mut read = 0;
        while read < MAX_BODY {
            match body.frame().await {
                Some(Ok(f)) => read += f.data_ref().map_or(0, |d| d.len()),
                _ => break,
            }
        }
        Ok(code)
    }
    .await;
    driver.abort();
    result
}

fn tls_connector() -> Result<TlsConnector, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        // ring, as rrun-cri's registry client: no C library to build. rustls deprecates it
        // for its lack of post-quantum key exchange, which does not matter to a prober
        // that trusts any certificate anyway.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        Ok(Arc::new(config))
    });
    config.clone().map(TlsConnector::from)
}

/// Accepts any server certificate (the prober's `InsecureSkipVerify`), but still checks
/// that the server holds its key: the handshake signatures are verified.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
