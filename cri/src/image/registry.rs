//! Where and how a registry is reached: containerd's `hosts.toml` format (a `config_path`
//! directory with `<host>/hosts.toml`), and per-endpoint TLS (credentials: `auth.rs`).
//!
//! For a pull from `HOST`, the endpoints are the `[host."..."]` mirrors of
//! `<config_path>/HOST/hosts.toml` (else of `_default/hosts.toml`), in the order the file
//! lists them and only those with the `pull` capability (and `resolve` to resolve a tag),
//! then the upstream: the file's `server`, else `https://HOST` (`http://` for `localhost`
//! and loopback addresses, as Docker treats them as insecure registries). Plain HTTP is
//! used only where an endpoint's URL says `http://`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use serde::Deserialize;

use super::pull::PullError;

/// The registry settings of rrun-cri's configuration (`[registry]` in its TOML file).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// containerd's `config_path`: a directory of `<host>/hosts.toml` files.
    pub config_path: Option<PathBuf>,
    /// Layers downloaded at once per pull (containerd's `max_concurrent_downloads`).
    pub max_concurrent_downloads: usize,
    /// A pull that receives no byte for this long is cancelled (containerd's
    /// `image_pull_progress_timeout`, e.g. "5m"); "0s" disables it.
    #[serde(with = "humantime_serde_compat")]
    pub image_pull_progress_timeout: Duration,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            config_path: None,
            max_concurrent_downloads: 3,
            image_pull_progress_timeout: Duration::from_secs(5 * 60),
        }
    }
}

/// Durations as containerd writes them ("5m", "30s", "1m30s").
mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| serde::de::Error::custom(format!("{s:?}: {e}")))
    }
}

/// One place to fetch an image from.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// `host[:port]` as it goes into URLs.
    pub(crate) host: String,
    /// Whether this is the upstream (the image's own registry), not a mirror: credentials
    /// are only sent there (as containerd does unless a mirror has its own).
    pub(crate) upstream: bool,
    pub(crate) resolve: bool,
    pub(crate) config: EndpointTls,
}

/// How to speak to an endpoint.
#[derive(Clone, Default)]
pub(crate) struct EndpointTls {
    pub(crate) http: bool,
    pub(crate) skip_verify: bool,
    pub(crate) ca: Vec<PathBuf>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.config.http { "http" } else { "https" };
        write!(f, "{scheme}://{}", self.host)
    }
}

#[derive(Debug, Default, Deserialize)]
struct HostsFile {
    server: Option<String>,
    #[serde(default)]
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    skip_verify: Option<bool>,
    #[serde(default)]
    ca: Option<StringOrList>,
    #[serde(default)]
    client: Option<toml::Value>,
    #[serde(default)]
    host: BTreeMap<String, toml::Spanned<HostEntry>>,
}

#[derive(Debug, Default, Deserialize)]
struct HostEntry {
    #[serde(default)]
    capabilities: Option<Vec<String>>,
    #[serde(default)]
    skip_verify: Option<bool>,
    #[serde(default)]
    ca: Option<StringOrList>,
    #[serde(default)]
    client: Option<toml::Value>,
    #[serde(default)]
    override_path: Option<bool>,
    #[serde(default)]
    header: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

impl StringOrList {
    fn paths(&self, base: &Path) -> Vec<PathBuf> {
        let list = match self {
            StringOrList::One(s) => vec![s.clone()],
            StringOrList::Many(v) => v.clone(),
        };
        list.into_iter().map(|p| base.join(p)).collect()
    }
}

/// Is `host` (`name[:port]`) localhost or a loopback address?
fn is_loopback(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else if host.matches(':').count() == 1 {
        host.split(':').next().unwrap_or(host)
    } else {
        host
    };
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `https://host:port/path` → (http?, `host:port`); the path (an `override_path` mirror's)
/// is refused, oci-client always addresses `/v2/` at the root.
fn parse_url(url: &str, file: &Path) -> Result<(bool, String), PullError> {
    let bad = |reason: &str| PullError::Config {
        path: file.to_path_buf(),
        reason: format!("{url:?}: {reason}"),
    };
    let (http, rest) = if let Some(r) = url.strip_prefix("https://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (true, r)
    } else {
        return Err(bad("an endpoint URL starts with https:// or http://"));
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err(bad("no host"));
    }
    let path = path.trim_end_matches('/');
    if !path.is_empty() && path != "v2" {
        return Err(bad(
            "a path other than /v2 (override_path) is not supported: oci-client addresses \
             the registry API at /v2/ of the host",
        ));
    }
    Ok((http, host.to_string()))
}

fn has(caps: &Option<Vec<String>>, cap: &str) -> bool {
    caps.as_ref().is_none_or(|c| c.iter().any(|x| x == cap))
}

/// The endpoints to try for an image of `registry` (as in its reference: `docker.io`,
/// `localhost:5000`), mirrors first.
pub(crate) fn endpoints(
    config_path: Option<&Path>,
    registry: &str,
) -> Result<Vec<Endpoint>, PullError> {
    let default_http = is_loopback(registry);
    let upstream_host = if registry == "docker.io" {
        "registry-1.docker.io".to_string()
    } else {
        registry.to_string()
    };
    let mut upstream = Endpoint {
        host: upstream_host,
        upstream: true,
        resolve: true,
        config: EndpointTls {
            http: default_http,
            ..Default::default()
        },
    };
    let Some(dir) = config_path else {
        return Ok(vec![upstream]);
    };
    let mut file = dir.join(registry).join("hosts.toml");
    if !file.is_file() {
        file = dir.join("_default").join("hosts.toml");
        if !file.is_file() {
            return Ok(vec![upstream]);
        }
    }
    let base = file.parent().unwrap_or(dir).to_path_buf();
    let text = std::fs::read_to_string(&file).map_err(|e| PullError::Config {
        path: file.clone(),
        reason: e.to_string(),
    })?;
    let parsed: HostsFile = toml::from_str(&text).map_err(|e| PullError::Config {
        path: file.clone(),
        reason: e.to_string(),
    })?;
    if parsed.client.is_some() {
        return Err(PullError::Config {
            path: file,
            reason: "client certificates (`client`) are not supported: oci-client has no \
                     client identity setting"
                .into(),
        });
    }
    if let Some(server) = &parsed.server {
        let (http, host) = parse_url(server, &file)?;
        upstream.host = host;
        upstream.config.http = http;
    }
    upstream.config.skip_verify = parsed.skip_verify.unwrap_or(false);
    upstream.config.ca = parsed
        .ca
        .as_ref()
        .map(|c| c.paths(&base))
        .unwrap_or_default();
    let pulls = has(&parsed.capabilities, "pull");
    upstream.resolve = has(&parsed.capabilities, "resolve");

    let mut hosts: Vec<(&String, &toml::Spanned<HostEntry>)> = parsed.host.iter().collect();
    // The file's order, as containerd tries them.
    hosts.sort_by_key(|(_, h)| h.span().start);
    let mut out = Vec::new();
    for (url, entry) in hosts {
        let entry = entry.get_ref();
        if entry.client.is_some() {
            return Err(PullError::Config {
                path: file.clone(),
                reason: format!(
                    "host {url:?}: client certificates (`client`) are not supported: \
                     oci-client has no client identity setting"
                ),
            });
        }
        if entry.header.is_some() {
            tracing::warn!(file = %file.display(), host = %url, "extra headers are not supported; ignored");
        }
        if entry.override_path == Some(true) {
            return Err(PullError::Config {
                path: file.clone(),
                reason: format!("host {url:?}: override_path is not supported"),
            });
        }
        if !has(&entry.capabilities, "pull") {
            continue;
        }
        let (http, host) = parse_url(url, &file)?;
        out.push(Endpoint {
            host,
            upstream: false,
            resolve: has(&entry.capabilities, "resolve"),
            config: EndpointTls {
                http,
                skip_verify: entry.skip_verify.unwrap_or(false),
                ca: entry
                    .ca
                    .as_ref()
                    .map(|c| c.paths(&base))
                    .unwrap_or_default(),
            },
        });
    }
    if pulls {
        out.push(upstream);
    }
    if out.is_empty() {
        return Err(PullError::Config {
            path: file,
            reason: "no host in it may pull".into(),
        });
    }
    Ok(out)
}

/// The oci-client configuration for an endpoint (one client per endpoint: TLS settings are
/// per client).
pub(crate) fn client_config(
    ep: &Endpoint,
    progress_timeout: Duration,
) -> Result<ClientConfig, PullError> {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        // ring, not aws-lc-rs: no C library to build with cmake. Its lack of post-quantum
        // key exchange (why rustls deprecates it) does not weaken fetching content whose
        // digests are checked. Another part of the process may have installed a provider
        // already: either is fine.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    let mut roots = Vec::new();
    for path in &ep.config.ca {
        let data = std::fs::read(path).map_err(|e| PullError::Config {
            path: path.clone(),
            reason: format!("reading the CA of {ep:?}: {e}"),
        })?;
        roots.push(Certificate {
            encoding: CertificateEncoding::Pem,
            data,
        });
    }
    Ok(ClientConfig {
        protocol: if ep.config.http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: ep.config.skip_verify,
        extra_root_certificates: roots,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: (!progress_timeout.is_zero()).then_some(progress_timeout),
        user_agent: concat!("rrun-cri/", env!("CARGO_PKG_VERSION")),
        ..ClientConfig::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_plain_http() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "[::1]:5000",
            "127.0.0.2",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "docker.io",
            "10.0.0.1:5000",
            "registry.local:443",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn hosts_toml_mirrors_in_file_order_then_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("example.com:5000");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(
            d.join("hosts.toml"),
            r#"
server = "https://example.com:5000"
[host."https://zz-mirror:1"]
  capabilities = ["pull", "resolve"]
  ca = "ca.pem"
[host."http://aa-mirror:2/v2"]
  capabilities = ["pull"]
  skip_verify = true
[host."https://push-only:3"]
  capabilities = ["push"]
"#,
        )
        .unwrap();
        let eps = endpoints(Some(dir.path()), "example.com:5000").unwrap();
        let got: Vec<String> = eps.iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(
            got,
            [
                "https://zz-mirror:1",
                "http://aa-mirror:2",
                "https://example.com:5000"
            ]
        );
        assert_eq!(eps[0].config.ca, vec![d.join("ca.pem")]);
        assert!(eps[1].config.skip_verify && !eps[1].resolve);
        assert!(eps[2].upstream && !eps[0].upstream);
        // No file: the upstream alone, plain HTTP only on loopback.
        let eps = endpoints(Some(dir.path()), "127.0.0.1:5000").unwrap();
        assert_eq!(format!("{:?}", eps[0]), "http://127.0.0.1:5000");
        let eps = endpoints(None, "docker.io").unwrap();
        assert_eq!(format!("{:?}", eps[0]), "https://registry-1.docker.io");
    }
}
