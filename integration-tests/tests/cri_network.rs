//! `cri_network`: pods on a CNI network (issue 12's pod-networking half), with Debian's
//! real plugins (bridge, host-local, portmap) run by rrun-cri inside a network namespace
//! each test makes for "the node" (`netns::NodeNetns`): the bridge, the pods' addresses and
//! the port-mapping rules exist only there. host-local keeps its reservations in the
//! test's temp dir. Every test ends with a leak check: no veth, no reservation, no rule
//! naming a pod, nothing of the pods under the server's dirs (mounts, pinned namespaces,
//! the CNI cache).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration_tests::cri::*;
use integration_tests::netns::{self, NodeNetns};
use integration_tests::scaled;

/// The node side of every test's bridge; each test's node is its own namespace, so the
/// same subnet in every test never meets.
const PREFIX: &str = "10.77.0.";

/// Skips (loudly) where the plugins or tools are missing; in CI that is a failure.
fn tools_or_skip() -> bool {
    match netns::missing_tools() {
        Ok(()) => true,
        Err(missing) => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "cri_network needs {missing} (scripts/setup.sh installs them)"
            );
            eprintln!("SKIPPED: cri_network needs {missing}");
            false
        }
    }
}

/// The node, and a server in it whose conf dir holds the test network (when `config`).
/// Dropped in this order: the server (its guard removes the pods), the node, the dirs.
struct Net {
    s: CriServer,
    node: NodeNetns,
    conf_dir: PathBuf,
    ipam_dir: PathBuf,
    _scratch: tempfile::TempDir,
}

async fn start(name: &str, config: bool) -> Net {
    let node = NodeNetns::new(name);
    let scratch = tempfile::tempdir().expect("tempdir");
    let conf_dir = scratch.path().join("conf");
    let ipam_dir = scratch.path().join("ipam");
    std::fs::create_dir_all(&conf_dir).expect("mkdir conf");
    if config {
        netns::write_config(
            &conf_dir,
            "10-rrun-test.conflist",
            &netns::conflist(PREFIX, &ipam_dir),
        );
    }
    let s = CriServer::start_with(
        name,
        StartOptions {
            wrap: node.wrap(),
            cni_conf_dir: Some(conf_dir.clone()),
            ..StartOptions::default()
        },
    )
    .await;
    s.import_busybox();
    Net {
        s,
        node,
        conf_dir,
        ipam_dir,
        _scratch: scratch,
    }
}

impl Net {
    /// Nothing of `pods` is left on the node or under the server's dirs.
    fn assert_no_leak(&self, pods: &[String]) {
        assert_eq!(
            self.node.veths(),
            Vec::<String>::new(),
            "veths left on the node"
        );
        assert_eq!(
            netns::ipam_reservations(&self.ipam_dir),
            Vec::<String>::new(),
            "host-local reservations left"
        );
        for id in pods {
            assert_eq!(
                self.node.rules_mentioning(id),
                Vec::<String>::new(),
                "iptables rules of pod {id} left"
            );
        }
        let cache = self.s.root().join("cni/results");
        let cached: Vec<_> = std::fs::read_dir(&cache)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        assert_eq!(cached, Vec::<PathBuf>::new(), "CNI cache entries left");
        assert_eq!(self.s.leftovers(), Vec::<String>::new(), "leftovers");
    }

    async fn pod_ip(&self, id: &str) -> String {
        let st = self.s.pod_status(id).await;
        let ip = st.network.map(|n| n.ip).unwrap_or_default();
        assert!(
            ip.starts_with(PREFIX),
            "pod {id}: ip {ip:?} not on the bridge"
        );
        ip
    }

    /// A pod `name` whose container serves `name` over HTTP on 8080 (busybox httpd, which
    /// is listening once its start command returns: it daemonises after binding).
    async fn web_pod(&self, name: &str, ports: Vec<api::PortMapping>) -> (String, String) {
        let mut cfg = self.s.pod_config(name);
        cfg.port_mappings = ports;
        let id = self.s.run_pod(&cfg).await;
        let c = self.s.sh_config("web", "exec sleep 100000");
        let cid = self.s.run_container(&id, &cfg, &c).await;
        self.s
            .exec_ok(
                &cid,
                &[
                    "sh",
                    "-c",
                    &format!(
                        "mkdir -p /www && echo {name} > /www/index.html && httpd -p 8080 -h /www"
                    ),
                ],
            )
            .await;
        (id, cid)
    }
}

impl Net {
    /// An HTTP/1.0 GET of `http://addr/` from inside container `cid` (busybox `nc`; its
    /// `wget` is a static build that crashes resolving names): the body.
    async fn pod_get(&self, cid: &str, addr: &str) -> String {
        let (host, port) = addr.split_once(':').expect("host:port");
        let script = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} {port}");
        let resp = self.s.exec_ok(cid, &["sh", "-c", &script]).await;
        match resp.split_once("\r\n\r\n") {
            Some((head, body)) if head.contains(" 200 ") => body.to_string(),
            _ => panic!("GET {addr} from {cid}: {resp:?}"),
        }
    }
}

fn tcp_port(container_port: i32, host_port: i32, host_ip: &str) -> api::PortMapping {
    api::PortMapping {
        protocol: api::Protocol::Tcp as i32,
        container_port,
        host_port,
        host_ip: host_ip.into(),
    }
}

#[tokio::test]
async fn pods_reach_the_node_each_other_and_host_ports() {
    if !tools_or_skip() {
        return;
    }
    let n = start("cnireach", true).await;
    let (a, a_c) = n
        .web_pod(
            "a",
            vec![
                tcp_port(8080, 18080, ""),
                tcp_port(8080, 18081, &format!("{PREFIX}1")),
                api::PortMapping {
                    protocol: api::Protocol::Udp as i32,
                    container_port: 53,
                    host_port: 18053,
                    host_ip: String::new(),
                },
            ],
        )
        .await;
    let (b, b_c) = n.web_pod("b", vec![]).await;
    let ip_a = n.pod_ip(&a).await;
    let ip_b = n.pod_ip(&b).await;
    assert_ne!(ip_a, ip_b);

    // The node reaches both pods' addresses.
    assert_eq!(n.node.http_get(&format!("{ip_a}:8080")), Ok("a\n".into()));
    assert_eq!(n.node.http_get(&format!("{ip_b}:8080")), Ok("b\n".into()));
    // The pods reach each other.
    assert_eq!(n.pod_get(&b_c, &format!("{ip_a}:8080")).await, "a\n");
    assert_eq!(n.pod_get(&a_c, &format!("{ip_b}:8080")).await, "b\n");
    // hostPorts: on every node address, and on the one named.
    assert_eq!(
        n.node.http_get(&format!("{PREFIX}1:18080")),
        Ok("a\n".into())
    );
    assert_eq!(
        n.node.http_get(&format!("{PREFIX}1:18081")),
        Ok("a\n".into())
    );
    let rules = n.node.rules_mentioning(&a);
    assert!(!rules.is_empty(), "portmap made no rule naming pod {a}");
    // The UDP mapping is a rule of its own (busybox has no UDP server to prove it with).
    let udp = n.node.run(&["iptables-save", "-t", "nat"]);
    let udp = String::from_utf8_lossy(&udp.stdout);
    assert!(
        udp.lines()
            .any(|l| l.contains("-p udp") && l.contains("--dport 18053") && l.contains(":53")),
        "no UDP DNAT for host port 18053:\n{udp}"
    );

    n.s.stop_and_remove_pod(&a).await;
    n.s.stop_and_remove_pod(&b).await;
    assert!(
        n.node.http_get(&format!("{PREFIX}1:18080")).is_err(),
        "the host port still answers after the pod is gone"
    );
    n.assert_no_leak(&[a, b]);
}

#[tokio::test]
async fn dns_comes_from_the_request_else_from_the_cni_result() {
    if !tools_or_skip() {
        return;
    }
    let n = start("cnidns", true).await;
    let mut cfg = n.s.pod_config("asked");
    cfg.dns_config = Some(api::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["default.svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    let asked = n.s.run_pod(&cfg).await;
    let c = n.s.sh_config("c", "exec sleep 100000");
    let asked_c = n.s.run_container(&asked, &cfg, &c).await;
    assert_eq!(
        n.s.exec_ok(&asked_c, &["cat", "/etc/resolv.conf"]).await,
        "search default.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
    );

    let cfg2 = n.s.pod_config("cni");
    let from_cni = n.s.run_pod(&cfg2).await;
    let cni_c = n.s.run_container(&from_cni, &cfg2, &c).await;
    assert_eq!(
        n.s.exec_ok(&cni_c, &["cat", "/etc/resolv.conf"]).await,
        format!("search cni.test\nnameserver {PREFIX}53\n")
    );
    n.s.stop_and_remove_pod(&asked).await;
    n.s.stop_and_remove_pod(&from_cni).await;
    n.assert_no_leak(&[asked, from_cni]);
}

/// NetworkReady as `Status` reports it: (status, reason, message).
async fn network_ready(s: &CriServer) -> (bool, String, String) {
    let st = s
        .runtime()
        .status(api::StatusRequest { verbose: false })
        .await
        .unwrap_or_else(|e| panic!("Status: {}", show(&e)))
        .into_inner();
    let c = st
        .status
        .and_then(|s| {
            s.conditions
                .into_iter()
                .find(|c| c.r#type == "NetworkReady")
        })
        .expect("no NetworkReady condition");
    (c.status, c.reason, c.message)
}

/// Waits (bounded) until NetworkReady is `want`: the conf dir's watcher reloads in the
/// background, after the file event.
async fn wait_network_ready(s: &CriServer, want: bool) -> (bool, String, String) {
    let deadline = Instant::now() + scaled(Duration::from_secs(20));
    loop {
        let got = network_ready(s).await;
        if got.0 == want {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "NetworkReady stayed {got:?}, want {want}\n{}",
            s.stderr_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn network_ready_follows_the_conf_dir_without_a_restart() {
    if !tools_or_skip() {
        return;
    }
    let n = start("cniready", false).await;
    let (ready, reason, message) = network_ready(&n.s).await;
    assert!(!ready);
    assert_eq!(reason, "NetworkPluginNotReady");
    assert!(
        message.contains(&n.conf_dir.display().to_string()),
        "{message}"
    );

    netns::write_config(
        &n.conf_dir,
        "10-rrun-test.conflist",
        &netns::conflist(PREFIX, &n.ipam_dir),
    );
    wait_network_ready(&n.s, true).await;
    // ... and pods get an address at once.
    let pod = n.s.run_pod(&n.s.pod_config("p")).await;
    n.pod_ip(&pod).await;
    n.s.stop_and_remove_pod(&pod).await;

    // A broken config is named in the message.
    std::fs::remove_file(n.conf_dir.join("10-rrun-test.conflist")).expect("rm");
    netns::write_config(
        &n.conf_dir,
        "05-broken.conflist",
        &serde_json::json!({"cniVersion": "1.0.0", "name": "x", "plugins": [{"bridge": "b"}]}),
    );
    let (_, reason, message) = wait_network_ready(&n.s, false).await;
    assert_eq!(reason, "NetworkPluginNotReady");
    assert!(message.contains("05-broken.conflist"), "{message}");
    // So is a plugin that is not installed.
    std::fs::remove_file(n.conf_dir.join("05-broken.conflist")).expect("rm");
    wait_network_ready(&n.s, false).await;
    netns::write_config(
        &n.conf_dir,
        "10-missing.conflist",
        &serde_json::json!({"cniVersion": "1.0.0", "name": "x",
                            "plugins": [{"type": "no-such-plugin"}]}),
    );
    let deadline = Instant::now() + scaled(Duration::from_secs(20));
    loop {
        let (ready, _, message) = network_ready(&n.s).await;
        assert!(!ready);
        if message.contains("no-such-plugin") {
            break;
        }
        assert!(Instant::now() < deadline, "{message}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    n.assert_no_leak(&[pod]);
}

#[tokio::test]
async fn del_runs_after_a_kill9_of_the_server() {
    if !tools_or_skip() {
        return;
    }
    let n = start("cnikill", true).await;
    let (pod, _) = n.web_pod("a", vec![tcp_port(8080, 18080, "")]).await;
    let ip = n.pod_ip(&pod).await;
    n.s.kill9();
    // The conf dir changes while the server is down: the DEL must still use the ADD's.
    std::fs::remove_file(n.conf_dir.join("10-rrun-test.conflist")).expect("rm");
    n.s.restart().await;
    assert_eq!(n.pod_ip(&pod).await, ip, "the address after the restart");
    assert_eq!(n.node.http_get(&format!("{ip}:8080")), Ok("a\n".into()));
    n.s.stop_and_remove_pod(&pod).await;
    // A second stop and remove of the gone pod succeed.
    n.s.stop_and_remove_pod(&pod).await;
    n.assert_no_leak(&[pod]);
}

#[tokio::test]
async fn stop_twice_then_remove_releases_everything() {
    if !tools_or_skip() {
        return;
    }
    let n = start("cnistop", true).await;
    let pod = n.s.run_pod(&n.s.pod_config("p")).await;
    n.pod_ip(&pod).await;
    for _ in 0..2 {
        n.s.runtime()
            .stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .unwrap_or_else(|e| panic!("StopPodSandbox: {}", show(&e)));
        assert_eq!(n.node.veths(), Vec::<String>::new(), "veth after stop");
        assert_eq!(netns::ipam_reservations(&n.ipam_dir), Vec::<String>::new());
    }
    let st = n.s.pod_status(&pod).await;
    assert_eq!(
        st.network.map(|n| n.ip).unwrap_or_default(),
        "",
        "ip after stop"
    );
    n.s.stop_and_remove_pod(&pod).await;
    n.assert_no_leak(&[pod]);
}

#[tokio::test]
async fn twenty_pods_started_and_removed_concurrently_leak_nothing() {
    if !tools_or_skip() {
        return;
    }
    let n = start("cni20", true).await;
    let starts = (0..20).map(|i| {
        let mut cfg = n.s.pod_config(&format!("p{i}"));
        cfg.port_mappings = vec![tcp_port(80, 20000 + i, "")];
        let s = &n.s;
        async move { s.run_pod(&cfg).await }
    });
    let pods: Vec<String> = futures_join_all(starts).await;
    let mut ips = Vec::new();
    for p in &pods {
        ips.push(n.pod_ip(p).await);
    }
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 20, "addresses not distinct: {ips:?}");
    assert_eq!(n.node.veths().len(), 20, "{:?}", n.node.veths());
    futures_join_all(pods.iter().map(|p| n.s.stop_and_remove_pod(p))).await;
    n.assert_no_leak(&pods);
}

#[tokio::test]
async fn a_failed_add_fails_the_sandbox_with_the_plugins_message_and_leaves_nothing() {
    if !tools_or_skip() {
        return;
    }
    let n = start("cnifail", false).await;
    // A bridge name longer than the kernel's 15 bytes: the bridge plugin's ADD fails (its
    // DEL, which releases the address, still works).
    let mut bad = netns::conflist(PREFIX, &n.ipam_dir);
    bad["plugins"][0]["bridge"] = "rrun-bridge-name-too-long".into();
    netns::write_config(&n.conf_dir, "10-bad.conflist", &bad);
    wait_network_ready(&n.s, true).await;
    let cfg = n.s.pod_config("p");
    let e =
        n.s.try_run_pod(&cfg)
            .await
            .expect_err("RunPodSandbox with a bad IPAM range");
    let msg = e.message();
    assert!(
        msg.contains("plugin type=\"bridge\" failed (add)")
            && msg.contains("rrun-bridge-name-too-long"),
        "{msg}"
    );
    assert!(n.s.list_pods(None).await.is_empty(), "a pod is listed");
    n.assert_no_leak(&[]);
    // The failed pod's name is free again, and a good config makes it.
    netns::write_config(
        &n.conf_dir,
        "10-bad.conflist",
        &netns::conflist(PREFIX, &n.ipam_dir),
    );
    let deadline = Instant::now() + scaled(Duration::from_secs(20));
    let pod = loop {
        // The watcher reloads after the write: until then the old config answers.
        match n.s.try_run_pod(&cfg).await {
            Ok(id) => break id,
            Err(e) => assert!(Instant::now() < deadline, "{}", show(&e)),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    n.pod_ip(&pod).await;
    n.s.stop_and_remove_pod(&pod).await;
    n.assert_no_leak(&[pod]);
}

#[tokio::test]
async fn a_pod_name_that_would_smuggle_cni_args_is_refused() {
    if !tools_or_skip() {
        return;
    }
    let n = start("cniargs", true).await;
    // `;IP=` would reach host-local as an argument of its own and pick the address.
    let mut cfg = n.s.pod_config("p;IP=10.77.0.99");
    cfg.hostname = "p".into();
    let e = n.s.try_run_pod(&cfg).await.expect_err("refused");
    assert_eq!(e.code(), Code::InvalidArgument, "{}", show(&e));
    assert!(e.message().contains("CNI_ARGS"), "{}", show(&e));
    assert!(n.s.list_pods(None).await.is_empty(), "a pod is listed");
    n.assert_no_leak(&[]);
}

#[tokio::test]
async fn host_network_pods_get_no_cni() {
    if !tools_or_skip() {
        return;
    }
    let n = start("cnihost", true).await;
    let mut cfg = n.s.pod_config("h");
    cfg.hostname = String::new();
    if let Some(o) = cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        o.network = api::NamespaceMode::Node as i32;
    }
    let pod = n.s.run_pod(&cfg).await;
    let st = n.s.pod_status(&pod).await;
    assert_eq!(st.network.map(|n| n.ip).unwrap_or_default(), "");
    assert_eq!(n.node.veths(), Vec::<String>::new());
    n.s.stop_and_remove_pod(&pod).await;
    n.assert_no_leak(&[pod]);
}

/// Runs the futures concurrently on this task and collects their outputs in order.
async fn futures_join_all<F: std::future::Future>(
    futs: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// The control: containerd 1.6's CRI with the same plugins and conflist, in a node of its
/// own: the pod gets an address on the bridge, portmap rules name it, and Stop/Remove leave
/// no veth, reservation or rule, as with rrun-cri above.
#[tokio::test]
async fn containerd_control_same_network_same_cleanup() {
    use integration_tests::engines::{have, Containerd, CRI_RUNTIME, CRI_SANDBOX_IMAGE, RUNC};
    if !tools_or_skip() {
        return;
    }
    if !(have("containerd") && have("ctr")) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "containerd is not installed"
        );
        eprintln!("SKIPPED: containerd is not installed");
        return;
    }
    let node = NodeNetns::new("cdctl");
    let cd = Containerd::start_with_cri_in(std::path::Path::new(RUNC), &node.wrap());
    cd.import_image("k8s.io", CRI_SANDBOX_IMAGE, &["sleep", "1000000"]);
    let bin = cd.dir.join("cni/bin");
    std::fs::create_dir_all(&bin).expect("mkdir cni/bin");
    for p in ["bridge", "host-local", "loopback", "portmap"] {
        std::os::unix::fs::symlink(format!("{}/{p}", netns::CNI_BIN_DIR), bin.join(p))
            .expect("symlink plugin");
    }
    let ipam = cd.dir.join("ipam");
    netns::write_config(
        &cd.dir.join("cni/conf"),
        "10-rrun-test.conflist",
        &netns::conflist(PREFIX, &ipam),
    );
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    let mut client = loop {
        if let Ok(mut c) = Client::connect(&cd.socket).await {
            if let Ok(st) = c.runtime.status(api::StatusRequest::default()).await {
                let ready = st.into_inner().status.is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.r#type == "NetworkReady" && c.status)
                });
                if ready {
                    break c;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "containerd not NetworkReady:\n{}",
            cd.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let logs = cd.dir.join("logs");
    std::fs::create_dir_all(&logs).expect("mkdir logs");
    let cfg = api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: "control".into(),
            uid: "control-uid".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "control".into(),
        log_directory: logs.display().to_string(),
        port_mappings: vec![tcp_port(8080, 18080, "")],
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: format!("/{}", cd.cgroup_of("pod")),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = client
        .runtime
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: CRI_RUNTIME.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {}\n{}", show(&e), cd.log()))
        .into_inner()
        .pod_sandbox_id;
    let st = client
        .runtime
        .pod_sandbox_status(api::PodSandboxStatusRequest {
            pod_sandbox_id: pod.clone(),
            verbose: false,
        })
        .await
        .unwrap_or_else(|e| panic!("PodSandboxStatus: {}", show(&e)))
        .into_inner();
    let ip = st
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    assert!(ip.starts_with(PREFIX), "containerd's pod ip {ip:?}");
    assert_eq!(node.veths().len(), 1, "{:?}", node.veths());
    assert!(
        !node.rules_mentioning(&pod).is_empty(),
        "no portmap rule names {pod}"
    );
    client
        .runtime
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("StopPodSandbox: {}", show(&e)));
    client
        .runtime
        .remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: pod.clone(),
        })
        .await
        .unwrap_or_else(|e| panic!("RemovePodSandbox: {}", show(&e)));
    assert_eq!(node.veths(), Vec::<String>::new(), "containerd left a veth");
    assert_eq!(netns::ipam_reservations(&ipam), Vec::<String>::new());
    assert_eq!(node.rules_mentioning(&pod), Vec::<String>::new());
    drop(cd);
}
