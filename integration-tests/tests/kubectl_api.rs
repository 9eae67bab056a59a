//! The stock kubectl (1.27 and 1.33, the oldest and newest clients beside the machine's
//! dispatcher) against rrun-kubelet's Kubernetes API on an agent over rrun-cri, in a node of
//! the test's own namespaces (the API on the node's loopback, 127.0.0.1:6443).
//!
//! `reads`: the admin kubeconfig works right after the start; a wrong token gets kubectl's
//! Unauthorized; with a Deployment, Service, ConfigMap and Secret from the manifest dir:
//! `get pods` (and `-o wide|yaml|json|jsonpath`, `-l`), `get all`, `get deploy,svc,cm`,
//! `get ns`, `get nodes`, `logs`, `describe pod`, NotFound worded as the API server words
//! it; `get pods -w --output-watch-events` seeing a pod come and go; and after a kill -9 and restart of the agent, the same kubeconfig lists the
//! same pods.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::agent::Agent;
use integration_tests::kubectl::{self, rows, ApiNode, Kubectl};
use integration_tests::kubelet::IMAGE;
use integration_tests::{scaled, Value};

const WORKLOAD: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: IMAGE
        imagePullPolicy: Never
        command: [sh, -c, 'echo started; exec sleep 1000000']
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data: {a: "1", b: "2"}
---
apiVersion: v1
kind: Secret
metadata:
  name: sec
stringData: {password: hunter2}
"#;

fn check_reads(k: &Kubectl, agent: &mut Agent) {
    let v: Value = serde_json::from_str(&k.ok(&["version", "-o", "json"])).expect("version json");
    let git = v["serverVersion"]["gitVersion"].as_str().unwrap_or("");
    assert!(git.starts_with("v1.33."), "{v}");

    // A wrong token: kubectl's own words for a 401.
    let o = k.run(&["--token=wrong", "get", "pods"]);
    assert!(!o.status.success());
    assert!(
        // 1.33 says "(Unauthorized)", 1.27 "(the server has asked for the client to provide
        // credentials)", as against a cluster.
        o.stderr
            .contains("error: You must be logged in to the server ("),
        "{}",
        o.stderr
    );

    k.wait(
        agent,
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
        "2 ready replicas",
        |s| s == "2",
    );

    let pods = rows(&k.ok(&["get", "pods"]));
    assert_eq!(
        pods[0],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE"],
        "{pods:?}"
    );
    assert_eq!(pods.len(), 3, "{pods:?}");
    for r in &pods[1..] {
        assert!(r[0].starts_with("web-"), "{r:?}");
        assert_eq!(&r[1..4], ["1/1", "Running", "0"], "{r:?}");
    }
    let wide = rows(&k.ok(&["get", "pods", "-o", "wide"]));
    assert_eq!(
        wide[0],
        [
            "NAME",
            "READY",
            "STATUS",
            "RESTARTS",
            "AGE",
            "IP",
            "NODE",
            "NOMINATED",
            "NODE",
            "READINESS",
            "GATES"
        ],
        "{wide:?}"
    );
    for r in &wide[1..] {
        assert!(r[5].starts_with("10.88.77."), "{r:?}");
        assert_eq!(&r[6..], ["rrun-node", "<none>", "<none>"], "{r:?}");
    }
    let yaml = k.ok(&["get", "pods", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: List") && yaml.contains("kind: Pod"),
        "{yaml}"
    );
    let json: Value =
        serde_json::from_str(&k.ok(&["get", "pods", "-o", "json"])).expect("pods json");
    let items = json["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    assert!(items
        .iter()
        .all(|p| p["kind"] == "Pod" && p["metadata"]["resourceVersion"].is_string()));
    let names = k.ok(&["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(
        names.split(' ').filter(|n| n.starts_with("web-")).count(),
        2,
        "{names}"
    );
    let by_label = k.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
    assert_eq!(
        by_label
            .lines()
            .filter(|l| l.starts_with("pod/web-"))
            .count(),
        2,
        "{by_label}"
    );
    let o = k.run(&["get", "pods", "-l", "app=none"]);
    assert!(
        o.status.success()
            && o.stderr
                .contains("No resources found in default namespace."),
        "{}",
        o.stderr
    );

    let all = k.ok(&["get", "all"]);
    for want in [
        "pod/web-",
        "service/web",
        "deployment.apps/web",
        "replicaset.apps/web-",
    ] {
        assert!(all.contains(want), "get all lacks {want}:\n{all}");
    }
    let mixed = k.ok(&["get", "deploy,svc,cm"]);
    let dep = mixed
        .lines()
        .find(|l| l.starts_with("deployment.apps/web"))
        .expect("deployment row");
    assert_eq!(rows(dep)[0][1..4], ["2/2", "2", "2"], "{mixed}");
    assert!(
        mixed.contains("NAME                 TYPE        CLUSTER-IP") || mixed.contains("TYPE"),
        "{mixed}"
    );
    let cm = mixed
        .lines()
        .find(|l| l.starts_with("configmap/cfg"))
        .expect("configmap row");
    assert_eq!(rows(cm)[0][1], "2", "{mixed}");
    let sec = rows(&k.ok(&["get", "secret", "sec"]));
    assert_eq!(sec[0], ["NAME", "TYPE", "DATA", "AGE"]);
    assert_eq!(sec[1][..3], ["sec", "Opaque", "1"]);

    // Pages of one (limit=1 and the continue tokens): one table, the same rows.
    let chunked = k.ok(&["get", "pods", "--chunk-size=1", "-o", "name"]);
    assert_eq!(chunked, k.ok(&["get", "pods", "-o", "name"]));
    assert_eq!(chunked.lines().count(), 2, "{chunked}");

    let ns = k.ok(&["get", "ns"]);
    for want in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            ns.lines()
                .any(|l| rows(l)[0][0] == want && l.contains("Active")),
            "{ns}"
        );
    }
    let nodes = rows(&k.ok(&["get", "nodes"]));
    assert_eq!(nodes[0], ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]);
    assert_eq!(nodes[1][..3], ["rrun-node", "Ready", "<none>"]);
    let rt = k.ok(&[
        "get",
        "node",
        "rrun-node",
        "-o",
        "jsonpath={.status.nodeInfo.containerRuntimeVersion}",
    ]);
    assert!(rt.contains("://") && !rt.starts_with("unknown"), "{rt}");

    // Logs and describe through the same API.
    let pod = names.split(' ').next().unwrap_or("").to_string();
    assert_eq!(k.ok(&["logs", &pod]), "started\n");
    assert!(k.ok(&["logs", "deployment/web"]).contains("started"));
    let d = k.ok(&["describe", "pod", &pod]);
    assert!(
        d.lines()
            .next()
            .is_some_and(|l| l.starts_with("Name:") && l.ends_with(&pod))
            && d.contains("Events:")
            && d.contains("Started"),
        "{d}"
    );

    let o = k.run(&["get", "pod", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        o.stderr.trim(),
        "Error from server (NotFound): pods \"nosuch\" not found"
    );
    let o = k.run(&["get", "deployment", "nosuch"]);
    assert_eq!(
        o.stderr.trim(),
        "Error from server (NotFound): deployments.apps \"nosuch\" not found"
    );
}

/// `kubectl get pods -w -l app=late` sees the pod of a manifest written after it started.
fn check_watch(k: &Kubectl, agent: &mut Agent) {
    let out = agent
        .root_dir
        .parent()
        .expect("agent dir")
        .join("watch.out");
    let file = fs::File::create(&out).expect("watch output");
    let mut child = k
        .command()
        .args([
            "get",
            "pods",
            "-w",
            "--output-watch-events",
            "-l",
            "app=late",
        ])
        .stdout(file)
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    agent.write_manifest(
        "late.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: late, labels: {{app: late}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {{name: main, image: {IMAGE}, imagePullPolicy: Never, command: [sleep, '1000000']}}\n"
        ),
    );
    // The pod comes (ADDED, then MODIFIED up to Running) and goes (DELETED).
    let mut seen = |what: &str, done: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + scaled(Duration::from_secs(60));
        loop {
            let text = fs::read_to_string(&out).unwrap_or_default();
            if text.lines().any(done) {
                return;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "get pods -w never showed {what}:\n{text}\n{}",
                    agent.log_tail(30)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    };
    seen("late ADDED", &|l| {
        l.starts_with("ADDED") && l.contains(" late ")
    });
    seen("late Running", &|l| {
        l.contains(" late ") && l.contains("Running")
    });
    agent.remove_manifest("late.yaml");
    seen("late DELETED", &|l| {
        l.starts_with("DELETED") && l.contains(" late ")
    });
    let _ = child.kill();
    let _ = child.wait();
    agent.wait_gone("late", Duration::from_secs(60));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads() {
    let Some(bins) = kubectl::bins_or_skip() else {
        return;
    };
    let mut api = ApiNode::start("kapi-reads", "10.98.0.0/24").await;
    let (node, agent) = (&api.node, &mut api.agent);
    let kubeconfig = agent.root_dir.join("kubeconfig");
    let mode = fs::metadata(&kubeconfig)
        .expect("kubeconfig right after the start")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let before = fs::read_to_string(&kubeconfig).expect("kubeconfig");
    agent.write_manifest("web.yaml", &WORKLOAD.replace("IMAGE", IMAGE));
    for bin in &bins {
        let k = Kubectl::new(
            node,
            bin,
            &kubeconfig,
            &bin.display().to_string().replace('/', "_"),
        );
        check_reads(&k, agent);
        check_watch(&k, agent);
    }

    // A restart loses nothing: the same CA and token, the same pods.
    let k = Kubectl::new(node, &bins[1], &kubeconfig, "restart");
    let names = k.ok(&["get", "pods", "-o", "name"]);
    agent.kill9();
    agent.restart();
    assert_eq!(fs::read_to_string(&kubeconfig).expect("kubeconfig"), before);
    k.wait(
        agent,
        &["get", "pods", "-o", "name"],
        &format!("the same pods after the restart ({names:?})"),
        |s| s == names,
    );
    agent.remove_manifest("web.yaml");
    k.wait(agent, &["get", "pods", "-o", "name"], "no pods", |s| {
        s.is_empty()
    });
}

/// The file `kubectl apply -f` gets: `version` goes into the pods' env and the ConfigMap.
fn apps_file(version: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: apps
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  namespace: apps
data: {{version: "{version}"}}
---
apiVersion: v1
kind: Secret
metadata:
  name: sec
  namespace: apps
stringData: {{password: hunter2}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: apps
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  strategy:
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {IMAGE}
        imagePullPolicy: Never
        env: [{{name: VERSION, value: "{version}"}}]
        command: [sh, -c, 'exec sleep 1000000']
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: apps
spec:
  selector: {{app: web}}
  ports:
  - port: 80
    targetPort: 8080
"#
    )
}

/// `apply -f` (kubectl 1.27) creates a Namespace, ConfigMap, Secret, Deployment and Service;
/// an edited file applied again (1.33) rolls the Deployment (`rollout status`), `scale`; a stale
/// `replace` gets 409; an object of a user's manifest file is refused, and so is an edit of an
/// immutable ConfigMap's data; a restart keeps the
/// API-made objects; `delete -f` removes them and the Deployment's pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes() {
    let Some(bins) = kubectl::bins_or_skip() else {
        return;
    };
    let mut api = ApiNode::start("kapi-writes", "10.98.1.0/24").await;
    let (node, agent) = (&api.node, &mut api.agent);
    let kubeconfig = agent.root_dir.join("kubeconfig");
    let k = |i: usize| Kubectl::new(node, &bins[i], &kubeconfig, &format!("w{i}"));
    let (old, new) = (k(0), k(1));
    let file = node.dir().join("apps.yaml");
    let file_s = file.display().to_string();

    fs::write(&file, apps_file("v1")).expect("apps.yaml");
    let out = old.ok(&["apply", "-f", &file_s]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "namespace/apps created",
            "configmap/cfg created",
            "secret/sec created",
            "deployment.apps/web created",
            "service/web created"
        ],
        "{out}"
    );
    let envs = [
        "get",
        "pods",
        "-n",
        "apps",
        "-o",
        "jsonpath={.items[*].spec.containers[0].env[0].value}",
    ];
    new.wait(agent, &envs, "2 pods of v1", |s| s == "v1 v1");
    new.wait(
        agent,
        &[
            "get",
            "deploy",
            "web",
            "-n",
            "apps",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
        "v1 ready",
        |s| s == "2",
    );
    let cm = rows(&new.ok(&["get", "cm", "cfg", "-n", "apps"]));
    assert_eq!(cm[1][..2], ["cfg", "1"], "{cm:?}");

    // The edit: a rolling update, watched to its end by rollout status.
    fs::write(&file, apps_file("v2")).expect("apps.yaml");
    let out = new.ok(&["apply", "-f", &file_s]);
    for want in [
        "namespace/apps unchanged",
        "configmap/cfg configured",
        "deployment.apps/web configured",
        "service/web unchanged",
    ] {
        assert!(out.lines().any(|l| l == want), "{want}:\n{out}");
    }
    new.wait(agent, &envs, "2 pods of v2 only", |s| s == "v2 v2");
    let o = new.ok(&[
        "rollout",
        "status",
        "deployment/web",
        "-n",
        "apps",
        "--timeout=120s",
    ]);
    assert!(o.contains("successfully rolled out"), "{o}");
    let gen = new.ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "apps",
        "-o",
        "jsonpath={.metadata.generation}",
    ]);
    assert_eq!(gen, "2");
    let o = new.ok(&["scale", "deployment/web", "-n", "apps", "--replicas=3"]);
    assert_eq!(o.trim(), "deployment.apps/web scaled");
    old.wait(agent, &envs, "3 pods of v2", |s| s == "v2 v2 v2");

    // A stale update: replace with the resourceVersion from before a patch.
    let before = new.ok(&["get", "cm", "cfg", "-n", "apps", "-o", "json"]);
    let stale = node.dir().join("stale.json");
    fs::write(&stale, &before).expect("stale.json");
    let o = new.ok(&[
        "patch",
        "cm",
        "cfg",
        "-n",
        "apps",
        "--type=merge",
        "-p",
        r#"{"data":{"b":"x"}}"#,
    ]);
    assert_eq!(o.trim(), "configmap/cfg patched");
    new.wait(
        agent,
        &["get", "cm", "cfg", "-n", "apps", "-o", "jsonpath={.data.b}"],
        "the patch",
        |s| s == "x",
    );
    let o = new.run(&["replace", "-f", &stale.display().to_string()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        o.stderr.contains("Error from server (Conflict)")
            && o.stderr.contains(
                "Operation cannot be fulfilled on configmaps \"cfg\": the object has been modified"
            ),
        "{}",
        o.stderr
    );

    // An object of a user's manifest file: read-only through the API, and why.
    agent.write_manifest(
        "own.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: own}\ndata: {a: '1'}\n",
    );
    new.wait(
        agent,
        &["get", "cm", "own", "-o", "name"],
        "the file's ConfigMap",
        |s| s.trim() == "configmap/own",
    );
    let o = new.run(&["label", "cm", "own", "x=y"]);
    assert!(
        o.stderr.contains("Error from server (Forbidden)")
            && o.stderr.contains("defined by a manifest file"),
        "{}",
        o.stderr
    );

    // An immutable ConfigMap made through the API: an edit of its data is refused as the
    // API server refuses it; its content stays.
    let imm = node.dir().join("imm.yaml");
    let imm_s = imm.display().to_string();
    let imm_doc = |v: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: imm}}\nimmutable: true\ndata: {{a: '{v}'}}\n")
    };
    fs::write(&imm, imm_doc("1")).expect("imm.yaml");
    new.ok(&["apply", "-f", &imm_s]);
    fs::write(&imm, imm_doc("2")).expect("imm.yaml");
    let o = new.run(&["apply", "-f", &imm_s]);
    assert!(
        o.status.code() == Some(1)
            && o.stderr.contains(
                "ConfigMap \"imm\" is invalid: data: Forbidden: field is immutable when `immutable` is set"
            ),
        "{}",
        o.stderr
    );
    let a = new.ok(&["get", "cm", "imm", "-o", "jsonpath={.data.a}"]);
    assert_eq!(a, "1");
    new.ok(&["delete", "-f", &imm_s]);

    // A restart keeps what the API made.
    let names = new.ok(&["get", "pods", "-n", "apps", "-o", "name"]);
    agent.kill9();
    agent.restart();
    new.wait(
        agent,
        &["get", "pods", "-n", "apps", "-o", "name"],
        "the same pods",
        |s| s == names,
    );
    let o = new.ok(&[
        "get",
        "ns/apps",
        "cm/cfg",
        "secret/sec",
        "deploy/web",
        "svc/web",
        "-n",
        "apps",
        "-o",
        "name",
    ]);
    assert_eq!(o.lines().count(), 5, "{o}");

    let out = new.ok(&["delete", "-f", &file_s]);
    for want in [
        "namespace \"apps\" deleted",
        "configmap \"cfg\" deleted",
        "deployment.apps \"web\" deleted",
        "service \"web\" deleted",
    ] {
        assert!(out.lines().any(|l| l == want), "{want}:\n{out}");
    }
    new.wait(
        agent,
        &["get", "pods", "-n", "apps", "-o", "name"],
        "the Deployment's pods collected",
        |s| s.is_empty(),
    );
    let o = new.run(&["get", "deploy", "web", "-n", "apps"]);
    assert!(
        o.status.code() == Some(1) && o.stderr.contains("Error from server (NotFound)"),
        "{}",
        o.stderr
    );
}
