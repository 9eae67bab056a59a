//! `kubectl create <kind>` (1.27 and 1.33, the oldest and newest clients beside the machine's
//! dispatcher) against rrun-kubelet's Kubernetes API on an agent over rrun-cri. kubectl 1.33's
//! `create` commands POST `application/vnd.kubernetes.protobuf` bodies (Accept:
//! `application/vnd.kubernetes.protobuf,application/json`; the agent answers JSON), the
//! protobuf path of the API (kubelet/src/api/protobuf.rs); 1.27 sends the same as JSON.
//!
//! `creates`: with each client, in a namespace `kubectl create namespace` made:
//! `create deployment --replicas=2` whose pods then run (with 1.33, the request seen to be
//! protobuf), `create configmap --from-literal`, `create secret generic --from-literal` (the
//! value read back equal), `create service clusterip|nodeport` (a node port allocated),
//! `create cronjob`, `create job`,
//! `create job --from=cronjob/NAME` (the Job owned by the CronJob), a `--dry-run=server`
//! create that stores nothing, and the deletes that collect the pods.

use integration_tests::agent::Agent;
use integration_tests::kubectl::{self, ApiNode, Kubectl, VERSIONS};
use integration_tests::kubelet::IMAGE;
use integration_tests::Value;

/// `kubectl ARGS -o json`, with the agent's log if it fails.
fn json(k: &Kubectl, agent: &Agent, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    let o = k.run(&a);
    assert!(
        o.status.success(),
        "kubectl {a:?}: {}\nagent log:\n{}",
        o.stderr,
        agent.log_tail(40)
    );
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("kubectl {a:?}: {e}:\n{}", o.stdout))
}

fn check_creates(k: &Kubectl, agent: &mut Agent, ns: &str, version: &str) {
    let out = k.ok(&["create", "namespace", ns]);
    assert_eq!(out.trim(), format!("namespace/{ns} created"));
    let o = k.run(&[
        "-n",
        ns,
        "create",
        "deployment",
        "web",
        "--image",
        IMAGE,
        "--replicas=2",
        "-v=8",
        "--",
        "sh",
        "-c",
        "exec sleep 1000000",
    ]);
    assert!(o.status.success(), "{}", o.stderr);
    assert_eq!(o.stdout.trim(), "deployment.apps/web created");
    // kubectl -v=8 prints the request's headers: 1.33's body is protobuf.
    let proto = "Content-Type: application/vnd.kubernetes.protobuf";
    assert_eq!(
        o.stderr.contains(proto),
        version == "1.33",
        "kubectl {version}:\n{}",
        o.stderr
    );
    let d = json(k, agent, &["-n", ns, "get", "deployment", "web"]);
    assert_eq!(d["spec"]["replicas"], 2, "{d}");
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web", "{d}");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["command"],
        serde_json::json!(["sh", "-c", "exec sleep 1000000"]),
        "{d}"
    );
    k.wait(
        agent,
        &["-n", ns, "get", "pods", "-l", "app=web", "--no-headers"],
        "the Deployment's two pods running",
        |s| {
            let lines: Vec<&str> = s.lines().collect();
            lines.len() == 2
                && lines
                    .iter()
                    .all(|l| l.contains(" 1/1 ") && l.contains("Running"))
        },
    );

    let out = k.ok(&[
        "-n",
        ns,
        "create",
        "configmap",
        "cfg",
        "--from-literal=a=1",
        "--from-literal=b=two",
    ]);
    assert_eq!(out.trim(), "configmap/cfg created");
    let c = json(k, agent, &["-n", ns, "get", "configmap", "cfg"]);
    assert_eq!(c["data"], serde_json::json!({"a": "1", "b": "two"}), "{c}");

    let out = k.ok(&[
        "-n",
        ns,
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=password=hunter2",
    ]);
    assert_eq!(out.trim(), "secret/sec created");
    let v = k.ok(&[
        "-n",
        ns,
        "get",
        "secret",
        "sec",
        "-o",
        "jsonpath={.data.password}",
    ]);
    assert_eq!(v, "aHVudGVyMg==", "hunter2 in base64");
    let s = json(k, agent, &["-n", ns, "get", "secret", "sec"]);
    assert_eq!(s["type"], "Opaque", "{s}");

    let out = k.ok(&[
        "-n",
        ns,
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp=80:8080",
    ]);
    assert_eq!(out.trim(), "service/web created");
    let svc = json(k, agent, &["-n", ns, "get", "service", "web"]);
    assert_eq!(svc["spec"]["ports"][0]["port"], 80, "{svc}");
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080, "{svc}");
    assert_eq!(svc["spec"]["selector"]["app"], "web", "{svc}");
    // A NodePort service without a port given gets one allocated (protobuf carries Go's
    // zero for the plain int, which means "not set").
    let out = k.ok(&[
        "-n",
        ns,
        "create",
        "service",
        "nodeport",
        "np",
        "--tcp=80:8080",
    ]);
    assert_eq!(out.trim(), "service/np created");
    let np = json(k, agent, &["-n", ns, "get", "service", "np"]);
    let port = np["spec"]["ports"][0]["nodePort"].as_i64().unwrap_or(0);
    assert!((30000..=32767).contains(&port), "{np}");

    let out = k.ok(&[
        "-n",
        ns,
        "create",
        "cronjob",
        "tick",
        "--image",
        IMAGE,
        "--schedule=0 0 1 1 *",
        "--",
        "sh",
        "-c",
        "echo tick",
    ]);
    assert_eq!(out.trim(), "cronjob.batch/tick created");
    let out = k.ok(&[
        "-n",
        ns,
        "create",
        "job",
        "once",
        "--image",
        IMAGE,
        "--",
        "sh",
        "-c",
        "echo once",
    ]);
    assert_eq!(out.trim(), "job.batch/once created");
    let out = k.ok(&["-n", ns, "create", "job", "manual", "--from=cronjob/tick"]);
    assert_eq!(out.trim(), "job.batch/manual created");
    let j = json(k, agent, &["-n", ns, "get", "job", "manual"]);
    assert_eq!(
        j["metadata"]["ownerReferences"][0]["kind"], "CronJob",
        "{j}"
    );
    assert_eq!(j["metadata"]["ownerReferences"][0]["name"], "tick", "{j}");
    k.wait(
        agent,
        &["-n", ns, "get", "jobs", "--no-headers"],
        "both Jobs complete",
        |s| {
            let done: Vec<&str> = s.lines().filter(|l| l.contains(" 1/1 ")).collect();
            done.len() == 2
        },
    );

    // A server-side dry run answers as a create would and stores nothing.
    let out = k.ok(&[
        "-n",
        ns,
        "create",
        "configmap",
        "dry",
        "--from-literal=x=y",
        "--dry-run=server",
    ]);
    assert_eq!(out.trim(), "configmap/dry created (server dry run)");
    let o = k.run(&["-n", ns, "get", "configmap", "dry"]);
    assert!(!o.status.success());
    assert!(
        o.stderr
            .contains(r#"Error from server (NotFound): configmaps "dry" not found"#),
        "{}",
        o.stderr
    );

    // Deleting the owners collects what they made.
    k.ok(&["-n", ns, "delete", "deployment", "web"]);
    k.ok(&["-n", ns, "delete", "cronjob", "tick"]);
    k.ok(&["-n", ns, "delete", "job", "once", "manual"]);
    k.ok(&["-n", ns, "delete", "service", "web", "np"]);
    k.wait(
        agent,
        &["-n", ns, "get", "pods", "--no-headers"],
        "the namespace's pods gone",
        |s| s.trim().is_empty(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates() {
    let Some(bins) = kubectl::bins_or_skip() else {
        return;
    };
    let mut api = ApiNode::start("kcreate", "10.98.0.0/24").await;
    let (node, agent) = (&api.node, &mut api.agent);
    let kubeconfig = agent.root_dir.join("kubeconfig");
    for (bin, version) in bins.iter().zip(VERSIONS) {
        let k = Kubectl::new(node, bin, &kubeconfig, &format!("kcreate-{version}"));
        check_creates(
            &k,
            agent,
            &format!("made-{}", version.replace('.', "-")),
            version,
        );
    }
}
