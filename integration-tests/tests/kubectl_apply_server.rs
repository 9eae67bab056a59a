//! `kubectl apply --server-side` (1.27 and 1.33, the oldest and newest clients beside the
//! machine's dispatcher) against rrun-kubelet's Kubernetes API on an agent over rrun-cri:
//! server-side apply (`application/apply-patch+yaml`) and managedFields
//! (kubelet/src/api/apply.rs, managed_fields.rs, fieldset.rs).
//!
//! `server_side_apply`: with each client, in its own namespace: a Deployment created by
//! server-side apply (201, `serverside-applied`), its pods running; the file edited and
//! applied again rolls the pods to the new version; `--dry-run=server` changes nothing;
//! `kubectl scale` takes `.spec.replicas`, so applying the file again is refused (409, the
//! API server's conflict message as kubectl prints it) and `--show-managed-fields` shows both
//! managers; `--force-conflicts` takes the field back; a stale `resourceVersion` in the file
//! gets 409. A ConfigMap made by client-side
//! `apply` conflicts with a server-side apply by another manager on the same key, which
//! `--force-conflicts` settles (kubectl then migrates the client-side fields to its manager);
//! a key the applier then drops is removed. A Service's ports (keyed by port and protocol)
//! are added and dropped by applies.

use std::fs;

use integration_tests::agent::Agent;
use integration_tests::kubectl::{self, ApiNode, Kubectl, VERSIONS};
use integration_tests::kubelet::IMAGE;
use integration_tests::Value;

fn deployment(ns: &str, version: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: {ns}
spec:
  replicas: {replicas}
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
"#
    )
}

fn configmap(ns: &str, data: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
  namespace: {ns}
data: {{{data}}}
"#
    )
}

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

/// The managers of an object's managedFields: (manager, operation, subresource).
fn managers(obj: &Value) -> Vec<(String, String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let s = |f: &str| e[f].as_str().unwrap_or("").to_string();
            (s("manager"), s("operation"), s("subresource"))
        })
        .collect()
}

/// `scaler`: the manager `kubectl scale` is recorded as.
fn check(k: &Kubectl, agent: &mut Agent, ns: &str, scaler: &str) {
    let dir = k.node().dir();
    let file = dir.join(format!("{ns}-web.yaml"));
    let f = file.display().to_string();
    k.ok(&["create", "namespace", ns]);

    // Create by apply.
    fs::write(&file, deployment(ns, "v1", 2)).expect("web.yaml");
    let o = k.run(&["apply", "--server-side", "-f", &f, "-v=6"]);
    assert!(o.status.success(), "{}\n{}", o.stderr, agent.log_tail(40));
    assert_eq!(o.stdout.trim(), "deployment.apps/web serverside-applied");
    assert!(
        o.stderr
            .lines()
            .any(|l| l.contains("PATCH") && l.contains("201 Created")),
        "an apply to a missing object creates it:\n{}",
        o.stderr
    );
    let d = json(
        k,
        agent,
        &["-n", ns, "get", "deploy", "web", "--show-managed-fields"],
    );
    assert_eq!(
        managers(&d),
        [("kubectl".to_string(), "Apply".to_string(), String::new())],
        "{d}"
    );
    let fields = &d["metadata"]["managedFields"][0];
    assert_eq!(fields["apiVersion"], "apps/v1", "{d}");
    assert_eq!(fields["fieldsType"], "FieldsV1", "{d}");
    let c = &fields["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
        ["k:{\"name\":\"main\"}"];
    assert!(c["."].is_object() && c["f:image"].is_object(), "{d}");
    assert!(
        c["f:env"]["k:{\"name\":\"VERSION\"}"]["f:value"].is_object(),
        "{d}"
    );
    let envs = [
        "get",
        "pods",
        "-n",
        ns,
        "-l",
        "app=web",
        "-o",
        "jsonpath={.items[*].spec.containers[0].env[0].value}",
    ];
    k.wait(agent, &envs, "2 pods of v1", |s| s == "v1 v1");

    // The edited file: a rolling update.
    fs::write(&file, deployment(ns, "v2", 2)).expect("web.yaml");
    assert_eq!(
        k.ok(&["apply", "--server-side", "-f", &f]).trim(),
        "deployment.apps/web serverside-applied"
    );
    let d = json(k, agent, &["-n", ns, "get", "deploy", "web"]);
    assert_eq!(d["metadata"]["generation"], 2, "{d}");
    k.ok(&[
        "-n",
        ns,
        "rollout",
        "status",
        "deploy/web",
        "--timeout=120s",
    ]);
    k.wait(agent, &envs, "2 pods of v2", |s| s == "v2 v2");

    // A server-side dry run changes nothing.
    fs::write(&file, deployment(ns, "v3", 2)).expect("web.yaml");
    assert_eq!(
        k.ok(&["apply", "--server-side", "--dry-run=server", "-f", &f])
            .trim(),
        "deployment.apps/web serverside-applied (server dry run)"
    );
    let d = json(k, agent, &["-n", ns, "get", "deploy", "web"]);
    assert_eq!(d["metadata"]["generation"], 2, "{d}");
    fs::write(&file, deployment(ns, "v2", 2)).expect("web.yaml");

    // Scaled: the replicas are kubectl scale's; the file's 2 conflicts.
    k.ok(&["-n", ns, "scale", "deploy/web", "--replicas=3"]);
    let d = json(
        k,
        agent,
        &["-n", ns, "get", "deploy", "web", "--show-managed-fields"],
    );
    assert_eq!(d["spec"]["replicas"], 3, "{d}");
    let ms = managers(&d);
    assert!(
        ms.contains(&("kubectl".into(), "Apply".into(), String::new()))
            && ms.contains(&(scaler.into(), "Update".into(), "scale".into())),
        "{ms:?}"
    );
    let o = k.run(&["apply", "--server-side", "-f", &f]);
    assert!(!o.status.success(), "{}", o.stdout);
    let want = format!(
        "error: Apply failed with 1 conflict: conflict with \"{scaler}\" with subresource \"scale\" using apps/v1: .spec.replicas\nPlease review the fields above--they currently have other managers."
    );
    assert!(
        o.stderr.contains(&want) && o.stderr.contains("--force-conflicts"),
        "{}",
        o.stderr
    );
    let yaml = k.ok(&[
        "-n",
        ns,
        "get",
        "deploy",
        "web",
        "-o",
        "yaml",
        "--show-managed-fields",
    ]);
    assert!(
        yaml.contains("operation: Apply") && yaml.contains("subresource: scale"),
        "{yaml}"
    );
    assert!(
        !k.ok(&["-n", ns, "get", "deploy", "web", "-o", "yaml"])
            .contains("managedFields"),
        "kubectl hides managedFields unless asked"
    );
    let out = k.ok(&["apply", "--server-side", "--force-conflicts", "-f", &f]);
    assert_eq!(out.trim(), "deployment.apps/web serverside-applied");
    let d = json(
        k,
        agent,
        &["-n", ns, "get", "deploy", "web", "--show-managed-fields"],
    );
    assert_eq!(d["spec"]["replicas"], 2, "{d}");
    assert_eq!(
        managers(&d),
        [("kubectl".to_string(), "Apply".to_string(), String::new())],
        "the scale's only field taken, its entry goes: {d}"
    );

    // A stale resourceVersion in the configuration is refused, as for any write.
    let stale = deployment(ns, "v2", 2).replacen(
        "  namespace:",
        "  resourceVersion: \"1\"\n  namespace:",
        1,
    );
    fs::write(&file, stale).expect("web.yaml");
    let o = k.run(&["apply", "--server-side", "-f", &f]);
    assert!(
        !o.status.success() && o.stderr.contains("the object has been modified"),
        "{}\n{}",
        o.stdout,
        o.stderr
    );

    // Client-side apply, then another manager's server-side apply of the same key.
    let cm = dir.join(format!("{ns}-cm.yaml"));
    let cm_s = cm.display().to_string();
    fs::write(&cm, configmap(ns, "a: '1', b: '2'")).expect("cm.yaml");
    assert_eq!(
        k.ok(&["apply", "-f", &cm_s]).trim(),
        "configmap/cfg created"
    );
    let c = json(
        k,
        agent,
        &["-n", ns, "get", "cm", "cfg", "--show-managed-fields"],
    );
    assert_eq!(
        managers(&c),
        [(
            "kubectl-client-side-apply".to_string(),
            "Update".to_string(),
            String::new()
        )],
        "{c}"
    );
    fs::write(&cm, configmap(ns, "a: 'x', c: '3'")).expect("cm.yaml");
    let mine = [
        "apply",
        "--server-side",
        "--field-manager=mine",
        "-f",
        &cm_s,
    ];
    let o = k.run(&mine);
    assert!(!o.status.success(), "{}", o.stdout);
    assert!(
        o.stderr.contains(
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using v1: .data.a"
        ),
        "{}",
        o.stderr
    );
    let mut forced = mine.to_vec();
    forced.insert(2, "--force-conflicts");
    assert_eq!(k.ok(&forced).trim(), "configmap/cfg serverside-applied");
    // kubectl then moves what client-side apply owned to its server-side manager (a JSON
    // patch of managedFields, kubectl's csaupgrade) and applies again: "mine" owns exactly
    // its file, so b and the last-applied annotation, no longer in it, go.
    let c = json(
        k,
        agent,
        &["-n", ns, "get", "cm", "cfg", "--show-managed-fields"],
    );
    assert_eq!(c["data"], serde_json::json!({"a": "x", "c": "3"}), "{c}");
    assert_eq!(
        managers(&c),
        [("mine".to_string(), "Apply".to_string(), String::new())],
        "{c}"
    );
    assert!(c["metadata"]["annotations"].is_null(), "{c}");
    // mine drops c: removed, as nobody else owns it.
    fs::write(&cm, configmap(ns, "a: 'x'")).expect("cm.yaml");
    k.ok(&mine);
    let c = json(k, agent, &["-n", ns, "get", "cm", "cfg"]);
    assert_eq!(c["data"], serde_json::json!({"a": "x"}), "{c}");

    // A Service: its ports are keyed by port and protocol; a port dropped from the file goes.
    let svc = dir.join(format!("{ns}-svc.yaml"));
    let svc_s = svc.display().to_string();
    for (ports, want) in [
        ("[{port: 80, targetPort: 8080}]", vec![80]),
        (
            "[{port: 80, targetPort: 8080}, {port: 443, targetPort: 8443}]",
            vec![80, 443],
        ),
        ("[{port: 443, targetPort: 8443}]", vec![443]),
    ] {
        let text = format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: {ns}}}\nspec:\n  selector: {{app: web}}\n  ports: {ports}\n"
        );
        fs::write(&svc, text).expect("svc.yaml");
        let out = k.ok(&["apply", "--server-side", "-f", &svc_s]);
        assert_eq!(out.trim(), "service/web serverside-applied");
        let s = json(
            k,
            agent,
            &["-n", ns, "get", "service", "web", "--show-managed-fields"],
        );
        let got: Vec<i64> = s["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        assert_eq!(got, want, "{s}");
        let f = &s["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:ports"];
        let key = format!("k:{{\"port\":{},\"protocol\":\"TCP\"}}", want[0]);
        assert!(f[&key]["f:targetPort"].is_object(), "{s}");
    }
    k.ok(&["-n", ns, "delete", "service", "web"]);

    k.ok(&["-n", ns, "delete", "deployment", "web"]);
    k.ok(&["-n", ns, "delete", "configmap", "cfg"]);
    k.wait(
        agent,
        &["get", "pods", "-n", ns, "--no-headers"],
        "the pods gone",
        |s| s.trim().is_empty(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_side_apply() {
    let Some(bins) = kubectl::bins_or_skip() else {
        return;
    };
    let mut api = ApiNode::start("kssa", "10.98.11.0/24").await;
    let (node, agent) = (&api.node, &mut api.agent);
    let kubeconfig = agent.root_dir.join("kubeconfig");
    for (bin, version) in bins.iter().zip(VERSIONS) {
        let k = Kubectl::new(node, bin, &kubeconfig, &format!("kssa-{version}"));
        // kubectl scale sends no fieldManager: the API server names it after the
        // User-Agent, whose product is the binary's file name (`kubectl.1.27`).
        let scaler = bin.file_name().and_then(|n| n.to_str()).unwrap_or("");
        check(
            &k,
            agent,
            &format!("ssa-{}", version.replace('.', "-")),
            scaler,
        );
    }
}
