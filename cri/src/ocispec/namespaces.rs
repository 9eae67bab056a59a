//! The container's namespaces: its own mount (and cgroup, on v2) namespace, the pod's
//! network, IPC and UTS namespaces joined by path, and the pid namespace of its mode.

use std::path::PathBuf;

use cri_proto::api;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use super::{invalid, SpecError, SpecInputs};

fn ns(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ).set_path(path);
    n
}

pub(super) fn namespaces(
    inp: &SpecInputs,
    sec: &api::LinuxContainerSecurityContext,
) -> Result<Vec<LinuxNamespace>, SpecError> {
    let mut out = vec![ns(LinuxNamespaceType::Mount, None)];
    let pinned = &inp.sandbox.namespaces;
    if let Some(p) = &pinned.net {
        out.push(ns(LinuxNamespaceType::Network, Some(p.clone())));
    }
    if let Some(p) = &pinned.ipc {
        out.push(ns(LinuxNamespaceType::Ipc, Some(p.clone())));
    }
    if let Some(p) = &pinned.uts {
        out.push(ns(LinuxNamespaceType::Uts, Some(p.clone())));
    }
    let opts = sec.namespace_options.clone().unwrap_or_default();
    match api::NamespaceMode::try_from(opts.pid) {
        Ok(api::NamespaceMode::Container) => out.push(ns(LinuxNamespaceType::Pid, None)),
        Ok(api::NamespaceMode::Node) => {}
        Ok(api::NamespaceMode::Target) => {
            let pid = inp.target_pid.ok_or_else(|| {
                invalid(format!(
                    "pid namespace TARGET {:?}: no such running container",
                    opts.target_id
                ))
            })?;
            out.push(ns(
                LinuxNamespaceType::Pid,
                Some(PathBuf::from(format!("/proc/{pid}/ns/pid"))),
            ));
        }
        Ok(api::NamespaceMode::Pod) => {
            let path = pinned.pid.clone().ok_or_else(|| {
                invalid(
                    "pid namespace POD: the pod sandbox was not created with a pod-wide pid \
                     namespace (its namespace_options.pid is not POD)",
                )
            })?;
            out.push(ns(LinuxNamespaceType::Pid, Some(path)));
        }
        Err(_) => return Err(invalid(format!("unknown pid namespace mode {}", opts.pid))),
    }
    if rrun::pod_cgroup::is_unified() {
        out.push(ns(LinuxNamespaceType::Cgroup, None));
    }
    if opts
        .userns_options
        .as_ref()
        .is_some_and(|u| u.mode != api::NamespaceMode::Node as i32)
    {
        return Err(SpecError::Unsupported(
            "user namespaces for pods are not supported yet".into(),
        ));
    }
    Ok(out)
}
