//! A pod's resolv.conf as the kubelet composes it (`pkg/kubelet/network/dns`): from the
//! pod's `dnsPolicy`, the node's `resolvConf` and `clusterDNS`/`clusterDomain`, then the
//! pod's `dnsConfig` appended.

use std::net::IpAddr;
use std::path::Path;

use cri_proto::api;
use k8s_openapi::api::core::v1::PodSpec;

use super::Settings;

/// The resolver's limits the kubelet enforces (glibc's MAXNS; the kubelet's search limit).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The nameserver, search and options lines of a resolv.conf.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ResolvConf {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

pub fn parse(text: &str) -> ResolvConf {
    let mut r = ResolvConf::default();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => r.servers.extend(w.next().map(str::to_string)),
            // As in glibc, the last of `search` and `domain` wins.
            Some("search") | Some("domain") => r.searches = w.map(str::to_string).collect(),
            Some("options") => r.options.extend(w.map(str::to_string)),
            _ => {}
        }
    }
    r
}

/// The node's resolv.conf (`None`: the kubelet's `--resolv-conf=""`, nothing inherited).
pub fn node(path: Option<&Path>) -> ResolvConf {
    path.and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// The node's upstream resolvers for the cluster DNS server: its resolv.conf's nameservers,
/// but not the clusterDNS addresses themselves (that would loop).
pub fn upstreams(s: &Settings) -> Vec<std::net::SocketAddr> {
    node(s.resolv_conf.as_deref())
        .servers
        .iter()
        .filter_map(|n| n.parse::<IpAddr>().ok())
        .filter(|ip| !s.cluster_dns.contains(ip))
        .map(|ip| (ip, 53).into())
        .collect()
}

/// The effective policy, as the kubelet resolves it: host-network pods with ClusterFirst
/// get the node's DNS, and ClusterFirst without clusterDNS falls back to Default.
fn policy<'a>(spec: &'a PodSpec, s: &Settings) -> &'a str {
    let host_net = spec.host_network.unwrap_or(false);
    match spec.dns_policy.as_deref().unwrap_or("ClusterFirst") {
        "None" => "None",
        "Default" => "Default",
        "ClusterFirstWithHostNet" if !s.cluster_dns.is_empty() => "ClusterFirst",
        "ClusterFirst" if !host_net && !s.cluster_dns.is_empty() => "ClusterFirst",
        _ => "Default",
    }
}

fn push_unique(v: &mut Vec<String>, x: String) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// The sandbox's DNS config for a pod of namespace `ns`.
pub fn pod_dns(spec: &PodSpec, ns: &str, s: &Settings) -> api::DnsConfig {
    let host = || node(s.resolv_conf.as_deref());
    let mut r = match policy(spec, s) {
        "None" => ResolvConf::default(),
        "ClusterFirst" => {
            let d = &s.domain;
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
            for x in host().searches {
                push_unique(&mut searches, x);
            }
            ResolvConf {
                servers: s.cluster_dns.iter().map(IpAddr::to_string).collect(),
                searches,
                options: vec!["ndots:5".into()],
            }
        }
        _ => host(),
    };
    if let Some(c) = &spec.dns_config {
        for n in c.nameservers.iter().flatten() {
            push_unique(&mut r.servers, n.clone());
        }
        for x in c.searches.iter().flatten() {
            push_unique(&mut r.searches, x.clone());
        }
        for o in c.options.iter().flatten() {
            let name = o.name.clone().unwrap_or_default();
            r.options
                .retain(|x| x.split(':').next() != Some(name.as_str()));
            r.options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name,
            });
        }
    }
    if r.servers.len() > MAX_NAMESERVERS {
        tracing::warn!(
            "dns: more than {MAX_NAMESERVERS} nameservers; the kubelet keeps the first ones: {:?}",
            &r.servers[..MAX_NAMESERVERS]
        );
        r.servers.truncate(MAX_NAMESERVERS);
    }
    r.searches.truncate(MAX_SEARCHES);
    api::DnsConfig {
        servers: r.servers,
        searches: r.searches,
        options: r.options,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path) -> Settings {
        let rc = dir.join("resolv.conf");
        std::fs::write(
            &rc,
            "nameserver 192.0.2.53\nnameserver 10.97.0.10\nsearch corp.example\noptions edns0\n",
        )
        .unwrap();
        Settings {
            cluster_dns: vec!["10.97.0.10".parse().unwrap()],
            domain: "cluster.local".into(),
            resolv_conf: Some(rc),
        }
    }

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn policies_as_the_kubelet_writes_them() {
        let d = tempfile::tempdir().unwrap();
        let s = settings(d.path());
        let first = pod_dns(&spec(serde_json::json!({"containers": []})), "team", &s);
        assert_eq!(first.servers, ["10.97.0.10"]);
        assert_eq!(
            first.searches,
            [
                "team.svc.cluster.local",
                "svc.cluster.local",
                "cluster.local",
                "corp.example"
            ]
        );
        assert_eq!(first.options, ["ndots:5"]);
        // Host network: ClusterFirst is Default, ClusterFirstWithHostNet is ClusterFirst.
        let host = pod_dns(
            &spec(serde_json::json!({"containers": [], "hostNetwork": true})),
            "team",
            &s,
        );
        assert_eq!(host.servers, ["192.0.2.53", "10.97.0.10"]);
        assert_eq!(host.options, ["edns0"]);
        let with = pod_dns(
            &spec(
                serde_json::json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
            ),
            "team",
            &s,
        );
        assert_eq!(with.servers, ["10.97.0.10"]);
        let none = pod_dns(
            &spec(
                serde_json::json!({"containers": [], "dnsPolicy": "None", "dnsConfig": {
                "nameservers": ["192.0.2.1"], "searches": ["a.example"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}}),
            ),
            "team",
            &s,
        );
        assert_eq!(none.servers, ["192.0.2.1"]);
        assert_eq!(none.searches, ["a.example"]);
        assert_eq!(none.options, ["ndots:2", "edns0"]);
        let merged = pod_dns(
            &spec(serde_json::json!({"containers": [], "dnsConfig": {
                "searches": ["svc.cluster.local", "b.example"],
                "options": [{"name": "ndots", "value": "1"}]}})),
            "team",
            &s,
        );
        assert_eq!(merged.searches.len(), 5);
        assert_eq!(merged.options, ["ndots:1"]);
        // Without clusterDNS, ClusterFirst falls back to the node's.
        let mut bare = s.clone();
        bare.cluster_dns.clear();
        let fb = pod_dns(&spec(serde_json::json!({"containers": []})), "team", &bare);
        assert_eq!(fb.servers, ["192.0.2.53", "10.97.0.10"]);
        assert_eq!(
            upstreams(&s),
            [std::net::SocketAddr::from(([192, 0, 2, 53], 53))]
        );
    }
}
