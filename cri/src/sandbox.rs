//! A pod sandbox without a pause process: its network, IPC and UTS namespaces are created
//! by a short-lived thread and pinned by bind-mounting `/proc/thread-self/ns/*` onto files
//! (a pod-wide pid namespace is the exception: it needs a living init, see
//! [`start_pod_init`]);
//! the pod's hostname, hosts and resolv.conf are files every container bind-mounts; its
//! `/dev/shm` is one tmpfs shared by its containers (they share the IPC namespace too).

use std::fs;
use std::path::{Path, PathBuf};

use cri_proto::api;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

use crate::records::{PinnedNamespaces, PodInit};
use rrun::procfs::process_start_time;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{what}: {source}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the namespace-pinning thread died")]
    ThreadDied,
    #[error("the pod's pid 1: {0}")]
    PodInit(String),
}

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Sys { what, source }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}

/// Which of the pod's namespaces are its own (not the node's).
#[derive(Debug, Clone, Copy)]
pub struct OwnNamespaces {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
}

impl OwnNamespaces {
    pub fn of(config: &api::PodSandboxConfig) -> Self {
        let opts = config
            .linux
            .as_ref()
            .and_then(|l| l.security_context.as_ref())
            .and_then(|s| s.namespace_options.as_ref());
        let node = api::NamespaceMode::Node as i32;
        let net = opts.map(|o| o.network != node).unwrap_or(true);
        OwnNamespaces {
            net,
            ipc: opts.map(|o| o.ipc != node).unwrap_or(true),
            // The pod's hostname is the node's when it uses the node's network (kubelet and
            // containerd alike).
            uts: net,
        }
    }
}

/// Creates the pod's namespaces and pins them under `run_dir`. On error nothing remains.
///
/// A dedicated OS thread does the `unshare`: net, IPC and UTS namespaces belong to a
/// thread, so the server's other threads never change namespace, and the thread's end
/// leaves the namespaces alive only through their bind mounts.
pub fn pin_namespaces(
    run_dir: &Path,
    own: OwnNamespaces,
    hostname: &str,
) -> Result<PinnedNamespaces, SandboxError> {
    fs::create_dir_all(run_dir).map_err(io(format!("mkdir {}", run_dir.display())))?;
    let run_dir = run_dir.to_path_buf();
    let hostname = hostname.to_string();
    std::thread::spawn(move || pin_in_this_thread(&run_dir, own, &hostname))
        .join()
        .map_err(|_| SandboxError::ThreadDied)?
}

fn pin_in_this_thread(
    run_dir: &Path,
    own: OwnNamespaces,
    hostname: &str,
) -> Result<PinnedNamespaces, SandboxError> {
    let mut flags = CloneFlags::empty();
    if own.net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if own.ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if own.uts {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    let mut pinned = PinnedNamespaces::default();
    if flags.is_empty() {
        return Ok(pinned);
    }
    unshare(flags).map_err(sys("unshare the pod's namespaces"))?;
    let result = (|| {
        if own.uts && !hostname.is_empty() {
            nix::unistd::sethostname(hostname).map_err(sys(format!("sethostname {hostname:?}")))?;
        }
        if own.net {
            bring_up_loopback()?;
            pinned.net = Some(pin_one(run_dir, "net")?);
        }
        if own.ipc {
            pinned.ipc = Some(pin_one(run_dir, "ipc")?);
        }
        if own.uts {
            pinned.uts = Some(pin_one(run_dir, "uts")?);
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(pinned),
        Err(e) => {
            unpin_namespaces(&pinned);
            Err(e)
        }
    }
}

fn pin_one(run_dir: &Path, ns: &str) -> Result<PathBuf, SandboxError> {
    pin_from(&format!("/proc/thread-self/ns/{ns}"), run_dir.join(ns))
}

fn pin_from(source: &str, target: PathBuf) -> Result<PathBuf, SandboxError> {
    fs::File::create(&target).map_err(io(format!("create {}", target.display())))?;
    if let Err(e) = mount(
        Some(source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    ) {
        let _ = fs::remove_file(&target);
        return Err(sys(format!("bind {source} on {}", target.display()))(e));
    }
    Ok(target)
}

/// The new network namespace's `lo` starts down; kubelet's probes and the pod's own
/// processes expect 127.0.0.1 (the CNI loopback plugin does this where CNI is used).
fn bring_up_loopback() -> Result<(), SandboxError> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sys("socket for lo"))?;
    set_interface_up(&sock, "lo").map_err(sys("bring lo up"))
}

fn set_interface_up(sock: &std::os::fd::OwnedFd, name: &str) -> nix::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the flags of the interface named in `req` into it; `req`
    // is a valid ifreq that lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(nix::Error::last());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds the flags.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(nix::Error::last());
    }
    Ok(())
}

/// Unmounts and removes every pinned namespace file; what is already gone is fine.
pub fn unpin_namespaces(pinned: &PinnedNamespaces) {
    for path in [&pinned.net, &pinned.ipc, &pinned.uts, &pinned.pid]
        .into_iter()
        .flatten()
    {
        unmount_and_remove(path);
    }
}

fn unmount_and_remove(path: &Path) {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => tracing::warn!("umount {}: {e}", path.display()),
    }
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!("remove {}: {e}", path.display());
        }
    }
}

/// Does the pod ask for one pid namespace for all its containers (shareProcessNamespace)?
pub fn shares_pid_namespace(config: &api::PodSandboxConfig) -> bool {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        // Unset options are the enum's defaults, POD (containerd: the pause container's
        // own pid namespace, which the pod's containers then join by default too).
        .is_none_or(|o| o.pid == api::NamespaceMode::Pod as i32)
}

/// Starts the pid 1 of a pod-wide pid namespace with `starter` (a command that runs
/// [`crate::monitor::run_pod_init`]) and pins its namespace as `run_dir/pid`. On error
/// nothing remains.
pub fn start_pod_init(
    mut starter: std::process::Command,
    run_dir: &Path,
) -> Result<(PodInit, PathBuf), SandboxError> {
    let out = starter
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(io("starting the pod's pid 1"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pid = match crate::monitor::protocol::StartReport::parse(&text, || {
        format!("no report ({})", out.status)
    }) {
        crate::monitor::protocol::StartReport::Started { pid } => pid,
        crate::monitor::protocol::StartReport::Failed(f) => {
            return Err(SandboxError::PodInit(f.message))
        }
    };
    let init = match process_start_time(pid) {
        Some(start_time) => PodInit { pid, start_time },
        None => return Err(SandboxError::PodInit(format!("pid {pid} is gone at once"))),
    };
    match pin_from(&format!("/proc/{pid}/ns/pid"), run_dir.join("pid")) {
        // Pinned after the start time was read: if the pid was reused in between, the
        // start time no longer matches and the pod is not ready (see pod_init_alive).
        Ok(path) => Ok((init, path)),
        Err(e) => {
            stop_pod_init(&init);
            Err(e)
        }
    }
}

/// Is the pod's pid 1 still the process that was started?
pub fn pod_init_alive(init: &PodInit) -> bool {
    process_start_time(init.pid) == Some(init.start_time)
}

/// SIGKILLs the pod's pid 1 (the kernel then kills what is left in its namespace), unless
/// its pid now belongs to another process.
pub fn stop_pod_init(init: &PodInit) {
    if pod_init_alive(init) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(init.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Is a pinned namespace file still a mounted namespace (after a reboot it is an empty
/// file)?
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
        .unwrap_or(false)
}

/// The pod's `/dev/shm`: a tmpfs of 64 MiB (Docker's and containerd's default size).
pub fn mount_shm(run_dir: &Path) -> Result<PathBuf, SandboxError> {
    let target = run_dir.join("shm");
    fs::create_dir_all(&target).map_err(io(format!("mkdir {}", target.display())))?;
    mount(
        Some("shm"),
        &target,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("mode=1777,size=65536k"),
    )
    .map_err(sys(format!("mount tmpfs on {}", target.display())))?;
    Ok(target)
}

pub fn unmount_shm(path: &Path) {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => tracing::warn!("umount {}: {e}", path.display()),
    }
    let _ = fs::remove_dir(path);
}

/// Writes the files every container of the pod bind-mounts: `hostname`, `hosts`,
/// `resolv.conf` (from the request's DNS config, else the node's, as containerd does).
pub fn write_pod_files(
    dir: &Path,
    config: &api::PodSandboxConfig,
    hostname: &str,
) -> Result<(), SandboxError> {
    fs::create_dir_all(dir).map_err(io(format!("mkdir {}", dir.display())))?;
    let write = |name: &str, data: &[u8]| {
        let p = dir.join(name);
        fs::write(&p, data).map_err(io(format!("write {}", p.display())))
    };
    write("hostname", format!("{hostname}\n").as_bytes())?;
    let mut hosts = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    if !hostname.is_empty() {
        hosts.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    write("hosts", hosts.as_bytes())?;
    let resolv = match &config.dns_config {
        Some(dns) => resolv_conf(dns),
        None => fs::read("/etc/resolv.conf")
            .map(|d| String::from_utf8_lossy(&d).into_owned())
            .unwrap_or_default(),
    };
    write("resolv.conf", resolv.as_bytes())
}

pub fn resolv_conf(dns: &api::DnsConfig) -> String {
    let mut out = String::new();
    if !dns.searches.is_empty() {
        out.push_str(&format!("search {}\n", dns.searches.join(" ")));
    }
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

/// The pod's hostname: the request's, else the node's, as containerd does (for the
/// sandbox's UTS namespace, `/etc/hostname` and `HOSTNAME`). A pod on the node's network
/// keeps the node's UTS namespace whatever this says.
pub fn hostname_of(config: &api::PodSandboxConfig) -> String {
    if !config.hostname.is_empty() {
        return config.hostname.clone();
    }
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_default()
}

/// The longest hostname the kernel takes (`HOST_NAME_MAX`).
const HOST_NAME_MAX: usize = 64;

/// Checks an explicit hostname: at most 64 bytes (the kernel's limit), dot-separated RFC
/// 1123 labels (letters, digits and `-`, 1 to 63 of them, no `-` at either end).
pub fn validate_hostname(name: &str) -> Result<(), String> {
    if name.len() > HOST_NAME_MAX {
        return Err(format!(
            "hostname {name:?} is {} bytes long; the kernel takes at most {HOST_NAME_MAX}",
            name.len()
        ));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "hostname {name:?} is not an RFC 1123 name (dot-separated labels of letters, \
                 digits and '-', not beginning or ending with '-'): label {label:?}"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames_are_checked_as_rfc_1123_within_64_bytes() {
        for good in [
            "a",
            "pod-1",
            "a.b-c.D9",
            &"x".repeat(63),
            &format!("{}.b", "a".repeat(62)),
        ] {
            assert_eq!(validate_hostname(good), Ok(()), "{good:?}");
        }
        for bad in [
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "a_b",
            "a b",
            "a/b",
            "é",
            &"x".repeat(64),
            &"x".repeat(65),
        ] {
            assert!(validate_hostname(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn resolv_conf_has_search_servers_and_options() {
        let dns = api::DnsConfig {
            servers: vec!["10.0.0.10".into(), "10.0.0.11".into()],
            searches: vec![
                "default.svc.cluster.local".into(),
                "svc.cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(&dns),
            "search default.svc.cluster.local svc.cluster.local\n\
             nameserver 10.0.0.10\nnameserver 10.0.0.11\noptions ndots:5\n"
        );
    }

    #[test]
    fn pinned_namespaces_outlive_the_thread_and_unpin_cleanly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let own = OwnNamespaces {
            net: true,
            ipc: true,
            uts: true,
        };
        let pinned = pin_namespaces(dir.path(), own, "pod-a").expect("pin");
        let net = pinned.net.clone().expect("net pinned");
        assert!(is_pinned(&net));
        let host_net = fs::read_link("/proc/self/ns/net").expect("readlink");
        // The pinned file is a different network namespace from ours.
        let ino = |p: &Path| {
            use std::os::unix::fs::MetadataExt;
            fs::metadata(p).expect("stat").ino()
        };
        let host_ino = ino(Path::new("/proc/self/ns/net"));
        assert_ne!(ino(&net), host_ino, "host netns is {host_net:?}");
        unpin_namespaces(&pinned);
        assert!(!net.exists());
    }
}
