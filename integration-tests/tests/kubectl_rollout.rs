//! The stock kubectl's rollout faces against rrun-kubelet's Kubernetes API (agent over
//! rrun-cri, in a node of the test's own namespaces): on objects made with `kubectl apply`,
//! `rollout history|undo|restart|pause|resume|status` of a Deployment (ReplicaSets as
//! revisions, the undo a JSON patch), `rollout status|history|undo` of a StatefulSet and a
//! DaemonSet (ControllerRevisions found by their selector, the undo the revision's
//! strategic merge patch), and `scale statefulset` (the scale subresource).

use std::fs;
use std::time::Duration;

use integration_tests::agent::Agent;
use integration_tests::engines::have;
use integration_tests::kubectl::{self, Kubectl};
use integration_tests::kubelet::{start_engine, CgroupRoot, Endpoint, Node, IMAGE};

fn workloads(version: &str) -> String {
    let template = |app: &str| {
        format!(
            r#"  selector:
    matchLabels: {{app: {app}}}
  template:
    metadata:
      labels: {{app: {app}}}
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
    };
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  strategy:\n    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}\n{}---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  replicas: 2\n  serviceName: db\n{}---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n{}",
        template("web"),
        template("db"),
        template("agent")
    )
}

/// The VERSION of each pod of `app`, sorted, space-separated.
fn envs(app: &str) -> Vec<String> {
    vec![
        "get".into(),
        "pods".into(),
        "-l".into(),
        format!("app={app}"),
        "-o".into(),
        "jsonpath={.items[*].spec.containers[0].env[0].value}".into(),
    ]
}

fn history_rows(out: &str) -> Vec<String> {
    out.lines()
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollouts() {
    if !kubectl::bin("1.33").is_file() || !have("nft") {
        eprintln!("skipped: needs {} and nft", kubectl::bin("1.33").display());
        return;
    }
    let tag = "kapi-rollouts";
    let cgroups = CgroupRoot::new(tag);
    let node = Node::start();
    let engine = start_engine(Endpoint::RrunCri, &node).await;
    let mut agent = Agent::start(
        &node,
        &engine.socket(),
        &cgroups,
        tag,
        &["--service-cluster-ip-range=10.98.2.0/24".into()],
    );
    let bin = kubectl::bin("1.33");
    let k = Kubectl::new(&node, &bin, &agent.root_dir.join("kubeconfig"), "rollout")
        .timeout(Duration::from_secs(180));
    let file = node.dir().join("apps.yaml");
    let file_s = file.display().to_string();
    let wait_env = |agent: &mut Agent, app: &str, want: &str| {
        let a = envs(app);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        k.wait(agent, &refs, &format!("{app} at {want}"), |s| s == want);
    };

    fs::write(&file, workloads("v1")).expect("apps.yaml");
    k.ok(&["apply", "-f", &file_s]);
    // The agent reads the files the API wrote a moment later.
    k.wait(
        &mut agent,
        &["get", "deploy,sts,ds", "-o", "name"],
        "the three objects",
        |s| s.lines().count() == 3,
    );
    for t in ["deployment/web", "statefulset/db", "daemonset/agent"] {
        k.ok(&["rollout", "status", t, "--timeout=120s"]);
    }
    fs::write(&file, workloads("v2")).expect("apps.yaml");
    k.ok(&["apply", "-f", &file_s]);
    wait_env(&mut agent, "web", "v2 v2");
    wait_env(&mut agent, "db", "v2 v2");
    wait_env(&mut agent, "agent", "v2");
    for t in ["deployment/web", "statefulset/db", "daemonset/agent"] {
        let o = k.ok(&["rollout", "status", t, "--timeout=120s"]);
        assert!(
            o.contains("successfully rolled out") || o.contains("roll out complete"),
            "{t}: {o}"
        );
        let o = k.ok(&["rollout", "history", t]);
        assert_eq!(history_rows(&o), ["1", "2"], "{t}: {o}");
    }
    let o = k.ok(&["rollout", "history", "deployment/web", "--revision=1"]);
    assert!(o.contains("VERSION:") && o.contains("v1"), "{o}");

    // Undo of each kind: back to v1.
    for (t, who) in [
        ("deployment/web", "deployment.apps/web"),
        ("statefulset/db", "statefulset.apps/db"),
        ("daemonset/agent", "daemonset.apps/agent"),
    ] {
        let o = k.ok(&["rollout", "undo", t]);
        assert_eq!(o.trim(), format!("{who} rolled back"));
    }
    wait_env(&mut agent, "web", "v1 v1");
    wait_env(&mut agent, "db", "v1 v1");
    wait_env(&mut agent, "agent", "v1");
    for t in ["deployment/web", "statefulset/db", "daemonset/agent"] {
        k.ok(&["rollout", "status", t, "--timeout=120s"]);
        let o = k.ok(&["rollout", "history", t]);
        assert_eq!(history_rows(&o), ["2", "3"], "{t}: {o}");
    }

    // Restart: new pods of the same template.
    let before = k.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
    let o = k.ok(&["rollout", "restart", "deployment/web"]);
    assert_eq!(o.trim(), "deployment.apps/web restarted");
    k.wait(
        &mut agent,
        &["get", "pods", "-l", "app=web", "-o", "name"],
        "2 new pods",
        |s| s.lines().count() == 2 && s.lines().all(|l| !before.contains(l)),
    );
    wait_env(&mut agent, "web", "v1 v1");

    // Pause and resume.
    let o = k.ok(&["rollout", "pause", "deployment/web"]);
    assert_eq!(o.trim(), "deployment.apps/web paused");
    let paused = ["get", "deploy", "web", "-o", "jsonpath={.spec.paused}"];
    k.wait(&mut agent, &paused, "paused", |s| s == "true");
    let o = k.ok(&["rollout", "resume", "deployment/web"]);
    assert_eq!(o.trim(), "deployment.apps/web resumed");
    k.wait(&mut agent, &paused, "resumed", str::is_empty);

    // Scale a StatefulSet through its scale subresource.
    let o = k.ok(&["scale", "statefulset/db", "--replicas=3"]);
    assert_eq!(o.trim(), "statefulset.apps/db scaled");
    wait_env(&mut agent, "db", "v1 v1 v1");
    let o = k.ok(&["rollout", "status", "sts/db", "--timeout=120s"]);
    assert!(o.contains("roll out complete: 3 new pods"), "{o}");

    k.ok(&["delete", "-f", &file_s]);
    k.wait(
        &mut agent,
        &["get", "pods", "-o", "name"],
        "no pods",
        str::is_empty,
    );
    drop(agent);
    drop(engine);
}
