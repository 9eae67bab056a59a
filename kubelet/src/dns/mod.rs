//! Cluster DNS on the node: a DNS server inside the agent answering the cluster domain from
//! the agent's own view of Services, endpoints and pods (`records.rs`), forwarding other
//! names to the node's resolvers (`server.rs`), on the clusterDNS addresses held by a dummy
//! link of the agent's network namespace (`link.rs`); and the pods' resolv.conf that points
//! at it (`resolv.rs`). It runs only when clusterDNS is set, as a kubelet without
//! clusterDNS gives ClusterFirst pods the node's DNS.

pub mod hosts;
pub mod link;
pub mod records;
pub mod resolv;
pub mod server;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::ServerFuture;

use crate::controllers::{self, Handle};
use crate::state::Shared;
use records::{Port, Service, Zone};
use server::{Handler, ZoneSource};

/// The kubelet's DNS settings: `clusterDNS`, `clusterDomain`, `resolvConf`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster_dns: Vec<IpAddr>,
    /// Lower case, without the final dot.
    pub domain: String,
    /// `None`: the kubelet's `resolvConf: ""` (no node DNS inherited, no upstream).
    pub resolv_conf: Option<PathBuf>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            cluster_dns: Vec::new(),
            domain: "cluster.local".into(),
            resolv_conf: Some("/etc/resolv.conf".into()),
        }
    }
}

/// How long a TCP client may stay idle (CoreDNS's read timeout).
const TCP_IDLE: Duration = Duration::from_secs(10);
const PORT: u16 = 53;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("the clusterDNS addresses: {0}")]
    Link(#[from] link::LinkError),
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Checks `clusterDomain` (a DNS name; stored lower case without the final dot).
pub fn parse_domain(s: &str) -> Result<String, String> {
    let d = s.trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(d)
    } else {
        Err(format!("{s:?} is not a DNS domain (e.g. cluster.local)"))
    }
}

/// The server while it runs. Dropped without [`Running::stop`] (the agent failing to
/// start after it), it still takes the addresses away.
pub struct Running {
    server: ServerFuture<Handler>,
    addresses: Option<link::Addresses>,
}

/// Puts the clusterDNS addresses on the node and serves them (UDP and TCP port 53);
/// `None` without clusterDNS.
pub async fn start(s: &Settings, zone: ZoneSource) -> Result<Option<Running>, DnsError> {
    if s.cluster_dns.is_empty() {
        return Ok(None);
    }
    let addresses = link::add(&s.cluster_dns)?;
    let handler = Handler {
        zone,
        upstreams: resolv::upstreams(s),
    };
    let mut server = ServerFuture::new(handler);
    for ip in &s.cluster_dns {
        let at = SocketAddr::new(*ip, PORT);
        let bound = async {
            let udp = tokio::net::UdpSocket::bind(at).await?;
            let tcp = tokio::net::TcpListener::bind(at).await?;
            Ok::<_, std::io::Error>((udp, tcp))
        }
        .await;
        match bound {
            Ok((udp, tcp)) => {
                server.register_socket(udp);
                server.register_listener(tcp, TCP_IDLE);
            }
            Err(e) => {
                let _ = server.shutdown_gracefully().await;
                addresses.remove();
                return Err(DnsError::Bind(at, e));
            }
        }
    }
    Ok(Some(Running {
        server,
        addresses: Some(addresses),
    }))
}

impl Running {
    /// Stops serving and takes the addresses away.
    pub async fn stop(mut self) {
        if let Err(e) = self.server.shutdown_gracefully().await {
            tracing::debug!("dns: stopping: {e}");
        }
        if let Some(a) = self.addresses.take() {
            a.remove();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(a) = self.addresses.take() {
            a.remove();
        }
    }
}

/// The zone now: the Services the controllers published with their Ready endpoints, and the
/// hostnames of the endpoints' pods whose `subdomain` is their Service.
pub fn snapshot(shared: &Shared, h: &Handle, domain: &str) -> Zone {
    // The controllers' lock, then the agent's, never both (they take them in that order).
    let (views, mut endpoints) = {
        let c = controllers::lock(h);
        (c.view.services.clone(), c.view.endpoints.clone())
    };
    let mut services = Vec::with_capacity(views.len());
    let mut wanted_pods: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for svc in views {
        let ns = svc
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = svc.metadata.name.clone().unwrap_or_default();
        let spec = svc.spec.unwrap_or_default();
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<IpAddr>().ok());
        let mut eps = endpoints
            .remove(&controllers::sync::key(&ns, &name))
            .unwrap_or_default();
        let ports = spec
            .ports
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let e = eps.remove(&crate::proxy::port_key(&p)).unwrap_or_default();
                Port {
                    name: p.name.unwrap_or_default(),
                    protocol: p.protocol.unwrap_or_else(|| "TCP".into()),
                    port: p.port,
                    endpoints: e
                        .into_iter()
                        .map(|e| (IpAddr::V4(e.ip), e.port, e.pod))
                        .collect(),
                }
            })
            .collect::<Vec<_>>();
        for p in &ports {
            for (_, _, pod) in &p.endpoints {
                wanted_pods
                    .entry(controllers::sync::key(&ns, pod))
                    .or_default()
                    .push(services.len());
            }
        }
        services.push(Service {
            name,
            namespace: ns,
            cluster_ip,
            ports,
            hostnames: BTreeMap::new(),
        });
    }
    if !wanted_pods.is_empty() {
        let g = shared.lock();
        for (key, idx) in wanted_pods {
            let Some(spec) = g.desired.get(&key).and_then(|d| d.pod.spec.as_ref()) else {
                continue;
            };
            let (Some(host), Some(sub)) = (&spec.hostname, &spec.subdomain) else {
                continue;
            };
            let pod = key.split_once('/').map(|(_, n)| n).unwrap_or("");
            for i in idx {
                let svc = &mut services[i];
                if svc.name == *sub {
                    svc.hostnames
                        .insert(pod.to_string(), host.to_ascii_lowercase());
                }
            }
        }
    }
    Zone {
        domain: domain.to_string(),
        services,
    }
}

/// The zone source of a running agent.
pub fn source(shared: Arc<Shared>, h: Handle, domain: String) -> ZoneSource {
    Arc::new(move || snapshot(&shared, &h, &domain))
}
