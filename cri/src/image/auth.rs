//! Credentials for a pull: the CRI's `AuthConfig` as the kubelet sends it, and what
//! oci-client does not do with them, added here:
//! - `identity_token` (an OAuth2 refresh token) is exchanged for an access token with the
//!   refresh-token grant at the registry's token realm (`POST grant_type=refresh_token`),
//!   falling back to `GET` with basic auth where the service has no OAuth2 endpoint, as
//!   containerd's docker resolver does; oci-client only knows the `GET` flow;
//! - a 401 of the registry is answered with the registry's own message (oci-client drops
//!   the body of a 401): [`registry_message`] asks again and reads it;
//! - every message that leaves a pull has the secrets it was given redacted, since a
//!   registry or token service may echo what it was sent.

use base64::Engine as _;
use oci_client::client::{CertificateEncoding, ClientConfig};
use oci_client::secrets::RegistryAuth;

use super::pull::PullError;
use super::registry::Endpoint;

const REDACTED: &str = "<redacted>";
/// The most of a token service's or registry's answer read (a message, not content).
const MAX_ANSWER: usize = 64 << 10;

/// A pull's credentials, and the secrets in them (to redact).
#[derive(Clone)]
pub(crate) struct Credentials {
    kind: Kind,
    secrets: Vec<String>,
}

#[derive(Clone)]
enum Kind {
    Oci(RegistryAuth),
    IdentityToken { username: String, token: String },
}

impl Credentials {
    /// The CRI's `AuthConfig`: `registry_token` is a bearer token used as is;
    /// `identity_token` a refresh token for the token realm; username and password, or
    /// `auth` (base64 `user:password`), basic credentials (for basic auth or the token
    /// service's `GET`).
    pub(crate) fn from_cri(
        auth: Option<&cri_proto::api::AuthConfig>,
    ) -> Result<Credentials, PullError> {
        let Some(a) = auth else {
            return Ok(Credentials {
                kind: Kind::Oci(RegistryAuth::Anonymous),
                secrets: Vec::new(),
            });
        };
        let mut secrets: Vec<String> = [&a.password, &a.auth, &a.identity_token, &a.registry_token]
            .into_iter()
            .filter(|s| !s.is_empty())
            .cloned()
            .collect();
        let kind = if !a.registry_token.is_empty() {
            Kind::Oci(RegistryAuth::Bearer(a.registry_token.clone()))
        } else if !a.identity_token.is_empty() {
            Kind::IdentityToken {
                username: a.username.clone(),
                token: a.identity_token.clone(),
            }
        } else if !a.username.is_empty() || !a.password.is_empty() {
            Kind::Oci(RegistryAuth::Basic(a.username.clone(), a.password.clone()))
        } else if !a.auth.is_empty() {
            // The decoded value is a secret: errors say what is wrong, never what it holds.
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.auth.trim())
                .map_err(|_| PullError::BadAuth("AuthConfig.auth is not valid base64".into()))?;
            let text = String::from_utf8(raw)
                .map_err(|_| PullError::BadAuth("AuthConfig.auth is not UTF-8".into()))?;
            let (user, pass) = text.split_once(':').ok_or_else(|| {
                PullError::BadAuth("AuthConfig.auth does not decode to user:password".into())
            })?;
            if !pass.is_empty() {
                secrets.push(pass.to_string());
            }
            Kind::Oci(RegistryAuth::Basic(user.to_string(), pass.to_string()))
        } else {
            Kind::Oci(RegistryAuth::Anonymous)
        };
        // Longest first, so that a secret holding another is redacted whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Ok(Credentials { kind, secrets })
    }

    /// `text` with every secret of these credentials replaced.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), REDACTED);
            }
        }
        out
    }

    /// A pull's error with the secrets redacted from its message.
    pub(crate) fn redact_error(&self, e: PullError) -> PullError {
        use PullError as P;
        let r = |m: String| self.redact(&m);
        match e {
            P::InvalidReference(m) => P::InvalidReference(r(m)),
            P::NotFound(m) => P::NotFound(r(m)),
            P::Unauthenticated(m) => P::Unauthenticated(r(m)),
            P::PermissionDenied(m) => P::PermissionDenied(r(m)),
            P::Unavailable(m) => P::Unavailable(r(m)),
            P::Tls(m) => P::Tls(r(m)),
            P::Timeout(m) => P::Timeout(r(m)),
            P::Corrupt(m) => P::Corrupt(r(m)),
            P::Unsupported(m) => P::Unsupported(r(m)),
            P::Registry(m) => P::Registry(r(m)),
            P::BadAuth(m) => P::BadAuth(r(m)),
            other => other,
        }
    }

    /// What oci-client is given for the endpoint `ep` (the image's own registry: mirrors
    /// get no credentials) to pull `repo`: an identity token is exchanged for an access
    /// token first.
    pub(crate) async fn for_endpoint(
        &self,
        ep: &Endpoint,
        config: &ClientConfig,
        repo: &str,
    ) -> Result<RegistryAuth, PullError> {
        match &self.kind {
            Kind::Oci(a) => Ok(a.clone()),
            Kind::IdentityToken { username, token } => {
                let http = http_client(config, ep)?;
                exchange_refresh_token(&http, ep, repo, username, token)
                    .await
                    .map_err(|e| self.redact_error(e))
            }
        }
    }
}

/// A reqwest client speaking to `ep` as oci-client's does (same TLS settings and timeouts).
fn http_client(config: &ClientConfig, ep: &Endpoint) -> Result<reqwest::Client, PullError> {
    let mut certs = Vec::new();
    for c in &config.extra_root_certificates {
        let cert = match c.encoding {
            CertificateEncoding::Pem => reqwest::Certificate::from_pem(&c.data),
            CertificateEncoding::Der => reqwest::Certificate::from_der(&c.data),
        }
        .map_err(|e| PullError::Tls(format!("a CA of {ep:?}: {e}")))?;
        certs.push(cert);
    }
    let mut b = reqwest::Client::builder()
        .danger_accept_invalid_certs(config.accept_invalid_certificates)
        .tls_certs_merge(certs)
        .user_agent(config.user_agent);
    if let Some(t) = config.read_timeout {
        b = b.read_timeout(t);
    }
    if let Some(t) = config.connect_timeout {
        b = b.connect_timeout(t);
    }
    // The endpoint's gateway (`gateway.rs`), as oci-client reaches it.
    if let Some(proxy) = &config.http_proxy {
        let proxy = reqwest::Proxy::http(proxy)
            .map_err(|e| PullError::Registry(format!("the gateway to {ep:?}: {e}")))?;
        b = b.proxy(proxy);
    }
    b.build()
        .map_err(|e| PullError::Registry(format!("an HTTP client for {ep:?}: {e}")))
}

/// The `Bearer` challenge of a 401: realm and service.
fn bearer_challenge(header: &str) -> Option<(String, Option<String>)> {
    let challenges = http_auth::parse_challenges(header).ok()?;
    let c = challenges
        .iter()
        .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))?;
    let param = |name: &str| {
        c.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_unescaped())
    };
    Some((param("realm")?, param("service")))
}

/// At most [`MAX_ANSWER`] bytes of a response body, as text.
async fn body_text(mut res: reqwest::Response) -> String {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        out.extend_from_slice(&chunk);
        if out.len() >= MAX_ANSWER {
            out.truncate(MAX_ANSWER);
            break;
        }
    }
    String::from_utf8_lossy(&out).trim().to_string()
}

fn unreachable(what: &str, e: reqwest::Error) -> PullError {
    let mut s = e.to_string();
    let mut cur = std::error::Error::source(&e);
    while let Some(err) = cur {
        s.push_str(": ");
        s.push_str(&err.to_string());
        cur = err.source();
    }
    PullError::Unavailable(format!("{what}: {s}"))
}

/// An answer other than 200 of the token service, as a pull error quoting it.
fn refused(realm: &str, status: reqwest::StatusCode, body: &str) -> PullError {
    let msg =
        format!("the token service {realm} refused the identity token: HTTP {status}: {body}");
    match status.as_u16() {
        401 => PullError::Unauthenticated(msg),
        403 => PullError::PermissionDenied(msg),
        429 | 500.. => PullError::Unavailable(msg),
        _ => PullError::Registry(msg),
    }
}

/// The access token from a token service's JSON answer (`access_token`, or `token`).
fn access_token(body: &str, realm: &str) -> Result<String, PullError> {
    #[derive(serde::Deserialize)]
    struct Answer {
        access_token: Option<String>,
        token: Option<String>,
    }
    let a: Answer = serde_json::from_str(body).map_err(|e| {
        PullError::Registry(format!("the token service {realm} answered no token: {e}"))
    })?;
    a.access_token
        .or(a.token)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| PullError::Registry(format!("the token service {realm} answered no token")))
}

/// The OAuth2 refresh-token grant for `repo` at `ep`'s token realm. A registry that
/// answers no `Bearer` challenge gets the token as a basic-auth password instead.
async fn exchange_refresh_token(
    http: &reqwest::Client,
    ep: &Endpoint,
    repo: &str,
    username: &str,
    token: &str,
) -> Result<RegistryAuth, PullError> {
    let ping = format!("{}://{}/v2/", ep.client_scheme(), ep.host);
    let res = http
        .get(&ping)
        .send()
        .await
        .map_err(|e| unreachable(&format!("{ep:?}"), e))?;
    let challenge = res
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .and_then(bearer_challenge);
    let Some((realm, service)) = challenge else {
        return Ok(RegistryAuth::Basic(username.to_string(), token.to_string()));
    };
    let scope = format!("repository:{repo}:pull");
    let mut form = vec![
        ("grant_type", "refresh_token"),
        ("refresh_token", token),
        ("scope", scope.as_str()),
        ("client_id", "rrun-cri"),
    ];
    if let Some(s) = &service {
        form.push(("service", s.as_str()));
    }
    let res = http
        .post(&realm)
        .form(&form)
        .send()
        .await
        .map_err(|e| unreachable(&format!("the token service {realm}"), e))?;
    let status = res.status();
    let body = body_text(res).await;
    if status.is_success() {
        return access_token(&body, &realm).map(RegistryAuth::Bearer);
    }
    // containerd's fallback: services without the OAuth2 endpoint (404, 405), and those
    // that take the refresh token only as a basic-auth password (401), get the GET flow.
    if !matches!(status.as_u16(), 401 | 404 | 405) {
        return Err(refused(&realm, status, &body));
    }
    tracing::debug!(%realm, %status, "no OAuth2 token endpoint; trying GET with basic auth");
    let mut query = vec![("scope", scope.as_str())];
    if let Some(s) = &service {
        query.push(("service", s.as_str()));
    }
    let res = http
        .get(&realm)
        .query(&query)
        .basic_auth(username, Some(token))
        .send()
        .await
        .map_err(|e| unreachable(&format!("the token service {realm}"), e))?;
    let status = res.status();
    let body = body_text(res).await;
    if status.is_success() {
        access_token(&body, &realm).map(RegistryAuth::Bearer)
    } else {
        Err(refused(&realm, status, &body))
    }
}

/// Why the registry answered 401 (oci-client keeps only the URL): the token service's
/// refusal of the credentials, else the registry's own message, read from its answer to the
/// request made again with the same credentials (the bearer token oci-client gets for the
/// image, if any). `None` when that fails.
pub(crate) async fn registry_message(
    client: &oci_client::Client,
    config: &ClientConfig,
    ep: &Endpoint,
    reference: &oci_client::Reference,
    auth: &RegistryAuth,
    url: &str,
) -> Option<String> {
    let http = http_client(config, ep).ok()?;
    let mut req = http.get(url);
    // oci-client goes on without a token when the token service refuses the credentials
    // (and then gets the registry's 401): the service's refusal is the message then.
    let token = match client
        .auth(reference, auth, oci_client::RegistryOperation::Pull)
        .await
    {
        Ok(t) => t,
        Err(oci_client::errors::OciDistributionError::AuthenticationFailure(m)) => {
            return Some(format!(
                "the token service refused the credentials: {}",
                m.trim()
            ));
        }
        Err(_) => None,
    };
    req = match (token, auth) {
        (Some(t), _) => req.bearer_auth(t),
        (None, RegistryAuth::Basic(u, p)) => req.basic_auth(u, Some(p)),
        (None, RegistryAuth::Bearer(t)) => req.bearer_auth(t),
        (None, RegistryAuth::Anonymous) => req,
    };
    let res = req.send().await.ok()?;
    let error_param = res
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            let challenges = http_auth::parse_challenges(h).ok()?;
            challenges.iter().find_map(|c| {
                c.params
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("error"))
                    .map(|(_, v)| v.to_unescaped())
            })
        });
    let body = body_text(res).await;
    let envelope: Option<oci_client::errors::OciEnvelope> = serde_json::from_str(&body).ok();
    let mut msg = match envelope {
        Some(env) if !env.errors.is_empty() => env
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
            .join("; "),
        _ if body.is_empty() => String::new(),
        _ => body,
    };
    if let Some(p) = error_param {
        msg = if msg.is_empty() {
            p
        } else {
            format!("{msg} ({p})")
        };
    }
    (!msg.is_empty()).then(|| format!("the registry says: {msg}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cri_proto::api::AuthConfig;

    #[test]
    fn auth_config_forms() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("u:p:q");
        let a = AuthConfig {
            auth: b64,
            ..Default::default()
        };
        let c = Credentials::from_cri(Some(&a)).unwrap();
        assert!(matches!(&c.kind, Kind::Oci(RegistryAuth::Basic(u, p)) if u == "u" && p == "p:q"));
        assert_eq!(c.redact("x p:q y"), "x <redacted> y");
        let a = AuthConfig {
            auth: "!!!".into(),
            ..Default::default()
        };
        let e = Credentials::from_cri(Some(&a)).err().unwrap().to_string();
        assert!(!e.contains("!!!"), "{e}");
        let a = AuthConfig {
            registry_token: "tok".into(),
            username: "x".into(),
            ..Default::default()
        };
        let c = Credentials::from_cri(Some(&a)).unwrap();
        assert!(matches!(&c.kind, Kind::Oci(RegistryAuth::Bearer(t)) if t == "tok"));
        let a = AuthConfig {
            identity_token: "refresh".into(),
            ..Default::default()
        };
        let c = Credentials::from_cri(Some(&a)).unwrap();
        assert!(matches!(&c.kind, Kind::IdentityToken { token, .. } if token == "refresh"));
        let e = c.redact_error(PullError::Unauthenticated("bad refresh token".into()));
        assert_eq!(e.to_string(), "unauthenticated: bad <redacted> token");
        let c = Credentials::from_cri(None).unwrap();
        assert!(matches!(c.kind, Kind::Oci(RegistryAuth::Anonymous)));
    }

    #[test]
    fn bearer_challenges() {
        let (realm, service) = bearer_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull""#,
        )
        .unwrap();
        assert_eq!(realm, "https://auth.example/token");
        assert_eq!(service.as_deref(), Some("registry.example"));
        assert!(bearer_challenge(r#"Basic realm="x""#).is_none());
    }
}
