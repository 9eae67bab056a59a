//! Harness of the rrun-kubelet tests (`tests/kubelet_pods.rs`): the agent (`rrun-kubelet`,
//! `$RRUN_KUBELET_AGENT_BIN` or `target/debug/rrun-kubelet`) started on a [`Node`] (the
//! stock-kubelet test's namespaces) against a CRI endpoint, with its manifest dir, root dir,
//! pod logs dir in the node's temp dir and its cgroup root a [`CgroupRoot`] of the test's.
//! Its API is read over its unix socket (plain HTTP/1.0), and its CLI run as people run it.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::kubelet::{CgroupRoot, Node};
use crate::{scaled, Value};

fn pod_path(name: &str) -> String {
    format!("/api/v1/namespaces/default/pods/{name}")
}

/// The agent binary under test.
pub fn agent_binary() -> PathBuf {
    if let Some(b) = std::env::var_os("RRUN_KUBELET_AGENT_BIN").filter(|b| !b.is_empty()) {
        return PathBuf::from(b);
    }
    let p = crate::workspace_dir().join("target/debug/rrun-kubelet");
    assert!(
        p.is_file(),
        "no agent binary at {}: build it (cargo build -p rrun-kubelet) or set RRUN_KUBELET_AGENT_BIN",
        p.display()
    );
    p
}

/// The agent process on a node; killed (SIGKILL, its process group) on drop.
pub struct Agent {
    child: Option<Child>,
    pub manifests: PathBuf,
    pub root_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub log: PathBuf,
    cmd: Vec<String>,
    starts: usize,
}

fn spawn(cmd: &[String], log: &Path) -> Child {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("agent log");
    let mut c = Command::new(&cmd[0]);
    c.args(&cmd[1..])
        .env("RRUN_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .process_group(0);
    // SAFETY: prctl is async-signal-safe; the agent dies with the test process.
    unsafe {
        c.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    c.spawn().expect("spawning rrun-kubelet")
}

impl Agent {
    /// Starts the agent on `node` against `endpoint`; `extra` are more flags.
    pub fn start(
        node: &Node,
        endpoint: &Path,
        cgroups: &CgroupRoot,
        tag: &str,
        extra: &[String],
    ) -> Agent {
        let base = node.dir().join(format!("agent-{tag}"));
        let sub = |d: &str| {
            let p = base.join(d);
            fs::create_dir_all(&p).expect("mkdir");
            p
        };
        let manifests = sub("manifests");
        let root_dir = sub("root");
        let logs_dir = sub("pod-logs");
        let log = base.join("agent.log");
        let mut cmd = node.wrap();
        cmd.push(agent_binary().display().to_string());
        cmd.extend([
            format!("--pod-manifest-path={}", manifests.display()),
            format!("--container-runtime-endpoint=unix://{}", endpoint.display()),
            format!("--root-dir={}", root_dir.display()),
            format!("--pod-logs-dir={}", logs_dir.display()),
            format!("--cgroup-root=/{}", cgroups.0),
            "--node-name=rrun-node".into(),
        ]);
        cmd.extend(extra.iter().cloned());
        let child = spawn(&cmd, &log);
        let agent = Agent {
            child: Some(child),
            manifests,
            root_dir,
            logs_dir,
            log,
            cmd,
            starts: 1,
        };
        agent.wait_api();
        agent
    }

    fn wait_api(&self) {
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        while self.get("/healthz").is_none() {
            assert!(
                Instant::now() < deadline,
                "rrun-kubelet's API did not come up:\n{}",
                self.log_tail(40)
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.root_dir.join("kubelet.sock")
    }

    /// `GET path` on the API socket: (status code, body), `None` when nothing answers.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        self.request("GET", path)
    }

    /// `DELETE path` on the API socket: (status code, body), `None` when nothing answers.
    pub fn delete(&self, path: &str) -> Option<(u16, String)> {
        self.request("DELETE", path)
    }

    fn request(&self, method: &str, path: &str) -> Option<(u16, String)> {
        let mut s = UnixStream::connect(self.socket()).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
        write!(s, "{method} {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
        let mut buf = String::new();
        s.read_to_string(&mut buf).ok()?;
        let (head, body) = buf.split_once("\r\n\r\n")?;
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        Some((code, body.to_string()))
    }

    /// The object at `path` (`None`: not found, or nothing answers).
    pub fn get_json(&self, path: &str) -> Option<Value> {
        let (code, body) = self.get(path)?;
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// The pod `name` of namespace default as the API shows it (`None`: not found).
    pub fn pod(&self, name: &str) -> Option<Value> {
        self.get_json(&pod_path(name))
    }

    /// Polls the pod until `done` holds, checking the agent lives.
    pub fn wait_pod(
        &mut self,
        name: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for(&pod_path(name), timeout, what, done)
    }

    /// Polls `path` until `done` holds, checking the agent lives.
    pub fn wait_for(
        &mut self,
        path: &str,
        timeout: Duration,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.wait_for_each(path, timeout, what, |_| {}, done)
    }

    /// [`Agent::wait_for`], with `each` seeing every answer (for invariants).
    pub fn wait_for_each(
        &mut self,
        path: &str,
        timeout: Duration,
        what: &str,
        mut each: impl FnMut(&Value),
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        let mut last = None;
        loop {
            self.assert_alive();
            let v = self.get_json(path);
            if let Some(v) = &v {
                each(v);
                if done(v) {
                    return v.clone();
                }
            }
            last = v.or(last);
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last {path}:\n{}\nagent log:\n{}",
                serde_json::to_string_pretty(&last).unwrap_or_default(),
                self.log_tail(60)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the API no longer lists pod `name`.
    pub fn wait_gone(&mut self, name: &str, timeout: Duration) {
        let timeout = scaled(timeout);
        let deadline = Instant::now() + timeout;
        while self.pod(name).is_some() {
            self.assert_alive();
            assert!(
                Instant::now() < deadline,
                "pod {name} still listed after {timeout:?}:\n{}",
                self.log_tail(30)
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Writes a manifest atomically (temp dotfile, rename), as editors and tools do.
    pub fn write_manifest(&self, file: &str, text: &str) {
        let tmp = self.manifests.join(format!(".{file}.tmp"));
        fs::write(&tmp, text).expect("write manifest");
        fs::rename(&tmp, self.manifests.join(file)).expect("rename manifest");
    }

    pub fn remove_manifest(&self, file: &str) {
        fs::remove_file(self.manifests.join(file)).expect("remove manifest");
    }

    /// Runs the agent's CLI (`rrun-kubelet --root-dir ROOT args...`).
    pub fn cli(&self, args: &[&str]) -> crate::Output {
        let mut c = Command::new(agent_binary());
        c.arg(format!("--root-dir={}", self.root_dir.display()))
            .args(args);
        crate::engines::try_run_bounded(
            c,
            self.log.parent().unwrap_or(Path::new("/tmp")),
            None,
            scaled(Duration::from_secs(60)),
        )
        .expect("the agent's CLI timed out")
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// SIGKILL of the agent (and its nsenter wrapper's group), reaped.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = c.id() as i32;
            // SAFETY: kill(2) of the process group we started.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
            let _ = c.wait();
        }
    }

    /// SIGTERM to the agent (a clean stop: it removes what it put on the node), then waits
    /// for it; SIGKILL if it has not exited within 30 s (scaled). The exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        let pid = c.id() as i32;
        // SAFETY: kill(2) of the process group we started (nsenter and the agent).
        unsafe {
            libc::kill(-pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + scaled(Duration::from_secs(30));
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                // SAFETY: as above.
                unsafe {
                    libc::kill(-pid, libc::SIGKILL);
                }
                let _ = c.wait();
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts the same command line again (after [`kill9`](Self::kill9)).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running agent");
        fs::OpenOptions::new()
            .append(true)
            .open(&self.log)
            .and_then(|mut f| writeln!(f, "---- restart {} ----", self.starts))
            .ok();
        self.starts += 1;
        self.child = Some(spawn(&self.cmd, &self.log));
        self.wait_api();
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let t = self.log_text();
        let lines: Vec<&str> = t.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn assert_alive(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                panic!("rrun-kubelet exited ({st}):\n{}", self.log_tail(40));
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The container status `name` of a pod object.
pub fn container_status<'a>(pod: &'a Value, name: &str) -> Option<&'a Value> {
    pod["status"]["containerStatuses"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

/// The pod's condition `kind` is True.
pub fn condition(pod: &Value, kind: &str) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == kind && c["status"] == "True")
    })
}
