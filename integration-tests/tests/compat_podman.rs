//! rrun under podman 4.3 (`podman --runtime PATH`, conmon in between). Each test runs
//! against the runtime under test and against runc (`<test>::rrun`, `<test>::runc`), each
//! with a podman of its own (root, runroot, tmpdir, storage, `containers.conf` in a temp
//! dir; cgroupfs; the file events backend; no network; an image made with `podman import`
//! of the busybox rootfs, never pulled): run and its exit code, `-d`, exec, logs, top,
//! stop (SIGTERM, then SIGKILL after the timeout), kill, pause/unpause, memory/cpu/pids
//! limits read from the kernel's cgroup files, a tty, a pod whose containers share
//! namespaces, errors from the runtime reaching the podman user, and nothing left behind.
//!
//! The podman harness is in this file (the containerd one is `integration_tests::engines`).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::{
    cgroup_dirs, mounts_under, pids_with_env, remove_cgroups, runtime_binary, scaled,
    unmount_all_under, wait_for, Output, Value, CGROUP_PARENT,
};

/// The reference runtime every compatibility test also runs against.
pub const RUNC: &str = "/usr/sbin/runc";

/// Default bound of one engine command (scaled by `RRUN_TEST_TIME_SCALE`).
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(60);

/// The name the busybox image gets in both engines.
pub const IMAGE: &str = "localhost/rrun-busybox:latest";

/// A runtime an engine is pointed at.
#[derive(Debug, Clone)]
pub struct Rt {
    /// `rrun` (the binary under test) or `runc`.
    pub name: &'static str,
    pub path: PathBuf,
}

impl Rt {
    /// The binary under test (`$RRUN_BIN`, else target/{release,debug}/rrun).
    pub fn under_test() -> Rt {
        Rt {
            name: "rrun",
            path: runtime_binary(),
        }
    }

    /// runc, the control.
    pub fn runc() -> Rt {
        Rt {
            name: "runc",
            path: PathBuf::from(RUNC),
        }
    }

    pub fn is_runc(&self) -> bool {
        self.name == "runc"
    }

    /// The path as a string, for command lines.
    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }

    /// The state root the runtime uses when an engine passes no `--root` (podman).
    pub fn default_root(&self) -> PathBuf {
        if self.is_runc() {
            PathBuf::from("/run/runc")
        } else {
            PathBuf::from("/run/rrun")
        }
    }
}

/// Defines `mod $name { #[test] fn rrun(); #[test] fn runc(); }`, both running `$body`
/// with `$rt: &Rt` bound to their runtime, so each runtime's result is its own test.
macro_rules! compat_test {
    ($(#[$meta:meta])* fn $name:ident($rt:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn body($rt: &Rt) $body

            #[test]
            fn rrun() {
                body(&Rt::under_test())
            }

            #[test]
            fn runc() {
                if missing(&[RUNC]) {
                    return;
                }
                body(&Rt::runc())
            }
        }
    };
}

/// Prints a loud SKIPPED line and returns `true` if one of `paths` does not exist.
pub fn missing(paths: &[&str]) -> bool {
    let gone: Vec<&&str> = paths.iter().filter(|p| !Path::new(p).exists()).collect();
    if gone.is_empty() {
        return false;
    }
    let msg = format!("SKIPPED: not installed: {gone:?} (scripts/setup.sh installs them)");
    eprintln!("{msg}");
    println!("{msg}");
    true
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A short name unique in this machine for a while: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    )
}

// ---------------------------------------------------------------------------------------
// Commands with a time bound
// ---------------------------------------------------------------------------------------

/// An engine command being prepared. [`Cmd::run`] never panics on the exit status (the
/// test asserts it) but does on a timeout, after killing the command's process group.
pub struct Cmd {
    cmd: Command,
    cmdline: String,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
    out_dir: PathBuf,
}

impl Cmd {
    pub fn new(program: impl AsRef<Path>, out_dir: &Path) -> Cmd {
        let program = program.as_ref();
        Cmd {
            cmd: Command::new(program),
            cmdline: program.display().to_string(),
            stdin: None,
            timeout: scaled(ENGINE_TIMEOUT),
            out_dir: out_dir.to_path_buf(),
        }
    }

    pub fn arg(mut self, a: impl AsRef<str>) -> Cmd {
        let a = a.as_ref();
        self.cmd.arg(a);
        self.cmdline.push(' ');
        if a.is_empty() || a.contains(char::is_whitespace) {
            self.cmdline.push_str(&format!("{a:?}"));
        } else {
            self.cmdline.push_str(a);
        }
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for a in args {
            self = self.arg(a);
        }
        self
    }

    pub fn env(mut self, k: &str, v: impl AsRef<std::ffi::OsStr>) -> Cmd {
        self.cmd.env(k, v);
        self
    }

    /// Bytes for stdin (default: /dev/null).
    pub fn stdin(mut self, data: &[u8]) -> Cmd {
        self.stdin = Some(data.to_vec());
        self
    }

    /// The bound (scaled by `RRUN_TEST_TIME_SCALE`).
    pub fn timeout(mut self, t: Duration) -> Cmd {
        self.timeout = scaled(t);
        self
    }

    /// Starts the command in a process group of its own.
    pub fn spawn(mut self) -> Proc {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let stdout_path = self.out_dir.join(format!("cmd-{n}.stdout"));
        let stderr_path = self.out_dir.join(format!("cmd-{n}.stderr"));
        let stdout = File::create(&stdout_path).expect("creating a stdout file");
        let stderr = File::create(&stderr_path).expect("creating a stderr file");
        self.cmd
            .stdout(stdout)
            .stderr(stderr)
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .process_group(0);
        let mut child = self
            .cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.cmdline));
        if let (Some(data), Some(mut pipe)) = (self.stdin.take(), child.stdin.take()) {
            // A writer thread: a command that does not read must not block the test.
            thread::spawn(move || {
                let _ = pipe.write_all(&data);
            });
        }
        Proc {
            child,
            cmdline: self.cmdline,
            deadline: Instant::now() + self.timeout,
            timeout: self.timeout,
            stdout_path,
            stderr_path,
        }
    }

    /// Runs to completion (or panics after the timeout, killing its process group).
    #[track_caller]
    pub fn run(self) -> Output {
        self.spawn().wait()
    }
}

/// A command started by [`Cmd::spawn`]; killed (with its process group) when dropped.
pub struct Proc {
    child: Child,
    cmdline: String,
    deadline: Instant,
    timeout: Duration,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Proc {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// stdout so far.
    pub fn stdout_so_far(&self) -> String {
        String::from_utf8_lossy(&fs::read(&self.stdout_path).unwrap_or_default()).into_owned()
    }

    fn kill_group(&mut self) {
        // SAFETY: kill(2) of the process group this command leads (process_group(0)).
        unsafe {
            libc::kill(-self.pid(), libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the exit; panics (after killing it) at the deadline.
    #[track_caller]
    pub fn wait(mut self) -> Output {
        let mut nap = Duration::from_millis(1);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= self.deadline {
                self.kill_group();
                let out = read(&self.stdout_path);
                let err = read(&self.stderr_path);
                panic!(
                    "engine hung: `{}` did not exit within {:?} (killed it)\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
                    self.cmdline, self.timeout
                );
            }
            thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(20));
        };
        Output {
            cmdline: self.cmdline.clone(),
            status,
            stdout: read(&self.stdout_path),
            stderr: read(&self.stderr_path),
            stdout_path: self.stdout_path.clone(),
            stderr_path: self.stderr_path.clone(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill_group();
        }
    }
}

fn read(p: &Path) -> String {
    String::from_utf8_lossy(&fs::read(p).unwrap_or_default()).into_owned()
}

/// `sh -c SCRIPT`-like commands are handed to `script(1)`, which runs them on a pty of
/// its own: how a test without a terminal drives `ctr run -t` / `podman run -t`.
pub fn script_cmd(command_line: &[String], out_dir: &Path) -> Cmd {
    let line = command_line
        .iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    Cmd::new("/usr/bin/script", out_dir).args(["-qec", &line, "/dev/null"])
}

/// Single-quotes `s` for sh.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

// ---------------------------------------------------------------------------------------
// Host-side observations
// ---------------------------------------------------------------------------------------

/// Is `/sys/fs/cgroup` the cgroup v2 unified hierarchy (the VM pass) rather than v1 or
/// hybrid (this host)?
pub fn unified_cgroups() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The directory of `pid`'s cgroup that holds `controller`'s files: the v2 cgroup on a
/// unified host, else the v1 hierarchy that has the controller.
pub fn cgroup_dir_of(pid: i32, controller: &str) -> PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/cgroup: {e}"));
    if unified_cgroups() {
        let p = text
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or_else(|| panic!("no v2 line in /proc/{pid}/cgroup: {text}"));
        return Path::new("/sys/fs/cgroup").join(p.trim_start_matches('/'));
    }
    let p = text
        .lines()
        .find_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
            ctrls
                .split(',')
                .any(|c| c == controller)
                .then(|| path.to_string())
        })
        .unwrap_or_else(|| panic!("no {controller} line in /proc/{pid}/cgroup: {text}"));
    Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(p.trim_start_matches('/'))
}

/// A cgroup file of `pid`, trimmed; panics if unreadable.
pub fn cgroup_file(pid: i32, controller: &str, file: &str) -> String {
    let p = cgroup_dir_of(pid, controller).join(file);
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// Is the cgroup of `pid` frozen, by the kernel's own file (v1 `freezer.state`, v2
/// `cgroup.events`)?
pub fn frozen(pid: i32) -> bool {
    if unified_cgroups() {
        cgroup_file(pid, "", "cgroup.events")
            .lines()
            .any(|l| l.trim() == "frozen 1")
    } else {
        cgroup_file(pid, "freezer", "freezer.state") == "FROZEN"
    }
}

/// Pids whose command line contains every one of `needles`.
pub fn pids_with_cmdline(needles: &[&str]) -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let line = String::from_utf8_lossy(&raw).replace('\0', " ");
        if needles.iter().all(|n| line.contains(n)) {
            v.push(pid);
        }
    }
    v
}

/// Is `pid` alive (and not a zombie)?
pub fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// SIGKILLs `pids` and waits (bounded) until they are gone.
pub fn kill_and_wait(pids: &[i32]) {
    for &p in pids {
        // SAFETY: plain kill(2) of a pid this guard found to be its own.
        unsafe {
            libc::kill(p, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + scaled(Duration::from_secs(5));
    while pids.iter().any(|&p| alive(p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
}

/// Every pid in the cgroup `rel` (relative to each hierarchy root and to the test's own
/// cgroup), recursively.
pub fn pids_in_cgroups(rel: &str) -> Vec<i32> {
    fn walk(d: &Path, out: &mut Vec<i32>) {
        if let Ok(text) = fs::read_to_string(d.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(rd) = fs::read_dir(d) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut v = Vec::new();
    for d in cgroup_dirs(rel) {
        walk(&d, &mut v);
    }
    v.sort_unstable();
    v.dedup();
    v
}

/// Existing directories of the cgroup `rel` in any hierarchy.
pub fn existing_cgroups(rel: &str) -> Vec<PathBuf> {
    cgroup_dirs(rel)
        .into_iter()
        .filter(|d| d.is_dir())
        .collect()
}

/// Removes `tmp` unless something is still mounted below it (then keeps it and says so).
fn remove_temp(tmp: tempfile::TempDir) {
    let left = mounts_under(tmp.path());
    if !left.is_empty() {
        eprintln!(
            "cleanup: mounts left under {} ({left:?}): not removing it",
            tmp.keep().display()
        );
    } else if std::env::var_os("RRUN_TEST_KEEP").is_some() {
        eprintln!("RRUN_TEST_KEEP: leaving {}", tmp.keep().display());
    } else if let Err(e) = tmp.close() {
        eprintln!("cleanup: removing the engine's temp dir: {e}");
    }
}

fn temp_dir(prefix: &str) -> tempfile::TempDir {
    let tmp = tempfile::Builder::new()
        .prefix(&format!("rrun-{prefix}-"))
        .tempdir()
        .expect("creating a temp dir");
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o755))
        .expect("chmod of the temp dir");
    fs::create_dir(tmp.path().join("out")).expect("creating out/");
    tmp
}

// ---------------------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------------------

/// A busybox root filesystem under `dir`/rootfs, plus `/pause` (an infra process that
/// sleeps until SIGTERM, for podman's pod: no pause image can be pulled here).
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let bundle = rootfs_fixtures::Bundle::busybox(dir).expect("laying out a busybox rootfs");
    let rootfs = bundle.rootfs().to_path_buf();
    let pause = rootfs.join("pause");
    fs::write(
        &pause,
        "#!/bin/sh\ntrap 'exit 0' TERM INT\nwhile :; do sleep 1 & wait $!; done\n",
    )
    .expect("writing /pause");
    fs::set_permissions(&pause, fs::Permissions::from_mode(0o755)).expect("chmod /pause");
    // What a tmpfs with runc's `tmpcopyup` (podman's --read-only) must start with.
    fs::create_dir_all(rootfs.join("var/tmp/sub")).expect("mkdir /var/tmp/sub");
    fs::write(rootfs.join("var/tmp/sub/from-image"), "image file\n")
        .expect("writing /var/tmp/sub/from-image");
    rootfs
}

/// `tar` of `rootfs` (numeric owners) into `out`.
pub fn tar_rootfs(rootfs: &Path, out: &Path) {
    let st = Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .args(["--numeric-owner", "-cf"])
        .arg(out)
        .arg(".")
        .status()
        .expect("running tar");
    assert!(st.success(), "tar of {} failed: {st}", rootfs.display());
}

impl Proc {
    /// Waits like [`Proc::wait`] but gives up quietly at the deadline (for cleanup).
    pub fn wait_quietly(mut self) -> Option<Output> {
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return Some(self.wait()),
                Ok(None) if Instant::now() < self.deadline => {
                    thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    eprintln!("cleanup: `{}` timed out", self.cmdline);
                    return None;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// podman
// ---------------------------------------------------------------------------------------

/// The binaries the podman tests need.
pub const PODMAN_BINS: &[&str] = &[
    "/usr/bin/podman",
    "/usr/bin/conmon",
    "/usr/bin/script",
    "/usr/bin/unshare",
];

/// A podman of the test's own for one runtime: `--root`, `--runroot`, `--tmpdir`,
/// storage and `containers.conf` (via `CONTAINERS_CONF`) in a temp dir, cgroupfs, the
/// file events backend, the `vfs` storage driver (no mounts of its own), no network. Its
/// containers go below an absolute cgroup parent of the test's own
/// (`/rrun-test/podman-<pid>-<n>`: podman's cgroupfs manager places conmon by absolute
/// path). Cleaned up on drop, also after a panic.
pub struct Podman {
    tmp: Option<tempfile::TempDir>,
    dir: PathBuf,
    /// The runtime podman is pointed at (`--runtime`).
    pub rt: Rt,
    /// The cgroup parent (absolute) of this instance's containers and pods.
    pub cgroup_parent: String,
    ids: Mutex<Vec<String>>,
}

impl Podman {
    /// A podman for `rt` with the busybox image imported; `None` (after a loud SKIPPED
    /// line) when podman is not installed.
    pub fn new(name: &str, rt: &Rt) -> Option<Podman> {
        if missing(PODMAN_BINS) {
            return None;
        }
        let tmp = temp_dir(&format!("podman-{name}"));
        let dir = tmp.path().to_path_buf();
        let d = dir.display();
        for sub in [
            "root", "runroot", "tmp", "vartmp", "net", "volumes", "static",
        ] {
            fs::create_dir_all(dir.join(sub)).expect("mkdir in the podman dir");
        }
        // This machine's hard limits (20000 files) are below podman's defaults; the same
        // limits go on every `run` too (run_flags).
        let conf = format!(
            r#"[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "none"
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
static_dir = "{d}/static"
tmp_dir = "{d}/tmp"
volume_path = "{d}/volumes"
runtime_supports_json = ["crun", "runc", "kata", "runsc", "youki", "krun", "rrun"]
lock_type = "file"

[network]
network_config_dir = "{d}/net"
"#
        );
        fs::write(dir.join("containers.conf"), conf).expect("writing containers.conf");
        let storage = format!(
            "[storage]\ndriver = \"vfs\"\nrunroot = \"{d}/runroot\"\ngraphroot = \"{d}/root\"\n"
        );
        fs::write(dir.join("storage.conf"), storage).expect("writing storage.conf");
        fs::write(dir.join("registries.conf"), "").expect("writing registries.conf");
        let p = Podman {
            tmp: Some(tmp),
            dir,
            rt: rt.clone(),
            cgroup_parent: format!("/{CGROUP_PARENT}/{}", unique("podman")),
            ids: Mutex::new(Vec::new()),
        };
        let rootfs = busybox_rootfs(&p.dir.join("image"));
        let tar = p.dir.join("rootfs.tar");
        tar_rootfs(&rootfs, &tar);
        // c/image keeps a blob-info cache in /var/lib/containers/cache whatever --root
        // says: the import runs in a mount namespace of its own where /var/lib is a
        // tmpfs, so the host's /var/lib never sees it.
        let mut argv = vec![
            "-m".to_string(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            "mount -t tmpfs rrun-podman-import /var/lib && exec \"$@\"".into(),
            "sh".into(),
        ];
        argv.extend(p.argv(["import", &tar.display().to_string(), IMAGE]));
        let mut cmd = Cmd::new("/usr/bin/unshare", &p.dir.join("out")).args(argv);
        for (k, v) in p.envs() {
            cmd = cmd.env(k, v);
        }
        let out = cmd.run();
        assert!(out.success(), "podman import:\n{out}");
        Some(p)
    }

    /// The temp dir of this instance.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The environment every podman command gets: this instance's configs only.
    pub fn envs(&self) -> Vec<(&'static str, PathBuf)> {
        let d = &self.dir;
        vec![
            ("CONTAINERS_CONF", d.join("containers.conf")),
            ("CONTAINERS_STORAGE_CONF", d.join("storage.conf")),
            ("CONTAINERS_REGISTRIES_CONF", d.join("registries.conf")),
            ("TMPDIR", d.join("vartmp")),
        ]
    }

    /// `podman GLOBAL-FLAGS --runtime RT ARGS...` as a command line.
    pub fn argv<I, S>(&self, args: I) -> Vec<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let d = &self.dir;
        let mut v: Vec<String> = vec![
            "/usr/bin/podman".into(),
            "--root".into(),
            d.join("root").display().to_string(),
            "--runroot".into(),
            d.join("runroot").display().to_string(),
            "--tmpdir".into(),
            d.join("tmp").display().to_string(),
            "--cgroup-manager".into(),
            "cgroupfs".into(),
            "--events-backend".into(),
            "file".into(),
            "--storage-driver".into(),
            "vfs".into(),
            "--runtime".into(),
            self.rt.arg(),
        ];
        v.extend(args.into_iter().map(|a| a.as_ref().to_string()));
        v
    }

    /// `podman GLOBAL-FLAGS --runtime RT ARGS...`, to be run.
    pub fn podman<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let argv = self.argv(args);
        let mut cmd = Cmd::new(&argv[0], &self.dir.join("out")).args(&argv[1..]);
        for (k, v) in self.envs() {
            cmd = cmd.env(k, v);
        }
        cmd
    }

    /// `podman ARGS...` run by script(1) on a pty of its own (for `-t`).
    pub fn podman_on_pty<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut cmd = script_cmd(&self.argv(args), &self.dir.join("out"));
        for (k, v) in self.envs() {
            cmd = cmd.env(k, v);
        }
        cmd
    }

    /// A container (or pod) name, registered for cleanup.
    pub fn new_name(&self, prefix: &str) -> String {
        let n = unique(prefix);
        self.ids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(n.clone());
        n
    }

    /// Flags for `podman run`: no network, the instance's cgroup parent, the limits this
    /// machine allows, and `RRUN_TEST_ID=<name>` in the environment.
    pub fn run_flags(&self, name: &str) -> Vec<String> {
        vec![
            "--name".into(),
            name.into(),
            "--network".into(),
            "none".into(),
            "--cgroup-parent".into(),
            self.cgroup_parent.clone(),
            "--ulimit".into(),
            "nofile=20000:20000".into(),
            "--ulimit".into(),
            "nproc=32768:32768".into(),
            "--env".into(),
            format!("RRUN_TEST_ID={name}"),
        ]
    }

    /// Flags for `podman run --pod`: the pod decides network and cgroup parent.
    pub fn pod_run_flags(&self, name: &str, pod: &str) -> Vec<String> {
        vec![
            "--name".into(),
            name.into(),
            "--pod".into(),
            pod.into(),
            "--ulimit".into(),
            "nofile=20000:20000".into(),
            "--ulimit".into(),
            "nproc=32768:32768".into(),
            "--env".into(),
            format!("RRUN_TEST_ID={name}"),
        ]
    }

    /// `podman run RUN-FLAGS OPTS... IMAGE ARGS...`.
    pub fn run_cmd(&self, name: &str, opts: &[&str], args: &[&str]) -> Cmd {
        self.podman(["run"])
            .args(self.run_flags(name))
            .args(opts)
            .arg(IMAGE)
            .args(args)
    }

    /// `podman inspect -f FORMAT NAME`, trimmed; panics on failure.
    #[track_caller]
    pub fn inspect(&self, name: &str, format: &str) -> String {
        let out = self.podman(["inspect", "-f", format, name]).run();
        assert!(out.success(), "podman inspect:\n{out}");
        out.stdout.trim().to_string()
    }

    /// The container's full id.
    pub fn id_of(&self, name: &str) -> String {
        self.inspect(name, "{{.Id}}")
    }

    /// The host pid of the container's init (0 when not running).
    pub fn pid_of(&self, name: &str) -> i32 {
        self.inspect(name, "{{.State.Pid}}").parse().unwrap_or(0)
    }

    /// Polls `podman inspect` until `{{.State.Status}}` is `want`.
    #[track_caller]
    pub fn wait_status(&self, name: &str, want: &str) {
        wait_for(
            Duration::from_secs(30),
            || {
                let out = self
                    .podman(["inspect", "-f", "{{.State.Status}}", name])
                    .run();
                out.success() && out.stdout.trim() == want
            },
            &format!("container {name} to be {want}"),
        );
    }

    /// The runtime's state directory of container `id` (podman passes no `--root`).
    pub fn runtime_state(&self, id: &str) -> PathBuf {
        self.rt.default_root().join(id)
    }

    /// Conmons of this instance.
    pub fn conmons(&self) -> Vec<i32> {
        pids_with_cmdline(&["conmon", &self.dir.display().to_string()])
    }

    /// Panics unless nothing of container `id` (full id) is left: no runtime state, no
    /// conmon, no process with its test id, no mount, no cgroup.
    #[track_caller]
    pub fn assert_nothing_left(&self, name: &str, id: &str) {
        let deadline = Instant::now() + scaled(Duration::from_secs(15));
        let dir = self.dir.display().to_string();
        loop {
            let conmons = pids_with_cmdline(&["conmon", &dir, id]);
            let procs = pids_with_env(name);
            let state = self.runtime_state(id).exists();
            let mounts: Vec<String> = mounts_under(&self.dir)
                .into_iter()
                .filter(|m| m.contains(id))
                .collect();
            let cgroups = self.cgroups_named(id);
            if conmons.is_empty()
                && procs.is_empty()
                && !state
                && mounts.is_empty()
                && cgroups.is_empty()
            {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "left behind for {name} ({id}): conmons: {conmons:?}; processes: {procs:?}; runtime state: {state}; mounts: {mounts:?}; cgroups: {cgroups:?}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Cgroup directories below this instance's parent (any hierarchy) whose name
    /// contains `needle` (podman names them `libpod-<id>`, or puts a pod's containers
    /// below `<parent>/<pod id>/`).
    pub fn cgroups_named(&self, needle: &str) -> Vec<PathBuf> {
        fn walk(d: &Path, needle: &str, out: &mut Vec<PathBuf>) {
            let Ok(rd) = fs::read_dir(d) else { return };
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    if e.file_name().to_string_lossy().contains(needle) {
                        out.push(e.path());
                    }
                    walk(&e.path(), needle, out);
                }
            }
        }
        let mut v = Vec::new();
        for d in existing_cgroups(self.cgroup_parent.trim_start_matches('/')) {
            walk(&d, needle, &mut v);
        }
        v
    }

    /// Ids of every container this instance knows (`podman ps -aq --no-trunc`).
    fn all_ids(&self) -> Vec<String> {
        self.podman(["ps", "-aq", "--no-trunc"])
            .timeout(Duration::from_secs(15))
            .spawn()
            .wait_quietly()
            .map(|o| o.stdout.lines().map(|l| l.trim().to_string()).collect())
            .unwrap_or_default()
    }

    fn cleanup(&mut self) {
        let short = Duration::from_secs(20);
        let ids = self.all_ids();
        let _ = self
            .podman(["pod", "rm", "--all", "--force", "--time", "0"])
            .timeout(short)
            .spawn()
            .wait_quietly();
        let _ = self
            .podman(["rm", "--all", "--force", "--time", "0"])
            .timeout(short)
            .spawn()
            .wait_quietly();
        let rel = self.cgroup_parent.trim_start_matches('/').to_string();
        kill_and_wait(&self.conmons());
        kill_and_wait(&pids_in_cgroups(&rel));
        for name in self.ids.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            kill_and_wait(&pids_with_env(name));
        }
        // The runtime's state of a container podman lost track of (podman passes no
        // --root, so it is in the runtime's default root).
        for id in ids {
            if self.runtime_state(&id).exists() {
                let _ = Cmd::new(&self.rt.path, &self.dir.join("out"))
                    .args(["delete", "--force", &id])
                    .timeout(short)
                    .spawn()
                    .wait_quietly();
            }
        }
        unmount_all_under(&self.dir);
        remove_cgroups(&rel);
        for d in cgroup_dirs(CGROUP_PARENT) {
            let _ = fs::remove_dir(&d);
        }
        if let Some(tmp) = self.tmp.take() {
            remove_temp(tmp);
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Parses JSON or panics with the command's output.
#[track_caller]
pub fn json_of(out: &Output) -> Value {
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// A container whose init logs `ready`, answers SIGTERM with `exit 42` (saying so) and
/// SIGUSR1 with a line, and otherwise sleeps in short naps (so a signal is handled at
/// once).
const SERVICE: &str = "trap 'echo got-term; exit 42' TERM; trap 'echo got-usr1' USR1; \
                       echo ready; while :; do sleep 1 & wait $!; done";

fn start_service(p: &Podman, name: &str, opts: &[&str]) {
    let mut o = vec!["-d"];
    o.extend_from_slice(opts);
    let out = p.run_cmd(name, &o, &["sh", "-c", SERVICE]).run();
    assert!(out.success(), "podman run -d:\n{out}");
    p.wait_status(name, "running");
    wait_for(
        Duration::from_secs(20),
        || p.podman(["logs", name]).run().stdout.contains("ready"),
        "the container to log ready",
    );
}

#[track_caller]
fn rm(p: &Podman, name: &str) {
    let out = p.podman(["rm", "--force", "--time", "0", name]).run();
    assert!(out.success(), "podman rm:\n{out}");
}

compat_test! {
    /// `podman run` in the foreground: the container's stdout and stderr, its exit code,
    /// its cgroup below the test's parent; `--rm` leaves nothing; `podman info` parses the
    /// runtime's `--version`.
    fn run_foreground_exit_code(rt) {
        let Some(p) = Podman::new("run", rt) else { return };
        let name = p.new_name("run");
        let out = p
            .run_cmd(
                &name,
                // On cgroup v2 podman's default is a private cgroup namespace, where
                // /proc/self/cgroup says only "0::/".
                &["--cgroupns", "host"],
                &["sh", "-c", "echo out; echo err >&2; cat /proc/self/cgroup; exit 3"],
            )
            .run();
        assert_eq!(out.code(), 3, "{out}");
        assert!(out.stdout.lines().any(|l| l == "out"), "{out}");
        assert!(out.stderr.contains("err"), "{out}");
        let want = format!("{}/libpod-", p.cgroup_parent);
        assert!(
            out.stdout.lines().any(|l| l.contains(&want)),
            "the container is not in a cgroup below {want}:\n{out}"
        );
        let id = p.id_of(&name);
        assert_eq!(p.inspect(&name, "{{.State.ExitCode}}"), "3");
        rm(&p, &name);
        p.assert_nothing_left(&name, &id);

        let name = p.new_name("rm");
        let out = p.run_cmd(&name, &["--rm"], &["true"]).run();
        assert!(out.success(), "{out}");
        let ps = p.podman(["ps", "-aq"]).run();
        assert!(ps.success() && ps.stdout.trim().is_empty(), "after run --rm:\n{ps}");

        let info = p
            .podman([
                "info",
                "--format",
                "{{.Host.OCIRuntime.Name}}|{{.Host.OCIRuntime.Version}}",
            ])
            .run();
        assert!(info.success(), "{info}");
        let (rname, version) = info.stdout.trim().split_once('|').unwrap_or_default();
        assert_eq!(
            Path::new(rname).file_name(),
            rt.path.file_name(),
            "{info}"
        );
        assert!(
            version.starts_with(&format!("{} version ", rt.name)) && version.contains("spec: "),
            "podman info shows the runtime's version as {version:?}"
        );
    }
}

compat_test! {
    /// `run -d`, then `exec` (exit code, output, env/cwd/user), `logs`, `top`, and a
    /// `stop` the container answers to; nothing left after `rm`.
    fn detached_exec_logs_top(rt) {
        let Some(p) = Podman::new("exec", rt) else { return };
        let name = p.new_name("svc");
        start_service(&p, &name, &[]);
        let id = p.id_of(&name);
        assert!(p.runtime_state(&id).exists(), "no state of {id} under {}", rt.default_root().display());

        let out = p.podman(["exec", &name, "sh", "-c", "echo from-exec; exit 5"]).run();
        assert_eq!(out.code(), 5, "{out}");
        assert_eq!(out.stdout.trim(), "from-exec", "{out}");
        let out = p
            .podman([
                "exec", "-e", "FOO=bar", "-w", "/tmp", "-u", "1000:1000", &name, "sh", "-c",
                "echo $FOO $(pwd) $(id -u):$(id -g)",
            ])
            .run();
        assert!(out.success(), "{out}");
        assert_eq!(out.stdout.trim(), "bar /tmp 1000:1000", "{out}");

        // exec --detach: the runtime's `exec --detach --pid-file` path under conmon.
        let out = p
            .podman(["exec", "--detach", &name, "sh", "-c", "echo detached > /tmp/mark"])
            .run();
        assert!(out.success(), "{out}");
        wait_for(
            Duration::from_secs(20),
            || p.podman(["exec", &name, "cat", "/tmp/mark"]).run().stdout.trim() == "detached",
            "the detached exec's file",
        );

        let top = p.podman(["top", &name, "pid", "args"]).run();
        assert!(top.success(), "{top}");
        assert!(top.stdout.contains("got-term"), "podman top does not show the init:\n{top}");

        let out = p.podman(["stop", "--time", "20", &name]).run();
        assert!(out.success(), "{out}");
        assert_eq!(p.inspect(&name, "{{.State.ExitCode}}"), "42");
        let logs = p.podman(["logs", &name]).run();
        assert!(logs.success(), "{logs}");
        assert_eq!(logs.stdout.lines().collect::<Vec<_>>(), ["ready", "got-term"], "{logs}");
        rm(&p, &name);
        p.assert_nothing_left(&name, &id);
    }
}

compat_test! {
    /// `stop -t 1` of a container that ignores SIGTERM: SIGKILL after the timeout (exit
    /// 137); `kill -s USR1` reaches the init's handler; `kill` (SIGKILL) ends it.
    fn stop_escalates_and_kill(rt) {
        let Some(p) = Podman::new("stop", rt) else { return };
        let stubborn = p.new_name("stubborn");
        let out = p
            .run_cmd(
                &stubborn,
                &["-d"],
                &["sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"],
            )
            .run();
        assert!(out.success(), "{out}");
        p.wait_status(&stubborn, "running");
        let id = p.id_of(&stubborn);
        let out = p.podman(["stop", "--time", "1", &stubborn]).run();
        assert!(out.success(), "{out}");
        assert!(out.stderr.contains("SIGKILL"), "podman did not say it fell back to SIGKILL:\n{out}");
        assert_eq!(p.inspect(&stubborn, "{{.State.ExitCode}}"), "137");
        rm(&p, &stubborn);
        p.assert_nothing_left(&stubborn, &id);

        let svc = p.new_name("svc");
        start_service(&p, &svc, &[]);
        let id = p.id_of(&svc);
        let out = p.podman(["kill", "--signal", "USR1", &svc]).run();
        assert!(out.success(), "{out}");
        wait_for(
            Duration::from_secs(20),
            || p.podman(["logs", &svc]).run().stdout.contains("got-usr1"),
            "the USR1 handler's line in the logs",
        );
        assert_eq!(p.inspect(&svc, "{{.State.Status}}"), "running");
        let out = p.podman(["kill", &svc]).run();
        assert!(out.success(), "{out}");
        p.wait_status(&svc, "exited");
        assert_eq!(p.inspect(&svc, "{{.State.ExitCode}}"), "137");
        rm(&p, &svc);
        p.assert_nothing_left(&svc, &id);
    }
}

compat_test! {
    /// `pause` freezes the container's cgroup (the kernel's freezer file says so) and
    /// `unpause` thaws it; exec works again after.
    fn pause_unpause(rt) {
        let Some(p) = Podman::new("pause", rt) else { return };
        let name = p.new_name("svc");
        start_service(&p, &name, &[]);
        let id = p.id_of(&name);
        let pid = p.pid_of(&name);
        assert!(pid > 0);
        assert!(!frozen(pid));
        let out = p.podman(["pause", &name]).run();
        assert!(out.success(), "{out}");
        assert_eq!(p.inspect(&name, "{{.State.Status}}"), "paused");
        assert!(frozen(pid), "podman says paused but the cgroup of {pid} is not frozen");
        let out = p.podman(["unpause", &name]).run();
        assert!(out.success(), "{out}");
        assert_eq!(p.inspect(&name, "{{.State.Status}}"), "running");
        assert!(!frozen(pid), "still frozen after unpause");
        let out = p.podman(["exec", &name, "echo", "thawed"]).run();
        assert_eq!(out.stdout.trim(), "thawed", "{out}");
        rm(&p, &name);
        p.assert_nothing_left(&name, &id);
    }
}

compat_test! {
    /// `--memory 64m --cpus 0.5 --pids-limit 77` as the kernel's cgroup files have them,
    /// then `podman update --cpus 1 --memory 128m`.
    fn resource_limits(rt) {
        let Some(p) = Podman::new("limits", rt) else { return };
        let name = p.new_name("lim");
        start_service(&p, &name, &["--memory", "64m", "--cpus", "0.5", "--pids-limit", "77"]);
        let id = p.id_of(&name);
        let pid = p.pid_of(&name);
        assert!(
            cgroup_dir_of(pid, "memory").display().to_string().contains(&p.cgroup_parent),
            "{} is not below {}",
            cgroup_dir_of(pid, "memory").display(),
            p.cgroup_parent
        );
        if unified_cgroups() {
            assert_eq!(cgroup_file(pid, "", "memory.max"), "67108864");
            assert_eq!(cgroup_file(pid, "", "cpu.max"), "50000 100000");
            assert_eq!(cgroup_file(pid, "", "pids.max"), "77");
        } else {
            assert_eq!(cgroup_file(pid, "memory", "memory.limit_in_bytes"), "67108864");
            assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_quota_us"), "50000");
            assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_period_us"), "100000");
            assert_eq!(cgroup_file(pid, "pids", "pids.max"), "77");
        }
        // `podman update` hands the runtime new resources (`update --resources`).
        let out = p.podman(["update", "--cpus", "1", "--memory", "128m", &name]).run();
        assert!(out.success(), "{out}");
        if unified_cgroups() {
            assert_eq!(cgroup_file(pid, "", "memory.max"), "134217728");
            assert_eq!(cgroup_file(pid, "", "cpu.max"), "100000 100000");
        } else {
            assert_eq!(cgroup_file(pid, "memory", "memory.limit_in_bytes"), "134217728");
            assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_quota_us"), "100000");
        }
        rm(&p, &name);
        p.assert_nothing_left(&name, &id);
    }
}

compat_test! {
    /// `run -t` (on a pty of script(1)): the container's stdin/stdout are a terminal;
    /// with `-i` what is typed reaches its shell and the exit code comes back.
    fn tty(rt) {
        let Some(p) = Podman::new("tty", rt) else { return };
        let name = p.new_name("tty");
        let mut argv = vec!["run".to_string()];
        argv.extend(p.run_flags(&name));
        argv.extend(["--rm", "-t", IMAGE, "sh", "-c", "tty; test -t 0 && echo stdin-is-a-tty; exit 4"].map(String::from));
        let out = p.podman_on_pty(&argv).run();
        assert_eq!(out.code(), 4, "{out}");
        assert!(out.stdout.contains("/dev/pts/"), "{out}");
        assert!(out.stdout.contains("stdin-is-a-tty"), "{out}");

        let name = p.new_name("tty-i");
        let mut argv = vec!["run".to_string()];
        argv.extend(p.run_flags(&name));
        argv.extend(["--rm", "-it", IMAGE, "sh"].map(String::from));
        let out = p
            .podman_on_pty(&argv)
            .stdin(b"echo typed-$((6*7))\nexit 9\n")
            .run();
        assert_eq!(out.code(), 9, "{out}");
        assert!(out.stdout.contains("typed-42"), "{out}");
        let ps = p.podman(["ps", "-aq"]).run();
        assert!(ps.stdout.trim().is_empty(), "after run --rm -t:\n{ps}");

        // exec -t into a running container: the runtime's `exec --tty --console-socket`.
        let svc = p.new_name("svc");
        start_service(&p, &svc, &[]);
        let id = p.id_of(&svc);
        let out = p
            .podman_on_pty(["exec", "-t", &svc, "sh", "-c", "tty; exit 6"])
            .run();
        assert_eq!(out.code(), 6, "{out}");
        assert!(out.stdout.contains("/dev/pts/"), "{out}");
        rm(&p, &svc);
        p.assert_nothing_left(&svc, &id);
    }
}

compat_test! {
    /// A pod (infra container from the imported image running /pause) sharing ipc, uts,
    /// net and pid: its two containers see each other's processes and have the same
    /// namespaces as the infra container (from /proc on the host), but their own mount
    /// namespace.
    fn pod_shares_namespaces(rt) {
        let Some(p) = Podman::new("pod", rt) else { return };
        let pod = p.new_name("pod");
        let mut create = p.podman([
            "pod", "create", "--name", &pod, "--infra-image", IMAGE, "--infra-command",
            "/pause", "--cgroup-parent", &p.cgroup_parent, "--network", "none", "--share",
            "ipc,uts,net,pid",
        ]);
        if unified_cgroups() {
            // podman 4.3's cgroupfs manager makes the pod's own cgroup on cgroup v2 with an
            // empty device list, i.e. a deny-all device program: below it runc and rrun
            // alike fail to open /dev/null. Without the pod cgroup as parent, the
            // containers go below the instance's parent.
            create = create.arg("--share-parent=false");
        }
        let out = create.run();
        assert!(out.success(), "{out}");
        let a = p.new_name("a");
        let out = p
            .podman(["run", "-d"])
            .args(p.pod_run_flags(&a, &pod))
            .args([IMAGE, "sh", "-c", "exec sleep 1001"])
            .run();
        assert!(out.success(), "{out}");
        p.wait_status(&a, "running");
        let b = p.new_name("b");
        let out = p
            .podman(["run", "--rm"])
            .args(p.pod_run_flags(&b, &pod))
            .args([IMAGE, "sh", "-c", "ps -o args; hostname"])
            .run();
        assert!(out.success(), "{out}");
        assert!(out.stdout.contains("sleep 1001"), "b does not see a's process:\n{out}");
        assert!(out.stdout.contains("/pause"), "b does not see the infra process:\n{out}");
        let a_host = p.podman(["exec", &a, "hostname"]).run();
        assert_eq!(
            out.stdout.lines().last().unwrap_or_default(),
            a_host.stdout.trim(),
            "a and b have different hostnames:\n{out}\n{a_host}"
        );

        let infra = p
            .podman(["pod", "inspect", "-f", "{{.InfraContainerID}}", &pod])
            .run();
        assert!(infra.success(), "{infra}");
        let infra_pid = p.pid_of(infra.stdout.trim());
        let a_pid = p.pid_of(&a);
        let ns = |pid: i32, kind: &str| {
            fs::read_link(format!("/proc/{pid}/ns/{kind}"))
                .map(|l| l.display().to_string())
                .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/{kind}: {e}"))
        };
        for kind in ["ipc", "uts", "net", "pid"] {
            assert_eq!(ns(a_pid, kind), ns(infra_pid, kind), "{kind} namespace not shared");
        }
        assert_ne!(ns(a_pid, "mnt"), ns(infra_pid, "mnt"));
        let a_id = p.id_of(&a);
        let out = p.podman(["pod", "rm", "--force", "--time", "1", &pod]).run();
        assert!(out.success(), "{out}");
        p.assert_nothing_left(&a, &a_id);
        let pod_id = out.stdout.trim().to_string();
        // On a hybrid host podman's cgroupfs manager removes the pod's cgroup from the v1
        // controller hierarchies it knows; runc also makes one in name=systemd and in the
        // v2 tree, which podman leaves (rrun removes the parents it made). That is the
        // engine's and runc's; the guard removes it. Everywhere else nothing may stay.
        let left: Vec<PathBuf> = p
            .cgroups_named(&pod_id)
            .into_iter()
            .filter(|d| {
                unified_cgroups()
                    || !(d.starts_with("/sys/fs/cgroup/systemd")
                        || d.starts_with("/sys/fs/cgroup/unified"))
            })
            .collect();
        assert!(left.is_empty(), "the pod's cgroups are left: {left:?}");
    }
}

compat_test! {
    /// Errors from the runtime reach the podman user as its message and as the exit codes
    /// docker defined (127: no such program, 126: not executable); a container whose start
    /// failed leaves nothing behind after `rm`.
    fn runtime_errors_reach_the_user(rt) {
        let Some(p) = Podman::new("errors", rt) else { return };
        let name = p.new_name("missing");
        let out = p.run_cmd(&name, &["--rm"], &["/no/such/program"]).run();
        assert_eq!(out.code(), 127, "{out}");
        assert!(
            out.stderr.contains("/no/such/program") && out.stderr.contains("no such file or directory"),
            "{out}"
        );
        let name = p.new_name("noexec");
        let out = p.run_cmd(&name, &["--rm"], &["/etc/passwd"]).run();
        assert_eq!(out.code(), 126, "{out}");
        assert!(out.stderr.to_lowercase().contains("permission denied"), "{out}");

        let name = p.new_name("created");
        let out = p
            .podman(["create"])
            .args(p.run_flags(&name))
            .args([IMAGE, "/no/such/program"])
            .run();
        assert!(out.success(), "{out}");
        let id = out.stdout.trim().to_string();
        let out = p.podman(["start", "--attach", &name]).run();
        assert!(!out.success(), "{out}");
        assert!(out.stderr.contains("/no/such/program"), "{out}");
        rm(&p, &name);
        p.assert_nothing_left(&name, &id);
        let ps = p.podman(["ps", "-aq"]).run();
        assert!(ps.stdout.trim().is_empty(), "{ps}");

        // The same through `exec` into a running container.
        let svc = p.new_name("svc");
        start_service(&p, &svc, &[]);
        let id = p.id_of(&svc);
        let out = p.podman(["exec", &svc, "/no/such/program"]).run();
        assert_eq!(out.code(), 127, "{out}");
        assert!(out.stderr.contains("no such file or directory"), "{out}");
        let out = p.podman(["exec", &svc, "no-such-command"]).run();
        assert_eq!(out.code(), 127, "{out}");
        assert!(out.stderr.contains("executable file not found"), "{out}");
        let out = p.podman(["exec", &svc, "/etc/passwd"]).run();
        assert_eq!(out.code(), 126, "{out}");
        assert_eq!(p.inspect(&svc, "{{.State.Status}}"), "running");
        rm(&p, &svc);
        p.assert_nothing_left(&svc, &id);
    }
}

compat_test! {
    /// The harness itself: a test that panics with a container running leaves nothing
    /// behind once its podman guard has dropped (no process, conmon, runtime state,
    /// cgroup or temp dir).
    fn guard_cleans_up_after_a_panic(rt) {
        if missing(PODMAN_BINS) {
            return;
        }
        let seen: Mutex<Option<(PathBuf, String, String, String)>> = Mutex::new(None);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let p = Podman::new("panic", rt).expect("podman is installed");
            let name = p.new_name("svc");
            start_service(&p, &name, &[]);
            *seen.lock().unwrap() = Some((
                p.dir().to_path_buf(),
                name.clone(),
                p.id_of(&name),
                p.cgroup_parent.clone(),
            ));
            panic!("deliberate panic with {name} running");
        }));
        assert!(r.is_err());
        let (dir, name, id, parent) = seen.into_inner().unwrap().expect("the body ran");
        assert!(pids_with_env(&name).is_empty(), "container processes left");
        assert!(
            pids_with_cmdline(&["conmon", &dir.display().to_string()]).is_empty(),
            "conmon left"
        );
        assert!(!rt.default_root().join(&id).exists(), "runtime state left");
        assert!(
            existing_cgroups(parent.trim_start_matches('/')).is_empty(),
            "cgroups left: {:?}",
            existing_cgroups(parent.trim_start_matches('/'))
        );
        assert!(!dir.exists(), "{} left", dir.display());
    }
}

compat_test! {
    /// `--read-only`: the root is read-only, a read-only volume stays so, `--tmpfs` is
    /// writable, and the tmpfs podman puts on /var/tmp (runc's `tmpcopyup` extension)
    /// starts with what the image has there.
    fn read_only_root(rt) {
        let Some(p) = Podman::new("ro", rt) else { return };
        let vol = p.dir().join("volume");
        fs::create_dir(&vol).expect("mkdir volume");
        fs::write(vol.join("f"), "host file\n").expect("writing the volume's file");
        let name = p.new_name("ro");
        let out = p
            .run_cmd(
                &name,
                &[
                    "--rm",
                    "--read-only",
                    "-v",
                    &format!("{}:/data:ro", vol.display()),
                    "--tmpfs",
                    "/scratch",
                ],
                &[
                    "sh",
                    "-c",
                    "cat /data/f; touch /etc/x || echo root-ro; touch /data/x || echo data-ro; \
                     touch /scratch/y && echo scratch-rw; cat /var/tmp/sub/from-image; \
                     touch /var/tmp/new && echo var-tmp-rw",
                ],
            )
            .run();
        assert!(out.success(), "{out}");
        assert_eq!(
            out.stdout.lines().collect::<Vec<_>>(),
            ["host file", "root-ro", "data-ro", "scratch-rw", "image file", "var-tmp-rw"],
            "{out}"
        );
    }
}
