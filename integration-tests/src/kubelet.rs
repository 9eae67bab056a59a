//! Harness of the stock-kubelet test (`tests/stock_kubelet.rs`) and its benchmark: Debian's
//! kubelet v1.20 (built by `scripts/kubelet.sh`), unmodified, running static pods through a
//! CRI endpoint inside a "node" the test makes, so that the kubelet cannot change the host.
//!
//! The node ([`Node`]) is a holder process (`unshare --net --mount --propagation private`)
//! whose namespaces the kubelet and the CRI server enter with `nsenter --target PID --net
//! --mount` (not `ip netns exec`, which remounts `/sys` and hides `/sys/fs/cgroup`). In its
//! mount namespace `/var` is the test's own directory (the kubelet's `/var/log/pods`, the
//! runtime's pod logs, CNI's IPAM state land there), and `/proc/sys` is read-only, except
//! `/proc/sys/net`, which shows the node's own network namespace (the CNI bridge plugin
//! writes `ip_forward` there), and the six tunables of [`KUBELET_TUNABLES`]: the kubelet
//! writes them at start-up (`vm.overcommit_memory` 1, `kernel.panic` 10, ...) and exits when
//! it cannot, so files of the test's own are bound over them; its writes land there. Its
//! shared mount of its root dir stays in the private namespace. The node's temp dir is a
//! shared mount there, and containerd's own namespace a slave of it, so that the volume
//! mounts a node agent makes under it after containerd started reach the containers. Nothing is bound to a host path: when the holder and
//! the processes in its namespaces are gone, so are the namespaces.
//!
//! [`Kubelet`] is the kubelet process, with its root, cert, volume-plugin and seccomp dirs in
//! the test's temp dir and its cgroup root `/rrun-test/kubelet-<unique>` (made beforehand,
//! removed after). Both guards kill what they started on drop, also on panic.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::cri::{api, Client, CriServer, FixtureImage};
use crate::engines::{pids_in_cgroup, try_run_bounded, Containerd, CRI_SANDBOX_IMAGE, RUNC};
use crate::{cgroup_dirs, json, remove_cgroups, scaled, Value, CGROUP_PARENT};

/// The kubelet's read-only port (on the node's own loopback).
pub const READ_ONLY_PORT: u16 = 10255;

/// The sysctls kubelet 1.20's container manager sets (`setupKernelTunables`), and whose
/// write failure is fatal to it.
pub const KUBELET_TUNABLES: &[&str] = &[
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
];

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The stock kubelet: `$RRUN_KUBELET_BIN`, else what `scripts/kubelet.sh` built (building it
/// now if needed, once per machine). `Err(why)` if it cannot be had.
pub fn kubelet_binary() -> Result<PathBuf, String> {
    crate::script_binary("RRUN_KUBELET_BIN", "kubelet.sh")
}

/// Kills `child`'s process group and the child, then reaps it.
fn kill_and_reap(child: &mut Child) {
    let pid = child.id() as i32;
    // SAFETY: plain kill(2) of a child we started, and of its own process group.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// A `Command` that dies with the test process (the Drop guards do not run when the runner
/// kills it), in its own process group.
fn guarded(mut cmd: Command) -> Command {
    // SAFETY: prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    cmd.process_group(0);
    cmd
}

/// The node's network and mount namespaces, held by a process of the test. See the module docs.
pub struct Node {
    tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    holder: Option<Child>,
    pid: i32,
}

impl Node {
    /// Makes the namespaces (loopback up, `/var` = `<tmp>/var`, `/proc/sys` read-only but
    /// `/proc/sys/net`) and waits until the holder has set them up.
    pub fn start() -> Node {
        // Not below /var: the node's /var hides the host's.
        let parent = std::env::temp_dir();
        assert!(
            !parent.starts_with("/var"),
            "the temp dir {} is below /var, which the node replaces: set TMPDIR",
            parent.display()
        );
        let tmp = tempfile::Builder::new()
            .prefix("rrun-kubelet-")
            .tempdir_in(&parent)
            .expect("making the node's temp dir");
        let dir = tmp.path().to_path_buf();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        for d in ["var/log/pods", "var/lib", "var/tmp", "out"] {
            fs::create_dir_all(dir.join(d)).expect("mkdir");
        }
        let ready = dir.join("ready");
        // The kernel tunables the kubelet's container manager sets at start-up, and dies
        // if it cannot: writable copies (with the host's values) bound over them, so the
        // kubelet's writes land in the test's files, which the test then reads.
        fs::create_dir_all(dir.join("sysctl")).expect("mkdir sysctl");
        let tunables: Vec<String> = KUBELET_TUNABLES
            .iter()
            .map(|key| {
                let proc_path = format!("/proc/sys/{}", key.replace('.', "/"));
                let copy = dir.join("sysctl").join(key);
                let value = fs::read_to_string(&proc_path)
                    .unwrap_or_else(|e| panic!("reading {proc_path}: {e}"));
                fs::write(&copy, value).expect("writing a sysctl copy");
                format!("mount --bind '{}' {proc_path}\n", copy.display())
            })
            .collect();
        let script = format!(
            "set -e\n\
             ip link set lo up\n\
             mount --bind '{dir}' '{dir}'\n\
             mount --make-shared '{dir}'\n\
             mount --bind '{var}' /var\n\
             mount --bind /proc/sys /proc/sys\n\
             mount -o remount,bind,ro /proc/sys\n\
             mount --bind /proc/sys/net /proc/sys/net\n\
             mount -o remount,bind,rw /proc/sys/net\n\
             {tunables}\
             touch '{ready}'\n\
             exec sleep 1000000000\n",
            dir = dir.display(),
            var = dir.join("var").display(),
            ready = ready.display(),
            tunables = tunables.join(""),
        );
        let log = fs::File::create(dir.join("out/holder.log")).expect("holder log");
        let mut cmd = Command::new("unshare");
        cmd.args([
            "--net",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
        ])
        .arg(script)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log);
        let mut holder = guarded(cmd)
            .spawn()
            .expect("spawn the node's holder (unshare)");
        let pid = holder.id() as i32;
        let deadline = Instant::now() + scaled(Duration::from_secs(20));
        while !ready.exists() {
            if let Ok(Some(st)) = holder.try_wait() {
                panic!(
                    "setting up the node's namespaces failed ({st}):\n{}",
                    fs::read_to_string(dir.join("out/holder.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the node's namespaces: not set up in time"
            );
            thread::sleep(Duration::from_millis(10));
        }
        Node {
            tmp: Some(tmp),
            dir,
            holder: Some(holder),
            pid,
        }
    }

    /// The test's temp dir (the node's `/var` is `var/` in it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The holder's pid (`nsenter --target`).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The node's copy of the kernel tunable `key` (one of [`KUBELET_TUNABLES`]): what the
    /// kubelet wrote there, or the host's value from before.
    pub fn tunable(&self, key: &str) -> String {
        fs::read_to_string(self.dir.join("sysctl").join(key))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// `nsenter --target <holder> --net --mount --`: the prefix that runs a command on the node.
    pub fn wrap(&self) -> Vec<String> {
        vec![
            "nsenter".into(),
            "--target".into(),
            self.pid.to_string(),
            "--net".into(),
            "--mount".into(),
            "--".into(),
        ]
    }

    /// The node's network namespace link (`net:[...]`).
    pub fn netns(&self) -> String {
        fs::read_link(format!("/proc/{}/ns/net", self.pid))
            .map(|l| l.display().to_string())
            .unwrap_or_default()
    }

    /// Runs `args` in the node's network namespace only (the host's mounts: `/bin/busybox`
    /// and friends), bounded; `None` on a timeout.
    pub fn run_net(&self, args: &[&str], timeout: Duration) -> Option<crate::Output> {
        let mut c = Command::new("nsenter");
        c.arg("--target")
            .arg(self.pid.to_string())
            .args(["--net", "--"])
            .args(args);
        try_run_bounded(c, &self.dir.join("out"), None, timeout).ok()
    }

    /// Mount points at or below `dir` in the node's mount namespace, except the node's own
    /// shared bind of its temp dir.
    pub fn mounts_under(&self, dir: &Path) -> Vec<String> {
        let own = self.dir.display().to_string();
        crate::engines::mounts_under_in(self.pid, dir)
            .into_iter()
            .filter(|m| *m != own)
            .collect()
    }

    /// Network interfaces of the node (`ip -o link`), names only.
    pub fn links(&self) -> Vec<String> {
        self.run_net(&["ip", "-o", "link"], Duration::from_secs(10))
            .map(|o| {
                o.stdout
                    .lines()
                    .filter_map(|l| l.split(':').nth(1))
                    .map(|n| n.trim().split('@').next().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut h) = self.holder.take() {
            kill_and_reap(&mut h);
        }
        // Nothing of the node is mounted in the host's namespace; what the kubelet and the
        // runtimes mounted went with the node's mount namespace.
        if let Some(tmp) = self.tmp.take() {
            if std::env::var_os("RRUN_TEST_KEEP").is_some() {
                eprintln!("RRUN_TEST_KEEP: leaving {}", tmp.keep().display());
            } else if let Err(e) = tmp.close() {
                eprintln!("cleanup: removing {}: {e}", self.dir.display());
            }
        }
    }
}

/// The stock kubelet, standalone (no API server), on a [`Node`].
pub struct Kubelet {
    child: Option<Child>,
    /// `--pod-manifest-path`.
    pub manifests: PathBuf,
    /// `--root-dir`.
    pub root_dir: PathBuf,
    /// `--cgroup-root` (absolute in each hierarchy).
    pub cgroup_root: String,
    log: PathBuf,
}

impl Kubelet {
    /// Starts `bin` on `node` against the CRI socket `endpoint`; `tag` names its dirs.
    pub fn start(
        bin: &Path,
        node: &Node,
        endpoint: &Path,
        cgroups: &CgroupRoot,
        tag: &str,
    ) -> Kubelet {
        let base = node.dir().join(format!("kubelet-{tag}"));
        let sub = |d: &str| {
            let p = base.join(d);
            fs::create_dir_all(&p).expect("mkdir");
            p
        };
        let manifests = sub("manifests");
        let root_dir = sub("root");
        let cert_dir = sub("pki");
        let plugins = sub("volume-plugins");
        let seccomp = sub("seccomp");
        let cgroup_root = cgroups.0.clone();
        // The node's /var hides the build cache: a link (or copy) in the test's dir.
        let local_bin = base.join("kubelet");
        if fs::hard_link(bin, &local_bin).is_err() {
            fs::copy(bin, &local_bin).expect("copying the kubelet binary");
        }
        let log = base.join("kubelet.log");
        let out = fs::File::create(&log).expect("kubelet log");
        let mut cmd = Command::new("nsenter");
        cmd.arg("--target")
            .arg(node.pid().to_string())
            .args(["--net", "--mount", "--"])
            .arg(&local_bin)
            .arg("--container-runtime=remote")
            .arg(format!(
                "--container-runtime-endpoint=unix://{}",
                endpoint.display()
            ))
            .arg(format!("--pod-manifest-path={}", manifests.display()))
            .arg(format!("--root-dir={}", root_dir.display()))
            .arg(format!("--cert-dir={}", cert_dir.display()))
            .arg(format!("--volume-plugin-dir={}", plugins.display()))
            .arg(format!("--seccomp-profile-root={}", seccomp.display()))
            .arg(format!("--cgroup-root=/{cgroup_root}"))
            .args([
                "--cgroup-driver=cgroupfs",
                "--fail-swap-on=false",
                "--make-iptables-util-chains=false",
                "--hostname-override=rrun-node",
                "--address=127.0.0.1",
                "--healthz-bind-address=127.0.0.1",
                "--v=2",
                // The node is the machine's disk, shared with everything else: with the
                // default thresholds (10 % free) a full build machine puts the node under
                // DiskPressure, and the kubelet's reclaim deletes the test's images (never
                // to be pulled again) and no container starts.
                "--eviction-hard=memory.available<10Mi,nodefs.available<50Mi,imagefs.available<50Mi,nodefs.inodesFree<1%",
                "--image-gc-high-threshold=100",
                "--image-gc-low-threshold=99",
            ])
            .arg(format!("--read-only-port={READ_ONLY_PORT}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out);
        let child = guarded(cmd).spawn().expect("spawn the kubelet (nsenter)");
        Kubelet {
            child: Some(child),
            manifests,
            root_dir,
            cgroup_root,
            log,
        }
    }

    /// The kubelet's log so far.
    pub fn log(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = self.log();
        let lines: Vec<&str> = text.lines().collect();
        let from = lines.len().saturating_sub(n);
        format!(
            "--- kubelet log (last {} lines of {}) ---\n{}\n--- end of kubelet log ---",
            lines.len() - from,
            self.log.display(),
            lines[from..].join("\n")
        )
    }

    /// The kubelet's fatal log line (klog's `F<mmdd> ...`, printed before its goroutine
    /// dump), if any.
    pub fn fatal_line(&self) -> Option<String> {
        self.log()
            .lines()
            .find(|l| {
                l.len() > 5 && l.starts_with('F') && l[1..5].bytes().all(|b| b.is_ascii_digit())
            })
            .map(str::to_string)
    }

    /// The kubelet's exit status if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Panics (with its log) if the kubelet has exited.
    #[track_caller]
    pub fn assert_alive(&mut self) {
        if let Some(Ok(Some(st))) = self.child.as_mut().map(Child::try_wait) {
            panic!(
                "the kubelet exited ({st}): {}\n{}",
                self.fatal_line().unwrap_or_default(),
                self.log_tail(60)
            );
        }
    }

    /// Writes the static pod `manifest` as `<name>.json`.
    pub fn add_pod(&self, name: &str, manifest: &Value) {
        let tmp = self.manifests.join(format!(".{name}.tmp"));
        fs::write(&tmp, serde_json::to_vec_pretty(manifest).expect("json")).expect("write");
        // A rename: the kubelet must never read half a manifest. (Its file source skips
        // dot files.)
        fs::rename(&tmp, self.manifests.join(format!("{name}.json"))).expect("rename");
    }

    /// Removes the static pod `name`'s manifest.
    pub fn remove_pod(&self, name: &str) {
        fs::remove_file(self.manifests.join(format!("{name}.json"))).expect("remove manifest");
    }

    /// The pids left in the kubelet's cgroup root.
    pub fn cgroup_pids(&self) -> Vec<i32> {
        pids_in_cgroup(&self.cgroup_root)
    }

    /// The pod cgroups (`.../kubepods/**/pod<uid>`) that exist, in the hierarchies the
    /// kubelet manages: not the v2 one of a hybrid host (`/sys/fs/cgroup/unified`), where
    /// runc also makes the pod's parent and the v1-only kubelet never removes it.
    pub fn pod_cgroups(&self) -> Vec<PathBuf> {
        fn walk(d: &Path, acc: &mut Vec<PathBuf>) {
            let Ok(rd) = fs::read_dir(d) else { return };
            for e in rd.flatten() {
                if !e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    continue;
                }
                let p = e.path();
                if e.file_name().to_string_lossy().starts_with("pod") {
                    acc.push(p.clone());
                }
                walk(&p, acc);
            }
        }
        let mut acc = Vec::new();
        for d in cgroup_dirs(&self.cgroup_root) {
            if !d.starts_with("/sys/fs/cgroup/unified") || !hybrid() {
                walk(&d, &mut acc);
            }
        }
        acc
    }

    /// Stops the kubelet (SIGKILL: it must not tear pods down, the engine's guard does).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill_and_reap(&mut c);
        }
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail(80));
        }
        self.stop();
    }
}

/// The kubelet's cgroup root (`rrun-test/kubelet-<tag>-<unique>`), made in every hierarchy
/// (the kubelet checks that it exists) and removed on drop with what is still in it. Made
/// before the node and the engine, so that it goes after them.
pub struct CgroupRoot(pub String);

impl CgroupRoot {
    pub fn new(tag: &str) -> CgroupRoot {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let rel = format!("{CGROUP_PARENT}/kubelet-{tag}-{}-{n}", std::process::id());
        for d in cgroup_dirs(&rel) {
            let _ = fs::create_dir_all(&d);
        }
        CgroupRoot(rel)
    }
}

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        remove_kubelet_cgroups(&self.0);
    }
}

/// Is this a hybrid cgroup host (v1 controllers, and v2 at `/sys/fs/cgroup/unified`)?
fn hybrid() -> bool {
    Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists()
        && Path::new("/sys/fs/cgroup/memory").is_dir()
}

/// Kills what is still in the cgroup `rel` and removes it.
fn remove_kubelet_cgroups(cgroup_root: &str) {
    for _ in 0..100 {
        let pids = pids_in_cgroup(cgroup_root);
        if pids.is_empty() {
            break;
        }
        for p in pids {
            // SAFETY: plain kill(2) of a process in the test's own cgroup.
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    remove_cgroups(cgroup_root);
}

/// `GET http://127.0.0.1:<read-only port>/pods` on the node, parsed (`None` while the
/// kubelet does not answer).
pub fn kubelet_pods(node: &Node) -> Option<Value> {
    let url = format!("http://127.0.0.1:{READ_ONLY_PORT}/pods");
    let out = node.run_net(
        &["/bin/busybox", "wget", "-q", "-O", "-", &url],
        Duration::from_secs(10),
    )?;
    if !out.success() {
        return None;
    }
    serde_json::from_str(&out.stdout).ok()
}

/// The static pod whose name starts with `<name>-` (the kubelet appends the node name).
pub fn find_pod<'a>(pods: &'a Value, name: &str) -> Option<&'a Value> {
    pods["items"].as_array()?.iter().find(|p| {
        p["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with(&format!("{name}-")))
    })
}

/// The host's sysctls (`sysctl -a`), minus the ones that are counters or change on
/// their own (entropy, dentry/inode/file counts, the last pid, random uuids, ...) and the
/// per-interface ones.
pub fn host_sysctls() -> Vec<String> {
    const VOLATILE: &[&str] = &[
        "fs.dentry-state",
        "fs.file-nr",
        "fs.inode-nr",
        "fs.inode-state",
        "fs.aio-nr",
        "fs.quota.",
        "kernel.random.",
        "kernel.ns_last_pid",
        "kernel.pty.nr",
        "net.netfilter.nf_conntrack_count",
        "kernel.sched_domain.",
        "fs.binfmt_misc.",
        "dev.cdrom.info",
        "kernel.tainted",
        "vm.stat_refresh",
        "net.ipv4.tcp_fastopen_key",
        "vm.drop_caches",
    ];
    // Per-interface settings come and go with interfaces other tests make; `all` and
    // `default` are compared.
    let per_interface = |l: &str| {
        [
            "net.ipv4.conf.",
            "net.ipv6.conf.",
            "net.ipv4.neigh.",
            "net.ipv6.neigh.",
        ]
        .iter()
        .any(|p| {
            l.strip_prefix(p)
                .is_some_and(|rest| !rest.starts_with("all.") && !rest.starts_with("default."))
        })
    };
    let out = Command::new("sysctl")
        .arg("-a")
        .stderr(Stdio::null())
        .output()
        .expect("sysctl -a");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !VOLATILE.iter().any(|v| l.starts_with(v)) && !per_interface(l))
        .map(str::to_string)
        .collect()
}

/// The host's `iptables-save` and `ip6tables-save` rules, without comments and counters.
pub fn host_iptables() -> Vec<String> {
    let mut v = Vec::new();
    for prog in ["iptables-save", "ip6tables-save"] {
        let Ok(out) = Command::new(prog).stderr(Stdio::null()).output() else {
            continue;
        };
        v.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| !l.starts_with('#'))
                .map(|l| match l.rfind(" [") {
                    Some(i) if l.starts_with(':') => l[..i].to_string(),
                    _ => l.to_string(),
                }),
        );
    }
    v
}

/// Lines of `after` not in `before` and of `before` not in `after`, prefixed `+`/`-`.
pub fn diff_lines(before: &[String], after: &[String]) -> Vec<String> {
    let b: std::collections::HashSet<&String> = before.iter().collect();
    let a: std::collections::HashSet<&String> = after.iter().collect();
    let mut d: Vec<String> = before
        .iter()
        .filter(|l| !a.contains(l))
        .map(|l| format!("-{l}"))
        .collect();
    d.extend(
        after
            .iter()
            .filter(|l| !b.contains(l))
            .map(|l| format!("+{l}")),
    );
    d
}

// ---------------------------------------------------------------------------------------
// The endpoints and the pods (shared with the benchmark, src/bin/kubelet-bench.rs)
// ---------------------------------------------------------------------------------------

/// The pods' image (the fixtures' busybox), imported into the endpoint beforehand.
pub const IMAGE: &str = "localhost/rrun-kubelet:1";
/// The CNI bridge's subnet (only inside the node's network namespace).
pub const SUBNET_PREFIX: &str = "10.88.77.";

/// The CRI endpoint a kubelet runs against.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Endpoint {
    /// Debian's containerd 1.6 with its CRI plugin and runc: the control.
    Containerd,
    /// rrun-cri (`target/debug/rrun-cri` or `$RRUN_CRI_BIN`).
    RrunCri,
}

pub fn pod(name: &str, host_network: bool, container: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name, "namespace": "default" },
        "spec": {
            "hostNetwork": host_network,
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        },
    })
}

pub fn container(command: &[&str]) -> Value {
    json!({
        "name": "main",
        "image": IMAGE,
        "imagePullPolicy": "Never",
        "command": command,
    })
}

/// The CNI network of containerd's private conf dir (and rrun-cri's): a bridge with the
/// gateway address on the node side (so the node reaches the pods, and is their default route), host-local IPAM with
/// its state in the test's dir, no masquerading (no iptables rules).
fn write_cni_config(cd: &Containerd, node: &Node) {
    let bin = cd.dir.join("cni/bin");
    fs::create_dir_all(&bin).expect("mkdir cni/bin");
    for p in ["bridge", "host-local", "loopback"] {
        std::os::unix::fs::symlink(format!("/usr/lib/cni/{p}"), bin.join(p)).expect("symlink");
    }
    write_conflist(&cd.dir.join("cni/conf"), node);
}

/// Writes the node's conflist into `conf` (atomically: rrun-cri watches the dir).
fn write_conflist(conf: &std::path::Path, node: &Node) {
    fs::create_dir_all(conf).expect("mkdir cni/conf");
    let list = json!({
        "cniVersion": "1.0.0",
        "name": "rrun-kubelet",
        "plugins": [{
            "type": "bridge",
            "bridge": "rrunkbr0",
            "isGateway": true,
            // Pods reach the node's addresses and the Services through it (the clusterDNS
            // address of `kubelet_dns`, ClusterIPs), as on a real node.
            "isDefaultGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": format!("{SUBNET_PREFIX}0/24") }]],
                "dataDir": node.dir().join("cni-ipam").display().to_string(),
            },
        }],
    });
    let tmp = conf.join(".10-rrun-kubelet.conflist.tmp");
    fs::write(&tmp, list.to_string()).expect("write conflist");
    fs::rename(&tmp, conf.join("10-rrun-kubelet.conflist")).expect("rename conflist");
}

/// Waits until the endpoint says NetworkReady: the kubelet refuses pods off the host
/// network until then.
async fn wait_network_ready(socket: &std::path::Path, log: impl Fn() -> String) {
    let mut client = Client::connect(socket).await.expect("connect the endpoint");
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    loop {
        let st = client
            .runtime
            .status(api::StatusRequest::default())
            .await
            .expect("Status")
            .into_inner();
        let ready = st.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.r#type == "NetworkReady" && c.status)
        });
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "NetworkReady stayed false: {st:?}\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The endpoint under test, started on the node.
pub enum Engine {
    Containerd(Box<Containerd>),
    RrunCri(Box<CriServer>),
}

impl Engine {
    pub fn socket(&self) -> std::path::PathBuf {
        match self {
            Engine::Containerd(c) => c.socket.clone(),
            Engine::RrunCri(s) => s.socket().to_path_buf(),
        }
    }
}

pub async fn start_engine(ep: Endpoint, node: &Node) -> Engine {
    match ep {
        Endpoint::Containerd => {
            let cd = Containerd::start_with_cri_in(std::path::Path::new(RUNC), &node.wrap());
            cd.import_image("k8s.io", CRI_SANDBOX_IMAGE, &["sleep", "1000000"]);
            cd.import_image("k8s.io", IMAGE, &["sh"]);
            write_cni_config(&cd, node);
            wait_network_ready(&cd.socket, || cd.log()).await;
            Engine::Containerd(Box::new(cd))
        }
        Endpoint::RrunCri => {
            let s = CriServer::start_in("kubelet", &node.wrap()).await;
            s.import(&FixtureImage {
                reference: IMAGE.into(),
                ..FixtureImage::default()
            });
            // The harness's conf dir (the server made it; it watches it), the plugins from
            // the default dirs (Debian's /usr/lib/cni).
            write_conflist(&s.dir().join("cni-conf"), node);
            wait_network_ready(s.socket(), || s.stderr_tail(30)).await;
            Engine::RrunCri(Box::new(s))
        }
    }
}
