//! The ways to deploy behind one Service on rrun-kubelet, proven under traffic: through
//! rrun-cri and through containerd 1.6's CRI with runc as the control, each on a node of the
//! test's own namespaces (`integration_tests::kubelet::Node`). A client thread of the test,
//! in the node's network namespace, sends HTTP requests one after another to the Service's
//! ClusterIP; each busybox httpd page says which version answered.
//!
//! - `blue_green`: two Deployments (blue, green) and one Service; the Service's manifest
//!   switched to green moves all traffic at once (every request sent 2 s after the switch is
//!   answered by green), 0 failed.
//! - `canary`: a stable Deployment of 9 and a canary of 1 sharing the Service's label: the
//!   canary answers between 3 % and 20 % of 2,000 requests.
//! - `self_healing`: kill -9 of a replica's httpd (restarted in place) and the removal of a
//!   replica's sandbox through the CRI behind the agent's back (the pod runs again): the
//!   Service keeps answering, and is whole (3 Ready) again.
//! - `bad_rollout`: a v3 whose readiness never passes: the rollout stalls at the surge (one
//!   new pod, never Ready), v1 keeps serving with never fewer than 3 available, the
//!   Deployment says Progressing=False, ProgressDeadlineExceeded and `rollout status`
//!   (started with the rollout) exits 1 with kubectl's message; the v1 manifest put back
//!   recovers (`rollout status` exits 0); 0 failed requests throughout.
//! - `session_affinity`: a Service with `sessionAffinity: ClientIP`: every request of the
//!   client is answered by the same one of 3 pods; a pod made after the Service has its
//!   `WEB_SERVICE_HOST`/`_PORT` and Docker link variables.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::agent::Agent;
use integration_tests::cri::{api, Client};
use integration_tests::engines::have;
use integration_tests::kubelet::{start_engine, CgroupRoot, Endpoint, Engine, Node, IMAGE};
use integration_tests::traffic::{burst, Traffic};
use integration_tests::{scaled, Value};

const SERVICE_RANGE: &str = "10.97.0.0/24";

fn skip_endpoint(ep: Endpoint) -> bool {
    (ep == Endpoint::Containerd && !(have("containerd") && have("ctr"))) || !have("nft")
}

/// A Deployment of `replicas` httpd pods labelled `app: web` plus `labels`, whose page is
/// `version`; `readiness` is the probe's path (`/` passes, anything else never does).
/// `token` makes the httpd command lines of this test unique on the machine.
fn deployment(
    name: &str,
    labels: &str,
    version: &str,
    replicas: usize,
    readiness: &str,
    token: &str,
) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  progressDeadlineSeconds: 10
  selector:
    matchLabels: {{app: web{labels}}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {{app: web{labels}}}
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
          httpGet: {{path: "{readiness}", port: http}}
          periodSeconds: 1
        lifecycle:
          preStop:
            exec: {{command: [sleep, "1"]}}
"#
    )
}

/// The Service `web` selecting `app: web` plus `labels`.
fn service(labels: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web{labels}}}
  ports:
  - port: 80
    targetPort: http
"#
    )
}

fn deployment_path(name: &str) -> String {
    format!("/apis/apps/v1/namespaces/default/deployments/{name}")
}

/// The Deployment has `n` pods, all of its template and available.
fn complete(d: &Value, n: usize) -> bool {
    let st = &d["status"];
    let n = n as i64;
    st["replicas"] == n && st["updatedReplicas"] == n && st["availableReplicas"] == n
}

fn wait_complete(agent: &mut Agent, name: &str, n: usize, timeout: Duration) {
    agent.wait_for(
        &deployment_path(name),
        timeout,
        &format!("deployment {name}: {n} available"),
        |d| complete(d, n),
    );
}

/// The endpoints of Service `web`: the pod names behind it.
fn endpoint_pods(e: &Value) -> Vec<String> {
    e["subsets"][0]["addresses"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a["targetRef"]["name"].as_str().unwrap_or("").to_string())
        .collect()
}

fn wait_endpoints(agent: &mut Agent, what: &str, done: impl Fn(&[String]) -> bool) {
    agent.wait_for(
        "/api/v1/namespaces/default/endpoints/web",
        Duration::from_secs(30),
        what,
        |e| done(&endpoint_pods(e)),
    );
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

/// A node with its engine and agent; dropped agent first, cgroups last.
struct Setup {
    agent: Agent,
    engine: Engine,
    node: Node,
    _cgroups: CgroupRoot,
    token: String,
}

impl Setup {
    async fn start(ep: Endpoint, what: &str) -> Setup {
        let tag = format!("rollout-{what}-{ep:?}").to_lowercase();
        let cgroups = CgroupRoot::new(&tag);
        let node = Node::start();
        let engine = start_engine(ep, &node).await;
        let agent = Agent::start(
            &node,
            &engine.socket(),
            &cgroups,
            &tag,
            &[format!("--service-cluster-ip-range={SERVICE_RANGE}")],
        );
        Setup {
            agent,
            engine,
            node,
            _cgroups: cgroups,
            token: format!("t{}{what}", std::process::id()),
        }
    }

    /// The Service's ClusterIP:80, once it has one; adds the node's route to the range.
    fn service_addr(&mut self) -> SocketAddr {
        let svc = self.agent.wait_for(
            "/api/v1/namespaces/default/services/web",
            Duration::from_secs(10),
            "the service",
            |s| s["spec"]["clusterIP"].is_string(),
        );
        let ip = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
        // The node's route to the Service range (a real node's default route does this).
        let out = self
            .node
            .run_net(
                &["ip", "route", "add", SERVICE_RANGE, "dev", "rrunkbr0"],
                Duration::from_secs(10),
            )
            .expect("ip route");
        assert!(out.status.success(), "ip route add: {out:?}");
        format!("{ip}:80").parse().expect("address")
    }

    fn deploy(&self, file: &str, text: &str) {
        self.agent.write_manifest(file, text);
    }

    fn deployment(&self, name: &str) -> Value {
        self.agent
            .get_json(&deployment_path(name))
            .expect("deployment")
    }

    /// The pods the API lists (name → object).
    fn pods(&self) -> Vec<Value> {
        self.agent
            .get_json("/api/v1/namespaces/default/pods")
            .and_then(|l| l["items"].as_array().cloned())
            .unwrap_or_default()
    }
}

fn ready(pod: &Value) -> bool {
    pod["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

async fn blue_green(ep: Endpoint) {
    if skip_endpoint(ep) {
        return;
    }
    let mut s = Setup::start(ep, "bg").await;
    let t = s.token.clone();
    s.deploy(
        "blue.yaml",
        &deployment("blue", ", color: blue", "blue", 2, "/", &t),
    );
    s.deploy(
        "green.yaml",
        &deployment("green", ", color: green", "green", 2, "/", &t),
    );
    s.deploy("svc.yaml", &service(", color: blue"));
    wait_complete(&mut s.agent, "blue", 2, Duration::from_secs(120));
    wait_complete(&mut s.agent, "green", 2, Duration::from_secs(120));
    wait_endpoints(&mut s.agent, "blue's 2 endpoints", |p| {
        p.len() == 2 && p.iter().all(|n| n.starts_with("blue-"))
    });
    let addr = s.service_addr();
    let before = burst(&s.node, addr, 30);
    before.assert_no_failures("blue");
    assert_eq!(before.answers().keys().collect::<Vec<_>>(), ["blue"]);

    let traffic = Traffic::start(&s.node, addr);
    traffic.wait_sent(500);
    s.deploy("svc.yaml", &service(", color: green"));
    let switched = Instant::now();
    let settled = switched + scaled(Duration::from_secs(2));
    wait_endpoints(&mut s.agent, "green's 2 endpoints", |p| {
        p.len() == 2 && p.iter().all(|n| n.starts_with("green-"))
    });
    // At least 2,000 requests in all, and 500 after the 2 s.
    let deadline = Instant::now() + scaled(Duration::from_secs(120));
    loop {
        let (total, late) = traffic.sent_since(settled);
        if total >= 2000 && late >= 500 {
            break;
        }
        assert!(Instant::now() < deadline, "{total} requests, {late} late");
        thread::sleep(Duration::from_millis(50));
    }
    let log = traffic.finish();
    log.assert_no_failures("blue-green switch");
    let late: Vec<&String> = log
        .0
        .iter()
        .filter(|(at, _)| *at >= settled)
        .filter_map(|(_, r)| r.as_ref().ok())
        .filter(|b| *b != "green")
        .collect();
    assert!(
        late.is_empty(),
        "{} answers not from green 2 s after the switch: {:?}",
        late.len(),
        &late[..late.len().min(5)]
    );
    let answers = log.answers();
    assert!(
        answers.get("blue").is_some_and(|n| *n >= 500),
        "{answers:?}"
    );
    eprintln!(
        "{ep:?}: blue-green: {} requests, answers {answers:?}, 0 failed; first green answer {:?} after the switch",
        log.0.len(),
        log.0
            .iter()
            .find(|(_, r)| r.as_deref() == Ok("green"))
            .map(|(at, _)| at.saturating_duration_since(switched))
    );
    // Blue still runs (ready to switch back), green serves.
    assert!(complete(&s.deployment("blue"), 2));
    assert_eq!(s.pods().len(), 4);
}

async fn canary(ep: Endpoint) {
    if skip_endpoint(ep) {
        return;
    }
    let mut s = Setup::start(ep, "canary").await;
    let t = s.token.clone();
    s.deploy(
        "stable.yaml",
        &deployment("stable", ", track: stable", "stable", 9, "/", &t),
    );
    s.deploy(
        "canary.yaml",
        &deployment("canary", ", track: canary", "canary", 1, "/", &t),
    );
    s.deploy("svc.yaml", &service(""));
    wait_complete(&mut s.agent, "stable", 9, Duration::from_secs(240));
    wait_complete(&mut s.agent, "canary", 1, Duration::from_secs(60));
    wait_endpoints(&mut s.agent, "10 endpoints", |p| p.len() == 10);
    let addr = s.service_addr();
    let log = burst(&s.node, addr, 2000);
    log.assert_no_failures("canary");
    let answers = log.answers();
    let total = log.0.len() as f64;
    let share = *answers.get("canary").unwrap_or(&0) as f64 / total;
    eprintln!("{ep:?}: canary: answers {answers:?}, canary share {share:.3}");
    assert_eq!(
        answers.keys().collect::<Vec<_>>(),
        ["canary", "stable"],
        "{answers:?}"
    );
    assert!((0.03..=0.20).contains(&share), "canary share {share}");
}

/// The ready sandboxes of this Deployment's pods, through the CRI: (pod name, sandbox id).
async fn sandboxes(cri: &mut Client) -> Vec<(String, String)> {
    let list = cri
        .runtime
        .list_pod_sandbox(api::ListPodSandboxRequest {
            filter: Some(api::PodSandboxFilter {
                state: Some(api::PodSandboxStateValue {
                    state: api::PodSandboxState::SandboxReady as i32,
                }),
                label_selector: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
        })
        .await
        .expect("ListPodSandbox")
        .into_inner();
    list.items
        .into_iter()
        .map(|s| (s.metadata.map(|m| m.name).unwrap_or_default(), s.id.clone()))
        .collect()
}

async fn self_healing(ep: Endpoint) {
    if skip_endpoint(ep) {
        return;
    }
    let mut s = Setup::start(ep, "heal").await;
    let t = s.token.clone();
    s.deploy("web.yaml", &deployment("web", "", "v1", 3, "/", &t));
    s.deploy("svc.yaml", &service(""));
    wait_complete(&mut s.agent, "web", 3, Duration::from_secs(120));
    wait_endpoints(&mut s.agent, "3 endpoints", |p| p.len() == 3);
    let addr = s.service_addr();
    let traffic = Traffic::start(&s.node, addr);
    traffic.wait_sent(100);

    // kill -9 of a replica's server: the container restarts in the same pod.
    let pids = httpd_pids(&t);
    assert_eq!(pids.len(), 3, "{pids:?}");
    // SAFETY: kill(2) of a process this test's pod runs.
    unsafe {
        libc::kill(pids[0], libc::SIGKILL);
    }
    let killed = Instant::now();
    s.agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(60),
        "the killed replica restarted and Ready",
        |l| {
            let items = l["items"].as_array().cloned().unwrap_or_default();
            items.len() == 3
                && items.iter().any(|p| {
                    p["status"]["containerStatuses"][0]["restartCount"].as_i64() == Some(1)
                })
                && items.iter().all(ready)
        },
    );
    wait_complete(&mut s.agent, "web", 3, Duration::from_secs(30));
    wait_endpoints(&mut s.agent, "3 endpoints again", |p| p.len() == 3);

    // A sandbox removed through the CRI, behind the agent's back.
    let mut cri = Client::connect(s.engine.socket())
        .await
        .expect("connect the CRI endpoint");
    let boxes = sandboxes(&mut cri).await;
    assert_eq!(boxes.len(), 3, "{boxes:?}");
    let (victim, id) = boxes[0].clone();
    // RemovePodSandbox alone (it stops what runs, as the CRI says), so that the agent does
    // not restart the container into a stopped sandbox in between. The agent may be
    // removing a container of it at the same moment: the engine then refuses for a moment
    // (containerd: "already in removing state").
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    loop {
        let r = cri
            .runtime
            .remove_pod_sandbox(api::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await;
        match r {
            Ok(_) => break,
            Err(e) if e.code() == tonic::Code::NotFound => break,
            Err(e) => assert!(Instant::now() < deadline, "RemovePodSandbox: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + scaled(Duration::from_secs(90));
    loop {
        s.agent.assert_alive();
        let boxes = sandboxes(&mut cri).await;
        let pods = s.pods();
        let whole = boxes.len() == 3
            && !boxes.iter().any(|(_, i)| *i == id)
            && pods.len() == 3
            && pods.iter().all(ready)
            && complete(&s.deployment("web"), 3);
        if whole {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{victim}'s sandbox {id} was not replaced: {boxes:?}\n{}",
            s.agent.log_tail(40)
        );
        thread::sleep(Duration::from_millis(100));
    }
    wait_endpoints(&mut s.agent, "3 endpoints at last", |p| p.len() == 3);
    let recovered = Instant::now();
    let tail_from = traffic.sent();
    traffic.wait_sent(tail_from + 100);
    let log = traffic.finish();
    // While a replica was down the other two kept answering: of the requests sent from
    // the kill to the recovery, those the dead endpoint got before its readiness failed
    // are refused (or time out), the rest answered.
    let window: Vec<&Result<String, String>> = log
        .0
        .iter()
        .filter(|(at, _)| *at >= killed && *at < recovered)
        .map(|(_, r)| r)
        .collect();
    let answered = window.iter().filter(|r| r.is_ok()).count();
    assert!(
        answered * 2 >= window.len() && answered > 0,
        "{answered} of {} requests answered while a replica was down: {:?}",
        window.len(),
        log.failures().iter().take(10).collect::<Vec<_>>()
    );
    // Whole again: every request sent since is answered.
    let tail_failures: Vec<&String> = log
        .0
        .iter()
        .filter(|(at, _)| *at >= recovered)
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    assert!(
        tail_failures.is_empty(),
        "after recovery: {tail_failures:?}"
    );
    eprintln!(
        "{ep:?}: self-healing: {} requests, {} failed while a replica was down",
        log.0.len(),
        log.failures().len()
    );
}

async fn bad_rollout(ep: Endpoint) {
    if skip_endpoint(ep) {
        return;
    }
    let mut s = Setup::start(ep, "bad").await;
    let t = s.token.clone();
    s.deploy("web.yaml", &deployment("web", "", "v1", 3, "/", &t));
    s.deploy("svc.yaml", &service(""));
    wait_complete(&mut s.agent, "web", 3, Duration::from_secs(120));
    wait_endpoints(&mut s.agent, "3 endpoints", |p| p.len() == 3);
    let addr = s.service_addr();
    let traffic = Traffic::start(&s.node, addr);
    traffic.wait_sent(100);

    // v3: its readiness probe asks for a page that does not exist.
    s.deploy("web.yaml", &deployment("web", "", "v3", 3, "/ready", &t));
    // Once the agent has taken v3 (the agent keeps no `generation` for `rollout status` to
    // wait on), `rollout status` follows it, and fails at the deadline.
    s.agent.wait_for(
        &deployment_path("web"),
        Duration::from_secs(30),
        "the v3 ReplicaSet",
        |d| {
            d["status"]["updatedReplicas"]
                .as_i64()
                .is_some_and(|n| n < 3)
        },
    );
    let status = {
        let mut c = std::process::Command::new(integration_tests::agent::agent_binary());
        c.arg(format!("--root-dir={}", s.agent.root_dir.display()))
            .args(["rollout", "status", "deployment/web", "--timeout=120s"]);
        thread::spawn(move || c.output().expect("rrun-kubelet rollout status"))
    };
    let deadline = Instant::now() + scaled(Duration::from_secs(90));
    let mut most_pods = 0;
    let mut least_available = i64::MAX;
    let stalled = loop {
        s.agent.assert_alive();
        let d = s.deployment("web");
        let st = &d["status"];
        most_pods = most_pods.max(s.pods().len());
        least_available = least_available.min(st["availableReplicas"].as_i64().unwrap_or(0));
        let progressing = st["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == "Progressing")
            .cloned()
            .unwrap_or_default();
        if progressing["reason"] == "ProgressDeadlineExceeded" {
            assert_eq!(progressing["status"], "False", "{d}");
            break d;
        }
        assert!(
            Instant::now() < deadline,
            "no ProgressDeadlineExceeded: {d}\n{}",
            s.agent.log_tail(40)
        );
        thread::sleep(Duration::from_millis(100));
    };
    // Stalled at the surge: one new pod, not ready; the three old ones serve.
    let st = &stalled["status"];
    assert_eq!(st["updatedReplicas"], 1, "{stalled}");
    assert_eq!(st["replicas"], 4, "{stalled}");
    assert_eq!(st["availableReplicas"], 3, "{stalled}");
    assert!(most_pods <= 4, "{most_pods} pods at once");
    assert!(least_available >= 3, "only {least_available} available");
    let out = status.join().expect("rollout status");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated..."),
        "{stdout}"
    );
    assert_eq!(
        stderr.trim(),
        "error: deployment \"web\" exceeded its progress deadline"
    );
    let mid = traffic.sent();
    traffic.wait_sent(mid + 200);

    // Back to v1 (what `rollout undo` writes): the v3 pod goes, v1 stays whole.
    s.deploy("web.yaml", &deployment("web", "", "v1", 3, "/", &t));
    s.agent.wait_for(
        &deployment_path("web"),
        Duration::from_secs(60),
        "v1 complete again",
        |d| {
            complete(d, 3)
                && d["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable")
        },
    );
    s.agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(60),
        "3 pods",
        |l| l["items"].as_array().map(Vec::len) == Some(3),
    );
    let out = s.agent.cli(&["rollout", "status", "deploy/web"]);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout
            .trim_end()
            .ends_with("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    let end = traffic.sent();
    traffic.wait_sent(end + 100);
    let log = traffic.finish();
    log.assert_no_failures("bad rollout");
    assert_eq!(
        log.answers().keys().collect::<Vec<_>>(),
        ["v1"],
        "{:?}",
        log.answers()
    );
    eprintln!(
        "{ep:?}: bad rollout: {} requests, answers {:?}, 0 failed",
        log.0.len(),
        log.answers()
    );
}

async fn session_affinity(ep: Endpoint) {
    if skip_endpoint(ep) {
        return;
    }
    let mut s = Setup::start(ep, "affinity").await;
    let t = s.token.clone();
    // Each pod's page is its own name.
    let d = deployment("web", "", "v1", 3, "/", &t).replace("echo $VERSION", "hostname");
    s.deploy("web.yaml", &d);
    let svc = service("").replace(
        "  ports:",
        "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n  ports:",
    );
    s.deploy("svc.yaml", &svc);
    wait_complete(&mut s.agent, "web", 3, Duration::from_secs(120));
    wait_endpoints(&mut s.agent, "3 endpoints", |p| p.len() == 3);
    let addr = s.service_addr();
    let log = burst(&s.node, addr, 300);
    log.assert_no_failures("session affinity");
    let answers = log.answers();
    let pods: Vec<String> = s
        .pods()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    // Random choice among 3 would give all three (all one: 3 in 3^300).
    assert_eq!(answers.len(), 1, "{answers:?}");
    let (pod, n) = answers.iter().next().expect("an answer");
    assert!(pods.contains(pod), "{pod} is not one of {pods:?}");
    eprintln!("{ep:?}: session affinity: {n} requests, all answered by {pod}");

    // A pod made after the Service has its variables (enableServiceLinks): its page shows them.
    let d = deployment("env", "", "x", 1, "/", &t)
        .replace("app: web", "app: envcheck")
        .replace(
            "echo $VERSION",
            "echo $WEB_SERVICE_HOST:$WEB_SERVICE_PORT,$WEB_PORT,$WEB_PORT_80_TCP_ADDR",
        );
    s.deploy("env.yaml", &d);
    wait_complete(&mut s.agent, "env", 1, Duration::from_secs(60));
    let pod_ip = s
        .pods()
        .iter()
        .find(|p| {
            p["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("env-"))
        })
        .and_then(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .expect("the env pod's IP");
    let page = burst(
        &s.node,
        format!("{pod_ip}:8080").parse().expect("address"),
        1,
    );
    page.assert_no_failures("the env pod");
    let ip = addr.ip();
    let want = format!("{ip}:80,tcp://{ip}:80,{ip}");
    assert_eq!(page.answers().keys().collect::<Vec<_>>(), [&want]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_affinity_rrun_cri() {
    session_affinity(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_affinity_containerd() {
    session_affinity(Endpoint::Containerd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_rrun_cri() {
    blue_green(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_containerd() {
    blue_green(Endpoint::Containerd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_rrun_cri() {
    canary(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_containerd() {
    canary(Endpoint::Containerd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_healing_rrun_cri() {
    self_healing(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_healing_containerd() {
    self_healing(Endpoint::Containerd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rollout_rrun_cri() {
    bad_rollout(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_rollout_containerd() {
    bad_rollout(Endpoint::Containerd).await;
}
