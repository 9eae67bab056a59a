//! rrun-kubelet's eviction manager and pod-level cgroups, through rrun-cri and through
//! containerd 1.6's CRI with runc as the control, on a node of the test's own namespaces.
//!
//! The node's allocatable memory is made small and known (`kubeReserved` = capacity −
//! 400Mi, `evictionHard: memory.available: 100Mi`, so 300Mi for pods), which makes the
//! kubelet's allocatable signal (pods' working set against it) independent of whatever
//! else the machine runs. A Guaranteed and a Burstable pod run within their requests; a
//! BestEffort pod fills 320Mi of a memory-backed emptyDir: it is evicted (Failed, reason
//! Evicted, the kubelet's message naming the container), its sandbox goes, the node reports
//! MemoryPressure until the transition period after the pressure passed; the other two keep
//! their containers. While the node has MemoryPressure a new BestEffort pod is rejected at
//! admission (reason Evicted) and a Burstable one is admitted. A kill -9 and restart of the agent does not start the evicted pod
//! again. The pods' own cgroups carry the kubelet's pod-level limits.

use std::path::{Path, PathBuf};
use std::time::Duration;

use integration_tests::agent::{condition, container_status, Agent};
use integration_tests::cri::{api, Client};
use integration_tests::engines::have;
use integration_tests::kubelet::{start_engine, CgroupRoot, Endpoint, Node, IMAGE};
use integration_tests::Value;

fn pod_yaml(name: &str, resources: &str, script: &str, volume: bool) -> String {
    let (mounts, volumes) = if volume {
        (
            "    volumeMounts: [{name: fill, mountPath: /fill}]\n",
            "  volumes: [{name: fill, emptyDir: {medium: Memory, sizeLimit: 400Mi}}]\n",
        )
    } else {
        ("", "")
    };
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 30\n  containers:\n  - name: {name}\n    image: {IMAGE}\n    imagePullPolicy: Never\n    command: [sh, -c, {script:?}]\n{resources}{mounts}{volumes}"
    )
}

/// MemTotal of /proc/meminfo in KiB: the node's memory capacity, as the agent reads it.
fn capacity_kib() -> i64 {
    std::fs::read_to_string("/proc/meminfo")
        .expect("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemTotal")
}

async fn sandboxes_named(socket: &Path, name: &str) -> Vec<api::PodSandbox> {
    let mut c = Client::connect(socket).await.expect("connect to the CRI");
    c.runtime
        .list_pod_sandbox(api::ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .into_iter()
        .filter(|s| s.metadata.as_ref().is_some_and(|m| m.name == name))
        .collect()
}

fn memory_pressure(agent: &Agent) -> Option<String> {
    let node = agent.get_json("/api/v1/nodes/rrun-node")?;
    node["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "MemoryPressure")
        .and_then(|c| c["status"].as_str().map(str::to_string))
}

/// A file of the pod's own cgroup (`<root>/kubepods[/class]/pod<uid>`), for `controller`
/// on cgroup v1 or the unified hierarchy on v2.
fn pod_cgroup_file(
    root: &CgroupRoot,
    class: &str,
    uid: &str,
    controller: &str,
    file: &str,
) -> String {
    let base = Path::new("/sys/fs/cgroup");
    let hierarchy: PathBuf = if base.join("cgroup.controllers").exists() {
        base.to_path_buf()
    } else {
        std::fs::read_dir(base)
            .expect("/sys/fs/cgroup")
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                !p.is_symlink()
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.split(',').any(|c| c == controller))
            })
            .unwrap_or_else(|| panic!("no {controller} hierarchy"))
    };
    let p = hierarchy
        .join(&root.0)
        .join("kubepods")
        .join(class)
        .join(format!("pod{uid}"))
        .join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn uid(p: &Value) -> String {
    p["metadata"]["uid"].as_str().expect("uid").to_string()
}

fn container_id(p: &Value, c: &str) -> Value {
    container_status(p, c).expect("container status")["containerID"].clone()
}

async fn eviction(ep: Endpoint) {
    if ep == Endpoint::Containerd && !(have("containerd") && have("ctr")) {
        return;
    }
    let tag = format!("{ep:?}-evict").to_lowercase();
    let cgroups = CgroupRoot::new(&tag);
    let node = Node::start();
    let engine = start_engine(ep, &node).await;
    let socket = engine.socket();
    let config = node.dir().join("evict-config.yaml");
    let reserved = capacity_kib() - 400 * 1024;
    std::fs::write(
        &config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             kubeReserved: {{memory: {reserved}Ki}}\nevictionHard: {{memory.available: 100Mi}}\n\
             evictionPressureTransitionPeriod: 20s\n"
        ),
    )
    .expect("write config");
    let mut agent = Agent::start(
        &node,
        &socket,
        &cgroups,
        &tag,
        &[
            format!("--config={}", config.display()),
            "--read-only-port=10255".into(),
        ],
    );

    agent.write_manifest(
        "steady.yaml",
        &pod_yaml(
            "steady",
            "    resources: {limits: {cpu: 100m, memory: 64Mi}}\n",
            "exec sleep 1000000",
            false,
        ),
    );
    agent.write_manifest(
        "modest.yaml",
        &pod_yaml(
            "modest",
            "    resources: {requests: {cpu: 50m, memory: 32Mi}}\n",
            "exec sleep 1000000",
            false,
        ),
    );
    let running = |p: &Value| p["status"]["phase"] == "Running" && condition(p, "Ready");
    let steady = agent.wait_pod("steady", Duration::from_secs(90), "steady Running", running);
    let modest = agent.wait_pod("modest", Duration::from_secs(90), "modest Running", running);
    assert_eq!(steady["status"]["qosClass"], "Guaranteed");
    assert_eq!(modest["status"]["qosClass"], "Burstable");

    // The pod-level limits of the kubelet's pod container manager.
    let (su, mu) = (uid(&steady), uid(&modest));
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        assert_eq!(
            pod_cgroup_file(&cgroups, "", &su, "", "cpu.max"),
            "10000 100000"
        );
        assert_eq!(
            pod_cgroup_file(&cgroups, "", &su, "", "memory.max"),
            "67108864"
        );
        assert_eq!(
            pod_cgroup_file(&cgroups, "burstable", &mu, "", "cpu.max"),
            "max 100000"
        );
        assert_eq!(
            pod_cgroup_file(&cgroups, "burstable", &mu, "", "memory.max"),
            "max"
        );
    } else {
        assert_eq!(
            pod_cgroup_file(&cgroups, "", &su, "cpu", "cpu.shares"),
            "102"
        );
        assert_eq!(
            pod_cgroup_file(&cgroups, "", &su, "cpu", "cpu.cfs_quota_us"),
            "10000"
        );
        assert_eq!(
            pod_cgroup_file(&cgroups, "", &su, "memory", "memory.limit_in_bytes"),
            "67108864"
        );
        assert_eq!(
            pod_cgroup_file(&cgroups, "burstable", &mu, "cpu", "cpu.shares"),
            "51"
        );
        assert_eq!(
            pod_cgroup_file(&cgroups, "burstable", &mu, "cpu", "cpu.cfs_quota_us"),
            "-1"
        );
    }
    assert_eq!(memory_pressure(&agent).as_deref(), Some("False"));

    // The BestEffort pod outgrows what the node has for pods.
    agent.write_manifest(
        "hog.yaml",
        &pod_yaml(
            "hog",
            "",
            "dd if=/dev/zero of=/fill/data bs=1M count=320 && exec sleep 1000000",
            true,
        ),
    );
    let hog = agent.wait_pod("hog", Duration::from_secs(120), "hog evicted", |p| {
        p["status"]["reason"] == "Evicted"
    });
    assert_eq!(hog["status"]["phase"], "Failed", "{hog:#}");
    let msg = hog["status"]["message"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("The node was low on resource: memory. Threshold quantity: 100Mi")
            && msg.contains("Container hog was using"),
        "{msg}"
    );
    assert_eq!(
        memory_pressure(&agent).as_deref(),
        Some("True"),
        "MemoryPressure right after the eviction"
    );
    // Admission under MemoryPressure, as the kubelet's eviction manager admits: a new
    // BestEffort pod is rejected (never started), a Burstable one runs. The pressure holds
    // until the hog's memory is freed with its sandbox, then the transition period.
    agent.write_manifest(
        "late-be.yaml",
        &pod_yaml("late-be", "", "exec sleep 1000000", false),
    );
    agent.write_manifest(
        "late-burst.yaml",
        &pod_yaml(
            "late-burst",
            "    resources: {requests: {memory: 16Mi}}\n",
            "exec sleep 1000000",
            false,
        ),
    );
    let late_be = agent.wait_pod(
        "late-be",
        Duration::from_secs(60),
        "late-be rejected",
        |p| p["status"]["phase"] == "Failed",
    );
    assert_eq!(late_be["status"]["reason"], "Evicted", "{late_be:#}");
    assert_eq!(
        late_be["status"]["message"],
        "Pod was rejected: The node had condition: [MemoryPressure]. ",
        "{late_be:#}"
    );
    let late_burst = agent.wait_pod(
        "late-burst",
        Duration::from_secs(90),
        "late-burst Running",
        running,
    );
    assert_eq!(late_burst["status"]["qosClass"], "Burstable");
    assert!(sandboxes_named(&socket, "late-be").await.is_empty());
    let events = agent
        .get_json("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name=late-be")
        .expect("events");
    assert!(
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reason"] == "Evicted"
                && e["message"] == "The node had condition: [MemoryPressure]. "),
        "{events:#}"
    );
    for p in ["late-be", "late-burst"] {
        agent.remove_manifest(&format!("{p}.yaml"));
        agent.wait_gone(p, Duration::from_secs(90));
    }
    let events = agent
        .get_json("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name=hog")
        .expect("events");
    assert!(
        events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["reason"] == "Evicted" && e["type"] == "Warning"),
        "{events:#}"
    );
    // Its containers were killed and its sandbox removed.
    let deadline = std::time::Instant::now() + integration_tests::scaled(Duration::from_secs(60));
    while !sandboxes_named(&socket, "hog").await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the evicted pod's sandbox is still there\n{}",
            agent.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The others kept their containers.
    for (name, before) in [("steady", &steady), ("modest", &modest)] {
        let now = agent.pod(name).expect(name);
        assert_eq!(now["status"]["phase"], "Running", "{name}");
        assert_eq!(
            container_id(&now, name),
            container_id(before, name),
            "{name}"
        );
        assert_eq!(container_status(&now, name).expect(name)["restartCount"], 0);
    }
    // The pressure passes with the transition period.
    agent.wait_for(
        "/api/v1/nodes/rrun-node",
        Duration::from_secs(90),
        "MemoryPressure False",
        |n| {
            n["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "MemoryPressure" && c["status"] == "False")
        },
    );
    let text = node
        .run_net(
            &["busybox", "wget", "-qO-", "http://127.0.0.1:10255/metrics"],
            Duration::from_secs(30),
        )
        .expect("wget /metrics")
        .stdout;
    assert!(
        text.lines()
            .any(|l| l
                .starts_with("kubelet_evictions_total{eviction_signal=\"memory.available\"} 1")),
        "{text}"
    );

    // A new agent does not start the evicted pod again.
    agent.kill9();
    agent.restart();
    agent.wait_pod("steady", Duration::from_secs(60), "steady adopted", running);
    let hog = agent.wait_pod("hog", Duration::from_secs(60), "hog still evicted", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(hog["status"]["reason"], "Evicted");
    assert!(sandboxes_named(&socket, "hog").await.is_empty());

    for m in ["steady.yaml", "modest.yaml", "hog.yaml"] {
        agent.remove_manifest(m);
    }
    for p in ["steady", "modest", "hog"] {
        agent.wait_gone(p, Duration::from_secs(90));
    }
    drop(agent);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_rrun_cri() {
    eviction(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eviction_containerd() {
    eviction(Endpoint::Containerd).await;
}
