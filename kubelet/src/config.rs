//! The agent's settings: the stock kubelet's flags, and a `KubeletConfiguration`
//! (kubelet.config.k8s.io/v1beta1) file of which the fields below are honoured. As with the
//! kubelet, a flag given on the command line wins over the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::quantity;
use crate::resources::Allocatable;

/// The fields of KubeletConfiguration this agent honours.
pub const HONOURED: &[&str] = &[
    "staticPodPath",
    "containerRuntimeEndpoint",
    "readOnlyPort",
    "healthzPort",
    "healthzBindAddress",
    "cgroupRoot",
    "kubeReserved",
    "systemReserved",
    "evictionHard",
    "evictionPressureTransitionPeriod",
    "maxPods",
    "podLogsDir",
    "clusterDNS",
    "clusterDomain",
    "resolvConf",
];

/// Everything the agent runs with, after flags and file are merged.
#[derive(Debug, Clone)]
pub struct Config {
    pub manifest_dir: PathBuf,
    pub endpoint: PathBuf,
    pub root_dir: PathBuf,
    pub node_name: String,
    pub read_only_port: u16,
    pub healthz_port: u16,
    pub healthz_bind: String,
    pub cgroup_root: String,
    pub pod_logs_dir: PathBuf,
    pub max_pods: i64,
    pub reserved_milli_cpu: i64,
    pub reserved_memory: i64,
    pub eviction_memory: i64,
    pub eviction_pressure_transition: Duration,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub dns: crate::dns::Settings,
}

impl Config {
    pub fn allocatable(&self) -> Allocatable {
        let (cpu, mem) = crate::resources::capacity();
        Allocatable {
            milli_cpu: (cpu - self.reserved_milli_cpu).max(0),
            memory: (mem - self.reserved_memory - self.eviction_memory).max(0),
            pods: self.max_pods,
        }
    }
}

/// The endpoint flag's value, `unix:///path` or a bare path, as the socket path.
pub fn parse_endpoint(s: &str) -> Result<PathBuf> {
    if let Some(p) = s.strip_prefix("unix://") {
        if p.is_empty() || !p.starts_with('/') {
            bail!("container runtime endpoint {s:?}: expected unix:///absolute/path");
        }
        return Ok(PathBuf::from(p));
    }
    if s.contains("://") {
        bail!("container runtime endpoint {s:?}: only unix:// endpoints are supported");
    }
    if !s.starts_with('/') {
        bail!("container runtime endpoint {s:?}: expected unix:///absolute/path");
    }
    Ok(PathBuf::from(s))
}

/// The fields read from a KubeletConfiguration file (all optional).
#[derive(Debug, Default)]
pub struct FileConfig {
    pub static_pod_path: Option<PathBuf>,
    pub endpoint: Option<PathBuf>,
    pub read_only_port: Option<u16>,
    pub healthz_port: Option<u16>,
    pub healthz_bind: Option<String>,
    pub cgroup_root: Option<String>,
    pub pod_logs_dir: Option<PathBuf>,
    pub max_pods: Option<i64>,
    pub reserved_milli_cpu: i64,
    pub reserved_memory: i64,
    pub eviction_memory: Option<i64>,
    pub eviction_pressure_transition: Option<Duration>,
    pub cluster_dns: Option<Vec<std::net::IpAddr>>,
    pub cluster_domain: Option<String>,
    pub resolv_conf: Option<String>,
    /// Unknown fields, for a warning each.
    pub unknown: Vec<String>,
}

fn port(v: &Value, field: &str) -> Result<u16> {
    v.as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .with_context(|| format!("{field}: {v} is not a port number (0-65535)"))
}

fn string(v: &Value, field: &str) -> Result<String> {
    v.as_str()
        .map(str::to_string)
        .with_context(|| format!("{field}: {v} is not a string"))
}

fn reserved(v: &Value, field: &str) -> Result<(i64, i64)> {
    let map: BTreeMap<String, Value> = serde_json::from_value(v.clone())
        .with_context(|| format!("{field}: expected a map of resource name to quantity"))?;
    let (mut cpu, mut mem) = (0, 0);
    for (k, q) in map {
        let q = string(&q, &format!("{field}.{k}"))?;
        match k.as_str() {
            "cpu" => cpu = quantity::milli_cpu(&q).with_context(|| format!("{field}.cpu"))?,
            "memory" => mem = quantity::bytes(&q).with_context(|| format!("{field}.memory"))?,
            "ephemeral-storage" | "pid" => {}
            other => {
                bail!("{field}: unknown resource {other:?} (cpu, memory, ephemeral-storage, pid)")
            }
        }
    }
    Ok((cpu, mem))
}

/// Reads and checks a KubeletConfiguration file.
pub fn read_file(path: &Path) -> Result<FileConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc: Value = serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{}: not a YAML document", path.display()))?;
    parse_file(&doc).with_context(|| format!("{}", path.display()))
}

pub fn parse_file(doc: &Value) -> Result<FileConfig> {
    let Some(map) = doc.as_object() else {
        bail!("expected a KubeletConfiguration object");
    };
    match map.get("kind").and_then(Value::as_str) {
        Some("KubeletConfiguration") => {}
        other => bail!("kind: expected KubeletConfiguration, found {other:?}"),
    }
    match map.get("apiVersion").and_then(Value::as_str) {
        Some("kubelet.config.k8s.io/v1beta1") => {}
        other => bail!("apiVersion: expected kubelet.config.k8s.io/v1beta1, found {other:?}"),
    }
    let mut fc = FileConfig::default();
    for (k, v) in map {
        match k.as_str() {
            "kind" | "apiVersion" => {}
            "staticPodPath" => fc.static_pod_path = Some(string(v, k)?.into()),
            "containerRuntimeEndpoint" => fc.endpoint = Some(parse_endpoint(&string(v, k)?)?),
            "readOnlyPort" => fc.read_only_port = Some(port(v, k)?),
            "healthzPort" => fc.healthz_port = Some(port(v, k)?),
            "healthzBindAddress" => fc.healthz_bind = Some(string(v, k)?),
            "cgroupRoot" => fc.cgroup_root = Some(string(v, k)?),
            "podLogsDir" => fc.pod_logs_dir = Some(string(v, k)?.into()),
            "clusterDNS" => {
                let list: Vec<String> = serde_json::from_value(v.clone())
                    .with_context(|| format!("clusterDNS: {v} is not a list of IP addresses"))?;
                let ips = list
                    .iter()
                    .map(|s| {
                        s.parse()
                            .with_context(|| format!("clusterDNS: {s:?} is not an IP address"))
                    })
                    .collect::<Result<_>>()?;
                fc.cluster_dns = Some(ips);
            }
            "clusterDomain" => fc.cluster_domain = Some(string(v, k)?),
            "resolvConf" => fc.resolv_conf = Some(string(v, k)?),
            "maxPods" => {
                let n = v
                    .as_i64()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("maxPods: {v} is not a positive integer"))?;
                fc.max_pods = Some(n);
            }
            "kubeReserved" | "systemReserved" => {
                let (c, m) = reserved(v, k)?;
                fc.reserved_milli_cpu += c;
                fc.reserved_memory += m;
            }
            "evictionHard" => {
                let map: BTreeMap<String, String> = serde_json::from_value(v.clone())
                    .context("evictionHard: expected a map of signal to threshold")?;
                for (sig, th) in map {
                    if sig == "memory.available" {
                        if th.ends_with('%') {
                            let pct: f64 = th
                                .trim_end_matches('%')
                                .parse()
                                .with_context(|| format!("evictionHard.{sig}: {th:?}"))?;
                            let (_, mem) = crate::resources::capacity();
                            fc.eviction_memory = Some((mem as f64 * pct / 100.0) as i64);
                        } else {
                            fc.eviction_memory = Some(
                                quantity::bytes(&th)
                                    .with_context(|| format!("evictionHard.{sig}"))?,
                            );
                        }
                    }
                }
            }
            "evictionPressureTransitionPeriod" => {
                fc.eviction_pressure_transition = Some(
                    go_duration(&string(v, k)?)
                        .with_context(|| format!("evictionPressureTransitionPeriod: {v}"))?,
                );
            }
            other => fc.unknown.push(other.to_string()),
        }
    }
    Ok(fc)
}

/// A Go duration as KubeletConfiguration holds them: `5m0s`, `1h30m`, `30s`, `500ms`, `0s`.
fn go_duration(s: &str) -> Result<Duration> {
    let mut total = 0.0;
    let mut rest = s;
    if rest.is_empty() {
        bail!("an empty duration");
    }
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let u_end = rest[n_end..]
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .map_or(rest.len(), |i| n_end + i);
        let n: f64 = rest[..n_end]
            .parse()
            .with_context(|| format!("{s:?} is not a duration (e.g. 5m0s)"))?;
        let unit = match &rest[n_end..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" if n == 0.0 => 0.0,
            u => bail!("{s:?}: unknown unit {u:?} (e.g. 5m0s)"),
        };
        total += n * unit;
        rest = &rest[u_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(go_duration("5m0s").unwrap(), Duration::from_secs(300));
        assert_eq!(go_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(go_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(go_duration("0").unwrap(), Duration::ZERO);
        assert!(go_duration("5x").is_err());
        assert!(go_duration("").is_err());
    }

    #[test]
    fn file_fields_unknown_and_invalid() {
        let doc: Value = serde_yaml_ng::from_str(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             staticPodPath: /etc/kubernetes/manifests\nmaxPods: 3\nreadOnlyPort: 10255\n\
             kubeReserved: {cpu: 100m, memory: 100Mi}\nevictionHard: {memory.available: 100Mi}\n\
             featureGates: {A: true}\n",
        )
        .unwrap();
        let fc = parse_file(&doc).unwrap();
        assert_eq!(fc.max_pods, Some(3));
        assert_eq!(fc.reserved_milli_cpu, 100);
        assert_eq!(fc.eviction_memory, Some(100 << 20));
        assert_eq!(fc.unknown, vec!["featureGates".to_string()]);
        let bad: Value = serde_yaml_ng::from_str(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nreadOnlyPort: 70000\n",
        )
        .unwrap();
        let e = format!("{:#}", parse_file(&bad).unwrap_err());
        assert!(e.contains("readOnlyPort"), "{e}");
        assert!(parse_endpoint("tcp://x").is_err());
        assert_eq!(
            parse_endpoint("unix:///run/x.sock").unwrap(),
            PathBuf::from("/run/x.sock")
        );
    }
}
