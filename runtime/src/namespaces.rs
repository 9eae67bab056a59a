//! Linux namespaces: which ones a container gets new, which it joins by path, the user
//! namespace's id maps, the time namespace's offsets, and the namespaced sysctls.

use crate::error::{Context, Error, Result};
use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespace, LinuxNamespaceType, Spec};
use std::collections::HashMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

pub fn clone_flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The name of the namespace under `/proc/PID/ns/`.
pub fn proc_name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// Every namespace type, in the order they are joined: the user namespace first (it owns
/// the others, so joining it grants the rights to join them), the mount namespace last (once
/// in it, the `path`s of the others may no longer resolve; we hold their fds anyway).
pub const JOIN_ORDER: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::User,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Mount,
];

/// A container's namespace plan, resolved from the spec before anything is cloned.
#[derive(Debug, Default)]
pub struct NamespacePlan {
    /// Namespaces to create.
    pub new: Vec<LinuxNamespaceType>,
    /// Namespaces to join, opened up front so a path that vanishes later cannot surprise us.
    pub join: Vec<(LinuxNamespaceType, File)>,
}

impl NamespacePlan {
    pub fn from_spec(spec: &Spec) -> Result<Self> {
        let namespaces: &[LinuxNamespace] = spec
            .linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_deref())
            .unwrap_or(&[]);
        let mut plan = NamespacePlan::default();
        for ns in namespaces {
            match ns.path() {
                None => plan.new.push(ns.typ()),
                Some(p) if p.as_os_str().is_empty() => plan.new.push(ns.typ()),
                Some(p) => {
                    let f = File::open(p).ctx(|| {
                        format!("opening {} namespace {}", proc_name(ns.typ()), p.display())
                    })?;
                    plan.join.push((ns.typ(), f));
                }
            }
        }
        plan.join
            .sort_by_key(|(t, _)| JOIN_ORDER.iter().position(|o| o == t));
        Ok(plan)
    }

    pub fn creates(&self, typ: LinuxNamespaceType) -> bool {
        self.new.contains(&typ)
    }

    pub fn joins(&self, typ: LinuxNamespaceType) -> bool {
        self.join.iter().any(|(t, _)| *t == typ)
    }

    /// The flags for `clone(2)` when the init is cloned straight into its new namespaces.
    ///
    /// Left out, and done by the child itself with `unshare`: the cgroup namespace (its root is
    /// the cgroup the process is in when it is made, so it must come after the cgroup is
    /// joined), the time namespace (`clone` cannot take its flag and its offsets must be set
    /// before any process is in it), and everything but the user namespace when the user
    /// namespace is joined by path (new namespaces must be owned by that user namespace).
    pub fn clone_flags(&self) -> CloneFlags {
        if self.joins(LinuxNamespaceType::User) {
            return CloneFlags::empty();
        }
        self.new
            .iter()
            .filter(|t| !matches!(t, LinuxNamespaceType::Cgroup | LinuxNamespaceType::Time))
            .fold(CloneFlags::empty(), |acc, t| acc | clone_flag(*t))
    }

    /// New namespaces the child must `unshare` after joining the ones given by path.
    pub fn unshare_flags_after_join(&self) -> CloneFlags {
        if !self.joins(LinuxNamespaceType::User) {
            return CloneFlags::empty();
        }
        self.new
            .iter()
            .filter(|t| !matches!(t, LinuxNamespaceType::Cgroup | LinuxNamespaceType::Time))
            .fold(CloneFlags::empty(), |acc, t| acc | clone_flag(*t))
    }

    /// A combination we cannot build without a second fork: a joined user namespace that
    /// must own a new PID namespace (only a child of the `unshare`r would enter it).
    pub fn check_supported(&self) -> Result<()> {
        if self.joins(LinuxNamespaceType::User) && self.creates(LinuxNamespaceType::Pid) {
            return Err(Error::Invalid(
                "joining a user namespace by path together with a new pid namespace is not supported; \
                 join the pid namespace by path too, or let rrun create the user namespace"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Joins the pid namespace by path. Only the children made after this are in it, so the
    /// runtime does this in itself just before cloning the init.
    pub fn join_pid_for_children(&self) -> Result<()> {
        for (typ, f) in &self.join {
            if *typ == LinuxNamespaceType::Pid {
                setns(f.as_fd(), CloneFlags::CLONE_NEWPID)
                    .ctx(|| "joining pid namespace".into())?;
            }
        }
        Ok(())
    }

    /// In the child: joins every namespace given by path except pid (done by the parent).
    pub fn join_in_child(&self) -> Result<()> {
        for (typ, f) in &self.join {
            if *typ == LinuxNamespaceType::Pid {
                continue;
            }
            setns(f.as_fd(), clone_flag(*typ))
                .ctx(|| format!("joining {} namespace", proc_name(*typ)))?;
        }
        let late = self.unshare_flags_after_join();
        if !late.is_empty() {
            unshare(late).ctx(|| "creating namespaces in the joined user namespace".into())?;
        }
        Ok(())
    }
}

/// Enters a new cgroup namespace rooted at the cgroup the caller is in now.
pub fn unshare_cgroup() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWCGROUP).ctx(|| "creating cgroup namespace".into())
}

/// Creates a time namespace with the given offsets and moves the caller into it.
///
/// `unshare(CLONE_NEWTIME)` only affects children; offsets may only be written while the
/// namespace is empty; and `setns` into `time_for_children` then moves the caller itself.
pub fn enter_new_time_namespace(offsets: &HashMap<String, (i64, u32)>) -> Result<()> {
    unshare(clone_flag(LinuxNamespaceType::Time)).ctx(|| "creating time namespace".into())?;
    if !offsets.is_empty() {
        let mut text = String::new();
        for (clock, (secs, nanos)) in offsets {
            text.push_str(&format!("{clock} {secs} {nanos}\n"));
        }
        std::fs::write("/proc/self/timens_offsets", text)
            .ctx(|| "writing /proc/self/timens_offsets".into())?;
    }
    let ns = File::open("/proc/self/ns/time_for_children")
        .ctx(|| "opening /proc/self/ns/time_for_children".into())?;
    setns(ns.as_fd(), clone_flag(LinuxNamespaceType::Time)).ctx(|| "entering time namespace".into())
}

/// Time offsets from the spec as `clock -> (secs, nanosecs)`.
pub fn time_offsets(spec: &Spec) -> HashMap<String, (i64, u32)> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.time_offsets().as_ref())
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        (v.secs().unwrap_or(0), v.nanosecs().unwrap_or(0)),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes a new user namespace's uid and gid maps (from the parent, which is outside it).
pub fn write_id_maps(pid: i32, uid: &[LinuxIdMapping], gid: &[LinuxIdMapping]) -> Result<()> {
    write_map(&format!("/proc/{pid}/uid_map"), uid)?;
    write_map(&format!("/proc/{pid}/gid_map"), gid)
}

fn write_map(path: &str, maps: &[LinuxIdMapping]) -> Result<()> {
    let text = format_id_map(maps);
    std::fs::write(path, text).ctx(|| format!("writing {path}"))
}

pub fn format_id_map(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Writes the container's sysctls through `/proc/sys`, after the namespaces they belong to
/// exist and `/proc` is the container's own.
pub fn apply_sysctls(sysctls: &HashMap<String, String>) -> Result<()> {
    for (key, value) in sysctls {
        let path = sysctl_path(key)?;
        std::fs::write(&path, value).ctx(|| format!("setting sysctl {key}={value}"))?;
    }
    Ok(())
}

fn sysctl_path(key: &str) -> Result<PathBuf> {
    if key.is_empty() || key.split(['.', '/']).any(|c| c.is_empty() || c == "..") {
        return Err(Error::Invalid(format!("invalid sysctl name {key:?}")));
    }
    Ok(Path::new("/proc/sys").join(key.replace('.', "/")))
}

/// Opens each namespace of a running process, for `exec`.
pub fn open_process_namespaces(
    pid: i32,
    wanted: impl Iterator<Item = LinuxNamespaceType>,
) -> Result<Vec<(LinuxNamespaceType, File)>> {
    let own_ns = |name: &str| std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
    let mut out = Vec::new();
    for typ in wanted {
        let name = proc_name(typ);
        let path = format!("/proc/{pid}/ns/{name}");
        // Joining a namespace we are already in is an error for some types (user) and a
        // no-op for the rest: skip it.
        if std::fs::read_link(&path).ok() == own_ns(name) {
            continue;
        }
        let f = File::open(&path).ctx(|| format!("opening {path}"))?;
        out.push((typ, f));
    }
    out.sort_by_key(|(t, _)| JOIN_ORDER.iter().position(|o| o == t));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_names_map_to_proc_sys_and_cannot_escape_it() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            Path::new("/proc/sys/net/ipv4/ip_forward")
        );
        assert_eq!(
            sysctl_path("kernel/shm_rmid_forced").unwrap(),
            Path::new("/proc/sys/kernel/shm_rmid_forced")
        );
        for bad in ["", "..", "net..x", "a/../../etc", "net."] {
            assert!(sysctl_path(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn id_maps_are_one_line_per_range() {
        let m = oci_spec::runtime::LinuxIdMappingBuilder::default()
            .container_id(0u32)
            .host_id(100000u32)
            .size(65536u32)
            .build()
            .unwrap();
        assert_eq!(format_id_map(&[m]), "0 100000 65536\n");
    }

    #[test]
    fn cgroup_and_time_namespaces_are_not_clone_flags() {
        let plan = NamespacePlan {
            new: vec![
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Cgroup,
                LinuxNamespaceType::Time,
                LinuxNamespaceType::Mount,
            ],
            join: vec![],
        };
        assert_eq!(
            plan.clone_flags(),
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS
        );
    }
}
