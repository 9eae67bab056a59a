//! The OCI runtime config of a CRI container: the request merged with its image's config
//! and its pod, the way containerd's CRI plugin does it (its behaviour is what kubelets
//! expect): the command from the request, else the image's entrypoint and cmd; the image's
//! env overridden by the request's; the pod's namespaces joined by path; the pod's hostname,
//! hosts, resolv.conf and /dev/shm; the security context turned into capabilities, user,
//! seccomp, masked and read-only paths; resources into `linux.resources`.

mod capabilities;
mod devices;
mod mounts;
mod namespaces;
mod process;
mod resources;
mod seccomp;
mod user;

pub use process::{allowed_oom_score_adj, command_line, environment};
pub use resources::{linux_resources, resources_only};

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use cri_proto::api;
use oci_spec::runtime::Spec;

use crate::records::SandboxRecord;
use capabilities::{capabilities, spec_caps};
use devices::devices;
use mounts::mounts;
use namespaces::namespaces;
use seccomp::seccomp;
use user::user;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Runtime(#[from] rrun::Error),
}

fn invalid(msg: impl Into<String>) -> SpecError {
    SpecError::Invalid(msg.into())
}

/// Everything a container's config is made from.
pub struct SpecInputs<'a> {
    pub id: &'a str,
    pub sandbox: &'a SandboxRecord,
    pub config: &'a api::ContainerConfig,
    pub image: Option<&'a oci_spec::image::Config>,
    pub image_name: &'a str,
    /// The container's root filesystem, mounted (its /etc/passwd names users).
    pub rootfs: &'a Path,
    /// The pid of the container whose pid namespace a TARGET-mode container joins.
    pub target_pid: Option<i32>,
}

pub fn container_spec(inp: &SpecInputs) -> Result<Spec, SpecError> {
    let cfg = inp.config;
    let linux_cfg = cfg.linux.clone().unwrap_or_default();
    let sec = linux_cfg.security_context.clone().unwrap_or_default();
    let privileged = sec.privileged;

    let mut spec = rrun::spec::default_spec();
    spec.set_hostname(None);

    // --- process ---
    let mut process = spec.process().clone().unwrap_or_default();
    process.set_terminal(Some(cfg.tty));
    process.set_args(Some(command_line(cfg, inp.image)?));
    process.set_env(Some(environment(
        cfg,
        inp.image,
        &pod_hostname(inp.sandbox),
    )));
    let cwd = non_empty(&cfg.working_dir)
        .or_else(|| {
            inp.image
                .and_then(|i| i.working_dir().clone())
                .filter(|w| !w.is_empty())
        })
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(invalid(format!(
            "working_dir {cwd:?} is not an absolute path"
        )));
    }
    process.set_cwd(cwd.into());
    process.set_user(user(&sec, inp.image, inp.rootfs)?);
    process.set_capabilities(Some(capabilities(&sec)?));
    process.set_no_new_privileges(Some(sec.no_new_privs));
    process.set_rlimits(None);
    let resources = linux_cfg.resources.clone().unwrap_or_default();
    if !(-1000..=1000).contains(&resources.oom_score_adj) {
        return Err(invalid(format!(
            "oom_score_adj {} is outside [-1000, 1000]",
            resources.oom_score_adj
        )));
    }
    process.set_oom_score_adj(Some(allowed_oom_score_adj(resources.oom_score_adj)));
    spec.set_process(Some(process));

    // --- root, hostname, mounts ---
    let mut root = spec.root().clone().unwrap_or_default();
    root.set_path(inp.rootfs.to_path_buf());
    root.set_readonly(Some(sec.readonly_rootfs));
    spec.set_root(Some(root));
    let own_uts = inp.sandbox.namespaces.uts.is_some();
    if own_uts {
        spec.set_hostname(Some(pod_hostname(inp.sandbox)));
    }
    spec.set_mounts(Some(mounts(inp, privileged, sec.readonly_rootfs)?));

    // --- linux ---
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_namespaces(Some(namespaces(inp, &sec)?));
    linux.set_resources(Some(linux_resources(&resources, cfg, privileged)?));
    linux.set_devices(Some(devices(cfg)?));
    if privileged {
        linux.set_masked_paths(Some(vec![]));
        linux.set_readonly_paths(Some(vec![]));
    } else {
        if !sec.masked_paths.is_empty() {
            linux.set_masked_paths(Some(sec.masked_paths.clone()));
        }
        if !sec.readonly_paths.is_empty() {
            linux.set_readonly_paths(Some(sec.readonly_paths.clone()));
        }
    }
    let sysctls: HashMap<String, String> = inp
        .sandbox
        .config
        .linux
        .as_ref()
        .map(|l| l.sysctls.clone().into_iter().collect())
        .unwrap_or_default();
    linux.set_sysctl((!sysctls.is_empty()).then_some(sysctls));
    linux.set_seccomp(seccomp(&sec, spec_caps(&spec))?);
    linux.set_cgroups_path(Some(PathBuf::from(format!(
        "{}/{}",
        inp.sandbox.cgroup_parent.trim_end_matches('/'),
        inp.id
    ))));
    spec.set_linux(Some(linux));

    // --- annotations: the request's, and the ones containerd adds ---
    let mut annotations: HashMap<String, String> = cfg.annotations.clone().into_iter().collect();
    let meta = inp.sandbox.config.metadata.clone().unwrap_or_default();
    for (k, v) in [
        ("io.kubernetes.cri.container-type", "container".to_string()),
        (
            "io.kubernetes.cri.container-name",
            cfg.metadata
                .as_ref()
                .map(|m| m.name.clone())
                .unwrap_or_default(),
        ),
        ("io.kubernetes.cri.sandbox-id", inp.sandbox.id.clone()),
        ("io.kubernetes.cri.sandbox-name", meta.name),
        ("io.kubernetes.cri.sandbox-namespace", meta.namespace),
        ("io.kubernetes.cri.sandbox-uid", meta.uid),
        ("io.kubernetes.cri.image-name", inp.image_name.to_string()),
    ] {
        annotations.insert(k.to_string(), v);
    }
    spec.set_annotations(Some(annotations));
    Ok(spec)
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn pod_hostname(sandbox: &SandboxRecord) -> String {
    fs::read_to_string(sandbox.dir.join("hostname"))
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
