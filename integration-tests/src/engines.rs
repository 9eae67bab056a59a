//! Container engines driving a runtime, for `tests/compat_containerd.rs`: a containerd of
//! the test's own whose runc shim (`io.containerd.runc.v2`) runs the runtime under test or
//! runc.
//!
//! Every test body runs twice, against rrun and against runc ([`Runtime`],
//! [`engine_test!`]), so that a failure of the engine itself shows up in both. An instance
//! ([`Containerd`]) lives in a temp dir: its config, root, state, sockets, the FIFOs of
//! `ctr`, and the shim's `--runc-root`. containerd 1.6's shims put their sockets in the
//! fixed `/run/containerd/s`, so containerd runs in a private mount namespace with a tmpfs
//! on `/run`: nothing of it reaches the host's `/run` (or another containerd's), and the
//! shims' and snapshotter's mounts go when its last process does. Containers go below the
//! cgroup `/rrun-test/<instance>` of each hierarchy.
//!
//! Every engine command is bounded by a timeout (scaled by `RRUN_TEST_TIME_SCALE`); a
//! hung engine fails the test. Dropping an instance (also on panic) removes what it made:
//! tasks and containers, the daemon, its shims, processes left in its cgroups, mounts
//! under its temp dir, its cgroups, the temp dir.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::unmount_all_under;
use crate::{cgroup_dirs, mounts_under, parse_mountinfo, remove_cgroups, scaled, Output};
use crate::{runtime_binary, Value, CGROUP_PARENT};

/// Default bound of one engine command.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(90);

/// The reference runtime every test also runs against.
pub const RUNC: &str = "/usr/sbin/runc";

/// The runtime an engine is pointed at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// The binary under test (`integration_tests::runtime_binary()`).
    Rrun,
    /// `/usr/sbin/runc`, the control.
    Runc,
}

impl Runtime {
    /// The binary, or `None` (after saying why, loudly) if it is not installed.
    pub fn path(self) -> Option<PathBuf> {
        match self {
            Runtime::Rrun => Some(runtime_binary()),
            Runtime::Runc => {
                let p = PathBuf::from(RUNC);
                if p.is_file() {
                    Some(p)
                } else {
                    eprintln!("SKIPPED: the control runtime {RUNC} is not installed");
                    println!("SKIPPED: the control runtime {RUNC} is not installed");
                    None
                }
            }
        }
    }

    /// The first word of its `--version`.
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Rrun => "rrun",
            Runtime::Runc => "runc",
        }
    }
}

/// `engine_test!(name)` makes the tests `name::rrun` and `name::runc`, each calling the
/// function `name(Runtime)`.
#[macro_export]
macro_rules! engine_test {
    ($name:ident) => {
        mod $name {
            #[test]
            fn rrun() {
                super::$name($crate::engines::Runtime::Rrun);
            }
            #[test]
            fn runc() {
                super::$name($crate::engines::Runtime::Runc);
            }
        }
    };
}

/// Is `prog` on `PATH`? If not, says so loudly (the caller skips its test).
pub fn have(prog: &str) -> bool {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
        .unwrap_or(false);
    if !found {
        eprintln!("SKIPPED: {prog} is not installed (scripts/setup.sh installs it)");
        println!("SKIPPED: {prog} is not installed (scripts/setup.sh installs it)");
    }
    found
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique on this machine for the life of the test process.
fn unique(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("{prefix}-{}-{n}", std::process::id())
}

// ---------------------------------------------------------------------------------------
// Bounded commands
// ---------------------------------------------------------------------------------------

/// Runs `cmd` to the end, with stdout/stderr in files under `out_dir` and `stdin` (if
/// any) written to it; kills it (and its process group) and panics after `timeout`
/// (scaled).
#[track_caller]
pub fn run_bounded(
    cmd: Command,
    out_dir: &Path,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Output {
    match try_run_bounded(cmd, out_dir, stdin, timeout) {
        Ok(out) => out,
        Err(out) => panic!("timed out after {:?}:\n{out}", scaled(timeout)),
    }
}

/// [`run_bounded`], but a timeout is `Err(what it printed)` instead of a panic.
pub fn try_run_bounded(
    mut cmd: Command,
    out_dir: &Path,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, Box<Output>> {
    let timeout = scaled(timeout);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let stdout_path = out_dir.join(format!("cmd-{n}.stdout"));
    let stderr_path = out_dir.join(format!("cmd-{n}.stderr"));
    let cmdline = format!("{cmd:?}");
    // Files, not pipes: a daemon the command leaves behind cannot hold our reads open.
    cmd.stdout(fs::File::create(&stdout_path).expect("create stdout file"))
        .stderr(fs::File::create(&stderr_path).expect("create stderr file"))
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        // Its own process group, so a timeout can end whatever it started in the
        // foreground (script's child, ...).
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmdline}: {e}"));
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let data = data.to_vec();
        // A writer thread: a child that does not read must not block us.
        thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if Instant::now() >= deadline {
            kill_group(&mut child);
            break None;
        }
        thread::sleep(Duration::from_millis(10));
    };
    let read = |p: &Path| {
        fs::read(p)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let timed_out = status.is_none();
    let status = match status {
        Some(s) => s,
        None => child.wait().expect("wait for a killed child"),
    };
    let out = Output {
        cmdline,
        status,
        stdout: read(&stdout_path),
        stderr: read(&stderr_path),
        stdout_path,
        stderr_path,
    };
    if timed_out {
        Err(Box::new(out))
    } else {
        Ok(out)
    }
}

fn kill_group(child: &mut Child) {
    let pid = child.id() as i32;
    // SAFETY: plain kill(2) of the child's own process group and of the child.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Single-quotes `s` for sh (unless it needs no quotes).
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-_.=:,".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs `line` (a shell command line) on a pty with `script -qec`, feeding `input` to
/// it, bounded. stdout is what the terminal showed; the exit code is the command's.
pub fn run_on_pty(line: &str, input: &str, out_dir: &Path) -> Output {
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", line, "/dev/null"]);
    run_bounded(c, out_dir, Some(input.as_bytes()), ENGINE_TIMEOUT)
}

// ---------------------------------------------------------------------------------------
// Host-side observation and cleanup
// ---------------------------------------------------------------------------------------

/// Pids whose command line (arguments joined by spaces, with a trailing space)
/// satisfies `pred`.
pub fn pids_by_cmdline(pred: impl Fn(&str) -> bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| pred(&String::from_utf8_lossy(&b).replace('\0', " ")))
                .unwrap_or(false)
        })
        .collect()
}

/// Every pid in the cgroup `rel` (and below), in every hierarchy.
pub fn pids_in_cgroup(rel: &str) -> Vec<i32> {
    fn walk(d: &Path, acc: &mut HashSet<i32>) {
        if let Ok(t) = fs::read_to_string(d.join("cgroup.procs")) {
            acc.extend(t.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(rd) = fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&e.path(), acc);
                }
            }
        }
    }
    let mut acc = HashSet::new();
    for d in cgroup_dirs(rel) {
        walk(&d, &mut acc);
    }
    let mut v: Vec<i32> = acc.into_iter().collect();
    v.sort_unstable();
    v
}

/// Has `pid` begun to exit, or is it gone? The kernel drops an exiting process from
/// `cgroup.procs` (at `cgroup_exit`) while it still runs `do_exit`, and its `/proc` entry
/// stays until the parent reaps the zombie; PF_EXITING, set first thing in `do_exit` and
/// never cleared, covers that whole span, which `/proc/<pid>` existing or the state letter
/// (still `R` before the zombie) do not.
pub fn pid_exiting_or_gone(pid: i32) -> bool {
    const PF_EXITING: u64 = 0x4;
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The command name, in parentheses, may hold spaces: the fields count from the last ')',
    // and `flags` is the 9th field of the line.
    let flags = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(6))
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("unreadable /proc/{pid}/stat: {stat:?}"));
    flags & PF_EXITING != 0
}

/// The directories of the cgroup `rel` that exist, in every hierarchy.
pub fn existing_cgroups(rel: &str) -> Vec<PathBuf> {
    cgroup_dirs(rel)
        .into_iter()
        .filter(|d| d.is_dir())
        .collect()
}

/// The first `file` found in an existing directory of the cgroup `rel`, with its text.
pub fn cgroup_file(rel: &str, file: &str) -> Option<(PathBuf, String)> {
    existing_cgroups(rel).into_iter().find_map(|d| {
        let p = d.join(file);
        let t = fs::read_to_string(&p).ok()?;
        Some((p, t.trim().to_string()))
    })
}

/// Is the cgroup `rel` frozen, by the kernel's own account? v1 `freezer.state`
/// (`FROZEN`) where there is a freezer hierarchy, else v2 `cgroup.events` (`frozen 1`).
pub fn cgroup_frozen(rel: &str) -> bool {
    if let Some((_, s)) = cgroup_file(rel, "freezer.state") {
        return s == "FROZEN";
    }
    cgroup_file(rel, "cgroup.events")
        .map(|(_, t)| t.lines().any(|l| l.trim() == "frozen 1"))
        .unwrap_or(false)
}

/// SIGKILLs what `find` returns until it returns nothing (bounded).
fn kill_until_gone(find: impl Fn() -> Vec<i32>, what: &str) {
    for _ in 0..100 {
        let pids = find();
        if pids.is_empty() {
            return;
        }
        for p in pids {
            // SAFETY: plain kill(2).
            unsafe {
                libc::kill(p, libc::SIGKILL);
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("cleanup: {what} still alive: {:?}", find());
}

/// Mounts at or below `dir` as `pid` sees them (in its mount namespace).
pub fn mounts_under_in(pid: i32, dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    let text = fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    parse_mountinfo(&text)
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|m| m == &dir || m.starts_with(&format!("{dir}/")))
        .collect()
}

/// The temp dir of an engine instance: removed on drop unless something is still
/// mounted below it (then kept and reported) or `RRUN_TEST_KEEP` is set.
struct Scratch {
    tmp: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl Scratch {
    fn new(prefix: &str) -> Scratch {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("rrun-{prefix}-"))
            .tempdir()
            .expect("tempdir");
        let path = tmp.path().to_path_buf();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod tempdir");
        fs::create_dir(path.join("out")).expect("mkdir out");
        Scratch {
            tmp: Some(tmp),
            path,
        }
    }

    fn finish(&mut self) {
        unmount_all_under(&self.path);
        let Some(tmp) = self.tmp.take() else { return };
        let left = mounts_under(&self.path);
        if !left.is_empty() {
            eprintln!(
                "cleanup: mounts left under {} ({left:?}): not removing it",
                tmp.keep().display()
            );
        } else if std::env::var_os("RRUN_TEST_KEEP").is_some() {
            eprintln!("RRUN_TEST_KEEP: leaving {}", tmp.keep().display());
        } else if let Err(e) = tmp.close() {
            eprintln!("cleanup: removing {}: {e}", self.path.display());
        }
    }
}

/// Kills what is left in the instance's cgroup parent and removes it, then the shared
/// `rrun-test` parent if no other test uses it (rmdir of a cgroup with children fails).
fn remove_instance_cgroups(rel: &str) {
    kill_until_gone(|| pids_in_cgroup(rel), "processes in the test's cgroups");
    remove_cgroups(rel);
    for d in cgroup_dirs(CGROUP_PARENT) {
        let _ = fs::remove_dir(&d);
    }
}

// ---------------------------------------------------------------------------------------
// containerd
// ---------------------------------------------------------------------------------------

/// The image every containerd test imports.
pub const CTR_IMAGE: &str = "localhost/rrun-busybox:latest";

/// The name of the runtime in the CRI plugin's config ([`Containerd::start_with_cri`]).
pub const CRI_RUNTIME: &str = "compat";

/// The CRI plugin's sandbox image: busybox whose command is a long `sleep`.
pub const CRI_SANDBOX_IMAGE: &str = "localhost/rrun-pause:latest";

/// A containerd of the test's own, whose runc shim runs `runtime`.
pub struct Containerd {
    scratch: Scratch,
    /// The temp dir (config, root, state, sockets, logs, command outputs).
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The shim's `--runc-root`: the runtime's state is in `<runtime_root>/default/<id>`.
    pub runtime_root: PathBuf,
    pub runtime: PathBuf,
    /// `ctr`'s `--fifo-dir`.
    pub fifo_dir: PathBuf,
    /// The cgroup (relative to each hierarchy's root) below which containers go.
    pub cgroup_parent: String,
    daemon: Option<Child>,
}

impl Containerd {
    /// Starts containerd (config in the temp dir, no CRI plugin; the tests use the
    /// `native` snapshotter, which works on any filesystem the VM's /tmp may be) and
    /// waits until it answers.
    pub fn start(runtime: &Path) -> Containerd {
        Self::start_with(runtime, false, &[])
    }

    /// Like [`Containerd::start`], with the CRI plugin on (served on the same socket)
    /// and its default runtime [`CRI_RUNTIME`]: the runc shim with `BinaryName` =
    /// `runtime` and `Root` = [`Containerd::runtime_root`] in config.toml, the options
    /// only the CRI plugin passes to the shim. Pods run with the host's network (no
    /// CNI), from the sandbox image [`CRI_SANDBOX_IMAGE`] (the caller imports it).
    pub fn start_with_cri(runtime: &Path) -> Containerd {
        Self::start_with(runtime, true, &[])
    }

    /// [`Containerd::start_with_cri`] with the daemon's command line after `wrap` (e.g.
    /// `nsenter --target PID --net --mount --`: the stock-kubelet test's node namespaces,
    /// where its pods, CNI bridge and `/var/log/pods` must be).
    pub fn start_with_cri_in(runtime: &Path, wrap: &[String]) -> Containerd {
        Self::start_with(runtime, true, wrap)
    }

    fn start_with(runtime: &Path, cri: bool, wrap: &[String]) -> Containerd {
        let scratch = Scratch::new("containerd");
        let dir = scratch.path.clone();
        let socket = dir.join("c.sock");
        let runtime_root = dir.join("runtime-root");
        let fifo_dir = dir.join("fifo");
        for d in [&runtime_root, &fifo_dir] {
            fs::create_dir_all(d).expect("mkdir");
        }
        let cgroup_parent = format!("{CGROUP_PARENT}/{}", unique("cd"));
        let cri_section = if cri {
            format!(
                r#"
# restrict_oom_score_adj: the sandbox's -998 would need CAP_SYS_RESOURCE.
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{CRI_SANDBOX_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "{CRI_RUNTIME}"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{CRI_RUNTIME}]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.{CRI_RUNTIME}.options]
        BinaryName = "{bin}"
        Root = "{rroot}"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
"#,
                bin = runtime.display(),
                rroot = runtime_root.display(),
                d = dir.display(),
            )
        } else {
            String::new()
        };
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
disabled_plugins = [
  {cri_off}
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  level = "debug"

[plugins."io.containerd.monitor.v1.cgroups"]
  no_prometheus = true
{cri_section}"#,
            cri_off = if cri {
                ""
            } else {
                "\"io.containerd.grpc.v1.cri\","
            },
            root = dir.join("root").display(),
            state = dir.join("state").display(),
            socket = socket.display(),
        );
        let config_path = dir.join("config.toml");
        fs::write(&config_path, config).expect("write config.toml");
        let log = fs::File::create(dir.join("containerd.log")).expect("containerd.log");
        // A private mount namespace with its own /run (see the module doc).
        let mut cmd = match wrap.split_first() {
            Some((prog, args)) => {
                let mut c = Command::new(prog);
                c.args(args).arg("unshare");
                c
            }
            None => Command::new("unshare"),
        };
        // On a node, a slave of the node's mounts: the node agent's volume mounts (made
        // under the node's shared temp dir after containerd starts) must reach it, as
        // they reach a containerd beside a kubelet.
        let propagation = if wrap.is_empty() { "private" } else { "slave" };
        cmd.args(["--mount", "--propagation", propagation, "--", "sh", "-c"])
            .arg(
                "mount -t tmpfs -o mode=0755 rrun-test-run /run && exec containerd --config \"$0\"",
            )
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .process_group(0);
        let daemon = cmd.spawn().expect("spawn containerd");
        let mut cd = Containerd {
            scratch,
            dir,
            socket,
            runtime_root,
            runtime: runtime.to_path_buf(),
            fifo_dir,
            cgroup_parent,
            daemon: Some(daemon),
        };
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        loop {
            if cd.socket.exists() {
                let mut c = cd.ctr_command();
                c.arg("version");
                if let Ok(out) = try_run_bounded(c, &cd.out_dir(), None, Duration::from_secs(10)) {
                    if out.success() {
                        break;
                    }
                }
            }
            if let Some(Ok(Some(st))) = cd.daemon.as_mut().map(Child::try_wait) {
                panic!("containerd exited ({st}):\n{}", cd.log());
            }
            if Instant::now() > deadline {
                panic!("containerd did not answer in time:\n{}", cd.log());
            }
            thread::sleep(Duration::from_millis(50));
        }
        cd
    }

    /// Where command outputs go.
    pub fn out_dir(&self) -> PathBuf {
        self.dir.join("out")
    }

    /// containerd's own log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// The pid of containerd (in its private mount namespace).
    pub fn pid(&self) -> i32 {
        self.daemon.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    fn ctr_command(&self) -> Command {
        self.ctr_command_in("default")
    }

    fn ctr_command_in(&self, ns: &str) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", ns]);
        c
    }

    /// `ctr --address <socket> --namespace <ns> <args>`, bounded.
    pub fn ctr_in<I, S>(&self, ns: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = self.ctr_command_in(ns);
        c.args(args);
        run_bounded(c, &self.out_dir(), None, ENGINE_TIMEOUT)
    }

    /// `ctr --address <socket> <args>` with `stdin`, bounded.
    pub fn ctr_with_input<I, S>(&self, args: I, stdin: Option<&[u8]>) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = self.ctr_command();
        c.args(args);
        run_bounded(c, &self.out_dir(), stdin, ENGINE_TIMEOUT)
    }

    /// `ctr --address <socket> <args>`, bounded.
    pub fn ctr<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.ctr_with_input(args, None)
    }

    /// The whole `ctr` command line as one string for `script -c`.
    pub fn ctr_shell_line(&self, args: &[String]) -> String {
        let mut s = format!(
            "ctr --address {} --namespace default",
            shell_quote(&self.socket.display().to_string())
        );
        for a in args {
            s.push(' ');
            s.push_str(&shell_quote(a));
        }
        s
    }

    /// The cgroup (relative to each hierarchy root) of container `id`.
    pub fn cgroup_of(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup_parent)
    }

    /// A pod for this containerd's CRI: on the node's network (no CNI), its own pid and
    /// ipc namespaces, its cgroup under the test's parent, its logs in `logs`; uid
    /// `<name>-uid`. (No hostname: with the node's network it has the node's UTS.)
    pub fn host_network_pod_config(
        &self,
        name: &str,
        logs: &Path,
    ) -> crate::cri::api::PodSandboxConfig {
        use crate::cri::api;
        api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.into(),
                uid: format!("{name}-uid"),
                namespace: "default".into(),
                attempt: 0,
            }),
            log_directory: logs.display().to_string(),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: format!("/{}", self.cgroup_of("pod")),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(api::NamespaceOption {
                        network: api::NamespaceMode::Node as i32,
                        pid: api::NamespaceMode::Pod as i32,
                        ipc: api::NamespaceMode::Pod as i32,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The options of `ctr run` that point the shim at the runtime and keep everything
    /// in the temp dir: `--runc-binary`, `--runc-root`, `--cgroup`, `--fifo-dir`,
    /// `--snapshotter native`.
    pub fn run_opts(&self, id: &str) -> Vec<String> {
        vec![
            "--runc-binary".into(),
            self.runtime.display().to_string(),
            "--runc-root".into(),
            self.runtime_root.display().to_string(),
            "--cgroup".into(),
            format!("/{}", self.cgroup_of(id)),
            "--fifo-dir".into(),
            self.fifo_dir.display().to_string(),
            "--snapshotter".into(),
            "native".into(),
        ]
    }

    /// Writes the busybox image (an oci-archive from `rootfs_fixtures::image`) and `ctr
    /// images import`s it as [`CTR_IMAGE`].
    pub fn import_busybox(&self) {
        self.import_image("default", CTR_IMAGE, &["sh"]);
    }

    /// Writes a busybox image named `reference` whose command is `cmd` and imports it
    /// into the namespace `ns` (`k8s.io` for the CRI plugin).
    pub fn import_image(&self, ns: &str, reference: &str, cmd: &[&str]) {
        let archive = self.dir.join("busybox-oci.tar");
        let spec = rootfs_fixtures::image::ImageSpec {
            reference: reference.into(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        rootfs_fixtures::image::write_image(&archive, &spec).expect("writing the busybox image");
        let a = archive.display().to_string();
        self.ctr_in(ns, ["images", "import", "--snapshotter", "native", &a])
            .ok();
        let _ = fs::remove_file(&archive);
        let ls = self.ctr_in(ns, ["images", "ls", "-q"]);
        ls.ok();
        assert!(
            ls.stdout.lines().any(|l| l.trim() == reference),
            "imported image not listed:\n{ls}"
        );
    }

    /// The text of `/<name>` in the rootfs of container `id` (of the default
    /// namespace), read on the host: the `native` snapshotter's snapshot is a plain
    /// directory under containerd's root. The file must be in exactly one snapshot.
    #[track_caller]
    pub fn rootfs_file(&self, id: &str, name: &str) -> String {
        let snaps = self
            .dir
            .join("root/io.containerd.snapshotter.v1.native/snapshots");
        // (`ctr snapshots` does not name the directories: the container's snapshot is
        // the one with the file.)
        let found: Vec<PathBuf> = fs::read_dir(&snaps)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path().join(name))
                    .filter(|p| p.is_file())
                    .collect()
            })
            .unwrap_or_default();
        match found.as_slice() {
            [p] => fs::read_to_string(p).unwrap_or_default(),
            other => panic!(
                "/{name} of {id}: expected one file under {}, found {other:?}",
                snaps.display()
            ),
        }
    }

    /// The runtime's own view of container `id`: `<runtime> --root <runc-root>/default
    /// state <id>` parsed, or `None` if the runtime does not know it.
    pub fn runtime_state(&self, id: &str) -> Option<Value> {
        let mut c = Command::new(&self.runtime);
        c.arg("--root")
            .arg(self.runtime_root.join("default"))
            .args(["state", id]);
        let out = run_bounded(c, &self.out_dir(), None, Duration::from_secs(30));
        if !out.success() {
            return None;
        }
        serde_json::from_str(&out.stdout).ok()
    }

    /// Pids of the shims of this containerd (of container `id`, or all).
    pub fn shim_pids(&self, id: Option<&str>) -> Vec<i32> {
        let sock = self.socket.display().to_string();
        pids_by_cmdline(|c| {
            c.contains("containerd-shim")
                && c.contains(&format!("-address {sock} "))
                && id.is_none_or(|id| c.contains(&format!("-id {id} ")))
        })
    }

    /// The status column of `ctr task ls` for `id` (`RUNNING`, `PAUSED`, `STOPPED`), or
    /// `None` if there is no such task.
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr(["task", "ls"]);
        out.ok();
        out.stdout.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.get(2).unwrap_or(&"").to_string())
        })
    }

    /// The pid of task `id` (`ctr task ls`).
    #[track_caller]
    pub fn task_pid(&self, id: &str) -> i32 {
        let ls = self.ctr(["task", "ls"]);
        ls.stdout
            .lines()
            .skip(1)
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.first() == Some(&id)).then(|| f.get(1)?.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no pid for task {id}:\n{ls}"))
    }

    /// Waits until `ctr task ls` shows `want` for `id`.
    #[track_caller]
    pub fn wait_task_status(&self, id: &str, want: &str) {
        crate::wait_for(
            Duration::from_secs(30),
            || self.task_status(id).as_deref() == Some(want),
            &format!("task {id} to be {want}"),
        );
    }

    /// Panics unless nothing of container `id` is left: no task, no container, no
    /// cgroup, no mount under the temp dir (in the host's and in containerd's mount
    /// namespace), no runtime state dir, no shim.
    #[track_caller]
    pub fn assert_nothing_left(&self, id: &str) {
        let cg = self.cgroup_of(id);
        let state = self.runtime_root.join("default").join(id);
        let deadline = Instant::now() + scaled(Duration::from_secs(20));
        loop {
            let tasks = self.ctr(["task", "ls", "-q"]).stdout;
            let ctrs = self.ctr(["containers", "ls", "-q"]).stdout;
            let task = tasks.lines().any(|l| l.trim() == id);
            let ctr = ctrs.lines().any(|l| l.trim() == id);
            let cgroups = existing_cgroups(&cg);
            let mut mounts = mounts_under(&self.dir);
            mounts.extend(mounts_under_in(self.pid(), &self.dir));
            let state_left = state.exists();
            let shims = self.shim_pids(Some(id));
            if !task
                && !ctr
                && cgroups.is_empty()
                && mounts.is_empty()
                && !state_left
                && shims.is_empty()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "left behind for {id}: task: {task}; container: {ctr}; cgroups: {cgroups:?}; \
                     mounts: {mounts:?}; runtime state {}: {state_left}; shims: {shims:?}",
                    state.display()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    fn quiet_ctr(&self, ns: &str, args: &[&str]) -> Option<Output> {
        let mut c = self.ctr_command_in(ns);
        c.args(args);
        try_run_bounded(c, &self.out_dir(), None, Duration::from_secs(20)).ok()
    }

    fn cleanup(&mut self) {
        // (k8s.io: what the CRI plugin made.)
        for ns in ["default", "k8s.io"] {
            if self.daemon.is_none() {
                break;
            }
            let tasks = self
                .quiet_ctr(ns, &["task", "ls", "-q"])
                .map(|o| o.stdout)
                .unwrap_or_default();
            for t in tasks.lines().map(str::trim).filter(|t| !t.is_empty()) {
                let _ = self.quiet_ctr(ns, &["task", "kill", "--all", "--signal", "SIGKILL", t]);
                let _ = self.quiet_ctr(ns, &["task", "delete", "--force", t]);
            }
            let ctrs = self
                .quiet_ctr(ns, &["containers", "ls", "-q"])
                .map(|o| o.stdout)
                .unwrap_or_default();
            for c in ctrs.lines().map(str::trim).filter(|c| !c.is_empty()) {
                let _ = self.quiet_ctr(ns, &["containers", "delete", c]);
            }
        }
        if let Some(mut d) = self.daemon.take() {
            let pid = d.id() as i32;
            // SAFETY: plain kill(2) of the daemon we started.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let deadline = Instant::now() + scaled(Duration::from_secs(10));
            while !matches!(d.try_wait(), Ok(Some(_))) {
                if Instant::now() > deadline {
                    kill_group(&mut d);
                    let _ = d.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(20));
            }
        }
        kill_until_gone(|| self.shim_pids(None), "containerd shims");
        remove_instance_cgroups(&self.cgroup_parent);
        self.scratch.finish();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.cleanup();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zombie is out of every `cgroup.procs` but keeps its `/proc` entry: it must count
    /// as exiting, and a live process must not.
    #[test]
    fn a_zombie_is_exiting_and_a_live_process_is_not() {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id() as i32;
        // Unreaped, the child cannot be gone: not alive means a zombie.
        crate::wait_for(
            Duration::from_secs(10),
            || !crate::cri::pid_alive(pid),
            "the unreaped child to be a zombie",
        );
        assert!(pid_exiting_or_gone(pid), "zombie {pid}");
        assert!(!pid_exiting_or_gone(std::process::id() as i32));
        child.wait().expect("reap");
        assert!(pid_exiting_or_gone(pid), "reaped {pid}");
    }
}
