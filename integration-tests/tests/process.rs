//! `process`: args, env, cwd, user, umask, rlimits, capabilities, noNewPrivileges,
//! oomScoreAdj, terminal, and no fd leaks. Observed from inside the container.

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use integration_tests::*;

const T10: Duration = Duration::from_secs(10);

fn writable_tmp(c: &mut Value) {
    c["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["mode=1777"]
    }));
}

#[test]
fn args_env_cwd() {
    let env = TestEnv::new("argsenv");
    let mut c = env.container();
    c.set_args([
        "sh",
        "-c",
        // (not the last command: sh would exec it and /proc/1/environ would be tr's)
        "echo \"$0|$1|$2\"; pwd; echo \"$FOO\"; cat /proc/1/environ | tr '\\0' '\\n'; true",
        "zero",
        "one two",
        "",
    ]);
    {
        let cfg = c.config_mut();
        cfg["process"]["cwd"] = "/etc".into();
        cfg["process"]["env"]
            .as_array_mut()
            .unwrap()
            .extend([json!("FOO=a b=c"), json!("EMPTY=")]);
    }
    let out = c.run();
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..3], ["zero|one two|", "/etc", "a b=c"], "{out}");
    let got: BTreeSet<&str> = lines[3..]
        .iter()
        .copied()
        .filter(|l| !l.is_empty())
        .collect();
    let want: BTreeSet<String> = c.config()["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    for w in &want {
        assert!(
            got.contains(w.as_str()),
            "{w} missing from the environment: {out}"
        );
    }
    for g in &got {
        assert!(
            want.contains(*g) || g.starts_with("HOME="),
            "unexpected environment variable {g}: {out}"
        );
    }
}

#[test]
fn user_groups_umask() {
    let env = TestEnv::new("user");
    let out = env.run_sh(
        "id -u; id -g; id -G; umask; grep -E '^(Uid|Gid|Groups):' /proc/self/status; \
         touch /tmp/f; mkdir /tmp/d; stat -c '%a %u:%g' /tmp/f /tmp/d",
        |c| {
            writable_tmp(c);
            c["process"]["user"] = json!({
                "uid": APP_UID, "gid": APP_GID,
                "additionalGids": [EXTRA_GID, 3000],
                "umask": 0o027
            });
        },
    );
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "1000", "{out}");
    assert_eq!(lines[1], "1000", "{out}");
    let groups: BTreeSet<&str> = lines[2].split_whitespace().collect();
    let want: BTreeSet<&str> = ["1000", "2000", "3000"].into();
    let want_no_primary: BTreeSet<&str> = ["2000", "3000"].into();
    assert!(
        groups == want || groups == want_no_primary,
        "id -G: {groups:?}: {out}"
    );
    assert_eq!(lines[3], "0027", "{out}");
    let status = out.stdout.as_str();
    assert_eq!(
        status_field(status, "Uid")
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1000"; 4]
    );
    assert_eq!(
        status_field(status, "Gid")
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["1000"; 4]
    );
    let sup: BTreeSet<&str> = status_field(status, "Groups")
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(sup, want_no_primary, "supplementary groups: {out}");
    let n = lines.len();
    assert_eq!(lines[n - 2..], ["640 1000:1000", "750 1000:1000"], "{out}");
}

#[test]
fn user_without_umask_and_root_groups() {
    let env = TestEnv::new("rootuser");
    let out = env.run_sh("id -u; id -g; grep '^Groups:' /proc/self/status", |c| {
        c["process"]["user"] = json!({"uid": 0, "gid": 0, "additionalGids": [10]});
    });
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..2], ["0", "0"]);
    assert_eq!(status_field(lines[2], "Groups").unwrap(), "10", "{out}");
}

#[test]
fn rlimits() {
    let env = TestEnv::new("rlimits");
    let out = env.run_sh("ulimit -n; ulimit -Hn; cat /proc/self/limits", |c| {
        c["process"]["rlimits"] = json!([
            {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1000},
            {"type": "RLIMIT_CORE", "soft": 0, "hard": 4096},
            {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400}
        ]);
    });
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[..2], ["512", "1000"], "{out}");
    let limit = |name: &str| -> Vec<String> {
        let l = out
            .stdout
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("no {name} in {out}"));
        l[name.len()..]
            .split_whitespace()
            .take(2)
            .map(String::from)
            .collect()
    };
    assert_eq!(limit("Max open files"), ["512", "1000"]);
    assert_eq!(limit("Max core file size"), ["0", "4096"]);
    assert_eq!(limit("Max processes"), ["300", "400"]);

    // An unknown rlimit type is rejected.
    let out = env.run_sh("true", |c| {
        c["process"]["rlimits"] = json!([{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]);
    });
    out.failed();
    assert!(out.stderr.contains("RLIMIT_BOGUS"), "{out}");
}

const CAP_SETS: [(&str, &str); 5] = [
    ("bounding", "CapBnd"),
    ("permitted", "CapPrm"),
    ("effective", "CapEff"),
    ("inheritable", "CapInh"),
    ("ambient", "CapAmb"),
];

fn check_caps(env: &TestEnv, user: Value, sets: &[(&str, &[&str])], extra_script: &str) -> Output {
    let out = env.run_sh(
        &format!("grep ^Cap /proc/self/status; {extra_script}"),
        |c| {
            writable_tmp(c);
            c["process"]["user"] = user;
            let mut caps = json!({});
            for (set, names) in sets {
                caps[*set] = json!(names);
            }
            c["process"]["capabilities"] = caps;
        },
    );
    out.ok();
    for (set, field) in CAP_SETS {
        let names = sets
            .iter()
            .find(|(s, _)| *s == set)
            .map(|(_, n)| *n)
            .unwrap_or(&[]);
        let got = u64::from_str_radix(
            status_field(&out.stdout, field).unwrap_or_else(|| panic!("no {field}: {out}")),
            16,
        )
        .unwrap();
        assert_eq!(
            got,
            cap_mask(names),
            "{field} ({set}) is {got:#x}, configured {names:?} = {:#x}\n{out}",
            cap_mask(names)
        );
    }
    out
}

#[test]
fn capabilities_root() {
    let env = TestEnv::new("capsroot");
    let all: &[&str] = &[
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_SETUID",
        "CAP_SETGID",
        "CAP_DAC_OVERRIDE",
    ];
    let inh: &[&str] = &["CAP_KILL", "CAP_CHOWN"];
    check_caps(
        &env,
        json!({"uid": 0, "gid": 0}),
        &[
            ("bounding", all),
            ("permitted", all),
            ("effective", all),
            ("inheritable", inh),
            ("ambient", inh),
        ],
        "",
    );
    // No capabilities at all: root can't chown.
    let out = check_caps(
        &env,
        json!({"uid": 0, "gid": 0}),
        &[],
        "touch /tmp/f; if chown 1000 /tmp/f 2>/dev/null; then echo chowned; else echo denied; fi",
    );
    assert_eq!(out.stdout.lines().last(), Some("denied"), "{out}");
}

#[test]
fn capabilities_non_root_ambient() {
    let env = TestEnv::new("capsamb");
    let bnd: &[&str] = &[
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_RAW",
    ];
    let amb: &[&str] = &["CAP_CHOWN", "CAP_NET_BIND_SERVICE"];
    // For a non-root user, what survives exec is the ambient set (in permitted and
    // effective), so a consistent config lists it in all four.
    let out = check_caps(
        &env,
        json!({"uid": APP_UID, "gid": APP_GID}),
        &[
            ("bounding", bnd),
            ("permitted", amb),
            ("effective", amb),
            ("inheritable", amb),
            ("ambient", amb),
        ],
        "id -u; touch /tmp/f; chown 2000 /tmp/f && stat -c %u /tmp/f",
    );
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[lines.len() - 2..],
        ["1000", "2000"],
        "ambient CAP_CHOWN works: {out}"
    );

    // Without ambient caps, a non-root user has nothing effective.
    check_caps(
        &env,
        json!({"uid": APP_UID, "gid": APP_GID}),
        &[("bounding", bnd)],
        "",
    );
}

#[test]
fn unknown_capability_is_a_warning() {
    // runtime-spec: capabilities that cannot be mapped are logged as a warning, and
    // runtimes SHOULD NOT fail.
    let env = TestEnv::new("capsbad");
    let out = env.run_sh("grep ^CapBnd /proc/self/status", |c| {
        c["process"]["capabilities"]["bounding"] = json!(["CAP_KILL", "CAP_NOT_A_CAP"]);
    });
    out.ok();
    assert!(
        out.stderr.contains("CAP_NOT_A_CAP"),
        "warning expected: {out}"
    );
    let bnd = u64::from_str_radix(status_field(&out.stdout, "CapBnd").unwrap(), 16).unwrap();
    assert_eq!(bnd, cap_mask(&["CAP_KILL"]), "{out}");
}

#[test]
fn no_new_privileges() {
    let env = TestEnv::new("nnp");
    for (nnp, want) in [(true, "1"), (false, "0")] {
        let out = env.run_sh("grep ^NoNewPrivs: /proc/self/status", |c| {
            c["process"]["noNewPrivileges"] = nnp.into();
        });
        out.ok();
        assert_eq!(status_field(&out.stdout, "NoNewPrivs"), Some(want), "{out}");
    }
}

/// The program starts with SIGPIPE at its default and no signal blocked, whatever the
/// runtime's own process had (Rust ignores SIGPIPE; an engine may block others). (Signal 32
/// shows as ignored with runc too: busybox's doing, not the runtime's.)
#[test]
fn sigpipe_not_ignored_and_no_signal_blocked() {
    let env = TestEnv::new("sigs");
    let out = env.run_sh(
        "grep -E '^Sig(Ign|Blk):' /proc/self/status; yes | head -n 1",
        |_| {},
    );
    out.ok();
    let ignored = u64::from_str_radix(status_field(&out.stdout, "SigIgn").unwrap_or(""), 16)
        .unwrap_or_else(|_| panic!("no SigIgn: {out}"));
    let sigpipe = 1u64 << (libc::SIGPIPE - 1);
    assert_eq!(
        ignored & sigpipe,
        0,
        "SIGPIPE is ignored in the container: {out}"
    );
    assert_eq!(
        status_field(&out.stdout, "SigBlk"),
        Some("0000000000000000"),
        "{out}"
    );
    assert!(out.stdout.trim_end().ends_with('y'), "{out}");
}

fn host_has_cap(cap: &str) -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let eff = u64::from_str_radix(status_field(&status, "CapEff").unwrap(), 16).unwrap();
    eff & (1 << cap_number(cap)) != 0
}

#[test]
fn oom_score_adj() {
    let env = TestEnv::new("oom");
    let out = env.run_sh("cat /proc/self/oom_score_adj", |c| {
        c["process"]["oomScoreAdj"] = 500.into();
    });
    out.ok();
    assert_eq!(out.stdout.trim(), "500");

    // Lowering it needs CAP_SYS_RESOURCE; without it the runtime must fail cleanly.
    let mut c = env.container();
    c.sh("cat /proc/self/oom_score_adj");
    c.config_mut()["process"]["oomScoreAdj"] = (-500).into();
    let out = c.run();
    if host_has_cap("CAP_SYS_RESOURCE") {
        out.ok();
        assert_eq!(out.stdout.trim(), "-500");
    } else {
        out.failed();
        assert!(out.stdout.is_empty(), "the process must not run: {out}");
        assert!(out.stderr.contains("oom_score_adj"), "{out}");
        env.assert_nothing_left(&c.id, c.path());
        assert!(env.list_json().is_empty());
    }
}

#[test]
fn terminal_via_console_socket() {
    let env = TestEnv::new("terminal");
    let mut c = env.container();
    c.sh("tty; [ -t 0 ] && [ -t 1 ] && [ -t 2 ] && echo all-tty; \
          stat -c '%F %t' /dev/console; stty size; \
          echo ready; read line; echo got:$line");
    {
        let cfg = c.config_mut();
        cfg["process"]["terminal"] = true.into();
        cfg["process"]["consoleSize"] = json!({"height": 40, "width": 100});
    }
    let mut sock = ConsoleSocket::bind(&env.dir().join("console.sock"));
    c.create_cmd(&["--console-socket", &sock.arg()]).run().ok();
    let mut master = sock.master();
    c.start().ok();
    let text = read_pty_until(&mut master, "ready\n", T10);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "/dev/pts/0", "{text:?}");
    assert_eq!(lines[1], "all-tty", "{text:?}");
    assert_eq!(
        lines[2], "character special file 88",
        "/dev/console is the pty: {text:?}"
    );
    assert_eq!(lines[3], "40 100", "consoleSize: {text:?}");
    write_pty(&mut master, "hello pty\n");
    let rest = read_pty(&mut master, T10);
    assert!(rest.contains("got:hello pty"), "{rest:?}");
    c.wait_status("stopped", T10);
}

#[test]
fn no_fd_leak() {
    let env = TestEnv::new("fdleak");
    // `ls /proc/self/fd` lists ls's own fds: what it inherited plus the one it opened
    // for reading the directory (the highest).
    let ls_fds = [
        "sh",
        "-c",
        "ls /proc/self/fd | sort -n | tr '\\n' ' '; true",
    ];
    let mut c = env.container();
    c.set_args(["ls", "/proc/self/fd"]);
    // A stray non-close-on-exec fd in the runtime must not reach the container.
    let stray = fs::File::open("/etc/hostname").unwrap();
    let out = c.run_cmd(&[]).leak_fd(stray, 9).run();
    out.ok();
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3"],
        "{out}"
    );

    // With --preserve-fds 1: fd 3 is the preserved one.
    let (_r, w) = pipe();
    let stray = fs::File::open("/etc/hostname").unwrap();
    let out = c
        .run_cmd(&["--preserve-fds", "1"])
        .pass_fd(w)
        .leak_fd(stray, 9)
        .run();
    out.ok();
    assert_eq!(
        out.stdout.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "2", "3", "4"],
        "{out}"
    );

    // The init of a created container, and exec'd processes.
    let mut c = env.container();
    c.set_args(["sleep", "1000"]);
    let stray = fs::File::open("/etc/hostname").unwrap();
    c.create_cmd(&[]).leak_fd(stray, 9).run().ok();
    c.start().ok();
    c.wait_status("running", T10);
    let out = c.exec(&[], &["sh", "-c", "ls /proc/1/fd | sort -n | tr '\\n' ' '"]);
    out.ok();
    assert_eq!(out.stdout.trim(), "0 1 2", "init's fds: {out}");
    let stray = fs::File::open("/etc/hostname").unwrap();
    let out = c.exec_cmd(&[], &ls_fds[..]).leak_fd(stray, 9).run();
    out.ok();
    // sh -c's last command is exec'd: ls has 0 1 2, its dir fd, and nothing else.
    assert_eq!(out.stdout.trim(), "0 1 2 3", "{out}");
}
