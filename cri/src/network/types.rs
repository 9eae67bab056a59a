//! The CNI specification's data: the network configuration list, the plugins' result and
//! error, and the capability arguments of `runtimeConfig` (spec 1.0.0 and 1.1.0, with the
//! 0.3.x/0.4.0 result shape that older plugins still answer in).
//!
//! Plugin configurations are kept as raw JSON objects: the runtime must pass every key it
//! does not know through unchanged, so only the keys the runtime itself reads are typed.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The versions this runtime speaks, lowest first. 0.3.x and 0.4.0 are still answered by
/// Debian's plugins when a config asks for them; results of all of these parse into
/// [`CniResult`].
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Compares dotted versions numerically (`"0.10.0" > "0.4.0"`); unparsable parts count 0.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let parts = |v: &str| -> Vec<u64> { v.split('.').map(|p| p.parse().unwrap_or(0)).collect() };
    parts(a).cmp(&parts(b))
}

/// A network configuration list (`.conflist`), or a single `.conf` turned into a list of
/// one, as libcni's `ConfListFromConf` does.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    pub name: String,
    /// The list's `cniVersion`.
    pub cni_version: String,
    /// `cniVersions` (spec 1.1.0): the versions the list may be used at; the runtime picks
    /// the highest that it and every plugin support.
    pub cni_versions: Vec<String>,
    pub disable_check: bool,
    /// Each plugin's configuration as written (`type` is required).
    pub plugins: Vec<Map<String, Value>>,
    /// The file it came from (for messages).
    pub source: std::path::PathBuf,
}

impl ConfList {
    /// The `type` of plugin `i` (checked on load to be a non-empty string).
    pub fn plugin_type(&self, i: usize) -> &str {
        self.plugins[i]
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The capabilities plugin `i` declares (`"capabilities": {"portMappings": true}`).
    pub fn capabilities(&self, i: usize) -> Vec<String> {
        self.plugins[i]
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|caps| {
                caps.iter()
                    .filter(|(_, on)| on.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A `portMappings` capability entry (the portmap plugin's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: i32,
    pub container_port: i32,
    pub protocol: String,
    #[serde(rename = "hostIP", default, skip_serializing_if = "String::is_empty")]
    pub host_ip: String,
}

/// The `dns` capability and a result's `dns`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// The `bandwidth` capability (bits per second and bits), the bandwidth plugin's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ingress_rate: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ingress_burst: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub egress_rate: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub egress_burst: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A plugin's success result. 0.3.x/0.4.0 carry a `version` per IP that 1.0.0 dropped;
/// unknown keys are ignored here (the raw result is what is cached and chained).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion", default)]
    pub cni_version: String,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub dns: Dns,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub mac: String,
    /// The netns path for an interface inside the container, empty on the host side.
    #[serde(default)]
    pub sandbox: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// CIDR notation (`10.1.0.5/24`).
    pub address: String,
    #[serde(default)]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default)]
    pub interface: Option<usize>,
}

impl CniResult {
    /// The pod's addresses, as containerd reports them: those on interfaces inside the
    /// sandbox (all of them when the result names no interface), the first IPv4 first.
    pub fn pod_ips(&self) -> Vec<String> {
        let in_sandbox = |ip: &IpConfig| match ip.interface {
            Some(i) => self
                .interfaces
                .get(i)
                .is_none_or(|iface| !iface.sandbox.is_empty()),
            None => true,
        };
        let mut ips: Vec<String> = self
            .ips
            .iter()
            .filter(|ip| in_sandbox(ip))
            .map(|ip| ip.address.split('/').next().unwrap_or_default().to_string())
            .filter(|a| !a.is_empty())
            .collect();
        if let Some(v4) = ips.iter().position(|a| !a.contains(':')) {
            let first = ips.remove(v4);
            ips.insert(0, first);
        }
        ips
    }
}

/// A plugin's error (stdout, non-zero exit).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CniErrorReply {
    #[serde(default)]
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

/// A plugin's answer to VERSION.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct VersionReply {
    #[serde(rename = "supportedVersions", default)]
    pub supported_versions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(version_cmp("1.0.0", "0.4.0"), Greater);
        assert_eq!(version_cmp("0.10.0", "0.4.0"), Greater);
        assert_eq!(version_cmp("1.1.0", "1.1.0"), Equal);
        assert_eq!(version_cmp("0.3.1", "1.0.0"), Less);
    }

    #[test]
    fn results_of_0_4_0_and_1_0_0_give_the_sandbox_ips_v4_first() {
        let v040 = r#"{"cniVersion":"0.4.0","interfaces":[{"name":"cni0","mac":"aa"},
            {"name":"eth0","mac":"bb","sandbox":"/run/netns/x"}],
            "ips":[{"version":"6","address":"fd00::5/64","interface":1},
                   {"version":"4","address":"10.1.0.5/24","gateway":"10.1.0.1","interface":1},
                   {"version":"4","address":"10.1.0.1/24","interface":0}],
            "dns":{"nameservers":["10.1.0.1"]}}"#;
        let r: CniResult = serde_json::from_str(v040).expect("0.4.0 result");
        assert_eq!(r.pod_ips(), vec!["10.1.0.5", "fd00::5"]);
        assert_eq!(r.dns.nameservers, vec!["10.1.0.1"]);
        let v100 = r#"{"cniVersion":"1.0.0","ips":[{"address":"10.2.0.9/16"}]}"#;
        let r: CniResult = serde_json::from_str(v100).expect("1.0.0 result");
        assert_eq!(r.pod_ips(), vec!["10.2.0.9"]);
    }

    #[test]
    fn port_mappings_serialise_as_portmap_reads_them() {
        let m = PortMapping {
            host_port: 8080,
            container_port: 80,
            protocol: "tcp".into(),
            host_ip: "127.0.0.1".into(),
        };
        assert_eq!(
            serde_json::to_value(&m).expect("json"),
            serde_json::json!({"hostPort": 8080, "containerPort": 80, "protocol": "tcp",
                               "hostIP": "127.0.0.1"})
        );
    }
}
