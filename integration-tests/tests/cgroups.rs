//! `cgroups`: the container's cgroup as the kernel sees it, read from the host side —
//! limit files, an OOM kill, a fork bomb at pids.max, a CPU quota, the freezer — plus
//! `update`, `pause`/`resume`, `events`, `kill --all`, `ps`, and that nothing of the
//! cgroup is left after `delete`. Runs on cgroup v1/hybrid (the host) and cgroup v2 (the
//! VM pass of scripts/vm-test.sh); each check reads the file of the version in use.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use integration_tests::*;

const T10: Duration = Duration::from_secs(10);

fn is_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// The directory of `pid`'s cgroup for controller `ctrl` (v1), or its v2 cgroup.
fn cg_dir(pid: i32, ctrl: &str) -> PathBuf {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("reading /proc/PID/cgroup");
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (_, ctrls, path) = (
            it.next().unwrap(),
            it.next().unwrap_or(""),
            it.next().unwrap_or(""),
        );
        let path = path.trim_start_matches('/');
        if is_v2() {
            if ctrls.is_empty() {
                return Path::new("/sys/fs/cgroup").join(path);
            }
        } else if ctrls.split(',').any(|c| c == ctrl) {
            return Path::new("/sys/fs/cgroup").join(ctrl).join(path);
        }
    }
    panic!("no {ctrl} cgroup for pid {pid} in {text}");
}

fn read_cg(pid: i32, ctrl: &str, file: &str) -> String {
    let p = cg_dir(pid, ctrl).join(file);
    fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
        .trim()
        .to_string()
}

fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// CPU time of the cgroup, in nanoseconds.
fn cpu_usage_ns(pid: i32) -> u64 {
    if is_v2() {
        keyed(&read_cg(pid, "cpu", "cpu.stat"), "usage_usec").expect("usage_usec") * 1000
    } else {
        read_cg(pid, "cpuacct", "cpuacct.usage")
            .parse()
            .expect("cpuacct.usage")
    }
}

fn assert_no_cgroup(rel: &str) {
    let left: Vec<PathBuf> = cgroup_dirs(rel)
        .into_iter()
        .filter(|d| d.exists())
        .collect();
    assert!(left.is_empty(), "cgroups left behind: {left:?}");
}

fn rel_of(c: &Ctr) -> String {
    c.config()["linux"]["cgroupsPath"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn limits_are_written_and_updated() {
    let env = TestEnv::new("cglimits");
    let mut c = env.container();
    c.sh("sleep 100");
    c.config_mut()["linux"]["resources"] = json!({
        "memory": {"limit": 33554432, "reservation": 16777216},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
        "pids": {"limit": 20},
        "devices": [{"allow": false, "access": "rwm"}, {"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
    });
    c.create().ok();
    let pid = c.pid();
    if is_v2() {
        assert_eq!(read_cg(pid, "memory", "memory.max"), "33554432");
        assert_eq!(read_cg(pid, "memory", "memory.low"), "16777216");
        assert_eq!(read_cg(pid, "cpu", "cpu.weight"), "20");
        assert_eq!(read_cg(pid, "cpu", "cpu.max"), "50000 100000");
        assert_eq!(read_cg(pid, "cpuset", "cpuset.cpus"), "0");
    } else {
        assert_eq!(read_cg(pid, "memory", "memory.limit_in_bytes"), "33554432");
        assert_eq!(
            read_cg(pid, "memory", "memory.soft_limit_in_bytes"),
            "16777216"
        );
        assert_eq!(read_cg(pid, "cpu", "cpu.shares"), "512");
        assert_eq!(read_cg(pid, "cpu", "cpu.cfs_quota_us"), "50000");
        assert_eq!(read_cg(pid, "cpu", "cpu.cfs_period_us"), "100000");
        assert_eq!(read_cg(pid, "cpuset", "cpuset.cpus"), "0");
        let devices = read_cg(pid, "devices", "devices.list");
        assert!(devices.contains("c 1:3 rwm"), "{devices}");
        assert!(
            !devices.contains("a *:* rwm"),
            "deny-all was not applied: {devices}"
        );
    }
    assert_eq!(read_cg(pid, "pids", "pids.max"), "20");

    env.rt([
        "update",
        "--memory",
        "48m",
        "--pids-limit",
        "30",
        "--cpu-quota",
        "25000",
        &c.id,
    ])
    .ok();
    if is_v2() {
        assert_eq!(
            read_cg(pid, "memory", "memory.max"),
            (48u64 << 20).to_string()
        );
        assert_eq!(read_cg(pid, "cpu", "cpu.max"), "25000 100000");
    } else {
        assert_eq!(
            read_cg(pid, "memory", "memory.limit_in_bytes"),
            (48u64 << 20).to_string()
        );
        assert_eq!(read_cg(pid, "cpu", "cpu.cfs_quota_us"), "25000");
    }
    assert_eq!(read_cg(pid, "pids", "pids.max"), "30");

    // --resources FILE (runtime-spec linux.resources), as containerd passes it.
    let file = env.dir().join("res.json");
    fs::write(&file, r#"{"pids": {"limit": 40}, "cpu": {"shares": 1024}}"#).unwrap();
    env.rt(["update", "--resources", &file.display().to_string(), &c.id])
        .ok();
    assert_eq!(read_cg(pid, "pids", "pids.max"), "40");
    if is_v2() {
        assert_eq!(read_cg(pid, "cpu", "cpu.weight"), "39");
    } else {
        assert_eq!(read_cg(pid, "cpu", "cpu.shares"), "1024");
    }
    c.delete_force().ok();
    assert_no_cgroup(&rel_of(&c));
}

#[test]
fn memory_hog_is_oom_killed_and_reported() {
    let env = TestEnv::new("cgoom");
    let mut c = env.container();
    let shared = c.share_dir("/shared");
    // tail keeps all of a newline-free input in memory: 64 MiB against a 32 MiB limit. The
    // hog's subshell raises its own oom_score_adj to 1000: the kernel can pick a second
    // victim while the first one's memory is still being freed (seen in the VM pass: head's
    // next pipe write OOM-killed the reporting shell 10 ms after tail), and it must be one
    // of the hog's processes. The status is renamed into place: the test must never read a
    // file the shell has created but not yet written (seen in the slow VM pass).
    c.sh("while [ ! -e /shared/go ]; do sleep 0.05; done; \
          (echo 1000 > /proc/self/oom_score_adj && head -c 64m /dev/zero | tail > /dev/null); \
          echo status=$? > /shared/st; mv /shared/st /shared/status; sleep 100");
    c.config_mut()["linux"]["resources"] = json!({"memory": {"limit": 33554432, "swap": 33554432}});
    c.create_and_start().ok();
    let pid = c.pid();
    let events = env
        .cmd(["events", "--interval", "1s", &c.id])
        .timeout(Duration::from_secs(240))
        .spawn();
    std::thread::sleep(Duration::from_millis(500));
    fs::write(shared.join("go"), "").unwrap();
    // Generous: the software-emulated VM of the v2 pass is slow.
    let memory_cg = cg_dir(pid, "memory");
    let deadline = Instant::now() + scaled(Duration::from_secs(120));
    while !shared.join("status").exists() {
        if Instant::now() > deadline {
            let state = env.rt(["state", &c.id]).stdout;
            panic!(
                "no status from the hog; state {state}\n{}",
                memory_diagnostics(&memory_cg)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = fs::read_to_string(shared.join("status")).unwrap();
    assert_eq!(status.trim(), "status=137", "the hog was not SIGKILLed");
    let ooms = if is_v2() {
        keyed(&read_cg(pid, "memory", "memory.events"), "oom_kill")
    } else {
        keyed(&read_cg(pid, "memory", "memory.oom_control"), "oom_kill")
    };
    assert!(ooms.unwrap_or(0) >= 1, "the kernel counted no OOM kill");
    // The `events` stream reported it as it happened.
    wait_for(
        Duration::from_secs(30),
        || events.output_so_far().0.contains(r#""type":"oom""#),
        "an oom event",
    );
    if !is_runc() {
        // And the stats say so (runc's stats document has no OOM counter).
        let stats = env.rt(["events", "--stats", &c.id]);
        let v: Value = serde_json::from_str(stats.ok().stdout.trim()).unwrap();
        assert_eq!(v["type"], "stats");
        assert!(
            v["data"]["memory"]["oom_kill"].as_u64().unwrap_or(0) >= 1,
            "{v}"
        );
    }
    c.delete_force().ok();
    let _ = events.wait();
    assert_no_cgroup(&rel_of(&c));
}

/// What a stuck OOM test needs to be understood: the cgroup's memory files and where each
/// of its processes sleeps in the kernel.
fn memory_diagnostics(dir: &Path) -> String {
    let mut out = String::new();
    let files = if is_v2() {
        &[
            "memory.current",
            "memory.max",
            "memory.events",
            "memory.stat",
            "cgroup.procs",
        ][..]
    } else {
        &[
            "memory.usage_in_bytes",
            "memory.limit_in_bytes",
            "memory.oom_control",
            "memory.stat",
            "cgroup.procs",
        ][..]
    };
    for f in files {
        let text = fs::read_to_string(dir.join(f)).unwrap_or_else(|e| format!("({e})"));
        out += &format!("--- {f}\n{text}");
    }
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for p in procs.split_whitespace() {
        for f in ["stat", "wchan", "stack"] {
            let text =
                fs::read_to_string(format!("/proc/{p}/{f}")).unwrap_or_else(|e| format!("({e})"));
            out += &format!("--- /proc/{p}/{f}\n{text}\n");
        }
    }
    out
}

#[test]
fn fork_bomb_stops_at_pids_max() {
    let env = TestEnv::new("cgpids");
    let mut c = env.container();
    let shared = c.share_dir("/shared");
    // The bomb runs in a subshell: a shell whose fork fails may give up, the init stays.
    c.sh("(i=0; while [ $i -lt 60 ]; do sleep 100 & i=$((i+1)); done) 2>/shared/err; echo done > /shared/done; exec sleep 100");
    c.config_mut()["linux"]["resources"] = json!({"pids": {"limit": 10}});
    c.create_and_start().ok();
    c.wait_for_file(&shared.join("done"), Duration::from_secs(30));
    let pid = c.pid();
    let current: u64 = read_cg(pid, "pids", "pids.current").parse().unwrap();
    assert!((5..=10).contains(&current), "pids.current {current}");
    let refused = keyed(&read_cg(pid, "pids", "pids.events"), "max").unwrap_or(0);
    assert!(refused >= 1, "the kernel refused no fork at pids.max");
    let err = fs::read_to_string(shared.join("err")).unwrap();
    assert!(
        err.contains("fork"),
        "forks beyond pids.max must fail: {err}"
    );
    let ps = env.rt(["ps", "--format", "json", &c.id]);
    let pids: Vec<i32> = serde_json::from_str(ps.ok().stdout.trim()).unwrap();
    assert_eq!(pids.len() as u64, current, "{pids:?}");
    // kill --all reaches every process of the cgroup.
    env.rt(["kill", "--all", &c.id, "KILL"]).ok();
    c.wait_status("stopped", T10);
    wait_for(
        T10,
        || {
            pids.iter()
                .all(|p| !Path::new(&format!("/proc/{p}")).exists())
        },
        "all processes gone",
    );
    c.delete().ok();
    assert_no_cgroup(&rel_of(&c));
}

#[test]
fn cpu_quota_gives_half_a_core() {
    let env = TestEnv::new("cgcpu");
    let mut c = env.container();
    // Sixteen spinners: without the quota they would take both cores, and on a machine
    // loaded by other work they still want far more than half a core, so the kernel has
    // periods to throttle (with two, a load of 15 starved them below the quota: measured).
    c.sh("i=0; while [ $i -lt 16 ]; do (while :; do :; done) & i=$((i+1)); done; sleep 100");
    c.config_mut()["linux"]["resources"] = json!({"cpu": {"quota": 50000, "period": 100000}});
    c.create_and_start().ok();
    let pid = c.pid();
    std::thread::sleep(Duration::from_millis(300));
    let (u0, t0) = (cpu_usage_ns(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(2));
    let (u1, t1) = (cpu_usage_ns(pid), Instant::now());
    let share = (u1 - u0) as f64 / (t1 - t0).as_nanos() as f64;
    // The quota's bound, which other load can only push further down. How far below it
    // the spinners get depends on the other work of the machine, not on rrun: that the
    // quota is what holds them back, the kernel's throttling count says below.
    assert!(share <= 0.7, "cpu share {share:.2}, want at most about 0.5");
    // The kernel throttles a period as soon as the spinners get more than the quota in it.
    // Other tests may starve them for a while, so this waits for the first throttled
    // period rather than expecting it in the window above.
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    loop {
        let stat = read_cg(pid, "cpu", "cpu.stat");
        if keyed(&stat, "nr_throttled").unwrap_or(0) >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the kernel throttled no period of the quota (share {share:.2}); cpu.stat:\n{stat}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.delete_force().ok();
}

#[test]
fn paused_container_is_frozen() {
    let env = TestEnv::new("cgpause");
    let mut c = env.container();
    c.sh("while :; do :; done");
    c.create_and_start().ok();
    let pid = c.pid();
    env.rt(["pause", &c.id]).ok();
    assert_eq!(c.status().as_deref(), Some("paused"));
    if is_v2() {
        assert_eq!(
            keyed(&read_cg(pid, "freezer", "cgroup.events"), "frozen"),
            Some(1)
        );
    } else {
        assert_eq!(read_cg(pid, "freezer", "freezer.state"), "FROZEN");
    }
    let u0 = cpu_usage_ns(pid);
    std::thread::sleep(Duration::from_millis(500));
    let u1 = cpu_usage_ns(pid);
    assert!(
        u1 - u0 < 20_000_000,
        "a frozen spinner used {} ms of CPU",
        (u1 - u0) / 1_000_000
    );
    // exec into a paused container is refused (runc too).
    c.exec(&[], &["true"]).failed();
    env.rt(["resume", &c.id]).ok();
    assert_eq!(c.status().as_deref(), Some("running"));
    // How much CPU the spinner gets in a given time depends on the machine's load (56 ms
    // of 300 ms with 20 tasks runnable on 2 cores): wait for the CPU time, not the clock.
    // A spinner still frozen gets none, and the wait fails.
    wait_for(
        Duration::from_secs(30),
        || cpu_usage_ns(pid) - u1 > 50_000_000,
        "the spinner to run again after resume (50 ms more CPU)",
    );
    // A paused container can be force-deleted (its processes are thawed to die).
    env.rt(["pause", &c.id]).ok();
    c.delete_force().ok();
    assert_no_cgroup(&rel_of(&c));
}

#[test]
fn exec_joins_the_container_cgroup() {
    let env = TestEnv::new("cgexec");
    let mut c = env.container();
    c.sh("sleep 100");
    c.create_and_start().ok();
    let init = fs::read_to_string(format!("/proc/{}/cgroup", c.pid())).unwrap();
    let pidfile = env.dir().join("exec.pid");
    let out = c.exec(
        &["--pid-file", &pidfile.display().to_string(), "--detach"],
        &["sleep", "100"],
    );
    out.ok();
    let epid: i32 = fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let exec_cg = fs::read_to_string(format!("/proc/{epid}/cgroup")).unwrap();
    // The freshly exec'd process is in every hierarchy's container cgroup (ignoring the
    // name=systemd hierarchy, which runc leaves alone too).
    let strip = |s: &str| {
        s.lines()
            .filter(|l| !l.contains("name=systemd"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&exec_cg), strip(&init));
    let ps = env.rt(["ps", "--format", "json", &c.id]);
    let pids: Vec<i32> = serde_json::from_str(ps.ok().stdout.trim()).unwrap();
    assert!(pids.contains(&epid), "{pids:?} lacks {epid}");
    // And the runtime itself did not stay there.
    let me = fs::read_to_string("/proc/self/cgroup").unwrap();
    assert_ne!(strip(&me), strip(&init));
    c.delete_force().ok();
    assert_no_cgroup(&rel_of(&c));
}

#[test]
fn nothing_left_after_failed_create_or_half_made_container() {
    let env = TestEnv::new("cgleft");
    // Limits the kernel refuses: create fails and removes the cgroup it made.
    let mut c = env.container();
    c.config_mut()["linux"]["resources"] = json!({"cpu": {"cpus": "4096"}});
    c.create_cmd(&[]).run().failed();
    assert_no_cgroup(&rel_of(&c));
    env.assert_nothing_left(&c.id, c.path());

    // An existing cgroup is not ours: refused, and left as it was.
    let c2 = env.container();
    if !is_runc() {
        let probe = env.container();
        probe.create().ok();
        let dir = cg_dir(probe.pid(), if is_v2() { "" } else { "pids" });
        probe.delete_force().ok();
        // The same place, for c2's path.
        let target = dir.parent().unwrap().join(c2.id.as_str());
        fs::create_dir_all(&target).unwrap();
        let out = c2.create_cmd(&[]).run();
        out.failed();
        assert!(out.stderr.contains("already exists"), "{out}");
        assert!(target.exists(), "a cgroup rrun did not create was removed");
        fs::remove_dir(&target).unwrap();
        assert_no_cgroup(&rel_of(&c2));
    }

    // A container whose create died after the cgroup was made (no state.json):
    // delete --force still removes the cgroup.
    if skip_if_runc("rrun's state layout") {
        return;
    }
    let c3 = env.container();
    c3.create().ok();
    let state = env.root().join(&c3.id).join("state.json");
    let pid = c3.pid();
    fs::remove_file(&state).unwrap();
    // SAFETY: plain kill(2) of the init we made.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    c3.delete_force().ok();
    assert_no_cgroup(&rel_of(&c3));
    assert!(!env.root().join(&c3.id).exists());
}

#[test]
fn device_rules_are_enforced() {
    // v1: devices.allow/deny; v2: the BPF program attached to the container's cgroup. A
    // block device node the config creates (loop0's numbers) but only one of the two
    // containers may open; "Operation not permitted" is the device cgroup's answer (an
    // unbound or absent loop device gives another error, or reads nothing).
    let env = TestEnv::new("cgdev");
    let script =
        "head -c 1 /dev/loopx > /dev/null; cat /dev/null; echo zero=$(head -c 1 /dev/zero | wc -c)";
    let setup = |allow: bool| {
        move |c: &mut Value| {
            c["linux"]["devices"] = json!([{"path": "/dev/loopx", "type": "b", "major": 7, "minor": 0, "fileMode": 0o600}]);
            let mut rules = vec![json!({"allow": false, "access": "rwm"})];
            if allow {
                rules.push(
                    json!({"allow": true, "type": "b", "major": 7, "minor": 0, "access": "r"}),
                );
            }
            c["linux"]["resources"] = json!({ "devices": rules });
        }
    };
    let denied = env.run_sh(script, setup(false));
    denied.ok();
    assert!(
        denied.stderr.contains("Operation not permitted"),
        "opening the device must be refused: {denied}"
    );
    assert!(
        denied.stdout.contains("zero=1"),
        "the standard devices stay usable: {denied}"
    );
    let allowed = env.run_sh(script, setup(true));
    allowed.ok();
    assert!(
        !allowed.stderr.contains("Operation not permitted"),
        "an allowed device was refused: {allowed}"
    );
}

#[test]
fn device_rules_are_replaced_by_update() {
    // `update --resources` with device rules replaces the container's rules: on v1 through
    // devices.deny/allow, on v2 by swapping the BPF program attached to its cgroup.
    if is_runc() {
        eprintln!("skipped for runc: runc 1.1's update does not apply device rules (the device stays usable)");
        return;
    }
    let env = TestEnv::new("cgdevupd");
    let mut c = env.container();
    c.sh("sleep 100");
    c.config_mut()["linux"]["devices"] =
        json!([{"path": "/dev/loopx", "type": "b", "major": 7, "minor": 0, "fileMode": 0o600}]);
    c.config_mut()["linux"]["resources"] = json!({"devices": [
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "b", "major": 7, "minor": 0, "access": "r"},
    ]});
    c.create_and_start().ok();
    let probe = "head -c 1 /dev/loopx > /dev/null; echo zero=$(head -c 1 /dev/zero | wc -c)";
    let before = c.exec(&[], &["sh", "-c", probe]);
    assert!(
        !before.stderr.contains("Operation not permitted"),
        "the allowed device was refused before the update: {before}"
    );
    let file = env.dir().join("devices.json");
    fs::write(&file, r#"{"devices": [{"allow": false, "access": "rwm"}]}"#).unwrap();
    env.rt(["update", "--resources", &file.display().to_string(), &c.id])
        .ok();
    let after = c.exec(&[], &["sh", "-c", probe]);
    assert!(
        after.stderr.contains("Operation not permitted"),
        "the device is still usable after the update denied it: {after}"
    );
    assert!(
        after.stdout.contains("zero=1"),
        "the standard devices stay usable after the update: {after}"
    );
    c.delete_force().ok();
    assert_no_cgroup(&rel_of(&c));
}

/// containerd 1.6 sends `linux.cgroupsPath` in the systemd driver's form
/// (`slice:prefix:name`) whenever a pod's cgroup parent ends in `.slice`, also with its
/// cgroupfs driver. Without `--systemd-cgroup`, runc takes it as one directory name below its
/// own cgroup; with it, runc refuses (no systemd here), and so does rrun (it has no systemd
/// driver).
#[test]
fn systemd_form_cgroups_path_is_one_cgroupfs_directory() {
    for bin in runtime_and_reference() {
        let env = TestEnv::with_bin("slicepath", bin);
        let mut c = env.container();
        let rel = format!(
            "rrun-test-besteffort-pod{}.slice:cri-containerd:{}",
            std::process::id(),
            c.id
        );
        c.config_mut()["linux"]["cgroupsPath"] = rel.clone().into();
        c.sh("cat /proc/self/cgroup");
        let out = c.run();
        let left: Vec<PathBuf> = cgroup_dirs(&rel)
            .into_iter()
            .filter(|d| d.exists())
            .collect();
        remove_cgroups(&rel);
        out.ok();
        assert!(left.is_empty(), "cgroups left behind: {left:?}");
        let suffix = format!("/{rel}");
        let lines: Vec<&str> = out
            .stdout
            .lines()
            .filter(|l| {
                let ctrls = l.split(':').nth(1).unwrap_or("");
                ctrls.is_empty() || ctrls.split(',').any(|c| c == "memory" || c == "pids")
            })
            .collect();
        assert!(!lines.is_empty(), "{out}");
        for l in &lines {
            assert!(l.ends_with(&suffix), "{l:?} is not in {rel:?}:\n{out}");
        }

        let c2 = env.container();
        let out = env
            .cmd(["--systemd-cgroup", "create", "--bundle"])
            .arg(c2.path().display().to_string())
            .arg(&c2.id)
            .run();
        out.failed();
        assert!(out.stderr.contains("systemd"), "{out}");
        assert!(env.list_json().is_empty(), "{out}");
    }
}

/// Many containers created and deleted at once under one fresh parent, as a kubelet does
/// under `kubepods/`: every `create` must succeed whatever the order of the mkdirs and
/// rmdirs of the shared parents. On cgroup v1 a new cpuset cgroup has no cpus and no memory
/// nodes and cannot take a task, so a leaf made under a parent whose creator has not yet
/// filled it in, or under a parent that a concurrent delete removed and that was made again,
/// failed with ENOSPC (issue 17).
#[test]
fn concurrent_creates_and_deletes_under_one_fresh_parent() {
    const WORKERS: usize = 6;
    const ROUNDS: usize = 40;
    let env = TestEnv::new("cgstress");
    let top = format!("{CGROUP_PARENT}/stress-{}", env.new_id());
    // Three levels to share, so that parents are made and removed at more than one depth.
    let parent = format!("{top}/pods/burstable");
    let failures = std::sync::Mutex::new(Vec::new());
    // Another creator that stalls between its mkdir of a shared parent and filling in the
    // parent's cpuset (as a descheduled runtime on a loaded node does): v1 cpuset parents,
    // made again as soon as a delete removed them, and never filled in by it.
    let levels: Vec<PathBuf> = [top.clone(), format!("{top}/pods"), parent.clone()]
        .iter()
        .flat_map(|l| cgroup_dirs(l))
        .filter(|d| d.starts_with("/sys/fs/cgroup/cpuset/"))
        .collect();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                for d in &levels {
                    let _ = fs::create_dir(d);
                }
                std::thread::yield_now();
            }
        });
        let workers: Vec<_> = (0..WORKERS)
            .map(|_| {
                s.spawn(|| {
                    for _ in 0..ROUNDS {
                        let mut c = env.container();
                        let path = format!("{parent}/{}", c.id);
                        c.config_mut()["linux"]["cgroupsPath"] = path.into();
                        c.sh("true");
                        // create + delete, no start: the most mkdirs and rmdirs per second.
                        let out = c.create_cmd(&[]).run();
                        if out.success() {
                            c.delete().ok();
                        } else {
                            failures.lock().unwrap().push(out.to_string());
                        }
                        let _ = fs::remove_file(&out.stdout_path);
                        let _ = fs::remove_file(&out.stderr_path);
                    }
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    remove_cgroups(&top);
    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} runs failed; the first:\n{}",
        failures.len(),
        WORKERS * ROUNDS,
        failures[0]
    );
}

/// cgroup v1 `memory.kernelTCP` is written to `memory.kmem.tcp.limit_in_bytes` (runc 1.1.5
/// ignores it: checked as its behaviour); blkio files this kernel lacks (no CFQ/BFQ weights) are a clear error, not the
/// EACCES of creating a file in cgroupfs. runc fails on them as well (ENOENT).
#[test]
fn v1_kernel_tcp_and_missing_blkio_files() {
    if is_v2() {
        eprintln!("SKIPPED: cgroup v1 only");
        return;
    }
    for bin in runtime_and_reference() {
        let env = TestEnv::with_bin("kmemtcp", bin.clone());
        let mut c = env.container();
        c.set_args(["sleep", "1000"]);
        c.config_mut()["linux"]["resources"] = json!({"memory": {"kernelTCP": 8388608}});
        c.create();
        let tcp = read_cg(c.pid(), "memory", "memory.kmem.tcp.limit_in_bytes");
        c.delete_force().ok();
        if bin == runtime_binary() && !is_runc() {
            assert_eq!(tcp, "8388608");
        } else {
            // runc 1.1.5 accepts kernelTCP and leaves the kernel's default (unlimited).
            assert!(tcp.parse::<u64>().unwrap() > 1 << 60, "runc wrote {tcp}");
        }

        let blkio = Path::new("/sys/fs/cgroup/blkio");
        for (field, value, file) in [
            ("leafWeight", json!(300), "blkio.leaf_weight"),
            (
                "weightDevice",
                json!([{"major": 1, "minor": 3, "weight": 300}]),
                "blkio.weight_device",
            ),
            ("weight", json!(300), "blkio.weight"),
        ] {
            if !blkio.is_dir() || blkio.join(file).exists() {
                eprintln!("SKIPPED {field}: this kernel has {file}");
                continue;
            }
            let mut c = env.container();
            c.config_mut()["linux"]["resources"] = json!({"blockIO": {field: value}});
            let out = c.create_cmd(&[]).run();
            out.failed();
            if bin == runtime_binary() && !is_runc() {
                assert!(
                    out.stderr.contains("not supported by this kernel")
                        && out.stderr.contains(field),
                    "{out}"
                );
            } else {
                assert!(out.stderr.contains("no such file"), "{out}");
            }
            env.assert_nothing_left(&c.id, c.path());
            assert_no_cgroup(&rel_of(&c));
        }
    }
}
