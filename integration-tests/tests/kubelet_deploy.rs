//! rrun-kubelet's Deployments and Services, through rrun-cri and through containerd 1.6's
//! CRI with runc as the control, on a node of the test's own namespaces
//! (`integration_tests::kubelet::Node`, whose network namespace has the pods' bridge and
//! the agent's nftables table).
//!
//! `rolling`: a Deployment of 3 busybox httpd pods (each page says its version; a readiness
//! probe) behind a NodePort Service; a client of the test, in the node's network namespace,
//! sends requests one after another to the ClusterIP while the Deployment rolls from v1 to
//! v2 (maxSurge 1, maxUnavailable 0): at least 2,000 requests, none failed, never more than
//! 4 pods, and every answer v2 at the end; `get deployments|replicasets|services|endpoints`;
//! a kill -9 of a replica's httpd: the pod is Ready again and the Deployment whole; the
//! NodePort answers; the manifest removed: the pods and the nftables table are gone.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::agent::Agent;
use integration_tests::engines::have;
use integration_tests::kubelet::{start_engine, CgroupRoot, Endpoint, Node, IMAGE, SUBNET_PREFIX};
use integration_tests::{scaled, Value};

const SERVICE_RANGE: &str = "10.97.0.0/24";
const REPLICAS: usize = 3;
const MIN_REQUESTS: usize = 2000;

fn skip_endpoint(ep: Endpoint) -> bool {
    (ep == Endpoint::Containerd && !(have("containerd") && have("ctr"))) || !have("nft")
}

/// The Deployment and its Service; `token` makes the httpd command line of this test's
/// pods unique on the machine (the kill -9 finds them by it).
fn manifests(version: &str, token: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {REPLICAS}
  selector:
    matchLabels: {{app: web}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: httpd
        image: {IMAGE}
        imagePullPolicy: Never
        env: [{{name: VERSION, value: {version}}}]
        command: [sh, -c, 'mkdir -p /www/{token} && echo $VERSION > /www/{token}/index.html && exec httpd -f -p 8080 -h /www/{token}']
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          httpGet: {{path: /, port: http}}
          periodSeconds: 1
        lifecycle:
          preStop:
            exec: {{command: [sleep, "1"]}}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: http
"#
    )
}

/// The Deployment is complete: `version`'s pods only, all available.
fn complete(d: &Value) -> bool {
    let st = &d["status"];
    let n = REPLICAS as i64;
    st["replicas"] == n && st["updatedReplicas"] == n && st["availableReplicas"] == n
}

/// One HTTP/1.0 GET from the calling thread (already in the node's network namespace).
fn http_get(addr: SocketAddr) -> Result<String, String> {
    let t = Duration::from_secs(5);
    let mut c = TcpStream::connect_timeout(&addr, t).map_err(|e| format!("connect: {e}"))?;
    c.set_read_timeout(Some(t)).map_err(|e| e.to_string())?;
    c.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut resp = String::new();
    c.read_to_string(&mut resp)
        .map_err(|e| format!("read: {e}"))?;
    match resp.split_once("\r\n\r\n") {
        Some((head, body)) if head.contains(" 200 ") => Ok(body.trim().to_string()),
        _ => Err(format!("answer {resp:?}")),
    }
}

/// What a client saw: answers by body, failures with their reason.
#[derive(Default)]
struct Tally {
    answers: BTreeMap<String, usize>,
    failures: Vec<String>,
    total: usize,
}

/// A client thread in the node's network namespace sending requests one after another
/// until `stop` is set (and at least `min` were sent).
fn client(
    node_pid: i32,
    addr: SocketAddr,
    min: usize,
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
) -> thread::JoinHandle<()> {
    let ns = format!("/proc/{node_pid}/ns/net");
    thread::spawn(move || {
        let f = std::fs::File::open(&ns).expect("the node's netns");
        // Only this thread changes namespace.
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        loop {
            let r = http_get(addr);
            let mut t = tally.lock().expect("tally");
            t.total += 1;
            match r {
                Ok(body) => *t.answers.entry(body).or_default() += 1,
                Err(e) => t.failures.push(e),
            }
            if stop.load(Ordering::SeqCst) && t.total >= min {
                return;
            }
        }
    })
}

/// `n` requests from the node's network namespace; the tally.
fn burst(node_pid: i32, addr: SocketAddr, n: usize) -> Tally {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(true));
    client(node_pid, addr, n, stop, tally.clone())
        .join()
        .expect("client");
    Arc::try_unwrap(tally)
        .ok()
        .expect("client done")
        .into_inner()
        .expect("tally")
}

/// The pids of this test's httpd servers (not the children they fork per connection).
fn httpd_pids(token: &str) -> Vec<i32> {
    let mut all = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.starts_with("httpd ") && cmd.contains(&format!("/www/{token}")) {
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            // The field after the `(comm)` state: the parent's pid.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<i32>().ok())
                .unwrap_or(0);
            all.push((pid, ppid));
        }
    }
    let pids: Vec<i32> = all.iter().map(|(p, _)| *p).collect();
    all.into_iter()
        .filter(|(_, ppid)| !pids.contains(ppid))
        .map(|(p, _)| p)
        .collect()
}

fn nft_table(node: &Node) -> bool {
    node.run_net(
        &["nft", "list", "table", "ip", "rrun-proxy"],
        Duration::from_secs(10),
    )
    .is_some_and(|o| o.status.success())
}

async fn rolling(ep: Endpoint) {
    if skip_endpoint(ep) {
        return;
    }
    let tag = format!("deploy-{ep:?}").to_lowercase();
    let token = format!("t{}", std::process::id());
    let cgroups = CgroupRoot::new(&tag);
    let node = Node::start();
    let engine = start_engine(ep, &node).await;
    let mut agent = Agent::start(
        &node,
        &engine.socket(),
        &cgroups,
        &tag,
        &[format!("--service-cluster-ip-range={SERVICE_RANGE}")],
    );
    agent.write_manifest("web.yaml", &manifests("v1", &token));
    let dpath = "/apis/apps/v1/namespaces/default/deployments/web";
    agent.wait_for(dpath, Duration::from_secs(120), "v1 available", complete);
    let svc = agent.wait_for(
        "/api/v1/namespaces/default/services/web",
        Duration::from_secs(10),
        "the service",
        |s| s["spec"]["clusterIP"].is_string(),
    );
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap_or(0);
    assert!(cluster_ip.starts_with("10.97.0."), "{svc}");
    assert!((30000..=32767).contains(&node_port), "{svc}");
    agent.wait_for(
        "/api/v1/namespaces/default/endpoints/web",
        Duration::from_secs(10),
        "3 endpoints",
        |e| e["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(REPLICAS),
    );
    // The node's route to the Service range (a real node's default route does this).
    let out = node
        .run_net(
            &["ip", "route", "add", SERVICE_RANGE, "dev", "rrunkbr0"],
            Duration::from_secs(10),
        )
        .expect("ip route");
    assert!(out.status.success(), "ip route add: {out:?}");
    let addr: SocketAddr = format!("{cluster_ip}:80").parse().expect("address");
    let before = burst(node.pid(), addr, 30);
    assert!(before.failures.is_empty(), "{:?}", before.failures);
    assert_eq!(before.answers.keys().collect::<Vec<_>>(), ["v1"]);

    // kubectl-like listings.
    let out = agent.cli(&["get", "deployments"]);
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.starts_with("NAME"), "{out}");
    assert!(
        out.stdout.contains("web    3/3     3            3"),
        "{out}"
    );
    let out = agent.cli(&["get", "svc"]);
    assert!(
        out.stdout.contains(&format!("NodePort   {cluster_ip}")),
        "{out}"
    );
    assert!(out.stdout.contains(&format!("80:{node_port}/TCP")), "{out}");
    let out = agent.cli(&["get", "endpoints"]);
    assert!(out.stdout.contains(SUBNET_PREFIX), "{out}");
    let out = agent.cli(&["get", "rs"]);
    assert!(
        out.stdout
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("web-")),
        "{out}"
    );

    // Rolling update under traffic.
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let c = client(node.pid(), addr, MIN_REQUESTS, stop.clone(), tally.clone());
    agent.write_manifest("web.yaml", &manifests("v2", &token));
    let deadline = Instant::now() + scaled(Duration::from_secs(180));
    let mut most_pods = 0;
    loop {
        agent.assert_alive();
        let rs = agent
            .get_json("/apis/apps/v1/namespaces/default/replicasets")
            .expect("replicasets");
        let pods: i64 = rs["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| r["status"]["replicas"].as_i64().unwrap_or(0))
            .sum();
        most_pods = most_pods.max(pods);
        let d = agent.get_json(dpath).expect("deployment");
        let revs: Vec<(String, i64)> = rs["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                (
                    r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    r["spec"]["replicas"].as_i64().unwrap_or(-1),
                )
            })
            .collect();
        let done = complete(&d) && revs.len() == 2 && revs.contains(&("1".into(), 0));
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not finish: {d}\n{rs}\n{}",
            agent.log_tail(40)
        );
        thread::sleep(Duration::from_millis(100));
    }
    // The old pods have left the endpoints and the node.
    agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(60),
        "only v2 pods",
        |l| l["items"].as_array().map(Vec::len) == Some(REPLICAS),
    );
    stop.store(true, Ordering::SeqCst);
    c.join().expect("client");
    let t = tally.lock().expect("tally");
    assert!(t.total >= MIN_REQUESTS, "{}", t.total);
    assert!(
        t.failures.is_empty(),
        "{} of {} requests failed: {:?}",
        t.failures.len(),
        t.total,
        &t.failures[..t.failures.len().min(10)]
    );
    assert!(most_pods <= REPLICAS as i64 + 1, "{most_pods} pods at once");
    eprintln!(
        "{ep:?}: rolling update: {} requests, answers {:?}, 0 failed",
        t.total, t.answers
    );
    drop(t);
    let after = burst(node.pid(), addr, 100);
    assert!(after.failures.is_empty(), "{:?}", after.failures);
    assert_eq!(after.answers.keys().collect::<Vec<_>>(), ["v2"]);

    // Self-healing: kill -9 of a replica's httpd.
    let pids = httpd_pids(&token);
    assert_eq!(pids.len(), REPLICAS, "{pids:?}");
    // SAFETY: kill(2) of a process this test's pod runs.
    unsafe {
        libc::kill(pids[0], libc::SIGKILL);
    }
    agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(60),
        "the killed replica restarted and Ready",
        |l| {
            let items = l["items"].as_array().cloned().unwrap_or_default();
            items.len() == REPLICAS
                && items.iter().any(|p| {
                    p["status"]["containerStatuses"][0]["restartCount"].as_i64() == Some(1)
                })
                && items.iter().all(|p| {
                    p["status"]["conditions"].as_array().is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c["type"] == "Ready" && c["status"] == "True")
                    })
                })
        },
    );
    agent.wait_for(dpath, Duration::from_secs(30), "whole again", complete);
    assert_eq!(httpd_pids(&token).len(), REPLICAS);

    // The NodePort, on the node's address.
    let np: SocketAddr = format!("{SUBNET_PREFIX}1:{node_port}")
        .parse()
        .expect("address");
    let t = burst(node.pid(), np, 20);
    assert!(t.failures.is_empty(), "{:?}", t.failures);
    assert_eq!(t.answers.keys().collect::<Vec<_>>(), ["v2"]);

    // Removed: pods, endpoints and the table go.
    assert!(nft_table(&node));
    agent.remove_manifest("web.yaml");
    agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(60),
        "no pods",
        |l| l["items"].as_array().is_some_and(Vec::is_empty),
    );
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    while nft_table(&node) {
        assert!(Instant::now() < deadline, "the nft table stayed");
        thread::sleep(Duration::from_millis(100));
    }
    assert!(httpd_pids(&token).is_empty());
    drop(agent);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_rrun_cri() {
    rolling(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_containerd() {
    rolling(Endpoint::Containerd).await;
}
