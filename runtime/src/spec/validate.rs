//! The rules a configuration must keep, checked before anything touches the kernel.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use oci_spec::runtime::{
    Hook, Linux, LinuxNamespace, LinuxNamespaceType, Mount, PosixRlimit, Process, Spec,
};

use super::{invalid, rootfs_path, SpecError};

/// Checks a whole configuration for `create`/`run`. The first broken rule is returned.
pub fn validate(spec: &Spec, bundle: &Path) -> Result<(), SpecError> {
    check_oci_version(spec.version())?;
    check_root(spec, bundle)?;
    match spec.process() {
        Some(process) => validate_process(process)?,
        None => return Err(invalid("process", "missing: there is nothing to run")),
    }
    check_annotations(spec)?;
    check_hooks(spec)?;
    check_mounts(spec)?;
    check_linux(spec)?;
    Ok(())
}

/// Checks a process on its own: the `process` of a config, or the `--process` file of `exec`.
pub fn validate_process(process: &Process) -> Result<(), SpecError> {
    let args = process.args().as_deref().unwrap_or_default();
    if args.is_empty() {
        return Err(invalid("process.args", "empty: there is no program to run"));
    }
    if args[0].is_empty() {
        return Err(invalid("process.args[0]", "empty program name"));
    }
    for (i, arg) in args.iter().enumerate() {
        if arg.contains('\0') {
            return Err(invalid(format!("process.args[{i}]"), "contains a NUL byte"));
        }
    }
    let cwd = process.cwd();
    if !cwd.is_absolute() {
        return Err(invalid(
            "process.cwd",
            format!("{cwd:?} is not an absolute path"),
        ));
    }
    for (i, kv) in process
        .env()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let field = || format!("process.env[{i}]");
        match kv.split_once('=') {
            None => return Err(invalid(field(), format!("{kv:?} has no '='"))),
            Some(("", _)) => return Err(invalid(field(), format!("{kv:?} has an empty name"))),
            Some(_) if kv.contains('\0') => return Err(invalid(field(), "contains a NUL byte")),
            Some(_) => {}
        }
    }
    check_rlimits(process.rlimits().as_deref().unwrap_or_default())?;
    if let Some(adj) = process.oom_score_adj() {
        if !(-1000..=1000).contains(&adj) {
            return Err(invalid(
                "process.oomScoreAdj",
                format!("{adj} is outside -1000..=1000"),
            ));
        }
    }
    if let Some(prio) = process.io_priority() {
        if !(0..=7).contains(&prio.priority()) {
            return Err(invalid(
                "process.ioPriority.priority",
                format!("{} is outside 0..=7", prio.priority()),
            ));
        }
    }
    if let Some(umask) = process.user().umask() {
        if umask > 0o777 {
            return Err(invalid(
                "process.user.umask",
                format!("{umask:#o} has bits outside 0o777"),
            ));
        }
    }
    // Capability names need no check here: oci-spec refuses unknown names while parsing.
    Ok(())
}

fn check_rlimits(rlimits: &[PosixRlimit]) -> Result<(), SpecError> {
    for (i, rl) in rlimits.iter().enumerate() {
        // Display is the JSON name (RLIMIT_NOFILE).
        let name = rl.typ().to_string();
        if let Some(prev) = rlimits[..i].iter().position(|r| r.typ() == rl.typ()) {
            return Err(invalid(
                format!("process.rlimits[{i}]"),
                format!("{name} is already set at process.rlimits[{prev}]"),
            ));
        }
        if rl.soft() > rl.hard() {
            return Err(invalid(
                format!("process.rlimits[{i}]"),
                format!(
                    "{name}: soft limit {} is above hard limit {}",
                    rl.soft(),
                    rl.hard()
                ),
            ));
        }
    }
    Ok(())
}

/// `ociVersion` must be SemVer 2.0.0 with major version 1 (runtime-spec is compatible within a
/// major version, so a 1.x config from a newer spec still runs; unknown fields are ignored).
pub(super) fn check_oci_version(version: &str) -> Result<(), SpecError> {
    const FIELD: &str = "ociVersion";
    if version.is_empty() {
        return Err(invalid(
            FIELD,
            format!(
                "missing (the runtime-spec version of the bundle, e.g. {:?})",
                crate::OCI_VERSION
            ),
        ));
    }
    let bad = |why: &str| invalid(FIELD, format!("{version:?} is not a SemVer version: {why}"));
    let (rest, build) = match version.split_once('+') {
        Some((rest, build)) => (rest, Some(build)),
        None => (version, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() != 3 {
        return Err(bad("expected MAJOR.MINOR.PATCH"));
    }
    let mut numbers = [0u64; 3];
    for (n, part) in numbers.iter_mut().zip(&parts) {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("MAJOR, MINOR and PATCH must be numbers"));
        }
        if part.len() > 1 && part.starts_with('0') {
            return Err(bad("numbers must not have leading zeros"));
        }
        *n = part.parse().map_err(|_| bad("number too large"))?;
    }
    for (what, ids) in [("pre-release", pre), ("build metadata", build)] {
        if let Some(ids) = ids {
            let ok = ids.split('.').all(|id| {
                !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
            if !ok {
                return Err(bad(&format!("malformed {what}")));
            }
        }
    }
    if numbers[0] != 1 {
        return Err(invalid(
            FIELD,
            format!(
                "{version:?}: major version {} is not supported (rrun implements runtime-spec {})",
                numbers[0],
                crate::OCI_VERSION
            ),
        ));
    }
    Ok(())
}

fn check_root(spec: &Spec, bundle: &Path) -> Result<(), SpecError> {
    let Some(root) = spec.root() else {
        return Err(invalid(
            "root",
            "missing: the container needs a root filesystem",
        ));
    };
    if root.path().as_os_str().is_empty() {
        return Err(invalid("root.path", "empty"));
    }
    let path = rootfs_path(spec, bundle);
    match fs::metadata(&path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(invalid(
            "root.path",
            format!("{} is not a directory", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Err(invalid(
            "root.path",
            format!("{} does not exist", path.display()),
        )),
        Err(e) => Err(invalid("root.path", format!("{}: {e}", path.display()))),
    }
}

fn check_annotations(spec: &Spec) -> Result<(), SpecError> {
    if let Some(annotations) = spec.annotations() {
        if annotations.contains_key("") {
            return Err(invalid("annotations", "a key is empty"));
        }
    }
    Ok(())
}

fn check_hooks(spec: &Spec) -> Result<(), SpecError> {
    let Some(hooks) = spec.hooks() else {
        return Ok(());
    };
    #[allow(deprecated)] // prestart is deprecated in the spec but still honoured
    let lists: [(&str, &Option<Vec<Hook>>); 6] = [
        ("prestart", hooks.prestart()),
        ("createRuntime", hooks.create_runtime()),
        ("createContainer", hooks.create_container()),
        ("startContainer", hooks.start_container()),
        ("poststart", hooks.poststart()),
        ("poststop", hooks.poststop()),
    ];
    for (kind, list) in lists {
        for (i, hook) in list.as_deref().unwrap_or_default().iter().enumerate() {
            if !hook.path().is_absolute() {
                return Err(invalid(
                    format!("hooks.{kind}[{i}].path"),
                    format!("{:?} is not an absolute path", hook.path()),
                ));
            }
            if let Some(timeout) = hook.timeout() {
                if timeout <= 0 {
                    return Err(invalid(
                        format!("hooks.{kind}[{i}].timeout"),
                        format!("{timeout} must be greater than zero"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Mount destinations must be absolute. runc 1.1 accepts a relative one with a warning and
/// treats it as relative to `/`; runtime-spec 1.2 says "This value MUST be an absolute path",
/// so rrun rejects it rather than guess.
fn check_mounts(spec: &Spec) -> Result<(), SpecError> {
    for (i, m) in spec
        .mounts()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        check_mount(m, i)?;
    }
    Ok(())
}

fn check_mount(m: &Mount, i: usize) -> Result<(), SpecError> {
    let dest = m.destination();
    if !dest.is_absolute() {
        return Err(invalid(
            format!("mounts[{i}].destination"),
            format!("{dest:?} is not an absolute path"),
        ));
    }
    let options = m.options().as_deref().unwrap_or_default();
    let is_bind =
        m.typ().as_deref() == Some("bind") || options.iter().any(|o| o == "bind" || o == "rbind");
    let no_source = match m.source() {
        Some(source) => source.as_os_str().is_empty(),
        None => true,
    };
    if is_bind && no_source {
        return Err(invalid(
            format!("mounts[{i}].source"),
            format!("bind mount on {} has no source", dest.display()),
        ));
    }
    if m.uid_mappings().is_some() || m.gid_mappings().is_some() {
        return Err(invalid(
            format!("mounts[{i}]"),
            "idmapped mounts (uidMappings/gidMappings) are not supported by rrun",
        ));
    }
    Ok(())
}

/// The name of a namespace type in `config.json`.
fn ns_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Time => "time",
    }
}

/// The name of a namespace type under `/proc/<pid>/ns/`.
fn ns_proc_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Network => "net",
        other => ns_name(other),
    }
}

/// True when `path` is the namespace of the calling process ("host" means the runtime's own,
/// not the initial one, as in runc). A path that cannot be stat'ed is not the host's: joining
/// it will fail later with its own error.
fn is_host_ns(path: &Path, t: LinuxNamespaceType) -> bool {
    let own = format!("/proc/self/ns/{}", ns_proc_name(t));
    match (fs::metadata(path), fs::metadata(own)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

struct Namespaces<'a>(&'a [LinuxNamespace]);

impl Namespaces<'_> {
    fn get(&self, t: LinuxNamespaceType) -> Option<&LinuxNamespace> {
        self.0.iter().find(|ns| ns.typ() == t)
    }

    /// The container has a namespace of this type that is not the runtime's own: a new one,
    /// or a joined one that is somebody else's.
    fn private(&self, t: LinuxNamespaceType) -> bool {
        match self.get(t) {
            None => false,
            Some(ns) => match ns.path() {
                None => true,
                Some(path) => !is_host_ns(path, t),
            },
        }
    }
}

/// sysctls that live in the IPC namespace (besides the `fs.mqueue.*` prefix).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
    "kernel.msg_next_id",
    "kernel.sem_next_id",
    "kernel.shm_next_id",
];

fn check_linux(spec: &Spec) -> Result<(), SpecError> {
    let linux = spec.linux().as_ref();
    let list = linux
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or_default();
    let ns = Namespaces(list);
    check_namespace_list(list)?;
    check_mount_namespace(linux, &ns)?;
    check_id_mappings(linux, &ns)?;
    check_uts(spec, &ns)?;
    check_sysctls(spec, linux, &ns)?;
    check_time_offsets(linux, &ns)?;
    match linux {
        Some(linux) => check_paths(linux),
        None => Ok(()),
    }
}

fn check_namespace_list(list: &[LinuxNamespace]) -> Result<(), SpecError> {
    // Namespaces: one of each type, absolute paths.
    let mut seen: HashMap<LinuxNamespaceType, usize> = HashMap::new();
    for (i, n) in list.iter().enumerate() {
        if let Some(prev) = seen.insert(n.typ(), i) {
            return Err(invalid(
                format!("linux.namespaces[{i}]"),
                format!(
                    "duplicate namespace type {:?} (already at linux.namespaces[{prev}])",
                    ns_name(n.typ())
                ),
            ));
        }
        if let Some(path) = n.path() {
            if !path.is_absolute() {
                return Err(invalid(
                    format!("linux.namespaces[{i}].path"),
                    format!("{path:?} is not an absolute path"),
                ));
            }
        }
    }
    Ok(())
}

fn check_mount_namespace(linux: Option<&Linux>, ns: &Namespaces) -> Result<(), SpecError> {
    // rrun always builds the root filesystem with mounts and pivot_root; doing that in the
    // runtime's own mount namespace would rearrange the host, so a private one is required.
    // runc 1.1 refuses too when there are masked or read-only paths (every default config);
    // without them it mounts into the caller's namespace and chroots, leaving the
    // container's mounts behind there: see docs/compatibility.md.
    if !ns.private(LinuxNamespaceType::Mount) {
        let restricts = linux.is_some_and(|l| {
            l.masked_paths().as_ref().is_some_and(|p| !p.is_empty())
                || l.readonly_paths().as_ref().is_some_and(|p| !p.is_empty())
        });
        return Err(invalid(
            "linux.namespaces",
            if restricts {
                "no private mount namespace (add {\"type\": \"mount\"}): maskedPaths and \
                 readonlyPaths cannot be applied without one (runc refuses this too)"
            } else {
                "no private mount namespace (add {\"type\": \"mount\"}): rrun builds the root \
                 filesystem with mounts and pivot_root, and will not mount into the host's \
                 mount namespace"
            },
        ));
    }
    Ok(())
}

fn check_id_mappings(linux: Option<&Linux>, ns: &Namespaces) -> Result<(), SpecError> {
    // User namespace and id mappings go together. Joining an existing user namespace (path)
    // brings its own mappings, so they are optional there.
    let uid_maps = linux
        .and_then(|l| l.uid_mappings().as_deref())
        .unwrap_or_default();
    let gid_maps = linux
        .and_then(|l| l.gid_mappings().as_deref())
        .unwrap_or_default();
    match ns.get(LinuxNamespaceType::User) {
        Some(user) if user.path().is_none() => {
            if uid_maps.is_empty() {
                return Err(invalid(
                    "linux.uidMappings",
                    "a new user namespace needs uid mappings",
                ));
            }
            if gid_maps.is_empty() {
                return Err(invalid(
                    "linux.gidMappings",
                    "a new user namespace needs gid mappings",
                ));
            }
        }
        Some(_) => {}
        None => {
            for (field, maps) in [
                ("linux.uidMappings", uid_maps),
                ("linux.gidMappings", gid_maps),
            ] {
                if !maps.is_empty() {
                    return Err(invalid(
                        field,
                        "set, but linux.namespaces has no user namespace",
                    ));
                }
            }
        }
    }
    for (field, maps) in [
        ("linux.uidMappings", uid_maps),
        ("linux.gidMappings", gid_maps),
    ] {
        for (i, m) in maps.iter().enumerate() {
            if m.size() == 0 {
                return Err(invalid(format!("{field}[{i}].size"), "must not be zero"));
            }
        }
    }
    Ok(())
}

fn check_uts(spec: &Spec, ns: &Namespaces) -> Result<(), SpecError> {
    // Hostname and domainname change the UTS namespace, which must not be the host's.
    let uts = ns.private(LinuxNamespaceType::Uts);
    for (field, value) in [
        ("hostname", spec.hostname()),
        ("domainname", spec.domainname()),
    ] {
        if value.as_deref().is_some_and(|v| !v.is_empty()) && !uts {
            return Err(invalid(
                field,
                "set, but the container has no private UTS namespace to set it in",
            ));
        }
    }
    Ok(())
}

fn check_sysctls(spec: &Spec, linux: Option<&Linux>, ns: &Namespaces) -> Result<(), SpecError> {
    let uts = ns.private(LinuxNamespaceType::Uts);
    // sysctls: only namespaced ones, and only in a namespace that is not the host's (as runc).
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        let mut keys: Vec<&String> = sysctl.keys().collect();
        keys.sort(); // report the same key every run
        for key in keys {
            let field = || format!("linux.sysctl[{key:?}]");
            if IPC_SYSCTLS.contains(&key.as_str()) || key.starts_with("fs.mqueue.") {
                if !ns.private(LinuxNamespaceType::Ipc) {
                    return Err(invalid(field(), "needs a private IPC namespace"));
                }
            } else if key.starts_with("net.") {
                if !ns.private(LinuxNamespaceType::Network) {
                    return Err(invalid(field(), "needs a private network namespace"));
                }
            } else if key == "kernel.hostname" || key == "kernel.domainname" {
                if !uts {
                    return Err(invalid(field(), "needs a private UTS namespace"));
                }
                if key == "kernel.hostname"
                    && spec.hostname().as_deref().is_some_and(|h| !h.is_empty())
                {
                    return Err(invalid(field(), "conflicts with the \"hostname\" field"));
                }
            } else {
                return Err(invalid(
                    field(),
                    "not in a namespace the container owns: it would change the host",
                ));
            }
        }
    }
    Ok(())
}

fn check_time_offsets(linux: Option<&Linux>, ns: &Namespaces) -> Result<(), SpecError> {
    // Time namespace offsets need a new time namespace (a joined one has its offsets already).
    if let Some(offsets) = linux.and_then(|l| l.time_offsets().as_ref()) {
        if !offsets.is_empty() {
            match ns.get(LinuxNamespaceType::Time) {
                None => {
                    return Err(invalid(
                        "linux.timeOffsets",
                        "set, but linux.namespaces has no time namespace",
                    ))
                }
                Some(t) if t.path().is_some() => {
                    return Err(invalid(
                        "linux.timeOffsets",
                        "set, but the time namespace is joined (path), not created",
                    ))
                }
                Some(_) => {}
            }
            let mut clocks: Vec<&String> = offsets.keys().collect();
            clocks.sort();
            for clock in clocks {
                if clock != "monotonic" && clock != "boottime" {
                    return Err(invalid(
                        format!("linux.timeOffsets[{clock:?}]"),
                        "unknown clock (expected \"monotonic\" or \"boottime\")",
                    ));
                }
                if offsets[clock]
                    .nanosecs()
                    .is_some_and(|n| n >= 1_000_000_000)
                {
                    return Err(invalid(
                        format!("linux.timeOffsets[{clock:?}].nanosecs"),
                        "must be below 1000000000",
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Devices, masked and read-only paths are absolute; the rootfs propagation is a known one.
fn check_paths(linux: &Linux) -> Result<(), SpecError> {
    for (i, dev) in linux
        .devices()
        .as_deref()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if !dev.path().is_absolute() {
            return Err(invalid(
                format!("linux.devices[{i}].path"),
                format!("{:?} is not an absolute path", dev.path()),
            ));
        }
    }
    for (field, paths) in [
        ("linux.maskedPaths", linux.masked_paths()),
        ("linux.readonlyPaths", linux.readonly_paths()),
    ] {
        for (i, p) in paths.as_deref().unwrap_or_default().iter().enumerate() {
            if !p.starts_with('/') {
                return Err(invalid(
                    format!("{field}[{i}]"),
                    format!("{p:?} is not an absolute path"),
                ));
            }
        }
    }
    if let Some(prop) = linux.rootfs_propagation() {
        const KNOWN: &[&str] = &[
            "shared",
            "rshared",
            "slave",
            "rslave",
            "private",
            "rprivate",
            "unbindable",
            "runbindable",
        ];
        if !prop.is_empty() && !KNOWN.contains(&prop.as_str()) {
            return Err(invalid(
                "linux.rootfsPropagation",
                format!("{prop:?} is not one of {}", KNOWN.join(", ")),
            ));
        }
    }
    Ok(())
}
