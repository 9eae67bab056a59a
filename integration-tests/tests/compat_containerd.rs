//! rrun under containerd 1.6: `ctr` through the runc shim (`io.containerd.runc.v2`) with
//! `--runc-binary` pointing at the runtime. Each test runs against rrun and against runc
//! (`<test>::rrun`, `<test>::runc`) with a containerd of its own (see
//! `integration_tests::engines`): run and exit codes, exec, ps, pause/resume, metrics,
//! kill, kill --all, a tty, errors from the runtime reaching the `ctr` user, and nothing
//! left behind after delete.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use integration_tests::engine_test;
use integration_tests::engines::*;
use integration_tests::*;

/// A containerd for `rt`, with the busybox image imported; `None` (said loudly) when
/// something it needs is not installed.
fn containerd(rt: Runtime) -> Option<Containerd> {
    if !have("containerd") || !have("ctr") || !have("containerd-shim-runc-v2") {
        return None;
    }
    let bin = rt.path()?;
    let cd = Containerd::start(&bin);
    cd.import_busybox();
    Some(cd)
}

fn run_args(cd: &Containerd, extra: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
    let mut v = vec!["run".to_string()];
    v.extend(cd.run_opts(id));
    v.extend(extra.iter().map(|s| s.to_string()));
    v.push(CTR_IMAGE.into());
    v.push(id.into());
    v.extend(cmd.iter().map(|s| s.to_string()));
    v
}

/// `ctr run --rm`: output, the exit code, the cgroup, and nothing left after.
fn run_exit_code(rt: Runtime) {
    let Some(cd) = containerd(rt) else { return };
    let id = "exit";
    let out = cd.ctr(run_args(
        &cd,
        &["--rm"],
        id,
        &["sh", "-c", "echo hello from the container; exit 3"],
    ));
    assert_eq!(out.code(), 3, "{out}");
    assert!(out.stdout.contains("hello from the container"), "{out}");
    cd.assert_nothing_left(id);

    // A zero exit is zero.
    let out = cd.ctr(run_args(&cd, &["--rm"], "zero", &["true"]));
    assert_eq!(out.code(), 0, "{out}");
    cd.assert_nothing_left("zero");
}
engine_test!(run_exit_code);

/// A detached task: the runtime's own state, exec, ps, pause/resume (the kernel's
/// freezer), metrics, SIGTERM, delete.
fn task_lifecycle(rt: Runtime) {
    let Some(cd) = containerd(rt) else { return };
    let id = "life";
    let out = cd.ctr(run_args(
        &cd,
        &["--detach"],
        id,
        &[
            "sh",
            "-c",
            "trap 'exit 7' TERM; sleep 1000 & while true; do sleep 0.1; done",
        ],
    ));
    out.ok();
    cd.wait_task_status(id, "RUNNING");
    let cg = cd.cgroup_of(id);

    // The runtime under test made it: it knows the container, with the task's pid.
    let pid = cd.task_pid(id);
    let state = cd
        .runtime_state(id)
        .unwrap_or_else(|| panic!("{} does not know {id}", rt.name()));
    assert_eq!(state["status"], "running", "{state}");
    assert_eq!(state["pid"], pid, "{state}");
    assert_eq!(state["id"], id, "{state}");
    for key in ["ociVersion", "bundle", "created"] {
        assert!(state[key].is_string(), "state lacks {key}: {state}");
    }

    // exec: its exit code, and the init's cgroups. (What the exec'd process prints goes
    // to files in the rootfs, read from the host: `ctr task exec` can return before it
    // has copied the output of a quick process, with either runtime.)
    let out = cd.ctr([
        "task",
        "exec",
        "--exec-id",
        "e1",
        "--fifo-dir",
        &cd.fifo_dir.display().to_string(),
        id,
        "sh",
        "-c",
        "cat /proc/self/cgroup > /exec-self; cat /proc/1/cgroup > /exec-init; exit 4",
    ]);
    assert_eq!(out.code(), 4, "{out}");
    let (own, init) = (
        cd.rootfs_file(id, "exec-self"),
        cd.rootfs_file(id, "exec-init"),
    );
    // (As seen from inside, whatever cgroup namespace the engine chose.)
    assert!(!own.is_empty(), "exec wrote no /proc/self/cgroup");
    assert_eq!(own, init, "exec is not in the init's cgroups");

    // ps: the init and its children, as the kernel lists them in the cgroup.
    let ps = cd.ctr(["task", "ps", id]);
    ps.ok();
    let listed: Vec<i32> = ps
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert!(listed.contains(&pid), "init {pid} not in ps:\n{ps}");
    assert!(listed.len() >= 2, "the sleeps are missing:\n{ps}");
    let in_cgroup = pids_in_cgroup(&cg);
    for p in &listed {
        // A `sleep 0.1` of the loop may have left the cgroup since `ps` by exiting, which it
        // shows after the read of the cgroup: its `/proc` entry alone stays until the shell
        // reaps it.
        assert!(
            in_cgroup.contains(p) || pid_exiting_or_gone(*p),
            "{p} is not in {cg}: {in_cgroup:?}"
        );
    }
    assert!(
        in_cgroup.contains(&pid),
        "init {pid} not in {cg}: {in_cgroup:?}"
    );

    // pause / resume.
    cd.ctr(["task", "pause", id]).ok();
    assert_eq!(cd.task_status(id).as_deref(), Some("PAUSED"));
    assert!(cgroup_frozen(&cg), "{cg} is not frozen after pause");
    assert_eq!(
        cd.runtime_state(id).map(|s| s["status"].clone()),
        Some(json!("paused"))
    );
    cd.ctr(["task", "resume", id]).ok();
    assert_eq!(cd.task_status(id).as_deref(), Some("RUNNING"));
    assert!(!cgroup_frozen(&cg), "{cg} is still frozen after resume");

    // metrics, from the container's cgroup.
    let m = cd.ctr(["task", "metrics", "--format", "json", id]);
    m.ok();
    let v: Value =
        serde_json::from_str(&m.stdout).unwrap_or_else(|e| panic!("metrics JSON ({e}):\n{m}"));
    let current = v["pids"]["current"].as_u64().unwrap_or(0);
    assert!(current >= 2, "pids.current {current}:\n{m}");
    assert!(v.get("memory").is_some(), "no memory metrics:\n{m}");

    // SIGTERM: the trap's exit code reaches containerd.
    cd.ctr(["task", "kill", "--signal", "SIGTERM", id]).ok();
    cd.wait_task_status(id, "STOPPED");
    let del = cd.ctr(["task", "delete", id]);
    del.ok();
    assert!(del.stderr.contains("exit code 7"), "{del}");
    cd.ctr(["containers", "delete", id]).ok();
    cd.assert_nothing_left(id);
}
engine_test!(task_lifecycle);

/// `kill --all` reaches every process of the task, not only its init.
fn kill_all(rt: Runtime) {
    let Some(cd) = containerd(rt) else { return };
    let id = "killall";
    cd.ctr(run_args(
        &cd,
        &["--detach"],
        id,
        &["sh", "-c", "trap '' TERM; sleep 1000 & sleep 1000 & wait"],
    ))
    .ok();
    cd.wait_task_status(id, "RUNNING");
    let cg = cd.cgroup_of(id);
    wait_for(
        Duration::from_secs(10),
        || pids_in_cgroup(&cg).len() >= 3,
        "three processes in the container's cgroup",
    );
    cd.ctr(["task", "kill", "--all", "--signal", "SIGKILL", id])
        .ok();
    cd.wait_task_status(id, "STOPPED");
    wait_for(
        Duration::from_secs(10),
        || pids_in_cgroup(&cg).is_empty(),
        "the container's cgroup to be empty",
    );
    cd.ctr(["task", "delete", id]).ok();
    cd.ctr(["containers", "delete", id]).ok();
    cd.assert_nothing_left(id);
}
engine_test!(kill_all);

/// `ctr run -t` and `ctr task exec -t`, driven through `script`'s pty.
fn tty(rt: Runtime) {
    let Some(cd) = containerd(rt) else { return };
    if !have("script") {
        return;
    }
    let out_dir = cd.dir.join("out");
    let line = cd.ctr_shell_line(&run_args(&cd, &["--rm", "--tty"], "tty", &["sh"]));
    let out = run_on_pty(&line, "tty; echo $((6*7)); exit 5\n", &out_dir);
    assert_eq!(out.code(), 5, "{out}");
    assert!(
        out.stdout.contains("/dev/pts/"),
        "no pty in the container:\n{out}"
    );
    assert!(out.stdout.contains("42"), "{out}");
    cd.assert_nothing_left("tty");

    let id = "ttyexec";
    cd.ctr(run_args(&cd, &["--detach"], id, &["sleep", "1000"]))
        .ok();
    cd.wait_task_status(id, "RUNNING");
    let fifo = cd.fifo_dir.display().to_string();
    let line = cd.ctr_shell_line(
        &[
            "task",
            "exec",
            "--tty",
            "--exec-id",
            "t1",
            "--fifo-dir",
            &fifo,
            id,
            "sh",
        ]
        .map(String::from),
    );
    let out = run_on_pty(&line, "tty; echo $((6*8)); exit 6\n", &out_dir);
    assert_eq!(out.code(), 6, "{out}");
    assert!(out.stdout.contains("/dev/pts/"), "{out}");
    assert!(out.stdout.contains("48"), "{out}");
    cd.ctr(["task", "kill", "--signal", "SIGKILL", id]).ok();
    cd.wait_task_status(id, "STOPPED");
    cd.ctr(["task", "delete", id]).ok();
    cd.ctr(["containers", "delete", id]).ok();
    cd.assert_nothing_left(id);
}
engine_test!(tty);

/// The shim reads the runtime's `--log` (`--log-format json`) when create fails: the
/// runtime's own message must reach the `ctr` user, and the failed create must leave
/// nothing behind.
fn errors_reach_the_user(rt: Runtime) {
    let Some(cd) = containerd(rt) else { return };
    let out = cd.ctr(run_args(&cd, &["--rm"], "nobin", &["/nonexistent-bin"]));
    out.failed();
    let text = out.stderr.to_lowercase();
    assert!(text.contains("oci runtime create failed"), "{out}");
    assert!(text.contains("/nonexistent-bin"), "{out}");
    assert!(text.contains("no such"), "{out}");
    cd.assert_nothing_left("nobin");

    // A cwd that is a file.
    let out = cd.ctr(run_args(
        &cd,
        &["--rm", "--cwd", "/etc/passwd"],
        "badcwd",
        &["true"],
    ));
    out.failed();
    let text = out.stderr.to_lowercase();
    assert!(text.contains("oci runtime create failed"), "{out}");
    assert!(text.contains("/etc/passwd"), "{out}");
    assert!(text.contains("not a directory"), "{out}");
    cd.assert_nothing_left("badcwd");
}
engine_test!(errors_reach_the_user);

/// What engines parse from the runtime: `--version` (go-runc takes the first line only
/// if it says "version", then `spec:`) and `features` (a JSON document with runc's
/// keys).
fn version_and_features(rt: Runtime) {
    let Some(bin) = rt.path() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let mut c = Command::new(&bin);
    c.arg("--version");
    let v = run_bounded(c, dir.path(), None, Duration::from_secs(10));
    v.ok();
    let first = v.stdout.lines().next().unwrap_or_default();
    let mut words = first.split_whitespace();
    assert_eq!(words.next(), Some(rt.name()), "{v}");
    assert_eq!(words.next(), Some("version"), "{v}");
    assert!(
        words
            .next()
            .is_some_and(|w| w.starts_with(|c: char| c.is_ascii_digit())),
        "{v}"
    );
    let spec = v
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("spec: "))
        .unwrap_or_else(|| panic!("no spec: line:\n{v}"));
    assert!(spec.starts_with("1."), "{v}");

    let mut c = Command::new(&bin);
    c.arg("features");
    let f = run_bounded(c, dir.path(), None, Duration::from_secs(10));
    f.ok();
    let doc = f.json();
    for key in [
        "ociVersionMin",
        "ociVersionMax",
        "hooks",
        "mountOptions",
        "linux",
    ] {
        assert!(doc.get(key).is_some(), "features lacks {key}:\n{f}");
    }
    for key in [
        "namespaces",
        "capabilities",
        "cgroup",
        "seccomp",
        "apparmor",
        "selinux",
    ] {
        assert!(
            doc["linux"].get(key).is_some(),
            "features lacks linux.{key}:\n{f}"
        );
    }
    let ns: Vec<&str> = doc["linux"]["namespaces"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for want in ["cgroup", "ipc", "mount", "network", "pid", "user", "uts"] {
        assert!(ns.contains(&want), "namespace {want} not in features:\n{f}");
    }
}
engine_test!(version_and_features);

/// The last lines of containerd's log, for failure messages.
fn log_tail(cd: &Containerd) -> String {
    let log = cd.log();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Awaits `f`, failing the test after `secs` (scaled) seconds.
async fn bounded<F: std::future::Future>(what: &str, secs: u64, f: F) -> F::Output {
    tokio::time::timeout(scaled(Duration::from_secs(secs)), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer from containerd's CRI plugin in time"))
}

/// The other way to point containerd at a runtime: `BinaryName` (and `Root`) in the
/// options of a runtime in config.toml. Only the CRI plugin hands those options to the
/// shim (`ctr` never reads them), so this drives containerd's CRI plugin: a pod (host
/// network, no CNI) from a busybox sandbox image, a container in it, its log, ExecSync,
/// UpdateContainerResources (read back from the kernel), stop and removal, and nothing left of either in the runtime's root.
fn cri_binary_name(rt: Runtime) {
    use integration_tests::cri::api;
    if !have("containerd") || !have("ctr") || !have("containerd-shim-runc-v2") {
        return;
    }
    let Some(bin) = rt.path() else { return };
    let cd = Containerd::start_with_cri(&bin);
    cd.import_image("k8s.io", CRI_SANDBOX_IMAGE, &["sleep", "1000000"]);
    cd.import_image("k8s.io", CTR_IMAGE, &["sh"]);
    let logs = cd.dir.join("pod-logs");
    std::fs::create_dir_all(&logs).expect("mkdir pod-logs");
    let ns_root = cd.runtime_root.join("k8s.io");
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    tokio.block_on(async {
        // The CRI plugin finishes starting after the socket answers: wait until it
        // serves requests.
        let mut client = None;
        let deadline = std::time::Instant::now() + scaled(Duration::from_secs(30));
        while client.is_none() {
            if let Ok(mut c) = integration_tests::cri::Client::connect(&cd.socket).await {
                let v = c.runtime.version(api::VersionRequest::default()).await;
                if v.is_ok() {
                    client = Some(c);
                    break;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the CRI plugin did not come up:\n{}",
                log_tail(&cd)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut client = client.expect("a CRI client");

        let pod_cfg = cd.host_network_pod_config("compat", &logs);
        let pod = bounded(
            "RunPodSandbox",
            120,
            client.runtime.run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(pod_cfg.clone()),
                runtime_handler: CRI_RUNTIME.into(),
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", log_tail(&cd)))
        .into_inner()
        .pod_sandbox_id;

        let c_cfg = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: "app".into(),
                attempt: 0,
            }),
            image: Some(api::ImageSpec {
                image: CTR_IMAGE.into(),
                ..Default::default()
            }),
            command: ["sh", "-c", "echo hello-cri; exec sleep 1000"]
                .map(String::from)
                .to_vec(),
            log_path: "app.log".into(),
            linux: Some(api::LinuxContainerConfig::default()),
            ..Default::default()
        };
        let cid = bounded(
            "CreateContainer",
            60,
            client
                .runtime
                .create_container(api::CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(c_cfg),
                    sandbox_config: Some(pod_cfg),
                }),
        )
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", log_tail(&cd)))
        .into_inner()
        .container_id;
        bounded(
            "StartContainer",
            60,
            client.runtime.start_container(api::StartContainerRequest {
                container_id: cid.clone(),
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", log_tail(&cd)));

        // The runtime named by BinaryName runs both the sandbox and the container, with
        // its state under Root.
        for id in [&pod, &cid] {
            let mut c = Command::new(&bin);
            c.arg("--root").arg(&ns_root).args(["state", id]);
            let st = run_bounded(c, &cd.out_dir(), None, Duration::from_secs(30));
            st.ok();
            assert_eq!(st.json()["status"], "running", "{st}");
        }
        let log = logs.join("app.log");
        wait_for(
            Duration::from_secs(30),
            || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("hello-cri")),
            "the container's output in its CRI log",
        );

        let ex = bounded(
            "ExecSync",
            60,
            client.runtime.exec_sync(api::ExecSyncRequest {
                container_id: cid.clone(),
                cmd: ["sh", "-c", "echo in-exec; exit 3"]
                    .map(String::from)
                    .to_vec(),
                timeout: 30,
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("ExecSync: {e}\n{}", log_tail(&cd)))
        .into_inner();
        assert_eq!(ex.exit_code, 3, "{ex:?}");
        assert_eq!(String::from_utf8_lossy(&ex.stdout), "in-exec\n");

        // The pod gave no hostname: containerd's CRI uses the node's, for /etc/hostname
        // and HOSTNAME alike (rrun-cri does the same: docs/cri-compatibility.md, and
        // cri_runtime long_pod_name_gets_the_node_hostname_and_bad_hostnames_are_invalid).
        let node = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
        let node = node.trim();
        let ex = bounded(
            "ExecSync",
            60,
            client.runtime.exec_sync(api::ExecSyncRequest {
                container_id: cid.clone(),
                cmd: ["sh", "-c", "cat /etc/hostname; echo $HOSTNAME"]
                    .map(String::from)
                    .to_vec(),
                timeout: 30,
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("ExecSync: {e}\n{}", log_tail(&cd)))
        .into_inner();
        assert_eq!(
            String::from_utf8_lossy(&ex.stdout),
            format!("{node}\n{node}\n"),
            "/etc/hostname and HOSTNAME of a pod without a hostname: {ex:?}"
        );

        // UpdateContainerResources: the shim runs `update --resources -` (the limits on
        // stdin); the kernel has the new limit.
        bounded(
            "UpdateContainerResources",
            60,
            client
                .runtime
                .update_container_resources(api::UpdateContainerResourcesRequest {
                    container_id: cid.clone(),
                    linux: Some(api::LinuxContainerResources {
                        memory_limit_in_bytes: 48 << 20,
                        cpu_period: 100_000,
                        cpu_quota: 30_000,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
        )
        .await
        .unwrap_or_else(|e| panic!("UpdateContainerResources: {e}\n{}", log_tail(&cd)));
        let cg = format!("{}/{cid}", cd.cgroup_of("pod"));
        let mem = cgroup_file(&cg, "memory.limit_in_bytes")
            .or_else(|| cgroup_file(&cg, "memory.max"))
            .unwrap_or_else(|| panic!("no memory limit file for {cg}"));
        assert_eq!(mem.1, (48u64 << 20).to_string(), "{}", mem.0.display());
        let cpu = cgroup_file(&cg, "cpu.cfs_quota_us")
            .or_else(|| cgroup_file(&cg, "cpu.max"))
            .unwrap_or_else(|| panic!("no cpu quota file for {cg}"));
        assert!(cpu.1.starts_with("30000"), "{}: {}", cpu.0.display(), cpu.1);

        bounded(
            "StopContainer",
            60,
            client.runtime.stop_container(api::StopContainerRequest {
                container_id: cid.clone(),
                timeout: 5,
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("StopContainer: {e}\n{}", log_tail(&cd)));
        bounded(
            "RemoveContainer",
            60,
            client
                .runtime
                .remove_container(api::RemoveContainerRequest {
                    container_id: cid.clone(),
                }),
        )
        .await
        .unwrap_or_else(|e| panic!("RemoveContainer: {e}\n{}", log_tail(&cd)));
        bounded(
            "StopPodSandbox",
            60,
            client.runtime.stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            }),
        )
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", log_tail(&cd)));
        bounded(
            "RemovePodSandbox",
            60,
            client
                .runtime
                .remove_pod_sandbox(api::RemovePodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                }),
        )
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", log_tail(&cd)));
    });

    // Nothing left: no runtime state, no shim, no mount in containerd's namespace, no
    // container cgroup below the pod's.
    wait_for(
        Duration::from_secs(20),
        || {
            std::fs::read_dir(&ns_root).map_or(true, |mut d| d.next().is_none())
                && cd.shim_pids(None).is_empty()
                && mounts_under_in(cd.pid(), &cd.dir).is_empty()
                && existing_cgroups(&cd.cgroup_of("pod")).iter().all(|d| {
                    std::fs::read_dir(d)
                        .map(|rd| rd.flatten().all(|e| !e.path().is_dir()))
                        .unwrap_or(true)
                })
        },
        "nothing left of the pod",
    );
}
engine_test!(cri_binary_name);

/// The guard of a containerd removes everything even when the test panics with a task
/// still running: the daemon, its shim, the container's processes and cgroups, the temp
/// dir.
fn guard_cleans_up_after_a_panic(rt: Runtime) {
    if !have("containerd") || !have("ctr") || !have("containerd-shim-runc-v2") {
        return;
    }
    let Some(bin) = rt.path() else { return };
    let seen = std::sync::Mutex::new(None);
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cd = Containerd::start(&bin);
        cd.import_busybox();
        let id = "left";
        cd.ctr(run_args(&cd, &["--detach"], id, &["sleep", "1000"]))
            .ok();
        cd.wait_task_status(id, "RUNNING");
        *seen.lock().unwrap() = Some((
            cd.dir.clone(),
            cd.socket.display().to_string(),
            cd.cgroup_of(id),
            cd.pid(),
            cd.task_pid(id),
        ));
        panic!("deliberate panic with a running task");
    }));
    assert!(res.is_err(), "the body should have panicked");
    let (dir, socket, cg, daemon, task) = seen
        .lock()
        .unwrap()
        .take()
        .expect("the body got as far as a running task");
    let alive = |pid: i32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    wait_for(
        Duration::from_secs(10),
        || !alive(daemon) && !alive(task),
        "containerd and the task to be gone",
    );
    let shims = pids_by_cmdline(|c| c.contains("containerd-shim") && c.contains(&socket));
    assert!(shims.is_empty(), "shims left: {shims:?}");
    assert!(
        existing_cgroups(&cg).is_empty(),
        "cgroups left: {:?}",
        existing_cgroups(&cg)
    );
    assert!(!dir.exists(), "{} left", dir.display());
}
engine_test!(guard_cleans_up_after_a_panic);

/// containerd 1.6's CRI plugin, with its cgroupfs driver, turns a pod cgroup parent that
/// ends in `.slice` into the systemd form `<slice>:cri-containerd:<id>` for the sandbox and
/// each container (issue 18): the runtime named by `BinaryName` must run them, in a cgroup
/// of that name below the shim's own cgroup, as runc does.
fn cri_slice_cgroup_parent(rt: Runtime) {
    use integration_tests::cri::api;
    if !have("containerd") || !have("ctr") || !have("containerd-shim-runc-v2") {
        return;
    }
    let Some(bin) = rt.path() else { return };
    let cd = Containerd::start_with_cri(&bin);
    cd.import_image("k8s.io", CRI_SANDBOX_IMAGE, &["sleep", "1000000"]);
    cd.import_image("k8s.io", CTR_IMAGE, &["sh"]);
    let slice = format!(
        "rrunt-besteffort-pod{}_{}.slice",
        std::process::id(),
        rt.name()
    );
    let names = std::sync::Mutex::new(Vec::<String>::new());
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tokio.block_on(async {
            let mut client = None;
            let deadline = std::time::Instant::now() + scaled(Duration::from_secs(30));
            while client.is_none() {
                if let Ok(mut c) = integration_tests::cri::Client::connect(&cd.socket).await {
                    if c.runtime
                        .version(api::VersionRequest::default())
                        .await
                        .is_ok()
                    {
                        client = Some(c);
                        break;
                    }
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the CRI plugin did not come up:\n{}",
                    log_tail(&cd)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let mut client = client.expect("a CRI client");
            let pod_cfg = api::PodSandboxConfig {
                metadata: Some(api::PodSandboxMetadata {
                    name: "slice".into(),
                    uid: "slice-uid".into(),
                    namespace: "default".into(),
                    attempt: 0,
                }),
                linux: Some(api::LinuxPodSandboxConfig {
                    cgroup_parent: format!("/kubepods.slice/{slice}"),
                    security_context: Some(api::LinuxSandboxSecurityContext {
                        namespace_options: Some(api::NamespaceOption {
                            network: api::NamespaceMode::Node as i32,
                            pid: api::NamespaceMode::Pod as i32,
                            ipc: api::NamespaceMode::Pod as i32,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let pod = bounded(
                "RunPodSandbox",
                120,
                client.runtime.run_pod_sandbox(api::RunPodSandboxRequest {
                    config: Some(pod_cfg.clone()),
                    runtime_handler: CRI_RUNTIME.into(),
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", log_tail(&cd)))
            .into_inner()
            .pod_sandbox_id;
            names
                .lock()
                .unwrap()
                .push(format!("{slice}:cri-containerd:{pod}"));
            let c_cfg = api::ContainerConfig {
                metadata: Some(api::ContainerMetadata {
                    name: "app".into(),
                    attempt: 0,
                }),
                image: Some(api::ImageSpec {
                    image: CTR_IMAGE.into(),
                    ..Default::default()
                }),
                command: ["sleep", "1000"].map(String::from).to_vec(),
                linux: Some(api::LinuxContainerConfig::default()),
                ..Default::default()
            };
            let cid = bounded(
                "CreateContainer",
                60,
                client
                    .runtime
                    .create_container(api::CreateContainerRequest {
                        pod_sandbox_id: pod.clone(),
                        config: Some(c_cfg),
                        sandbox_config: Some(pod_cfg),
                    }),
            )
            .await
            .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", log_tail(&cd)))
            .into_inner()
            .container_id;
            let name = format!("{slice}:cri-containerd:{cid}");
            names.lock().unwrap().push(name.clone());
            bounded(
                "StartContainer",
                60,
                client.runtime.start_container(api::StartContainerRequest {
                    container_id: cid.clone(),
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("StartContainer: {e}\n{}", log_tail(&cd)));
            assert!(
                !pids_in_cgroup(&name).is_empty(),
                "no process in a cgroup named {name:?}"
            );
            bounded(
                "StopPodSandbox",
                60,
                client.runtime.stop_pod_sandbox(api::StopPodSandboxRequest {
                    pod_sandbox_id: pod.clone(),
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("StopPodSandbox: {e}\n{}", log_tail(&cd)));
            bounded(
                "RemovePodSandbox",
                60,
                client
                    .runtime
                    .remove_pod_sandbox(api::RemovePodSandboxRequest {
                        pod_sandbox_id: pod.clone(),
                    }),
            )
            .await
            .unwrap_or_else(|e| panic!("RemovePodSandbox: {e}\n{}", log_tail(&cd)));
        })
    }));
    let names = names.into_inner().unwrap();
    let left: Vec<PathBuf> = names.iter().flat_map(|n| existing_cgroups(n)).collect();
    drop(cd);
    for n in &names {
        remove_cgroups(n);
    }
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
    assert!(
        left.is_empty(),
        "cgroups left after RemovePodSandbox: {left:?}"
    );
}
engine_test!(cri_slice_cgroup_parent);
