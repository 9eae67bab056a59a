use super::features::SECCOMP_ACTIONS;
use super::validate::check_oci_version;
use super::*;
use nix::sys::signal::Signal;
use oci_spec::runtime::Features;
use serde_json::{json, Value};

/// A bundle directory with an empty `rootfs/` and the default spec in `config.json`.
struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("rootfs")).unwrap();
        Bundle { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn write(&self, text: &str) {
        fs::write(self.path().join(CONFIG_FILE), text).unwrap();
    }
}

/// Validates the default spec after `edit` changed its JSON form.
fn check(edit: impl FnOnce(&mut Value)) -> Result<(), SpecError> {
    let bundle = Bundle::new();
    let mut v = serde_json::to_value(default_spec()).unwrap();
    edit(&mut v);
    let spec: Spec = serde_json::from_value(v).expect("edited spec still parses");
    validate(&spec, bundle.path())
}

/// Asserts a validation failure that names `field` and says `words`.
fn rejects(result: Result<(), SpecError>, field: &str, words: &str) {
    match result {
        Err(SpecError::Invalid { field: f, reason }) => {
            assert_eq!(f, field, "wrong field (reason: {reason})");
            assert!(reason.contains(words), "reason {reason:?} lacks {words:?}");
        }
        other => panic!("expected an Invalid error on {field}, got {other:?}"),
    }
}

fn add_ns(v: &mut Value, typ: &str, path: Option<&str>) {
    let mut ns = json!({ "type": typ });
    if let Some(p) = path {
        ns["path"] = json!(p);
    }
    v["linux"]["namespaces"].as_array_mut().unwrap().push(ns);
}

fn remove_ns(v: &mut Value, typ: &str) {
    v["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .retain(|ns| ns["type"] != typ);
}

#[test]
fn default_spec_is_valid() {
    check(|_| {}).unwrap();
}

// ---- loading ----

#[test]
fn load_bundle_reads_a_valid_config() {
    let bundle = Bundle::new();
    bundle.write(&serde_json::to_string(&default_spec()).unwrap());
    let spec = load_bundle(bundle.path()).unwrap();
    assert_eq!(spec, default_spec());
}

#[test]
fn load_bundle_without_config() {
    let bundle = Bundle::new();
    let err = load_bundle(bundle.path()).unwrap_err();
    assert!(matches!(err, SpecError::MissingConfig { .. }), "{err:?}");
    assert!(err.to_string().contains("config.json"), "{err}");
}

#[test]
fn load_bundle_unreadable_config() {
    let bundle = Bundle::new();
    fs::create_dir(bundle.path().join(CONFIG_FILE)).unwrap(); // a directory: EISDIR
    let err = load_bundle(bundle.path()).unwrap_err();
    assert!(matches!(err, SpecError::Read { .. }), "{err:?}");
}

#[test]
fn load_bundle_malformed_json_names_line_and_column() {
    let bundle = Bundle::new();
    bundle.write("{\n  \"ociVersion\": \"1.2.0\",\n  \"root\": \n}");
    let err = load_bundle(bundle.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SpecError::Parse { .. }), "{err:?}");
    assert!(
        msg.contains("config.json") && msg.contains("line 4"),
        "{msg}"
    );
}

#[test]
fn load_bundle_drops_unknown_capabilities() {
    let bundle = Bundle::new();
    let mut v = serde_json::to_value(default_spec()).unwrap();
    v["process"]["capabilities"]["bounding"] = json!(["CAP_MAKE_COFFEE", "CAP_KILL"]);
    bundle.write(&serde_json::to_string_pretty(&v).unwrap());
    let spec = load_bundle(bundle.path()).unwrap();
    let caps = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .as_ref()
        .unwrap();
    let bounding: Vec<_> = caps.bounding().iter().flatten().collect();
    assert_eq!(bounding, [&Capability::Kill]);
}

#[test]
fn load_bundle_unknown_capability_does_not_hide_other_errors() {
    let bundle = Bundle::new();
    let mut v = serde_json::to_value(default_spec()).unwrap();
    v["process"]["capabilities"]["bounding"] = json!(["CAP_MAKE_COFFEE"]);
    v["linux"]["namespaces"][0]["type"] = json!("bogus");
    bundle.write(&serde_json::to_string_pretty(&v).unwrap());
    let err = load_bundle(bundle.path()).unwrap_err();
    assert!(matches!(err, SpecError::Parse { .. }), "{err:?}");
    assert!(err.to_string().contains("bogus"), "{err}");
}

#[test]
fn load_bundle_validates() {
    let bundle = Bundle::new();
    let mut v = serde_json::to_value(default_spec()).unwrap();
    v["process"]["cwd"] = json!("relative");
    bundle.write(&v.to_string());
    rejects(
        load_bundle(bundle.path()).map(|_| ()),
        "process.cwd",
        "absolute",
    );
}

#[test]
fn load_process_checks_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("process.json");
    fs::write(&path, r#"{"user":{"uid":0,"gid":0},"args":[],"cwd":"/"}"#).unwrap();
    rejects(load_process(&path).map(|_| ()), "process.args", "empty");
    fs::write(
        &path,
        r#"{"user":{"uid":0,"gid":0},"args":["true"],"cwd":"/"}"#,
    )
    .unwrap();
    load_process(&path).unwrap();
    fs::write(
        &path,
        r#"{"user":{"uid":0,"gid":0},"args":["true"],"cwd":"/",
            "capabilities":{"effective":["CAP_KILL","CAP_TIME_TRAVEL"]}}"#,
    )
    .unwrap();
    let p = load_process(&path).unwrap();
    let effective: Vec<_> = p
        .capabilities()
        .as_ref()
        .unwrap()
        .effective()
        .iter()
        .flatten()
        .collect();
    assert_eq!(effective, [&Capability::Kill]);
}

// ---- ociVersion ----

#[test]
fn oci_version_rules() {
    for ok in [
        "1.0.0",
        "1.0.2-dev",
        "1.2.0",
        "1.3.0-rc.1+build.5",
        "1.10.100",
    ] {
        check_oci_version(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    for bad in [
        "",
        "1",
        "1.0",
        "1.0.0.0",
        "v1.0.0",
        "01.0.0",
        "1.0.0-",
        "1.0.0-a..b",
        "1.x.0",
    ] {
        rejects(check_oci_version(bad), "ociVersion", "");
    }
    rejects(check_oci_version("2.0.0"), "ociVersion", "major version 2");
    rejects(check_oci_version("0.9.0"), "ociVersion", "major version 0");
    rejects(
        check(|v| v["ociVersion"] = json!("")),
        "ociVersion",
        "missing",
    );
}

// ---- root ----

#[test]
fn root_must_be_present_and_a_directory() {
    rejects(
        check(|v| {
            v.as_object_mut().unwrap().remove("root");
        }),
        "root",
        "missing",
    );
    rejects(
        check(|v| v["root"]["path"] = json!("")),
        "root.path",
        "empty",
    );
    rejects(
        check(|v| v["root"]["path"] = json!("nope")),
        "root.path",
        "does not exist",
    );
    rejects(
        check(|v| v["root"]["path"] = json!("/etc/hostname")),
        "root.path",
        "not a directory",
    );
    check(|v| v["root"]["path"] = json!("/")).unwrap(); // absolute paths are used as is
}

#[test]
fn rootfs_path_joins_relative_paths_to_the_bundle() {
    let mut spec = default_spec();
    assert_eq!(
        rootfs_path(&spec, Path::new("/b")),
        PathBuf::from("/b/rootfs")
    );
    spec.root_mut()
        .as_mut()
        .unwrap()
        .set_path("/abs/root".into());
    assert_eq!(
        rootfs_path(&spec, Path::new("/b")),
        PathBuf::from("/abs/root")
    );
    spec.root_mut().as_mut().unwrap().set_path("rootfs".into());
    assert!(rootfs_path(&spec, Path::new("rel")).is_absolute());
}

// ---- process ----

#[test]
fn process_is_required() {
    rejects(
        check(|v| {
            v.as_object_mut().unwrap().remove("process");
        }),
        "process",
        "missing",
    );
}

#[test]
fn process_args_must_name_a_program() {
    rejects(
        check(|v| v["process"]["args"] = json!([])),
        "process.args",
        "empty",
    );
    rejects(
        check(|v| {
            v["process"].as_object_mut().unwrap().remove("args");
        }),
        "process.args",
        "empty",
    );
    rejects(
        check(|v| v["process"]["args"] = json!([""])),
        "process.args[0]",
        "empty",
    );
    rejects(
        check(|v| v["process"]["args"] = json!(["sh", "a\u{0}b"])),
        "process.args[1]",
        "NUL",
    );
}

#[test]
fn process_cwd_must_be_absolute() {
    rejects(
        check(|v| v["process"]["cwd"] = json!("tmp")),
        "process.cwd",
        "absolute",
    );
    rejects(
        check(|v| v["process"]["cwd"] = json!("")),
        "process.cwd",
        "absolute",
    );
}

#[test]
fn process_env_entries_are_name_equals_value() {
    check(|v| v["process"]["env"] = json!(["A=", "B=c=d"])).unwrap();
    rejects(
        check(|v| v["process"]["env"] = json!(["A=1", "B"])),
        "process.env[1]",
        "'='",
    );
    rejects(
        check(|v| v["process"]["env"] = json!(["=1"])),
        "process.env[0]",
        "empty name",
    );
    rejects(
        check(|v| v["process"]["env"] = json!(["A=\u{0}"])),
        "process.env[0]",
        "NUL",
    );
}

#[test]
fn rlimits_no_duplicates_and_soft_within_hard() {
    rejects(
        check(|v| {
            v["process"]["rlimits"] = json!([
                {"type": "RLIMIT_NOFILE", "hard": 10, "soft": 10},
                {"type": "RLIMIT_CORE", "hard": 0, "soft": 0},
                {"type": "RLIMIT_NOFILE", "hard": 20, "soft": 20}
            ])
        }),
        "process.rlimits[2]",
        "already set at process.rlimits[0]",
    );
    rejects(
        check(|v| {
            v["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 10, "soft": 11}])
        }),
        "process.rlimits[0]",
        "soft limit 11 is above hard limit 10",
    );
}

#[test]
fn process_oom_score_adj_io_priority_and_umask_ranges() {
    check(|v| v["process"]["oomScoreAdj"] = json!(-1000)).unwrap();
    rejects(
        check(|v| v["process"]["oomScoreAdj"] = json!(1001)),
        "process.oomScoreAdj",
        "outside",
    );
    rejects(
        check(|v| v["process"]["ioPriority"] = json!({"class": "IOPRIO_CLASS_BE", "priority": 8})),
        "process.ioPriority.priority",
        "outside",
    );
    rejects(
        check(|v| v["process"]["user"]["umask"] = json!(0o1022)),
        "process.user.umask",
        "outside",
    );
}

#[test]
fn validate_process_alone() {
    let mut p = default_spec().process().clone().unwrap();
    validate_process(&p).unwrap();
    p.set_cwd("x".into());
    rejects(validate_process(&p), "process.cwd", "absolute");
}

// ---- annotations and hooks ----

#[test]
fn annotation_keys_are_not_empty() {
    check(|v| v["annotations"] = json!({"a.b": ""})).unwrap();
    rejects(
        check(|v| v["annotations"] = json!({"": "x"})),
        "annotations",
        "empty",
    );
}

#[test]
fn hook_paths_are_absolute_and_timeouts_positive() {
    check(|v| v["hooks"] = json!({"poststop": [{"path": "/bin/true", "timeout": 5}]})).unwrap();
    rejects(
        check(|v| v["hooks"] = json!({"createRuntime": [{"path": "/bin/true"}, {"path": "true"}]})),
        "hooks.createRuntime[1].path",
        "absolute",
    );
    rejects(
        check(|v| v["hooks"] = json!({"prestart": [{"path": "/bin/true", "timeout": 0}]})),
        "hooks.prestart[0].timeout",
        "greater than zero",
    );
}

// ---- mounts ----

#[test]
fn mount_destinations_are_absolute() {
    rejects(
        check(|v| v["mounts"][1]["destination"] = json!("dev")),
        "mounts[1].destination",
        "absolute",
    );
}

#[test]
fn bind_mounts_need_a_source_and_idmaps_are_refused() {
    rejects(
        check(|v| {
            v["mounts"]
                .as_array_mut()
                .unwrap()
                .push(json!({"destination": "/data", "options": ["rbind"]}))
        }),
        "mounts[7].source",
        "no source",
    );
    rejects(
        check(|v| {
            v["mounts"].as_array_mut().unwrap().push(json!({
                "destination": "/data", "type": "bind", "source": "/tmp", "options": ["bind"],
                "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
                "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]
            }))
        }),
        "mounts[7]",
        "idmapped",
    );
}

// ---- namespaces ----

#[test]
fn namespaces_are_not_duplicated() {
    rejects(
        check(|v| add_ns(v, "pid", None)),
        "linux.namespaces[6]",
        "duplicate namespace type \"pid\" (already at linux.namespaces[0])",
    );
}

#[test]
fn namespace_paths_are_absolute() {
    rejects(
        check(|v| {
            remove_ns(v, "network");
            add_ns(v, "network", Some("run/netns/x"));
        }),
        "linux.namespaces[5].path",
        "absolute",
    );
}

#[test]
fn a_private_mount_namespace_is_required() {
    rejects(
        check(|v| remove_ns(v, "mount")),
        "linux.namespaces",
        "mount namespace",
    );
    rejects(
        check(|v| {
            remove_ns(v, "mount");
            add_ns(v, "mount", Some("/proc/self/ns/mnt"));
        }),
        "linux.namespaces",
        "mount namespace",
    );
}

#[test]
fn user_namespace_and_mappings_go_together() {
    let maps = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    rejects(
        check(|v| add_ns(v, "user", None)),
        "linux.uidMappings",
        "needs uid mappings",
    );
    rejects(
        check(|v| {
            add_ns(v, "user", None);
            v["linux"]["uidMappings"] = maps.clone();
        }),
        "linux.gidMappings",
        "needs gid mappings",
    );
    check(|v| {
        add_ns(v, "user", None);
        v["linux"]["uidMappings"] = maps.clone();
        v["linux"]["gidMappings"] = maps.clone();
    })
    .unwrap();
    // Joining a user namespace: its mappings come with it.
    check(|v| add_ns(v, "user", Some("/proc/1/ns/user"))).unwrap();
    rejects(
        check(|v| v["linux"]["gidMappings"] = maps.clone()),
        "linux.gidMappings",
        "no user namespace",
    );
    rejects(
        check(|v| {
            add_ns(v, "user", None);
            v["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 1, "size": 0}]);
            v["linux"]["gidMappings"] = maps.clone();
        }),
        "linux.uidMappings[0].size",
        "zero",
    );
}

#[test]
fn hostname_and_domainname_need_a_private_uts_namespace() {
    rejects(check(|v| remove_ns(v, "uts")), "hostname", "UTS");
    rejects(
        check(|v| {
            remove_ns(v, "uts");
            add_ns(v, "uts", Some("/proc/self/ns/uts"));
        }),
        "hostname",
        "UTS",
    );
    check(|v| {
        remove_ns(v, "uts");
        v.as_object_mut().unwrap().remove("hostname");
    })
    .unwrap();
    rejects(
        check(|v| {
            remove_ns(v, "uts");
            v.as_object_mut().unwrap().remove("hostname");
            v["domainname"] = json!("example.org");
        }),
        "domainname",
        "UTS",
    );
}

#[test]
fn sysctls_need_their_namespace() {
    let sysctl = |key: &str| {
        let key = key.to_string();
        move |v: &mut Value| v["linux"]["sysctl"] = json!({ key: "1" })
    };
    check(sysctl("net.ipv4.ip_forward")).unwrap();
    check(sysctl("kernel.shmmax")).unwrap();
    check(sysctl("fs.mqueue.msg_max")).unwrap();
    check(sysctl("kernel.domainname")).unwrap();
    let field = |k: &str| format!("linux.sysctl[{k:?}]");
    rejects(
        check(|v| {
            remove_ns(v, "network");
            sysctl("net.ipv4.ip_forward")(v);
        }),
        &field("net.ipv4.ip_forward"),
        "network namespace",
    );
    rejects(
        check(|v| {
            remove_ns(v, "network");
            add_ns(v, "network", Some("/proc/self/ns/net"));
            sysctl("net.core.somaxconn")(v);
        }),
        &field("net.core.somaxconn"),
        "network namespace",
    );
    rejects(
        check(|v| {
            remove_ns(v, "ipc");
            sysctl("kernel.msgmax")(v);
        }),
        &field("kernel.msgmax"),
        "IPC namespace",
    );
    rejects(
        check(|v| {
            remove_ns(v, "ipc");
            sysctl("fs.mqueue.queues_max")(v);
        }),
        &field("fs.mqueue.queues_max"),
        "IPC namespace",
    );
    rejects(
        check(|v| {
            remove_ns(v, "uts");
            v.as_object_mut().unwrap().remove("hostname");
            sysctl("kernel.domainname")(v);
        }),
        &field("kernel.domainname"),
        "UTS namespace",
    );
    rejects(
        check(sysctl("kernel.hostname")),
        &field("kernel.hostname"),
        "conflicts",
    );
    check(|v| {
        v.as_object_mut().unwrap().remove("hostname");
        sysctl("kernel.hostname")(v);
    })
    .unwrap();
    rejects(
        check(sysctl("vm.swappiness")),
        &field("vm.swappiness"),
        "host",
    );
}

#[test]
fn time_offsets_need_a_new_time_namespace() {
    let offsets = json!({"monotonic": {"secs": 10}, "boottime": {"secs": 1, "nanosecs": 5}});
    rejects(
        check(|v| v["linux"]["timeOffsets"] = offsets.clone()),
        "linux.timeOffsets",
        "no time namespace",
    );
    check(|v| {
        add_ns(v, "time", None);
        v["linux"]["timeOffsets"] = offsets.clone();
    })
    .unwrap();
    rejects(
        check(|v| {
            add_ns(v, "time", Some("/proc/1/ns/time"));
            v["linux"]["timeOffsets"] = offsets.clone();
        }),
        "linux.timeOffsets",
        "joined",
    );
    rejects(
        check(|v| {
            add_ns(v, "time", None);
            v["linux"]["timeOffsets"] = json!({"realtime": {"secs": 1}});
        }),
        "linux.timeOffsets[\"realtime\"]",
        "unknown clock",
    );
    rejects(
        check(|v| {
            add_ns(v, "time", None);
            v["linux"]["timeOffsets"] = json!({"boottime": {"nanosecs": 1_000_000_000u32}});
        }),
        "linux.timeOffsets[\"boottime\"].nanosecs",
        "below",
    );
}

#[test]
fn linux_paths_are_absolute_and_propagation_known() {
    rejects(
        check(|v| {
            v["linux"]["devices"] =
                json!([{"path": "dev/fuse", "type": "c", "major": 10, "minor": 229}])
        }),
        "linux.devices[0].path",
        "absolute",
    );
    rejects(
        check(|v| v["linux"]["maskedPaths"][2] = json!("proc/kcore")),
        "linux.maskedPaths[2]",
        "absolute",
    );
    rejects(
        check(|v| v["linux"]["readonlyPaths"][0] = json!("proc/bus")),
        "linux.readonlyPaths[0]",
        "absolute",
    );
    check(|v| v["linux"]["rootfsPropagation"] = json!("rslave")).unwrap();
    rejects(
        check(|v| v["linux"]["rootfsPropagation"] = json!("sideways")),
        "linux.rootfsPropagation",
        "not one of",
    );
}

#[test]
fn error_messages_name_the_field() {
    let err = check(|v| v["process"]["cwd"] = json!("x")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid config: process.cwd: \"x\" is not an absolute path"
    );
}

// ---- signals ----

#[test]
fn signals_like_runc_kill() {
    for s in ["KILL", "SIGKILL", "kill", "sigkill", "9", " 9 "] {
        assert_eq!(parse_signal(s).unwrap(), Signal::SIGKILL, "{s}");
    }
    assert_eq!(parse_signal("sigterm").unwrap(), Signal::SIGTERM);
    assert_eq!(parse_signal("15").unwrap(), Signal::SIGTERM);
    assert_eq!(parse_signal("HUP").unwrap(), Signal::SIGHUP);
    assert_eq!(parse_signal("SIGCLD").unwrap(), Signal::SIGCHLD);
    assert_eq!(parse_signal("usr1").unwrap(), Signal::SIGUSR1);
    for bad in ["", "0", "999", "SIGNOPE", "-9", "SIG"] {
        let err = parse_signal(bad).unwrap_err();
        assert!(matches!(err, SpecError::UnknownSignal(_)), "{bad}: {err:?}");
    }
}

// ---- default spec and features ----

/// `runc spec` of runc 1.1.5, verbatim.
const RUNC_SPEC: &str = r#"{
	"ociVersion": "1.0.2-dev",
	"process": {
		"terminal": true,
		"user": { "uid": 0, "gid": 0 },
		"args": [ "sh" ],
		"env": [
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
			"TERM=xterm"
		],
		"cwd": "/",
		"capabilities": {
			"bounding": [ "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" ],
			"effective": [ "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" ],
			"permitted": [ "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" ],
			"ambient": [ "CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE" ]
		},
		"rlimits": [ { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 } ],
		"noNewPrivileges": true
	},
	"root": { "path": "rootfs", "readonly": true },
	"hostname": "runc",
	"mounts": [
		{ "destination": "/proc", "type": "proc", "source": "proc" },
		{ "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
		  "options": [ "nosuid", "strictatime", "mode=755", "size=65536k" ] },
		{ "destination": "/dev/pts", "type": "devpts", "source": "devpts",
		  "options": [ "nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5" ] },
		{ "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
		  "options": [ "nosuid", "noexec", "nodev", "mode=1777", "size=65536k" ] },
		{ "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
		  "options": [ "nosuid", "noexec", "nodev" ] },
		{ "destination": "/sys", "type": "sysfs", "source": "sysfs",
		  "options": [ "nosuid", "noexec", "nodev", "ro" ] },
		{ "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
		  "options": [ "nosuid", "noexec", "nodev", "relatime", "ro" ] }
	],
	"linux": {
		"resources": { "devices": [ { "allow": false, "access": "rwm" } ] },
		"namespaces": [
			{ "type": "pid" }, { "type": "network" }, { "type": "ipc" },
			{ "type": "uts" }, { "type": "mount" }
		],
		"maskedPaths": [
			"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
			"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
			"/proc/scsi"
		],
		"readonlyPaths": [
			"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
		]
	}
}"#;

/// Capability sets are sets: oci-spec serializes them in hash order.
fn sort_capabilities(v: &mut Value) {
    if let Some(caps) = v["process"]["capabilities"].as_object_mut() {
        for set in caps.values_mut() {
            set.as_array_mut()
                .unwrap()
                .sort_by(|a, b| a.as_str().cmp(&b.as_str()));
        }
    }
}

#[test]
fn default_spec_matches_runc_spec() {
    let mut expected: Value = serde_json::from_str(RUNC_SPEC).unwrap();
    // The intended differences from runc 1.1.5:
    expected["ociVersion"] = json!(crate::OCI_VERSION);
    expected["hostname"] = json!("rrun");
    expected["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "cgroup"}));
    let mut actual = serde_json::to_value(default_spec()).unwrap();
    sort_capabilities(&mut expected);
    sort_capabilities(&mut actual);
    assert_eq!(
        actual,
        expected,
        "default_spec():\n{}",
        serde_json::to_string_pretty(&actual).unwrap()
    );
}

#[test]
fn features_document() {
    let v = serde_json::to_value(features()).unwrap();
    assert_eq!(v["ociVersionMin"], "1.0.0");
    assert_eq!(v["ociVersionMax"], crate::OCI_VERSION);
    assert_eq!(v["hooks"].as_array().unwrap().len(), 6);
    assert!(v["mountOptions"]
        .as_array()
        .unwrap()
        .contains(&json!("rbind")));
    let ns = v["linux"]["namespaces"].as_array().unwrap();
    for t in [
        "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
    ] {
        assert!(ns.contains(&json!(t)), "namespace {t} missing");
    }
    // Every capability oci-spec knows is listed, and nothing else.
    let caps = v["linux"]["capabilities"].as_array().unwrap();
    assert_eq!(caps.len(), 41);
    for c in caps {
        let _: Capability = serde_json::from_value(c.clone()).unwrap();
    }
    assert_eq!(
        v["linux"]["cgroup"],
        json!({"v1": true, "v2": true, "systemd": false, "systemdUser": false, "rdma": false})
    );
    let seccomp = &v["linux"]["seccomp"];
    assert_eq!(seccomp["enabled"], json!(true));
    assert_eq!(
        seccomp["actions"].as_array().unwrap().len(),
        SECCOMP_ACTIONS.len()
    );
    assert!(!seccomp["actions"]
        .as_array()
        .unwrap()
        .contains(&json!("SCMP_ACT_NOTIFY")));
    assert_eq!(seccomp["operators"].as_array().unwrap().len(), 7);
    assert!(seccomp["archs"]
        .as_array()
        .unwrap()
        .contains(&json!("SCMP_ARCH_X86_64")));
    assert_eq!(v["linux"]["apparmor"], json!({"enabled": true}));
    assert_eq!(v["linux"]["selinux"], json!({"enabled": true}));
    assert_eq!(v["linux"]["intelRdt"], json!({"enabled": false}));
    assert_eq!(
        v["linux"]["mountExtensions"],
        json!({"idmap": {"enabled": false}})
    );
    assert!(v["annotations"]["rrun.version"].is_string());
    // oci-spec writes unset fields as null (runc leaves them out); features() sets all.
    assert!(!v.to_string().contains("null"), "{v}");
    // And the document reads back as a Features.
    let back: Features = serde_json::from_value(v).unwrap();
    assert_eq!(back.oci_version_max(), crate::OCI_VERSION);
}
