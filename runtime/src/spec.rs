//! Loading and checking a bundle's `config.json`; the default spec of `rrun spec`; the
//! `rrun features` document; signal names for `rrun kill`.
//!
//! [`validate`] runs before anything touches the kernel, so a bad bundle fails with a message
//! that names the offending field (in the JSON spelling, e.g. `linux.namespaces[2].path`)
//! instead of an errno from deep inside the container's init. It checks what runc's
//! `libcontainer/configs/validate` checks, and a few things runc leaves to the kernel.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nix::sys::signal::Signal;
use oci_spec::runtime::{
    Apparmor, Capabilities, Capability, Cgroup, Features, Hook, IDMap, IntelRdt, LinuxCapabilities,
    LinuxDeviceCgroup, LinuxFeature, LinuxNamespace, LinuxNamespaceType, LinuxResources,
    MemoryPolicy, Mount, MountExtensions, NetDevices, PosixRlimit, PosixRlimitBuilder,
    PosixRlimitType, Process, Root, Seccomp, Selinux, Spec, User,
};

/// The name of the configuration file inside a bundle.
pub const CONFIG_FILE: &str = "config.json";

/// What can be wrong with a bundle's configuration (or a signal name).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The bundle has no `config.json`.
    #[error("bundle {bundle}: {path} does not exist (is this an OCI bundle?)")]
    MissingConfig { bundle: PathBuf, path: PathBuf },
    /// `config.json` (or a `--process` file) exists but cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is not valid JSON or does not match the runtime-spec schema. serde's message
    /// names the line and column.
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The configuration parses but breaks a rule; `field` is the JSON path of the culprit.
    #[error("invalid config: {field}: {reason}")]
    Invalid { field: String, reason: String },
    /// A signal name or number that `kill` does not know.
    #[error("unknown signal {0:?}: use a name (KILL, SIGKILL, sigterm) or a number (9)")]
    UnknownSignal(String),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SpecError {
    SpecError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Reads `bundle/config.json`, parses it and [`validate`]s it.
pub fn load_bundle(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join(CONFIG_FILE);
    let text = match fs::read(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SpecError::MissingConfig {
                bundle: bundle.to_path_buf(),
                path,
            })
        }
        Err(source) => return Err(SpecError::Read { path, source }),
    };
    let spec: Spec = parse_lenient(&text, &path, &["process"])?;
    validate(&spec, bundle)?;
    Ok(spec)
}

/// Parses `text` (the file at `path`) as a `T`. runtime-spec: a capability that cannot be
/// mapped to the kernel "MUST be logged as a warning" and the runtime "SHOULD NOT fail" (runc
/// warns too), but oci-spec refuses names it does not know. So when parsing fails, unknown
/// names are taken out of the capability sets found at `process_at` (the JSON path of the
/// process object: `["process"]` in a config, `[]` in an `exec --process` file), each is
/// warned about on stderr, and the rest is parsed again. Any other error is reported as is.
fn parse_lenient<T: serde::de::DeserializeOwned>(
    text: &[u8],
    path: &Path,
    process_at: &[&str],
) -> Result<T, SpecError> {
    // The usual file parses at once; only a failing one pays for a second look.
    let source = match serde_json::from_slice(text) {
        Ok(value) => return Ok(value),
        Err(source) => source,
    };
    match without_unknown_capabilities(text, process_at) {
        Some((value, dropped)) => {
            for name in dropped {
                eprintln!(
                    "rrun: warning: unknown capability {name} in {} ignored",
                    path.display()
                );
            }
            Ok(value)
        }
        None => Err(SpecError::Parse {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// `text` parsed as a `T` once the capability names oci-spec does not know are removed, with
/// those names; `None` when there were none or the JSON fails for another reason too.
fn without_unknown_capabilities<T: serde::de::DeserializeOwned>(
    text: &[u8],
    process_at: &[&str],
) -> Option<(T, Vec<String>)> {
    let mut value: serde_json::Value = serde_json::from_slice(text).ok()?;
    let mut process = &mut value;
    for key in process_at {
        process = process.get_mut(*key)?;
    }
    let sets = process.get_mut("capabilities")?.as_object_mut()?;
    let mut dropped = Vec::new();
    for list in sets.values_mut() {
        if let Some(items) = list.as_array_mut() {
            items.retain(|item| {
                let known = serde_json::from_value::<Capability>(item.clone()).is_ok();
                if !known {
                    dropped.push(item.to_string());
                }
                known
            });
        }
    }
    if dropped.is_empty() {
        return None;
    }
    dropped.sort();
    dropped.dedup();
    serde_json::from_value(value)
        .ok()
        .map(|parsed| (parsed, dropped))
}

/// Reads and checks a process description, as given to `exec --process FILE`.
pub fn load_process(path: &Path) -> Result<Process, SpecError> {
    let text = fs::read(path).map_err(|source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let process: Process = parse_lenient(&text, path, &[])?;
    validate_process(&process)?;
    Ok(process)
}

/// The container's root filesystem: `root.path`, made absolute against the bundle (without
/// resolving symlinks). Without `root` (which [`validate`] rejects) it is `<bundle>/rootfs`.
pub fn rootfs_path(spec: &Spec, bundle: &Path) -> PathBuf {
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_else(|| PathBuf::from("rootfs"));
    let joined = bundle.join(root); // an absolute root.path replaces the bundle
    std::path::absolute(&joined).unwrap_or(joined)
}

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
fn check_oci_version(version: &str) -> Result<(), SpecError> {
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

    let Some(linux) = linux else {
        return Ok(());
    };
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

/// Parses a signal as `kill` takes it: `KILL`, `SIGKILL`, `sigkill` or `9`.
pub fn parse_signal(s: &str) -> Result<Signal, SpecError> {
    let unknown = || SpecError::UnknownSignal(s.to_string());
    let t = s.trim();
    if t.is_empty() {
        return Err(unknown());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        let n: i32 = t.parse().map_err(|_| unknown())?;
        return Signal::try_from(n).map_err(|_| unknown());
    }
    let upper = t.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let bare = match bare {
        "IOT" => "ABRT",
        "CLD" => "CHLD",
        "POLL" => "IO",
        other => other,
    };
    Signal::from_str(&format!("SIG{bare}")).map_err(|_| unknown())
}

/// Exactly what `runc spec` writes (runc 1.1.5), except: `ociVersion` is
/// [`crate::OCI_VERSION`], the hostname is `rrun`, and a cgroup namespace is added (as newer
/// runc does).
pub fn default_spec() -> Spec {
    let caps: Capabilities = [
        Capability::AuditWrite,
        Capability::Kill,
        Capability::NetBindService,
    ]
    .into_iter()
    .collect();
    let mut capabilities = LinuxCapabilities::default();
    capabilities
        .set_bounding(Some(caps.clone()))
        .set_effective(Some(caps.clone()))
        .set_inheritable(None)
        .set_permitted(Some(caps.clone()))
        .set_ambient(Some(caps));

    let mut user = User::default();
    user.set_uid(0)
        .set_gid(0)
        .set_umask(None)
        .set_additional_gids(None)
        .set_username(None);

    let nofile = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .hard(1024u64)
        .soft(1024u64)
        .build()
        .expect("every field is set");

    let mut process = Process::default();
    process
        .set_terminal(Some(true))
        .set_console_size(None)
        .set_user(user)
        .set_args(Some(vec!["sh".into()]))
        .set_command_line(None)
        .set_env(Some(vec![
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            "TERM=xterm".into(),
        ]))
        .set_cwd("/".into())
        .set_capabilities(Some(capabilities))
        .set_rlimits(Some(vec![nofile]))
        .set_no_new_privileges(Some(true))
        .set_apparmor_profile(None)
        .set_oom_score_adj(None)
        .set_selinux_label(None)
        .set_io_priority(None)
        .set_scheduler(None)
        .set_exec_cpu_affinity(None);

    let mut root = Root::default();
    root.set_path("rootfs".into()).set_readonly(Some(true));

    let mount = |dest: &str, typ: &str, source: &str, options: &[&str]| {
        let mut m = Mount::default();
        m.set_destination(dest.into())
            .set_typ(Some(typ.into()))
            .set_source(Some(source.into()))
            .set_options(if options.is_empty() {
                None
            } else {
                Some(options.iter().map(|o| o.to_string()).collect())
            });
        m
    };
    let mounts = vec![
        mount("/proc", "proc", "proc", &[]),
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
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
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
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        ),
    ];

    let mut deny_all = LinuxDeviceCgroup::default();
    deny_all
        .set_allow(false)
        .set_typ(None)
        .set_major(None)
        .set_minor(None)
        .set_access(Some("rwm".into()));
    let mut resources = LinuxResources::default();
    resources.set_devices(Some(vec![deny_all]));

    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
    ]
    .into_iter()
    .map(|t| {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(t).set_path(None);
        ns
    })
    .collect::<Vec<_>>();

    let strings = |v: &[&str]| Some(v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let mut linux = oci_spec::runtime::Linux::default();
    linux
        .set_uid_mappings(None)
        .set_gid_mappings(None)
        .set_sysctl(None)
        .set_resources(Some(resources))
        .set_cgroups_path(None)
        .set_namespaces(Some(namespaces))
        .set_devices(None)
        .set_seccomp(None)
        .set_rootfs_propagation(None)
        .set_masked_paths(strings(&[
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi",
        ]))
        .set_readonly_paths(strings(&[
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger",
        ]))
        .set_mount_label(None)
        .set_intel_rdt(None)
        .set_personality(None)
        .set_time_offsets(None);

    let mut spec = Spec::default();
    spec.set_version(crate::OCI_VERSION.into())
        .set_process(Some(process))
        .set_root(Some(root))
        .set_hostname(Some("rrun".into()))
        .set_domainname(None)
        .set_mounts(Some(mounts))
        .set_hooks(None)
        .set_annotations(None)
        .set_linux(Some(linux));
    spec
}

/// The hooks rrun runs, in the order of a container's life.
pub const HOOKS: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// The generic mount options (flags and propagation) rrun recognises in `mounts[].options`;
/// anything else is passed to the filesystem as data. runc 1.1's list, with its
/// `tmpcopyup` extension (tmpfs only: the tmpfs starts as a copy of what was there).
pub const MOUNT_OPTIONS: &[&str] = &[
    "acl",
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "iversion",
    "lazytime",
    "loud",
    "mand",
    "noacl",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "remount",
    "rexec",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "tmpcopyup",
    "unbindable",
];

/// Every capability the kernel defines, in kernel order (as `runc features` lists them).
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The seccomp actions `security::seccomp` turns into filters. `SCMP_ACT_NOTIFY` needs a
/// seccomp agent (`listenerPath`), which rrun does not support yet.
pub const SECCOMP_ACTIONS: &[&str] = &[
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_LOG",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_TRAP",
];

/// Every argument comparison of the spec.
pub const SECCOMP_OPERATORS: &[&str] = &[
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_LE",
    "SCMP_CMP_LT",
    "SCMP_CMP_MASKED_EQ",
    "SCMP_CMP_NE",
];

/// The architectures libseccomp (and so rrun's filters) know, as `runc features` lists them.
pub const SECCOMP_ARCHS: &[&str] = &[
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
];

/// The filter flags rrun recognises.
pub const SECCOMP_FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

/// The flags that work with the libseccomp rrun links (Debian 12: 2.5.4).
/// `WAIT_KILLABLE_RECV` needs libseccomp 2.6 and Linux 5.19.
pub const SECCOMP_SUPPORTED_FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
];

/// Names parsed as one of the spec's enums (`SCMP_ACT_ALLOW`, `SCMP_ARCH_X86_64`).
fn from_names<T: serde::de::DeserializeOwned>(names: &[&str]) -> Vec<T> {
    serde_json::from_value(serde_json::json!(names)).expect("names the spec's enums know")
}

/// The runtime-spec features document (`rrun features`). It describes what rrun recognises,
/// not what this host has. Every field is set, so it serializes without `null`s.
pub fn features() -> Features {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let mut cgroup = Cgroup::default();
    cgroup
        .set_v1(Some(true))
        .set_v2(Some(true))
        .set_systemd(Some(false))
        .set_systemd_user(Some(false))
        .set_rdma(Some(false));
    let mut seccomp = Seccomp::default();
    seccomp
        .set_enabled(Some(true))
        .set_actions(Some(from_names(SECCOMP_ACTIONS)))
        .set_operators(Some(strings(SECCOMP_OPERATORS)))
        .set_archs(Some(from_names(SECCOMP_ARCHS)))
        .set_known_flags(Some(strings(SECCOMP_FLAGS)))
        .set_supported_flags(Some(strings(SECCOMP_SUPPORTED_FLAGS)));
    // Labels are applied when the host runs the LSM (security::lsm); "enabled" here means
    // "supported by rrun", as the features document defines it.
    let mut apparmor = Apparmor::default();
    apparmor.set_enabled(Some(true));
    let mut selinux = Selinux::default();
    selinux.set_enabled(Some(true));
    let mut intel_rdt = IntelRdt::default();
    intel_rdt.set_enabled(Some(false));
    let mut idmap = IDMap::default();
    idmap.set_enabled(Some(false));
    let mut mount_extensions = MountExtensions::default();
    mount_extensions.set_idmap(Some(idmap));
    let mut net_devices = NetDevices::default();
    net_devices.set_enabled(Some(false));
    let mut memory_policy = MemoryPolicy::default();
    memory_policy
        .set_modes(Some(vec![]))
        .set_flags(Some(vec![]));

    let mut linux = LinuxFeature::default();
    linux
        .set_namespaces(Some(vec![
            LinuxNamespaceType::Cgroup,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Time,
            LinuxNamespaceType::User,
            LinuxNamespaceType::Uts,
        ]))
        .set_capabilities(Some(strings(CAPABILITIES)))
        .set_cgroup(Some(cgroup))
        .set_seccomp(Some(seccomp))
        .set_apparmor(Some(apparmor))
        .set_selinux(Some(selinux))
        .set_intel_rdt(Some(intel_rdt))
        .set_memory_policy(Some(memory_policy))
        .set_mount_extensions(Some(mount_extensions))
        .set_net_devices(Some(net_devices));

    // Implementation-specific annotations. rrun's own keys, not org.opencontainers.runc.*:
    // those describe runc, and a caller reading them would think it talks to that runc.
    let annotations = HashMap::from([
        (
            "rrun.version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            "rrun.ociVersion".to_string(),
            crate::OCI_VERSION.to_string(),
        ),
    ]);

    let mut f = Features::default();
    f.set_oci_version_min("1.0.0".into())
        .set_oci_version_max(crate::OCI_VERSION.into())
        .set_hooks(Some(strings(HOOKS)))
        .set_mount_options(Some(strings(MOUNT_OPTIONS)))
        .set_linux(Some(linux))
        .set_annotations(Some(annotations))
        .set_potentially_unsafe_config_annotations(Some(vec![]));
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    /// A bundle directory with an empty `rootfs/` and the default spec in `config.json`.
    struct Bundle {
        dir: tempfile::TempDir,
    }

    impl Bundle {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir(dir.path().join("rootfs")).unwrap();
            Bundle { dir }
        }
        fn path(&self) -> &Path {
            self.dir.path()
        }
        fn write(&self, text: &str) {
            fs::write(self.path().join(CONFIG_FILE), text).unwrap();
        }
    }

    /// Validates the default spec after `edit` changed its JSON form.
    fn check(edit: impl FnOnce(&mut Value)) -> Result<(), SpecError> {
        let bundle = Bundle::new();
        let mut v = serde_json::to_value(default_spec()).unwrap();
        edit(&mut v);
        let spec: Spec = serde_json::from_value(v).expect("edited spec still parses");
        validate(&spec, bundle.path())
    }

    /// Asserts a validation failure that names `field` and says `words`.
    fn rejects(result: Result<(), SpecError>, field: &str, words: &str) {
        match result {
            Err(SpecError::Invalid { field: f, reason }) => {
                assert_eq!(f, field, "wrong field (reason: {reason})");
                assert!(reason.contains(words), "reason {reason:?} lacks {words:?}");
            }
            other => panic!("expected an Invalid error on {field}, got {other:?}"),
        }
    }

    fn add_ns(v: &mut Value, typ: &str, path: Option<&str>) {
        let mut ns = json!({ "type": typ });
        if let Some(p) = path {
            ns["path"] = json!(p);
        }
        v["linux"]["namespaces"].as_array_mut().unwrap().push(ns);
    }

    fn remove_ns(v: &mut Value, typ: &str) {
        v["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|ns| ns["type"] != typ);
    }

    #[test]
    fn default_spec_is_valid() {
        check(|_| {}).unwrap();
    }

    // ---- loading ----

    #[test]
    fn load_bundle_reads_a_valid_config() {
        let bundle = Bundle::new();
        bundle.write(&serde_json::to_string(&default_spec()).unwrap());
        let spec = load_bundle(bundle.path()).unwrap();
        assert_eq!(spec, default_spec());
    }

    #[test]
    fn load_bundle_without_config() {
        let bundle = Bundle::new();
        let err = load_bundle(bundle.path()).unwrap_err();
        assert!(matches!(err, SpecError::MissingConfig { .. }), "{err:?}");
        assert!(err.to_string().contains("config.json"), "{err}");
    }

    #[test]
    fn load_bundle_unreadable_config() {
        let bundle = Bundle::new();
        fs::create_dir(bundle.path().join(CONFIG_FILE)).unwrap(); // a directory: EISDIR
        let err = load_bundle(bundle.path()).unwrap_err();
        assert!(matches!(err, SpecError::Read { .. }), "{err:?}");
    }

    #[test]
    fn load_bundle_malformed_json_names_line_and_column() {
        let bundle = Bundle::new();
        bundle.write("{\n  \"ociVersion\": \"1.2.0\",\n  \"root\": \n}");
        let err = load_bundle(bundle.path()).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, SpecError::Parse { .. }), "{err:?}");
        assert!(
            msg.contains("config.json") && msg.contains("line 4"),
            "{msg}"
        );
    }

    #[test]
    fn load_bundle_drops_unknown_capabilities() {
        let bundle = Bundle::new();
        let mut v = serde_json::to_value(default_spec()).unwrap();
        v["process"]["capabilities"]["bounding"] = json!(["CAP_MAKE_COFFEE", "CAP_KILL"]);
        bundle.write(&serde_json::to_string_pretty(&v).unwrap());
        let spec = load_bundle(bundle.path()).unwrap();
        let caps = spec
            .process()
            .as_ref()
            .unwrap()
            .capabilities()
            .as_ref()
            .unwrap();
        let bounding: Vec<_> = caps.bounding().iter().flatten().collect();
        assert_eq!(bounding, [&Capability::Kill]);
    }

    #[test]
    fn load_bundle_unknown_capability_does_not_hide_other_errors() {
        let bundle = Bundle::new();
        let mut v = serde_json::to_value(default_spec()).unwrap();
        v["process"]["capabilities"]["bounding"] = json!(["CAP_MAKE_COFFEE"]);
        v["linux"]["namespaces"][0]["type"] = json!("bogus");
        bundle.write(&serde_json::to_string_pretty(&v).unwrap());
        let err = load_bundle(bundle.path()).unwrap_err();
        assert!(matches!(err, SpecError::Parse { .. }), "{err:?}");
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn load_bundle_validates() {
        let bundle = Bundle::new();
        let mut v = serde_json::to_value(default_spec()).unwrap();
        v["process"]["cwd"] = json!("relative");
        bundle.write(&v.to_string());
        rejects(
            load_bundle(bundle.path()).map(|_| ()),
            "process.cwd",
            "absolute",
        );
    }

    #[test]
    fn load_process_checks_the_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("process.json");
        fs::write(&path, r#"{"user":{"uid":0,"gid":0},"args":[],"cwd":"/"}"#).unwrap();
        rejects(load_process(&path).map(|_| ()), "process.args", "empty");
        fs::write(
            &path,
            r#"{"user":{"uid":0,"gid":0},"args":["true"],"cwd":"/"}"#,
        )
        .unwrap();
        load_process(&path).unwrap();
        fs::write(
            &path,
            r#"{"user":{"uid":0,"gid":0},"args":["true"],"cwd":"/",
                "capabilities":{"effective":["CAP_KILL","CAP_TIME_TRAVEL"]}}"#,
        )
        .unwrap();
        let p = load_process(&path).unwrap();
        let effective: Vec<_> = p
            .capabilities()
            .as_ref()
            .unwrap()
            .effective()
            .iter()
            .flatten()
            .collect();
        assert_eq!(effective, [&Capability::Kill]);
    }

    // ---- ociVersion ----

    #[test]
    fn oci_version_rules() {
        for ok in [
            "1.0.0",
            "1.0.2-dev",
            "1.2.0",
            "1.3.0-rc.1+build.5",
            "1.10.100",
        ] {
            check_oci_version(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "1",
            "1.0",
            "1.0.0.0",
            "v1.0.0",
            "01.0.0",
            "1.0.0-",
            "1.0.0-a..b",
            "1.x.0",
        ] {
            rejects(check_oci_version(bad), "ociVersion", "");
        }
        rejects(check_oci_version("2.0.0"), "ociVersion", "major version 2");
        rejects(check_oci_version("0.9.0"), "ociVersion", "major version 0");
        rejects(
            check(|v| v["ociVersion"] = json!("")),
            "ociVersion",
            "missing",
        );
    }

    // ---- root ----

    #[test]
    fn root_must_be_present_and_a_directory() {
        rejects(
            check(|v| {
                v.as_object_mut().unwrap().remove("root");
            }),
            "root",
            "missing",
        );
        rejects(
            check(|v| v["root"]["path"] = json!("")),
            "root.path",
            "empty",
        );
        rejects(
            check(|v| v["root"]["path"] = json!("nope")),
            "root.path",
            "does not exist",
        );
        rejects(
            check(|v| v["root"]["path"] = json!("/etc/hostname")),
            "root.path",
            "not a directory",
        );
        check(|v| v["root"]["path"] = json!("/")).unwrap(); // absolute paths are used as is
    }

    #[test]
    fn rootfs_path_joins_relative_paths_to_the_bundle() {
        let mut spec = default_spec();
        assert_eq!(
            rootfs_path(&spec, Path::new("/b")),
            PathBuf::from("/b/rootfs")
        );
        spec.root_mut()
            .as_mut()
            .unwrap()
            .set_path("/abs/root".into());
        assert_eq!(
            rootfs_path(&spec, Path::new("/b")),
            PathBuf::from("/abs/root")
        );
        spec.root_mut().as_mut().unwrap().set_path("rootfs".into());
        assert!(rootfs_path(&spec, Path::new("rel")).is_absolute());
    }

    // ---- process ----

    #[test]
    fn process_is_required() {
        rejects(
            check(|v| {
                v.as_object_mut().unwrap().remove("process");
            }),
            "process",
            "missing",
        );
    }

    #[test]
    fn process_args_must_name_a_program() {
        rejects(
            check(|v| v["process"]["args"] = json!([])),
            "process.args",
            "empty",
        );
        rejects(
            check(|v| {
                v["process"].as_object_mut().unwrap().remove("args");
            }),
            "process.args",
            "empty",
        );
        rejects(
            check(|v| v["process"]["args"] = json!([""])),
            "process.args[0]",
            "empty",
        );
        rejects(
            check(|v| v["process"]["args"] = json!(["sh", "a\u{0}b"])),
            "process.args[1]",
            "NUL",
        );
    }

    #[test]
    fn process_cwd_must_be_absolute() {
        rejects(
            check(|v| v["process"]["cwd"] = json!("tmp")),
            "process.cwd",
            "absolute",
        );
        rejects(
            check(|v| v["process"]["cwd"] = json!("")),
            "process.cwd",
            "absolute",
        );
    }

    #[test]
    fn process_env_entries_are_name_equals_value() {
        check(|v| v["process"]["env"] = json!(["A=", "B=c=d"])).unwrap();
        rejects(
            check(|v| v["process"]["env"] = json!(["A=1", "B"])),
            "process.env[1]",
            "'='",
        );
        rejects(
            check(|v| v["process"]["env"] = json!(["=1"])),
            "process.env[0]",
            "empty name",
        );
        rejects(
            check(|v| v["process"]["env"] = json!(["A=\u{0}"])),
            "process.env[0]",
            "NUL",
        );
    }

    #[test]
    fn rlimits_no_duplicates_and_soft_within_hard() {
        rejects(
            check(|v| {
                v["process"]["rlimits"] = json!([
                    {"type": "RLIMIT_NOFILE", "hard": 10, "soft": 10},
                    {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
                    {"type": "RLIMIT_NOFILE", "hard": 20, "soft": 20}
                ])
            }),
            "process.rlimits[2]",
            "already set at process.rlimits[0]",
        );
        rejects(
            check(|v| {
                v["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 11}])
            }),
            "process.rlimits[0]",
            "soft limit 11 is above hard limit 10",
        );
    }

    #[test]
    fn process_oom_score_adj_io_priority_and_umask_ranges() {
        check(|v| v["process"]["oomScoreAdj"] = json!(-1000)).unwrap();
        rejects(
            check(|v| v["process"]["oomScoreAdj"] = json!(1001)),
            "process.oomScoreAdj",
            "outside",
        );
        rejects(
            check(|v| {
                v["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 8})
            }),
            "process.ioPriority.priority",
            "outside",
        );
        rejects(
            check(|v| v["process"]["user"]["umask"] = json!(0o1022)),
            "process.user.umask",
            "outside",
        );
    }

    #[test]
    fn validate_process_alone() {
        let mut p = default_spec().process().clone().unwrap();
        validate_process(&p).unwrap();
        p.set_cwd("x".into());
        rejects(validate_process(&p), "process.cwd", "absolute");
    }

    // ---- annotations and hooks ----

    #[test]
    fn annotation_keys_are_not_empty() {
        check(|v| v["annotations"] = json!({"a.b": ""})).unwrap();
        rejects(
            check(|v| v["annotations"] = json!({"": "x"})),
            "annotations",
            "empty",
        );
    }

    #[test]
    fn hook_paths_are_absolute_and_timeouts_positive() {
        check(|v| v["hooks"] = json!({"poststop": [{"path": "/bin/true", "timeout": 5}]})).unwrap();
        rejects(
            check(|v| {
                v["hooks"] = json!({"createRuntime": [{"path": "/bin/true"}, {"path": "true"}]})
            }),
            "hooks.createRuntime[1].path",
            "absolute",
        );
        rejects(
            check(|v| v["hooks"] = json!({"prestart": [{"path": "/bin/true", "timeout": 0}]})),
            "hooks.prestart[0].timeout",
            "greater than zero",
        );
    }

    // ---- mounts ----

    #[test]
    fn mount_destinations_are_absolute() {
        rejects(
            check(|v| v["mounts"][1]["destination"] = json!("dev")),
            "mounts[1].destination",
            "absolute",
        );
    }

    #[test]
    fn bind_mounts_need_a_source_and_idmaps_are_refused() {
        rejects(
            check(|v| {
                v["mounts"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"destination": "/data", "options": ["rbind"]}))
            }),
            "mounts[7].source",
            "no source",
        );
        rejects(
            check(|v| {
                v["mounts"].as_array_mut().unwrap().push(json!({
                    "destination": "/data", "type": "bind", "source": "/tmp", "options": ["bind"],
                    "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                    "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]
                }))
            }),
            "mounts[7]",
            "idmapped",
        );
    }

    // ---- namespaces ----

    #[test]
    fn namespaces_are_not_duplicated() {
        rejects(
            check(|v| add_ns(v, "pid", None)),
            "linux.namespaces[6]",
            "duplicate namespace type \"pid\" (already at linux.namespaces[0])",
        );
    }

    #[test]
    fn namespace_paths_are_absolute() {
        rejects(
            check(|v| {
                remove_ns(v, "network");
                add_ns(v, "network", Some("run/netns/x"));
            }),
            "linux.namespaces[5].path",
            "absolute",
        );
    }

    #[test]
    fn a_private_mount_namespace_is_required() {
        rejects(
            check(|v| remove_ns(v, "mount")),
            "linux.namespaces",
            "mount namespace",
        );
        rejects(
            check(|v| {
                remove_ns(v, "mount");
                add_ns(v, "mount", Some("/proc/self/ns/mnt"));
            }),
            "linux.namespaces",
            "mount namespace",
        );
    }

    #[test]
    fn user_namespace_and_mappings_go_together() {
        let maps = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        rejects(
            check(|v| add_ns(v, "user", None)),
            "linux.uidMappings",
            "needs uid mappings",
        );
        rejects(
            check(|v| {
                add_ns(v, "user", None);
                v["linux"]["uidMappings"] = maps.clone();
            }),
            "linux.gidMappings",
            "needs gid mappings",
        );
        check(|v| {
            add_ns(v, "user", None);
            v["linux"]["uidMappings"] = maps.clone();
            v["linux"]["gidMappings"] = maps.clone();
        })
        .unwrap();
        // Joining a user namespace: its mappings come with it.
        check(|v| add_ns(v, "user", Some("/proc/1/ns/user"))).unwrap();
        rejects(
            check(|v| v["linux"]["gidMappings"] = maps.clone()),
            "linux.gidMappings",
            "no user namespace",
        );
        rejects(
            check(|v| {
                add_ns(v, "user", None);
                v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 1, "size": 0}]);
                v["linux"]["gidMappings"] = maps.clone();
            }),
            "linux.uidMappings[0].size",
            "zero",
        );
    }

    #[test]
    fn hostname_and_domainname_need_a_private_uts_namespace() {
        rejects(check(|v| remove_ns(v, "uts")), "hostname", "UTS");
        rejects(
            check(|v| {
                remove_ns(v, "uts");
                add_ns(v, "uts", Some("/proc/self/ns/uts"));
            }),
            "hostname",
            "UTS",
        );
        check(|v| {
            remove_ns(v, "uts");
            v.as_object_mut().unwrap().remove("hostname");
        })
        .unwrap();
        rejects(
            check(|v| {
                remove_ns(v, "uts");
                v.as_object_mut().unwrap().remove("hostname");
                v["domainname"] = json!("example.org");
            }),
            "domainname",
            "UTS",
        );
    }

    #[test]
    fn sysctls_need_their_namespace() {
        let sysctl = |key: &str| {
            let key = key.to_string();
            move |v: &mut Value| v["linux"]["sysctl"] = json!({ key: "1" })
        };
        check(sysctl("net.ipv4.ip_forward")).unwrap();
        check(sysctl("kernel.shmmax")).unwrap();
        check(sysctl("fs.mqueue.msg_max")).unwrap();
        check(sysctl("kernel.domainname")).unwrap();
        let field = |k: &str| format!("linux.sysctl[{k:?}]");
        rejects(
            check(|v| {
                remove_ns(v, "network");
                sysctl("net.ipv4.ip_forward")(v);
            }),
            &field("net.ipv4.ip_forward"),
            "network namespace",
        );
        rejects(
            check(|v| {
                remove_ns(v, "network");
                add_ns(v, "network", Some("/proc/self/ns/net"));
                sysctl("net.core.somaxconn")(v);
            }),
            &field("net.core.somaxconn"),
            "network namespace",
        );
        rejects(
            check(|v| {
                remove_ns(v, "ipc");
                sysctl("kernel.msgmax")(v);
            }),
            &field("kernel.msgmax"),
            "IPC namespace",
        );
        rejects(
            check(|v| {
                remove_ns(v, "ipc");
                sysctl("fs.mqueue.queues_max")(v);
            }),
            &field("fs.mqueue.queues_max"),
            "IPC namespace",
        );
        rejects(
            check(|v| {
                remove_ns(v, "uts");
                v.as_object_mut().unwrap().remove("hostname");
                sysctl("kernel.domainname")(v);
            }),
            &field("kernel.domainname"),
            "UTS namespace",
        );
        rejects(
            check(sysctl("kernel.hostname")),
            &field("kernel.hostname"),
            "conflicts",
        );
        check(|v| {
            v.as_object_mut().unwrap().remove("hostname");
            sysctl("kernel.hostname")(v);
        })
        .unwrap();
        rejects(
            check(sysctl("vm.swappiness")),
            &field("vm.swappiness"),
            "host",
        );
    }

    #[test]
    fn time_offsets_need_a_new_time_namespace() {
        let offsets = json!({"monotonic": {"secs": 10}, "boottime": {"secs": 1, "nanosecs": 5}});
        rejects(
            check(|v| v["linux"]["timeOffsets"] = offsets.clone()),
            "linux.timeOffsets",
            "no time namespace",
        );
        check(|v| {
            add_ns(v, "time", None);
            v["linux"]["timeOffsets"] = offsets.clone();
        })
        .unwrap();
        rejects(
            check(|v| {
                add_ns(v, "time", Some("/proc/1/ns/time"));
                v["linux"]["timeOffsets"] = offsets.clone();
            }),
            "linux.timeOffsets",
            "joined",
        );
        rejects(
            check(|v| {
                add_ns(v, "time", None);
                v["linux"]["timeOffsets"] = json!({"realtime": {"secs": 1}});
            }),
            "linux.timeOffsets[\"realtime\"]",
            "unknown clock",
        );
        rejects(
            check(|v| {
                add_ns(v, "time", None);
                v["linux"]["timeOffsets"] = json!({"boottime": {"nanosecs": 1_000_000_000u32}});
            }),
            "linux.timeOffsets[\"boottime\"].nanosecs",
            "below",
        );
    }

    #[test]
    fn linux_paths_are_absolute_and_propagation_known() {
        rejects(
            check(|v| {
                v["linux"]["devices"] =
                    json!([{"path": "dev/fuse", "type": "c", "major": 10, "minor": 229}])
            }),
            "linux.devices[0].path",
            "absolute",
        );
        rejects(
            check(|v| v["linux"]["maskedPaths"][2] = json!("proc/kcore")),
            "linux.maskedPaths[2]",
            "absolute",
        );
        rejects(
            check(|v| v["linux"]["readonlyPaths"][0] = json!("proc/bus")),
            "linux.readonlyPaths[0]",
            "absolute",
        );
        check(|v| v["linux"]["rootfsPropagation"] = json!("rslave")).unwrap();
        rejects(
            check(|v| v["linux"]["rootfsPropagation"] = json!("sideways")),
            "linux.rootfsPropagation",
            "not one of",
        );
    }

    #[test]
    fn error_messages_name_the_field() {
        let err = check(|v| v["process"]["cwd"] = json!("x")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid config: process.cwd: \"x\" is not an absolute path"
        );
    }

    // ---- signals ----

    #[test]
    fn signals_like_runc_kill() {
        for s in ["KILL", "SIGKILL", "kill", "sigkill", "9", " 9 "] {
            assert_eq!(parse_signal(s).unwrap(), Signal::SIGKILL, "{s}");
        }
        assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
        assert_eq!(parse_signal("HUP").unwrap(), Signal::SIGHUP);
        assert_eq!(parse_signal("SIGCLD").unwrap(), Signal::SIGCHLD);
        assert_eq!(parse_signal("usr1").unwrap(), Signal::SIGUSR1);
        for bad in ["", "0", "999", "SIGNOPE", "-9", "SIG"] {
            let err = parse_signal(bad).unwrap_err();
            assert!(matches!(err, SpecError::UnknownSignal(_)), "{bad}: {err:?}");
        }
    }

    // ---- default spec and features ----

    /// `runc spec` of runc 1.1.5, verbatim.
    const RUNC_SPEC: &str = r#"{
	"ociVersion": "1.0.2-dev",
	"process": {
		"terminal": true,
		"user": { "uid": 0, "gid": 0 },
		"args": [ "sh" ],
		"env": [
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"TERM=xterm"
		],
		"cwd": "/",
		"capabilities": {
			"bounding": [ "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" ],
			"effective": [ "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" ],
			"permitted": [ "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" ],
			"ambient": [ "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" ]
		},
		"rlimits": [ { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 } ],
		"noNewPrivileges": true
	},
	"root": { "path": "rootfs", "readonly": true },
	"hostname": "runc",
	"mounts": [
		{ "destination": "/proc", "type": "proc", "source": "proc" },
		{ "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
		  "options": [ "nosuid", "strictatime", "mode=755", "size=65536k" ] },
		{ "destination": "/dev/pts", "type": "devpts", "source": "devpts",
		  "options": [ "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5" ] },
		{ "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
		  "options": [ "nosuid", "noexec", "nodev", "mode=1777", "size=65536k" ] },
		{ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
		  "options": [ "nosuid", "noexec", "nodev" ] },
		{ "destination": "/sys", "type": "sysfs", "source": "sysfs",
		  "options": [ "nosuid", "noexec", "nodev", "ro" ] },
		{ "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
		  "options": [ "nosuid", "noexec", "nodev", "relatime", "ro" ] }
	],
	"linux": {
		"resources": { "devices": [ { "allow": false, "access": "rwm" } ] },
		"namespaces": [
			{ "type": "pid" }, { "type": "network" }, { "type": "ipc" },
			{ "type": "uts" }, { "type": "mount" }
		],
		"maskedPaths": [
			"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
			"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
			"/proc/scsi"
		],
		"readonlyPaths": [
			"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
		]
	}
}"#;

    /// Capability sets are sets: oci-spec serializes them in hash order.
    fn sort_capabilities(v: &mut Value) {
        if let Some(caps) = v["process"]["capabilities"].as_object_mut() {
            for set in caps.values_mut() {
                set.as_array_mut()
                    .unwrap()
                    .sort_by(|a, b| a.as_str().cmp(&b.as_str()));
            }
        }
    }

    #[test]
    fn default_spec_matches_runc_spec() {
        let mut expected: Value = serde_json::from_str(RUNC_SPEC).unwrap();
        // The intended differences from runc 1.1.5:
        expected["ociVersion"] = json!(crate::OCI_VERSION);
        expected["hostname"] = json!("rrun");
        expected["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "cgroup"}));
        let mut actual = serde_json::to_value(default_spec()).unwrap();
        sort_capabilities(&mut expected);
        sort_capabilities(&mut actual);
        assert_eq!(
            actual,
            expected,
            "default_spec():\n{}",
            serde_json::to_string_pretty(&actual).unwrap()
        );
    }

    #[test]
    fn features_document() {
        let v = serde_json::to_value(features()).unwrap();
        assert_eq!(v["ociVersionMin"], "1.0.0");
        assert_eq!(v["ociVersionMax"], crate::OCI_VERSION);
        assert_eq!(v["hooks"].as_array().unwrap().len(), 6);
        assert!(v["mountOptions"]
            .as_array()
            .unwrap()
            .contains(&json!("rbind")));
        let ns = v["linux"]["namespaces"].as_array().unwrap();
        for t in [
            "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
        ] {
            assert!(ns.contains(&json!(t)), "namespace {t} missing");
        }
        // Every capability oci-spec knows is listed, and nothing else.
        let caps = v["linux"]["capabilities"].as_array().unwrap();
        assert_eq!(caps.len(), 41);
        for c in caps {
            let _: Capability = serde_json::from_value(c.clone()).unwrap();
        }
        assert_eq!(
            v["linux"]["cgroup"],
            json!({"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false})
        );
        let seccomp = &v["linux"]["seccomp"];
        assert_eq!(seccomp["enabled"], json!(true));
        assert_eq!(
            seccomp["actions"].as_array().unwrap().len(),
            SECCOMP_ACTIONS.len()
        );
        assert!(!seccomp["actions"]
            .as_array()
            .unwrap()
            .contains(&json!("SCMP_ACT_NOTIFY")));
        assert_eq!(seccomp["operators"].as_array().unwrap().len(), 7);
        assert!(seccomp["archs"]
            .as_array()
            .unwrap()
            .contains(&json!("SCMP_ARCH_X86_64")));
        assert_eq!(v["linux"]["apparmor"], json!({"enabled": true}));
        assert_eq!(v["linux"]["selinux"], json!({"enabled": true}));
        assert_eq!(v["linux"]["intelRdt"], json!({"enabled": false}));
        assert_eq!(
            v["linux"]["mountExtensions"],
            json!({"idmap": {"enabled": false}})
        );
        assert!(v["annotations"]["rrun.version"].is_string());
        // oci-spec writes unset fields as null (runc leaves them out); features() sets all.
        assert!(!v.to_string().contains("null"), "{v}");
        // And the document reads back as a Features.
        let back: Features = serde_json::from_value(v).unwrap();
        assert_eq!(back.oci_version_max(), crate::OCI_VERSION);
    }
}
