//! Where and how a registry is reached: containerd's `hosts.toml` format (a `config_path`
//! directory with `<host>/hosts.toml`), and per-endpoint TLS (credentials: `auth.rs`).
//!
//! For a pull from `HOST`, the endpoints are the `[host."..."]` mirrors of
//! `<config_path>/HOST/hosts.toml` (else of `_default/hosts.toml`), in the order the file
//! lists them and only those with the `pull` capability (and `resolve` to resolve a tag),
//! then the upstream: the file's `server`, else `https://HOST` (`http://` for `localhost`
//! and loopback addresses, as Docker treats them as insecure registries). Plain HTTP is
//! used only where an endpoint's URL says `http://`.
//!
//! An endpoint's URL may hold the API root's path, as containerd reads it: `/v2` is appended
//! unless the path ends with it or `override_path = true` says the path is the API root
//! itself. Endpoints with a client certificate (`client`) or an API root other than `/v2`
//! are reached through a loopback gateway (`gateway.rs`), as oci-client can do neither.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use serde::Deserialize;

use super::gateway::Gateway;
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
    /// The API root's path: `/v2` but where `hosts.toml` says otherwise.
    pub(crate) path: String,
    /// The gateway reaching this endpoint, started on first use, shared by the clones of the
    /// endpoint and stopped with the last of them.
    gateway: Arc<Mutex<Option<Arc<Gateway>>>>,
}

/// How to speak to an endpoint.
#[derive(Clone, Default)]
pub(crate) struct EndpointTls {
    pub(crate) http: bool,
    pub(crate) skip_verify: bool,
    pub(crate) ca: Vec<PathBuf>,
    /// Client certificates: the certificate's file and the key's (`None`: in the same file).
    pub(crate) client: Vec<(PathBuf, Option<PathBuf>)>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.config.http { "http" } else { "https" };
        let path = if self.path == "/v2" { "" } else { &self.path };
        write!(f, "{scheme}://{}{path}", self.host)
    }
}

impl Endpoint {
    pub(crate) fn new(host: String, upstream: bool, config: EndpointTls) -> Endpoint {
        Endpoint {
            host,
            upstream,
            resolve: true,
            config,
            path: "/v2".into(),
            gateway: Arc::default(),
        }
    }

    /// Whether oci-client needs the gateway to reach this endpoint.
    pub(crate) fn needs_gateway(&self) -> bool {
        !self.config.client.is_empty() || self.path != "/v2"
    }

    /// The scheme of the URLs oci-client (and `auth.rs`) address this endpoint with: plain
    /// HTTP to the gateway, which speaks the endpoint's own scheme.
    pub(crate) fn client_scheme(&self) -> &'static str {
        if self.config.http || self.needs_gateway() {
            "http"
        } else {
            "https"
        }
    }

    /// This endpoint's gateway, started if it is not running.
    fn gateway(&self, timeout: Duration) -> Result<Arc<Gateway>, PullError> {
        let mut slot = self.gateway.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = slot.as_ref() {
            return Ok(g.clone());
        }
        let g = Arc::new(Gateway::start(self, timeout)?);
        *slot = Some(g.clone());
        Ok(g)
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
    override_path: Option<bool>,
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

/// An endpoint's URL as containerd reads it: `https://` when it names no scheme; the path
/// cleaned, and `/v2` appended unless it ends with it or `override_path` is set.
/// Returns (http?, `host:port`, API root path).
fn parse_url(
    url: &str,
    override_path: bool,
    file: &Path,
) -> Result<(bool, String, String), PullError> {
    let bad = |reason: &str| PullError::Config {
        path: file.to_path_buf(),
        reason: format!("{url:?}: {reason}"),
    };
    let (http, rest) = if let Some(r) = url.strip_prefix("https://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (true, r)
    } else if url.contains("://") {
        return Err(bad("an endpoint URL starts with https:// or http://"));
    } else {
        (false, url)
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() || host.contains(['?', '#', '@']) {
        return Err(bad("no host, or not a plain host[:port]"));
    }
    if path.contains(['?', '#']) {
        return Err(bad("an endpoint URL has no query or fragment"));
    }
    let mut segments = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(bad("`..` in the path")),
            s => segments.push(s),
        }
    }
    let mut path: String = segments.iter().map(|s| format!("/{s}")).collect();
    if !override_path && !path.ends_with("/v2") {
        path.push_str("/v2");
    }
    Ok((http, host.to_string(), path))
}

/// `client` as containerd takes it: a file holding the certificate and its key, a list of
/// such files, or a list of `[certificate, key]` pairs (any of them mixed).
fn client_pairs(
    value: &toml::Value,
    base: &Path,
    file: &Path,
) -> Result<Vec<(PathBuf, Option<PathBuf>)>, PullError> {
    let bad = |reason: String| PullError::Config {
        path: file.to_path_buf(),
        reason,
    };
    let one = |v: &toml::Value| match v {
        toml::Value::String(s) => Ok((base.join(s), None)),
        toml::Value::Array(pair) => match pair.as_slice() {
            [toml::Value::String(cert), toml::Value::String(key)] => {
                Ok((base.join(cert), Some(base.join(key))))
            }
            _ => Err(bad(format!(
                "invalid pair {v} for \"client\": [certificate, key] file names"
            ))),
        },
        _ => Err(bad(format!("invalid type {v} for \"client\""))),
    };
    match value {
        toml::Value::String(_) => Ok(vec![one(value)?]),
        toml::Value::Array(list) => list.iter().map(one).collect(),
        _ => Err(bad(format!("invalid type {value} for \"client\""))),
    }
}

/// Whether `caps` (none: all) holds `cap`; an unknown capability is refused, as containerd
/// refuses it.
fn has(caps: &Option<Vec<String>>, cap: &str, file: &Path) -> Result<bool, PullError> {
    let Some(caps) = caps else {
        return Ok(true);
    };
    if let Some(c) = caps
        .iter()
        .find(|c| !["pull", "resolve", "push"].contains(&c.to_lowercase().as_str()))
    {
        return Err(PullError::Config {
            path: file.to_path_buf(),
            reason: format!("unknown capability {c:?}"),
        });
    }
    Ok(caps.iter().any(|x| x.eq_ignore_ascii_case(cap)))
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
    let mut upstream = Endpoint::new(
        upstream_host,
        true,
        EndpointTls {
            http: default_http,
            ..Default::default()
        },
    );
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
    if let Some(server) = &parsed.server {
        let (http, host, path) = parse_url(server, parsed.override_path.unwrap_or(false), &file)?;
        upstream.host = host;
        upstream.config.http = http;
        upstream.path = path;
    }
    upstream.config.skip_verify = parsed.skip_verify.unwrap_or(false);
    upstream.config.ca = parsed
        .ca
        .as_ref()
        .map(|c| c.paths(&base))
        .unwrap_or_default();
    if let Some(client) = &parsed.client {
        upstream.config.client = client_pairs(client, &base, &file)?;
    }
    let pulls = has(&parsed.capabilities, "pull", &file)?;
    upstream.resolve = has(&parsed.capabilities, "resolve", &file)?;

    let mut hosts: Vec<(&String, &toml::Spanned<HostEntry>)> = parsed.host.iter().collect();
    // The file's order, as containerd tries them.
    hosts.sort_by_key(|(_, h)| h.span().start);
    let mut out = Vec::new();
    for (url, entry) in hosts {
        let entry = entry.get_ref();
        if entry.header.is_some() {
            tracing::warn!(file = %file.display(), host = %url, "extra headers are not supported; ignored");
        }
        if !has(&entry.capabilities, "pull", &file)? {
            continue;
        }
        let (http, host, path) = parse_url(url, entry.override_path.unwrap_or(false), &file)?;
        let client = match &entry.client {
            Some(c) => client_pairs(c, &base, &file)?,
            None => Vec::new(),
        };
        let mut ep = Endpoint::new(
            host,
            false,
            EndpointTls {
                http,
                skip_verify: entry.skip_verify.unwrap_or(false),
                ca: entry
                    .ca
                    .as_ref()
                    .map(|c| c.paths(&base))
                    .unwrap_or_default(),
                client,
            },
        );
        ep.resolve = has(&entry.capabilities, "resolve", &file)?;
        ep.path = path;
        out.push(ep);
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

/// Installs rustls's crypto provider for the process, once.
pub(crate) fn install_crypto_provider() {
    static PROVIDER: std::sync::Once = std::sync::Once::new();
    PROVIDER.call_once(|| {
        // ring, not aws-lc-rs: no C library to build with cmake. Its lack of post-quantum
        // key exchange (why rustls deprecates it) does not weaken fetching content whose
        // digests are checked. Another part of the process may have installed a provider
        // already: either is fine.
        #[allow(deprecated)]
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// The oci-client configuration for an endpoint (one client per endpoint: TLS settings are
/// per client). An endpoint that needs the gateway is addressed in plain HTTP through it,
/// as a proxy: the gateway stays up while the endpoint (or a clone) lives.
pub(crate) fn client_config(
    ep: &Endpoint,
    progress_timeout: Duration,
) -> Result<ClientConfig, PullError> {
    install_crypto_provider();
    let http_proxy = if ep.needs_gateway() {
        Some(ep.gateway(progress_timeout)?.proxy_url())
    } else {
        None
    };
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
        protocol: if ep.client_scheme() == "http" {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        accept_invalid_certificates: ep.config.skip_verify,
        extra_root_certificates: roots,
        connect_timeout: Some(Duration::from_secs(30)),
        read_timeout: (!progress_timeout.is_zero()).then_some(progress_timeout),
        user_agent: concat!("rrun-cri/", env!("CARGO_PKG_VERSION")),
        http_proxy,
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

    #[test]
    fn api_paths_as_containerd_reads_them() {
        let f = Path::new("hosts.toml");
        let p = |url: &str, o: bool| parse_url(url, o, f).unwrap();
        assert_eq!(p("https://h:1", false), (false, "h:1".into(), "/v2".into()));
        assert_eq!(p("h:1", false), (false, "h:1".into(), "/v2".into()));
        assert_eq!(p("http://h/v2/", false), (true, "h".into(), "/v2".into()));
        assert_eq!(
            p("http://h/x//v2", false),
            (true, "h".into(), "/x/v2".into())
        );
        assert_eq!(p("http://h/x", false).2, "/x/v2");
        assert_eq!(p("http://h/x/v2", true).2, "/x/v2");
        assert_eq!(p("http://h/api/docker/x", true).2, "/api/docker/x");
        assert_eq!(p("http://h", true).2, "");
        assert!(parse_url("ftp://h", false, f).is_err());
        assert!(parse_url("http://h/../v2", false, f).is_err());
    }

    #[test]
    fn client_certificates_and_override_path() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("r.example");
        std::fs::create_dir_all(&d).unwrap();
        let write = |text: &str| std::fs::write(d.join("hosts.toml"), text).unwrap();
        write(
            r#"
server = "https://r.example/api/docker/local"
override_path = true
client = "both.pem"
[host."https://m1"]
  client = [["c.crt", "/abs/c.key"], "both2.pem"]
[host."https://m2/mirror"]
"#,
        );
        let eps = endpoints(Some(dir.path()), "r.example").unwrap();
        let got: Vec<String> = eps.iter().map(|e| format!("{e:?}")).collect();
        assert_eq!(
            got,
            [
                "https://m1",
                "https://m2/mirror/v2",
                "https://r.example/api/docker/local"
            ]
        );
        assert_eq!(
            eps[0].config.client,
            vec![
                (d.join("c.crt"), Some(PathBuf::from("/abs/c.key"))),
                (d.join("both2.pem"), None)
            ]
        );
        assert_eq!(eps[2].config.client, vec![(d.join("both.pem"), None)]);
        assert!(eps
            .iter()
            .all(|e| e.needs_gateway() && e.client_scheme() == "http"));
        for bad in [
            "client = 3",
            "client = [[\"only-one\"]]",
            "client = [[\"a\", \"b\", \"c\"]]",
            "capabilities = [\"fetch\"]",
        ] {
            write(bad);
            let e = endpoints(Some(dir.path()), "r.example").err();
            assert!(matches!(e, Some(PullError::Config { .. })), "{bad}");
        }
        write("server = \"https://r.example\"\nskip_verify = true\n");
        let eps = endpoints(Some(dir.path()), "r.example").unwrap();
        assert!(!eps[0].needs_gateway() && eps[0].client_scheme() == "https");
    }
}
