//! The container's capabilities: containerd's default set, with the security context's
//! additions and drops (`ALL` included), or every capability for a privileged container.

use cri_proto::api;
use oci_spec::runtime::{Capability, LinuxCapabilities, Spec};

use super::{invalid, SpecError};

/// containerd's default capability set (Docker's): what a container has unless the
/// security context adds or drops.
const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// A capability by its CRI name (`NET_ADMIN`) or its kernel name (`CAP_NET_ADMIN`).
fn cap_from_cri(name: &str) -> Result<Capability, SpecError> {
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    // oci-spec's serde names are the kernel's `CAP_*` names.
    serde_json::from_value(serde_json::Value::String(full))
        .map_err(|_| invalid(format!("unknown capability {name:?}")))
}

/// "All" capabilities: every one in this process's bounding set. A capability the server
/// cannot hold it cannot give (here CAP_SYS_RESOURCE is outside the machine's bounding
/// set), and asking for it would fail the container's start.
fn all_capabilities() -> Vec<Capability> {
    let held = caps::read(None, caps::CapSet::Bounding).unwrap_or_else(|_| caps::all());
    let mut out: Vec<Capability> = held
        .into_iter()
        .filter_map(|c| cap_from_cri(&c.to_string()).ok())
        .collect();
    out.sort_by_key(|c| c.to_string());
    out
}

pub(super) fn capabilities(
    sec: &api::LinuxContainerSecurityContext,
) -> Result<LinuxCapabilities, SpecError> {
    let mut set: Vec<Capability> = if sec.privileged {
        all_capabilities()
    } else {
        DEFAULT_CAPABILITIES.to_vec()
    };
    if let Some(c) = &sec.capabilities {
        if c.add_capabilities
            .iter()
            .any(|a| a.eq_ignore_ascii_case("ALL"))
        {
            set = all_capabilities();
        } else {
            for a in &c.add_capabilities {
                let cap = cap_from_cri(a)?;
                if !set.contains(&cap) {
                    set.push(cap);
                }
            }
        }
        if c.drop_capabilities
            .iter()
            .any(|d| d.eq_ignore_ascii_case("ALL"))
        {
            set.clear();
            // Added capabilities survive a drop of ALL (containerd's order: drop ALL, then add).
            if !c
                .add_capabilities
                .iter()
                .any(|a| a.eq_ignore_ascii_case("ALL"))
            {
                for a in &c.add_capabilities {
                    set.push(cap_from_cri(a)?);
                }
            }
        } else {
            for d in &c.drop_capabilities {
                let cap = cap_from_cri(d)?;
                set.retain(|x| *x != cap);
            }
        }
    }
    let caps: oci_spec::runtime::Capabilities = set.into_iter().collect();
    let mut out = LinuxCapabilities::default();
    out.set_bounding(Some(caps.clone()))
        .set_effective(Some(caps.clone()))
        .set_permitted(Some(caps))
        .set_inheritable(None)
        .set_ambient(None);
    Ok(out)
}

pub(super) fn spec_caps(spec: &Spec) -> Vec<String> {
    spec.process()
        .as_ref()
        .and_then(|p| p.capabilities().as_ref())
        .and_then(|c| c.bounding().as_ref())
        .map(|b| {
            b.iter()
                .filter_map(|c| serde_json::to_value(c).ok())
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_add_and_drop() {
        let mut sec = api::LinuxContainerSecurityContext {
            capabilities: Some(api::Capability {
                add_capabilities: vec!["NET_ADMIN".into()],
                drop_capabilities: vec!["CAP_KILL".into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let caps = capabilities(&sec).unwrap();
        let eff = caps.effective().clone().unwrap();
        assert!(eff.contains(&Capability::NetAdmin));
        assert!(!eff.contains(&Capability::Kill));
        assert!(eff.contains(&Capability::Chown));
        sec.capabilities = Some(api::Capability {
            add_capabilities: vec!["SYS_TIME".into()],
            drop_capabilities: vec!["ALL".into()],
            ..Default::default()
        });
        let eff = capabilities(&sec).unwrap().effective().clone().unwrap();
        assert_eq!(
            eff.into_iter().collect::<Vec<_>>(),
            vec![Capability::SysTime]
        );
        sec.capabilities = Some(api::Capability {
            add_capabilities: vec!["NOT_A_CAP".into()],
            ..Default::default()
        });
        assert!(capabilities(&sec).is_err());
    }
}
