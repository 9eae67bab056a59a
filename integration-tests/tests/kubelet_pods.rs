//! rrun-kubelet, the project's node agent, keeps the pods of a manifest directory at their
//! desired state through rrun-cri, and through containerd 1.6's CRI with runc as the
//! control, on a node of the test's own namespaces (`integration_tests::kubelet::Node`).
//!
//! `lifecycle`: a pod Running and Ready by its readiness probe; `get pods` and `logs`
//! printed as kubectl prints them; a crash-looping container restarted with back-off (1 s
//! base: the gaps between its runs grow) and CrashLoopBackOff with exit code 3 in
//! lastState; OnFailure (Succeeded) and Never (Failed); init containers run in order before
//! the app; an exec liveness probe failing restarts its container; an invalid manifest
//! reported with file, document and field while the others run; a pod beyond `maxPods`
//! refused (OutOfpods) and never started; the manifests removed: everything gone (CRI
//! sandboxes and containers, pod cgroups, log dirs).
//!
//! `adoption`: kill -9 of the agent while a pod runs, and a restart: the same container
//! (id, start time, no restart), no duplicate sandbox.

use std::time::Duration;

use integration_tests::agent::{condition, container_status, Agent};
use integration_tests::cri::{api, Client};
use integration_tests::engines::have;
use integration_tests::kubelet::{start_engine, CgroupRoot, Endpoint, Engine, Node, IMAGE};
use integration_tests::{cgroup_dirs, rfc3339_secs, Value};

fn pod_yaml(name: &str, extra_spec: &str, containers: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n{extra_spec}  containers:\n{containers}"
    )
}

fn ctr(name: &str, script: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    image: {IMAGE}\n    imagePullPolicy: Never\n    command: [sh, -c, {script:?}]\n{extra}"
    )
}

fn state_of<'a>(p: &'a Value, c: &str) -> &'a Value {
    container_status(p, c)
        .map(|s| &s["state"])
        .unwrap_or(&Value::Null)
}

fn skip_endpoint(ep: Endpoint) -> bool {
    ep == Endpoint::Containerd && !(have("containerd") && have("ctr"))
}

async fn cri_items(socket: &std::path::Path) -> (Vec<api::PodSandbox>, Vec<api::Container>) {
    let mut c = Client::connect(socket).await.expect("connect to the CRI");
    let pods = c
        .runtime
        .list_pod_sandbox(api::ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items;
    let ctrs = c
        .runtime
        .list_containers(api::ListContainersRequest::default())
        .await
        .expect("ListContainers")
        .into_inner()
        .containers;
    (pods, ctrs)
}

/// Pod cgroups (`pod<uid>` dirs) anywhere below the test's cgroup root.
fn pod_cgroups(root: &CgroupRoot) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(d: &std::path::Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let n = e.file_name().to_string_lossy().into_owned();
                if n.starts_with("pod") {
                    out.push(e.path().display().to_string());
                }
                walk(&e.path(), out);
            }
        }
    }
    for d in cgroup_dirs(&root.0) {
        walk(&d, &mut out);
    }
    out
}

/// The contents of every file `name` below `dir`.
fn find_files(dir: &std::path::Path, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(find_files(&p, name));
        } else if e.file_name() == name {
            out.extend(
                std::fs::read_to_string(&p)
                    .ok()
                    .map(|t| t.trim().to_string()),
            );
        }
    }
    out
}

async fn lifecycle(ep: Endpoint) {
    if skip_endpoint(ep) {
        return;
    }
    let tag = format!("{ep:?}").to_lowercase();
    let cgroups = CgroupRoot::new(&format!("agent-{tag}"));
    let node = Node::start();
    let engine = start_engine(ep, &node).await;
    let socket = engine.socket();
    let config = node.dir().join("kubelet-config.yaml");
    std::fs::write(
        &config,
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nmaxPods: 7\nreadOnlyPort: 10255\nfeatureGates: {SomeGate: true}\n",
    )
    .expect("write config");
    let mut agent = Agent::start(
        &node,
        &socket,
        &cgroups,
        &tag,
        &[
            format!("--config={}", config.display()),
            "--backoff-base=1s".into(),
            "--backoff-cap=4s".into(),
        ],
    );
    assert!(
        agent.log_text().contains("featureGates"),
        "no warning about the unknown config field:\n{}",
        agent.log_tail(20)
    );

    // Running and Ready, with a readiness probe that turns true.
    agent.write_manifest(
        "web.yaml",
        &pod_yaml(
            "web",
            "",
            &ctr(
                "main",
                "echo hello from web; touch /tmp/ready; exec sleep 1000000",
                "    readinessProbe:\n      exec: {command: [cat, /tmp/ready]}\n      periodSeconds: 1\n",
            ),
        ),
    );
    // A crash loop, OnFailure, Never, init containers and a failing liveness probe.
    agent.write_manifest(
        "more.yaml",
        &[
            pod_yaml("crash", "", &ctr("main", "echo crashing; exit 3", "")),
            pod_yaml("onfailure", "  restartPolicy: OnFailure\n", &ctr("main", "exit 0", "")),
            pod_yaml("never", "  restartPolicy: Never\n", &ctr("main", "exit 1", "")),
            pod_yaml(
                "inits",
                &format!(
                    "  initContainers:\n{}{}",
                    ctr("first", "sleep 1; echo first", ""),
                    ctr("second", "echo second", "")
                ),
                &ctr("main", "exec sleep 1000000", ""),
            ),
            pod_yaml(
                "unlive",
                "",
                &ctr(
                    "main",
                    "exec sleep 1000000",
                    "    livenessProbe:\n      exec: {command: [cat, /nonexistent]}\n      periodSeconds: 1\n      failureThreshold: 2\n",
                ),
            ),
        ]
        .join("---\n"),
    );
    // Invalid: a string where a number goes, in document 1.
    agent.write_manifest(
        "bad.yaml",
        &format!(
            "{}---\n{}",
            pod_yaml("bad0", "", &ctr("main", "exec sleep 1000000", "")),
            pod_yaml(
                "bad1",
                "",
                &ctr(
                    "main",
                    "exec sleep 1000000",
                    "    ports: [{containerPort: http}]\n"
                )
            )
        ),
    );

    let web = agent.wait_pod(
        "web",
        Duration::from_secs(90),
        "web Running and Ready",
        |p| {
            p["status"]["phase"] == "Running"
                && condition(p, "Ready")
                && condition(p, "ContainersReady")
        },
    );
    assert_eq!(web["status"]["qosClass"], "BestEffort");
    let st = container_status(&web, "main").expect("web's container status");
    assert_eq!(st["ready"], true);
    assert_eq!(st["restartCount"], 0);
    assert!(
        st["containerID"].as_str().unwrap_or("").contains("://"),
        "{st}"
    );

    // The invalid file: named with its document and field; its pods not run.
    let log = agent.log_text();
    assert!(
        log.contains("bad.yaml: document 1: spec.containers[0].ports[0].containerPort"),
        "the invalid manifest's error does not name file, document and field:\n{}",
        agent.log_tail(40)
    );
    assert!(agent.pod("bad0").is_none());

    // Crash loop with back-off.
    let crash = agent.wait_pod(
        "crash",
        Duration::from_secs(120),
        "crash restarted 3 times",
        |p| {
            let Some(st) = container_status(p, "main") else {
                return false;
            };
            st["restartCount"].as_i64().unwrap_or(0) >= 3
                && st["state"]["waiting"]["reason"] == "CrashLoopBackOff"
        },
    );
    {
        let st = container_status(&crash, "main").expect("status");
        assert_eq!(st["lastState"]["terminated"]["exitCode"], 3, "{st}");
        assert_eq!(st["lastState"]["terminated"]["reason"], "Error", "{st}");
        let msg = st["state"]["waiting"]["message"].as_str().unwrap_or("");
        assert!(
            msg.starts_with("back-off ") && msg.contains("container=main"),
            "{msg}"
        );
    }
    // The gaps between runs grow with the back-off (1 s, 2 s, 4 s): from the CRI's view of
    // the two newest instances, the restart came at least a back-off after the exit.
    let (_, ctrs) = cri_items(&socket).await;
    let mut crash_ctrs: Vec<&api::Container> = ctrs
        .iter()
        .filter(|c| c.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some("crash"))
        .collect();
    crash_ctrs.sort_by_key(|c| c.metadata.as_ref().map(|m| m.attempt));
    assert!(
        crash_ctrs.len() <= 2,
        "older exited instances are not collected: {crash_ctrs:?}"
    );
    if crash_ctrs.len() == 2 {
        let mut c = Client::connect(&socket).await.expect("connect");
        let mut st = Vec::new();
        for x in &crash_ctrs {
            st.push(
                c.runtime
                    .container_status(api::ContainerStatusRequest {
                        container_id: x.id.clone(),
                        verbose: false,
                    })
                    .await
                    .expect("ContainerStatus")
                    .into_inner()
                    .status
                    .expect("status"),
            );
        }
        let attempt = st[1].metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
        let gap = Duration::from_nanos((st[1].started_at - st[0].finished_at).max(0) as u64);
        // Restart n (n ≥ 2) waits base × 2^(n-2).
        let want = Duration::from_secs(1 << (attempt.max(2) - 2).min(2));
        assert!(
            gap + Duration::from_millis(100) >= want,
            "restart {attempt} came {gap:?} after the exit; the back-off is {want:?}"
        );
    }

    let p = agent.wait_pod(
        "onfailure",
        Duration::from_secs(60),
        "onfailure Succeeded",
        |p| p["status"]["phase"] == "Succeeded",
    );
    assert_eq!(state_of(&p, "main")["terminated"]["reason"], "Completed");
    assert_eq!(container_status(&p, "main").unwrap()["restartCount"], 0);
    let p = agent.wait_pod("never", Duration::from_secs(60), "never Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(state_of(&p, "main")["terminated"]["exitCode"], 1);
    assert_eq!(container_status(&p, "main").unwrap()["restartCount"], 0);

    // Init containers in order, then the app.
    let p = agent.wait_pod("inits", Duration::from_secs(90), "inits Running", |p| {
        p["status"]["phase"] == "Running" && state_of(p, "main")["running"].is_object()
    });
    let inits = p["status"]["initContainerStatuses"]
        .as_array()
        .expect("init statuses");
    let time = |v: &Value| {
        v.as_str()
            .and_then(rfc3339_secs)
            .unwrap_or_else(|| panic!("not a time: {v} in {p}"))
    };
    let first = &inits[0]["state"]["terminated"];
    let second = &inits[1]["state"]["terminated"];
    assert_eq!(first["exitCode"], 0, "{p}");
    assert_eq!(second["exitCode"], 0, "{p}");
    // rrun-cri may leave out the start time of a container that exited at once; the
    // order then shows in the finish times.
    let second_start = if second["startedAt"].is_string() {
        time(&second["startedAt"])
    } else {
        time(&second["finishedAt"])
    };
    assert!(time(&first["finishedAt"]) <= second_start, "{p}");
    assert!(
        time(&second["finishedAt"]) <= time(&state_of(&p, "main")["running"]["startedAt"]),
        "{p}"
    );
    assert!(condition(&p, "Initialized"));

    // The failing liveness probe restarts the container.
    agent.wait_pod(
        "unlive",
        Duration::from_secs(90),
        "unlive restarted by its liveness probe",
        |p| {
            container_status(p, "main")
                .is_some_and(|s| s["restartCount"].as_i64().unwrap_or(0) >= 1)
        },
    );
    let (code, events) = agent
        .get("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name=unlive")
        .expect("events");
    assert_eq!(code, 200);
    assert!(
        events.contains("failed liveness probe, will be restarted"),
        "{events}"
    );

    // The CLI: kubectl's columns, logs without the CRI prefix, a clear NotFound.
    let out = agent.cli(&["get", "pods"]);
    assert!(out.success(), "{}", out.stderr);
    let header = out.stdout.lines().next().unwrap_or("");
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{}",
        out.stdout
    );
    let web_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("web "))
        .expect("web in get pods");
    let cols: Vec<&str> = web_line.split_whitespace().collect();
    assert_eq!(&cols[1..4], ["1/1", "Running", "0"], "{web_line}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("never ") && l.contains(" Error ")),
        "{}",
        out.stdout
    );
    let out = agent.cli(&["get", "pods", "-o", "wide"]);
    assert!(
        out.stdout
            .lines()
            .next()
            .unwrap_or("")
            .contains("NOMINATED NODE"),
        "{}",
        out.stdout
    );
    let out = agent.cli(&["logs", "web"]);
    assert!(out.success(), "{}", out.stderr);
    assert_eq!(out.stdout, "hello from web\n");
    let out = agent.cli(&["logs", "crash", "--previous"]);
    assert_eq!(out.stdout, "crashing\n", "{}", out.stderr);
    let out = agent.cli(&["get", "pods", "nosuch"]);
    assert!(!out.success());
    assert_eq!(
        out.stderr.trim(),
        "Error from server (NotFound): pods \"nosuch\" not found"
    );
    let out = agent.cli(&["get", "pods", "web", "-o", "json"]);
    let v: Value = serde_json::from_str(&out.stdout).expect("get -o json");
    assert_eq!(v["kind"], "Pod");
    let out = agent.cli(&["describe", "pod", "unlive"]);
    assert!(
        out.stdout.contains("Liveness:") && out.stdout.contains("Unhealthy"),
        "{}",
        out.stdout
    );

    // The read-only port on the node's loopback: /pods (a v1 PodList) and /metrics.
    let pods = node
        .run_net(
            &["busybox", "wget", "-qO-", "http://127.0.0.1:10255/pods"],
            Duration::from_secs(30),
        )
        .expect("wget /pods");
    let list: Value = serde_json::from_str(&pods.stdout).expect("/pods is JSON");
    assert_eq!(list["kind"], "PodList");
    assert!(list["items"]
        .as_array()
        .is_some_and(|i| i.iter().any(|p| p["metadata"]["name"] == "web")));
    let metrics = node
        .run_net(
            &["busybox", "wget", "-qO-", "http://127.0.0.1:10255/metrics"],
            Duration::from_secs(30),
        )
        .expect("wget /metrics");
    for m in [
        "kubelet_running_pods ",
        "kubelet_running_containers ",
        "kubelet_pod_start_duration_seconds_bucket",
        "prober_probe_total{",
    ] {
        assert!(
            metrics.stdout.contains(m),
            "{m} missing from /metrics:\n{}",
            metrics.stdout
        );
    }
    eprintln!(
        "get pods -o wide:\n{}",
        agent.cli(&["get", "pods", "-o", "wide"]).stdout
    );
    eprintln!(
        "describe pod crash:\n{}",
        agent.cli(&["describe", "pod", "crash"]).stdout
    );

    // maxPods 7: six pods admitted (web, five of more.yaml); two more: the seventh fits,
    // the eighth is refused and never started.
    // The seventh: Guaranteed, its limits in the container's cgroup below the pod's.
    agent.write_manifest(
        "extra.yaml",
        &pod_yaml(
            "seventh",
            "",
            &ctr(
                "main",
                "exec sleep 1000000",
                "    resources:\n      limits: {cpu: 250m, memory: 64Mi}\n",
            ),
        ),
    );
    let p = agent.wait_pod("seventh", Duration::from_secs(60), "seventh Running", |p| {
        p["status"]["phase"] == "Running"
    });
    assert_eq!(p["status"]["qosClass"], "Guaranteed");
    let uid = p["metadata"]["uid"].as_str().expect("uid").to_string();
    let pod_cg: Vec<String> = pod_cgroups(&cgroups)
        .into_iter()
        .filter(|d| d.ends_with(&format!("kubepods/pod{uid}")))
        .collect();
    assert!(
        !pod_cg.is_empty(),
        "no kubepods/pod<uid> cgroup under {}: {:?}",
        cgroups.0,
        pod_cgroups(&cgroups)
    );
    let mut limits = Vec::new();
    for d in &pod_cg {
        for f in [
            "memory.max",
            "memory.limit_in_bytes",
            "cpu.max",
            "cpu.cfs_quota_us",
        ] {
            limits.extend(find_files(std::path::Path::new(d), f));
        }
    }
    assert!(
        limits.iter().any(|v| v == "67108864"),
        "no 64Mi memory limit below the pod cgroup: {limits:?}"
    );
    assert!(
        limits.iter().any(|v| v == "25000 100000" || v == "25000"),
        "no 250m cpu quota below the pod cgroup: {limits:?}"
    );
    agent.write_manifest(
        "over.yaml",
        &pod_yaml("eighth", "", &ctr("main", "exec sleep 1000000", "")),
    );
    let p = agent.wait_pod("eighth", Duration::from_secs(30), "eighth refused", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(p["status"]["reason"], "OutOfpods", "{p}");
    let (sandboxes, _) = cri_items(&socket).await;
    assert!(
        !sandboxes
            .iter()
            .any(|s| s.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some("eighth")),
        "the refused pod has a sandbox"
    );

    // All manifests removed: every pod goes, and nothing is left.
    for f in [
        "web.yaml",
        "more.yaml",
        "bad.yaml",
        "extra.yaml",
        "over.yaml",
    ] {
        agent.remove_manifest(f);
    }
    for name in [
        "web",
        "crash",
        "onfailure",
        "never",
        "inits",
        "unlive",
        "seventh",
        "eighth",
    ] {
        agent.wait_gone(name, Duration::from_secs(90));
    }
    let (sandboxes, ctrs) = cri_items(&socket).await;
    assert!(sandboxes.is_empty(), "sandboxes left: {sandboxes:?}");
    assert!(ctrs.is_empty(), "containers left: {ctrs:?}");
    assert_eq!(
        pod_cgroups(&cgroups),
        Vec::<String>::new(),
        "pod cgroups left"
    );
    let logs: Vec<_> = std::fs::read_dir(&agent.logs_dir)
        .expect("logs dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(logs.is_empty(), "pod log dirs left: {logs:?}");
    agent.assert_alive();
    drop(agent);
    drop(engine);
}

async fn adoption(ep: Endpoint) {
    if skip_endpoint(ep) {
        return;
    }
    let tag = format!("{ep:?}-adopt").to_lowercase();
    let cgroups = CgroupRoot::new(&tag);
    let node = Node::start();
    let engine = start_engine(ep, &node).await;
    let socket = engine.socket();
    let mut agent = Agent::start(
        &node,
        &socket,
        &cgroups,
        &tag,
        &[
            "--read-only-port=0".into(),
            "--backoff-base=2s".into(),
            "--backoff-cap=8s".into(),
        ],
    );
    agent.write_manifest(
        "a.yaml",
        &pod_yaml("steady", "", &ctr("main", "exec sleep 1000000", "")),
    );
    agent.write_manifest("b.yaml", &pod_yaml("loop", "", &ctr("main", "exit 2", "")));
    let before = agent.wait_pod("steady", Duration::from_secs(90), "steady Running", |p| {
        p["status"]["phase"] == "Running" && condition(p, "Ready")
    });
    let id = container_status(&before, "main").unwrap()["containerID"].clone();
    let looped = agent.wait_pod(
        "loop",
        Duration::from_secs(60),
        "loop restarted twice",
        |p| {
            container_status(p, "main")
                .is_some_and(|s| s["restartCount"].as_i64().unwrap_or(0) >= 2)
        },
    );
    let restarts = container_status(&looped, "main").unwrap()["restartCount"]
        .as_i64()
        .unwrap();
    agent.kill9();
    agent.restart();
    let after = agent.wait_pod(
        "steady",
        Duration::from_secs(60),
        "steady Running after the restart",
        |p| p["status"]["phase"] == "Running" && condition(p, "Ready"),
    );
    let st = container_status(&after, "main").unwrap();
    assert_eq!(st["containerID"], id, "the container was not adopted");
    assert_eq!(st["restartCount"], 0);
    assert_eq!(before["metadata"]["uid"], after["metadata"]["uid"]);
    // The crash loop's restart count (and back-off) carried over.
    let p = agent.pod("loop").expect("loop after the restart");
    let now = container_status(&p, "main")
        .map(|s| s["restartCount"].as_i64().unwrap_or(0))
        .unwrap_or(0);
    assert!(
        now >= restarts,
        "restart count went from {restarts} to {now}"
    );
    agent.remove_manifest("b.yaml");
    agent.wait_gone("loop", Duration::from_secs(60));
    let (sandboxes, ctrs) = cri_items(&socket).await;
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    assert_eq!(ctrs.len(), 1, "{ctrs:?}");

    // The CRI server killed: Unknown meanwhile; back: the same container, not restarted.
    if let Engine::RrunCri(server) = &engine {
        server.kill9();
        agent.wait_pod("steady", Duration::from_secs(30), "steady Unknown", |p| {
            p["status"]["phase"] == "Unknown"
        });
        server.restart().await;
        let p = agent.wait_pod(
            "steady",
            Duration::from_secs(60),
            "steady Running again",
            |p| p["status"]["phase"] == "Running" && condition(p, "Ready"),
        );
        assert_eq!(container_status(&p, "main").unwrap()["containerID"], id);
        assert_eq!(container_status(&p, "main").unwrap()["restartCount"], 0);
    }

    // apply -f / logs -f / delete -f through the CLI.
    let file = node.dir().join("talker.yaml");
    std::fs::write(
        &file,
        pod_yaml(
            "talker",
            "  restartPolicy: Never\n",
            &ctr("main", "for i in 1 2 3; do echo line $i; sleep 1; done", ""),
        ),
    )
    .expect("write talker.yaml");
    let file_s = file.display().to_string();
    let out = agent.cli(&["apply", "-f", &file_s]);
    assert_eq!(out.stdout, "pod/talker created\n", "{}", out.stderr);
    let out = agent.cli(&["apply", "-f", &file_s]);
    assert_eq!(out.stdout, "pod/talker unchanged\n", "{}", out.stderr);
    agent.wait_pod("talker", Duration::from_secs(60), "talker started", |p| {
        state_of(p, "main")["running"].is_object() || state_of(p, "main")["terminated"].is_object()
    });
    let out = agent.cli(&["logs", "-f", "talker"]);
    assert_eq!(out.stdout, "line 1\nline 2\nline 3\n", "{}", out.stderr);
    let out = agent.cli(&["delete", "-f", &file_s]);
    assert_eq!(out.stdout, "pod \"talker\" deleted\n", "{}", out.stderr);
    assert!(
        agent.pod("talker").is_none(),
        "delete returned before the pod was gone"
    );
    let out = agent.cli(&["delete", "-f", &file_s]);
    assert_eq!(
        out.stderr.trim(),
        "Error from server (NotFound): pods \"talker\" not found"
    );
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\nspec: {containers: [{name: c}]}\n",
    )
    .expect("write");
    let out = agent.cli(&["apply", "-f", &file_s]);
    assert!(
        !out.success()
            && out
                .stderr
                .contains("spec.containers[0].image: Required value"),
        "{}",
        out.stderr
    );

    // httpGet and tcpSocket probes, to a hostNetwork pod's server on the node's loopback.
    let server = "mkdir -p /tmp/www && echo ok > /tmp/www/index.html && exec httpd -f -p 127.0.0.1:18080 -h /tmp/www";
    agent.write_manifest(
        "h.yaml",
        &[
            pod_yaml(
                "httpd",
                "  hostNetwork: true\n",
                &ctr(
                    "main",
                    server,
                    "    readinessProbe:\n      httpGet: {port: 18080, path: /index.html}\n      periodSeconds: 1\n    livenessProbe:\n      tcpSocket: {port: 18080}\n      periodSeconds: 1\n",
                ),
            ),
            pod_yaml(
                "http404",
                "  hostNetwork: true\n",
                &ctr(
                    "main",
                    "exec sleep 1000000",
                    "    readinessProbe:\n      httpGet: {port: 18080, path: /missing}\n      periodSeconds: 1\n",
                ),
            ),
        ]
        .join("---\n"),
    );
    agent.wait_pod(
        "httpd",
        Duration::from_secs(60),
        "httpd Ready by httpGet",
        |p| condition(p, "Ready"),
    );
    let deadline = std::time::Instant::now() + integration_tests::scaled(Duration::from_secs(60));
    loop {
        let (_, ev) = agent
            .get("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name=http404")
            .expect("events");
        if ev.contains("HTTP probe failed with statuscode: 404") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no 404 probe failure event: {ev}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let p = agent.pod("http404").expect("http404");
    assert!(!condition(&p, "Ready"), "{p}");
    agent.remove_manifest("h.yaml");
    agent.wait_gone("httpd", Duration::from_secs(60));
    agent.wait_gone("http404", Duration::from_secs(60));

    // A partial write (an editor's, not atomic) is an error until the file is whole.
    let whole = pod_yaml("halfway", "", &ctr("main", "exec sleep 1000000", ""));
    std::fs::write(agent.manifests.join("c.yaml"), &whole[..whole.len() / 2]).expect("write");
    std::fs::write(agent.manifests.join("c.yaml"), &whole).expect("write");
    agent.wait_pod("halfway", Duration::from_secs(60), "halfway Running", |p| {
        p["status"]["phase"] == "Running"
    });
    agent.remove_manifest("c.yaml");
    agent.wait_gone("halfway", Duration::from_secs(60));

    // An edit replaces the pod: a new uid and container, the old one gone.
    agent.write_manifest(
        "a.yaml",
        &pod_yaml("steady", "", &ctr("main", "exec sleep 999999", "")),
    );
    let edited = agent.wait_pod("steady", Duration::from_secs(60), "steady replaced", |p| {
        p["metadata"]["uid"] != before["metadata"]["uid"]
            && p["status"]["phase"] == "Running"
            && container_status(p, "main").is_some_and(|s| s["containerID"] != id)
    });
    assert_eq!(
        edited["spec"]["containers"][0]["command"][2],
        "exec sleep 999999"
    );
    let old_uid = before["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let deadline = std::time::Instant::now() + integration_tests::scaled(Duration::from_secs(60));
    loop {
        let (sandboxes, _) = cri_items(&socket).await;
        let old_left = sandboxes
            .iter()
            .any(|s| s.labels.get("io.kubernetes.pod.uid") == Some(&old_uid));
        if !old_left {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the edited pod's old sandbox stays"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    agent.remove_manifest("a.yaml");
    agent.wait_gone("steady", Duration::from_secs(60));
    let (sandboxes, ctrs) = cri_items(&socket).await;
    assert!(
        sandboxes.is_empty() && ctrs.is_empty(),
        "left: {sandboxes:?} {ctrs:?}"
    );
    // The CLI without an agent: a clear error.
    agent.kill9();
    let out = agent.cli(&["get", "pods"]);
    assert!(!out.success());
    assert!(
        out.stderr.contains("is rrun-kubelet running"),
        "{}",
        out.stderr
    );
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_rrun_cri() {
    lifecycle(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_containerd() {
    lifecycle(Endpoint::Containerd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_rrun_cri() {
    adoption(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_containerd() {
    adoption(Endpoint::Containerd).await;
}

/// The benchmark of `bench/agent.sh` (ignored in test runs): `RRUN_AGENT_BENCH_PODS` pods
/// (default 1), one manifest file each, written at once; each pod's time from its file
/// written to Ready (readiness exec probe every 10 s) as seen on the API; then the agent's
/// RSS and CPU over 30 s of steady state with those pods probed.
async fn bench(ep: Endpoint) {
    if skip_endpoint(ep) {
        return;
    }
    let n: usize = std::env::var("RRUN_AGENT_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let tag = format!("{ep:?}-bench").to_lowercase();
    let cgroups = CgroupRoot::new(&tag);
    let node = Node::start();
    let engine = start_engine(ep, &node).await;
    let socket = engine.socket();
    let mut agent = Agent::start(
        &node,
        &socket,
        &cgroups,
        &tag,
        &["--read-only-port=0".into(), "--healthz-port=0".into()],
    );
    let probe = "    readinessProbe:\n      exec: {command: [\"true\"]}\n      periodSeconds: 10\n";
    let mut written = Vec::new();
    for i in 0..n {
        let name = format!("b{i}");
        agent.write_manifest(
            &format!("{name}.yaml"),
            &pod_yaml(&name, "", &ctr("main", "exec sleep 1000000", probe)),
        );
        written.push((name, std::time::Instant::now()));
    }
    let mut ready: std::collections::HashMap<String, Duration> = Default::default();
    let deadline = std::time::Instant::now() + Duration::from_secs(600);
    while ready.len() < n {
        agent.assert_alive();
        assert!(
            std::time::Instant::now() < deadline,
            "not all pods Ready in 600 s"
        );
        if let Some((200, body)) = agent.get("/api/v1/pods") {
            let list: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            for p in list["items"].as_array().into_iter().flatten() {
                let name = p["metadata"]["name"].as_str().unwrap_or("");
                if condition(p, "Ready") && !ready.contains_key(name) {
                    if let Some((_, t)) = written.iter().find(|(w, _)| w == name) {
                        ready.insert(name.to_string(), t.elapsed());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut lat: Vec<Duration> = ready.values().copied().collect();
    lat.sort();
    let pct = |q: f64| lat[((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1];
    let all = written[0].1.elapsed();
    let pid = agent.pid();
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        // utime and stime: fields 14 and 15, i.e. 12th and 13th after the state.
        f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)
    };
    // Steady state: 30 s with every pod probed every 10 s.
    tokio::time::sleep(Duration::from_secs(10)).await;
    let t0 = ticks();
    let w = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(30)).await;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = (ticks() - t0) as f64 / hz / w.elapsed().as_secs_f64() * 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<String>())
            .unwrap_or_default()
    };
    let (rss, anon, file, threads) = (
        field("VmRSS:"),
        field("RssAnon:"),
        field("RssFile:"),
        field("Threads:"),
    );
    // Where the resident memory is, mapping by mapping, for whoever works on the budget.
    if let Ok(path) = std::env::var("RRUN_AGENT_BENCH_SMAPS") {
        let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
        let _ = std::fs::write(path, smaps);
    }
    println!(
        "BENCH {ep:?} pods={n} ready_median={:.2}s ready_p90={:.2}s all_ready={:.2}s agent_rss={rss} (anon {anon}, file {file}, {threads} threads) agent_cpu={cpu:.2}%",
        pct(0.5).as_secs_f64(),
        pct(0.9).as_secs_f64(),
        all.as_secs_f64(),
    );
    for (name, _) in &written {
        agent.remove_manifest(&format!("{name}.yaml"));
    }
    for (name, _) in &written {
        agent.wait_gone(name, Duration::from_secs(300));
    }
    drop(agent);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/agent.sh runs it"]
async fn bench_rrun_cri() {
    bench(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/agent.sh runs it"]
async fn bench_containerd() {
    bench(Endpoint::Containerd).await;
}
