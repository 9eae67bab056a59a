//! The cluster zone as the agent sees it, and its answers: the names of CoreDNS's
//! `kubernetes` plugin (the reference of what pods expect), from a snapshot of the
//! Services, their Ready endpoints and the pods' hostnames.
//!
//! - `<svc>.<ns>.svc.<domain>`: A/AAAA of the ClusterIP, or of every Ready endpoint for a
//!   headless Service (`clusterIP: None`).
//! - `<host>.<svc>.<ns>.svc.<domain>`: one endpoint of a headless Service, `<host>` being
//!   the pod's `hostname` when its `subdomain` is the Service (StatefulSet pods), else its IP
//!   with dashes.
//! - `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV for named ports (and SRV of the
//!   Service's name for all of them), targets in the additional section.
//! - Anything else in the domain: NXDOMAIN (NODATA for names that exist with another type),
//!   with the zone's SOA for negative caching.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_server::proto::rr::rdata::{A, AAAA, SOA, SRV};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};

/// CoreDNS's default TTL for the kubernetes plugin: answers follow scaling within seconds.
pub const TTL: u32 = 5;

/// One port of a Service, with its Ready endpoints (IP, target port, pod name).
#[derive(Debug, Clone, Default)]
pub struct Port {
    pub name: String,
    pub protocol: String,
    pub port: i32,
    pub endpoints: Vec<(IpAddr, i32, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// `None`: headless.
    pub cluster_ip: Option<IpAddr>,
    pub ports: Vec<Port>,
    /// Pod name → hostname, for the endpoints' pods whose `subdomain` is this Service.
    pub hostnames: BTreeMap<String, String>,
}

/// What the zone says about a query.
#[derive(Debug)]
pub enum Outcome {
    /// Not in the cluster domain: for the upstream resolvers.
    NotOurs,
    Answer {
        answers: Vec<Record>,
        additionals: Vec<Record>,
    },
    /// The name exists, without records of the type asked.
    NoData(Record),
    NxDomain(Record),
}

#[derive(Debug, Clone, Default)]
pub struct Zone {
    /// The cluster domain, lower case, without the final dot.
    pub domain: String,
    pub services: Vec<Service>,
}

fn fqdn(s: &str) -> Option<Name> {
    Name::from_ascii(format!("{s}.")).ok()
}

fn address(name: &Name, ip: IpAddr) -> Record {
    let rdata = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(name.clone(), TTL, rdata)
}

fn wants(qtype: RecordType, ip: IpAddr) -> bool {
    matches!(
        (qtype, ip),
        (RecordType::A | RecordType::ANY, IpAddr::V4(_))
            | (RecordType::AAAA | RecordType::ANY, IpAddr::V6(_))
    )
}

/// The label of an endpoint under its Service: its hostname, else its IP with dashes.
fn endpoint_label(svc: &Service, ip: IpAddr, pod: &str) -> String {
    match svc.hostnames.get(pod) {
        Some(h) => h.clone(),
        None => ip.to_string().replace(['.', ':'], "-"),
    }
}

impl Service {
    fn headless(&self) -> bool {
        self.cluster_ip.is_none()
    }

    /// The Ready endpoints, once each, in a stable order: (label, IP).
    fn endpoints(&self) -> Vec<(String, IpAddr)> {
        let mut seen = BTreeMap::new();
        for p in &self.ports {
            for (ip, _, pod) in &p.endpoints {
                seen.entry(*ip)
                    .or_insert_with(|| endpoint_label(self, *ip, pod));
            }
        }
        seen.into_iter().map(|(ip, l)| (l, ip)).collect()
    }
}

impl Zone {
    /// The zone's SOA, as CoreDNS writes it (negative answers are cached for the TTL).
    pub fn soa(&self) -> Record {
        let origin = fqdn(&self.domain).unwrap_or_else(Name::root);
        let mname = fqdn(&format!("ns.dns.{}", self.domain)).unwrap_or_else(Name::root);
        let rname = fqdn(&format!("hostmaster.{}", self.domain)).unwrap_or_else(Name::root);
        Record::from_rdata(
            origin,
            TTL,
            RData::SOA(SOA::new(mname, rname, 1, 7200, 1800, 86400, TTL)),
        )
    }

    fn service(&self, ns: &str, name: &str) -> Option<&Service> {
        self.services
            .iter()
            .find(|s| s.namespace == ns && s.name == name)
    }

    /// The answer to `qtype` for `qname` (any case, with or without the final dot).
    pub fn lookup(&self, qname: &str, qtype: RecordType) -> Outcome {
        let lower = qname.trim_end_matches('.').to_ascii_lowercase();
        let rel = if lower == self.domain {
            ""
        } else if let Some(r) = lower.strip_suffix(&format!(".{}", self.domain)) {
            r
        } else {
            return Outcome::NotOurs;
        };
        let Some(asked) = fqdn(&lower) else {
            return Outcome::NxDomain(self.soa());
        };
        // Labels from the right: svc, namespace, service, then the rest.
        let labels: Vec<&str> = if rel.is_empty() {
            Vec::new()
        } else {
            rel.rsplit('.').collect()
        };
        let nodata = || Outcome::NoData(self.soa());
        match labels.as_slice() {
            [] if qtype == RecordType::SOA => Outcome::Answer {
                answers: vec![self.soa()],
                additionals: Vec::new(),
            },
            [] | ["svc"] => nodata(),
            ["svc", ns] => {
                if self.services.iter().any(|s| s.namespace == *ns) {
                    nodata()
                } else {
                    Outcome::NxDomain(self.soa())
                }
            }
            ["svc", ns, name, rest @ ..] => match self.service(ns, name) {
                Some(svc) => self.in_service(svc, rest, &asked, qtype),
                None => Outcome::NxDomain(self.soa()),
            },
            _ => Outcome::NxDomain(self.soa()),
        }
    }

    fn in_service(&self, svc: &Service, rest: &[&str], asked: &Name, qtype: RecordType) -> Outcome {
        let base = format!("{}.{}.svc.{}", svc.name, svc.namespace, self.domain);
        let answer = |answers: Vec<Record>, additionals: Vec<Record>| {
            if answers.is_empty() {
                Outcome::NoData(self.soa())
            } else {
                Outcome::Answer {
                    answers,
                    additionals,
                }
            }
        };
        match rest {
            [] => {
                if qtype == RecordType::SRV {
                    let (a, extra) = self.srv(svc, None, None, asked, &base);
                    return answer(a, extra);
                }
                let ips: Vec<IpAddr> = match svc.cluster_ip {
                    Some(ip) => vec![ip],
                    None => svc.endpoints().into_iter().map(|(_, ip)| ip).collect(),
                };
                let a = ips
                    .into_iter()
                    .filter(|ip| wants(qtype, *ip))
                    .map(|ip| address(asked, ip))
                    .collect();
                answer(a, Vec::new())
            }
            [proto] if proto.starts_with('_') => {
                let p = &proto[1..];
                if svc.ports.iter().any(|x| x.protocol.eq_ignore_ascii_case(p)) {
                    Outcome::NoData(self.soa())
                } else {
                    Outcome::NxDomain(self.soa())
                }
            }
            [host] if svc.headless() => {
                let ips: Vec<IpAddr> = svc
                    .endpoints()
                    .into_iter()
                    .filter(|(l, _)| l == host)
                    .map(|(_, ip)| ip)
                    .collect();
                if ips.is_empty() {
                    return Outcome::NxDomain(self.soa());
                }
                let a = ips
                    .into_iter()
                    .filter(|ip| wants(qtype, *ip))
                    .map(|ip| address(asked, ip))
                    .collect();
                answer(a, Vec::new())
            }
            [proto, port] if proto.starts_with('_') && port.starts_with('_') => {
                let (a, extra) = self.srv(svc, Some(&port[1..]), Some(&proto[1..]), asked, &base);
                if a.is_empty() {
                    return Outcome::NxDomain(self.soa());
                }
                if qtype != RecordType::SRV && qtype != RecordType::ANY {
                    return Outcome::NoData(self.soa());
                }
                answer(a, extra)
            }
            _ => Outcome::NxDomain(self.soa()),
        }
    }

    /// SRV records of the Service's named ports (those matching `port` and `proto` when
    /// given), and the A/AAAA records of their targets.
    fn srv(
        &self,
        svc: &Service,
        port: Option<&str>,
        proto: Option<&str>,
        asked: &Name,
        base: &str,
    ) -> (Vec<Record>, Vec<Record>) {
        let (mut answers, mut extra) = (Vec::new(), Vec::new());
        for p in &svc.ports {
            if p.name.is_empty()
                || port.is_some_and(|x| x != p.name)
                || proto.is_some_and(|x| !x.eq_ignore_ascii_case(&p.protocol))
            {
                continue;
            }
            // (target, port, address)
            let targets: Vec<(String, i32, IpAddr)> = match svc.cluster_ip {
                Some(ip) => vec![(base.to_string(), p.port, ip)],
                None => p
                    .endpoints
                    .iter()
                    .map(|(ip, tp, pod)| {
                        (
                            format!("{}.{base}", endpoint_label(svc, *ip, pod)),
                            *tp,
                            *ip,
                        )
                    })
                    .collect(),
            };
            // CoreDNS spreads the weight evenly over the targets.
            let weight = (100 / targets.len().max(1)) as u16;
            for (target, tport, ip) in targets {
                let (Some(t), Ok(tport)) = (fqdn(&target), u16::try_from(tport)) else {
                    continue;
                };
                answers.push(Record::from_rdata(
                    asked.clone(),
                    TTL,
                    RData::SRV(SRV::new(0, weight, tport, t.clone())),
                ));
                extra.push(address(&t, ip));
            }
        }
        (answers, extra)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Zone {
        let ep = |ip: &str, port: i32, pod: &str| (ip.parse().unwrap(), port, pod.to_string());
        Zone {
            domain: "cluster.local".into(),
            services: vec![
                Service {
                    name: "web".into(),
                    namespace: "default".into(),
                    cluster_ip: Some("10.96.0.20".parse().unwrap()),
                    ports: vec![Port {
                        name: "http".into(),
                        protocol: "TCP".into(),
                        port: 80,
                        endpoints: vec![ep("10.88.0.2", 8080, "web-a")],
                    }],
                    hostnames: BTreeMap::new(),
                },
                Service {
                    name: "db".into(),
                    namespace: "default".into(),
                    cluster_ip: None,
                    ports: vec![Port {
                        name: "pg".into(),
                        protocol: "TCP".into(),
                        port: 5432,
                        endpoints: vec![ep("10.88.0.3", 5432, "db-0"), ep("10.88.0.4", 5432, "x")],
                    }],
                    hostnames: [("db-0".to_string(), "db-0".to_string())].into(),
                },
            ],
        }
    }

    fn ips(o: Outcome) -> Vec<String> {
        match o {
            Outcome::Answer { answers, .. } => {
                answers.iter().map(|r| r.data().to_string()).collect()
            }
            other => panic!("not an answer: {other:?}"),
        }
    }

    #[test]
    fn services_endpoints_and_srv() {
        let z = zone();
        assert_eq!(
            ips(z.lookup("WEB.default.svc.cluster.local.", RecordType::A)),
            ["10.96.0.20"]
        );
        assert!(matches!(
            z.lookup("web.default.svc.cluster.local", RecordType::AAAA),
            Outcome::NoData(_)
        ));
        assert_eq!(
            ips(z.lookup("db.default.svc.cluster.local", RecordType::A)),
            ["10.88.0.3", "10.88.0.4"]
        );
        assert_eq!(
            ips(z.lookup("db-0.db.default.svc.cluster.local", RecordType::A)),
            ["10.88.0.3"]
        );
        assert_eq!(
            ips(z.lookup("10-88-0-4.db.default.svc.cluster.local", RecordType::A)),
            ["10.88.0.4"]
        );
        assert_eq!(
            ips(z.lookup("_http._tcp.web.default.svc.cluster.local", RecordType::SRV)),
            ["0 100 80 web.default.svc.cluster.local."]
        );
        assert_eq!(
            ips(z.lookup("_pg._tcp.db.default.svc.cluster.local", RecordType::SRV)),
            [
                "0 50 5432 db-0.db.default.svc.cluster.local.",
                "0 50 5432 10-88-0-4.db.default.svc.cluster.local."
            ]
        );
        for nx in [
            "nope.default.svc.cluster.local",
            "db-9.db.default.svc.cluster.local",
            "web.other.svc.cluster.local",
            "_nope._tcp.web.default.svc.cluster.local",
            "web.default.svc.cluster.local.default.svc.cluster.local",
            "x.pod.cluster.local",
        ] {
            assert!(
                matches!(z.lookup(nx, RecordType::A), Outcome::NxDomain(_)),
                "{nx}"
            );
        }
        assert!(matches!(
            z.lookup("default.svc.cluster.local", RecordType::A),
            Outcome::NoData(_)
        ));
        assert!(matches!(
            z.lookup("example.org", RecordType::A),
            Outcome::NotOurs
        ));
        assert!(matches!(
            z.lookup("notcluster.local", RecordType::A),
            Outcome::NotOurs
        ));
    }
}
