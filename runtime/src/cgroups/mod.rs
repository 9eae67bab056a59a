//! Control groups: the container's cgroup is made and its limits (`linux.resources`)
//! written before the init leaves its setup barrier, so nothing of the container ever runs
//! outside it.
//!
//! One [`Manager`] trait with two implementations, picked from what is mounted:
//! - [`v2::V2`]: cgroup v2 unified (`/sys/fs/cgroup` is cgroup2);
//! - [`v1::V1`]: cgroup v1, and hybrid (v1 controllers plus a cgroup2 mount without
//!   controllers, as systemd's "hybrid" mode and this project's CI host). In hybrid mode the
//!   container also gets a cgroup in the v2 tree, as runc does, so the v2 tree tells the
//!   truth about it too.
//!
//! Hand-written rather than `cgroups-rs`: that crate reads every hierarchy's
//! `/proc/self/mountinfo` entry and the controller list of each on every
//! `Cgroup::new`, creates the cgroup in every hierarchy it knows (hybrid mode included, but
//! with its own idea of which v2 files exist), and its v2 support writes `subtree_control`
//! of every ancestor from the hierarchy root down — writes to cgroups the runtime did not
//! create. What rrun needs is narrower and must stay cheap on the `create` path (crun-like:
//! one `statfs` on v2, one read of `/proc/self/cgroup`, then only the writes the config
//! asks for), and it must remember exactly which directories it created so that `delete`
//! removes those and nothing else.
//!
//! Paths: an absolute `linux.cgroupsPath` is taken as is (below each hierarchy's mount
//! point); a relative one goes below the runtime's own cgroup in each hierarchy; without
//! one the container gets `<own cgroup>/rrun/<id>`. A path that resolves to a hierarchy
//! root, or has `..` in it, is refused. The systemd form `slice:prefix:name` is, as to runc
//! without `--systemd-cgroup`, a relative path of one component.
//!
//! Ownership: the leaf must not exist yet (an existing cgroup belongs to someone else and
//! is never written to); missing parents are created and remembered. The only write to a
//! cgroup we did not create is, on v2, adding controllers to `cgroup.subtree_control` of the
//! runtime's own cgroup and the parents we did not make between it and the leaf — the
//! kernel's delegation rule leaves no other way (runc and crun do the same); controllers
//! are only ever added there, never removed.

pub mod devices_bpf;
mod stats;
pub mod v1;
pub mod v2;

pub use stats::{
    BlkioEntry, BlkioStats, CpuStats, CpuUsage, Event, HugetlbStats, MemoryEntry, MemoryStats,
    OomCount, PidsStats, Stats, Throttling,
};

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

/// Where cgroup v2 (or, with v1, the tmpfs of the v1 hierarchies) is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("cgroup {path}: {op}: {source}")]
    Io {
        op: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cgroup {0} already exists: rrun only uses cgroups it creates")]
    Exists(PathBuf),
    #[error("invalid cgroupsPath {path:?}: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("{0}")]
    Unsupported(String),
    #[error("invalid resource value: {0}")]
    Invalid(String),
    #[error("no cgroup hierarchy is mounted at {CGROUP_ROOT}")]
    NotMounted,
}

pub type Result<T, E = CgroupError> = std::result::Result<T, E>;

fn io_err(op: impl Into<String>, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    let op = op.into();
    move |source| CgroupError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Which driver made a container's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Version {
    #[default]
    V1,
    V2,
}

/// What the state directory keeps of a container's cgroup: enough to find it again and to
/// remove exactly what was created.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct CgroupRecord {
    pub version: Version,
    /// Controller name (v1; `"unified"` for the v2 tree of a hybrid host) or `""` (v2) → the
    /// container's cgroup directory.
    pub paths: BTreeMap<String, PathBuf>,
    /// Every directory rrun created, parents before children.
    pub created: Vec<PathBuf>,
    /// Same keys as `paths` → the hierarchy's mount point.
    #[serde(default)]
    pub mounts: BTreeMap<String, PathBuf>,
}

/// A container's cgroup, whatever the version.
pub trait Manager {
    fn record(&self) -> &CgroupRecord;
    /// Writes `res`. At `create` every field given is written; on `update` likewise, so a
    /// field left out keeps its value.
    fn apply(&self, res: &LinuxResources) -> Result<()>;
    /// What a new process needs to join the container's cgroup cheaply (see [`Placement`]).
    fn placement(&self) -> Result<Placement>;
    fn freeze(&self) -> Result<()>;
    fn thaw(&self) -> Result<()>;
    fn is_frozen(&self) -> Result<bool>;
    /// Every process in the container's cgroup and its descendants.
    fn pids(&self) -> Result<Vec<i32>>;
    /// Signals every process; for SIGKILL without a window in which a fork escapes.
    fn kill_all(&self, sig: nix::sys::signal::Signal) -> Result<()>;
    /// How many times the kernel's OOM killer killed a process of the container.
    fn oom_kills(&self) -> Result<u64>;
    fn stats(&self) -> Result<Stats>;
    /// Removes what rrun created (after the processes are gone).
    fn destroy(&self) -> Result<()>;
}

/// How a process about to be made joins a container's cgroup without being moved by
/// another process. Writing a pid to `cgroup.procs` takes the kernel's global threadgroup
/// lock for writing, which waits for an RCU grace period: 5 to 30 ms on a 250 Hz kernel,
/// measured as the largest single cost of `create` on the hybrid CI host. Two ways need no
/// such lock: on cgroup v2 the child is born in its cgroup (`clone3` with
/// `CLONE_INTO_CGROUP`); on v1 the child moves its own (only) thread by writing `0` to each
/// hierarchy's `tasks` file, which the kernel does under `cgroup_mutex` alone.
#[derive(Debug, Default)]
pub struct Placement {
    /// The cgroup v2 directory (a unified host, or the v2 tree of a hybrid one), opened for
    /// `CLONE_INTO_CGROUP`, and its path for the fallback.
    pub cgroup2: Option<(PathBuf, std::os::fd::OwnedFd)>,
    /// v1: each hierarchy's `tasks` file of the container's cgroup, open for writing.
    pub v1_tasks: Vec<(PathBuf, std::fs::File)>,
}

impl Placement {
    fn open_v1_tasks(&mut self, dir: &Path) -> Result<()> {
        let path = dir.join("tasks");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(io_err("open", &path))?;
        self.v1_tasks.push((path, f));
        Ok(())
    }

    fn open_cgroup2(&mut self, dir: &Path) -> Result<()> {
        let fd = nix::fcntl::open(
            dir,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| io_err("open", dir)(e.into()))?;
        self.cgroup2 = Some((dir.to_path_buf(), fd));
        Ok(())
    }

    /// In the new process, before it does anything else: moves the calling thread (the
    /// process's only one) into the container's v1 cgroups.
    pub fn join_v1_self(&self) -> Result<()> {
        use std::io::Write;
        for (path, f) in &self.v1_tasks {
            (&*f).write_all(b"0").map_err(io_err("write \"0\"", path))?;
        }
        Ok(())
    }

    /// The slow way, when the kernel refused `CLONE_INTO_CGROUP`: moves `pid` into the v2
    /// cgroup from outside.
    pub fn add_to_cgroup2(&self, pid: i32) -> Result<()> {
        match &self.cgroup2 {
            Some((dir, _)) => write(dir, "cgroup.procs", &pid.to_string()),
            None => Ok(()),
        }
    }
}

/// Is `/sys/fs/cgroup` itself cgroup v2? One `statfs`, the only probe on the v2 hot path.
pub fn is_unified() -> bool {
    nix::sys::statfs::statfs(CGROUP_ROOT)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// Creates the container's cgroup (v2 or v1/hybrid, by what is mounted) for `cgroups_path`
/// and `id`. Limits are not written yet: call [`Manager::apply`].
pub fn create(cgroups_path: Option<&Path>, id: &str) -> Result<Box<dyn Manager>> {
    let rel = container_path(cgroups_path, id)?;
    if is_unified() {
        Ok(Box::new(v2::V2::create(&rel)?))
    } else {
        Ok(Box::new(v1::V1::create(&rel)?))
    }
}

/// The manager of a cgroup made earlier.
pub fn open(record: &CgroupRecord) -> Box<dyn Manager> {
    match record.version {
        Version::V2 => Box::new(v2::V2::open(record.clone())),
        Version::V1 => Box::new(v1::V1::open(record.clone())),
    }
}

/// `linux.resources` of a config (empty if none).
pub fn resources_of(spec: &oci_spec::runtime::Spec) -> LinuxResources {
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default()
}

/// `res` without its device rules, and the device rules alone (if any).
pub fn split_devices(mut res: LinuxResources) -> (LinuxResources, Option<LinuxResources>) {
    match res.devices().clone().filter(|d| !d.is_empty()) {
        Some(rules) => {
            res.set_devices(None);
            let mut only = LinuxResources::default();
            only.set_devices(Some(rules));
            (res, Some(only))
        }
        None => (res, None),
    }
}

/// `patch` over `base`, field by field (what `update` leaves out keeps its value).
pub fn merge_resources(
    base: Option<&LinuxResources>,
    patch: &LinuxResources,
) -> Result<LinuxResources> {
    fn merge(a: &mut serde_json::Value, b: &serde_json::Value) {
        match (a, b) {
            (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
                for (k, v) in b {
                    if v.is_null() {
                        continue;
                    }
                    merge(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
            (a, b) => *a = b.clone(),
        }
    }
    let bad = |e: serde_json::Error| CgroupError::Invalid(e.to_string());
    let mut a = serde_json::to_value(base.cloned().unwrap_or_default()).map_err(bad)?;
    let b = serde_json::to_value(patch).map_err(bad)?;
    merge(&mut a, &b);
    serde_json::from_value(a).map_err(bad)
}

/// The runtime's way back to its own cgroups after [`enter`].
pub struct Back {
    dirs: Vec<PathBuf>,
}

impl Back {
    pub fn leave(self) -> Result<()> {
        let me = std::process::id().to_string();
        for d in &self.dirs {
            write(d, "cgroup.procs", &me)?;
        }
        Ok(())
    }
}

/// Moves the calling process into the container's cgroup (every hierarchy), for a child
/// to be born there; [`Back::leave`] returns it to the cgroups it was in. Writing our own
/// pid back into our own cgroups is the one write to cgroups rrun did not create besides
/// v2 delegation: it only undoes our own move.
pub fn enter(rec: &CgroupRecord) -> Result<Back> {
    let own = own_cgroups()?;
    let me = std::process::id().to_string();
    let mut back = Back { dirs: Vec::new() };
    let mut seen: Vec<&PathBuf> = Vec::new();
    for (ctrl, leaf) in &rec.paths {
        if seen.contains(&leaf) {
            continue;
        }
        seen.push(leaf);
        let Some(mount) = rec.mounts.get(ctrl) else {
            continue;
        };
        let Some((_, own_path)) = own.iter().find(|(k, _)| {
            if ctrl.is_empty() || ctrl == "unified" {
                k.is_empty()
            } else {
                k.split(',').any(|c| c == ctrl)
            }
        }) else {
            continue;
        };
        if let Err(e) = write(leaf, "cgroup.procs", &me) {
            let _ = back.leave();
            return Err(e);
        }
        back.dirs
            .push(mount.join(own_path.strip_prefix("/").unwrap_or(own_path)));
    }
    Ok(back)
}

/// A container's cgroup path, as (absolute?, normalised components).
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupPath {
    pub absolute: bool,
    pub rel: PathBuf,
}

/// Checks and normalises `linux.cgroupsPath` (or the default `rrun/<id>`, relative).
pub fn container_path(cgroups_path: Option<&Path>, id: &str) -> Result<CgroupPath> {
    let (absolute, raw) = match cgroups_path {
        Some(p) if !p.as_os_str().is_empty() => (p.is_absolute(), p.to_path_buf()),
        _ => (false, Path::new("rrun").join(id)),
    };
    // The systemd driver's form `slice:prefix:name`, which containerd sends whenever a pod's
    // cgroup parent ends in `.slice` (even with its cgroupfs driver), is one relative
    // directory name with colons in it to the cgroupfs driver: runc 1.1 without
    // `--systemd-cgroup` makes exactly that directory below its own cgroup, and so does rrun
    // (see docs/compatibility.md).
    let text = raw.to_string_lossy().into_owned();
    let mut rel = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => {
                return Err(CgroupError::BadPath {
                    path: text,
                    why: "'..' is not allowed",
                });
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(CgroupError::BadPath {
            path: text,
            why: "a container's cgroup cannot be a hierarchy root",
        });
    }
    Ok(CgroupPath { absolute, rel })
}

/// The runtime's own cgroups from `/proc/self/cgroup`: hierarchy key (the controller list
/// of a v1 line, `""` for v2) → path.
pub fn own_cgroups() -> Result<Vec<(String, PathBuf)>> {
    let path = Path::new("/proc/self/cgroup");
    let entries = crate::procfs::self_cgroups().map_err(io_err("read", path))?;
    Ok(entries
        .into_iter()
        .map(|e| (e.controllers, e.path))
        .collect())
}

/// `base` joined with the cgroup's place: the runtime's own cgroup for relative paths.
fn join_under(mount: &Path, own: &Path, p: &CgroupPath) -> PathBuf {
    let mut out = mount.to_path_buf();
    if !p.absolute {
        out.push(own.strip_prefix("/").unwrap_or(own));
    }
    out.push(&p.rel);
    out
}

/// `mkdir -p` from `stop` (which exists) down to `leaf`, recording what was made. The leaf
/// must be new. `prepare` runs on every level below `stop`, made by us or found, before its
/// child is made: a level found may have just been made by a concurrent create that has not
/// prepared it yet (v1 cpuset: a cgroup with empty cpus or mems can have neither tasks nor
/// usable children), so each creator prepares every level, idempotently.
///
/// Parents are shared with concurrent creates and deletes (a delete removes the parents it
/// made once they are empty): a level removed between our mkdir of it and our mkdir of its
/// child shows up as ENOENT, and the chain starts again from the top. Once the leaf exists,
/// no parent can be removed under it.
fn make_dirs(
    stop: &Path,
    leaf: &Path,
    created: &mut Vec<PathBuf>,
    mut prepare: impl FnMut(&Path) -> Result<()>,
) -> Result<()> {
    // Each new pass means another process removed a level in the meantime; this many in a
    // row is not a race any more but a loop removing our parents.
    const PASSES: usize = 100;
    let rest = leaf.strip_prefix(stop).unwrap_or(leaf);
    let comps: Vec<_> = rest.components().collect();
    for _ in 0..PASSES {
        if make_dirs_once(stop, &comps, created, &mut prepare)? {
            // A level made again in a later pass is recorded after its children.
            created.sort_by_key(|p| p.components().count());
            return Ok(());
        }
    }
    Err(CgroupError::Io {
        op: format!("mkdir (a parent was removed {PASSES} times while being made)"),
        path: leaf.to_path_buf(),
        source: std::io::Error::from(ErrorKind::NotFound),
    })
}

/// One pass of [`make_dirs`]: `Ok(false)` when a level vanished under us.
fn make_dirs_once(
    stop: &Path,
    comps: &[Component<'_>],
    created: &mut Vec<PathBuf>,
    prepare: &mut impl FnMut(&Path) -> Result<()>,
) -> Result<bool> {
    let mut cur = stop.to_path_buf();
    for (i, c) in comps.iter().enumerate() {
        cur.push(c);
        match std::fs::create_dir(&cur) {
            Ok(()) => {
                if !created.contains(&cur) {
                    created.push(cur.clone());
                }
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                // Our own leaf from an earlier pass is fine; anyone else's is not ours.
                if i + 1 == comps.len() && !created.contains(&cur) {
                    return Err(CgroupError::Exists(cur));
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(io_err("mkdir", &cur)(e)),
        }
        match prepare(&cur) {
            Ok(()) => {}
            // A level removed under us: its files are gone (ENOENT), or still open but
            // dead (ENODEV, as the cgroup's rmdir completes).
            Err(CgroupError::Io { source, .. })
                if source.kind() == ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ENODEV) =>
            {
                return Ok(false)
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Removes the directories of `created` (children first), and any cgroups the container
/// made inside its own. Waits a little for exiting processes to leave.
fn remove_dirs(leaves: &[&Path], created: &[PathBuf]) -> Result<()> {
    for leaf in leaves {
        if created.iter().any(|c| c == leaf) {
            remove_children(leaf)?;
        }
    }
    for dir in created.iter().rev() {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == ErrorKind::NotFound => break,
                // A parent still used by another container: not ours to wait for.
                Err(e) if !leaves.contains(&dir.as_path()) && is_busy(&e) => break,
                Err(e) if is_busy(&e) && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => return Err(io_err("rmdir", dir)(e)),
            }
        }
    }
    Ok(())
}

fn is_busy(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBUSY) | Some(libc::ENOTEMPTY) | Some(libc::EEXIST)
    )
}

/// Child cgroups made inside the container's own (by a nested runtime or systemd).
fn remove_children(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let p = e.path();
            remove_children(&p)?;
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match std::fs::remove_dir(&p) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e) if is_busy(&e) && Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => return Err(io_err("rmdir", &p)(e)),
                }
            }
        }
    }
    Ok(())
}

/// Writes one cgroup file. Never with `O_CREAT`: cgroupfs files are made by the kernel, and
/// a create of a missing one fails with EACCES, hiding that the kernel lacks it (ENOENT).
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    use std::io::Write;
    let path = dir.join(file);
    let err = |source| CgroupError::Io {
        op: format!("write {value:?}"),
        path: path.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)
}

/// [`write`] of a file that some kernels lack: its absence is a clear error naming the field.
pub(crate) fn write_if_supported(dir: &Path, file: &str, value: &str, field: &str) -> Result<()> {
    match write(dir, file, value) {
        Err(CgroupError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
            Err(CgroupError::Unsupported(format!(
                "{field}: not supported by this kernel (no cgroup file {file})"
            )))
        }
        other => other,
    }
}

pub(crate) fn read(dir: &Path, file: &str) -> Result<String> {
    let path = dir.join(file);
    std::fs::read_to_string(&path).map_err(io_err("read", &path))
}

fn read_u64(dir: &Path, file: &str) -> Option<u64> {
    let s = read(dir, file).ok()?;
    let s = s.trim();
    if s == "max" {
        return Some(u64::MAX);
    }
    s.parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat, memory.events, ...).
fn read_keyed(dir: &Path, file: &str) -> BTreeMap<String, u64> {
    read(dir, file)
        .map(|s| {
            s.lines()
                .filter_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    Some((k.to_string(), v.trim().parse().ok()?))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Pids in `dir/cgroup.procs` and in every cgroup below it.
fn procs_recursive(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    let text = match read(dir, "cgroup.procs") {
        Ok(t) => t,
        Err(CgroupError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
            return Ok(())
        }
        Err(e) => return Err(e),
    };
    out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                procs_recursive(&e.path(), out)?;
            }
        }
    }
    Ok(())
}

/// runc's conversion of cgroup v1 `cpu.shares` [2, 262144] to v2 `cpu.weight` [1, 10000]
/// (the one Kubernetes also uses); 0 means "not set".
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    let s = shares.clamp(2, 262144);
    1 + ((s - 2) * 9999) / 262142
}

/// runc's conversion of a blkio weight [10, 1000] to v2 `io.weight` [1, 10000].
pub fn blkio_weight_to_io(weight: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    let w = weight.clamp(10, 1000);
    1 + (w - 10) * 9999 / 990
}

/// One device rule in the v1 `devices.allow`/`devices.deny` syntax: `c 1:3 rwm`.
pub fn device_rule(d: &LinuxDeviceCgroup) -> String {
    let typ = match d.typ().unwrap_or_default() {
        LinuxDeviceType::A => 'a',
        LinuxDeviceType::B => 'b',
        LinuxDeviceType::C | LinuxDeviceType::U => 'c',
        LinuxDeviceType::P => 'p',
    };
    let num = |n: Option<i64>| match n {
        Some(n) if n >= 0 => n.to_string(),
        _ => "*".to_string(),
    };
    let access = d.access().clone().unwrap_or_else(|| "rwm".into());
    let access = if access.is_empty() {
        "rwm".to_string()
    } else {
        access
    };
    if typ == 'a' && d.major().unwrap_or(-1) < 0 && d.minor().unwrap_or(-1) < 0 {
        return format!("a *:* {access}");
    }
    format!("{typ} {}:{} {access}", num(d.major()), num(d.minor()))
}

/// The rules the container gets: the config's, then access to the standard devices every
/// container has (`/dev/null`, `zero`, `full`, `random`, `urandom`, `tty`, `console`,
/// `ptmx`, `pts/*`), as runc appends them. Devices the config creates (`linux.devices`)
/// are not allowed implicitly: the config's rules must name them (runc does the same).
pub fn device_rules(resources: Option<&[LinuxDeviceCgroup]>) -> Vec<LinuxDeviceCgroup> {
    use oci_spec::runtime::LinuxDeviceCgroupBuilder as B;
    let mut rules: Vec<LinuxDeviceCgroup> = resources.map(|r| r.to_vec()).unwrap_or_default();
    let standard = [
        (1, 3),
        (1, 5),
        (1, 7),
        (1, 8),
        (1, 9),
        (5, 0),
        (5, 1),
        (5, 2),
        (136, -1),
    ];
    for (major, minor) in standard {
        let rule = B::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(major)
            .minor(minor)
            .access("rwm")
            .build();
        rules.extend(rule.ok());
    }
    rules
}

/// Parses a size as runc's `update` flags take it: bytes, or with a k/m/g/t suffix
/// (binary units); `-1` means unlimited.
pub fn parse_size(s: &str) -> Result<i64> {
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mul): (&str, i64) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 1 << 10),
        Some('m') => (&t[..t.len() - 1], 1 << 20),
        Some('g') => (&t[..t.len() - 1], 1 << 30),
        Some('t') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| CgroupError::Invalid(format!("size {s:?}")))?;
    if n < 0.0 {
        return Err(CgroupError::Invalid(format!("size {s:?}")));
    }
    Ok((n * mul as f64) as i64)
}

/// `Ok(())` for ENOENT on an optional file, the error otherwise.
fn optional(r: Result<()>) -> Result<()> {
    match r {
        Err(CgroupError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Waits for a freeze to finish (v1 `FREEZING` → `FROZEN`, v2 `frozen 1` in cgroup.events).
fn wait_until(what: &str, mut done: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut delay = Duration::from_micros(100);
    while !done()? {
        if Instant::now() > deadline {
            return Err(CgroupError::Unsupported(format!(
                "timed out waiting for {what}"
            )));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(10));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_convert_like_runc() {
        assert_eq!(shares_to_weight(0), 0);
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262144), 10000);
        assert_eq!(blkio_weight_to_io(10), 1);
        assert_eq!(blkio_weight_to_io(1000), 10000);
        assert_eq!(blkio_weight_to_io(500), 4950);
    }

    #[test]
    fn paths_are_checked_and_normalised() {
        let p = container_path(Some(Path::new("a/./b")), "x").unwrap();
        assert_eq!(
            p,
            CgroupPath {
                absolute: false,
                rel: "a/b".into()
            }
        );
        let p = container_path(Some(Path::new("/k/c1")), "x").unwrap();
        assert!(p.absolute);
        let p = container_path(None, "c9").unwrap();
        assert_eq!(p.rel, PathBuf::from("rrun/c9"));
        assert!(container_path(Some(Path::new("/")), "x").is_err());
        assert!(container_path(Some(Path::new("a/../../b")), "x").is_err());
        let p = container_path(Some(Path::new("k-b-pod1.slice:cri-containerd:x")), "x").unwrap();
        assert_eq!(p.rel, PathBuf::from("k-b-pod1.slice:cri-containerd:x"));
        assert!(!p.absolute);
        assert_eq!(
            join_under(
                Path::new("/m"),
                Path::new("/own"),
                &container_path(Some(Path::new("a")), "x").unwrap()
            ),
            PathBuf::from("/m/own/a")
        );
        assert_eq!(
            join_under(
                Path::new("/m"),
                Path::new("/own"),
                &container_path(Some(Path::new("/a")), "x").unwrap()
            ),
            PathBuf::from("/m/a")
        );
    }

    #[test]
    fn device_rules_render() {
        use oci_spec::runtime::LinuxDeviceCgroupBuilder as B;
        let deny_all = B::default().allow(false).access("rwm").build().unwrap();
        assert_eq!(device_rule(&deny_all), "a *:* rwm");
        let one = B::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(10)
            .minor(200)
            .access("rw")
            .build()
            .unwrap();
        assert_eq!(device_rule(&one), "c 10:200 rw");
        let rules = device_rules(Some(&[deny_all]));
        assert!(rules.iter().any(|r| device_rule(r) == "c 136:* rwm"));
    }

    #[test]
    fn update_merges_over_the_saved_resources() {
        let base: LinuxResources = serde_json::from_str(
            r#"{"memory": {"limit": 100, "swap": 200}, "pids": {"limit": 5}, "devices": [{"allow": false, "access": "rwm"}]}"#,
        )
        .unwrap();
        let patch: LinuxResources = serde_json::from_str(r#"{"memory": {"limit": 150}}"#).unwrap();
        let m = merge_resources(Some(&base), &patch).unwrap();
        assert_eq!(m.memory().unwrap().limit(), Some(150));
        assert_eq!(m.memory().unwrap().swap(), Some(200));
        assert_eq!(m.pids().as_ref().unwrap().limit(), 5);
        let (rest, devices) = split_devices(m);
        assert!(rest.devices().is_none());
        assert_eq!(devices.unwrap().devices().as_ref().unwrap().len(), 1);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("32m").unwrap(), 32 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("-1").unwrap(), -1);
        assert!(parse_size("lots").is_err());
    }
}
