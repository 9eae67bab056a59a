//! Services on the node, as kube-proxy's nftables mode does them: a ClusterIP (and a
//! NodePort) per Service port, DNAT to one of the Ready endpoints chosen at random, all in
//! one nftables table of the agent's network namespace (`nft.rs`).

pub mod nft;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::{Deserialize, Serialize};

/// What the agent gave a Service: its ClusterIP and node ports, kept across restarts.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct SvcRec {
    pub uid: String,
    pub cluster_ip: Option<Ipv4Addr>,
    /// `<protocol>/<port>` → node port.
    pub node_ports: BTreeMap<String, i32>,
    pub created: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
}

/// An IPv4 range `a.b.c.d/n`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    pub base: u32,
    pub bits: u8,
}

impl std::str::FromStr for Range {
    type Err = String;
    fn from_str(s: &str) -> Result<Range, String> {
        let bad = || format!("{s:?}: expected an IPv4 CIDR such as 10.96.0.0/12");
        let (ip, n) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let bits: u8 = n.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&bits) {
            return Err(format!("{s:?}: the prefix must be between /8 and /30"));
        }
        let mask = u32::MAX << (32 - bits);
        Ok(Range {
            base: u32::from(ip) & mask,
            bits,
        })
    }
}

impl Range {
    fn size(&self) -> u32 {
        1 << (32 - self.bits)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(ip) ^ self.base) >> (32 - self.bits) == 0
    }
}

pub const NODE_PORTS: std::ops::RangeInclusive<i32> = 30000..=32767;

fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

pub fn protocol(p: &ServicePort) -> &str {
    p.protocol.as_deref().unwrap_or("TCP")
}

pub fn port_key(p: &ServicePort) -> String {
    format!("{}/{}", protocol(p), p.port)
}

/// Gives `svc` its ClusterIP and node ports (those it asks for, or free ones picked from a
/// hash of its name so that they rarely move), validating what it asks for.
pub fn allocate(
    svc: &Service,
    key: &str,
    range: Range,
    rec: &mut SvcRec,
    others: &[&SvcRec],
) -> Result<(), String> {
    let spec = svc.spec.clone().unwrap_or_default();
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let want_ip = match spec.cluster_ip.as_deref() {
        None | Some("") | Some("None") => None,
        Some(s) => Some(
            s.parse::<Ipv4Addr>()
                .map_err(|_| format!("spec.clusterIP: Invalid value: {s:?}"))?,
        ),
    };
    let used_ip = |ip: Ipv4Addr| others.iter().any(|o| o.cluster_ip == Some(ip));
    if headless {
        rec.cluster_ip = None;
    } else if let Some(ip) = want_ip {
        if !range.contains(ip) {
            return Err(format!(
                "spec.clusterIP: Invalid value: {ip:?}: provided IP is not in the valid range"
            ));
        }
        if used_ip(ip) {
            return Err(format!(
                "spec.clusterIP: Invalid value: {ip:?}: provided IP is already allocated"
            ));
        }
        rec.cluster_ip = Some(ip);
    } else if rec
        .cluster_ip
        .is_none_or(|ip| !range.contains(ip) || used_ip(ip))
    {
        // The first address is the network's, the second the `kubernetes` Service's.
        let n = range.size() - 3;
        let start = fnv(key) % n;
        let ip = (0..n)
            .map(|i| Ipv4Addr::from(range.base + 2 + (start + i) % n))
            .find(|ip| !used_ip(*ip))
            .ok_or("no ClusterIP is free in --service-cluster-ip-range")?;
        rec.cluster_ip = Some(ip);
    }
    affinity(svc)?;
    let node_port = spec.type_.as_deref() == Some("NodePort");
    let mut ports = BTreeMap::new();
    if node_port {
        let used = |p: i32, ports: &BTreeMap<String, i32>| {
            others
                .iter()
                .any(|o| o.node_ports.values().any(|q| *q == p))
                || ports.values().any(|q| *q == p)
        };
        for (i, p) in spec.ports.iter().flatten().enumerate() {
            let k = port_key(p);
            let port = match p.node_port {
                Some(n) => {
                    if !NODE_PORTS.contains(&n) || used(n, &ports) {
                        return Err(format!(
                            "spec.ports[{i}].nodePort: Invalid value: {n}: provided port is not in the valid range or is already allocated"
                        ));
                    }
                    n
                }
                None => match rec
                    .node_ports
                    .get(&k)
                    .copied()
                    .filter(|n| !used(*n, &ports))
                {
                    Some(n) => n,
                    None => {
                        let span = NODE_PORTS.end() - NODE_PORTS.start() + 1;
                        let start = (fnv(&format!("{key}/{k}")) % span as u32) as i32;
                        (0..span)
                            .map(|j| NODE_PORTS.start() + (start + j) % span)
                            .find(|n| !used(*n, &ports))
                            .ok_or("no node port is free")?
                    }
                },
            };
            ports.insert(k, port);
        }
    }
    rec.node_ports = ports;
    Ok(())
}

/// The default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
pub const AFFINITY_TIMEOUT: i32 = 10800;

/// `sessionAffinity: ClientIP`: how long a client stays with its endpoint (seconds), with
/// the API server's validation; `None` without affinity.
pub fn affinity(svc: &Service) -> Result<Option<i32>, String> {
    let spec = svc.spec.clone().unwrap_or_default();
    match spec.session_affinity.as_deref() {
        None | Some("") | Some("None") => Ok(None),
        Some("ClientIP") => {
            let t = spec
                .session_affinity_config
                .and_then(|c| c.client_ip)
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(AFFINITY_TIMEOUT);
            if !(1..=86400).contains(&t) {
                return Err(format!(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: {t}: must be greater than 0 and less than 86400"
                ));
            }
            Ok(Some(t))
        }
        Some(other) => Err(format!(
            "spec.sessionAffinity: Unsupported value: {other:?}: supported values: \"ClientIP\", \"None\""
        )),
    }
}

/// One endpoint of a Service port.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: i32,
    pub pod: String,
}

/// Does `labels` match the Service's selector (a Service without one has no endpoints)?
fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
        return false;
    };
    if sel.is_empty() {
        return false;
    }
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The pod's port for a Service port: its number, or a named container port of the pod.
fn target_port(p: &ServicePort, pod: &Pod) -> Option<i32> {
    match &p.target_port {
        None => Some(p.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(name)) => pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|cp| {
                cp.name.as_deref() == Some(name.as_str())
                    && cp.protocol.as_deref().unwrap_or("TCP") == protocol(p)
            })
            .map(|cp| cp.container_port),
    }
}

/// The endpoints of each port of `svc` (by `port_key`), among `ready` pods (each with its
/// IP; only pods that are Ready and not leaving are given).
pub fn endpoints<P: std::borrow::Borrow<Pod>>(
    svc: &Service,
    ready: &[(P, Ipv4Addr)],
) -> BTreeMap<String, Vec<Endpoint>> {
    let mut out = BTreeMap::new();
    for p in svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.as_ref())
        .into_iter()
        .flatten()
    {
        let mut eps: Vec<Endpoint> = ready
            .iter()
            .map(|(pod, ip)| (pod.borrow(), ip))
            .filter(|(pod, _)| selects(svc, pod))
            .filter_map(|(pod, ip)| {
                target_port(p, pod).map(|port| Endpoint {
                    ip: *ip,
                    port,
                    pod: pod.metadata.name.clone().unwrap_or_default(),
                })
            })
            .collect();
        eps.sort();
        out.insert(port_key(p), eps);
    }
    out
}

/// What the rules are made of: one entry per Service port.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub service: String,
    pub protocol: String,
    pub cluster_ip: Option<Ipv4Addr>,
    pub port: i32,
    pub node_port: Option<i32>,
    pub endpoints: Vec<Endpoint>,
    /// `sessionAffinity: ClientIP`'s timeout in seconds.
    pub affinity: Option<i32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn cluster_ips_and_node_ports() {
        let range: Range = "10.96.0.0/24".parse().unwrap();
        assert!("10.96.0.0".parse::<Range>().is_err());
        let s = svc(
            serde_json::json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 53, "protocol": "UDP", "nodePort": 30053}]}}),
        );
        let mut a = SvcRec::default();
        allocate(&s, "default/web", range, &mut a, &[]).unwrap();
        let ip = a.cluster_ip.unwrap();
        assert!(range.contains(ip) && ip != Ipv4Addr::new(10, 96, 0, 1));
        assert_eq!(a.node_ports["UDP/53"], 30053);
        assert!(NODE_PORTS.contains(&a.node_ports["TCP/80"]));
        // Stable, and another Service gets other ones.
        let mut again = a.clone();
        allocate(&s, "default/web", range, &mut again, &[]).unwrap();
        assert_eq!(again, a);
        let mut b = SvcRec::default();
        let err = allocate(&s, "default/other", range, &mut b, &[&a]).unwrap_err();
        assert!(err.contains("nodePort"), "{err}");
        let s2 = svc(
            serde_json::json!({"metadata": {"name": "db"}, "spec": {"clusterIP": "10.96.1.5", "ports": [{"port": 5432}]}}),
        );
        assert!(allocate(&s2, "default/db", range, &mut b, &[&a]).is_err());
        let headless =
            svc(serde_json::json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}}));
        allocate(&headless, "default/h", range, &mut b, &[&a]).unwrap();
        assert_eq!(b.cluster_ip, None);
    }

    #[test]
    fn session_affinity() {
        let s =
            |v: serde_json::Value| svc(serde_json::json!({"metadata": {"name": "a"}, "spec": v}));
        assert_eq!(affinity(&s(serde_json::json!({}))), Ok(None));
        assert_eq!(
            affinity(&s(serde_json::json!({"sessionAffinity": "ClientIP"}))),
            Ok(Some(AFFINITY_TIMEOUT))
        );
        assert_eq!(
            affinity(&s(
                serde_json::json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 30}}})
            )),
            Ok(Some(30))
        );
        assert!(affinity(&s(
            serde_json::json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}})
        ))
        .is_err());
        assert!(affinity(&s(serde_json::json!({"sessionAffinity": "Cookie"}))).is_err());
    }

    #[test]
    fn endpoints_follow_selector_and_named_ports() {
        let s = svc(
            serde_json::json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}, {"port": 81, "targetPort": 9000, "protocol": "UDP"}]}}),
        );
        let pod = |name: &str, app: &str| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": {"app": app}}, "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]}})).unwrap()
        };
        let ready = vec![
            (pod("b", "web"), Ipv4Addr::new(10, 88, 0, 3)),
            (pod("a", "web"), Ipv4Addr::new(10, 88, 0, 2)),
            (pod("c", "db"), Ipv4Addr::new(10, 88, 0, 4)),
        ];
        let eps = endpoints(&s, &ready);
        let tcp: Vec<(Ipv4Addr, i32)> = eps["TCP/80"].iter().map(|e| (e.ip, e.port)).collect();
        assert_eq!(
            tcp,
            vec![
                (Ipv4Addr::new(10, 88, 0, 2), 8080),
                (Ipv4Addr::new(10, 88, 0, 3), 8080)
            ]
        );
        assert_eq!(eps["UDP/81"].len(), 2);
        assert_eq!(eps["UDP/81"][0].port, 9000);
    }
}
