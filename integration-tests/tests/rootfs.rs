//! The container's filesystem: default mounts, bind/tmpfs mounts and their options,
//! propagation, read-only root, --no-pivot, devices, masked and read-only paths,
//! sysctls, hostname and domainname. Observed from inside (mountinfo, stat, writes).

use std::fs;
use std::process::Command;
use std::time::Duration;

use integration_tests::*;

const T10: Duration = Duration::from_secs(10);

fn mount_at<'m>(ms: &'m [MountInfo], point: &str) -> &'m MountInfo {
    // The last one mounted at a point is the visible one.
    ms.iter()
        .rev()
        .find(|m| m.mount_point == point)
        .unwrap_or_else(|| panic!("no mount at {point}: {ms:#?}"))
}

fn has_opt(opts: &str, o: &str) -> bool {
    opts.split(',').any(|x| x == o)
}

fn host_mount(args: &[&str]) {
    let st = Command::new("mount").args(args).status().unwrap();
    assert!(st.success(), "mount {args:?} failed");
}

#[test]
fn default_mounts_present() {
    let env = TestEnv::new("defmounts");
    let out = env.run_sh("cat /proc/self/mountinfo", |_| {});
    out.ok();
    let ms = parse_mountinfo(&out.stdout);
    let root = mount_at(&ms, "/");
    assert!(has_opt(&root.options, "ro"), "root.readonly: {root:?}");
    let proc_ = mount_at(&ms, "/proc");
    assert_eq!(proc_.fstype, "proc");
    let sys = mount_at(&ms, "/sys");
    assert_eq!(sys.fstype, "sysfs");
    assert!(has_opt(&sys.options, "ro"), "{sys:?}");
    for o in ["nosuid", "nodev", "noexec"] {
        assert!(has_opt(&sys.options, o), "/sys lacks {o}: {sys:?}");
    }
    let dev = mount_at(&ms, "/dev");
    assert_eq!(dev.fstype, "tmpfs");
    assert!(has_opt(&dev.options, "nosuid"), "{dev:?}");
    assert!(has_opt(&dev.super_options, "mode=755"), "{dev:?}");
    let pts = mount_at(&ms, "/dev/pts");
    assert_eq!(pts.fstype, "devpts");
    assert!(has_opt(&pts.super_options, "ptmxmode=666"), "{pts:?}");
    assert!(has_opt(&pts.super_options, "gid=5"), "{pts:?}");
    let shm = mount_at(&ms, "/dev/shm");
    assert_eq!(shm.fstype, "tmpfs");
    for o in ["nosuid", "nodev", "noexec"] {
        assert!(has_opt(&shm.options, o), "/dev/shm lacks {o}: {shm:?}");
    }
    assert!(has_opt(&shm.super_options, "size=65536k"), "{shm:?}");
    let mq = mount_at(&ms, "/dev/mqueue");
    assert_eq!(mq.fstype, "mqueue");
    // None of the host's mounts of the test's temp dir are visible inside.
    for m in &ms {
        assert!(
            !m.mount_point.starts_with("/tmp/rrun-it"),
            "host path visible: {m:?}"
        );
    }
}

#[test]
fn bind_mounts_ro_and_rbind() {
    let env = TestEnv::new("bindmounts");
    let src = env.mkdir("src");
    fs::write(src.join("hello"), "hello from host\n").unwrap();
    let sub = env.mkdir("src/sub");
    host_mount(&["-t", "tmpfs", "tmpfs", &sub.display().to_string()]);
    fs::write(sub.join("deep"), "submount\n").unwrap();

    let mut c = env.container();
    for (dest, opts) in [
        ("/ro", json!(["bind", "ro"])),
        ("/rbind", json!(["rbind", "rw"])),
        ("/plain", json!(["bind"])),
    ] {
        c.add_mount(json!({"destination": dest, "type": "bind",
                           "source": src.display().to_string(), "options": opts}));
    }
    c.sh("cat /ro/hello; \
          if echo x > /ro/new 2>/dev/null; then echo ro-writable; else echo ro-denied; fi; \
          cat /rbind/sub/deep; \
          if [ -e /plain/sub/deep ]; then echo plain-has-submount; else echo plain-no-submount; fi; \
          echo w > /rbind/written; \
          cat /proc/self/mountinfo");
    let out = c.run();
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    // (mountinfo follows these)
    assert_eq!(
        lines[..4],
        [
            "hello from host",
            "ro-denied",
            "submount",
            "plain-no-submount"
        ],
        "{out}"
    );
    assert_eq!(fs::read_to_string(src.join("written")).unwrap(), "w\n");
    assert!(!src.join("new").exists());
    let ms = parse_mountinfo(&out.stdout);
    assert!(has_opt(&mount_at(&ms, "/ro").options, "ro"));
    assert!(has_opt(&mount_at(&ms, "/rbind").options, "rw"));
    assert_eq!(mount_at(&ms, "/rbind/sub").fstype, "tmpfs");
    assert!(ms.iter().all(|m| m.mount_point != "/plain/sub"));
}

#[test]
fn tmpfs_size_and_mode() {
    let env = TestEnv::new("tmpfs");
    let out = env.run_sh(
        "stat -c '%a' /scratch; \
         dd if=/dev/zero of=/scratch/f bs=1k count=2048 2>/dev/null && echo fits || echo full; \
         cat /proc/self/mountinfo",
        |c| {
            c["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "size=1m", "mode=0710"]
            }));
        },
    );
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "710", "{out}");
    assert_eq!(lines[1], "full", "size=1m not enforced: {out}");
    let ms = parse_mountinfo(&out.stdout);
    let m = mount_at(&ms, "/scratch");
    assert_eq!(m.fstype, "tmpfs");
    assert!(has_opt(&m.super_options, "size=1024k"), "{m:?}");
    assert!(has_opt(&m.options, "nosuid") && has_opt(&m.options, "nodev"));
}

#[test]
fn mount_propagation_options() {
    let env = TestEnv::new("propagation");
    // A shared host mount point to bind into the container.
    let hs = env.mkdir("hostshared");
    let hs_s = hs.display().to_string();
    host_mount(&["--bind", &hs_s, &hs_s]);
    host_mount(&["--make-shared", &hs_s]);
    let hp = env.mkdir("hostplain");

    let mut c = env.container();
    let shared = c.share_dir("/shared");
    for (dest, src, opt) in [
        ("/slave", &hs, "rslave"),
        ("/private", &hs, "rprivate"),
        ("/sharedmnt", &hp, "rshared"),
    ] {
        c.add_mount(json!({"destination": dest, "type": "bind",
                           "source": src.display().to_string(), "options": ["rbind", opt]}));
    }
    c.sh(
        "touch /shared/ready; while [ ! -e /shared/go ]; do sleep 0.02; done; \
          cat /proc/self/mountinfo",
    );
    let running = c.run_cmd(&[]).spawn();
    c.wait_for_file(&shared.join("ready"), T10);
    // Mount below the shared host dir after the container started.
    let sub = env.mkdir("hostshared/sub");
    host_mount(&["-t", "tmpfs", "tmpfs", &sub.display().to_string()]);
    fs::write(shared.join("go"), "").unwrap();
    let out = running.wait();
    out.ok();
    let ms = parse_mountinfo(&out.stdout);
    assert!(
        mount_at(&ms, "/slave").optional.contains("master:"),
        "rslave: {:?}",
        mount_at(&ms, "/slave")
    );
    assert!(
        ms.iter().any(|m| m.mount_point == "/slave/sub"),
        "host mount did not propagate into the rslave mount:\n{}",
        out.stdout
    );
    assert!(
        !ms.iter().any(|m| m.mount_point == "/private/sub"),
        "host mount propagated into an rprivate mount"
    );
    assert!(mount_at(&ms, "/private").optional.is_empty());
    assert!(
        mount_at(&ms, "/sharedmnt").optional.contains("shared:"),
        "{:?}",
        mount_at(&ms, "/sharedmnt")
    );
}

#[test]
fn rootfs_propagation_private() {
    let env = TestEnv::new("rootprop");
    let out = env.run_sh("cat /proc/self/mountinfo", |c| {
        c["linux"]["rootfsPropagation"] = "private".into();
    });
    out.ok();
    let ms = parse_mountinfo(&out.stdout);
    assert!(
        mount_at(&ms, "/").optional.is_empty(),
        "{:?}",
        mount_at(&ms, "/")
    );

    let out = env.run_sh("true", |c| {
        c["linux"]["rootfsPropagation"] = "sideways".into();
    });
    out.failed();
    assert!(
        out.stderr.contains("sideways") || out.stderr.contains("ropagation"),
        "{out}"
    );
}

#[test]
fn rootfs_propagation_shared() {
    if skip_if_runc(
        "runc 1.1.5 applies rootfsPropagation before pivot_root and then makes the rootfs \
         parent private, so / is never shared inside (fixed in runc 1.2)",
    ) {
        return;
    }
    let env = TestEnv::new("rootpropsh");
    let out = env.run_sh("cat /proc/self/mountinfo", |c| {
        c["linux"]["rootfsPropagation"] = "shared".into();
    });
    out.ok();
    let ms = parse_mountinfo(&out.stdout);
    assert!(
        mount_at(&ms, "/").optional.contains("shared:"),
        "{:?}",
        mount_at(&ms, "/")
    );
}

#[test]
fn readonly_root() {
    let env = TestEnv::new("roroot");
    let script = "if touch /newfile 2>/dev/null; then echo writable; else echo readonly; fi; \
                  if touch /dev/shm/x; then echo shm-ok; fi";
    let out = env.run_sh(script, |c| c["root"]["readonly"] = true.into());
    out.ok();
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["readonly", "shm-ok"]
    );
    let mut c = env.container();
    c.sh(script);
    c.config_mut()["root"]["readonly"] = false.into();
    let out = c.run();
    out.ok();
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["writable", "shm-ok"]
    );
    assert!(c.rootfs().join("newfile").exists());
}

#[test]
fn no_pivot() {
    let env = TestEnv::new("nopivot");
    let mut c = env.container();
    c.sh("ls /; [ -e /work ] && echo host-visible; cat /proc/self/mountinfo");
    let out = c.run_cmd(&["--no-pivot"]).run();
    out.ok();
    assert!(!out.stdout.contains("host-visible"), "{out}");
    let ls: Vec<&str> = out
        .stdout
        .lines()
        .take_while(|l| !l.contains(' '))
        .collect();
    for d in ["bin", "dev", "etc", "proc", "sys", "tmp"] {
        assert!(ls.contains(&d), "{d} missing from / : {ls:?}");
    }
    let ms = parse_mountinfo(&out.stdout);
    assert_eq!(mount_at(&ms, "/proc").fstype, "proc");
}

#[test]
fn default_devices() {
    let env = TestEnv::new("devices");
    let out = env.run_sh(
        "for d in null zero full random urandom tty; do stat -c '%n %F %t:%T %a' /dev/$d; done; \
         for l in fd stdin stdout stderr ptmx; do echo /dev/$l $(readlink /dev/$l); done; \
         echo data > /dev/null && echo null-ok; \
         head -c 4 /dev/zero | od -An -tx1; \
         head -c 16 /dev/urandom | wc -c",
        |_| {},
    );
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().map(str::trim).collect();
    let want_devs = [
        ("null", "1:3"),
        ("zero", "1:5"),
        ("full", "1:7"),
        ("random", "1:8"),
        ("urandom", "1:9"),
        ("tty", "5:0"),
    ];
    for (i, (name, mm)) in want_devs.iter().enumerate() {
        assert_eq!(
            lines[i],
            format!("/dev/{name} character special file {mm} 666"),
            "{out}"
        );
    }
    assert_eq!(
        lines[6..11],
        [
            "/dev/fd /proc/self/fd",
            "/dev/stdin /proc/self/fd/0",
            "/dev/stdout /proc/self/fd/1",
            "/dev/stderr /proc/self/fd/2",
            "/dev/ptmx pts/ptmx",
        ],
        "{out}"
    );
    assert_eq!(lines[11..], ["null-ok", "00 00 00 00", "16"], "{out}");
}

#[test]
fn configured_device() {
    let env = TestEnv::new("mydevice");
    let out = env.run_sh(
        "stat -c '%n %F %t:%T %a %u:%g' /dev/mynull; echo x > /dev/mynull && echo write-ok",
        |c| {
            // The owner (not root: it lacks CAP_DAC_OVERRIDE) may write it.
            c["process"]["user"] = json!({"uid": APP_UID, "gid": APP_GID});
            c["linux"]["devices"] = json!([{
                "path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                "fileMode": 0o640, "uid": APP_UID, "gid": EXTRA_GID
            }]);
            c["linux"]["resources"]["devices"]
                .as_array_mut()
                .unwrap()
                .push(json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}));
        },
    );
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("/dev/mynull character special file 1:3 640 {APP_UID}:{EXTRA_GID}").as_str(),
            "write-ok"
        ],
        "{out}"
    );
}

#[test]
fn masked_paths() {
    let env = TestEnv::new("masked");
    let mut c = env.container();
    fs::write(c.rootfs().join("etc/secret"), "top secret\n").unwrap();
    fs::create_dir(c.rootfs().join("secretdir")).unwrap();
    fs::write(c.rootfs().join("secretdir/a"), "a").unwrap();
    let defaults: Vec<String> = c.config()["linux"]["maskedPaths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    c.config_mut()["linux"]["maskedPaths"]
        .as_array_mut()
        .unwrap()
        .extend([
            json!("/etc/secret"),
            json!("/secretdir"),
            json!("/does/not/exist"),
        ]);
    let mut script = String::from(
        "echo secret=$(wc -c < /etc/secret); echo secretdir=$(ls -A /secretdir | wc -l); \
         if echo x > /secretdir/b 2>/dev/null; then echo dir-writable; fi; ",
    );
    for p in &defaults {
        script.push_str(&format!(
            "if [ -d {p} ]; then echo {p}=$(ls -A {p} | wc -l); \
             elif [ -e {p} ]; then echo {p}=$(cat {p} | wc -c); fi; "
        ));
    }
    c.sh(&script);
    let out = c.run();
    out.ok();
    for l in out.stdout.lines() {
        let (k, v) = l
            .split_once('=')
            .unwrap_or_else(|| panic!("odd line {l:?}: {out}"));
        assert_eq!(v.trim(), "0", "{k} is not masked: {out}");
    }
    let seen: Vec<&str> = out.stdout.lines().collect();
    assert!(seen.len() >= 2, "{out}");
    // At least the masked paths that exist on this host's /proc were checked.
    for p in ["/proc/keys", "/proc/timer_list", "/proc/acpi"] {
        if std::path::Path::new(p).exists() {
            assert!(
                seen.iter().any(|l| l.starts_with(&format!("{p}="))),
                "{p} not seen: {out}"
            );
        }
    }
}

#[test]
fn readonly_paths() {
    let env = TestEnv::new("ropaths");
    // Even with CAP_SYS_ADMIN, the read-only paths must not be writable.
    let out = env.run_sh(
        "if echo changed > /proc/sys/kernel/hostname 2>/dev/null; then echo sys-writable; fi; \
         if echo h > /proc/sysrq-trigger 2>/dev/null; then echo sysrq-writable; fi; \
         hostname via-syscall && hostname; \
         cat /proc/self/mountinfo",
        |c| {
            for set in ["bounding", "effective", "permitted"] {
                c["process"]["capabilities"][set]
                    .as_array_mut()
                    .unwrap()
                    .push("CAP_SYS_ADMIN".into());
            }
        },
    );
    out.ok();
    let mut lines = out.stdout.lines();
    assert_eq!(lines.next(), Some("via-syscall"), "{out}");
    let ms = parse_mountinfo(&out.stdout);
    for p in [
        "/proc/sys",
        "/proc/sysrq-trigger",
        "/proc/bus",
        "/proc/irq",
        "/proc/fs",
    ] {
        if std::path::Path::new(p).exists() {
            assert!(has_opt(&mount_at(&ms, p).options, "ro"), "{p} not ro");
        }
    }
}

#[test]
fn sysctls() {
    let env = TestEnv::new("sysctl");
    let host_fwd = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let host_rmid = fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap();
    let out = env.run_sh(
        "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced",
        |c| {
            c["linux"]["sysctl"] = json!({
                "net.ipv4.ip_forward": "1",
                "kernel.shm_rmid_forced": "1"
            });
        },
    );
    out.ok();
    assert_eq!(out.stdout.lines().collect::<Vec<_>>(), ["1", "1"], "{out}");
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_fwd
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/shm_rmid_forced").unwrap(),
        host_rmid
    );
    // A sysctl of a namespace the container does not have is refused.
    let out = env.run_sh("true", |c| {
        c["linux"]["sysctl"] = json!({"kernel.shm_rmid_forced": "1"});
        c["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .retain(|n| n["type"] != "ipc");
    });
    out.failed();
}

#[test]
fn hostname() {
    let env = TestEnv::new("hostname");
    let host_hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let out = env.run_sh("hostname; cat /proc/sys/kernel/hostname", |c| {
        c["hostname"] = "box-1".into();
    });
    out.ok();
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["box-1", "box-1"],
        "{out}"
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/hostname").unwrap(),
        host_hostname
    );
}

#[test]
fn domainname() {
    if skip_if_runc("runc 1.1 ignores `domainname` (supported from runc 1.2)") {
        return;
    }
    let env = TestEnv::new("domainname");
    let host = fs::read_to_string("/proc/sys/kernel/domainname").unwrap();
    let out = env.run_sh(
        "cat /proc/sys/kernel/hostname /proc/sys/kernel/domainname",
        |c| {
            c["hostname"] = "box-2".into();
            c["domainname"] = "example.org".into();
        },
    );
    out.ok();
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ["box-2", "example.org"],
        "{out}"
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/domainname").unwrap(),
        host
    );
}

/// Every `rootfsPropagation`, read back from the container's own mountinfo: `/` gets the
/// requested propagation, applied after `pivot_root` (the set-up runs under rslave when an
/// unbindable `/` could not be bound). runc 1.1 refuses the unbindable forms with EINVAL
/// (it applies them before binding the rootfs) and never leaves `/` shared (it makes the
/// rootfs parent private afterwards): those are checked as runc's own behaviour.
#[test]
fn rootfs_propagation_every_value() {
    let env = TestEnv::new("rootpropall");
    for p in [
        "shared",
        "slave",
        "private",
        "unbindable",
        "rshared",
        "rslave",
        "rprivate",
        "runbindable",
    ] {
        let out = env.run_sh("cat /proc/self/mountinfo", |c| {
            c["linux"]["rootfsPropagation"] = p.into();
        });
        let unbindable = p.ends_with("unbindable");
        if is_runc() && unbindable {
            out.failed();
            assert!(out.stderr.contains("invalid argument"), "{p}: {out}");
            continue;
        }
        out.ok();
        let ms = parse_mountinfo(&out.stdout);
        let root = &mount_at(&ms, "/").optional;
        let fields: Vec<&str> = root.split_whitespace().collect();
        let shared = fields.iter().any(|f| f.starts_with("shared:"));
        let slave = fields.iter().any(|f| f.starts_with("master:"));
        let unb = fields.contains(&"unbindable");
        match p.trim_start_matches('r') {
            "shared" if !is_runc() => assert!(shared && !unb, "{p}: / is {root:?}"),
            "shared" => assert!(!unb, "{p}: / is {root:?}"),
            "slave" => assert!(!shared && !unb, "{p}: / is {root:?}"),
            "private" => assert!(fields.is_empty(), "{p}: / is {root:?}"),
            "unbindable" => assert!(unb && !shared && !slave, "{p}: / is {root:?}"),
            other => unreachable!("{other}"),
        }
    }
}
