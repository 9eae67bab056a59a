//! The container's mounts: /proc, /dev, /sys and cgroups, the pod's /dev/shm, hostname,
//! hosts and resolv.conf, then the request's binds (replacing ours at the same place).

use std::fs;
use std::path::Path;

use cri_proto::api;
use oci_spec::runtime::Mount;

use super::{invalid, SpecError, SpecInputs};

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

pub(super) fn mounts(
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
