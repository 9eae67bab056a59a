//! Shared harness for rrun's end-to-end tests.
//!
//! The binary under test is `$RRUN_BIN`, or else the first of
//! `<workspace>/target/release/rrun` and `<workspace>/target/debug/rrun` that exists.
//! Every test must also pass with `RRUN_BIN=/usr/sbin/runc`.
//!
//! A test makes a [`TestEnv`] (a guard: private `--root`, temp dirs, cleanup on drop even
//! when the test panics), then containers with [`TestEnv::container`], each with its own
//! busybox bundle, a unique id, a unique relative `linux.cgroupsPath`
//! (`rrun-test/<id>`) and `RRUN_TEST_ID=<id>` in its environment (so leftovers can be
//! found in `/proc/*/environ`).
//!
//! ```no_run
//! use integration_tests::*;
//! let env = TestEnv::new("example");
//! let mut c = env.container();
//! c.set_args(["sh", "-c", "echo hi; exit 3"]);
//! let out = c.run();
//! assert_eq!(out.code(), 3);
//! assert_eq!(out.stdout.trim(), "hi");
//! ```
//!
//! Every runtime invocation has a timeout ([`INVOCATION_TIMEOUT`] unless set): a hung
//! runtime fails the test instead of hanging the run.

pub mod agent;
pub mod cri;
pub mod engines;
pub mod kubectl;
pub mod kubelet;
pub mod netns;
pub mod registry;
pub mod registry_fakes;
pub mod traffic;

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::ops::{Deref, DerefMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

pub use rootfs_fixtures::{self, default_spec, Bundle, APP_GID, APP_UID, EXTRA_GID, NOBODY};
pub use serde_json::{json, Value};

/// Default timeout of one runtime invocation.
pub const INVOCATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Unix seconds of an RFC 3339 time as the Kubernetes API and the kubelet write them
/// (`2024-01-02T03:04:05Z`, fractions allowed; no zone read as UTC).
pub fn rfc3339_secs(t: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339_weak(t).ok()?;
    let secs = at.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

/// Every timeout of the harness is multiplied by `RRUN_TEST_TIME_SCALE` (default 1): the
/// cgroup v2 pass runs in a VM without KVM (scripts/vm-test.sh), where everything is
/// several times slower.
pub fn scaled(t: Duration) -> Duration {
    let k = std::env::var("RRUN_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    t * k
}

/// The parent of every test container's `linux.cgroupsPath`.
pub const CGROUP_PARENT: &str = "rrun-test";

// ---------------------------------------------------------------------------------------
// The binary under test
// ---------------------------------------------------------------------------------------

/// The workspace root (parent of this crate's manifest dir).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests has a parent dir")
        .to_path_buf()
}

/// A peer binary the project's scripts provide: `$env`, else the path `script` (under
/// `scripts/`) prints, which builds or unpacks it into a cache once per machine.
/// `Err(why)` if it cannot be had.
pub fn script_binary(env: &str, script: &str) -> Result<PathBuf, String> {
    if let Some(b) = std::env::var_os(env).filter(|b| !b.is_empty()) {
        let p = PathBuf::from(b);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!("{env}={} does not exist", p.display()))
        };
    }
    let script = workspace_dir().join("scripts").join(script);
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}):\n{stderr}",
            script.display(),
            out.status
        ));
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if path.is_empty() || !Path::new(&path).is_file() {
        return Err(format!(
            "{} printed no binary's path:\n{stderr}",
            script.display()
        ));
    }
    Ok(PathBuf::from(path))
}

/// The runtime binary under test: `$RRUN_BIN`, else `target/release/rrun`, else
/// `target/debug/rrun`. Panics with a clear message if none exists.
pub fn runtime_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(b) = std::env::var_os("RRUN_BIN").filter(|b| !b.is_empty()) {
            let p = PathBuf::from(b);
            assert!(p.is_file(), "RRUN_BIN={} does not exist", p.display());
            return p;
        }
        let ws = workspace_dir();
        for p in [ws.join("target/release/rrun"), ws.join("target/debug/rrun")] {
            if p.is_file() {
                return p;
            }
        }
        panic!(
            "no runtime binary: set RRUN_BIN or build rrun (cargo build -p rrun); looked in {}/target/{{release,debug}}/rrun",
            ws.display()
        )
    })
    .clone()
}

/// Is the binary under test runc (the reference runtime)?
pub fn is_runc() -> bool {
    static IS: OnceLock<bool> = OnceLock::new();
    *IS.get_or_init(|| {
        let bin = runtime_binary();
        if bin
            .file_name()
            .and_then(OsStr::to_str)
            .is_some_and(|n| n.starts_with("runc"))
        {
            return true;
        }
        Command::new(&bin)
            .arg("--version")
            .stdin(Stdio::null())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).starts_with("runc"))
            .unwrap_or(false)
    })
}

/// runc, the reference runtime, where Debian installs it.
pub const REFERENCE_RUNC: &str = "/usr/sbin/runc";

/// The runtimes a parity test runs its case against: the one under test, then runc when it
/// is installed and not already the one under test.
pub fn runtime_and_reference() -> Vec<PathBuf> {
    let mut v = vec![runtime_binary()];
    if !is_runc() && Path::new(REFERENCE_RUNC).is_file() {
        v.push(PathBuf::from(REFERENCE_RUNC));
    }
    v
}

/// Skip (return `true` after printing why) when the binary under test is runc, for
/// features runc 1.1 lacks. Never skips for any other runtime.
///
/// ```no_run
/// if integration_tests::skip_if_runc("runc 1.1 has no time namespace") { return; }
/// ```
pub fn skip_if_runc(reason: &str) -> bool {
    if is_runc() {
        eprintln!("SKIPPED against runc: {reason}");
        println!("SKIPPED against runc: {reason}");
        true
    } else {
        false
    }
}

// ---------------------------------------------------------------------------------------
// Invocations
// ---------------------------------------------------------------------------------------

/// What a finished invocation printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The command line, for messages.
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    /// Files holding stdout/stderr. With `create`/`run --detach` the container inherits
    /// them, so they keep growing after the invocation returns: see [`Output::reread`].
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl Output {
    /// The exit code, or 128+signal if the runtime was killed by a signal.
    pub fn code(&self) -> i32 {
        match (self.status.code(), self.status.signal()) {
            (Some(c), _) => c,
            (None, Some(s)) => 128 + s,
            _ => -1,
        }
    }

    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Panics (with everything printed) unless the exit code was 0.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert!(self.success(), "expected success:\n{self}");
        self
    }

    /// Panics unless the exit code was non-zero.
    #[track_caller]
    pub fn failed(&self) -> &Self {
        assert!(!self.success(), "expected failure:\n{self}");
        self
    }

    /// stdout and stderr as they are now (containers may still be writing).
    pub fn reread(&self) -> (String, String) {
        (read_lossy(&self.stdout_path), read_lossy(&self.stderr_path))
    }

    /// stdout parsed as JSON; panics with the output on error.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{self}"))
    }
}

impl std::fmt::Display for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\nexit: {} ({})\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
            self.cmdline,
            self.code(),
            self.status,
            self.stdout,
            self.stderr
        )
    }
}

fn read_lossy(p: &Path) -> String {
    fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A runtime command line being prepared: see [`TestEnv::cmd`].
pub struct Invocation {
    program: PathBuf,
    args: Vec<String>,
    cwd: Option<PathBuf>,
    timeout: Duration,
    stdin: Option<Stdio>,
    fds: Vec<OwnedFd>,
    leaked: Vec<(OwnedFd, RawFd)>,
    out_dir: PathBuf,
    envs: Vec<(String, String)>,
}

const MAX_PASSED_FDS: usize = 32;

static OUT_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Invocation {
    /// Another argument.
    pub fn arg(mut self, a: impl AsRef<str>) -> Self {
        self.args.push(a.as_ref().to_string());
        self
    }

    /// More arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_string()));
        self
    }

    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = scaled(t);
        self
    }

    pub fn current_dir(mut self, d: impl AsRef<Path>) -> Self {
        self.cwd = Some(d.as_ref().to_path_buf());
        self
    }

    /// stdin for the runtime (default: /dev/null).
    pub fn stdin(mut self, s: impl Into<Stdio>) -> Self {
        self.stdin = Some(s.into());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.envs.push((k.into(), v.into()));
        self
    }

    /// Pass `fd` to the runtime as fd `3 + n` (n = fds passed before), for
    /// `--preserve-fds`. The harness closes every other fd above 2 in the runtime.
    pub fn pass_fd(mut self, fd: impl Into<OwnedFd>) -> Self {
        self.fds.push(fd.into());
        self
    }

    /// Deliberately leak `fd` into the runtime as fd `target` (not close-on-exec), to
    /// check the runtime does not hand stray fds to the container.
    pub fn leak_fd(mut self, fd: impl Into<OwnedFd>, target: RawFd) -> Self {
        self.leaked.push((fd.into(), target));
        self
    }

    fn cmdline(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || c == '\'') {
                s.push_str(&format!("{a:?}"));
            } else {
                s.push_str(a);
            }
        }
        s
    }

    /// Starts the runtime without waiting.
    pub fn spawn(mut self) -> Running {
        let n = OUT_COUNTER.fetch_add(1, Ordering::SeqCst);
        let stdout_path = self.out_dir.join(format!("out-{n}.stdout"));
        let stderr_path = self.out_dir.join(format!("out-{n}.stderr"));
        let stdout = File::create(&stdout_path).expect("create stdout file");
        let stderr = File::create(&stderr_path).expect("create stderr file");
        let cmdline = self.cmdline();
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args)
            .stdin(self.stdin.take().unwrap_or_else(Stdio::null))
            .stdout(stdout)
            .stderr(stderr);
        if let Some(d) = &self.cwd {
            cmd.current_dir(d);
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        assert!(
            self.fds.len() + self.leaked.len() <= MAX_PASSED_FDS,
            "at most {MAX_PASSED_FDS} passed/leaked fds"
        );
        let fds: Vec<RawFd> = self.fds.iter().map(AsRawFd::as_raw_fd).collect();
        let leaked: Vec<(RawFd, RawFd)> = self
            .leaked
            .iter()
            .map(|(f, t)| (f.as_raw_fd(), *t))
            .collect();
        // SAFETY: only async-signal-safe libc calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Move the sources out of the way first so dup2 onto 3.. cannot clobber
                // a source that has not been placed yet.
                // (No allocation here: other test threads may hold the malloc lock.)
                let mut tmp: [RawFd; MAX_PASSED_FDS] = [-1; MAX_PASSED_FDS];
                for (i, &fd) in fds.iter().chain(leaked.iter().map(|(f, _)| f)).enumerate() {
                    let t = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 1000);
                    if t < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    tmp[i] = t;
                }
                for (i, &t) in tmp.iter().take(fds.len()).enumerate() {
                    if libc::dup2(t, 3 + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                let first_free = 3 + fds.len() as libc::c_uint;
                // Close everything else the test process may have inherited, except the
                // parked copies (>= 1000), which are close-on-exec anyway.
                if first_free < 1000 {
                    libc::close_range(first_free, 999, 0);
                }
                for (i, &(_, target)) in leaked.iter().enumerate() {
                    if libc::dup2(tmp[fds.len() + i], target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmdline}: {e}"));
        // Our copies are not needed any more (the child has its own).
        self.fds.clear();
        self.leaked.clear();
        Running {
            child,
            cmdline,
            timeout: self.timeout,
            started: Instant::now(),
            stdout_path,
            stderr_path,
        }
    }

    /// Runs the runtime to completion (or panics after the timeout, killing it).
    pub fn run(self) -> Output {
        self.spawn().wait()
    }
}

/// A runtime process started with [`Invocation::spawn`].
pub struct Running {
    child: Child,
    cmdline: String,
    timeout: Duration,
    started: Instant,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends a signal to the runtime process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2).
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Has it exited? (Non-blocking; reaps it if so.)
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// stdout/stderr so far.
    pub fn output_so_far(&self) -> (String, String) {
        (read_lossy(&self.stdout_path), read_lossy(&self.stderr_path))
    }

    /// Waits for the exit, at most for the invocation's timeout (counted from the
    /// start). On timeout, kills the runtime and panics with what it printed.
    #[track_caller]
    pub fn wait(self) -> Output {
        let deadline = self.started + self.timeout;
        self.wait_until(deadline)
    }

    #[track_caller]
    fn wait_until(mut self, deadline: Instant) -> Output {
        let mut nap = Duration::from_micros(200);
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                let (o, e) = self.output_so_far();
                panic!(
                    "runtime hung: `{}` did not exit within {:?} (killed it)\n--- stdout ---\n{o}\n--- stderr ---\n{e}",
                    self.cmdline, self.timeout
                );
            }
            thread::sleep(nap);
            nap = (nap * 2).min(Duration::from_millis(10));
        };
        let (stdout, stderr) = self.output_so_far();
        Output {
            cmdline: self.cmdline.clone(),
            status,
            stdout,
            stderr,
            stdout_path: self.stdout_path.clone(),
            stderr_path: self.stderr_path.clone(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// The per-test environment (guard)
// ---------------------------------------------------------------------------------------

static ID_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// One test's world: a temp dir holding the runtime's private `--root`, bundles and
/// scratch files. Dropping it (also on panic) force-deletes every container id it
/// handed out, SIGKILLs any process still carrying one of its ids in its environment,
/// unmounts whatever is left mounted under its temp dir, removes the containers'
/// cgroups and finally the temp dir.
pub struct TestEnv {
    name: String,
    tmp: Option<tempfile::TempDir>,
    base: PathBuf,
    root: PathBuf,
    bin: PathBuf,
    ids: Mutex<Vec<String>>,
}

impl TestEnv {
    /// `name` is only used in container ids and dir names (keep it short).
    pub fn new(name: &str) -> TestEnv {
        TestEnv::with_bin(name, runtime_binary())
    }

    /// Like [`TestEnv::new`], driving `bin` instead of the runtime under test (see
    /// [`runtime_and_reference`]).
    pub fn with_bin(name: &str, bin: PathBuf) -> TestEnv {
        let clean: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(24)
            .collect();
        let tmp = tempfile::Builder::new()
            .prefix(&format!("rrun-it-{clean}-"))
            .tempdir()
            .expect("tempdir");
        let base = tmp.path().to_path_buf();
        // Mapped users (user namespaces, non-root processes) must be able to reach
        // bundles below here.
        fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).unwrap();
        let root = base.join("root");
        fs::create_dir(&root).unwrap();
        fs::create_dir(base.join("out")).unwrap();
        TestEnv {
            name: clean,
            tmp: Some(tmp),
            base,
            root,
            bin,
            ids: Mutex::new(Vec::new()),
        }
    }

    /// The temp dir of this test (mode 0755).
    pub fn dir(&self) -> &Path {
        &self.base
    }

    /// The runtime's `--root`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The runtime binary.
    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// A fresh directory under the test's temp dir (mode 0755).
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.base.join(name);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    /// A new unique container id, registered for cleanup.
    pub fn new_id(&self) -> String {
        let n = ID_COUNTER.fetch_add(1, Ordering::SeqCst);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let id = format!(
            "{}-{}-{n}-{:04x}",
            self.name,
            std::process::id(),
            nanos & 0xffff
        );
        self.ids.lock().unwrap().push(id.clone());
        id
    }

    /// `<bin> --root <root> <args...>`, to be run with [`Invocation::run`].
    pub fn cmd<I, S>(&self, args: I) -> Invocation
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Invocation {
            program: self.bin.clone(),
            args: vec!["--root".into(), self.root.display().to_string()],
            cwd: None,
            timeout: scaled(INVOCATION_TIMEOUT),
            stdin: None,
            fds: Vec::new(),
            leaked: Vec::new(),
            out_dir: self.base.join("out"),
            envs: Vec::new(),
        }
        .args(args)
    }

    /// `<bin> <args...>` without `--root` (for `spec`, `features`, `--version`).
    pub fn cmd_no_root<I, S>(&self, args: I) -> Invocation
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut inv = self.cmd(args);
        inv.args.drain(..2);
        inv
    }

    /// Runs `<bin> --root <root> <args...>` with the default timeout.
    pub fn rt<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.cmd(args).run()
    }

    /// A new container: unique id, its own busybox bundle (default spec, `terminal:
    /// false`, `sh`), `linux.cgroupsPath = rrun-test/<id>` and `RRUN_TEST_ID=<id>` in
    /// `process.env`. Nothing runs until you call its methods.
    pub fn container(&self) -> Ctr<'_> {
        let id = self.new_id();
        let dir = self.base.join("bundles").join(&id);
        let mut bundle = Bundle::busybox(&dir).expect("laying out the busybox bundle");
        {
            let c = bundle.config_mut();
            c["linux"]["cgroupsPath"] = format!("{CGROUP_PARENT}/{id}").into();
            c["process"]["env"]
                .as_array_mut()
                .unwrap()
                .push(format!("RRUN_TEST_ID={id}").into());
        }
        bundle.save().unwrap();
        Ctr {
            env: self,
            id,
            bundle,
        }
    }

    /// Shortcut: runs `sh -c script` in a default container (after `edit` changes its
    /// config) and returns the finished `run`.
    pub fn run_sh(&self, script: &str, edit: impl FnOnce(&mut Value)) -> Output {
        let mut c = self.container();
        c.set_args(["sh", "-c", script]);
        edit(c.config_mut());
        c.run()
    }

    /// Panics unless the runtime left nothing behind for `id`: no state entry under
    /// `--root`, no process with `RRUN_TEST_ID=<id>`, no mount under `bundle`.
    #[track_caller]
    pub fn assert_nothing_left(&self, id: &str, bundle: &Path) {
        // Give an exiting child a moment to disappear.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let state = self.root.join(id).exists();
            let procs = pids_with_env(id);
            let mounts = mounts_under(bundle);
            if !state && procs.is_empty() && mounts.is_empty() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "left behind for {id}: state dir exists: {state}; processes: {procs:?}; mounts: {mounts:?}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `list --format json` parsed (an empty list may be printed as `null`).
    pub fn list_json(&self) -> Vec<Value> {
        let out = self.rt(["list", "--format", "json"]);
        out.ok();
        match serde_json::from_str::<Value>(out.stdout.trim()) {
            Ok(Value::Array(a)) => a,
            Ok(Value::Null) => Vec::new(),
            _ if out.stdout.trim().is_empty() => Vec::new(),
            other => panic!("list --format json: unexpected {other:?}\n{out}"),
        }
    }

    fn cleanup(&self) {
        let ids = self.ids.lock().unwrap().clone();
        for id in &ids {
            if self.root.join(id).exists() {
                let _ = self
                    .cmd(["kill", id, "KILL"])
                    .timeout(Duration::from_secs(10))
                    .spawn()
                    .wait_quiet();
                let _ = self
                    .cmd(["delete", "--force", id])
                    .timeout(Duration::from_secs(10))
                    .spawn()
                    .wait_quiet();
            }
        }
        let idset: HashSet<&str> = ids.iter().map(String::as_str).collect();
        for _ in 0..50 {
            let pids: Vec<i32> = ids.iter().flat_map(|id| pids_with_env(id)).collect();
            if pids.is_empty() {
                break;
            }
            for p in pids {
                // SAFETY: plain kill(2).
                unsafe {
                    libc::kill(p, libc::SIGKILL);
                }
            }
            thread::sleep(Duration::from_millis(20));
        }
        unmount_all_under(&self.base);
        for id in &idset {
            remove_cgroups(&format!("{CGROUP_PARENT}/{id}"));
        }
        // The shared parent goes too once no test uses it (runc never removes the parents
        // it made); rmdir of a cgroup that still has children simply fails.
        for d in cgroup_dirs(CGROUP_PARENT) {
            let _ = fs::remove_dir(&d);
        }
    }
}

impl Running {
    /// Like [`Running::wait`] but returns `None` instead of panicking on timeout.
    fn wait_quiet(mut self) -> Option<ExitStatus> {
        let deadline = self.started + self.timeout;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                eprintln!("cleanup: `{}` timed out", self.cmdline);
                return None;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        self.cleanup();
        let left = mounts_under(&self.base);
        if !left.is_empty() {
            // Never recurse into a mount (it could be a bind of something outside).
            let tmp = self.tmp.take().unwrap();
            eprintln!(
                "cleanup: mounts left under {} ({left:?}): not removing it",
                tmp.keep().display()
            );
        } else if std::env::var_os("RRUN_TEST_KEEP").is_some() {
            let tmp = self.tmp.take().unwrap();
            eprintln!("RRUN_TEST_KEEP: leaving {}", tmp.keep().display());
        } else if let Some(tmp) = self.tmp.take() {
            if let Err(e) = tmp.close() {
                eprintln!("cleanup: removing {}: {e}", self.base.display());
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// A container
// ---------------------------------------------------------------------------------------

/// A container of a [`TestEnv`]: an id plus its bundle. Derefs to [`Bundle`], so
/// `config_mut()`, `set_args()`, `rootfs()`, `path()` work on it; the lifecycle
/// methods save the config first.
pub struct Ctr<'a> {
    pub env: &'a TestEnv,
    pub id: String,
    pub bundle: Bundle,
}

impl Deref for Ctr<'_> {
    type Target = Bundle;
    fn deref(&self) -> &Bundle {
        &self.bundle
    }
}

impl DerefMut for Ctr<'_> {
    fn deref_mut(&mut self) -> &mut Bundle {
        &mut self.bundle
    }
}

impl<'a> Ctr<'a> {
    fn save_config(&self) {
        self.bundle.save().expect("saving config.json");
    }

    /// Bind-mounts a fresh host dir (mode 0777) read-write at `dest` in the container
    /// and returns the host path: the usual way for a container to hand files back.
    pub fn share_dir(&mut self, dest: &str) -> PathBuf {
        let host = self
            .env
            .mkdir(&format!("shared-{}{}", self.id, dest.replace('/', "_")));
        fs::set_permissions(&host, fs::Permissions::from_mode(0o777)).unwrap();
        self.add_mount(json!({
            "destination": dest,
            "type": "bind",
            "source": host.display().to_string(),
            "options": ["rbind", "rw"]
        }));
        host
    }

    /// Appends an entry to `mounts`.
    pub fn add_mount(&mut self, m: Value) {
        self.bundle.config_mut()["mounts"]
            .as_array_mut()
            .expect("mounts is an array")
            .push(m);
    }

    /// Sets `process.args` to `sh -c script`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.bundle.set_args(["sh", "-c", script]);
        self
    }

    /// `run --bundle B [extra...] ID`, not yet started.
    pub fn run_cmd(&self, extra: &[&str]) -> Invocation {
        self.save_config();
        self.env
            .cmd(["run", "--bundle", &self.bundle.path().display().to_string()])
            .args(extra)
            .arg(&self.id)
    }

    /// `run` in the foreground to completion: container stdout/stderr and exit code.
    pub fn run(&self) -> Output {
        self.run_cmd(&[]).run()
    }

    /// `run --detach`; panics on failure.
    pub fn run_detached(&self) -> Output {
        let out = self.run_cmd(&["--detach"]).run();
        out.ok();
        out
    }

    /// `create --bundle B [extra...] ID`, not yet started.
    pub fn create_cmd(&self, extra: &[&str]) -> Invocation {
        self.save_config();
        self.env
            .cmd([
                "create",
                "--bundle",
                &self.bundle.path().display().to_string(),
            ])
            .args(extra)
            .arg(&self.id)
    }

    /// `create`; panics on failure. The container's stdout/stderr go to the files of
    /// the returned [`Output`] (see [`Output::reread`]).
    pub fn create(&self) -> Output {
        let out = self.create_cmd(&[]).run();
        out.ok();
        out
    }

    /// `start ID` (not checked).
    pub fn start(&self) -> Output {
        self.env.rt(["start", &self.id])
    }

    /// `state ID` parsed; panics on failure.
    #[track_caller]
    pub fn state(&self) -> Value {
        let out = self.env.rt(["state", &self.id]);
        out.ok();
        out.json()
    }

    /// `status` from `state`, or `None` if `state` fails (e.g. deleted).
    pub fn status(&self) -> Option<String> {
        let out = self.env.rt(["state", &self.id]);
        if !out.success() {
            return None;
        }
        serde_json::from_str::<Value>(&out.stdout)
            .ok()
            .and_then(|v| v["status"].as_str().map(String::from))
    }

    /// The container's init pid from `state`.
    #[track_caller]
    pub fn pid(&self) -> i32 {
        let s = self.state();
        s["pid"].as_i64().unwrap_or_else(|| panic!("no pid in {s}")) as i32
    }

    /// Polls `state` until `status` is `want`; panics after `timeout`.
    #[track_caller]
    pub fn wait_status(&self, want: &str, timeout: Duration) {
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.status();
            if st.as_deref() == Some(want) {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "{}: status {st:?}, wanted {want:?} within {timeout:?}",
                    self.id
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill ID SIG` (not checked).
    pub fn kill(&self, sig: &str) -> Output {
        self.env.rt(["kill", &self.id, sig])
    }

    /// `delete ID` (not checked).
    pub fn delete(&self) -> Output {
        self.env.rt(["delete", &self.id])
    }

    /// `delete --force ID` (not checked).
    pub fn delete_force(&self) -> Output {
        self.env.rt(["delete", "--force", &self.id])
    }

    /// `exec [opts...] ID args...` to completion (not checked).
    pub fn exec(&self, opts: &[&str], args: &[&str]) -> Output {
        self.exec_cmd(opts, args).run()
    }

    /// `exec [opts...] ID args...`, not yet started.
    pub fn exec_cmd(&self, opts: &[&str], args: &[&str]) -> Invocation {
        self.env.cmd(["exec"]).args(opts).arg(&self.id).args(args)
    }

    /// Creates and starts the container with `sh -c "<script>; exec sleep 1000"`-like
    /// args already set by the caller; waits until `running`. Returns the `create`
    /// output (whose files receive the container's stdout/stderr).
    pub fn create_and_start(&self) -> Output {
        let out = self.create();
        self.start().ok();
        self.wait_status("running", Duration::from_secs(10));
        out
    }

    /// Waits until `path` exists (e.g. a file the container writes); panics after
    /// `timeout`.
    #[track_caller]
    pub fn wait_for_file(&self, path: &Path, timeout: Duration) {
        wait_for(timeout, || path.exists(), &format!("{}", path.display()));
    }
}

/// Polls `cond` every 10 ms; panics with `what` after `timeout`.
#[track_caller]
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool, what: &str) {
    let timeout = scaled(timeout);
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------
// Host-side observations and cleanup
// ---------------------------------------------------------------------------------------

/// Pids of processes whose environment has `RRUN_TEST_ID=<id>`.
pub fn pids_with_env(id: &str) -> Vec<i32> {
    let needle = format!("RRUN_TEST_ID={id}");
    let me = std::process::id() as i32;
    let mut pids = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return pids;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        if let Ok(env) = fs::read(e.path().join("environ")) {
            if env.split(|b| *b == 0).any(|v| v == needle.as_bytes()) {
                pids.push(pid);
            }
        }
    }
    pids
}

/// One line of `/proc/self/mountinfo`.
#[derive(Debug, Clone)]
pub struct MountInfo {
    pub mount_point: String,
    pub root: String,
    pub options: String,
    pub optional: String,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text (host's or a container's).
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let p: Vec<&str> = post.split(' ').collect();
            if f.len() < 6 || p.len() < 3 {
                return None;
            }
            Some(MountInfo {
                root: unescape_mount(f[3]),
                mount_point: unescape_mount(f[4]),
                options: f[5].to_string(),
                optional: f[6..].join(" "),
                fstype: p[0].to_string(),
                source: unescape_mount(p[1]),
                super_options: p[2].to_string(),
            })
        })
        .collect()
}

/// Mount points at or below `dir` in the test's (the host's) mount namespace.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse_mountinfo(&text)
        .into_iter()
        .map(|m| m.mount_point)
        .filter(|m| m == &dir || m.starts_with(&format!("{dir}/")))
        .collect()
}

/// Unmounts (lazily, deepest first) everything mounted at or below `dir` in the test's
/// mount namespace: what a runtime, an engine or the CRI server left there.
pub fn unmount_all_under(dir: &Path) {
    for _ in 0..10 {
        let mut ms = mounts_under(dir);
        if ms.is_empty() {
            return;
        }
        ms.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in ms {
            let Ok(c) = std::ffi::CString::new(m) else {
                continue;
            };
            // SAFETY: umount2 with a valid C string.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

/// cgroup mount points of the test process: (mount point, own path in it).
fn cgroup_mounts() -> Vec<(PathBuf, String)> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let own = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut res = Vec::new();
    for m in parse_mountinfo(&text) {
        let own_path = match m.fstype.as_str() {
            "cgroup2" => own
                .lines()
                .find_map(|l| l.strip_prefix("0::"))
                .unwrap_or("/")
                .to_string(),
            "cgroup" => {
                let opts: HashSet<&str> = m.super_options.split(',').collect();
                own.lines()
                    .find_map(|l| {
                        let mut it = l.splitn(3, ':');
                        let (_, ctrls, path) = (it.next()?, it.next()?, it.next()?);
                        if !ctrls.is_empty() && ctrls.split(',').all(|c| opts.contains(c)) {
                            Some(path.to_string())
                        } else {
                            None
                        }
                    })
                    .unwrap_or_else(|| "/".into())
            }
            _ => continue,
        };
        res.push((PathBuf::from(m.mount_point), own_path));
    }
    res
}

/// Directories where a runtime may have made the cgroup `rel` (relative cgroupsPath),
/// in every hierarchy: below the hierarchy root and below the test's own cgroup.
pub fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for (mnt, own) in cgroup_mounts() {
        v.push(mnt.join(rel));
        let own = own.trim_start_matches('/');
        if !own.is_empty() {
            v.push(mnt.join(own).join(rel));
        }
    }
    v.sort();
    v.dedup();
    v
}

fn rmdir_tree(p: &Path) {
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                rmdir_tree(&e.path());
            }
        }
    }
    for _ in 0..20 {
        match fs::remove_dir(p) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => thread::sleep(Duration::from_millis(25)),
        }
    }
    eprintln!("cleanup: could not remove cgroup {}", p.display());
}

/// Removes the cgroup `rel` (and its children) in every hierarchy.
pub fn remove_cgroups(rel: &str) {
    for d in cgroup_dirs(rel) {
        if d.is_dir() {
            rmdir_tree(&d);
        }
    }
}

/// `lchown -R uid:gid path` (e.g. a rootfs for a user namespace).
pub fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("lchown {}: {e}", path.display()));
    let meta = fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        for e in fs::read_dir(path).unwrap().flatten() {
            chown_tree(&e.path(), uid, gid);
        }
    }
}

/// The test process's (= host's) namespace link, e.g. `net:[4026531840]`.
pub fn host_ns(kind: &str) -> String {
    fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap_or_else(|e| panic!("readlink /proc/self/ns/{kind}: {e}"))
        .display()
        .to_string()
}

/// Parses `key: value` lines of `/proc/<pid>/status`-like text, e.g. `CapEff`.
pub fn status_field<'t>(status: &'t str, key: &str) -> Option<&'t str> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key).then(|| v.trim())
    })
}

/// Capability numbers (capability.h) by name, as in the OCI spec (`CAP_...`): the `caps`
/// crate's table, an oracle independent of rrun's own.
pub fn cap_number(name: &str) -> u32 {
    name.parse::<caps::Capability>()
        .unwrap_or_else(|e| panic!("unknown capability {name}: {e}"))
        .index()
        .into()
}

/// The `/proc/self/status` Cap* hex mask of a set of capability names.
pub fn cap_mask(names: &[&str]) -> u64 {
    names.iter().fold(0, |m, n| m | (1u64 << cap_number(n)))
}

// ---------------------------------------------------------------------------------------
// Console socket (like runc's recvtty)
// ---------------------------------------------------------------------------------------

/// A unix socket for `--console-socket`: a background thread accepts one connection and
/// receives the pty master fd (SCM_RIGHTS).
pub struct ConsoleSocket {
    pub path: PathBuf,
    handle: Option<thread::JoinHandle<std::io::Result<OwnedFd>>>,
}

impl ConsoleSocket {
    /// Listens on `path` and starts waiting (at most `INVOCATION_TIMEOUT`) for one fd.
    pub fn bind(path: &Path) -> ConsoleSocket {
        let listener = UnixListener::bind(path)
            .unwrap_or_else(|e| panic!("binding console socket {}: {e}", path.display()));
        let handle = thread::spawn(move || -> std::io::Result<OwnedFd> {
            let lfd = listener.as_raw_fd();
            if !poll_readable(lfd, scaled(INVOCATION_TIMEOUT))? {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "nobody connected to the console socket",
                ));
            }
            let (stream, _) = listener.accept()?;
            if !poll_readable(stream.as_raw_fd(), INVOCATION_TIMEOUT)? {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no message on the console socket",
                ));
            }
            recv_fd(stream.as_raw_fd())
        });
        ConsoleSocket {
            path: path.to_path_buf(),
            handle: Some(handle),
        }
    }

    /// The path as a string, for `--console-socket`.
    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }

    /// The pty master the runtime sent (waits for it).
    #[track_caller]
    pub fn master(&mut self) -> File {
        let h = self.handle.take().expect("master() called twice");
        let fd = h
            .join()
            .expect("console thread panicked")
            .unwrap_or_else(|e| panic!("receiving the pty master: {e}"));
        File::from(fd)
    }
}

fn poll_readable(fd: RawFd, timeout: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        return Ok(r > 0);
    }
}

/// Receives one fd over a unix stream socket (SCM_RIGHTS).
pub fn recv_fd(sock: RawFd) -> std::io::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32 * 4) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: zeroed msghdr is valid; fields set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live buffers.
    let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: walking the control buffer the kernel filled.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<RawFd>());
                return Ok(OwnedFd::from_raw_fd(fd));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("console socket message ({n} bytes) carried no fd"),
    ))
}

/// Reads a pty master until the slave side is closed everywhere (EIO) or `timeout`
/// passes; returns the text with `\r` removed.
pub fn read_pty(master: &mut File, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match poll_readable(master.as_raw_fd(), left) {
            Ok(true) => {}
            _ => break,
        }
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break, // EIO: slave closed
        }
    }
    String::from_utf8_lossy(&out).replace('\r', "")
}

/// Reads a pty master until `needle` shows up (or panics after `timeout`).
#[track_caller]
pub fn read_pty_until(master: &mut File, needle: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).replace('\r', "");
        if text.contains(needle) {
            return text;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !poll_readable(master.as_raw_fd(), left).unwrap_or(false) {
            panic!("pty: no {needle:?} within {timeout:?}; got {text:?}");
        }
        match master.read(&mut buf) {
            Ok(0) => panic!("pty closed before {needle:?}; got {text:?}"),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("pty read failed ({e}) before {needle:?}; got {text:?}"),
        }
    }
}

/// Writes to a pty master.
pub fn write_pty(master: &mut File, text: &str) {
    master.write_all(text.as_bytes()).expect("writing the pty");
}

/// A pipe (read end, write end), both close-on-exec.
pub fn pipe() -> (File, File) {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid 2-element array.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: fresh fds we own.
    unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
}
