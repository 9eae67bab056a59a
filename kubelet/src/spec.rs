//! A pod spec into the CRI's sandbox and container configs, with the labels and annotations
//! the kubelet sets, so that everything can be rebuilt from the CRI after a restart.

use std::collections::HashMap;
use std::path::Path;

use cri_proto::api;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

use crate::resources::{self, Qos};

pub const POD_NAME: &str = "io.kubernetes.pod.name";
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
pub const POD_UID: &str = "io.kubernetes.pod.uid";
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
pub const GRACE: &str = "io.kubernetes.pod.terminationGracePeriod";

/// NamespaceMode values of the CRI.
const NS_POD: i32 = 0;
const NS_CONTAINER: i32 = 1;
const NS_NODE: i32 = 2;

pub fn spec(pod: &Pod) -> &PodSpec {
    static EMPTY: std::sync::OnceLock<PodSpec> = std::sync::OnceLock::new();
    pod.spec
        .as_ref()
        .unwrap_or_else(|| EMPTY.get_or_init(PodSpec::default))
}

pub fn name(pod: &Pod) -> &str {
    pod.metadata.name.as_deref().unwrap_or("")
}

pub fn namespace(pod: &Pod) -> &str {
    pod.metadata.namespace.as_deref().unwrap_or("default")
}

/// `<pod logs dir>/<namespace>_<name>_<uid>`, as the kubelet lays them out.
pub fn log_dir(logs_root: &Path, pod: &Pod, uid: &str) -> String {
    logs_root
        .join(format!("{}_{}_{uid}", namespace(pod), name(pod)))
        .display()
        .to_string()
}

pub fn grace_seconds(pod: &Pod) -> i64 {
    spec(pod)
        .termination_grace_period_seconds
        .unwrap_or(30)
        .max(0)
}

fn pod_labels(pod: &Pod, uid: &str) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    l.insert(POD_NAME.into(), name(pod).into());
    l.insert(POD_NAMESPACE.into(), namespace(pod).into());
    l.insert(POD_UID.into(), uid.into());
    l
}

fn namespaces(spec: &PodSpec) -> api::NamespaceOption {
    let node = |b: Option<bool>| b.unwrap_or(false);
    api::NamespaceOption {
        network: if node(spec.host_network) {
            NS_NODE
        } else {
            NS_POD
        },
        pid: if node(spec.host_pid) {
            NS_NODE
        } else if node(spec.share_process_namespace) {
            NS_POD
        } else {
            NS_CONTAINER
        },
        ipc: if node(spec.host_ipc) { NS_NODE } else { NS_POD },
        ..Default::default()
    }
}

/// The sandbox config of attempt `attempt` of the pod.
pub fn sandbox_config(
    pod: &Pod,
    uid: &str,
    attempt: u32,
    logs_root: &Path,
    cgroup_root: &str,
    dns: &crate::dns::Settings,
) -> api::PodSandboxConfig {
    let s = spec(pod);
    let host_net = s.host_network.unwrap_or(false);
    let hostname = if host_net {
        String::new()
    } else {
        s.hostname.clone().unwrap_or_else(|| name(pod).to_string())
    };
    let psc = s.security_context.clone().unwrap_or_default();
    let mut annotations: HashMap<String, String> = pod
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    annotations.insert("kubernetes.io/config.source".into(), "file".into());
    annotations.insert("kubernetes.io/config.hash".into(), uid.into());
    let sysctls = psc
        .sysctls
        .iter()
        .flatten()
        .map(|s| (s.name.clone(), s.value.clone()))
        .collect();
    let qos = resources::qos(s);
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name(pod).into(),
            uid: uid.into(),
            namespace: namespace(pod).into(),
            attempt,
        }),
        hostname,
        log_directory: log_dir(logs_root, pod, uid),
        dns_config: Some(crate::dns::resolv::pod_dns(s, namespace(pod), dns)),
        labels: pod_labels(pod, uid),
        annotations,
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: resources::pod_cgroup(cgroup_root, qos, uid),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces(s)),
                run_as_user: psc.run_as_user.map(|value| api::Int64Value { value }),
                run_as_group: psc.run_as_group.map(|value| api::Int64Value { value }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The container config of attempt `attempt` (= the restart count).
#[allow(clippy::too_many_arguments)]
pub fn container_config(
    pod: &Pod,
    c: &Container,
    uid: &str,
    attempt: u32,
    image_ref: &str,
    facts: &crate::env::Facts,
    memory_capacity: i64,
    mounts: Vec<api::Mount>,
) -> Result<api::ContainerConfig, String> {
    let s = spec(pod);
    let env = crate::env::container_env(pod, c, facts)?;
    let map: HashMap<String, String> = env.iter().cloned().collect();
    let expand = |a: &String| crate::env::expand(a, |n| map.get(n).cloned());
    let qos = resources::qos(s);
    let amounts = resources::amounts(c)?;
    let psc = s.security_context.clone().unwrap_or_default();
    let sc = c.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged.unwrap_or(false);
    let caps = sc.capabilities.clone().unwrap_or_default();
    let mut labels = HashMap::new();
    labels.insert(POD_NAME.to_string(), name(pod).to_string());
    labels.insert(POD_NAMESPACE.to_string(), namespace(pod).to_string());
    labels.insert(POD_UID.to_string(), uid.to_string());
    labels.insert(CONTAINER_NAME.to_string(), c.name.clone());
    let mut annotations = HashMap::new();
    annotations.insert(RESTART_COUNT.to_string(), attempt.to_string());
    annotations.insert(GRACE.to_string(), grace_seconds(pod).to_string());
    annotations.insert(
        "io.kubernetes.container.terminationMessagePath".to_string(),
        c.termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into()),
    );
    Ok(api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: c.name.clone(),
            attempt,
        }),
        image: Some(api::ImageSpec {
            image: image_ref.to_string(),
            user_specified_image: c.image.clone().unwrap_or_default(),
            ..Default::default()
        }),
        command: c.command.iter().flatten().map(expand).collect(),
        args: c.args.iter().flatten().map(expand).collect(),
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env
            .into_iter()
            .map(|(key, value)| api::KeyValue { key, value })
            .collect(),
        mounts,
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        labels,
        annotations,
        linux: Some(api::LinuxContainerConfig {
            resources: Some(resources::linux_resources(&amounts, qos, memory_capacity)),
            security_context: Some(api::LinuxContainerSecurityContext {
                capabilities: Some(api::Capability {
                    add_capabilities: caps.add.unwrap_or_default(),
                    drop_capabilities: caps.drop.unwrap_or_default(),
                    ..Default::default()
                }),
                privileged,
                namespace_options: Some(namespaces(s)),
                run_as_user: sc
                    .run_as_user
                    .or(psc.run_as_user)
                    .map(|value| api::Int64Value { value }),
                run_as_group: sc
                    .run_as_group
                    .or(psc.run_as_group)
                    .map(|value| api::Int64Value { value }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                readonly_rootfs: sc.read_only_root_filesystem.unwrap_or(false),
                no_new_privs: !sc.allow_privilege_escalation.unwrap_or(true) && !privileged,
                ..Default::default()
            }),
        }),
        ..Default::default()
    })
}

/// Which kind a container of the pod is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Init,
    Sidecar,
    App,
}

pub fn kind_of(c: &Container, is_init: bool) -> Kind {
    match (is_init, c.restart_policy.as_deref()) {
        (true, Some("Always")) => Kind::Sidecar,
        (true, _) => Kind::Init,
        (false, _) => Kind::App,
    }
}

pub fn qos(pod: &Pod) -> Qos {
    resources::qos(spec(pod))
}
