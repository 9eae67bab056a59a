//! Pod networking through CNI, as containerd's CRI plugin does it.
//!
//! - [`conf`]: the network configuration, the first of the conf dir (`cni.conf_dir`).
//! - [`exec`]: running the plugins (ADD chained through `prevResult`, DEL in reverse,
//!   VERSION), with a timeout.
//! - [`types`]: the specification's JSON.
//! - [`watch`]: the conf dir watched, so a config written later makes the node ready.
//!
//! ADD runs in the pod's pinned network namespace when the sandbox is made. Before it, the
//! config, the arguments and the namespace are cached on disk under the server's root (as
//! libcni's cache in `/var/lib/cni/results`), and its result after it, so that the DEL of
//! StopPodSandbox, RemovePodSandbox or recovery after a crash sends the very config and
//! `prevResult` the ADD had, even when the conf dir changed in between. The cache entry
//! goes only when a DEL succeeded: while it exists, the pod may still hold an address, a
//! veth or a port mapping.
//!
//! With no config at all, pods keep a network namespace with only `lo` (the server's
//! behaviour before CNI) and `Status` says NetworkReady=false, which keeps the kubelet
//! from asking for such pods; containerd would refuse them instead.

pub mod conf;
pub mod exec;
pub mod types;
mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cri_proto::api;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use types::{Bandwidth, CniResult, ConfList, PortMapping};

/// The interface name the pod's network gets (containerd's and the kubelet's).
pub const IFNAME: &str = "eth0";

/// The reason `Status` gives with NetworkReady=false (the kubelet's and containerd's).
pub const NOT_READY_REASON: &str = "NetworkPluginNotReady";

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("the network is not ready: {0}")]
    NotReady(String),
    #[error(transparent)]
    Plugin(#[from] exec::ExecError),
    #[error("the network's cache: {0}")]
    Cache(#[from] crate::records::StoreError),
    #[error("the network's cache {path}: {why}")]
    BadCache { path: PathBuf, why: String },
    #[error("{0}")]
    BadArgument(String),
    #[error("writing the pod's resolv.conf: {0}")]
    Resolv(std::io::Error),
}

/// Where the configuration and the plugins are (`[cni]` in the TOML config).
#[derive(Debug, Clone)]
pub struct CniSettings {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
    /// How long one plugin call may take before it is killed.
    pub plugin_timeout: Duration,
}

pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
pub const DEFAULT_BIN_DIRS: &[&str] = &["/opt/cni/bin", "/usr/lib/cni"];
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

impl Default for CniSettings {
    fn default() -> Self {
        CniSettings {
            conf_dir: PathBuf::from(DEFAULT_CONF_DIR),
            bin_dirs: DEFAULT_BIN_DIRS.iter().map(PathBuf::from).collect(),
            plugin_timeout: DEFAULT_PLUGIN_TIMEOUT,
        }
    }
}

/// What the conf dir holds right now.
#[derive(Debug, Clone)]
enum Readiness {
    /// No config: pods get `lo` only.
    NoConfig(String),
    /// A config that cannot be used (its message says why).
    Invalid(String),
    Ready {
        list: Arc<ConfList>,
        version: String,
    },
}

fn load(settings: &CniSettings) -> Readiness {
    match conf::load_dir(&settings.conf_dir) {
        Ok(None) => Readiness::NoConfig(format!(
            "cni config load failed: no network config found in {}: cni plugin not initialized",
            settings.conf_dir.display()
        )),
        Err(e) => Readiness::Invalid(format!("cni config load failed: {e}")),
        Ok(Some(list)) => {
            match exec::negotiate(&list, &settings.bin_dirs, settings.plugin_timeout) {
                Ok(version) => Readiness::Ready {
                    list: Arc::new(list),
                    version,
                },
                Err(e) => Readiness::Invalid(format!("cni config unusable: {e}")),
            }
        }
    }
}

/// One pod's ADD as cached on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CacheEntry {
    pod_id: String,
    netns: PathBuf,
    ifname: String,
    cni_args: String,
    capability_args: Map<String, Value>,
    /// The list as it was used (name, cniVersion, plugins).
    config: Value,
    source: PathBuf,
    version: String,
    /// The ADD's result; `None` while (or when) the ADD did not finish.
    result: Option<Value>,
}

/// The pod network manager: shared by every request.
pub struct Network {
    settings: CniSettings,
    cache_dir: PathBuf,
    current: Arc<RwLock<Readiness>>,
    /// The addresses of pods whose ADD succeeded and whose DEL did not.
    ips: Mutex<HashMap<String, Vec<String>>>,
    watcher: Option<watch::Watcher>,
}

impl Network {
    /// Loads the config, starts watching the conf dir (made if missing, as containerd
    /// does) and reads the cache of pods set up by an earlier server.
    pub fn open(settings: CniSettings, cache_dir: PathBuf) -> Network {
        if let Err(e) = std::fs::create_dir_all(&settings.conf_dir) {
            tracing::warn!(
                "cannot create the CNI conf dir {}: {e}",
                settings.conf_dir.display()
            );
        }
        let current = Arc::new(RwLock::new(load(&settings)));
        let watcher = {
            let current = current.clone();
            let s = settings.clone();
            match watch::Watcher::start(&settings.conf_dir, move || {
                let next = load(&s);
                log_readiness(&next);
                *current.write().unwrap_or_else(|p| p.into_inner()) = next;
            }) {
                Ok(w) => Some(w),
                Err(e) => {
                    tracing::warn!(
                        "not watching {} ({e}): the config is reloaded on every Status",
                        settings.conf_dir.display()
                    );
                    None
                }
            }
        };
        let net = Network {
            settings,
            cache_dir,
            current,
            ips: Mutex::new(HashMap::new()),
            watcher,
        };
        log_readiness(&net.readiness());
        for entry in net.cached() {
            if let Some(r) = entry.result.as_ref().and_then(parse_result) {
                net.ips_map().insert(entry.pod_id.clone(), r.pod_ips());
            }
        }
        net
    }

    fn readiness(&self) -> Readiness {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn ips_map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<String>>> {
        self.ips.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// NetworkReady: `Ok` or the message of why not.
    pub fn status(&self) -> Result<(), String> {
        if self.watcher.is_none() {
            let next = load(&self.settings);
            *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        }
        match self.readiness() {
            Readiness::Ready { .. } => Ok(()),
            Readiness::NoConfig(m) | Readiness::Invalid(m) => Err(m),
        }
    }

    /// For `Status` verbose: the config in use.
    pub fn describe(&self) -> Value {
        let s = &self.settings;
        let (state, config) = match self.readiness() {
            Readiness::Ready { list, version } => (
                format!("ready ({} at {version})", list.source.display()),
                Some(list.name.clone()),
            ),
            Readiness::NoConfig(m) | Readiness::Invalid(m) => (m, None),
        };
        serde_json::json!({
            "confDir": s.conf_dir,
            "binDirs": s.bin_dirs,
            "network": config,
            "state": state,
        })
    }

    fn cache_path(&self, pod_id: &str) -> PathBuf {
        self.cache_dir.join(format!("{pod_id}.json"))
    }

    fn cached(&self) -> Vec<CacheEntry> {
        let Ok(dir) = std::fs::read_dir(&self.cache_dir) else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .filter_map(|p| match crate::records::read_json::<CacheEntry>(&p) {
                Ok(e) => Some(e),
                Err(e) => {
                    tracing::warn!("ignoring the CNI cache entry {}: {e}", p.display());
                    None
                }
            })
            .collect()
    }

    /// ADD for a pod whose network namespace is pinned at `netns`; its DNS goes into
    /// `pod_dir/resolv.conf` when the request gives none. `Ok(None)`: no CNI config, the
    /// pod has `lo` only. A failed ADD is undone (DEL) before the error returns.
    pub fn setup(
        &self,
        pod_id: &str,
        netns: &Path,
        config: &api::PodSandboxConfig,
        pod_dir: &Path,
    ) -> Result<Option<Vec<String>>, NetworkError> {
        let (list, version) = match self.readiness() {
            Readiness::Ready { list, version } => (list, version),
            Readiness::NoConfig(_) => {
                tracing::info!("pod {pod_id}: no CNI config: loopback only");
                return Ok(None);
            }
            Readiness::Invalid(m) => return Err(NetworkError::NotReady(m)),
        };
        let mut entry = CacheEntry {
            pod_id: pod_id.to_string(),
            netns: netns.to_path_buf(),
            ifname: IFNAME.to_string(),
            cni_args: cni_args(pod_id, config)?,
            capability_args: capability_args(config),
            config: list_json(&list),
            source: list.source.clone(),
            version,
            result: None,
        };
        std::fs::create_dir_all(&self.cache_dir).map_err(|e| NetworkError::BadCache {
            path: self.cache_dir.clone(),
            why: e.to_string(),
        })?;
        let path = self.cache_path(pod_id);
        crate::records::write_json_atomic(&path, &entry)?;
        let netns_s = netns.display().to_string();
        let call = exec::Call {
            container_id: pod_id,
            netns: &netns_s,
            ifname: IFNAME,
            args: &entry.cni_args,
            bin_dirs: &self.settings.bin_dirs,
            timeout: self.settings.plugin_timeout,
        };
        let result = match exec::add_list(&list, &entry.version, &call, &entry.capability_args) {
            Ok(r) => r,
            Err((e, partial)) => {
                tracing::warn!("pod {pod_id}: CNI ADD failed: {e}; undoing it");
                entry.result = partial;
                if let Err(d) = self.del(&entry) {
                    tracing::warn!("pod {pod_id}: the DEL after a failed ADD failed too: {d}");
                    let _ = crate::records::write_json_atomic(&path, &entry);
                }
                return Err(e.into());
            }
        };
        entry.result = Some(result.clone());
        let parsed = parse_result(&result).unwrap_or_default();
        let saved = crate::records::write_json_atomic(&path, &entry)
            .map_err(NetworkError::from)
            .and_then(|()| write_dns(pod_dir, config, &parsed.dns).map_err(NetworkError::Resolv));
        if let Err(e) = saved {
            let _ = self.del(&entry);
            return Err(e);
        }
        let ips = parsed.pod_ips();
        tracing::info!("pod {pod_id}: network {} gave {ips:?}", list.name);
        self.ips_map().insert(pod_id.to_string(), ips.clone());
        Ok(Some(ips))
    }

    /// Runs the DEL of a cache entry and removes the entry once it succeeded.
    fn del(&self, entry: &CacheEntry) -> Result<(), NetworkError> {
        let path = self.cache_path(&entry.pod_id);
        let list = conf::parse_list(entry.config.to_string().as_bytes(), &entry.source).map_err(
            |why| NetworkError::BadCache {
                path: path.clone(),
                why,
            },
        )?;
        if let Some(list) = list {
            // A namespace that is gone (stopped pod, reboot) is passed as empty: plugins
            // then release what lives outside it (addresses, rules, the host's veth end).
            let netns = if crate::sandbox::is_pinned(&entry.netns) {
                entry.netns.display().to_string()
            } else {
                String::new()
            };
            let call = exec::Call {
                container_id: &entry.pod_id,
                netns: &netns,
                ifname: &entry.ifname,
                args: &entry.cni_args,
                bin_dirs: &self.settings.bin_dirs,
                timeout: self.settings.plugin_timeout,
            };
            exec::del_list(
                &list,
                &entry.version,
                &call,
                &entry.capability_args,
                entry.result.as_ref(),
            )?;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(NetworkError::BadCache {
                    path,
                    why: e.to_string(),
                })
            }
        }
        self.ips_map().remove(&entry.pod_id);
        Ok(())
    }

    /// DEL for a pod, if its ADD ran and no DEL succeeded since; else nothing.
    pub fn teardown(&self, pod_id: &str) -> Result<(), NetworkError> {
        let path = self.cache_path(pod_id);
        let entry: CacheEntry = match crate::records::read_json(&path) {
            Ok(e) => e,
            Err(crate::records::StoreError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                self.ips_map().remove(pod_id);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        self.del(&entry)
    }

    /// The pod's addresses (primary first), empty when it has none.
    pub fn pod_ips(&self, pod_id: &str) -> Vec<String> {
        self.ips_map().get(pod_id).cloned().unwrap_or_default()
    }

    /// DEL for every cached pod that `known` does not know (a create that died half-way).
    pub fn collect_garbage(&self, known: impl Fn(&str) -> bool) {
        for entry in self.cached() {
            if known(&entry.pod_id) {
                continue;
            }
            tracing::warn!(
                "pod {}: releasing the network of a pod with no record",
                entry.pod_id
            );
            if let Err(e) = self.del(&entry) {
                tracing::warn!("pod {}: {e}", entry.pod_id);
            }
        }
    }
}

fn log_readiness(r: &Readiness) {
    match r {
        Readiness::Ready { list, version } => tracing::info!(
            "CNI network {:?} from {} (CNI {version}): network ready",
            list.name,
            list.source.display()
        ),
        Readiness::NoConfig(m) | Readiness::Invalid(m) => tracing::info!("network not ready: {m}"),
    }
}

fn parse_result(v: &Value) -> Option<CniResult> {
    serde_json::from_value(v.clone()).ok()
}

fn list_json(list: &ConfList) -> Value {
    serde_json::json!({
        "name": list.name,
        "cniVersion": list.cni_version,
        "cniVersions": list.cni_versions,
        "disableCheck": list.disable_check,
        "plugins": list.plugins,
    })
}

/// `CNI_ARGS` as containerd sends them for a pod. A value with `;` or `=` would smuggle
/// in arguments of its own (host-local takes `IP=`): refused.
fn cni_args(pod_id: &str, config: &api::PodSandboxConfig) -> Result<String, NetworkError> {
    let meta = config.metadata.clone().unwrap_or_default();
    for (field, v) in [
        ("name", &meta.name),
        ("namespace", &meta.namespace),
        ("uid", &meta.uid),
    ] {
        if v.contains([';', '=']) {
            return Err(NetworkError::BadArgument(format!(
                "PodSandboxConfig.metadata.{field} {v:?} has ';' or '=', which CNI_ARGS cannot carry"
            )));
        }
    }
    Ok(format!(
        "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={pod_id};K8S_POD_UID={}",
        meta.namespace, meta.name, meta.uid
    ))
}

/// The capability arguments of a pod: `portMappings` (those with a host port), `dns`,
/// `bandwidth` (the kubelet's bandwidth annotations). CRI carries no field for `ips`, so
/// none is sent (containerd sends none either).
fn capability_args(config: &api::PodSandboxConfig) -> Map<String, Value> {
    let mut caps = Map::new();
    let ports: Vec<PortMapping> = config
        .port_mappings
        .iter()
        .filter(|p| p.host_port > 0)
        .map(|p| PortMapping {
            host_port: p.host_port,
            container_port: p.container_port,
            protocol: match api::Protocol::try_from(p.protocol) {
                Ok(api::Protocol::Udp) => "udp",
                Ok(api::Protocol::Sctp) => "sctp",
                _ => "tcp",
            }
            .to_string(),
            host_ip: p.host_ip.clone(),
        })
        .collect();
    if !ports.is_empty() {
        caps.insert("portMappings".into(), serde_json::json!(ports));
    }
    if let Some(dns) = &config.dns_config {
        caps.insert(
            "dns".into(),
            serde_json::json!({
                "servers": dns.servers,
                "searches": dns.searches,
                "options": dns.options,
            }),
        );
    }
    let rate = |key: &str| config.annotations.get(key).and_then(|q| parse_quantity(q));
    let bw = Bandwidth {
        ingress_rate: rate("kubernetes.io/ingress-bandwidth").unwrap_or(0),
        egress_rate: rate("kubernetes.io/egress-bandwidth").unwrap_or(0),
        ..Default::default()
    };
    if bw.ingress_rate > 0 || bw.egress_rate > 0 {
        // containerd's burst: as large as the plugin takes, so only the rate limits.
        let bw = Bandwidth {
            ingress_burst: if bw.ingress_rate > 0 {
                u32::MAX as u64
            } else {
                0
            },
            egress_burst: if bw.egress_rate > 0 {
                u32::MAX as u64
            } else {
                0
            },
            ..bw
        };
        caps.insert("bandwidth".into(), serde_json::json!(bw));
    }
    caps
}

/// A Kubernetes quantity as the bandwidth annotations use it (`10M`, `1Gi`, `500k`).
fn parse_quantity(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mul: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    n.checked_mul(mul)
}

/// The pod's resolv.conf from the CNI result's DNS, when the request gave no DNS config
/// and the result has name servers (otherwise the sandbox's file stays).
fn write_dns(
    pod_dir: &Path,
    config: &api::PodSandboxConfig,
    dns: &types::Dns,
) -> std::io::Result<()> {
    if config.dns_config.is_some() || dns.nameservers.is_empty() {
        return Ok(());
    }
    let mut searches = dns.search.clone();
    if searches.is_empty() && !dns.domain.is_empty() {
        searches.push(dns.domain.clone());
    }
    let text = crate::sandbox::resolv_conf(&api::DnsConfig {
        servers: dns.nameservers.clone(),
        searches,
        options: dns.options.clone(),
    });
    crate::records::write_file_atomic(&pod_dir.join("resolv.conf"), text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capability_args_carry_host_ports_dns_and_bandwidth() {
        let config = api::PodSandboxConfig {
            port_mappings: vec![
                api::PortMapping {
                    protocol: api::Protocol::Udp as i32,
                    container_port: 53,
                    host_port: 5353,
                    host_ip: "127.0.0.1".into(),
                },
                // No host port: not a host port mapping (containerd skips it too).
                api::PortMapping {
                    protocol: api::Protocol::Tcp as i32,
                    container_port: 80,
                    host_port: 0,
                    host_ip: String::new(),
                },
            ],
            dns_config: Some(api::DnsConfig {
                servers: vec!["10.0.0.10".into()],
                searches: vec!["svc.local".into()],
                options: vec!["ndots:5".into()],
            }),
            annotations: [(
                "kubernetes.io/ingress-bandwidth".to_string(),
                "10M".to_string(),
            )]
            .into(),
            ..Default::default()
        };
        let caps = capability_args(&config);
        assert_eq!(
            caps["portMappings"],
            serde_json::json!([{"hostPort": 5353, "containerPort": 53, "protocol": "udp",
                                "hostIP": "127.0.0.1"}])
        );
        assert_eq!(
            caps["dns"],
            serde_json::json!({"servers": ["10.0.0.10"], "searches": ["svc.local"],
                               "options": ["ndots:5"]})
        );
        assert_eq!(
            caps["bandwidth"],
            serde_json::json!({"ingressRate": 10_000_000u64, "ingressBurst": u32::MAX})
        );
        assert!(capability_args(&api::PodSandboxConfig::default()).is_empty());
    }

    #[test]
    fn quantities_parse_with_si_and_binary_suffixes() {
        assert_eq!(parse_quantity("500"), Some(500));
        assert_eq!(parse_quantity("10M"), Some(10_000_000));
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("1.5M"), None);
        assert_eq!(parse_quantity("x"), None);
    }

    #[test]
    fn cni_args_are_containerds() {
        let config = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: "web".into(),
                uid: "u1".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        assert_eq!(
            cni_args("abc", &config).expect("args"),
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web;\
             K8S_POD_INFRA_CONTAINER_ID=abc;K8S_POD_UID=u1"
        );
        let mut sneaky = config.clone();
        if let Some(m) = sneaky.metadata.as_mut() {
            m.name = "web;IP=10.0.0.5".into();
        }
        let e = cni_args("abc", &sneaky).expect_err("refused").to_string();
        assert!(e.contains("metadata.name"), "{e}");
    }
}
