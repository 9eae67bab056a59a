//! Debian's kubectl 1.20 (`kubernetes-client`, what scripts/setup.sh installs on a machine
//! without kubectl; unpacked beside the machine's own by scripts/kubectl-1.20.sh) against
//! the agent's API on rrun-cri: the everyday commands of the README, with what a cluster
//! prints. kubectl 1.20 reads the classic discovery and `/openapi/v2` as protobuf (for
//! `apply`'s validation and `explain`), and streams `exec` over SPDY/3.1.

use std::time::Duration;

use integration_tests::kubectl::{rows, ApiNode, Kubectl};
use integration_tests::kubelet::IMAGE;

const WORKLOAD: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
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
        command: [sh, -c, 'echo hi; exec sleep 1000000']
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data: {a: "1"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_1_20() {
    // Debian's kubectl 1.20: `$RRUN_KUBECTL_120`, else what scripts/kubectl-1.20.sh unpacks.
    let bin = match integration_tests::script_binary("RRUN_KUBECTL_120", "kubectl-1.20.sh") {
        Ok(b) => b,
        Err(e) => {
            eprintln!("skipped: Debian's kubectl 1.20 is not available: {e}");
            return;
        }
    };
    let mut api = ApiNode::start("k120", "10.98.77.0/24").await;
    let (node, agent) = (&api.node, &mut api.agent);
    let kubeconfig = agent.root_dir.join("kubeconfig");
    let k = Kubectl::new(node, &bin, &kubeconfig, "k120").timeout(Duration::from_secs(120));
    assert!(
        k.ok(&["version", "--short"])
            .contains("Client Version: v1.20"),
        "not kubectl 1.20: {}",
        bin.display()
    );
    let file = node.dir().join("workload.yaml");
    std::fs::write(&file, WORKLOAD.replace("IMAGE", IMAGE)).expect("workload.yaml");
    let f = file.display().to_string();

    assert_eq!(
        k.ok(&["apply", "-f", &f]),
        "deployment.apps/web created\nconfigmap/cfg created\n"
    );
    let status = k.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    assert!(
        status.ends_with("deployment \"web\" successfully rolled out\n"),
        "{status}"
    );
    let pods = rows(&k.ok(&["get", "pods"]));
    assert_eq!(pods[0], ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]);
    assert_eq!(pods.len(), 2, "{pods:?}");
    assert_eq!((&pods[1][1][..], &pods[1][2][..]), ("1/1", "Running"));
    let deploys = rows(&k.ok(&["get", "deployments"]));
    assert_eq!(
        deploys[0],
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert_eq!(&deploys[1][..2], ["web", "1/1"]);
    assert_eq!(k.ok(&["logs", "deployment/web"]), "hi\n");

    // exec over SPDY: the exit code comes back as kubectl's own.
    let o = k.run(&["exec", "deploy/web", "--", "sh", "-c", "echo in; exit 3"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_eq!(o.stdout, "in\n");
    assert!(
        o.stderr.contains("command terminated with exit code 3"),
        "{o:?}"
    );

    assert_eq!(
        k.ok(&["label", "cm", "cfg", "tier=x"]),
        "configmap/cfg labeled\n"
    );
    assert_eq!(
        k.ok(&["scale", "deployment/web", "--replicas=2"]),
        "deployment.apps/web scaled\n"
    );
    let wait = k.ok(&[
        "wait",
        "--for=condition=Available",
        "deployment/web",
        "--timeout=120s",
    ]);
    assert_eq!(wait, "deployment.apps/web condition met\n");
    let explain = k.ok(&["explain", "deployment.spec.replicas"]);
    assert!(
        explain.contains("FIELD:    replicas <integer>"),
        "{explain}"
    );
    let nodes = rows(&k.ok(&["get", "nodes"]));
    assert_eq!(&nodes[1][1..2], ["Ready"], "{nodes:?}");
    let missing = k.run(&["get", "pod", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        missing.stderr.trim(),
        "Error from server (NotFound): pods \"nope\" not found"
    );

    assert_eq!(
        k.ok(&["delete", "-f", &f]),
        "deployment.apps \"web\" deleted\nconfigmap \"cfg\" deleted\n"
    );
    k.wait(agent, &["get", "pods", "-o", "name"], "no pods", |s| {
        s.is_empty()
    });
}
