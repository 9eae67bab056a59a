//! rrun-kubelet's own rollout commands (`rollout status|history|undo|pause|resume|restart`,
//! `scale`) against a node of the test's own namespaces, through rrun-cri and through
//! containerd's CRI as the control.
//!
//! `undo`: a Deployment of 3 busybox httpd pods (each page says its version; a readiness
//! probe) behind a Service; a client in the node's network namespace sends requests to the
//! ClusterIP one after another while the Deployment rolls v1 → v2 and `rollout undo` takes it
//! back to v1: at least 2,000 requests, none failed, every answer v1 at the end. The undo is
//! written into the manifest file (the other document of the file keeps its comment);
//! `metadata.generation` and `status.observedGeneration` follow each change and survive a
//! restart of the agent; history, `--revision`, scale up and down, restart (new pods, same
//! template otherwise), pause and resume with kubectl's words and exit codes.
//!
//! `sets` (rrun-cri): a StatefulSet and a DaemonSet rolled v1 → v2 → undo with `rollout
//! status|history|undo`, their ControllerRevisions, and `scale statefulset/NAME`.

use std::net::SocketAddr;
use std::time::Duration;

use integration_tests::agent::Agent;
use integration_tests::engines::have;
use integration_tests::kubelet::{start_engine, CgroupRoot, Endpoint, Node, IMAGE};
use integration_tests::traffic::{burst, Traffic};
use integration_tests::{Output, Value};

const SERVICE_RANGE: &str = "10.97.2.0/24";
const MIN_REQUESTS: usize = 2000;
const DPATH: &str = "/apis/apps/v1/namespaces/default/deployments/web";

fn skip_endpoint(ep: Endpoint) -> bool {
    (ep == Endpoint::Containerd && !(have("containerd") && have("ctr"))) || !have("nft")
}

/// The Service (with a comment the write-back must keep) and the Deployment.
fn manifests(version: &str, token: &str) -> String {
    format!(
        r#"# the front door: kept as written
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: http
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  selector:
    matchLabels: {{app: web}}
  strategy:
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
"#
    )
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{out}");
    out.stdout.clone()
}

/// Complete at `n` replicas, and the controller has seen the newest spec.
fn complete(d: &Value, n: i64) -> bool {
    let st = &d["status"];
    st["replicas"] == n
        && st["updatedReplicas"] == n
        && st["availableReplicas"] == n
        && st["observedGeneration"] == d["metadata"]["generation"]
}

fn pod_names(agent: &Agent) -> Vec<String> {
    let mut v: Vec<String> = agent
        .get_json("/api/v1/namespaces/default/pods")
        .and_then(|l| l["items"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    v.sort();
    v
}

/// The manifest file's Deployment document, as it is now (the Service's comes first).
fn file_deployment(agent: &Agent) -> String {
    let text = std::fs::read_to_string(agent.manifests.join("web.yaml")).expect("web.yaml");
    assert!(
        text.starts_with("# the front door: kept as written\napiVersion: v1\nkind: Service\n"),
        "{text}"
    );
    text.split_once("\n---\n")
        .map(|(_, d)| d.to_string())
        .expect("two documents")
}

fn history_rows(out: &str) -> Vec<String> {
    out.lines()
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

async fn undo(ep: Endpoint) {
    if skip_endpoint(ep) {
        return;
    }
    let tag = format!("rollcli-{ep:?}").to_lowercase();
    let token = format!("t{}u", std::process::id());
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
    let d = agent.wait_for(DPATH, Duration::from_secs(120), "v1 available", |d| {
        complete(d, 3)
    });
    assert_eq!(d["metadata"]["generation"], 1, "{d}");
    let svc = agent.wait_for(
        "/api/v1/namespaces/default/services/web",
        Duration::from_secs(10),
        "the service",
        |s| s["spec"]["clusterIP"].is_string(),
    );
    let out = node
        .run_net(
            &["ip", "route", "add", SERVICE_RANGE, "dev", "rrunkbr0"],
            Duration::from_secs(10),
        )
        .expect("ip route");
    assert!(out.status.success(), "ip route add: {out:?}");
    let addr: SocketAddr = format!("{}:80", svc["spec"]["clusterIP"].as_str().unwrap_or(""))
        .parse()
        .expect("address");
    agent.wait_for(
        "/api/v1/namespaces/default/endpoints/web",
        Duration::from_secs(30),
        "3 endpoints",
        |e| e["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(3),
    );
    burst(&node, addr, 30).assert_no_failures("before");

    // v1 → v2 → undo, under traffic.
    let traffic = Traffic::start(&node, addr);
    agent.write_manifest("web.yaml", &manifests("v2", &token));
    // The agent reads the file a moment later (the CLI's own edits wait for that).
    agent.wait_for(DPATH, Duration::from_secs(30), "generation 2", |d| {
        d["metadata"]["generation"] == 2
    });
    let out = ok(&agent.cli(&["rollout", "status", "deployment/web", "--timeout=180s"]));
    assert!(
        out.trim_end()
            .ends_with("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    let d = agent.get_json(DPATH).expect("deployment");
    assert_eq!(d["metadata"]["generation"], 2, "{d}");
    assert_eq!(d["status"]["observedGeneration"], 2, "{d}");
    let out = ok(&agent.cli(&["rollout", "history", "deployment/web"]));
    assert!(
        out.starts_with("deployment.apps/web \nREVISION  CHANGE-CAUSE\n"),
        "{out}"
    );
    assert_eq!(history_rows(&out), ["1", "2"], "{out}");
    let out = ok(&agent.cli(&["rollout", "history", "deploy/web", "--revision=1"]));
    assert!(
        out.starts_with("deployment.apps/web with revision #1\nPod Template:\n"),
        "{out}"
    );
    assert!(out.contains("VERSION:\tv1"), "{out}");
    let out = agent.cli(&["rollout", "history", "deploy/web", "--revision=9"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr.contains("unable to find the specified revision"),
        "{out}"
    );

    let out = ok(&agent.cli(&["rollout", "undo", "deployment/web"]));
    assert_eq!(out.trim(), "deployment.apps/web rolled back");
    let doc = file_deployment(&agent);
    assert!(doc.contains("value: v1") && !doc.contains("v2"), "{doc}");
    // The CLI returns once the agent has the change.
    assert_eq!(
        agent.get_json(DPATH).expect("deployment")["metadata"]["generation"],
        3
    );
    let out = ok(&agent.cli(&["rollout", "status", "deployment/web", "--timeout=180s"]));
    assert!(out.contains("successfully rolled out"), "{out}");
    // The old pods have left the node.
    agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(60),
        "3 pods",
        |l| l["items"].as_array().map(Vec::len) == Some(3),
    );
    traffic.wait_sent(MIN_REQUESTS);
    let log = traffic.finish();
    log.assert_no_failures("v1 → v2 → undo");
    let answers = log.answers();
    assert!(
        answers.contains_key("v1") && answers.contains_key("v2"),
        "{answers:?}"
    );
    eprintln!(
        "{ep:?}: v1 → v2 → undo: {} requests, answers {answers:?}, 0 failed",
        log.0.len()
    );
    let after = burst(&node, addr, 50);
    after.assert_no_failures("after the undo");
    assert_eq!(after.answers().keys().collect::<Vec<_>>(), ["v1"]);
    // Revision 1 became 3; a second undo is to revision 2 (v2); to revision 3 is a no-op.
    let out = ok(&agent.cli(&["rollout", "history", "deployment/web"]));
    assert_eq!(history_rows(&out), ["2", "3"], "{out}");
    let out = ok(&agent.cli(&["rollout", "undo", "deployment/web", "--to-revision=3"]));
    assert_eq!(
        out.trim(),
        "deployment.apps/web skipped rollback (current template already matches revision 3)"
    );
    let out = agent.cli(&["rollout", "undo", "deployment/web", "--to-revision=7"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("unable to find specified revision 7 in history"),
        "{out}"
    );

    // Scale up and down, written into the file.
    let out = ok(&agent.cli(&["scale", "deployment/web", "--replicas=5"]));
    assert_eq!(out.trim(), "deployment.apps/web scaled");
    assert!(file_deployment(&agent).contains("replicas: 5"));
    let d = agent.wait_for(DPATH, Duration::from_secs(120), "5 replicas", |d| {
        complete(d, 5)
    });
    assert_eq!(d["metadata"]["generation"], 4, "{d}");
    ok(&agent.cli(&["scale", "deploy/web", "--replicas", "2"]));
    agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(60),
        "2 pods",
        |l| l["items"].as_array().map(Vec::len) == Some(2),
    );
    agent.wait_for(DPATH, Duration::from_secs(60), "2 replicas", |d| {
        complete(d, 2)
    });

    // Restart: new pods, same template but for the restartedAt annotation.
    let before = pod_names(&agent);
    let out = ok(&agent.cli(&["rollout", "restart", "deployment/web"]));
    assert_eq!(out.trim(), "deployment.apps/web restarted");
    let d = agent.get_json(DPATH).expect("deployment");
    assert_eq!(d["metadata"]["generation"], 6, "{d}");
    let t = &d["spec"]["template"];
    assert!(
        t["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string(),
        "{d}"
    );
    assert_eq!(t["spec"]["containers"][0]["env"][0]["value"], "v1", "{d}");
    ok(&agent.cli(&["rollout", "status", "deployment/web", "--timeout=180s"]));
    agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(60),
        "2 new pods",
        |l| {
            let items = l["items"].as_array().cloned().unwrap_or_default();
            items.len() == 2
                && items.iter().all(|p| {
                    !before.contains(&p["metadata"]["name"].as_str().unwrap_or("").to_string())
                })
        },
    );
    let out = ok(&agent.cli(&["rollout", "history", "deployment/web"]));
    assert_eq!(history_rows(&out), ["2", "3", "4"], "{out}");
    burst(&node, addr, 20).assert_no_failures("after the restart");

    // Pause and resume, with kubectl's refusals.
    let out = ok(&agent.cli(&["rollout", "pause", "deployment/web"]));
    assert_eq!(out.trim(), "deployment.apps/web paused");
    assert!(file_deployment(&agent).contains("paused: true"));
    agent.wait_for(DPATH, Duration::from_secs(30), "paused", |d| {
        d["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["reason"] == "DeploymentPaused")
    });
    let out = agent.cli(&["rollout", "pause", "deployment/web"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert_eq!(
        out.stderr.trim(),
        "error: deployments.apps \"web\" is already paused"
    );
    let out = agent.cli(&["rollout", "undo", "deployment/web"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(
        out.stderr
            .contains("you cannot rollback a paused deployment"),
        "{out}"
    );
    let out = agent.cli(&["rollout", "restart", "deployment/web"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let out = ok(&agent.cli(&["rollout", "resume", "deployment/web"]));
    assert_eq!(out.trim(), "deployment.apps/web resumed");
    assert!(!file_deployment(&agent).contains("paused"));
    let out = agent.cli(&["rollout", "resume", "deployment/web"]);
    assert_eq!(
        out.stderr.trim(),
        "error: deployments.apps \"web\" is not paused"
    );
    let d = agent.wait_for(DPATH, Duration::from_secs(60), "resumed", |d| {
        complete(d, 2) && d["metadata"]["generation"] == 8
    });

    // The generation survives a restart of the agent.
    agent.kill9();
    agent.restart();
    let again = agent.wait_for(DPATH, Duration::from_secs(60), "the Deployment", |d| {
        complete(d, 2)
    });
    assert_eq!(again["metadata"]["generation"], d["metadata"]["generation"]);
    assert_eq!(again["metadata"]["uid"], d["metadata"]["uid"]);

    agent.remove_manifest("web.yaml");
    agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(60),
        "no pods",
        |l| l["items"].as_array().is_some_and(Vec::is_empty),
    );
    drop(agent);
    drop(engine);
}

fn sets_manifest(version: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  replicas: 2
  serviceName: db
  selector:
    matchLabels: {{app: db}}
  template:
    metadata:
      labels: {{app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {IMAGE}
        imagePullPolicy: Never
        env: [{{name: VERSION, value: {version}}}]
        command: [sh, -c, 'exec sleep 1000000']
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
spec:
  selector:
    matchLabels: {{app: agent}}
  template:
    metadata:
      labels: {{app: agent}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {IMAGE}
        imagePullPolicy: Never
        env: [{{name: VERSION, value: {version}}}]
        command: [sh, -c, 'exec sleep 1000000']
"#
    )
}

/// The VERSION of every pod of `app` in a pod list.
fn versions(list: &Value, app: &str) -> Vec<String> {
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["labels"]["app"] == app)
        .map(|p| {
            p["spec"]["containers"][0]["env"][0]["value"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect()
}

const PODS: &str = "/api/v1/namespaces/default/pods";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sets_rrun_cri() {
    let tag = "rollcli-sets";
    let cgroups = CgroupRoot::new(tag);
    let node = Node::start();
    let engine = start_engine(Endpoint::RrunCri, &node).await;
    let mut agent = Agent::start(&node, &engine.socket(), &cgroups, tag, &[]);
    agent.write_manifest("sets.yaml", &sets_manifest("v1"));
    for p in [
        "/apis/apps/v1/namespaces/default/statefulsets/db",
        "/apis/apps/v1/namespaces/default/daemonsets/agent",
    ] {
        agent.wait_for(p, Duration::from_secs(30), "the set", |_| true);
    }
    for t in ["statefulset/db", "daemonset/agent"] {
        let out = ok(&agent.cli(&["rollout", "status", t, "--timeout=120s"]));
        eprintln!("{out}");
    }
    agent.write_manifest("sets.yaml", &sets_manifest("v2"));
    for p in [
        "/apis/apps/v1/namespaces/default/statefulsets/db",
        "/apis/apps/v1/namespaces/default/daemonsets/agent",
    ] {
        agent.wait_for(p, Duration::from_secs(30), "generation 2", |o| {
            o["metadata"]["generation"] == 2
        });
    }
    let out = ok(&agent.cli(&["rollout", "status", "sts/db", "--timeout=120s"]));
    assert!(
        out.trim_end().lines().last().is_some_and(|l| {
            l == "partitioned roll out complete: 2 new pods have been updated..."
        }),
        "{out}"
    );
    let out = ok(&agent.cli(&["rollout", "status", "ds/agent", "--timeout=120s"]));
    assert!(
        out.trim_end()
            .ends_with("daemon set \"agent\" successfully rolled out"),
        "{out}"
    );
    agent.wait_for(PODS, Duration::from_secs(60), "v2 everywhere", |l| {
        versions(l, "db") == ["v2", "v2"] && versions(l, "agent") == ["v2"]
    });
    let revs = agent
        .get_json("/apis/apps/v1/namespaces/default/controllerrevisions")
        .expect("controllerrevisions");
    let n = revs["items"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(n, 4, "{revs}");
    for (target, who) in [
        ("statefulset/db", "statefulset.apps/db"),
        ("daemonset/agent", "daemonset.apps/agent"),
    ] {
        let out = ok(&agent.cli(&["rollout", "history", target]));
        assert!(out.starts_with(&format!("{who} \n")), "{out}");
        assert_eq!(history_rows(&out), ["1", "2"], "{out}");
        let out = ok(&agent.cli(&["rollout", "undo", target]));
        assert_eq!(out.trim(), format!("{who} rolled back"));
    }
    let text = std::fs::read_to_string(agent.manifests.join("sets.yaml")).expect("sets.yaml");
    assert!(!text.contains("v2"), "{text}");
    ok(&agent.cli(&["rollout", "status", "sts/db", "--timeout=120s"]));
    ok(&agent.cli(&["rollout", "status", "ds/agent", "--timeout=120s"]));
    agent.wait_for(PODS, Duration::from_secs(120), "v1 again", |l| {
        versions(l, "db") == ["v1", "v1"] && versions(l, "agent") == ["v1"]
    });
    let out = ok(&agent.cli(&["rollout", "history", "sts/db"]));
    assert_eq!(history_rows(&out), ["2", "3"], "{out}");
    let sts = agent
        .get_json("/apis/apps/v1/namespaces/default/statefulsets/db")
        .expect("sts");
    assert_eq!(sts["metadata"]["generation"], 3, "{sts}");
    assert_eq!(sts["status"]["observedGeneration"], 3, "{sts}");

    // Scale a StatefulSet: up to 3 (db-2 appears), down to 1.
    let out = ok(&agent.cli(&["scale", "statefulset/db", "--replicas=3"]));
    assert_eq!(out.trim(), "statefulset.apps/db scaled");
    agent.wait_for(
        "/api/v1/namespaces/default/pods/db-2",
        Duration::from_secs(60),
        "db-2",
        |_| true,
    );
    ok(&agent.cli(&["rollout", "status", "sts/db", "--timeout=120s"]));
    ok(&agent.cli(&["scale", "sts/db", "--replicas=1"]));
    agent.wait_for(PODS, Duration::from_secs(60), "db-0 only", |l| {
        versions(l, "db").len() == 1
    });
    let out = agent.cli(&["scale", "daemonset/agent", "--replicas=2"]);
    assert_eq!(out.status.code(), Some(1), "{out}");
    let out = agent.cli(&["rollout", "pause", "sts/db"]);
    assert_eq!(
        out.stderr.trim(),
        "error: statefulsets.apps \"db\" pausing is not supported"
    );

    agent.remove_manifest("sets.yaml");
    agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(60),
        "no pods",
        |l| l["items"].as_array().is_some_and(Vec::is_empty),
    );
    drop(agent);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_rrun_cri() {
    undo(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undo_containerd() {
    undo(Endpoint::Containerd).await;
}

/// `bench/rollout.sh`: 10 replicas rolled v1 → v2 (maxSurge 25%, maxUnavailable 0,
/// readiness every 1 s), the time from the manifest written to the Deployment complete; then
/// requests per second through the 10 replicas' ClusterIP, through the ClusterIP of a
/// Service of one pod, and straight to that pod's IP, alternating rounds of
/// `RRUN_ROLLOUT_BENCH_SECS` (default 5) each, three of each. Prints BENCH lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: bench/rollout.sh"]
async fn bench_rollout() {
    let tag = "rollcli-bench";
    let token = format!("t{}b", std::process::id());
    let cgroups = CgroupRoot::new(tag);
    let node = Node::start();
    let engine = start_engine(Endpoint::RrunCri, &node).await;
    let mut agent = Agent::start(
        &node,
        &engine.socket(),
        &cgroups,
        tag,
        &[format!("--service-cluster-ip-range={SERVICE_RANGE}")],
    );
    let ten = |v: &str| {
        manifests(v, &token)
            .replace("replicas: 3", "replicas: 10")
            .replace(
                "maxSurge: 1, maxUnavailable: 0",
                "maxSurge: 25%, maxUnavailable: 0",
            )
    };
    agent.write_manifest("web.yaml", &ten("v1"));
    agent.wait_for(DPATH, Duration::from_secs(300), "10 of v1", |d| {
        complete(d, 10)
    });
    let t0 = std::time::Instant::now();
    agent.write_manifest("web.yaml", &ten("v2"));
    let d = agent.wait_for(DPATH, Duration::from_secs(600), "10 of v2", |d| {
        complete(d, 10) && d["metadata"]["generation"] == 2
    });
    let roll = t0.elapsed();
    assert_eq!(d["status"]["updatedReplicas"], 10);
    println!("BENCH roll_10_replicas_ms {}", roll.as_millis());

    let svc = agent.wait_for(
        "/api/v1/namespaces/default/services/web",
        Duration::from_secs(10),
        "the service",
        |s| s["spec"]["clusterIP"].is_string(),
    );
    let out = node
        .run_net(
            &["ip", "route", "add", SERVICE_RANGE, "dev", "rrunkbr0"],
            Duration::from_secs(10),
        )
        .expect("ip route");
    assert!(out.status.success(), "ip route add: {out:?}");
    let cluster: SocketAddr = format!("{}:80", svc["spec"]["clusterIP"].as_str().unwrap_or(""))
        .parse()
        .expect("address");
    let ep = agent.wait_for(
        "/api/v1/namespaces/default/endpoints/web",
        Duration::from_secs(60),
        "10 endpoints",
        |e| e["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(10),
    );
    assert!(ep["subsets"][0]["addresses"].is_array());
    // The proxy's own cost: a Service with one endpoint against that pod's own address
    // (the 10-endpoint Service also spreads the load over ten httpd processes).
    agent.write_manifest(
        "one.yaml",
        &format!(
            r#"apiVersion: v1
kind: Pod
metadata:
  name: one
  labels: {{bench: one}}
spec:
  containers:
  - name: httpd
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, 'mkdir -p /www/{token}o && echo one > /www/{token}o/index.html && exec httpd -f -p 8080 -h /www/{token}o']
    ports: [{{name: http, containerPort: 8080}}]
    readinessProbe:
      httpGet: {{path: /, port: http}}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: one
spec:
  selector: {{bench: one}}
  ports:
  - port: 80
    targetPort: http
"#
        ),
    );
    let one_ep = agent.wait_for(
        "/api/v1/namespaces/default/endpoints/one",
        Duration::from_secs(60),
        "one endpoint",
        |e| e["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(1),
    );
    let one_svc = agent
        .get_json("/api/v1/namespaces/default/services/one")
        .expect("service one");
    let one: SocketAddr = format!("{}:80", one_svc["spec"]["clusterIP"].as_str().unwrap_or(""))
        .parse()
        .expect("address");
    let pod: SocketAddr = format!(
        "{}:8080",
        one_ep["subsets"][0]["addresses"][0]["ip"]
            .as_str()
            .unwrap_or("")
    )
    .parse()
    .expect("pod address");
    let secs: u64 = std::env::var("RRUN_ROLLOUT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let rate = |addr: SocketAddr| {
        let t = Traffic::start(&node, addr);
        std::thread::sleep(Duration::from_secs(secs));
        let log = t.finish();
        log.assert_no_failures("bench");
        log.0.len() as f64 / secs as f64
    };
    // Warm both paths, then alternate so that load drifts hit both alike.
    rate(cluster);
    rate(one);
    rate(pod);
    let (mut c, mut o, mut p) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        c.push(rate(cluster));
        o.push(rate(one));
        p.push(rate(pod));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("BENCH rps_cluster_ip_10 {:.0}", median(&mut c));
    println!("BENCH rps_cluster_ip {:.0}", median(&mut o));
    println!("BENCH rps_pod_ip {:.0}", median(&mut p));
    agent.remove_manifest("one.yaml");
    agent.remove_manifest("web.yaml");
    agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(120),
        "no pods",
        |l| l["items"].as_array().is_some_and(Vec::is_empty),
    );
    drop(agent);
    drop(engine);
}
