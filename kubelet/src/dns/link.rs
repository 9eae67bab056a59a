//! Where the clusterDNS addresses live in the agent's network namespace, as NodeLocal
//! DNSCache does it: a dummy interface (`rrun-dns0`) holding them, so that pods on the CNI
//! bridge reach the server through their default route (the node is their gateway) and
//! everything goes with one `ip link del` at exit. A kernel without the dummy driver gets
//! the addresses on `lo` instead (removed one by one at exit). Through the `ip` tool, as the
//! Services' rules go through `nft`.

use std::net::IpAddr;
use std::process::Command;

pub const LINK: &str = "rrun-dns0";

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("running ip: {0}")]
    Spawn(#[from] std::io::Error),
    #[error("ip {args}: {stderr}")]
    Refused { args: String, stderr: String },
}

fn ip(args: &[&str]) -> Result<(), LinkError> {
    let out = Command::new("ip").args(args).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(LinkError::Refused {
        args: args.join(" "),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

fn prefix(a: IpAddr) -> String {
    match a {
        IpAddr::V4(_) => format!("{a}/32"),
        IpAddr::V6(_) => format!("{a}/128"),
    }
}

/// The addresses, held until [`Addresses::remove`].
#[derive(Debug)]
pub struct Addresses {
    ips: Vec<IpAddr>,
    on_loopback: bool,
}

fn on(dev: &str, ips: &[IpAddr]) -> Result<(), LinkError> {
    for a in ips {
        let p = prefix(*a);
        let mut args = vec!["addr", "replace", p.as_str(), "dev", dev];
        // No duplicate address detection: the server binds the address at once.
        if a.is_ipv6() {
            args.push("nodad");
        }
        ip(&args)?;
    }
    ip(&["link", "set", dev, "up"])
}

/// Puts `ips` on the dummy link (made anew: a killed agent's is replaced), else on `lo`.
pub fn add(ips: &[IpAddr]) -> Result<Addresses, LinkError> {
    let _ = ip(&["link", "del", LINK]);
    match ip(&["link", "add", LINK, "type", "dummy"]) {
        Ok(()) => {
            if let Err(e) = on(LINK, ips) {
                let _ = ip(&["link", "del", LINK]);
                return Err(e);
            }
            Ok(Addresses {
                ips: ips.to_vec(),
                on_loopback: false,
            })
        }
        Err(e) => {
            tracing::info!("dns: no dummy link ({e}); the clusterDNS addresses go on lo");
            let held = Addresses {
                ips: ips.to_vec(),
                on_loopback: true,
            };
            if let Err(e) = on("lo", ips) {
                held.remove();
                return Err(e);
            }
            Ok(held)
        }
    }
}

impl Addresses {
    pub fn remove(&self) {
        let r = if self.on_loopback {
            self.ips
                .iter()
                .map(|a| ip(&["addr", "del", &prefix(*a), "dev", "lo"]))
                .find(Result::is_err)
                .unwrap_or(Ok(()))
        } else {
            ip(&["link", "del", LINK])
        };
        if let Err(e) = r {
            tracing::error!("dns: removing the clusterDNS addresses: {e}");
        }
    }
}
