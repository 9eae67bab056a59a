//! The data path: one nftables table (`ip rrun-proxy`) in the agent's network namespace,
//! written through the `nft` tool. Each change replaces the whole table in one `nft -f -`
//! transaction (create-if-missing, delete, re-create), so a packet sees the old rules or
//! the new ones, never a mix.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};

use super::Rule;

pub const TABLE: &str = "rrun-proxy";

/// The mark of packets that came in on a node port: they are masqueraded, so the
/// endpoint's answer comes back through this node.
const MASQ_MARK: u32 = 0x4000;

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("running nft: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("nft refused the rules: {0}")]
    Refused(String),
}

/// The table for `rules`, as one nft script; `None` when no rule is left (the table goes).
pub fn render(rules: &[Rule]) -> Option<String> {
    if rules.is_empty() {
        return None;
    }
    let mut s = String::new();
    let _ = writeln!(s, "table ip {TABLE} {{");
    let _ = writeln!(
        s,
        "  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept; jump services; }}"
    );
    let _ = writeln!(
        s,
        "  chain output {{ type nat hook output priority -100; policy accept; jump services; }}"
    );
    let _ = writeln!(
        s,
        "  chain postrouting {{ type nat hook postrouting priority srcnat; policy accept; meta mark & {MASQ_MARK:#x} == {MASQ_MARK:#x} masquerade; }}"
    );
    let mut services = String::new();
    let mut chains = String::new();
    // ClientIP affinity, as kube-proxy's nftables mode keeps it: one set of client
    // addresses per endpoint, each entry living `timeout` seconds from its last use; a
    // client found in one goes to that endpoint, the others are spread at random. The
    // sets are declared before the chains that name them.
    for (i, r) in rules.iter().enumerate() {
        if let Some(t) = r.affinity {
            for j in 0..r.endpoints.len() {
                let _ = writeln!(
                    s,
                    "  set affinity-{i}-{j} {{ type ipv4_addr; flags dynamic,timeout; timeout {t}s; }}"
                );
            }
        }
    }
    for (i, r) in rules.iter().enumerate() {
        let proto = r.protocol.to_lowercase();
        let comment = format!("comment \"{}:{}/{}\"", r.service, r.port, r.protocol);
        if let Some(ip) = r.cluster_ip {
            let _ = writeln!(
                services,
                "    ip daddr {ip} {proto} dport {} jump svc-{i} {comment}",
                r.port
            );
        }
        if let Some(np) = r.node_port {
            let _ = writeln!(
                services,
                "    fib daddr type local {proto} dport {np} jump nodeport-{i} {comment}"
            );
            let _ = writeln!(
                chains,
                "  chain nodeport-{i} {{ meta mark set meta mark | {MASQ_MARK:#x}; jump svc-{i}; }}"
            );
        }
        let n = r.endpoints.len();
        if n == 0 {
            // No endpoint: nothing to translate to (the packet goes on unanswered).
            let _ = writeln!(chains, "  chain svc-{i} {{ }}");
            continue;
        }
        let vmap: Vec<String> = (0..n).map(|j| format!("{j} : jump ep-{i}-{j}")).collect();
        let sticky: String = if r.affinity.is_some() {
            (0..n)
                .map(|j| format!("ip saddr @affinity-{i}-{j} goto ep-{i}-{j}; "))
                .collect()
        } else {
            String::new()
        };
        let _ = writeln!(
            chains,
            "  chain svc-{i} {{ {sticky}numgen random mod {n} vmap {{ {} }}; }}",
            vmap.join(", ")
        );
        for (j, e) in r.endpoints.iter().enumerate() {
            let remember = if r.affinity.is_some() {
                format!("update @affinity-{i}-{j} {{ ip saddr }}; ")
            } else {
                String::new()
            };
            let _ = writeln!(
                chains,
                "  chain ep-{i}-{j} {{ {remember}meta l4proto {proto} dnat to {ip}:{port}; }}",
                ip = e.ip,
                port = e.port
            );
        }
    }
    let _ = writeln!(s, "  chain services {{\n{services}  }}");
    s.push_str(&chains);
    s.push_str("}\n");
    Some(s)
}

fn run(script: &str) -> Result<(), NftError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NftError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Replaces the table with `body` (or removes it), in one transaction.
pub fn apply(body: Option<&str>) -> Result<(), NftError> {
    let mut script = format!("table ip {TABLE}\ndelete table ip {TABLE}\n");
    if let Some(b) = body {
        script.push_str(b);
    }
    run(&script)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::Endpoint;
    use std::net::Ipv4Addr;

    #[test]
    fn rules_text() {
        assert_eq!(render(&[]), None);
        let r = Rule {
            service: "default/web".into(),
            protocol: "TCP".into(),
            cluster_ip: Some(Ipv4Addr::new(10, 96, 0, 10)),
            port: 80,
            node_port: Some(30080),
            endpoints: vec![
                Endpoint {
                    ip: Ipv4Addr::new(10, 88, 0, 2),
                    port: 8080,
                    pod: "a".into(),
                },
                Endpoint {
                    ip: Ipv4Addr::new(10, 88, 0, 3),
                    port: 8080,
                    pod: "b".into(),
                },
            ],
            affinity: None,
        };
        let mut sticky = r.clone();
        sticky.affinity = Some(30);
        let t = render(&[sticky]).unwrap();
        assert!(
            t.contains("set affinity-0-1 { type ipv4_addr; flags dynamic,timeout; timeout 30s; }"),
            "{t}"
        );
        assert!(
            t.contains("chain svc-0 { ip saddr @affinity-0-0 goto ep-0-0; ip saddr @affinity-0-1 goto ep-0-1; numgen"),
            "{t}"
        );
        assert!(
            t.contains("chain ep-0-1 { update @affinity-0-1 { ip saddr }; meta l4proto tcp dnat to 10.88.0.3:8080; }"),
            "{t}"
        );
        let t = render(&[r]).unwrap();
        assert!(!t.contains("affinity"), "{t}");
        assert!(
            t.contains("ip daddr 10.96.0.10 tcp dport 80 jump svc-0"),
            "{t}"
        );
        assert!(
            t.contains("fib daddr type local tcp dport 30080 jump nodeport-0"),
            "{t}"
        );
        assert!(
            t.contains("numgen random mod 2 vmap { 0 : jump ep-0-0, 1 : jump ep-0-1 }"),
            "{t}"
        );
        assert!(t.contains("dnat to 10.88.0.3:8080"), "{t}");
    }
}
