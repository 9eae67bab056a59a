//! A stock kubelet (Debian bookworm's v1.20, built by `scripts/kubelet.sh`, unmodified)
//! runs static pods from `--pod-manifest-path` through rrun-cri, and through containerd
//! 1.6's CRI as the control, on a node made of namespaces of the test's own (see
//! `integration_tests::kubelet`): the machine's sysctls and iptables are the same after.
//!
//! Each endpoint, in one kubelet run: a hostNetwork pod Running; a pod whose container
//! exits 3, restarted with the kubelet's back-off (the gaps between its container start
//! times of attempts 1 to 4 near 10 s, 20 s, 40 s) and `lastState.terminated.exitCode` 3; a readiness exec probe
//! making a pod Ready; a pod on a CNI bridge (Debian's bridge and host-local plugins)
//! whose IP answers a ping from the node; then the
//! manifests removed: the pods stopped, removed by the kubelet's container GC, and nothing
//! left (pod cgroups, processes, mounts, veths).
//!
//! The pod status comes from the kubelet's read-only port (`/pods`, which carries static
//! pods' status in standalone mode), on the node's loopback. Skips loudly when the kubelet
//! cannot be built (no deb-src reachable) or containerd is not installed.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use integration_tests::cri::{self, api, Client};
use integration_tests::engines::have;
use integration_tests::kubelet::{
    container, diff_lines, find_pod, host_iptables, host_sysctls, kubelet_binary, kubelet_pods,
    pod, start_engine, CgroupRoot, Endpoint, Engine, Kubelet, Node, SUBNET_PREFIX,
};
use integration_tests::{json, scaled, Value};

fn skip(why: &str) {
    eprintln!("SKIPPED: {why}");
    println!("SKIPPED: {why}");
}

/// Polls `/pods` until `done` returns `Some`, checking that the kubelet lives.
fn wait_pods<T>(
    kubelet: &mut Kubelet,
    node: &Node,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&Value) -> Option<T>,
) -> T {
    let timeout = scaled(timeout);
    let deadline = Instant::now() + timeout;
    let mut last = Value::Null;
    loop {
        kubelet.assert_alive();
        if let Some(pods) = kubelet_pods(node) {
            if let Some(t) = done(&pods) {
                return t;
            }
            last = pods;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {timeout:?} waiting for {what}; last /pods:\n{}\n{}",
                serde_json::to_string_pretty(&last).unwrap_or_default(),
                kubelet.log_tail(60)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn container_status<'a>(pods: &'a Value, name: &str) -> Option<&'a Value> {
    find_pod(pods, name)?["status"]["containerStatuses"]
        .as_array()?
        .first()
}

fn condition(pods: &Value, name: &str, kind: &str) -> Option<bool> {
    find_pod(pods, name)?["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)
        .map(|c| c["status"] == "True")
}

async fn runtime_counts(socket: &std::path::Path) -> (usize, usize) {
    let mut c = Client::connect(socket).await.expect("connect the endpoint");
    let sandboxes = c
        .runtime
        .list_pod_sandbox(api::ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .len();
    let containers = c
        .runtime
        .list_containers(api::ListContainersRequest::default())
        .await
        .expect("ListContainers")
        .into_inner()
        .containers
        .len();
    (sandboxes, containers)
}

async fn stock_kubelet(ep: Endpoint) {
    let bin = match kubelet_binary() {
        Ok(b) => b,
        Err(why) => {
            // CI's setup builds it: there, not having it is a failure, not a skip.
            assert!(
                std::env::var_os("CI").is_none(),
                "the stock kubelet could not be built (scripts/kubelet.sh): {why}"
            );
            skip(&format!(
                "the stock kubelet could not be built (scripts/kubelet.sh): {why}"
            ));
            return;
        }
    };
    if ep == Endpoint::Containerd && !(have("containerd") && have("ctr")) {
        return;
    }
    let started = Instant::now();
    let sysctls_before = host_sysctls();
    let iptables_before = host_iptables();
    {
        // Dropped in reverse: the kubelet, the engine, the node, the cgroups.
        let tag = format!("{ep:?}").to_lowercase();
        let cgroups = CgroupRoot::new(&tag);
        let node = Node::start();
        let engine = start_engine(ep, &node).await;
        let socket = engine.socket();
        let mut kubelet = Kubelet::start(&bin, &node, &socket, &cgroups, &tag);

        kubelet.add_pod(
            "hostnet",
            &pod("hostnet", true, container(&["sleep", "1000000"])),
        );
        let mut probed = container(&["sh", "-c", "sleep 2; touch /tmp/ready; exec sleep 1000000"]);
        probed["readinessProbe"] = json!({
            "exec": { "command": ["cat", "/tmp/ready"] },
            "periodSeconds": 1,
        });
        kubelet.add_pod("probe", &pod("probe", false, probed));
        kubelet.add_pod("cni", &pod("cni", false, container(&["sleep", "1000000"])));

        // A hostNetwork pod Running.
        let t0 = Instant::now();
        wait_pods(
            &mut kubelet,
            &node,
            Duration::from_secs(90),
            "hostnet Running",
            |p| {
                container_status(p, "hostnet")?["state"]["running"]
                    .is_object()
                    .then_some(())
            },
        );
        eprintln!(
            "{ep:?}: hostnet Running {:?} after the kubelet started",
            t0.elapsed()
        );
        // The kubelet did set its tunables: in the node's copies, not in the host's.
        for (key, want) in [
            ("vm.overcommit_memory", "1"),
            ("kernel.panic", "10"),
            ("kernel.panic_on_oops", "1"),
        ] {
            assert_eq!(
                node.tunable(key),
                want,
                "the kubelet's {key} in the node's copy"
            );
        }

        // The readiness exec probe makes the pod Ready (and the container was running
        // unready before: the probe, not the start, made it Ready).
        let mut seen_unready_running = false;
        wait_pods(
            &mut kubelet,
            &node,
            Duration::from_secs(60),
            "probe Ready",
            |p| {
                let c = container_status(p, "probe")?;
                if c["state"]["running"].is_object() && c["ready"] == false {
                    seen_unready_running = true;
                }
                (condition(p, "probe", "Ready")? && c["ready"] == true).then_some(())
            },
        );
        eprintln!("{ep:?}: probe Ready (seen running but unready first: {seen_unready_running})");

        // The CNI pod: an IP on the bridge, reachable from the node.
        {
            let ip = wait_pods(
                &mut kubelet,
                &node,
                Duration::from_secs(60),
                "cni podIP",
                |p| {
                    let pod = find_pod(p, "cni")?;
                    container_status(p, "cni")?["state"]["running"].as_object()?;
                    pod["status"]["podIP"].as_str().map(str::to_string)
                },
            );
            assert!(
                ip.starts_with(SUBNET_PREFIX),
                "cni pod IP {ip} not on the bridge"
            );
            let ping = node
                .run_net(
                    &["/bin/busybox", "ping", "-c", "1", "-W", "5", &ip],
                    Duration::from_secs(20),
                )
                .expect("ping timed out");
            assert!(
                ping.success(),
                "the node cannot reach the pod at {ip}:\n{ping}"
            );
            eprintln!("{ep:?}: cni pod at {ip}, reachable from the node");
        }

        // The crashing pod: the start times of its container's attempts, from `state` and
        // `lastState` as the kubelet reports them (whole seconds), until it was restarted 4
        // times and attempt 4 is in `lastState`. The kubelet restarts a crashed container at
        // once the first time, so attempt 0 may show for less than a poll; attempts 1 to 4
        // (each in `lastState` for at least its back-off of 10 s or more) are the last four.
        kubelet.add_pod(
            "crash",
            &pod("crash", false, container(&["sh", "-c", "exit 3"])),
        );
        let mut starts = BTreeSet::new();
        let mut last_exit = None;
        let mut restarts = 0;
        wait_pods(
            &mut kubelet,
            &node,
            Duration::from_secs(180),
            "crash restarted 4 times",
            |p| {
                let c = container_status(p, "crash")?;
                restarts = c["restartCount"].as_i64().unwrap_or(0);
                for s in [&c["state"], &c["lastState"]] {
                    for k in ["running", "terminated"] {
                        if let Some(t) = s[k]["startedAt"]
                            .as_str()
                            .and_then(integration_tests::rfc3339_secs)
                        {
                            starts.insert(t);
                        }
                    }
                }
                if let Some(code) = c["lastState"]["terminated"]["exitCode"].as_i64() {
                    last_exit = Some(code);
                }
                let attempt4_done = restarts >= 4 && c["state"]["waiting"].is_object();
                (attempt4_done && starts.len() >= 4).then_some(())
            },
        );
        assert_eq!(last_exit, Some(3), "crash: lastState.terminated.exitCode");
        let starts: Vec<i64> = starts.into_iter().collect();
        let starts = &starts[starts.len() - 4..];
        let gaps: Vec<i64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        eprintln!("{ep:?}: crash restarts {restarts}, gaps between starts {gaps:?} s");
        // Then it waits a back-off of 10 s, doubled per restart; it retries a pod in back-off every 10 s with
        // up to 50 % jitter, so a restart lands up to ~15 s after its back-off ends (and the
        // times are whole seconds; a few more seconds for a loaded machine).
        for (gap, backoff) in gaps.iter().zip([10, 20, 40]) {
            assert!(
                (backoff - 1..=backoff + 20).contains(gap),
                "crash: gap {gap} s where the back-off is {backoff} s (all gaps {gaps:?})"
            );
        }

        // The manifests removed: the pods go from the kubelet, their containers stop, and
        // the kubelet's container GC (every minute) removes sandboxes and containers.
        let names = ["hostnet", "crash", "probe", "cni"];
        let removed = Instant::now();
        for n in &names {
            kubelet.remove_pod(n);
        }
        wait_pods(
            &mut kubelet,
            &node,
            Duration::from_secs(60),
            "no pods",
            |p| {
                // (An empty list is `null`.)
                p["items"]
                    .as_array()
                    .is_none_or(|v| v.is_empty())
                    .then_some(())
            },
        );
        let deadline = Instant::now() + scaled(Duration::from_secs(120));
        loop {
            kubelet.assert_alive();
            let counts = runtime_counts(&socket).await;
            let cgroups = kubelet.pod_cgroups();
            if counts == (0, 0) && cgroups.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "after the manifests went: (sandboxes, containers) {counts:?}, pod cgroups {cgroups:?}\n{}",
                kubelet.log_tail(60)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!(
            "{ep:?}: sandboxes and containers removed {:?} after the manifests went",
            removed.elapsed()
        );
        assert_eq!(
            kubelet.cgroup_pids(),
            Vec::<i32>::new(),
            "processes in the kubelet's cgroups"
        );
        let links: Vec<String> = node
            .links()
            .into_iter()
            .filter(|l| l != "lo" && l != "rrunkbr0")
            .collect();
        assert!(links.is_empty(), "interfaces left on the node: {links:?}");
        let root = kubelet.root_dir.display().to_string();
        let mounts: Vec<String> = node
            .mounts_under(node.dir())
            .into_iter()
            .filter(|m| m != &root)
            .collect();
        assert!(mounts.is_empty(), "mounts left on the node: {mounts:?}");
        if let Engine::RrunCri(s) = &engine {
            // rrun-cri's mounts (rootfs, /dev/shm) are in the node's mount namespace.
            let mounts = node.mounts_under(s.dir());
            assert!(
                mounts.is_empty(),
                "rrun-cri's mounts left on the node: {mounts:?}"
            );
        }
        // The kubelet carries the test's RRUN_TEST_ID too: it goes before rrun-cri's own
        // leftover check.
        kubelet.stop();
        if let Engine::RrunCri(s) = &engine {
            cri::assert_no_leftovers(s);
        }
        drop(kubelet);
        drop(engine);
        drop(node);
        drop(cgroups);
    }

    let sysctls = diff_lines(&sysctls_before, &host_sysctls());
    assert!(
        sysctls.is_empty(),
        "the host's sysctls changed:\n{}",
        sysctls.join("\n")
    );
    let rules = diff_lines(&iptables_before, &host_iptables());
    assert!(
        rules.is_empty(),
        "the host's iptables changed:\n{}",
        rules.join("\n")
    );
    eprintln!("{ep:?}: the whole test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd() {
    stock_kubelet(Endpoint::Containerd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrun_cri() {
    stock_kubelet(Endpoint::RrunCri).await;
}
