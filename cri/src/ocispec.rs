//! The OCI runtime config of a CRI container: the request merged with its image's config
//! and its pod, the way containerd's CRI plugin does it (its behaviour is what kubelets
//! expect): the command from the request, else the image's entrypoint and cmd; the image's
//! env overridden by the request's; the pod's namespaces joined by path; the pod's hostname,
//! hosts, resolv.conf and /dev/shm; the security context turned into capabilities, user,
//! seccomp, masked and read-only paths; resources into `linux.resources`.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use cri_proto::api;
use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxCpu, LinuxDevice, LinuxDeviceCgroup, LinuxDeviceType,
    LinuxHugepageLimit, LinuxMemory, LinuxNamespace, LinuxNamespaceType, LinuxResources, Mount,
    Spec, User,
};

use crate::records::SandboxRecord;

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

/// Kubernetes' rule: `command` replaces the image's entrypoint and drops its cmd; without a
/// command, the image's entrypoint runs with `args`, else with the image's cmd.
pub fn command_line(
    cfg: &api::ContainerConfig,
    image: Option<&oci_spec::image::Config>,
) -> Result<Vec<String>, SpecError> {
    let mut argv = cfg.command.clone();
    let mut args = cfg.args.clone();
    if argv.is_empty() {
        if args.is_empty() {
            args = image.and_then(|i| i.cmd().clone()).unwrap_or_default();
        }
        argv = image
            .and_then(|i| i.entrypoint().clone())
            .unwrap_or_default();
    }
    argv.extend(args);
    if argv.is_empty() {
        return Err(invalid(
            "no command specified: the request has no command or args and the image no entrypoint or cmd",
        ));
    }
    Ok(argv)
}

/// The image's env, then HOSTNAME, then the request's envs, a later value replacing an
/// earlier one of the same name (in place, so the order stays the image's).
pub fn environment(
    cfg: &api::ContainerConfig,
    image: Option<&oci_spec::image::Config>,
    hostname: &str,
) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        match env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(key.as_str()))
        {
            Some(slot) => *slot = kv,
            None => env.push(kv),
        }
    };
    let image_env = image.and_then(|i| i.env().clone()).unwrap_or_default();
    if !image_env.iter().any(|e| e.starts_with("PATH=")) {
        set("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    for kv in image_env {
        set(kv);
    }
    if !hostname.is_empty() {
        set(format!("HOSTNAME={hostname}"));
    }
    for kv in &cfg.envs {
        set(format!("{}={}", kv.key, kv.value));
    }
    env
}

/// uid and gid from the security context, else from the image's `User` (`uid[:gid]` or
/// names looked up in the rootfs's /etc/passwd and /etc/group), and the supplementary groups.
fn user(
    sec: &api::LinuxContainerSecurityContext,
    image: Option<&oci_spec::image::Config>,
    rootfs: &Path,
) -> Result<User, SpecError> {
    let passwd = read_in_rootfs(rootfs, "etc/passwd");
    let group = read_in_rootfs(rootfs, "etc/group");
    let (uid, mut gid, name) = if let Some(u) = &sec.run_as_user {
        let uid = u32::try_from(u.value)
            .map_err(|_| invalid(format!("run_as_user {} is not a valid uid", u.value)))?;
        let entry = passwd_by_uid(&passwd, uid);
        (
            uid,
            entry.as_ref().map(|e| e.1).unwrap_or(0),
            entry.map(|e| e.0),
        )
    } else if !sec.run_as_username.is_empty() {
        let (uid, gid) = passwd_by_name(&passwd, &sec.run_as_username).ok_or_else(|| {
            invalid(format!(
                "run_as_username {:?}: no such user in the image's /etc/passwd",
                sec.run_as_username
            ))
        })?;
        (uid, gid, Some(sec.run_as_username.clone()))
    } else {
        let spec = image.and_then(|i| i.user().clone()).unwrap_or_default();
        image_user(&spec, &passwd, &group)?
    };
    if let Some(g) = &sec.run_as_group {
        gid = u32::try_from(g.value)
            .map_err(|_| invalid(format!("run_as_group {} is not a valid gid", g.value)))?;
    }
    let mut additional: Vec<u32> = name
        .map(|n| groups_of_member(&group, &n))
        .unwrap_or_default();
    for g in &sec.supplemental_groups {
        let g = u32::try_from(*g)
            .map_err(|_| invalid(format!("supplemental group {g} is not a valid gid")))?;
        additional.push(g);
    }
    additional.retain(|g| *g != gid);
    additional.sort_unstable();
    additional.dedup();
    let mut user = User::default();
    user.set_uid(uid).set_gid(gid);
    user.set_additional_gids((!additional.is_empty()).then_some(additional));
    Ok(user)
}

/// Parses the image config's `User`: `""`, `uid`, `name`, `uid:gid`, `name:group`.
fn image_user(
    spec: &str,
    passwd: &str,
    group: &str,
) -> Result<(u32, u32, Option<String>), SpecError> {
    if spec.is_empty() {
        return Ok((0, 0, Some("root".into())));
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, pw_gid, name) = match u.parse::<u32>() {
        Ok(uid) => {
            let e = passwd_by_uid(passwd, uid);
            (uid, e.as_ref().map(|e| e.1).unwrap_or(0), e.map(|e| e.0))
        }
        Err(_) => {
            let (uid, gid) = passwd_by_name(passwd, u).ok_or_else(|| {
                invalid(format!(
                    "image user {u:?}: no such user in the image's /etc/passwd"
                ))
            })?;
            (uid, gid, Some(u.to_string()))
        }
    };
    let gid = match g {
        None => pw_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_by_name(group, g).ok_or_else(|| {
                invalid(format!(
                    "image group {g:?}: no such group in the image's /etc/group"
                ))
            })?,
        },
    };
    Ok((uid, gid, name))
}

fn passwd_by_uid(passwd: &str, uid: u32) -> Option<(String, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse() == Ok(uid))
            .then(|| (f[0].to_string(), f[3].parse().unwrap_or(0)))
    })
}

fn passwd_by_name(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn group_by_name(group: &str, name: &str) -> Option<u32> {
    group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

fn groups_of_member(group: &str, user: &str) -> Vec<u32> {
    group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[3].split(',').any(|m| m == user))
                .then(|| f[2].parse().ok())
                .flatten()
        })
        .collect()
}

/// Reads a file of the image by a path resolved inside the rootfs (an image's /etc/passwd
/// may be a symlink to anywhere: it must not name a host file).
fn read_in_rootfs(rootfs: &Path, rel: &str) -> String {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::io::Read;
    let Ok(root) = fs::File::open(rootfs) else {
        return String::new();
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let Ok(fd) = openat2(&root, rel, how) else {
        return String::new();
    };
    let mut f = fs::File::from(fd);
    let mut out = String::new();
    // A passwd file of more than 1 MiB is no one's; reading stops there.
    let _ = (&mut f).take(1 << 20).read_to_string(&mut out);
    out
}

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

fn capabilities(sec: &api::LinuxContainerSecurityContext) -> Result<LinuxCapabilities, SpecError> {
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

fn spec_caps(spec: &Spec) -> Vec<String> {
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

/// What the kubelet asks for, unless it is below this process's own score and this process
/// may not lower scores (no CAP_SYS_RESOURCE, as on this project's machine): then this
/// process's own score, as containerd's `restrict_oom_score_adj` does.
pub fn allowed_oom_score_adj(requested: i64) -> i32 {
    let requested = requested.clamp(-1000, 1000) as i32; // checked by the caller
    let own = fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    let may_lower = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false)
        && caps::has_cap(
            None,
            caps::CapSet::Bounding,
            caps::Capability::CAP_SYS_RESOURCE,
        )
        .unwrap_or(false);
    if requested < own && !may_lower {
        own
    } else {
        requested
    }
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(dest.into())
        .set_typ(Some(typ.into()))
        .set_source(Some(source.into()))
        .set_options(Some(options.iter().map(|s| s.to_string()).collect()));
    m
}

fn bind(dest: &str, source: &Path, readonly: bool, propagation: &str) -> Mount {
    let mut opts = vec!["rbind", propagation];
    if readonly {
        opts.push("ro");
    }
    let mut m = mount(dest, "bind", &source.to_string_lossy(), &opts);
    m.set_source(Some(source.to_path_buf()));
    m
}

fn mounts(
    inp: &SpecInputs,
    privileged: bool,
    readonly_rootfs: bool,
) -> Result<Vec<Mount>, SpecError> {
    let sys_ro = if privileged { "rw" } else { "ro" };
    let mut out = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_ro],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_ro],
        ),
    ];
    match &inp.sandbox.shm {
        Some(shm) => out.push(bind("/dev/shm", shm, false, "rprivate")),
        None if inp.sandbox.namespaces.ipc.is_none() => {
            out.push(bind("/dev/shm", Path::new("/dev/shm"), false, "rprivate"))
        }
        None => out.push(mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )),
    }
    for (dest, file) in [
        ("/etc/hostname", "hostname"),
        ("/etc/hosts", "hosts"),
        ("/etc/resolv.conf", "resolv.conf"),
    ] {
        out.push(bind(
            dest,
            &inp.sandbox.dir.join(file),
            readonly_rootfs,
            "rprivate",
        ));
    }
    for m in &inp.config.mounts {
        if !m.container_path.starts_with('/') {
            return Err(invalid(format!(
                "mount container_path {:?} is not an absolute path",
                m.container_path
            )));
        }
        if !m.host_path.starts_with('/') {
            return Err(invalid(format!(
                "mount host_path {:?} is not an absolute path",
                m.host_path
            )));
        }
        let host = Path::new(&m.host_path);
        if !host.exists() {
            // containerd makes a missing host path as a directory.
            fs::create_dir_all(host)
                .map_err(|e| invalid(format!("mount host_path {}: {e}", host.display())))?;
        }
        let propagation = match api::MountPropagation::try_from(m.propagation) {
            Ok(api::MountPropagation::PropagationPrivate) => "rprivate",
            Ok(api::MountPropagation::PropagationHostToContainer) => "rslave",
            Ok(api::MountPropagation::PropagationBidirectional) => "rshared",
            Err(_) => {
                return Err(invalid(format!(
                    "unknown mount propagation {}",
                    m.propagation
                )))
            }
        };
        // A mount of the request replaces ours at the same place (kubelet manages /etc/hosts
        // itself for most pods).
        let dest = m.container_path.trim_end_matches('/');
        out.retain(|x| x.destination() != Path::new(dest));
        out.push(bind(dest, host, m.readonly, propagation));
    }
    Ok(out)
}

fn ns(typ: LinuxNamespaceType, path: Option<PathBuf>) -> LinuxNamespace {
    let mut n = LinuxNamespace::default();
    n.set_typ(typ).set_path(path);
    n
}

fn namespaces(
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

/// The CRI resources as OCI `linux.resources`, with the default device rules (deny all,
/// then what the request's devices need; rrun adds the standard devices after).
pub fn linux_resources(
    r: &api::LinuxContainerResources,
    cfg: &api::ContainerConfig,
    privileged: bool,
) -> Result<LinuxResources, SpecError> {
    let mut out = resources_only(r)?;
    let mut rules = vec![device_rule(false, None, None, None, "rwm")];
    if privileged {
        rules.push(device_rule(true, None, None, None, "rwm"));
    }
    for d in &cfg.devices {
        let (typ, major, minor) = host_device(&d.host_path)?;
        let perms = if d.permissions.is_empty() {
            "rwm"
        } else {
            &d.permissions
        };
        rules.push(device_rule(
            true,
            Some(typ),
            Some(major),
            Some(minor),
            perms,
        ));
    }
    out.set_devices(Some(rules));
    Ok(out)
}

/// The parts of `linux.resources` UpdateContainerResources may change.
pub fn resources_only(r: &api::LinuxContainerResources) -> Result<LinuxResources, SpecError> {
    for (name, v) in [
        ("cpu_period", r.cpu_period),
        ("cpu_quota", r.cpu_quota),
        ("cpu_shares", r.cpu_shares),
        ("memory_limit_in_bytes", r.memory_limit_in_bytes),
        ("memory_swap_limit_in_bytes", r.memory_swap_limit_in_bytes),
    ] {
        // -1 means "unlimited" for the quota and swap, as in the kernel's files.
        if v < -1 || (v == -1 && !matches!(name, "cpu_quota" | "memory_swap_limit_in_bytes")) {
            return Err(invalid(format!("{name} {v} is negative")));
        }
    }
    let mut out = LinuxResources::default();
    let mut cpu = LinuxCpu::default();
    let mut any_cpu = false;
    if r.cpu_shares > 0 {
        cpu.set_shares(Some(r.cpu_shares as u64));
        any_cpu = true;
    }
    if r.cpu_quota != 0 {
        cpu.set_quota(Some(r.cpu_quota));
        any_cpu = true;
    }
    if r.cpu_period > 0 {
        cpu.set_period(Some(r.cpu_period as u64));
        any_cpu = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
        any_cpu = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu.set_mems(Some(r.cpuset_mems.clone()));
        any_cpu = true;
    }
    if any_cpu {
        out.set_cpu(Some(cpu));
    }
    if r.memory_limit_in_bytes > 0 || r.memory_swap_limit_in_bytes != 0 {
        let mut mem = LinuxMemory::default();
        if r.memory_limit_in_bytes > 0 {
            mem.set_limit(Some(r.memory_limit_in_bytes));
        }
        if r.memory_swap_limit_in_bytes != 0 {
            mem.set_swap(Some(r.memory_swap_limit_in_bytes));
        }
        out.set_memory(Some(mem));
    }
    if !r.hugepage_limits.is_empty() {
        let limits = r
            .hugepage_limits
            .iter()
            .map(|h| {
                let mut l = LinuxHugepageLimit::default();
                l.set_page_size(h.page_size.clone())
                    .set_limit(h.limit as i64);
                l
            })
            .collect();
        out.set_hugepage_limits(Some(limits));
    }
    if !r.unified.is_empty() {
        out.set_unified(Some(r.unified.clone().into_iter().collect()));
    }
    Ok(out)
}

fn device_rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut d = LinuxDeviceCgroup::default();
    d.set_allow(allow)
        .set_typ(typ.or(Some(LinuxDeviceType::A)))
        .set_major(major)
        .set_minor(minor)
        .set_access(Some(access.to_string()));
    d
}

fn host_device(path: &str) -> Result<(LinuxDeviceType, i64, i64), SpecError> {
    let meta = fs::metadata(path).map_err(|e| invalid(format!("device {path}: {e}")))?;
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return Err(invalid(format!("device {path} is not a device node")));
    };
    let rdev = meta.rdev();
    Ok((
        typ,
        nix::sys::stat::major(rdev) as i64,
        nix::sys::stat::minor(rdev) as i64,
    ))
}

fn devices(cfg: &api::ContainerConfig) -> Result<Vec<LinuxDevice>, SpecError> {
    let mut out = Vec::new();
    for d in &cfg.devices {
        let (typ, major, minor) = host_device(&d.host_path)?;
        let meta = fs::metadata(&d.host_path)
            .map_err(|e| invalid(format!("device {}: {e}", d.host_path)))?;
        if !d.container_path.starts_with('/') {
            return Err(invalid(format!(
                "device container_path {:?} is not an absolute path",
                d.container_path
            )));
        }
        let mut dev = LinuxDevice::default();
        dev.set_path(PathBuf::from(&d.container_path))
            .set_typ(typ)
            .set_major(major)
            .set_minor(minor)
            .set_file_mode(Some(meta.mode() & 0o777))
            .set_uid(Some(meta.uid()))
            .set_gid(Some(meta.gid()));
        out.push(dev);
    }
    Ok(out)
}

fn seccomp(
    sec: &api::LinuxContainerSecurityContext,
    caps: Vec<String>,
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, SpecError> {
    if sec.privileged {
        return Ok(None);
    }
    enum Profile {
        Unconfined,
        RuntimeDefault,
        Localhost(String),
    }
    let profile = match &sec.seccomp {
        Some(p) => match api::security_profile::ProfileType::try_from(p.profile_type) {
            Ok(api::security_profile::ProfileType::RuntimeDefault) => Profile::RuntimeDefault,
            Ok(api::security_profile::ProfileType::Unconfined) => Profile::Unconfined,
            Ok(api::security_profile::ProfileType::Localhost) => {
                Profile::Localhost(p.localhost_ref.clone())
            }
            Err(_) => {
                return Err(invalid(format!(
                    "unknown seccomp profile type {}",
                    p.profile_type
                )))
            }
        },
        // Older kubelets (before 1.25) still send the deprecated path form.
        #[allow(deprecated)]
        None => match sec.seccomp_profile_path.as_str() {
            "" | "unconfined" => Profile::Unconfined,
            "runtime/default" | "docker/default" => Profile::RuntimeDefault,
            other => match other.strip_prefix("localhost/") {
                Some(path) => Profile::Localhost(path.to_string()),
                None => return Err(invalid(format!("unknown seccomp profile {other:?}"))),
            },
        },
    };
    match profile {
        Profile::Unconfined => Ok(None),
        Profile::RuntimeDefault => crate::seccomp_profile::runtime_default(&caps)
            .map(Some)
            .map_err(|e| {
                SpecError::Unsupported(format!("the RuntimeDefault seccomp profile: {e}"))
            }),
        Profile::Localhost(path) => {
            if !path.starts_with('/') {
                return Err(invalid(format!(
                    "seccomp localhost profile {path:?} is not an absolute path"
                )));
            }
            let data = fs::read(&path)
                .map_err(|e| invalid(format!("seccomp localhost profile {path}: {e}")))?;
            let profile: oci_spec::runtime::LinuxSeccomp = serde_json::from_slice(&data)
                .map_err(|e| invalid(format!("seccomp localhost profile {path}: {e}")))?;
            Ok(Some(profile))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entry: &[&str], cmd: &[&str]) -> oci_spec::image::Config {
        let mut c = oci_spec::image::Config::default();
        c.set_entrypoint(Some(entry.iter().map(|s| s.to_string()).collect()));
        c.set_cmd(Some(cmd.iter().map(|s| s.to_string()).collect()));
        c.set_env(Some(vec![
            "PATH=/bin".into(),
            "A=image".into(),
            "B=image".into(),
        ]));
        c
    }

    fn cfg(command: &[&str], args: &[&str]) -> api::ContainerConfig {
        api::ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn command_follows_kubernetes_rules() {
        let img = image(&["/entry"], &["default"]);
        assert_eq!(
            command_line(&cfg(&[], &[]), Some(&img)).unwrap(),
            ["/entry", "default"]
        );
        assert_eq!(
            command_line(&cfg(&[], &["x"]), Some(&img)).unwrap(),
            ["/entry", "x"]
        );
        assert_eq!(
            command_line(&cfg(&["sh"], &[]), Some(&img)).unwrap(),
            ["sh"]
        );
        assert_eq!(
            command_line(&cfg(&["sh"], &["-c", "y"]), Some(&img)).unwrap(),
            ["sh", "-c", "y"]
        );
        assert!(command_line(&cfg(&[], &[]), None).is_err());
    }

    #[test]
    fn request_env_overrides_image_env_in_place() {
        let img = image(&[], &["sh"]);
        let mut c = cfg(&[], &[]);
        c.envs = vec![
            api::KeyValue {
                key: "B".into(),
                value: "request".into(),
            },
            api::KeyValue {
                key: "C".into(),
                value: "new".into(),
            },
        ];
        assert_eq!(
            environment(&c, Some(&img), "pod"),
            ["PATH=/bin", "A=image", "B=request", "HOSTNAME=pod", "C=new"]
        );
    }

    #[test]
    fn image_user_forms() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
        let group = "root:x:0:\napp:x:1001:\nextra:x:2000:app\n";
        assert_eq!(
            image_user("", passwd, group).unwrap(),
            (0, 0, Some("root".into()))
        );
        assert_eq!(
            image_user("1000", passwd, group).unwrap(),
            (1000, 1001, Some("app".into()))
        );
        assert_eq!(
            image_user("app:extra", passwd, group).unwrap(),
            (1000, 2000, Some("app".into()))
        );
        assert_eq!(image_user("42:43", passwd, group).unwrap(), (42, 43, None));
        assert!(image_user("nobody-here", passwd, group).is_err());
        assert_eq!(groups_of_member(group, "app"), vec![2000]);
    }

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

    #[test]
    fn negative_resources_are_refused() {
        let r = api::LinuxContainerResources {
            memory_limit_in_bytes: -5,
            ..Default::default()
        };
        assert!(matches!(resources_only(&r), Err(SpecError::Invalid(_))));
        let r = api::LinuxContainerResources {
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        };
        let out = resources_only(&r).unwrap();
        assert_eq!(out.memory().as_ref().unwrap().limit(), Some(32 << 20));
        assert_eq!(out.cpu().as_ref().unwrap().quota(), Some(50_000));
    }
}
