//! A loopback gateway to the registry endpoints oci-client cannot reach by itself: those
//! with a client certificate (`client` in `hosts.toml`, mutual TLS) and those whose API root
//! is not `/v2` at the host's root (a path in the URL, `override_path`).
//!
//! Why a gateway: oci-client 0.18 (the newest) has no client identity in its `ClientConfig`
//! and always addresses `{scheme}://{registry}/v2/...`; no other well-kept Rust registry
//! client has either. It does take an HTTP proxy, so such an endpoint's client speaks plain
//! HTTP to this gateway as its proxy, and the gateway sends each request on with reqwest
//! (the HTTP client under oci-client), which holds the client certificate, the endpoint's
//! CAs and `skip_verify`, and puts the endpoint's API root in place of `/v2`. hyper serves
//! the proxy side: no HTTP is parsed here. Bodies stream through both ways, `Range` and the
//! partial answers pass unchanged (resumed downloads), and reqwest follows redirects (a
//! blob served from storage elsewhere) as containerd's client follows them, with the same
//! client certificate.
//!
//! The gateway listens on 127.0.0.1 only, takes `GET` and `HEAD` only, sends only to its
//! endpoint, and answers only requests with the random secret of its proxy URL (its proxy
//! credentials), so that no other process of the machine borrows the client certificate.
//! Nothing of a request (its `Authorization` among others) is logged.
//!
//! A failure to reach the endpoint is answered as `502` (`504`: a timeout) with a body that
//! starts with [`MARK`], which [`failure`] turns back into the pull error it stands for.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sha2::{Digest as _, Sha256};
use tokio::task::JoinSet;

use super::fetch::{self, Failure};
use super::pull::PullError;
use super::registry::Endpoint;

/// How a gateway's own failures start their body.
const MARK: &str = "rrun-cri registry gateway: ";
const PROXY_USER: &str = "rrun-cri";

/// A running gateway; stopped (its connections too) when dropped.
pub(crate) struct Gateway {
    addr: SocketAddr,
    secret: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct State {
    /// The endpoint as oci-client names it in its URLs (`host[:port]`).
    authority: http::uri::Authority,
    /// `scheme://host[:port]` and the API root's path: what replaces `http://host/v2`.
    base: String,
    /// For messages: the endpoint as `hosts.toml` names it.
    name: String,
    client: reqwest::Client,
    /// Whether `client` shows a client certificate.
    client_cert: bool,
    /// sha256 of the `Proxy-Authorization` value expected: compared as digests, so that
    /// the time a comparison takes tells nothing of the secret.
    expected: [u8; 32],
}

type Body = Either<Full<Bytes>, reqwest::Body>;

impl Gateway {
    /// Starts the gateway of `ep` on 127.0.0.1 (in the current tokio runtime).
    pub(crate) fn start(ep: &Endpoint, timeout: Duration) -> Result<Gateway, PullError> {
        super::registry::install_crypto_provider();
        let name = format!("{ep:?}");
        let err = |what: &str, e: &dyn std::fmt::Display| {
            PullError::Registry(format!("the gateway to {name}: {what}: {e}"))
        };
        let authority: http::uri::Authority = ep
            .host
            .parse()
            .map_err(|e| err("the endpoint's host", &e))?;
        let scheme = if ep.config.http { "http" } else { "https" };
        let base = format!("{scheme}://{}{}", ep.host, ep.path);
        let client = upstream_client(ep, timeout, &name)?;
        let secret = random_secret().map_err(|e| err("a secret", &e))?;
        let expected = Sha256::digest(basic(&secret).as_bytes()).into();
        let handle =
            tokio::runtime::Handle::try_current().map_err(|e| err("no tokio runtime", &e))?;
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| err("binding 127.0.0.1", &e))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| err("binding 127.0.0.1", &e))?;
        let addr = std_listener
            .local_addr()
            .map_err(|e| err("binding 127.0.0.1", &e))?;
        let state = Arc::new(State {
            authority,
            base,
            name,
            client,
            client_cert: !ep.config.client.is_empty(),
            expected,
        });
        let task = handle.spawn(async move {
            let listener = match tokio::net::TcpListener::from_std(std_listener) {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "the registry gateway cannot listen");
                    return;
                }
            };
            serve(listener, state).await;
        });
        Ok(Gateway { addr, secret, task })
    }

    /// The proxy URL oci-client is given, with the gateway's credentials.
    pub(crate) fn proxy_url(&self) -> String {
        format!("http://{PROXY_USER}:{}@{}", self.secret, self.addr)
    }
}

fn basic(secret: &str) -> String {
    let pair = format!("{PROXY_USER}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

/// 32 random bytes in hex, from the CSPRNG of rustls's crypto provider.
fn random_secret() -> Result<String, rustls::Error> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .ok_or_else(|| rustls::Error::General("no crypto provider".into()))?;
    let mut buf = [0u8; 32];
    provider
        .secure_random
        .fill(&mut buf)
        .map_err(|_| rustls::Error::General("no randomness".into()))?;
    Ok(hex::encode(buf))
}

/// The reqwest client reaching the endpoint itself, with its TLS settings.
fn upstream_client(
    ep: &Endpoint,
    timeout: Duration,
    name: &str,
) -> Result<reqwest::Client, PullError> {
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|e| PullError::Config {
            path: path.to_path_buf(),
            reason: format!("reading the {what} of {name}: {e}"),
        })
    };
    let mut b = reqwest::Client::builder()
        .danger_accept_invalid_certs(ep.config.skip_verify)
        .connect_timeout(Duration::from_secs(30));
    if !timeout.is_zero() {
        b = b.read_timeout(timeout);
    }
    let mut roots = Vec::new();
    for path in &ep.config.ca {
        let data = read(path, "CA")?;
        let certs =
            reqwest::Certificate::from_pem_bundle(&data).map_err(|e| PullError::Config {
                path: path.clone(),
                reason: format!("the CA of {name}: {e}"),
            })?;
        roots.extend(certs);
    }
    b = b.tls_certs_merge(roots);
    // reqwest holds one identity: the first pair is used. containerd gives Go's TLS every
    // pair, which sends the first the server's request accepts (its CAs, its signature
    // schemes); a list of pairs for servers that trust different CAs is rare enough.
    if let Some((cert, key)) = ep.config.client.first() {
        if ep.config.client.len() > 1 {
            tracing::warn!(endpoint = %name, "only the first client certificate is used");
        }
        let mut pem = read(cert, "client certificate")?;
        if let Some(key) = key {
            pem.push(b'\n');
            pem.extend(read(key, "client key")?);
        }
        let identity = reqwest::Identity::from_pem(&pem).map_err(|e| PullError::Config {
            path: cert.clone(),
            reason: format!(
                "the client certificate of {name} (a PEM certificate and its key): {}",
                fetch::error_chain(&e)
            ),
        })?;
        b = b.identity(identity);
    }
    b.build()
        .map_err(|e| PullError::Registry(format!("an HTTP client for {name}: {e}")))
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<State>) {
    // Owned here: aborting the gateway's task drops them, which aborts them.
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let state = state.clone();
                    conns.spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            handle(state.clone(), req)
                        });
                        // A client that goes away mid-answer is no error of the gateway.
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                Err(e) => {
                    // Out of file descriptors, mostly: wait rather than spin.
                    tracing::warn!(error = %e, "the registry gateway cannot accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

fn answer(status: StatusCode, text: String) -> Response<Body> {
    let mut res = Response::new(Either::Left(Full::new(Bytes::from(text))));
    *res.status_mut() = status;
    res
}

/// Headers that concern one connection, not the request, and are not passed on (RFC 9110,
/// 7.6.1), with those naming the gateway.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::HOST,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(n);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let given = req
        .headers()
        .get(header::PROXY_AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .unwrap_or_default();
    if <[u8; 32]>::from(Sha256::digest(given)) != state.expected {
        let mut res = answer(
            StatusCode::PROXY_AUTHENTICATION_REQUIRED,
            format!("{MARK}not for this client"),
        );
        res.headers_mut().insert(
            header::PROXY_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"rrun-cri\""),
        );
        return Ok(res);
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(answer(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{MARK}pulls only (GET and HEAD)"),
        ));
    }
    let uri = req.uri();
    let same_host = uri.authority().is_some_and(|a| {
        a.host().eq_ignore_ascii_case(state.authority.host())
            && a.port_u16().unwrap_or(80) == state.authority.port_u16().unwrap_or(80)
    });
    let rest = uri
        .path()
        .strip_prefix("/v2")
        .filter(|r| r.is_empty() || r.starts_with('/'));
    let (true, Some(rest)) = (same_host, rest) else {
        return Ok(answer(
            StatusCode::BAD_GATEWAY,
            format!("{MARK}it reaches only the API of {}", state.name),
        ));
    };
    let mut url = format!("{}{rest}", state.base);
    if let Some(q) = uri.query() {
        url.push('?');
        url.push_str(q);
    }
    let mut headers = req.headers().clone();
    strip_hop_by_hop(&mut headers);
    let sent = state
        .client
        .request(req.method().clone(), url)
        .headers(headers)
        .send()
        .await;
    let res = match sent {
        Ok(res) => res,
        Err(e) => {
            let (status, kind) = if e.is_timeout() {
                (StatusCode::GATEWAY_TIMEOUT, "timeout")
            } else if fetch::tls_failure(&e) {
                (StatusCode::BAD_GATEWAY, "TLS")
            } else {
                (StatusCode::BAD_GATEWAY, "unreachable")
            };
            // reqwest's message names the URL, which holds no secret of the client.
            return Ok(answer(
                status,
                format!(
                    "{MARK}{kind}: {}",
                    fetch::tls_message(&e, state.client_cert)
                ),
            ));
        }
    };
    let mut res: Response<reqwest::Body> = res.into();
    strip_hop_by_hop(res.headers_mut());
    Ok(res.map(Either::Right))
}

/// The pull error a gateway's own failure answer stands for; `None` for any other answer.
pub(crate) fn failure(code: u16, message: &str, at: impl Fn(String) -> String) -> Option<Failure> {
    let m = message.trim().strip_prefix(MARK)?;
    Some(if let Some(m) = m.strip_prefix("TLS: ") {
        Failure::Fatal(PullError::Tls(at(m.to_string())))
    } else if let Some(m) = m.strip_prefix("timeout: ") {
        Failure::Fatal(PullError::Timeout(at(m.to_string())))
    } else if let Some(m) = m.strip_prefix("unreachable: ") {
        Failure::Transient(at(m.to_string()))
    } else {
        Failure::Fatal(PullError::Registry(at(format!("HTTP {code}: {m}"))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::registry::EndpointTls;

    const BLOB: &[u8] = b"0123456789abcdef";

    /// An upstream on 127.0.0.1 with its API under `/custom/v2`: a blob URL redirects to a
    /// storage URL that honours `Range`. Returns its address.
    async fn upstream() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let mut res = Response::new(Full::new(Bytes::new()));
                        match req.uri().path() {
                            "/custom/v2/r/blobs/d" => {
                                *res.status_mut() = StatusCode::TEMPORARY_REDIRECT;
                                res.headers_mut()
                                    .insert(header::LOCATION, HeaderValue::from_static("/store/d"));
                            }
                            "/store/d" => {
                                let from = req
                                    .headers()
                                    .get(header::RANGE)
                                    .and_then(|r| r.to_str().ok())
                                    .and_then(|r| r.strip_prefix("bytes="))
                                    .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
                                if let Some(from) = from {
                                    *res.status_mut() = StatusCode::PARTIAL_CONTENT;
                                    *res.body_mut() = Full::new(Bytes::from_static(&BLOB[from..]));
                                } else {
                                    *res.body_mut() = Full::new(Bytes::from_static(BLOB));
                                }
                            }
                            _ => *res.status_mut() = StatusCode::NOT_FOUND,
                        }
                        Ok::<_, Infallible>(res)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn forwards_to_the_api_root_with_redirects_and_ranges_for_its_client_only() {
        let up = upstream().await;
        let mut ep = Endpoint::new(
            up.to_string(),
            false,
            EndpointTls {
                http: true,
                ..Default::default()
            },
        );
        ep.path = "/custom/v2".into();
        let gw = Gateway::start(&ep, Duration::from_secs(30)).unwrap();
        let client = reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(gw.proxy_url()).unwrap())
            .build()
            .unwrap();
        let url = format!("http://{up}/v2/r/blobs/d");

        let res = client.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(&res.bytes().await.unwrap()[..], BLOB);
        let res = client
            .get(&url)
            .header(header::RANGE, "bytes=10-")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(&res.bytes().await.unwrap()[..], &BLOB[10..]);

        // Not a pull, not its endpoint, not its API: refused.
        let res = client.post(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::METHOD_NOT_ALLOWED);
        let res = client.get("http://127.0.0.9:1/v2/").send().await.unwrap();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);
        let res = client
            .get(format!("http://{up}/store/d"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_GATEWAY);

        // Another client of the machine, without the gateway's secret.
        let stranger = reqwest::Client::builder()
            .proxy(reqwest::Proxy::http(format!("http://{}", gw.addr)).unwrap())
            .build()
            .unwrap();
        let res = stranger.get(&url).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::PROXY_AUTHENTICATION_REQUIRED);
        let body = res.bytes().await.unwrap();
        assert!(!String::from_utf8_lossy(&body).contains(&gw.secret));

        // A gateway failure reads back as the pull error it stands for.
        let at = |m: String| m;
        let f = failure(502, &format!("{MARK}TLS: bad"), at);
        assert!(matches!(f, Some(Failure::Fatal(PullError::Tls(m))) if m == "bad"));
        assert!(failure(502, "upstream said no", at).is_none());
    }
}
