//! The API server's defaulting and finalizers on rrun-kubelet's Kubernetes API, driven by the
//! stock kubectl (1.27 and 1.33) against an agent over rrun-cri
//! (kubelet/src/api/defaults.rs, finalizers.rs).
//!
//! `defaults`: a Deployment, Service and Secret applied without the defaulted fields are
//! served with them (`get -o json`: strategy 25%/25%, revisionHistoryLimit, the pod
//! template's dnsPolicy, probes' periods...), `describe pod` prints the kubelet's probe line
//! (`timeout=1s period=10s #success=1 #failure=3`), the same file applied again by either
//! client is `unchanged`, and writing the served (defaulted) Deployment back (`replace`)
//! neither bumps its generation nor rolls its pods.
//!
//! `finalizers`: a ConfigMap with a finalizer survives `delete` with a `deletionTimestamp`,
//! refuses a new finalizer (the API server's message) and goes when a merge patch removes
//! its finalizers; a Deployment deleted with `--cascade=foreground` stays, Terminating with
//! `foregroundDeletion`, while its pod is held by a preStop hook, and goes only after it.

use integration_tests::agent::Agent;
use integration_tests::kubectl::{self, ApiNode, Kubectl, VERSIONS};
use integration_tests::kubelet::IMAGE;
use integration_tests::Value;

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

fn app_file() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: main
        image: {IMAGE}
        imagePullPolicy: Never
        command: [sh, -c, 'trap "exit 0" TERM; while :; do sleep 0.2; done']
        ports: [{{containerPort: 8080}}]
        livenessProbe:
          exec:
            command: ["true"]
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
---
apiVersion: v1
kind: Secret
metadata:
  name: web
data: {{token: eA==}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults() {
    let Some(bins) = kubectl::bins_or_skip() else {
        return;
    };
    let mut api = ApiNode::start("kmeta-def", "10.98.5.0/24").await;
    let (node, agent) = (&api.node, &mut api.agent);
    let kubeconfig = agent.root_dir.join("kubeconfig");
    let clients: Vec<Kubectl> = bins
        .iter()
        .zip(VERSIONS)
        .map(|(b, v)| Kubectl::new(node, b, &kubeconfig, &format!("kmeta-{v}")))
        .collect();
    let k = &clients[1];
    let file = node.dir().join("app.yaml");
    let file_s = file.display().to_string();
    std::fs::write(&file, app_file()).expect("app.yaml");
    let out = k.ok(&["apply", "-f", &file_s]);
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            "deployment.apps/web created",
            "service/web created",
            "secret/web created"
        ]
    );

    let d = json(k, agent, &["get", "deploy", "web"]);
    let s = &d["spec"];
    assert_eq!(s["replicas"], 1, "{d}");
    assert_eq!(s["revisionHistoryLimit"], 10, "{d}");
    assert_eq!(s["progressDeadlineSeconds"], 600, "{d}");
    assert_eq!(
        s["strategy"],
        serde_json::json!({"type": "RollingUpdate",
                           "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
        "{d}"
    );
    let ps = &s["template"]["spec"];
    for (field, want) in [
        ("restartPolicy", serde_json::json!("Always")),
        ("dnsPolicy", "ClusterFirst".into()),
        ("schedulerName", "default-scheduler".into()),
        ("securityContext", serde_json::json!({})),
        ("terminationGracePeriodSeconds", 30.into()),
    ] {
        assert_eq!(ps[field], want, "{field}: {d}");
    }
    let c = &ps["containers"][0];
    assert_eq!(c["imagePullPolicy"], "Never", "a set value is kept: {d}");
    assert_eq!(c["terminationMessagePath"], "/dev/termination-log", "{d}");
    assert_eq!(c["terminationMessagePolicy"], "File", "{d}");
    assert_eq!(c["ports"][0]["protocol"], "TCP", "{d}");
    assert_eq!(
        c["livenessProbe"],
        serde_json::json!({"exec": {"command": ["true"]}, "timeoutSeconds": 1, "periodSeconds": 10,
                           "successThreshold": 1, "failureThreshold": 3}),
        "{d}"
    );
    // The YAML a cluster prints.
    let yaml = k.ok(&["get", "deploy", "web", "-o", "yaml"]);
    for line in [
        "  progressDeadlineSeconds: 600",
        "    type: RollingUpdate",
        "      schedulerName: default-scheduler",
    ] {
        assert!(yaml.lines().any(|l| l == line), "{line:?} in:\n{yaml}");
    }

    let svc = json(k, agent, &["get", "service", "web"]);
    assert_eq!(svc["spec"]["type"], "ClusterIP", "{svc}");
    assert_eq!(svc["spec"]["sessionAffinity"], "None", "{svc}");
    assert_eq!(
        svc["spec"]["ipFamilies"],
        serde_json::json!(["IPv4"]),
        "{svc}"
    );
    assert_eq!(svc["spec"]["ipFamilyPolicy"], "SingleStack", "{svc}");
    assert_eq!(svc["spec"]["internalTrafficPolicy"], "Cluster", "{svc}");
    assert_eq!(
        svc["spec"]["ports"][0],
        serde_json::json!({"port": 80, "protocol": "TCP", "targetPort": 80}),
        "{svc}"
    );
    let sec = json(k, agent, &["get", "secret", "web"]);
    assert_eq!(sec["type"], "Opaque", "{sec}");

    // The pod the kubelet runs, described as on a cluster.
    k.wait(
        agent,
        &["get", "pods", "-l", "app=web", "--no-headers"],
        "the pod running",
        |s| s.lines().count() == 1 && s.contains(" 1/1 ") && s.contains("Running"),
    );
    let pods_before = k.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
    let described = k.ok(&["describe", "pod", "-l", "app=web"]);
    let probe = described
        .lines()
        .find(|l| l.trim_start().starts_with("Liveness:"))
        .unwrap_or_else(|| panic!("no Liveness line:\n{described}"));
    assert!(
        probe.ends_with("exec [true] delay=0s timeout=1s period=10s #success=1 #failure=3"),
        "{probe:?}"
    );

    // Applying the unchanged file again is no change, from either client: the defaults in
    // the live object are not in the three-way merge's patch.
    for c in &clients {
        let out = c.ok(&["apply", "-f", &file_s]);
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            [
                "deployment.apps/web unchanged",
                "service/web unchanged",
                "secret/web unchanged"
            ]
        );
    }

    // The served object written back: same spec, same generation, same ReplicaSet.
    let o = k.sh("{k} get deploy web -o json | {k} replace -f - && {k} annotate deploy web note=x");
    assert!(o.status.success(), "{}", o.stderr);
    let d = json(k, agent, &["get", "deploy", "web"]);
    assert_eq!(d["metadata"]["generation"], 1, "{d}");
    let rs = k.ok(&["get", "rs", "-l", "app=web", "-o", "name"]);
    assert_eq!(rs.lines().count(), 1, "{rs}");
    assert_eq!(
        k.ok(&["get", "pods", "-l", "app=web", "-o", "name"]),
        pods_before
    );

    k.ok(&["delete", "-f", &file_s]);
    k.wait(
        agent,
        &["get", "pods", "-o", "name"],
        "the pods gone",
        str::is_empty,
    );
}

fn held_file() -> &'static str {
    r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: held
  finalizers: [example.com/hold]
data: {a: b}
"#
}

fn slow_file() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: slow
spec:
  selector:
    matchLabels: {{app: slow}}
  template:
    metadata:
      labels: {{app: slow}}
    spec:
      terminationGracePeriodSeconds: 600
      containers:
      - name: main
        image: {IMAGE}
        imagePullPolicy: Never
        command: [sh, -c, 'trap "exit 0" TERM; while :; do sleep 0.2; done']
        lifecycle:
          preStop:
            exec:
              command: [sh, -c, 'while [ ! -e /tmp/go ]; do sleep 0.2; done']
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers() {
    let Some(bins) = kubectl::bins_or_skip() else {
        return;
    };
    let mut api = ApiNode::start("kmeta-fin", "10.98.6.0/24").await;
    let (node, agent) = (&api.node, &mut api.agent);
    let kubeconfig = agent.root_dir.join("kubeconfig");
    let k = Kubectl::new(node, &bins[1], &kubeconfig, "kmeta-fin");

    // A finalizer holds a deleted ConfigMap.
    let held = node.dir().join("held.yaml");
    std::fs::write(&held, held_file()).expect("held.yaml");
    k.ok(&["apply", "-f", &held.display().to_string()]);
    let out = k.ok(&["delete", "configmap", "held", "--wait=false"]);
    assert_eq!(out.trim(), r#"configmap "held" deleted"#);
    let cm = json(&k, agent, &["get", "configmap", "held"]);
    assert!(cm["metadata"]["deletionTimestamp"].is_string(), "{cm}");
    assert_eq!(cm["metadata"]["deletionGracePeriodSeconds"], 0, "{cm}");
    assert_eq!(
        cm["metadata"]["finalizers"],
        serde_json::json!(["example.com/hold"]),
        "{cm}"
    );
    assert_eq!(cm["data"]["a"], "b", "{cm}");
    let o = k.run(&[
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["example.com/hold","example.com/more"]}}"#,
    ]);
    assert!(!o.status.success());
    assert!(
        o.stderr.contains(
            r#"ConfigMap "held" is invalid: metadata.finalizers: Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{"example.com/more"}"#
        ),
        "{}",
        o.stderr
    );
    k.ok(&[
        "patch",
        "configmap",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    let o = k.run(&["get", "configmap", "held"]);
    assert!(
        o.stderr
            .contains(r#"Error from server (NotFound): configmaps "held" not found"#),
        "{}\n{}",
        o.stdout,
        o.stderr
    );

    // Foreground deletion: the Deployment waits for its pod.
    let slow = node.dir().join("slow.yaml");
    std::fs::write(&slow, slow_file()).expect("slow.yaml");
    k.ok(&["apply", "-f", &slow.display().to_string()]);
    k.wait(
        agent,
        &["get", "pods", "-l", "app=slow", "--no-headers"],
        "the pod running",
        |s| s.lines().count() == 1 && s.contains(" 1/1 ") && s.contains("Running"),
    );
    let pod = k.ok(&["get", "pods", "-l", "app=slow", "-o", "name"]);
    let pod = pod.trim().to_string();
    // Orphaning is refused here (the ReplicaSet cannot outlive its Deployment on this
    // agent), and the refusal leaves the Deployment and its pod as they were.
    let o = k.run(&["delete", "deployment", "slow", "--cascade=orphan"]);
    assert!(
        !o.status.success() && o.stderr.contains("Unsupported value: \"Orphan\""),
        "{}\n{}",
        o.stdout,
        o.stderr
    );
    assert_eq!(
        k.ok(&["get", "deployments", "-o", "name"]).trim(),
        "deployment.apps/slow"
    );
    assert_eq!(
        k.ok(&["get", "pods", "-l", "app=slow", "-o", "name"])
            .trim(),
        pod
    );
    k.ok(&[
        "delete",
        "deployment",
        "slow",
        "--cascade=foreground",
        "--wait=false",
    ]);
    // The pod's preStop hook holds it until /tmp/go exists (then SIGTERM ends it): the
    // owner is still there.
    k.wait(
        agent,
        &["get", "pods", "-l", "app=slow", "--no-headers"],
        "the pod terminating",
        |s| s.contains("Terminating"),
    );
    let d = json(&k, agent, &["get", "deployment", "slow"]);
    assert!(d["metadata"]["deletionTimestamp"].is_string(), "{d}");
    assert_eq!(
        d["metadata"]["finalizers"],
        serde_json::json!(["foregroundDeletion"]),
        "{d}"
    );
    k.ok(&["exec", &pod, "--", "touch", "/tmp/go"]);
    k.wait(
        agent,
        &["get", "deployments", "-o", "name"],
        "the Deployment gone",
        str::is_empty,
    );
    // Its dependents went first.
    assert_eq!(k.ok(&["get", "pods", "-o", "name"]), "");
    assert_eq!(k.ok(&["get", "rs", "-o", "name"]), "");
}
