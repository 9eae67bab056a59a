//! Security regression tests: each one is an attack that must fail, written after a
//! class of container escape that hit runc, crun or youki. See `../SECURITY.md` for the
//! build each test was checked to fail against (protection removed).

use integration_tests::*;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T10: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------

fn writable_root(c: &mut Value) {
    c["root"]["readonly"] = false.into();
}

fn seccomp_profile(default: &str, syscalls: Value) -> Value {
    json!({
        "defaultAction": default,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": syscalls
    })
}

fn mkdir_enosys() -> Value {
    seccomp_profile(
        "SCMP_ACT_ALLOW",
        json!([{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38 }]),
    )
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// The host's mount points (for "nothing new was mounted outside the bundle").
fn host_mount_points() -> Vec<String> {
    let text = fs::read_to_string("/proc/self/mountinfo").unwrap();
    parse_mountinfo(&text)
        .into_iter()
        .map(|m| m.mount_point)
        .collect()
}

/// No new mount on the host at `/` or in the test's dir outside its bundles (where the
/// attacks here aim). Other tests and services may mount elsewhere meanwhile.
#[track_caller]
fn assert_no_new_host_mounts(before: &[String], env: &TestEnv) {
    let dir = env.dir().display().to_string();
    let bundles = env.dir().join("bundles").display().to_string();
    let new: Vec<String> = host_mount_points()
        .into_iter()
        .filter(|m| !before.contains(m))
        .filter(|m| m == "/" || (m.starts_with(&dir) && !m.starts_with(&bundles)))
        .collect();
    assert!(new.is_empty(), "new mounts on the host: {new:?}");
}

/// Runs a copy of the runtime binary (not the harness's) with `--root <env root>`.
fn run_copy(bin: &Path, env: &TestEnv, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new("timeout");
    cmd.arg("30")
        .arg(bin)
        .arg("--root")
        .arg(env.root())
        .args(args)
        .stdin(std::process::Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("running {}: {e}", bin.display()))
}

/// Copies the dynamic loader and libraries `bin` needs (per `ldd`) into `rootfs`.
fn copy_shared_libraries(bin: &Path, rootfs: &Path) {
    let out = Command::new("ldd").arg(bin).output().unwrap();
    for lib in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let dst = rootfs.join(lib.trim_start_matches('/'));
        fs::create_dir_all(dst.parent().unwrap()).unwrap();
        fs::copy(lib, &dst).unwrap_or_else(|e| panic!("copying {lib}: {e}"));
    }
}

/// A copy of the binary under test in the test's temp dir: an attack on the runtime
/// binary that succeeds then destroys only the copy.
fn binary_copy(env: &TestEnv) -> PathBuf {
    let dir = env.mkdir("bin");
    let name = runtime_binary()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let copy = dir.join(format!("{name}-copy"));
    fs::copy(runtime_binary(), &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    copy
}

// ---------------------------------------------------------------------------------------
// seccomp
// ---------------------------------------------------------------------------------------

#[test]
fn seccomp_errno_ret_blocks_mkdir() {
    let env = TestEnv::new("sc-errno");
    let script = "mkdir /dev/shm/x; echo rc=$?";
    // Control: without the filter the same mkdir works.
    let out = env.run_sh(script, |_| {});
    out.ok();
    assert_eq!(out.stdout.trim(), "rc=0", "{out}");
    let out = env.run_sh(script, |c| c["linux"]["seccomp"] = mkdir_enosys());
    out.ok();
    assert_eq!(out.stdout.trim(), "rc=1", "{out}");
    assert!(
        out.stderr.contains("Function not implemented"),
        "mkdir must fail with ENOSYS (errnoRet 38): {out}"
    );
}

#[test]
fn seccomp_default_errno_with_allow_list() {
    if skip_if_runc("runc 1.1 makes calls of its own (fstatfs of /proc/self/fd) under the filter") {
        return;
    }
    let env = TestEnv::new("sc-allow");
    let allowed = [
        "read",
        "write",
        "writev",
        "readv",
        "pread64",
        "open",
        "openat",
        "close",
        "stat",
        "fstat",
        "lstat",
        "newfstatat",
        "statx",
        "poll",
        "ppoll",
        "lseek",
        "mmap",
        "mprotect",
        "munmap",
        "brk",
        "rt_sigaction",
        "rt_sigprocmask",
        "rt_sigreturn",
        "ioctl",
        "access",
        "faccessat",
        "faccessat2",
        "pipe",
        "pipe2",
        "dup",
        "dup2",
        "dup3",
        "getpid",
        "getppid",
        "getpgrp",
        "fork",
        "vfork",
        "clone",
        "clone3",
        "execve",
        "exit",
        "exit_group",
        "wait4",
        "waitid",
        "kill",
        "uname",
        "fcntl",
        "getcwd",
        "chdir",
        "getuid",
        "getgid",
        "geteuid",
        "getegid",
        "setpgid",
        "getpgid",
        "arch_prctl",
        "set_tid_address",
        "set_robust_list",
        "prlimit64",
        "getrandom",
        "rseq",
        "futex",
        "sigaltstack",
        "readlink",
        "readlinkat",
        "getdents64",
        "umask",
        "gettid",
        "tgkill",
        "nanosleep",
        "clock_nanosleep",
        "clock_gettime",
        "madvise",
        "mremap",
        "sysinfo",
    ];
    let out = env.run_sh("echo start; mkdir /dev/shm/x; echo rc=$?", |c| {
        c["linux"]["seccomp"] = seccomp_profile(
            "SCMP_ACT_ERRNO",
            json!([{ "names": &allowed[..], "action": "SCMP_ACT_ALLOW" }]),
        );
    });
    out.ok();
    assert_eq!(out.stdout.trim(), "start\nrc=1", "{out}");
    assert!(
        out.stderr.contains("Operation not permitted"),
        "mkdir is not on the allow list: EPERM expected: {out}"
    );
}

#[test]
fn seccomp_argument_condition() {
    let env = TestEnv::new("sc-args");
    // personality(PER_LINUX32 = 8) is refused with EINVAL, personality(PER_LINUX = 0) is not.
    let out = env.run_sh(
        "linux64 true; echo linux64=$?; linux32 true; echo linux32=$?",
        |c| {
            c["linux"]["seccomp"] = seccomp_profile(
                "SCMP_ACT_ALLOW",
                json!([{
                    "names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
                    "args": [{ "index": 0, "value": 8, "op": "SCMP_CMP_EQ" }]
                }]),
            );
        },
    );
    out.ok();
    assert_eq!(out.stdout.trim(), "linux64=0\nlinux32=1", "{out}");
    assert!(out.stderr.contains("Invalid argument"), "{out}");
}

#[test]
fn seccomp_kill_process_kills_the_container() {
    let env = TestEnv::new("sc-kill");
    let mut c = env.container();
    c.set_args(["mkdir", "/dev/shm/x"]);
    c.config_mut()["linux"]["seccomp"] = seccomp_profile(
        "SCMP_ACT_ALLOW",
        json!([{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_KILL_PROCESS" }]),
    );
    let out = c.run();
    assert_eq!(out.code(), 128 + libc::SIGSYS, "killed by SIGSYS: {out}");
}

#[test]
fn seccomp_status_and_exec_are_filtered() {
    let env = TestEnv::new("sc-exec");
    let mut c = env.container();
    c.set_args(["sleep", "1000"]);
    c.config_mut()["linux"]["seccomp"] = mkdir_enosys();
    c.create_and_start();
    let out = c.exec(
        &[],
        &["grep", "^Seccomp:", "/proc/1/status", "/proc/self/status"],
    );
    out.ok();
    for l in out.stdout.lines() {
        assert!(l.ends_with("Seccomp:\t2"), "filter mode expected: {out}");
    }
    assert_eq!(out.stdout.lines().count(), 2, "{out}");
    let out = c.exec(&[], &["mkdir", "/dev/shm/by-exec"]);
    out.failed();
    assert!(out.stderr.contains("Function not implemented"), "{out}");
    let out = c.exec(&[], &["ls", "/dev/shm"]);
    assert!(!out.stdout.contains("by-exec"), "{out}");
}

#[test]
fn seccomp_unknown_syscall_name_is_ignored() {
    let env = TestEnv::new("sc-unknown");
    let out = env.run_sh("mkdir /dev/shm/x; echo rc=$?", |c| {
        c["linux"]["seccomp"] = seccomp_profile(
            "SCMP_ACT_ALLOW",
            json!([{
                "names": ["no_such_syscall_xyz", "mkdir", "mkdirat"],
                "action": "SCMP_ACT_ERRNO", "errnoRet": 38
            }]),
        );
    });
    out.ok();
    assert_eq!(
        out.stdout.trim(),
        "rc=1",
        "the known names still apply: {out}"
    );
    assert!(out.stderr.contains("Function not implemented"), "{out}");
}

#[test]
fn seccomp_notify_is_refused_and_leaves_nothing() {
    let env = TestEnv::new("sc-notify");
    let mut c = env.container();
    c.config_mut()["linux"]["seccomp"] = seccomp_profile(
        "SCMP_ACT_ALLOW",
        json!([{ "names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY" }]),
    );
    let out = c.create_cmd(&[]).run();
    out.failed();
    if !is_runc() {
        assert!(
            out.stderr.contains("SCMP_ACT_NOTIFY"),
            "a clear error: {out}"
        );
    }
    env.assert_nothing_left(&c.id, c.path());
}

// ---------------------------------------------------------------------------------------
// CVE-2019-5736: overwriting the runtime binary through /proc/PID/exe
// ---------------------------------------------------------------------------------------

/// The container watches for a runtime process that `exec` started in it and tries to
/// open its `/proc/PID/exe` (readlink, read, write) while the host runs `exec` over and
/// over. The runtime child must be out of reach until it has become the user's program.
#[test]
fn cve_2019_5736_exec_child_exe_is_unreachable() {
    let env = TestEnv::new("cve5736-scan");
    let bin = binary_copy(&env);
    let name = bin.file_name().unwrap().to_string_lossy().into_owned();
    let before = sha256(&bin);
    let mut c = env.container();
    let shared = c.share_dir("/shared");
    // Every process whose exe is not busybox is a runtime process (or an unreachable
    // one): record what could be done with it.
    c.sh("touch /shared/ready
         while [ ! -e /shared/stop ]; do
           for p in /proc/[0-9]*; do
             [ \"$p\" = /proc/$$ ] && continue
             t=$(readlink $p/exe 2>/dev/null) || continue
             case \"$t\" in /bin/busybox|'') continue;; esac
             echo \"readlink $p $t\" >> /shared/seen
             cat $p/exe > /dev/null 2>&1 && echo \"read $p $t\" >> /shared/seen
             (echo x >> $p/exe) 2>/dev/null && echo \"write $p $t\" >> /shared/seen
           done
         done");
    c.create_and_start();
    c.wait_for_file(&shared.join("ready"), T10);
    // At least 8 s and at least 10 execs of attack window, however slow the machine (the
    // VM pass emulates the CPU); the scaled cap only stops a runtime that stalls.
    let start = Instant::now();
    let cap = scaled(Duration::from_secs(120));
    let mut runs = 0;
    while (start.elapsed() < Duration::from_secs(8) || runs < 10) && start.elapsed() < cap {
        let out = run_copy(&bin, &env, &["exec", &c.id, "true"]);
        assert!(out.status.success(), "exec with the copy: {out:?}");
        runs += 1;
    }
    fs::write(shared.join("stop"), "").unwrap();
    let seen = fs::read_to_string(shared.join("seen")).unwrap_or_default();
    eprintln!("{runs} execs; seen:\n{seen}");
    assert!(runs >= 10, "only {runs} execs");
    assert_eq!(sha256(&bin), before, "the runtime binary changed: {seen}");
    assert!(
        !seen.contains(&name),
        "a runtime process's exe was reachable from the container:\n{seen}"
    );
}

/// The original exploit: the container makes the program `exec` runs resolve to
/// `/proc/self/exe`, so the runtime re-executes *itself* inside the container; then it
/// holds the binary open and writes to it once the process is gone. Here the re-executed
/// runtime is held (its `--log` is a fifo) until the container has its fd.
#[test]
fn cve_2019_5736_exec_of_proc_self_exe_cannot_overwrite_runtime() {
    let env = TestEnv::new("cve5736-self");
    let bin = binary_copy(&env);
    let before = sha256(&bin);
    let mut c = env.container();
    writable_root(c.config_mut());
    // The runtime must be able to run in the container: its loader and libraries.
    copy_shared_libraries(&bin, &c.rootfs());
    let shared = c.share_dir("/shared");
    c.sh(
        "ln -s /proc/self/exe /bin/evil; mkfifo /fifo; touch /shared/ready
         while :; do
           for p in /proc/[0-9]*; do
             [ \"$p\" = /proc/$$ ] && continue
             # The runtime's own child has the same command line until it has exec'd
             # (and is out of reach): wait for the exec'd program.
             t=$(readlink $p/exe 2>/dev/null) || continue
             [ \"$t\" = /bin/busybox ] && continue
             if tr '\\0' ' ' < $p/cmdline 2>/dev/null | grep -q -- ' /fif[o] '; then
               pid=${p#/proc/}; break 2
             fi
           done
         done
         echo \"found $pid exe=$(readlink /proc/$pid/exe 2>&1)\" >> /shared/report
         sleep 1000 3< /proc/$pid/exe &
         holder=$!
         sleep 0.2
         if [ \"$FIFO_ROLE\" = reader ]; then cat /fifo > /dev/null; else echo '{}' > /fifo; fi
         while [ -e /proc/$pid ]; do sleep 0.05; done
         i=0
         while [ $i -lt 40 ]; do
           if (echo PWNED >> /proc/$holder/fd/3) 2>>/shared/report; then
             echo WROTE >> /shared/report; break
           fi
           i=$((i+1)); sleep 0.05
         done
         echo done >> /shared/report
         sleep 1000",
    );
    // The host admin runs the container's /bin/evil with some arguments; they make the
    // runtime wait on the container's fifo: runc opens its --log at once, rrun reads
    // `update --resources` before it looks for the container.
    let (role, args): (&str, &[&str]) = if is_runc() {
        ("reader", &["--log", "/fifo", "state", "nosuch"])
    } else {
        ("writer", &["update", "--resources", "/fifo", "nosuch"])
    };
    c.config_mut()["process"]["env"]
        .as_array_mut()
        .unwrap()
        .push(format!("FIFO_ROLE={role}").into());
    c.create_and_start();
    c.wait_for_file(&shared.join("ready"), T10);
    let mut exec_args = vec!["exec", c.id.as_str(), "/bin/evil"];
    exec_args.extend_from_slice(args);
    let out = run_copy(&bin, &env, &exec_args);
    eprintln!("exec: {out:?}");
    let report_path = shared.join("report");
    wait_for(
        T10,
        || fs::read_to_string(&report_path).is_ok_and(|r| r.contains("done")),
        "the container's report",
    );
    let report = fs::read_to_string(&report_path).unwrap();
    eprintln!("report:\n{report}");
    assert!(report.contains("found"), "{report}");
    assert_eq!(
        sha256(&bin),
        before,
        "the runtime binary was overwritten:\n{report}"
    );
    assert!(!report.contains("WROTE"), "{report}");
}

// ---------------------------------------------------------------------------------------
// CVE-2024-21626: working directory through a leaked fd
// ---------------------------------------------------------------------------------------

/// A host directory (with a marker file) leaked into the runtime as fd `n`.
fn leaked_host_dir(env: &TestEnv, name: &str) -> (PathBuf, fs::File) {
    let dir = env.mkdir(name);
    fs::write(dir.join("host-marker"), "HOST SECRET\n").unwrap();
    let f = fs::File::open(&dir).unwrap();
    (dir, f)
}

#[test]
fn cve_2024_21626_cwd_through_leaked_fd() {
    let env = TestEnv::new("cve21626-cwd");
    for n in 3..10 {
        let mut c = env.container();
        c.set_args([
            "sh",
            "-c",
            "readlink /proc/self/cwd; cat host-marker ../host-marker ../../../../../../../etc/hostname-secret 2>/dev/null; true",
        ]);
        c.config_mut()["process"]["cwd"] = format!("/proc/self/fd/{n}").into();
        let (_dir, f) = leaked_host_dir(&env, &format!("leak{n}"));
        let out = c.run_cmd(&[]).leak_fd(f, n).run();
        if out.success() {
            let cwd = out.stdout.lines().next().unwrap_or("");
            assert!(
                cwd.starts_with('/') && !cwd.contains("unreachable"),
                "fd {n}: cwd outside the container: {out}"
            );
            assert!(!out.stdout.contains("HOST SECRET"), "fd {n}: {out}");
        }
        env.assert_nothing_left(&c.id, c.path());
    }
}

#[test]
fn cve_2024_21626_exec_cwd_through_leaked_fd() {
    let env = TestEnv::new("cve21626-exec");
    let mut c = env.container();
    c.set_args(["sleep", "1000"]);
    c.create_and_start();
    for n in 3..10 {
        let (_dir, f) = leaked_host_dir(&env, &format!("leak{n}"));
        let cwd = format!("/proc/self/fd/{n}");
        let out = c
            .exec_cmd(
                &["--cwd", &cwd],
                &[
                    "sh",
                    "-c",
                    "readlink /proc/self/cwd; cat host-marker 2>/dev/null; true",
                ],
            )
            .leak_fd(f, n)
            .run();
        if out.success() {
            let got = out.stdout.lines().next().unwrap_or("");
            assert!(
                got.starts_with('/') && !got.contains("unreachable"),
                "fd {n}: cwd outside the container: {out}"
            );
            assert!(!out.stdout.contains("HOST SECRET"), "fd {n}: {out}");
        }
    }
    // The container is unharmed.
    c.exec(&[], &["true"]).ok();
}

#[test]
fn cve_2024_21626_no_runtime_fd_reaches_the_container() {
    let env = TestEnv::new("cve21626-fds");
    // `ls /proc/self/fd` shows what ls inherited plus its own directory fd (the highest).
    let mut c = env.container();
    c.set_args(["ls", "/proc/self/fd"]);
    let (_d1, f1) = leaked_host_dir(&env, "l1");
    let (_d2, f2) = leaked_host_dir(&env, "l2");
    let out = c.run_cmd(&[]).leak_fd(f1, 5).leak_fd(f2, 8).run();
    out.ok();
    assert_eq!(words(&out.stdout), ["0", "1", "2", "3"], "run: {out}");

    let (_r, w) = pipe();
    let (_d3, f3) = leaked_host_dir(&env, "l3");
    let out = c
        .run_cmd(&["--preserve-fds", "1"])
        .pass_fd(w)
        .leak_fd(f3, 7)
        .run();
    out.ok();
    assert_eq!(
        words(&out.stdout),
        ["0", "1", "2", "3", "4"],
        "run --preserve-fds 1: {out}"
    );

    let mut c = env.container();
    c.set_args(["sleep", "1000"]);
    let (_d4, f4) = leaked_host_dir(&env, "l4");
    c.create_cmd(&[]).leak_fd(f4, 6).run().ok();
    c.start().ok();
    c.wait_status("running", T10);
    let out = c.exec(&[], &["ls", "/proc/1/fd"]);
    out.ok();
    assert_eq!(words(&out.stdout), ["0", "1", "2"], "init: {out}");
    let (_d5, f5) = leaked_host_dir(&env, "l5");
    let out = c
        .exec_cmd(&[], &["ls", "/proc/self/fd"])
        .leak_fd(f5, 4)
        .run();
    out.ok();
    assert_eq!(words(&out.stdout), ["0", "1", "2", "3"], "exec: {out}");
}

fn words(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.split_whitespace().collect();
    v.sort_by_key(|w| w.parse::<u32>().unwrap_or(u32::MAX));
    v
}

// ---------------------------------------------------------------------------------------
// CVE-2021-30465: symlinks at mount destinations
// ---------------------------------------------------------------------------------------

/// `rootfs/mnt/evil` is a symlink that, followed on the host, leads to a host directory;
/// followed inside the root it leads to the same path inside the rootfs. A bind mount on
/// `/mnt/evil` must land at the in-root path.
#[test]
fn cve_2021_30465_symlinked_mount_destination_stays_in_root() {
    let env = TestEnv::new("cve30465");
    let host_target = env.mkdir("host-target");
    fs::write(host_target.join("host-file"), "host\n").unwrap();
    let source = env.mkdir("bind-source");
    fs::write(source.join("marker"), "from the bind source\n").unwrap();
    let mut c = env.container();
    let rootfs = c.rootfs();
    let in_root = rootfs.join(host_target.strip_prefix("/").unwrap());
    fs::create_dir_all(&in_root).unwrap();
    let ups = "../".repeat(20);
    let rel = format!("{ups}{}", host_target.strip_prefix("/").unwrap().display());
    symlink(&rel, rootfs.join("mnt/evil")).unwrap();
    symlink("/", rootfs.join("mnt/root")).unwrap();
    c.add_mount(json!({
        "destination": "/mnt/evil", "type": "bind",
        "source": source.display().to_string(), "options": ["rbind", "ro"]
    }));
    c.add_mount(json!({
        "destination": "/mnt/root/mnt/tmpfs-here", "type": "tmpfs", "source": "tmpfs",
        "options": ["size=1m"]
    }));
    let target = host_target.display().to_string();
    c.sh(&format!(
        "cat {target}/marker; grep -E ' {target} | /mnt/tmpfs-here ' /proc/self/mountinfo | cut -d' ' -f5"
    ));
    let before = host_mount_points();
    let out = c.run();
    out.ok();
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["from the bind source", target.as_str(), "/mnt/tmpfs-here"],
        "the mounts must be at the in-root paths: {out}"
    );
    assert_eq!(
        fs::read_dir(&host_target).unwrap().count(),
        1,
        "the host directory is untouched"
    );
    assert_no_new_host_mounts(&before, &env);
}

/// A host thread swaps a directory and a symlink (to a host directory) at a bind mount's
/// destination while containers are created over and over: the bind source must show up
/// inside the container every time (or the create fail), never elsewhere.
#[test]
fn cve_2021_30465_symlink_race_on_mount_destination() {
    let env = TestEnv::new("cve30465-race");
    let host_target = env.mkdir("host-target");
    let source = env.mkdir("bind-source");
    fs::write(source.join("marker"), "M\n").unwrap();
    let mut c = env.container();
    let rootfs = c.rootfs();
    let in_root = rootfs.join(host_target.strip_prefix("/").unwrap());
    fs::create_dir_all(&in_root).unwrap();
    let dest = rootfs.join("mnt/race");
    let alt = rootfs.join("mnt/race-link");
    fs::create_dir(&dest).unwrap();
    let ups = "../".repeat(20);
    symlink(
        format!("{ups}{}", host_target.strip_prefix("/").unwrap().display()),
        &alt,
    )
    .unwrap();
    c.add_mount(json!({
        "destination": "/mnt/race", "type": "bind",
        "source": source.display().to_string(), "options": ["rbind", "ro"]
    }));
    // The swapping goes on while the container runs, so look for the bind mount in the
    // container's mount table (field 4 is the source's path in its filesystem): whatever
    // name its directory has now, it is inside the root.
    c.sh("grep -q '/bind-source ' /proc/self/mountinfo && echo M; true");
    c.save().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let (a, b) = (
            std::ffi::CString::new(dest.display().to_string()).unwrap(),
            std::ffi::CString::new(alt.display().to_string()).unwrap(),
        );
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: renameat2 with two valid C strings.
                let r = unsafe {
                    libc::renameat2(
                        libc::AT_FDCWD,
                        a.as_ptr(),
                        libc::AT_FDCWD,
                        b.as_ptr(),
                        libc::RENAME_EXCHANGE,
                    )
                };
                if r == 0 {
                    swaps += 1;
                }
            }
            swaps
        })
    };
    let before = host_mount_points();
    let (mut ok, mut failed) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut i = 0;
    while Instant::now() < deadline && i < 40 {
        i += 1;
        let out = env
            .cmd([
                "run",
                "--bundle",
                &c.path().display().to_string(),
                &format!("{}-{i}", c.id),
            ])
            .run();
        let _ = env.rt(["delete", "--force", &format!("{}-{i}", c.id)]);
        if out.success() {
            ok += 1;
            assert_eq!(
                out.stdout.trim(),
                "M",
                "run {i}: the bind mount went elsewhere: {out}"
            );
        } else {
            failed += 1;
        }
        assert_no_new_host_mounts(&before, &env);
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!("{ok} runs saw the mount, {failed} failed, {swaps} swaps");
    assert!(swaps > 0, "the race never ran");
    assert_eq!(
        fs::read_dir(&host_target).unwrap().count(),
        0,
        "the host directory is untouched"
    );
}

// ---------------------------------------------------------------------------------------
// masked paths and /dev/null (CVE-2025-31133 class)
// ---------------------------------------------------------------------------------------

/// A config without the runtime's /dev tmpfs: /dev comes from the rootfs.
fn no_dev_tmpfs(c: &mut Value) {
    c["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| !m["destination"].as_str().unwrap().starts_with("/dev"));
}

fn masked_file_config(c: &mut Ctr) {
    fs::write(c.rootfs().join("etc/masked-file"), "SECRET\n").unwrap();
    let cfg = c.config_mut();
    no_dev_tmpfs(cfg);
    cfg["linux"]["maskedPaths"] = json!(["/etc/masked-file"]);
    c.sh("cat /etc/masked-file; echo end");
}

#[test]
fn masked_path_refuses_a_fake_dev_null() {
    let env = TestEnv::new("fake-null");
    // Control: with a real null device in the rootfs, the file is masked.
    let mut c = env.container();
    masked_file_config(&mut c);
    let st = fs::metadata("/dev/null").unwrap();
    let null = c.rootfs().join("dev/null");
    // SAFETY: mknod with a valid C string.
    let r = unsafe {
        let p = std::ffi::CString::new(null.display().to_string()).unwrap();
        libc::mknod(p.as_ptr(), libc::S_IFCHR | 0o666, st.rdev())
    };
    assert_eq!(r, 0, "mknod");
    let out = c.run();
    out.ok();
    assert_eq!(out.stdout.trim(), "end", "masked: {out}");

    if skip_if_runc("runc 1.1 masks with whatever /dev/null is (CVE-2025-31133)") {
        return;
    }
    // A regular file, and a symlink to a procfs file that masking would hand out
    // writable, instead of the null device: create fails.
    type MakeFake = fn(&Path);
    let fakes: [(&str, MakeFake); 2] = [
        ("regular file", |p| fs::write(p, "not null\n").unwrap()),
        ("symlink", |p| {
            symlink("/proc/sys/kernel/core_pattern", p).unwrap()
        }),
    ];
    for (what, make) in fakes {
        let mut c = env.container();
        masked_file_config(&mut c);
        make(&c.rootfs().join("dev/null"));
        let out = c.create_cmd(&[]).run();
        out.failed();
        assert!(
            out.stderr.contains("not the null device"),
            "{what} at /dev/null: {out}"
        );
        env.assert_nothing_left(&c.id, c.path());
    }
}

#[test]
fn masked_path_symlink_resolves_in_root() {
    let env = TestEnv::new("mask-link");
    let host_thing = env.dir().join("host-thing");
    fs::write(&host_thing, "HOST\n").unwrap();
    let mut c = env.container();
    let rootfs = c.rootfs();
    let in_root = rootfs.join(host_thing.strip_prefix("/").unwrap());
    fs::create_dir_all(in_root.parent().unwrap()).unwrap();
    fs::write(&in_root, "IN ROOT\n").unwrap();
    symlink(&host_thing, rootfs.join("etc/secret")).unwrap();
    fs::create_dir(rootfs.join("secret-dir")).unwrap();
    fs::write(rootfs.join("secret-dir/f"), "x").unwrap();
    symlink("../../../secret-dir", rootfs.join("etc/secret-dir")).unwrap();
    c.config_mut()["linux"]["maskedPaths"] = json!(["/etc/secret", "/etc/secret-dir"]);
    let p = host_thing.display().to_string();
    c.sh(&format!(
        "echo \"[$(cat /etc/secret)] [$(cat {p})] [$(ls /secret-dir)]\""
    ));
    let before = host_mount_points();
    let out = c.run();
    out.ok();
    assert_eq!(
        out.stdout.trim(),
        "[] [] []",
        "both masked in the root: {out}"
    );
    assert_eq!(fs::read_to_string(&host_thing).unwrap(), "HOST\n");
    assert_no_new_host_mounts(&before, &env);
}

// ---------------------------------------------------------------------------------------
// default read-only and masked /proc paths
// ---------------------------------------------------------------------------------------

#[test]
fn proc_writes_fail_under_default_readonly_paths() {
    let env = TestEnv::new("proc-ro");
    let host_hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    // Values written are the current ones: harmless even if a write got through.
    let out = env.run_sh(
        "for f in /proc/sys/kernel/hostname /proc/irq/default_smp_affinity /proc/sys/vm/overcommit_memory; do
           v=$(cat $f); (echo \"$v\" > $f) 2>/dev/null && echo \"wrote $f\" || echo \"denied $f\"
         done
         (echo > /proc/sysrq-trigger) 2>/dev/null && echo 'wrote sysrq' || echo 'denied sysrq'
         echo \"kcore=$(cat /proc/kcore 2>/dev/null | wc -c)\"
         grep -E ' /proc/(sys|sysrq-trigger|irq|bus|fs) ' /proc/self/mountinfo | cut -d' ' -f5,6 | cut -d, -f1",
        |_| {},
    );
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        &lines[..5],
        [
            "denied /proc/sys/kernel/hostname",
            "denied /proc/irq/default_smp_affinity",
            "denied /proc/sys/vm/overcommit_memory",
            "denied sysrq",
            "kcore=0",
        ],
        "{out}"
    );
    for p in [
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/proc/irq",
        "/proc/bus",
        "/proc/fs",
    ] {
        if Path::new(p).exists() {
            assert!(
                lines.contains(&format!("{p} ro").as_str()),
                "{p} read-only: {out}"
            );
        }
    }
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_hostname
    );
}

// ---------------------------------------------------------------------------------------
// user namespace: exact capabilities, no host root powers
// ---------------------------------------------------------------------------------------

fn userns(c: &mut Ctr) {
    let cfg = c.config_mut();
    cfg["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    cfg["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    cfg["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    chown_tree(&c.rootfs(), 100000, 100000);
}

#[test]
fn userns_non_root_has_exactly_the_configured_capabilities() {
    let env = TestEnv::new("userns-caps");
    let mut c = env.container();
    userns(&mut c);
    let bounding = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let rest = ["CAP_KILL", "CAP_NET_BIND_SERVICE"];
    {
        let cfg = c.config_mut();
        cfg["process"]["user"] = json!({"uid": APP_UID, "gid": APP_GID});
        cfg["process"]["capabilities"] = json!({
            "bounding": bounding, "effective": rest, "permitted": rest,
            "inheritable": rest, "ambient": rest
        });
    }
    c.sh("id -u; grep ^Cap /proc/self/status");
    let out = c.run();
    out.ok();
    assert_eq!(out.stdout.lines().next(), Some("1000"), "{out}");
    let want = |names: &[&str]| format!("{:016x}", cap_mask(names));
    for (field, names) in [
        ("CapBnd", &bounding[..]),
        ("CapEff", &rest[..]),
        ("CapPrm", &rest[..]),
        ("CapInh", &rest[..]),
        ("CapAmb", &rest[..]),
    ] {
        assert_eq!(
            status_field(&out.stdout, field),
            Some(want(names).as_str()),
            "{field}: {out}"
        );
    }
}

#[test]
fn userns_root_cannot_write_host_root_file() {
    let env = TestEnv::new("userns-host");
    let host_file = env.dir().join("host-owned");
    fs::write(&host_file, "host data\n").unwrap();
    fs::set_permissions(&host_file, fs::Permissions::from_mode(0o644)).unwrap();
    let mut c = env.container();
    userns(&mut c);
    c.add_mount(json!({
        "destination": "/host-owned", "type": "bind",
        "source": host_file.display().to_string(), "options": ["bind", "rw"]
    }));
    c.sh("id -u; stat -c '%u' /host-owned
         (echo pwned >> /host-owned) 2>/dev/null && echo wrote || echo denied
         (chmod 666 /host-owned) 2>/dev/null && echo chmod || echo no-chmod
         cat /host-owned");
    let out = c.run();
    out.ok();
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["0", "65534", "denied", "no-chmod", "host data"],
        "{out}"
    );
    let m = fs::metadata(&host_file).unwrap();
    assert_eq!(m.mode() & 0o777, 0o644);
    assert_eq!(fs::read_to_string(&host_file).unwrap(), "host data\n");
}
