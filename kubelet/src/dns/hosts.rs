//! The pod's `/etc/hosts`, as the kubelet manages it (`managedHostsFileContent`): the
//! loopback entries, the pod's own address under its hostname (with
//! `<hostname>.<subdomain>.<ns>.svc.<domain>` first when it has a subdomain) and its
//! `hostAliases`; written once per pod to `<root>/pods/<uid>/etc-hosts` (container restarts
//! keep it) and bind-mounted into each container that does not mount `/etc/hosts` itself.
//! Host-network pods keep the runtime's (the node's) file, as the CRI servers give it.

use std::path::Path;

use cri_proto::api;
use k8s_openapi::api::core::v1::{Container, Pod};

/// The kubelet's limit for a hostname (a DNS label).
const MAX_HOSTNAME: usize = 63;

pub fn content(pod: &Pod, ip: &str, domain: &str) -> String {
    let spec = crate::spec::spec(pod);
    let mut hostname = spec
        .hostname
        .clone()
        .unwrap_or_else(|| crate::spec::name(pod).to_string());
    hostname.truncate(MAX_HOSTNAME);
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    match spec.subdomain.as_deref().filter(|d| !d.is_empty()) {
        Some(sub) => s.push_str(&format!(
            "{ip}\t{hostname}.{sub}.{}.svc.{domain}\t{hostname}\n",
            crate::spec::namespace(pod)
        )),
        None => s.push_str(&format!("{ip}\t{hostname}\n")),
    }
    let aliases = spec.host_aliases.iter().flatten().collect::<Vec<_>>();
    if !aliases.is_empty() {
        s.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            s.push_str(&format!(
                "{}\t{}\n",
                a.ip,
                a.hostnames.clone().unwrap_or_default().join("\t")
            ));
        }
    }
    s
}

/// The `/etc/hosts` mount of container `c`, the file written when missing; `None` when the
/// kubelet would not mount one (host network, no pod IP yet, the container mounts its own).
pub fn mount(
    root: &Path,
    uid: &str,
    pod: &Pod,
    c: &Container,
    ip: &str,
    domain: &str,
) -> Result<Option<api::Mount>, String> {
    let spec = crate::spec::spec(pod);
    let own = c
        .volume_mounts
        .iter()
        .flatten()
        .any(|m| m.mount_path.trim_end_matches('/') == "/etc/hosts");
    if spec.host_network.unwrap_or(false) || ip.is_empty() || own {
        return Ok(None);
    }
    let path = crate::volumes::pod_dir(root, uid).join("etc-hosts");
    if !path.exists() {
        std::fs::create_dir_all(crate::volumes::pod_dir(root, uid))
            .and_then(|()| crate::store::write_atomic(&path, content(pod, ip, domain).as_bytes()))
            .map_err(|e| format!("writing {}: {e}", path.display()))?;
    }
    Ok(Some(api::Mount {
        container_path: "/etc/hosts".into(),
        host_path: path.display().to_string(),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_subdomain_and_aliases() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db-0", "namespace": "team"},
            "spec": {"hostname": "db-0", "subdomain": "db", "containers": [],
                     "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar"]}]}
        }))
        .unwrap();
        let s = content(&pod, "10.88.0.5", "cluster.local");
        assert!(s.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(
            s.contains("\n10.88.0.5\tdb-0.db.team.svc.cluster.local\tdb-0\n"),
            "{s}"
        );
        assert!(
            s.ends_with("# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar\n"),
            "{s}"
        );
        let plain: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web"}, "spec": {"containers": []}
        }))
        .unwrap();
        assert!(content(&plain, "10.88.0.6", "cluster.local").ends_with("\n10.88.0.6\tweb\n"));
    }
}
