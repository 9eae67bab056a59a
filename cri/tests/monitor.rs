//! The container monitor and the exec helper, end to end: real busybox containers (as
//! root), made through `rrun-cri monitor` as the CRI server will, started with the rrun
//! library, observed through what they leave on disk (the CRI log, exit.json) and in the
//! kernel.
//!
//! Every test holds an [`Env`]: a private runtime root and temp dir, containers deleted
//! (`delete --force`), monitors killed and cgroups removed when it drops, also on panic.

use rootfs_fixtures::Bundle;
use rrun::Runtime;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_rrun-cri");

/// The parent of the test containers' relative `linux.cgroupsPath` (under our own cgroup,
/// as the runtime's other tests do).
const CGROUP_PARENT: &str = "rrun-test";

/// Generous bounds that only catch hangs, stretched by `RRUN_TEST_TIME_SCALE` (a slow VM).
fn scaled(t: Duration) -> Duration {
    let k = std::env::var("RRUN_TEST_TIME_SCALE")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    t * k
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + scaled(timeout);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Is `pid` a live process (not gone, not a zombie)?
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// The directories of `rel` below our own cgroup in every mounted hierarchy.
fn cgroup_dirs(rel: &str) -> Vec<PathBuf> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut dirs = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(mnt) = left.split_whitespace().nth(4) else {
            continue;
        };
        let mut r = right.split_whitespace();
        let (fstype, opts) = (r.next().unwrap_or(""), r.nth(1).unwrap_or(""));
        let path = own.lines().find_map(|l| {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (parts.next()?, parts.next()?, parts.next()?);
            let matches = match fstype {
                "cgroup2" => ctrls.is_empty(),
                "cgroup" => ctrls
                    .split(',')
                    .any(|c| !c.is_empty() && opts.split(',').any(|o| o == c)),
                _ => false,
            };
            matches.then(|| path.to_string())
        });
        if let Some(path) = path {
            dirs.push(Path::new(mnt).join(path.trim_start_matches('/')).join(rel));
        }
    }
    dirs
}

/// One test's world. Drop cleans up everything it made.
struct Env {
    dir: tempfile::TempDir,
    name: String,
    ids: Vec<String>,
    monitors: Vec<PathBuf>,
    /// Process groups of stand-in servers, killed at the end.
    groups: Vec<i32>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Env {
    fn new(name: &str) -> Env {
        assert!(
            nix::unistd::geteuid().is_root(),
            "the monitor tests run containers: run them as root"
        );
        Env {
            dir: tempfile::Builder::new()
                .prefix("rrun-mon")
                .tempdir()
                .expect("temp dir"),
            name: name.into(),
            ids: Vec::new(),
            monitors: Vec::new(),
            groups: Vec::new(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn runtime(&self) -> Runtime {
        Runtime::new(self.root())
    }

    /// A new container id, with its busybox bundle running `args` (under our cgroup).
    fn bundle(&mut self, args: &[&str]) -> (String, Bundle) {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("mon-{}-{}-{n}", self.name, std::process::id());
        let mut b = Bundle::busybox(&self.dir.path().join(format!("bundle-{id}"))).unwrap();
        b.set_args(args);
        b.config_mut()["linux"]["cgroupsPath"] = format!("{CGROUP_PARENT}/{id}").into();
        b.save().unwrap();
        self.ids.push(id.clone());
        (id, b)
    }

    fn state_dir(&self, id: &str) -> PathBuf {
        self.dir.path().join("state").join(id)
    }

    fn log_path(&self, id: &str) -> PathBuf {
        self.dir.path().join("logs").join(id).join("0.log")
    }

    /// `rrun-cri monitor` as the server runs it: the report line and the spawned
    /// process's exit status.
    fn spawn_monitor(&mut self, id: &str, bundle: &Bundle, tty: bool) -> (Value, i32) {
        self.spawn_monitor_of(Path::new(BIN), id, bundle, tty)
    }

    /// [`Env::spawn_monitor`] with another `rrun-cri` binary.
    fn spawn_monitor_of(
        &mut self,
        bin: &Path,
        id: &str,
        bundle: &Bundle,
        tty: bool,
    ) -> (Value, i32) {
        self.monitors.push(self.state_dir(id));
        let mut cmd = Command::new(bin);
        cmd.arg("monitor")
            .arg("--runtime-root")
            .arg(self.root())
            .arg("--id")
            .arg(id)
            .arg("--bundle")
            .arg(bundle.path())
            .arg("--log-path")
            .arg(self.log_path(id))
            .arg("--state-dir")
            .arg(self.state_dir(id));
        if tty {
            cmd.arg("--tty");
        }
        let stderr = std::fs::File::create(self.dir.path().join(format!("monitor-{id}.err")))
            .expect("monitor stderr file");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawning rrun-cri monitor");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            let _ = tx.send(s);
        });
        let report = rx
            .recv_timeout(scaled(Duration::from_secs(30)))
            .expect("the monitor's report (its stdout reaches end of file)");
        let status = child.wait().expect("waiting for the spawned monitor");
        assert_eq!(
            report.lines().count(),
            1,
            "exactly one report line: {report:?}"
        );
        let value: Value = serde_json::from_str(report.trim())
            .unwrap_or_else(|e| panic!("report {report:?} is not JSON: {e}"));
        (value, status.code().unwrap_or(-1))
    }

    /// Monitor + start: the container runs; answers the init's pid.
    fn run(&mut self, id: &str, bundle: &Bundle, tty: bool) -> i32 {
        let (report, code) = self.spawn_monitor(id, bundle, tty);
        assert_eq!(code, 0, "monitor report: {report}");
        let pid = report["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("no pid in {report}")) as i32;
        self.runtime().start(id).expect("start");
        pid
    }

    fn monitor_pid(&self, id: &str) -> i32 {
        std::fs::read_to_string(self.state_dir(id).join("monitor.pid"))
            .expect("monitor.pid")
            .trim()
            .parse()
            .expect("monitor.pid holds a pid")
    }

    /// exit.json, once the monitor has written it.
    fn wait_exit(&self, id: &str) -> Value {
        let path = self.state_dir(id).join("exit.json");
        wait_until("exit.json", Duration::from_secs(30), || path.exists());
        let text = std::fs::read_to_string(&path).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("exit.json {text:?}: {e}"))
    }

    fn log(&self, id: &str) -> Vec<Record> {
        records(&self.log_path(id))
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for &g in &self.groups {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(g),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let rt = self.runtime();
        for id in &self.ids {
            if let Err(e) = rt.delete(id, true) {
                eprintln!("cleanup: delete {id}: {e}");
            }
        }
        // Their containers are gone: the monitors end by themselves; any that does not
        // is killed.
        for dir in &self.monitors {
            let Some(pid) = std::fs::read_to_string(dir.join("monitor.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            else {
                continue;
            };
            let deadline = Instant::now() + scaled(Duration::from_secs(10));
            while alive(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if alive(pid) {
                eprintln!("cleanup: monitor {pid} still alive: killed");
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for id in &self.ids {
            for d in cgroup_dirs(&format!("{CGROUP_PARENT}/{id}")) {
                let _ = std::fs::remove_dir(&d);
            }
        }
        // The shared parent too, once no test uses it (rmdir fails while it has children).
        for d in cgroup_dirs(CGROUP_PARENT) {
            let _ = std::fs::remove_dir(&d);
        }
    }
}

/// One record of a CRI log.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    time: String,
    stream: String,
    tag: String,
    text: String,
}

fn records(path: &Path) -> Vec<Record> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let mut next = || parts.next().unwrap_or("").to_string();
            Record {
                time: next(),
                stream: next(),
                tag: next(),
                text: next(),
            }
        })
        .collect()
}

/// `2016-10-06T00:17:09.669794202Z`.
fn is_rfc3339_nano(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 30
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && b[29] == b'Z'
        && b.iter()
            .enumerate()
            .all(|(i, c)| [4, 7, 10, 13, 16, 19, 29].contains(&i) || c.is_ascii_digit())
}

fn texts(recs: &[Record], stream: &str) -> Vec<(String, String)> {
    recs.iter()
        .filter(|r| r.stream == stream)
        .map(|r| (r.tag.clone(), r.text.clone()))
        .collect()
}

fn pair(tag: &str, text: &str) -> (String, String) {
    (tag.to_string(), text.to_string())
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

#[test]
fn logs_both_streams_in_cri_format_and_writes_the_exit_status() {
    let mut env = Env::new("log");
    let script = "echo out-1; echo err-1 >&2; echo out-2; \
                  head -c 20000 /dev/zero | tr '\\0' a; echo; \
                  printf 'no newline'; exit 7";
    let (id, bundle) = env.bundle(&["sh", "-c", script]);
    let before = now_ns();
    let (report, code) = env.spawn_monitor(&id, &bundle, false);
    assert_eq!(code, 0, "{report}");
    let pid = report["pid"].as_i64().expect("pid") as i32;
    let monitor = env.monitor_pid(&id);
    assert_ne!(monitor, pid);
    // Created, not started: nothing has run yet.
    assert_eq!(env.runtime().state(&id).unwrap()["status"], "created");
    assert!(alive(monitor));
    let status = std::fs::read_to_string(format!("/proc/{monitor}/status")).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(k))
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(field("Threads:"), "1", "the monitor is single-threaded");
    // It is the small binary (exec'd by `rrun-cri monitor`), not the server's.
    let cmdline = std::fs::read(format!("/proc/{monitor}/cmdline")).unwrap();
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    assert!(
        argv0.ends_with(b"/rrun-cri-monitor"),
        "{}",
        String::from_utf8_lossy(argv0)
    );
    // Its own session, so the server's signals never reach it.
    let stat = std::fs::read_to_string(format!("/proc/{monitor}/stat")).unwrap();
    let sid: i32 = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(sid, monitor);
    let ctl = env.state_dir(&id).join("ctl.sock");
    {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        let meta = std::fs::metadata(&ctl).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    env.runtime().start(&id).unwrap();
    let exit = env.wait_exit(&id);
    assert_eq!(exit["exit_code"], 7, "{exit}");
    assert_eq!(exit["signal"], Value::Null, "{exit}");
    assert_eq!(exit["oom_killed"], false, "{exit}");
    let finished = exit["finished_at_ns"].as_u64().expect("finished_at_ns") as u128;
    assert!(finished >= before && finished <= now_ns(), "{exit}");

    let recs = env.log(&id);
    assert!(recs.iter().all(|r| is_rfc3339_nano(&r.time)), "{recs:?}");
    assert_eq!(texts(&recs, "stderr"), [pair("F", "err-1")]);
    let long = "a".repeat(20000);
    assert_eq!(
        texts(&recs, "stdout"),
        [
            pair("F", "out-1"),
            pair("F", "out-2"),
            pair("P", &long[..16384]),
            pair("F", &long[16384..]),
            pair("P", "no newline"),
        ]
    );
    // Records are in time order.
    let times: Vec<&String> = recs.iter().map(|r| &r.time).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);

    // The monitor is done: gone, its control socket too.
    wait_until("the monitor's end", Duration::from_secs(10), || {
        !alive(monitor)
    });
    assert!(!ctl.exists());
}

#[test]
fn a_killed_container_reports_its_signal() {
    let mut env = Env::new("kill");
    let (id, bundle) = env.bundle(&["sleep", "1000"]);
    env.run(&id, &bundle, false);
    // Signals to the monitor itself do nothing.
    let monitor = env.monitor_pid(&id);
    for s in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGPIPE,
    ] {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(monitor), s).unwrap();
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(monitor), "the monitor died of a signal");
    assert!(!env.state_dir(&id).join("exit.json").exists());

    env.runtime()
        .kill(&id, nix::sys::signal::Signal::SIGKILL, false)
        .unwrap();
    let exit = env.wait_exit(&id);
    assert_eq!(exit["exit_code"], 137, "{exit}");
    assert_eq!(exit["signal"], 9, "{exit}");
    assert_eq!(exit["oom_killed"], false, "{exit}");
    assert!(env.log(&id).is_empty());
}

#[test]
fn an_oom_kill_is_reported() {
    let mut env = Env::new("oom");
    let (id, mut bundle) = env.bundle(&["sh", "-c", "head -c 64m /dev/zero | tail"]);
    bundle.config_mut()["linux"]["resources"]["memory"] = json!({"limit": 32 << 20});
    bundle.save().unwrap();
    env.run(&id, &bundle, false);
    let exit = env.wait_exit(&id);
    assert_eq!(exit["oom_killed"], true, "{exit}");
    assert_ne!(exit["exit_code"], 0, "{exit}");
}

#[test]
fn a_terminal_is_logged_as_stdout() {
    let mut env = Env::new("tty");
    let (id, mut bundle) = env.bundle(&["sh", "-c", "echo tty-out; echo tty-err >&2; exit 4"]);
    bundle.config_mut()["process"]["terminal"] = true.into();
    bundle.save().unwrap();
    env.run(&id, &bundle, true);
    let exit = env.wait_exit(&id);
    assert_eq!(exit["exit_code"], 4, "{exit}");
    let recs = env.log(&id);
    assert!(recs.iter().all(|r| r.stream == "stdout"), "{recs:?}");
    // The terminal turns "\n" into "\r\n".
    let lines: Vec<&str> = recs.iter().map(|r| r.text.trim_end_matches('\r')).collect();
    assert_eq!(lines, ["tty-out", "tty-err"], "{recs:?}");
    assert!(!env.state_dir(&id).join("console.sock").exists());
}

/// Asks the monitor over ctl.sock; answers its reply.
fn control(state_dir: &Path, request: &[u8]) -> String {
    let mut s = UnixStream::connect(state_dir.join("ctl.sock")).expect("connect ctl.sock");
    s.set_read_timeout(Some(scaled(Duration::from_secs(10))))
        .unwrap();
    s.write_all(request).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("the monitor's answer");
    answer
}

#[test]
fn the_log_is_reopened_on_request() {
    let mut env = Env::new("reopen");
    let (id, bundle) = env.bundle(&[
        "sh",
        "-c",
        "i=0; while true; do echo line-$i; i=$((i+1)); sleep 0.05; done",
    ]);
    env.run(&id, &bundle, false);
    let log = env.log_path(&id);
    wait_until("first lines", Duration::from_secs(10), || {
        records(&log).len() >= 3
    });
    let rotated = log.with_extension("log.1");
    std::fs::rename(&log, &rotated).unwrap();
    assert_eq!(control(&env.state_dir(&id), b"reopen\n"), "ok\n");
    // The file exists as soon as the answer comes: the kubelet may read it at once.
    assert!(log.exists());
    wait_until("lines in the new file", Duration::from_secs(10), || {
        records(&log).len() >= 3
    });
    assert!(control(&env.state_dir(&id), b"what\n").starts_with("error: "));

    env.runtime()
        .kill(&id, nix::sys::signal::Signal::SIGKILL, false)
        .unwrap();
    env.wait_exit(&id);
    // Every line went to one file or the other, in order, none twice.
    let number = |r: &Record| -> u64 {
        assert_eq!(
            (r.stream.as_str(), r.tag.as_str()),
            ("stdout", "F"),
            "{r:?}"
        );
        r.text.strip_prefix("line-").unwrap().parse().unwrap()
    };
    let old: Vec<u64> = records(&rotated).iter().map(number).collect();
    let new: Vec<u64> = records(&log).iter().map(number).collect();
    let all: Vec<u64> = old.iter().chain(new.iter()).copied().collect();
    assert_eq!(all, (0..all.len() as u64).collect::<Vec<_>>());
    assert!(!old.is_empty() && !new.is_empty());
}

#[test]
fn the_monitor_outlives_its_spawner() {
    let mut env = Env::new("orphan");
    let (id, bundle) = env.bundle(&[
        "sh",
        "-c",
        "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.05; done",
    ]);
    // A stand-in for the server: spawns the monitor, then stays, in its own process group;
    // then it dies with its whole group, as a killed server would.
    let report = env.dir.path().join("report");
    let script = format!(
        "\"$0\" monitor --runtime-root '{}' --id '{id}' --bundle '{}' --log-path '{}' \
         --state-dir '{}' > '{}'; echo done > '{}.done'; exec sleep 1000",
        env.root().display(),
        bundle.path().display(),
        env.log_path(&id).display(),
        env.state_dir(&id).display(),
        report.display(),
        report.display(),
    );
    env.monitors.push(env.state_dir(&id));
    let mut server = {
        use std::os::unix::process::CommandExt;
        Command::new("sh")
            .arg("-c")
            .arg(&script)
            .arg(BIN)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap()
    };
    env.groups.push(server.id() as i32);
    let done = report.with_extension("done");
    wait_until("the monitor's report", Duration::from_secs(30), || {
        done.exists()
    });
    let report: Value = serde_json::from_str(std::fs::read_to_string(&report).unwrap().trim())
        .expect("a JSON report");
    assert!(report["pid"].is_i64(), "{report}");
    env.runtime().start(&id).unwrap();
    let monitor = env.monitor_pid(&id);
    // SIGKILL to the spawner's whole process group (the monitor left it with setsid).
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = server.wait();
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(monitor), "the monitor died with its spawner");
    // And it still logs.
    let log = env.log_path(&id);
    let n = records(&log).len();
    wait_until(
        "new lines after the spawner's death",
        Duration::from_secs(10),
        || records(&log).len() > n + 2,
    );
    env.runtime()
        .kill(&id, nix::sys::signal::Signal::SIGKILL, false)
        .unwrap();
    assert_eq!(env.wait_exit(&id)["exit_code"], 137);
}

/// `rrun-cri exec-sync` in container `id`: (stdout, stderr, helper's exit code, status).
fn exec_sync(env: &Env, id: &str, process: &Value, timeout: u64) -> (String, String, i32, Value) {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let pfile = env.dir.path().join(format!("process-{n}.json"));
    let sfile = env.dir.path().join(format!("status-{n}.json"));
    std::fs::write(&pfile, process.to_string()).unwrap();
    let mut child = Command::new(BIN)
        .arg("exec-sync")
        .arg("--runtime-root")
        .arg(env.root())
        .arg("--id")
        .arg(id)
        .arg("--process")
        .arg(&pfile)
        .arg("--status-file")
        .arg(&sfile)
        .arg("--timeout")
        .arg(timeout.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("exec-sync hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let status = std::fs::read_to_string(&sfile)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code().unwrap_or(-1),
        status,
    )
}

#[test]
fn exec_sync_output_exit_code_timeout_and_errors() {
    let mut env = Env::new("exec");
    let (id, bundle) = env.bundle(&["sleep", "1000"]);
    env.run(&id, &bundle, false);
    let process = |args: &[&str]| {
        let mut p = bundle.config()["process"].clone();
        p["args"] = json!(args);
        p
    };

    let (out, err, code, status) = exec_sync(
        &env,
        &id,
        &process(&["sh", "-c", "echo out; echo err >&2; hostname; exit 5"]),
        0,
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(status, json!({"exit_code": 5, "timed_out": false}));
    assert_eq!(out, "out\nrunc\n", "it ran in the container (its hostname)");
    assert_eq!(err, "err\n");

    let started = Instant::now();
    let (_, err, code, status) = exec_sync(&env, &id, &process(&["sleep", "100"]), 1);
    assert_eq!(code, 0, "{err}");
    assert_eq!(status, json!({"exit_code": 137, "timed_out": true}));
    assert!(started.elapsed() < scaled(Duration::from_secs(50)));

    let (_, err, code, status) = exec_sync(&env, &id, &process(&["true"]), 0);
    assert_eq!(
        (code, status),
        (0, json!({"exit_code": 0, "timed_out": false})),
        "{err}"
    );

    // Errors: the message on stderr and in the status file, exit 1.
    let (_, err, code, status) = exec_sync(&env, &id, &process(&["/no/such/program"]), 0);
    assert_eq!(code, 1);
    let msg = status["error"].as_str().expect("an error").to_string();
    assert!(msg.contains("/no/such/program"), "{msg}");
    assert!(err.contains(&msg), "{err}");

    let (_, _, code, status) = exec_sync(&env, "no-such-container", &process(&["true"]), 0);
    assert_eq!(code, 1);
    assert!(
        status["error"]
            .as_str()
            .unwrap_or("")
            .contains("does not exist"),
        "{status}"
    );

    let (_, _, code, status) = exec_sync(&env, &id, &json!({"args": 5}), 0);
    assert_eq!(code, 1);
    assert!(status["error"].is_string(), "{status}");

    // The container was never disturbed.
    assert_eq!(env.runtime().state(&id).unwrap()["status"], "running");
}

#[test]
fn a_bad_bundle_is_reported_and_leaves_nothing() {
    let mut env = Env::new("bad");
    // One that fails in the runtime before anything is made, one in the container's init
    // (after its cgroup and namespaces exist).
    let (id_json, bundle_json) = env.bundle(&["true"]);
    std::fs::write(bundle_json.config_path(), "{ not json").unwrap();
    let (id_prog, bundle_prog) = env.bundle(&["/no/such/program"]);
    for (id, bundle) in [(&id_json, &bundle_json), (&id_prog, &bundle_prog)] {
        let (report, code) = env.spawn_monitor(id, bundle, false);
        assert_ne!(code, 0, "{report}");
        let msg = report["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error in {report}"));
        assert!(!msg.is_empty());
        if id == &id_prog {
            assert!(msg.contains("/no/such/program"), "{msg}");
        }
        // Nothing of the container, nor of the monitor.
        assert!(matches!(
            env.runtime().state(id),
            Err(rrun::Error::NotFound(_))
        ));
        for d in cgroup_dirs(&format!("{CGROUP_PARENT}/{id}")) {
            assert!(!d.exists(), "{} left", d.display());
        }
        let state = env.state_dir(id);
        for f in ["ctl.sock", "monitor.pid", "exit.json", "console.sock"] {
            assert!(!state.join(f).exists(), "{f} left");
        }
        wait_until("no monitor left", Duration::from_secs(10), || {
            !monitor_running_for(id)
        });
    }
    // A terminal asked for by the server but not by the bundle: refused too.
    let (id_tty, bundle_tty) = env.bundle(&["true"]);
    let (report, code) = env.spawn_monitor(&id_tty, &bundle_tty, true);
    assert_ne!(code, 0);
    assert!(
        report["error"].as_str().unwrap_or("").contains("terminal"),
        "{report}"
    );
    assert!(!env.state_dir(&id_tty).join("console.sock").exists());
}

/// Is any live process a monitor of container `id`?
fn monitor_running_for(id: &str) -> bool {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return false;
    };
    rd.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            return false;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
        alive(pid)
            && args.get(1).is_some_and(|a| *a == b"monitor")
            && args
                .windows(2)
                .any(|w| w[0] == b"--id" && w[1] == id.as_bytes())
    })
}

#[test]
fn without_the_small_binary_the_big_one_monitors() {
    let mut env = Env::new("alone");
    // `rrun-cri` alone in a directory: no rrun-cri-monitor beside it.
    let dir = env.dir.path().join("bin");
    std::fs::create_dir(&dir).unwrap();
    let bin = dir.join("rrun-cri");
    if std::fs::hard_link(BIN, &bin).is_err() {
        std::fs::copy(BIN, &bin).unwrap();
    }
    let (id, bundle) = env.bundle(&["sh", "-c", "echo alone; echo err >&2; exit 9"]);
    let (report, code) = env.spawn_monitor_of(&bin, &id, &bundle, false);
    assert_eq!(code, 0, "{report}");
    let monitor = env.monitor_pid(&id);
    let cmdline = std::fs::read(format!("/proc/{monitor}/cmdline")).unwrap();
    assert!(cmdline.split(|&b| b == 0).nth(1) == Some(b"monitor".as_slice()));
    env.runtime().start(&id).unwrap();
    let exit = env.wait_exit(&id);
    assert_eq!(exit["exit_code"], 9, "{exit}");
    let recs = env.log(&id);
    assert_eq!(texts(&recs, "stdout"), [pair("F", "alone")]);
    assert_eq!(texts(&recs, "stderr"), [pair("F", "err")]);
}
