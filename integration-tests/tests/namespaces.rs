//! Namespaces, observed from inside: `readlink /proc/self/ns/*` compared with the host's
//! (the test process's, which the runtime inherits).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::*;

const T10: Duration = Duration::from_secs(10);

/// `readlink /proc/self/ns/<kind>` for each kind, inside the container, as a map.
fn ns_script(kinds: &[&str]) -> String {
    let mut s = String::new();
    for k in kinds {
        s.push_str(&format!("echo {k}=$(readlink /proc/self/ns/{k}); "));
    }
    s
}

fn parse_ns(stdout: &str) -> BTreeMap<String, String> {
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn set_namespaces(c: &mut Value, ns: Value) {
    c["linux"]["namespaces"] = ns;
}

fn host_has_ns(kind: &str) -> bool {
    Path::new(&format!("/proc/self/ns/{kind}")).exists()
}

#[test]
fn new_namespaces_differ_from_host() {
    let env = TestEnv::new("nsnew");
    let kinds = ["pid", "net", "mnt", "uts", "ipc", "cgroup"];
    let out = env.run_sh(&format!("{} echo pid1=$$", ns_script(&kinds)), |c| {
        set_namespaces(
            c,
            json!([{"type": "pid"}, {"type": "network"}, {"type": "mount"},
                   {"type": "uts"}, {"type": "ipc"}, {"type": "cgroup"}]),
        );
    });
    out.ok();
    let got = parse_ns(&out.stdout);
    for k in kinds {
        let inside = got.get(k).unwrap_or_else(|| panic!("no {k} in {out}"));
        assert!(inside.starts_with(&format!("{k}:[")), "{k}: {inside}");
        assert_ne!(*inside, host_ns(k), "{k} namespace is the host's");
    }
    assert_eq!(
        got["pid1"], "1",
        "the process is pid 1 in its pid namespace"
    );
    // No user namespace was asked for.
    let out = env.run_sh(&ns_script(&["user"]), |_| {});
    out.ok();
    assert_eq!(parse_ns(&out.stdout)["user"], host_ns("user"));
}

#[test]
fn time_namespace() {
    if !host_has_ns("time") {
        eprintln!("SKIPPED: the kernel has no time namespace");
        return;
    }
    if skip_if_runc("runc 1.1 does not support the time namespace (added in runc 1.2)") {
        return;
    }
    let env = TestEnv::new("nstime");
    let year = 365 * 24 * 3600u64;
    let out = env.run_sh(
        &format!("{} cut -d' ' -f1 /proc/uptime", ns_script(&["time"])),
        |c| {
            c["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "time"}));
            c["linux"]["timeOffsets"] = json!({
                "monotonic": {"secs": year, "nanosecs": 0},
                "boottime": {"secs": year, "nanosecs": 0}
            });
        },
    );
    out.ok();
    let got = parse_ns(&out.stdout);
    assert_ne!(got["time"], host_ns("time"));
    let uptime: f64 = out
        .stdout
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .expect("uptime");
    assert!(
        uptime >= year as f64,
        "boottime offset not applied: uptime {uptime}"
    );
}

#[test]
fn unlisted_namespaces_are_shared_with_host() {
    let env = TestEnv::new("nsshared");
    let kinds = ["pid", "net", "uts", "ipc", "cgroup", "user", "mnt"];
    let out = env.run_sh(&ns_script(&kinds), |c| {
        set_namespaces(c, json!([{"type": "mount"}]));
        c.as_object_mut().unwrap().remove("hostname");
    });
    out.ok();
    let got = parse_ns(&out.stdout);
    for k in ["pid", "net", "uts", "ipc", "cgroup", "user"] {
        assert_eq!(got[k], host_ns(k), "{k} should be shared with the host");
    }
    assert_ne!(got["mnt"], host_ns("mnt"));
}

/// `"net:[<inode>]"` for an nsfs file.
fn ns_link_of(kind: &str, file: &Path) -> String {
    format!("{kind}:[{}]", fs::metadata(file).unwrap().ino())
}

#[test]
fn join_namespace_by_path() {
    let env = TestEnv::new("nsjoin");
    // A network namespace bound to a file (in the test's temp dir; the guard unmounts it).
    let nsfile = env.dir().join("netns");
    fs::write(&nsfile, "").unwrap();
    let st = Command::new("unshare")
        .arg(format!("--net={}", nsfile.display()))
        .arg("true")
        .status()
        .expect("running unshare");
    assert!(st.success(), "unshare --net=FILE failed");
    let want_net = ns_link_of("net", &nsfile);
    assert_ne!(want_net, host_ns("net"));

    // Another container's namespaces, by /proc/PID/ns/*.
    let mut a = env.container();
    a.set_args(["sleep", "1000"]);
    a.config_mut()["hostname"] = "container-a".into();
    a.create_and_start();
    let apid = a.pid();
    let a_ns = |k: &str| {
        fs::read_link(format!("/proc/{apid}/ns/{k}"))
            .unwrap()
            .display()
            .to_string()
    };

    let out = env.run_sh(
        &format!(
            "{} hostname; tr '\\0' ' ' < /proc/1/cmdline",
            ns_script(&["net", "ipc", "uts", "pid"])
        ),
        |c| {
            c.as_object_mut().unwrap().remove("hostname");
            set_namespaces(
                c,
                json!([
                    {"type": "mount"},
                    {"type": "network", "path": nsfile.display().to_string()},
                    {"type": "ipc", "path": format!("/proc/{apid}/ns/ipc")},
                    {"type": "uts", "path": format!("/proc/{apid}/ns/uts")},
                    {"type": "pid", "path": format!("/proc/{apid}/ns/pid")}
                ]),
            );
        },
    );
    out.ok();
    let got = parse_ns(&out.stdout);
    assert_eq!(got["net"], want_net, "{out}");
    assert_eq!(got["ipc"], a_ns("ipc"), "{out}");
    assert_eq!(got["uts"], a_ns("uts"), "{out}");
    assert_eq!(got["pid"], a_ns("pid"), "{out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let n = lines.len();
    assert_eq!(
        lines[n - 2],
        "container-a",
        "joined uts shows A's hostname: {out}"
    );
    assert_eq!(
        lines[n - 1].trim(),
        "sleep 1000",
        "A's sleep is pid 1 in the joined pid namespace in the joined pid namespace: {out}"
    );
}

#[test]
fn user_namespace_mappings() {
    let env = TestEnv::new("nsuser");
    let mut c = env.container();
    let shared = c.share_dir("/shared");
    c.sh(&format!(
        "{} cat /proc/self/uid_map /proc/self/gid_map; id -u; id -g; \
         touch /shared/byroot; touch /shared/byapp; chown 1000:2000 /shared/byapp",
        ns_script(&["user"])
    ));
    {
        let cfg = c.config_mut();
        cfg["linux"]["namespaces"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "user"}));
        cfg["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        cfg["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        for set in ["bounding", "effective", "permitted"] {
            cfg["process"]["capabilities"][set]
                .as_array_mut()
                .unwrap()
                .push("CAP_CHOWN".into());
        }
    }
    // The container's root must own its rootfs to create mount points in it.
    chown_tree(&c.rootfs(), 100000, 100000);
    let out = c.run();
    out.ok();
    let got = parse_ns(&out.stdout);
    assert_ne!(got["user"], host_ns("user"));
    let lines: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines[0], ["0", "100000", "65536"], "uid_map: {out}");
    assert_eq!(lines[1], ["0", "100000", "65536"], "gid_map: {out}");
    assert_eq!(lines[2], ["0"], "id -u: {out}");
    assert_eq!(lines[3], ["0"], "id -g: {out}");
    let m = fs::metadata(shared.join("byroot")).unwrap();
    assert_eq!((m.uid(), m.gid()), (100000, 100000));
    let m = fs::metadata(shared.join("byapp")).unwrap();
    assert_eq!((m.uid(), m.gid()), (101000, 102000));
    let _ = T10;
}
