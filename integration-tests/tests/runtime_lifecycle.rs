//! The runc-compatible command line: spec, run, create/start/state, kill, delete, list,
//! ps, exec, pid files, preserved fds, features, signal forwarding, logging.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::*;

const T10: Duration = Duration::from_secs(10);

/// Script prefix: wait until the host creates /shared/go.
const WAIT_GO: &str = "while [ ! -e /shared/go ]; do sleep 0.02; done";

#[test]
fn spec_writes_valid_config() {
    let env = TestEnv::new("spec");
    let dir = env.mkdir("specdir");
    let out = env.cmd(["spec"]).current_dir(&dir).run();
    out.ok();
    let text = fs::read_to_string(dir.join("config.json")).expect("spec wrote config.json");
    let spec: Value = serde_json::from_str(&text).expect("config.json is JSON");
    assert!(
        spec["ociVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("1.")),
        "ociVersion: {}",
        spec["ociVersion"]
    );
    assert_eq!(spec["root"]["path"], "rootfs");
    assert!(spec["process"]["args"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    assert_eq!(spec["process"]["cwd"], "/");
    let ns: Vec<&str> = spec["linux"]["namespaces"]
        .as_array()
        .expect("linux.namespaces")
        .iter()
        .filter_map(|n| n["type"].as_str())
        .collect();
    for want in ["pid", "mount", "network", "ipc", "uts"] {
        assert!(ns.contains(&want), "namespace {want} missing from {ns:?}");
    }
    let mounts: Vec<&str> = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["destination"].as_str())
        .collect();
    for want in ["/proc", "/dev", "/dev/pts", "/sys"] {
        assert!(mounts.contains(&want), "mount {want} missing: {mounts:?}");
    }

    // A second `spec` must not overwrite it.
    fs::write(dir.join("config.json"), "{}").unwrap();
    let again = env.cmd(["spec"]).current_dir(&dir).run();
    again.failed();
    assert_eq!(fs::read_to_string(dir.join("config.json")).unwrap(), "{}");

    // `spec --bundle DIR` writes there, and the spec runs as is (with a rootfs and no
    // terminal).
    let mut c = env.container();
    fs::remove_file(c.config_path()).unwrap();
    env.cmd(["spec", "--bundle", &c.path().display().to_string()])
        .run()
        .ok();
    let mut spec: Value =
        serde_json::from_str(&fs::read_to_string(c.config_path()).unwrap()).unwrap();
    spec["process"]["terminal"] = false.into();
    spec["process"]["args"] = json!(["sh", "-c", "echo from-spec"]);
    spec["linux"]["cgroupsPath"] = format!("{CGROUP_PARENT}/{}", c.id).into();
    spec["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(format!("RRUN_TEST_ID={}", c.id).into());
    *c.config_mut() = spec;
    let out = c.run();
    out.ok();
    assert_eq!(out.stdout.trim(), "from-spec");
}

#[test]
fn run_passes_exit_code_through() {
    let env = TestEnv::new("exitcode");
    for code in [0, 1, 7, 255] {
        let out = env.run_sh(&format!("echo out; echo err >&2; exit {code}"), |_| {});
        assert_eq!(out.code(), code, "{out}");
        assert_eq!(out.stdout.trim(), "out", "{out}");
        assert!(out.stderr.contains("err"), "{out}");
    }
}

#[test]
fn run_reports_128_plus_signal() {
    let env = TestEnv::new("exitsig");
    // Without a pid namespace the shell is not an init: SIGTERM to itself kills it.
    let out = env.run_sh("kill -TERM $$; sleep 5", |c| {
        let ns = c["linux"]["namespaces"].as_array_mut().unwrap();
        ns.retain(|n| n["type"] != "pid");
    });
    assert_eq!(out.code(), 128 + libc::SIGTERM, "{out}");

    // In a pid namespace, the init killed from the host with SIGKILL.
    let mut c = env.container();
    let shared = c.share_dir("/shared");
    c.sh("touch /shared/ready; exec sleep 1000");
    let running = c.run_cmd(&[]).spawn();
    c.wait_for_file(&shared.join("ready"), T10);
    c.kill("KILL").ok();
    let out = running.wait();
    assert_eq!(out.code(), 128 + libc::SIGKILL, "{out}");
}

#[test]
fn run_detach() {
    let env = TestEnv::new("detach");
    let mut c = env.container();
    let shared = c.share_dir("/shared");
    c.sh(&format!(
        "echo started > /shared/started; {WAIT_GO}; exit 3"
    ));
    let t0 = Instant::now();
    c.run_detached();
    assert!(t0.elapsed() < scaled(T10), "run -d should return at once");
    c.wait_for_file(&shared.join("started"), T10);
    let st = c.state();
    assert_eq!(st["status"], "running", "{st}");
    let pid = st["pid"].as_i64().unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    fs::write(shared.join("go"), "").unwrap();
    c.wait_status("stopped", T10);
    c.delete().ok();
    env.assert_nothing_left(&c.id, c.path());
}

#[test]
fn create_start_state_transitions() {
    let env = TestEnv::new("transitions");
    let mut c = env.container();
    let shared = c.share_dir("/shared");
    c.sh(&format!("echo ran > /shared/ran; {WAIT_GO}"));
    c.create();
    let st = c.state();
    assert_eq!(st["status"], "created", "{st}");
    let pid = st["pid"].as_i64().expect("created container has a pid");
    assert!(pid > 0);
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    // The user process has not run yet.
    std::thread::sleep(Duration::from_millis(200));
    assert!(!shared.join("ran").exists(), "process ran before start");

    c.start().ok();
    c.wait_for_file(&shared.join("ran"), T10);
    let st = c.state();
    assert_eq!(st["status"], "running", "{st}");
    assert_eq!(st["pid"].as_i64(), Some(pid), "pid changes across start");

    fs::write(shared.join("go"), "").unwrap();
    c.wait_status("stopped", T10);
    c.delete().ok();
    let out = env.rt(["state", &c.id]);
    out.failed();
    env.assert_nothing_left(&c.id, c.path());
}

#[test]
fn state_json_fields() {
    let env = TestEnv::new("statejson");
    let mut c = env.container();
    c.set_args(["sleep", "1000"]);
    c.config_mut()["annotations"] = json!({"org.rrun.test": "yes", "x": "1"});
    c.create();
    let st = c.state();
    assert!(
        st["ociVersion"].as_str().is_some_and(|v| !v.is_empty()),
        "{st}"
    );
    assert_eq!(st["id"], c.id.as_str());
    assert_eq!(st["status"], "created");
    assert!(st["pid"].as_i64().is_some_and(|p| p > 0), "{st}");
    assert_eq!(
        Path::new(st["bundle"].as_str().expect("bundle")),
        c.path(),
        "{st}"
    );
    assert_eq!(st["annotations"], json!({"org.rrun.test": "yes", "x": "1"}));
    c.start().ok();
    c.wait_status("running", T10);
}

/// A container whose init logs the signals it gets to /shared/log.
fn signal_logger(env: &TestEnv) -> (Ctr<'_>, std::path::PathBuf) {
    let mut c = env.container();
    let shared = c.share_dir("/shared");
    c.sh("trap 'echo TERM >> /shared/log' TERM; \
          trap 'echo USR1 >> /shared/log' USR1; \
          trap 'echo HUP >> /shared/log' HUP; \
          touch /shared/ready; while :; do sleep 0.02; done");
    c.create_and_start();
    c.wait_for_file(&shared.join("ready"), T10);
    (c, shared)
}

fn wait_log(shared: &Path, lines: &[&str]) {
    let log = shared.join("log");
    wait_for(
        T10,
        || {
            fs::read_to_string(&log)
                .map(|s| s.lines().collect::<Vec<_>>() == lines)
                .unwrap_or(false)
        },
        &format!("log == {lines:?} (is {:?})", fs::read_to_string(&log).ok()),
    );
}

#[test]
fn kill_by_name_and_number() {
    let env = TestEnv::new("killsig");
    let (c, shared) = signal_logger(&env);
    c.kill("USR1").ok();
    wait_log(&shared, &["USR1"]);
    c.kill("SIGHUP").ok();
    wait_log(&shared, &["USR1", "HUP"]);
    c.kill(&libc::SIGUSR1.to_string()).ok();
    wait_log(&shared, &["USR1", "HUP", "USR1"]);
    c.kill("TERM").ok();
    wait_log(&shared, &["USR1", "HUP", "USR1", "TERM"]);
    // Default signal is SIGTERM.
    env.rt(["kill", &c.id]).ok();
    wait_log(&shared, &["USR1", "HUP", "USR1", "TERM", "TERM"]);
    assert_eq!(c.status().as_deref(), Some("running"));

    for sig in ["KILL", "SIGKILL", "9"] {
        let mut k = env.container();
        k.set_args(["sleep", "1000"]);
        k.create_and_start();
        let pid = k.pid();
        k.kill(sig).ok();
        k.wait_status("stopped", T10);
        wait_for(
            T10,
            || {
                !Path::new(&format!("/proc/{pid}/environ")).exists()
                    || pids_with_env(&k.id).is_empty()
            },
            "killed process gone",
        );
        k.delete().ok();
    }

    // An unknown signal is an error.
    let out = c.kill("NOTASIGNAL");
    out.failed();
    assert!(!out.stderr.trim().is_empty());
    assert_eq!(c.status().as_deref(), Some("running"));
}

#[test]
fn kill_all() {
    let env = TestEnv::new("killall");
    let mut c = env.container();
    let shared = c.share_dir("/shared");
    c.sh("sleep 1000 & sleep 1000 & touch /shared/ready; wait");
    c.create_and_start();
    c.wait_for_file(&shared.join("ready"), T10);
    c.exec(&["--detach"], &["sleep", "1000"]).ok();
    wait_for(T10, || pids_with_env(&c.id).len() >= 4, "4 processes");
    env.rt(["kill", "--all", &c.id, "KILL"]).ok();
    wait_for(
        T10,
        || pids_with_env(&c.id).is_empty(),
        "all container processes killed",
    );
    c.wait_status("stopped", T10);
}

#[test]
fn delete_and_delete_force() {
    let env = TestEnv::new("delete");
    let mut c = env.container();
    c.set_args(["sleep", "1000"]);
    c.create_and_start();
    let out = c.delete();
    out.failed();
    assert!(!out.stderr.trim().is_empty(), "{out}");
    assert_eq!(c.status().as_deref(), Some("running"));

    c.delete_force().ok();
    assert_eq!(c.status(), None, "state still works after delete --force");
    env.assert_nothing_left(&c.id, c.path());

    // A created (never started) container can be force-deleted too.
    let mut c2 = env.container();
    c2.set_args(["sleep", "1000"]);
    c2.create();
    c2.delete_force().ok();
    env.assert_nothing_left(&c2.id, c2.path());

    // A stopped one is deleted without --force.
    let mut c3 = env.container();
    c3.set_args(["true"]);
    c3.create();
    c3.start().ok();
    c3.wait_status("stopped", T10);
    c3.delete().ok();
    env.assert_nothing_left(&c3.id, c3.path());
    assert!(env.list_json().is_empty());
}

#[test]
fn list_formats() {
    let env = TestEnv::new("list");
    assert!(env.list_json().is_empty());
    let mut a = env.container();
    a.set_args(["sleep", "1000"]);
    a.create();
    let mut b = env.container();
    b.set_args(["sleep", "1000"]);
    b.create_and_start();

    let out = env.rt(["list"]);
    out.ok();
    let mut lines = out.stdout.lines();
    let header = lines.next().expect("header");
    assert!(
        header.contains("ID") && header.contains("STATUS") && header.contains("PID"),
        "{out}"
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows.len(), 2, "{out}");
    let row = |id: &str| rows.iter().find(|r| r[0] == id).cloned();
    let ra = row(&a.id).expect("a listed");
    let rb = row(&b.id).expect("b listed");
    assert_eq!(ra[1], a.pid().to_string());
    assert_eq!(ra[2], "created");
    assert_eq!(rb[2], "running");
    assert_eq!(rb[3], b.path().display().to_string());

    let q = env.rt(["list", "-q"]);
    q.ok();
    let mut ids: Vec<&str> = q.stdout.lines().collect();
    ids.sort();
    let mut want = vec![a.id.as_str(), b.id.as_str()];
    want.sort();
    assert_eq!(ids, want);

    let js = env.list_json();
    assert_eq!(js.len(), 2);
    for (c, status) in [(&a, "created"), (&b, "running")] {
        let e = js
            .iter()
            .find(|e| e["id"] == c.id.as_str())
            .expect("listed");
        assert_eq!(e["status"], status);
        assert_eq!(e["pid"].as_i64(), Some(c.pid() as i64));
        assert_eq!(Path::new(e["bundle"].as_str().unwrap()), c.path());
    }
}

#[test]
fn ps_lists_container_pids() {
    let env = TestEnv::new("ps");
    let mut c = env.container();
    c.set_args(["sleep", "1000"]);
    c.create_and_start();
    let init = c.pid();
    let pidfile = env.dir().join("exec.pid");
    c.exec(
        &["--detach", "--pid-file", &pidfile.display().to_string()],
        &["sleep", "999"],
    )
    .ok();
    let execpid: i64 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    let out = env.rt(["ps", "--format", "json", &c.id]);
    out.ok();
    let pids: Vec<i64> = out
        .json()
        .as_array()
        .expect("array of pids")
        .iter()
        .map(|p| p.as_i64().expect("pid"))
        .collect();
    let mut sorted = pids.clone();
    sorted.sort();
    let mut want = vec![init as i64, execpid];
    want.sort();
    assert_eq!(sorted, want, "{out}");

    let out = env.rt(["ps", &c.id]);
    out.ok();
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let col = header.iter().position(|h| *h == "PID").expect("PID column");
    let table_pids: Vec<i64> = lines
        .filter_map(|l| l.split_whitespace().nth(col)?.parse().ok())
        .collect();
    let mut t = table_pids.clone();
    t.sort();
    assert_eq!(t, want, "{out}");
}

/// A running container for exec tests: `sleep 1000` as init, writable /tmp.
fn exec_target(env: &TestEnv) -> Ctr<'_> {
    let mut c = env.container();
    c.set_args(["sleep", "1000"]);
    c.add_mount(
        json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                       "options": ["mode=1777"]}),
    );
    c.create_and_start();
    c
}

#[test]
fn exec_args_and_exit_code() {
    let env = TestEnv::new("execargs");
    let c = exec_target(&env);
    let out = c.exec(
        &[],
        &[
            "sh",
            "-c",
            "echo hi \"$0\" $#; echo oops >&2; exit 3",
            "zero",
            "a b",
            "c",
        ],
    );
    assert_eq!(out.code(), 3, "{out}");
    assert_eq!(out.stdout.trim(), "hi zero 2");
    assert!(out.stderr.lines().any(|l| l.trim() == "oops"), "{out}");
    // The exec'd process is in the container's pid namespace.
    let out = c.exec(&[], &["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"]);
    out.ok();
    assert_eq!(out.stdout.trim(), "sleep 1000");
    assert_eq!(c.status().as_deref(), Some("running"));
}

#[test]
fn exec_cwd_env_user() {
    let env = TestEnv::new("execopts");
    let c = exec_target(&env);
    let out = c.exec(
        &["--cwd", "/tmp", "--env", "FOO=bar baz", "--env", "TERM=dumb", "--user", "1000:2000"],
        &["sh", "-c", "pwd; echo \"$FOO\"; echo $TERM; id -u; id -g; echo $RRUN_TEST_ID; touch f; stat -c %u:%g f"],
    );
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "/tmp",
            "bar baz",
            "dumb",
            "1000",
            "2000",
            c.id.as_str(),
            "1000:2000"
        ],
        "{out}"
    );
}

#[test]
fn exec_process_file() {
    let env = TestEnv::new("execprocess");
    let c = exec_target(&env);
    let process = json!({
        "terminal": false,
        "user": {"uid": 1000, "gid": 1000, "additionalGids": [2000]},
        "args": ["sh", "-c", "pwd; echo $FOO; id -u; id -g; id -G; exit 5"],
        "env": ["PATH=/bin", "FOO=from-process-json"],
        "cwd": "/tmp",
        "noNewPrivileges": true
    });
    let pf = env.dir().join("process.json");
    fs::write(&pf, process.to_string()).unwrap();
    let out = c.exec(&["--process", &pf.display().to_string()], &[]);
    assert_eq!(out.code(), 5, "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..4],
        ["/tmp", "from-process-json", "1000", "1000"],
        "{out}"
    );
    let mut groups: Vec<&str> = lines[4].split_whitespace().collect();
    groups.sort();
    assert_eq!(groups, ["1000", "2000"], "{out}");
}

#[test]
fn exec_detach_pid_file() {
    let env = TestEnv::new("execdetach");
    let c = exec_target(&env);
    let pidfile = env.dir().join("x.pid");
    let t0 = Instant::now();
    c.exec(
        &["--detach", "--pid-file", &pidfile.display().to_string()],
        &["sleep", "1000"],
    )
    .ok();
    assert!(t0.elapsed() < scaled(T10));
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .expect("pid file holds a pid");
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).expect("exec'd process alive");
    assert_eq!(cmdline, b"sleep\x001000\x00");
    // Same pid and mount namespace as the init.
    let init = c.pid();
    for ns in ["pid", "mnt", "net"] {
        assert_eq!(
            fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap(),
            fs::read_link(format!("/proc/{init}/ns/{ns}")).unwrap(),
            "{ns} namespace"
        );
    }
}

#[test]
fn exec_tty_console_socket() {
    let env = TestEnv::new("exectty");
    let c = exec_target(&env);
    let mut sock = ConsoleSocket::bind(&env.dir().join("console.sock"));
    c.exec(
        &["--tty", "--detach", "--console-socket", &sock.arg()],
        &[
            "sh",
            "-c",
            "tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-tty; echo done",
        ],
    )
    .ok();
    let mut master = sock.master();
    let text = read_pty(&mut master, T10);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("/dev/pts/")),
        "{text:?}"
    );
    assert!(lines.contains(&"all-tty"), "{text:?}");
    assert!(lines.contains(&"done"), "{text:?}");
}

#[test]
fn create_pid_file() {
    let env = TestEnv::new("pidfile");
    let mut c = env.container();
    c.set_args(["sleep", "1000"]);
    let pidfile = env.dir().join("c.pid");
    c.create_cmd(&["--pid-file", &pidfile.display().to_string()])
        .run()
        .ok();
    let pid: i64 = fs::read_to_string(&pidfile)
        .expect("pid file written")
        .trim()
        .parse()
        .expect("pid file holds a pid");
    assert_eq!(pid, c.pid() as i64);
}

#[test]
fn preserve_fds() {
    let env = TestEnv::new("preservefds");
    let mut c = env.container();
    c.sh(
        "echo via-fd3 >&3; echo via-fd4 >&4; ls /proc/self/fd > /dev/null; \
          for f in 3 4 5 6; do [ -e /proc/$$/fd/$f ] && echo has-$f; done; true",
    );
    let (mut r3, w3) = pipe();
    let (mut r4, w4) = pipe();
    let out = c
        .run_cmd(&["--preserve-fds", "2"])
        .pass_fd(w3)
        .pass_fd(w4)
        .run();
    out.ok();
    let mut s = String::new();
    r3.read_to_string(&mut s).unwrap();
    assert_eq!(s, "via-fd3\n");
    s.clear();
    r4.read_to_string(&mut s).unwrap();
    assert_eq!(s, "via-fd4\n");
    let has: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(has, ["has-3", "has-4"], "{out}");
}

#[test]
fn features_prints_json() {
    let env = TestEnv::new("features");
    let out = env.cmd_no_root(["features"]).run();
    out.ok();
    let f = out.json();
    let min = f["ociVersionMin"].as_str().expect("ociVersionMin");
    let max = f["ociVersionMax"].as_str().expect("ociVersionMax");
    let parse = |v: &str| -> (u32, u32, u32) {
        let core = v.split(['-', '+']).next().unwrap();
        let p: Vec<u32> = core.split('.').map(|x| x.parse().unwrap()).collect();
        (p[0], p[1], p[2])
    };
    assert!(parse(min) <= parse(max), "{min} > {max}");
    assert_eq!(parse(min).0, 1);
    if !is_runc() {
        assert!(
            parse(max) >= (1, 2, 0),
            "rrun implements runtime-spec 1.2: {max}"
        );
    }
    let hooks: Vec<&str> = f["hooks"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for h in [
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ] {
        assert!(hooks.contains(&h), "features.hooks lacks {h}: {f}");
    }
    let ns: Vec<&str> = f["linux"]["namespaces"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for n in ["pid", "network", "mount", "uts", "ipc", "user", "cgroup"] {
        assert!(ns.contains(&n), "features.linux.namespaces lacks {n}: {f}");
    }
}

#[test]
fn run_forwards_signals() {
    let env = TestEnv::new("sigfwd");
    let mut c = env.container();
    let shared = c.share_dir("/shared");
    c.sh("trap 'echo got-term > /shared/term; exit 42' TERM; \
          trap 'echo got-usr1 >> /shared/usr1' USR1; \
          touch /shared/ready; while :; do sleep 0.02; done");
    let running = c.run_cmd(&[]).spawn();
    c.wait_for_file(&shared.join("ready"), T10);
    running.signal(libc::SIGUSR1);
    c.wait_for_file(&shared.join("usr1"), T10);
    running.signal(libc::SIGTERM);
    let out = running.wait();
    assert_eq!(out.code(), 42, "{out}");
    assert_eq!(
        fs::read_to_string(shared.join("term")).unwrap(),
        "got-term\n"
    );
    env.assert_nothing_left(&c.id, c.path());
}

#[test]
fn log_json_on_error() {
    let env = TestEnv::new("logjson");
    let log = env.dir().join("rt.log");
    let out = env
        .cmd_no_root([
            "--log",
            &log.display().to_string(),
            "--log-format",
            "json",
            "--root",
            &env.root().display().to_string(),
            "start",
            "no-such-container",
        ])
        .run();
    out.failed();
    let text = fs::read_to_string(&log).expect("log file written");
    let entries: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("log line {l:?}: {e}")))
        .collect();
    assert!(!entries.is_empty(), "empty log");
    let err = entries
        .iter()
        .find(|e| e["level"] == "error")
        .unwrap_or_else(|| panic!("no error entry in {text}"));
    assert!(err["msg"].as_str().is_some_and(|m| !m.is_empty()), "{err}");
}

#[test]
fn run_true_1000_times() {
    let env = TestEnv::new("loop1000");
    let mut c = env.container();
    c.set_args(["true"]);
    let t0 = Instant::now();
    for i in 0..1000 {
        let out = c.run_cmd(&[]).timeout(Duration::from_secs(30)).run();
        assert!(out.success(), "run #{i} failed:\n{out}");
        if i % 100 == 0 {
            // Nothing accumulates.
            assert!(
                !env.root().join(&c.id).exists(),
                "state left after run #{i}"
            );
        }
        // Avoid filling the out dir.
        let _ = fs::remove_file(&out.stdout_path);
        let _ = fs::remove_file(&out.stderr_path);
    }
    eprintln!("1000 runs in {:?}", t0.elapsed());
    env.assert_nothing_left(&c.id, c.path());
}

#[test]
fn kill_created_container() {
    let env = TestEnv::new("killcreated");
    let mut c = env.container();
    let shared = c.share_dir("/shared");
    c.sh("touch /shared/ran; sleep 1000");
    c.create();
    let pid = c.pid();
    c.kill("KILL").ok();
    c.wait_status("stopped", T10);
    wait_for(
        T10,
        || !Path::new(&format!("/proc/{pid}/cmdline")).exists() || pids_with_env(&c.id).is_empty(),
        "init gone",
    );
    assert!(!shared.join("ran").exists(), "the user process ran");
    c.delete().ok();
    env.assert_nothing_left(&c.id, c.path());
}

#[test]
fn run_detach_with_terminal_and_pid_file() {
    let env = TestEnv::new("detachtty");
    let mut c = env.container();
    c.sh("echo hello-$(tty); read line; echo got:$line");
    c.config_mut()["process"]["terminal"] = true.into();
    let mut sock = ConsoleSocket::bind(&env.dir().join("console.sock"));
    let pidfile = env.dir().join("run.pid");
    c.run_cmd(&[
        "--detach",
        "--console-socket",
        &sock.arg(),
        "--pid-file",
        &pidfile.display().to_string(),
    ])
    .run()
    .ok();
    let pid: i64 = fs::read_to_string(&pidfile)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    assert_eq!(pid, c.pid() as i64);
    let mut master = sock.master();
    let text = read_pty_until(&mut master, "hello-/dev/pts/0\n", T10);
    assert!(text.contains("hello-/dev/pts/0"), "{text:?}");
    write_pty(&mut master, "bye\n");
    let rest = read_pty(&mut master, T10);
    assert!(rest.contains("got:bye"), "{rest:?}");
    c.wait_status("stopped", T10);
}

/// containerd's runc shim treats a `kill` error that says "container not running" as "the
/// process is already gone"; anything else makes StopContainer fail and retry.
#[test]
fn kill_of_an_exited_container_says_container_not_running() {
    for bin in runtime_and_reference() {
        let env = TestEnv::with_bin("killexited", bin);
        let mut c = env.container();
        c.sh("true");
        c.run_detached();
        c.wait_status("stopped", T10);
        let out = c.kill("KILL");
        out.failed();
        assert!(
            out.stderr.contains("container not running"),
            "kill of a stopped container:\n{out}"
        );
        // --all still succeeds on a stopped container (containerd's cleanup of what is left).
        env.rt(["kill", "--all", &c.id, "KILL"]).ok();
        c.delete().ok();
        env.assert_nothing_left(&c.id, c.path());
    }
}
