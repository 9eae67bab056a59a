//! Watches are pushed by the agent's change signal (kubelet/src/changes.rs), not polled: a
//! `kubectl get -w` sees every kind of change the agent serves (an API apply, a manifest
//! file written by hand, a pod's status moving as its container runs and exits) within a
//! few seconds, and an idle watch gets nothing (no MODIFIED for an object that did not
//! change). A raw watch with `timeoutSeconds` ends on time, and a watch's task on the
//! server ends when its client goes.

use std::fs;
use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::agent::Agent;
use integration_tests::kubectl::{self, ApiNode, Kubectl};
use integration_tests::kubelet::IMAGE;
use integration_tests::{scaled, Value};

/// A running `kubectl get KIND -w --output-watch-events -o json`, its output in a file.
struct Watch {
    child: Child,
    out: std::path::PathBuf,
}

impl Watch {
    fn start(k: &Kubectl, agent: &Agent, kind: &str) -> Watch {
        let out = agent
            .root_dir
            .parent()
            .expect("agent dir")
            .join(format!("watch-{kind}.out"));
        let file = fs::File::create(&out).expect("watch output");
        let err = fs::File::create(out.with_extension("err")).expect("watch stderr");
        let child = k
            .command()
            .args([
                "get",
                kind,
                "-A",
                "-w",
                "--output-watch-events",
                "-o",
                "json",
            ])
            .stdout(file)
            .stderr(err)
            .spawn()
            .expect("kubectl get -w");
        Watch { child, out }
    }

    /// The events so far (a trailing event still being written is left for later).
    fn events(&self) -> Vec<Value> {
        let text = fs::read_to_string(&self.out).unwrap_or_default();
        serde_json::Deserializer::from_str(&text)
            .into_iter::<Value>()
            .map_while(Result::ok)
            .collect()
    }

    /// Waits (up to `within`) for an event `what` describes; panics with the events seen.
    fn expect(
        &self,
        agent: &Agent,
        within: Duration,
        what: &str,
        ok: impl Fn(&str, &Value) -> bool,
    ) {
        let deadline = Instant::now() + scaled(within);
        loop {
            let evs = self.events();
            if evs
                .iter()
                .any(|e| ok(e["type"].as_str().unwrap_or(""), &e["object"]))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the watch never showed {what} in {within:?}; it showed:\n{}\n({} bytes)\nkubectl: {}\n{}",
                summary(&evs),
                fs::read_to_string(&self.out).unwrap_or_default().len(),
                fs::read_to_string(self.out.with_extension("err")).unwrap_or_default(),
                agent.log_tail(30)
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// For each event from `from` on: the object as this event and as the one before it for the
/// same object sent it, so that an unexpected event shows what changed.
fn changed(evs: &[Value], from: usize) -> String {
    let key = |e: &Value| {
        let m = &e["object"]["metadata"];
        (m["namespace"].clone(), m["name"].clone())
    };
    let mut out = String::new();
    for (i, e) in evs.iter().enumerate().skip(from) {
        let before = evs[..i].iter().rev().find(|b| key(b) == key(e));
        out += &format!(
            "--- before: {}\n+++ event {i}: {}\n",
            before.map_or("(none)".to_string(), |b| b["object"].to_string()),
            e["object"]
        );
    }
    out
}

/// One line per event: type, namespace/name, phase and resourceVersion.
fn summary(evs: &[Value]) -> String {
    evs.iter()
        .map(|e| {
            let m = &e["object"]["metadata"];
            format!(
                "{} {}/{} {} rv={}",
                e["type"].as_str().unwrap_or("?"),
                m["namespace"].as_str().unwrap_or(""),
                m["name"].as_str().unwrap_or(""),
                e["object"]["status"]["phase"].as_str().unwrap_or(""),
                m["resourceVersion"].as_str().unwrap_or("")
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn named(o: &Value, name: &str) -> bool {
    o["metadata"]["name"].as_str() == Some(name)
}

fn ready(o: &Value) -> bool {
    condition(o, "Ready") == Some("True")
}

/// The status of the pod condition `kind`, if the pod has it.
fn condition<'a>(o: &'a Value, kind: &str) -> Option<&'a str> {
    o["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?["status"]
        .as_str()
}

/// How long a change may take to reach a watch: the agent pushes it at once (a manifest
/// edit waits for the directory watcher's 100 ms debounce); a polled or missed wake-up
/// would still show within the 20 s rescan, so this bound is well under that.
const PUSHED: Duration = Duration::from_secs(5);

const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: api-web
spec:
  replicas: 1
  selector:
    matchLabels: {app: api-web}
  template:
    metadata:
      labels: {app: api-web}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: IMAGE
        imagePullPolicy: Never
        command: [sh, -c, 'exec sleep 1000000']
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: api-cm
data: {a: "1"}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed() {
    let Some(bins) = kubectl::bins_or_skip() else {
        return;
    };
    let mut api = ApiNode::start("kwatch-push", "10.98.21.0/24").await;
    let (node, agent) = (&api.node, &mut api.agent);
    let kubeconfig = agent.root_dir.join("kubeconfig");
    let k = Kubectl::new(node, &bins[1], &kubeconfig, "push");
    agent.write_manifest(
        "seed.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: seed}\ndata: {a: \"1\"}\n",
    );
    k.wait(
        agent,
        &["get", "cm", "-o", "name"],
        "the seed ConfigMap",
        |s| s.contains("configmap/seed"),
    );
    let pods = Watch::start(&k, agent, "pods");
    let cms = Watch::start(&k, agent, "configmaps");
    // The watches are open once they sent their initial list (one ConfigMap).
    cms.expect(agent, Duration::from_secs(30), "seed", |t, o| {
        t == "ADDED" && named(o, "seed")
    });

    // (a) An API apply: the ConfigMap and the Deployment's pod.
    let file = node.dir().join("api.yaml");
    fs::write(&file, DEPLOYMENT.replace("IMAGE", IMAGE)).expect("api.yaml");
    k.ok(&["apply", "-f", &file.display().to_string()]);
    cms.expect(agent, PUSHED, "api-cm ADDED (apply)", |t, o| {
        t == "ADDED" && named(o, "api-cm")
    });
    pods.expect(
        agent,
        PUSHED,
        "the Deployment's pod ADDED (apply)",
        |t, o| t == "ADDED" && o["metadata"]["labels"]["app"] == "api-web",
    );

    // (b) Manifest files written into the directory by hand, not through the API.
    agent.write_manifest(
        "file-cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: file-cm}\ndata: {b: \"2\"}\n",
    );
    cms.expect(agent, PUSHED, "file-cm ADDED (manifest file)", |t, o| {
        t == "ADDED" && named(o, "file-cm")
    });
    agent.write_manifest(
        "file-cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: file-cm}\ndata: {b: \"3\"}\n",
    );
    cms.expect(agent, PUSHED, "file-cm MODIFIED (manifest edit)", |t, o| {
        t == "MODIFIED" && named(o, "file-cm") && o["data"]["b"] == "3"
    });
    agent.write_manifest(
        "once.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: once}}\nspec:\n  restartPolicy: Never\n  containers:\n  - {{name: main, image: {IMAGE}, imagePullPolicy: Never, command: [sh, -c, 'sleep 2; exit 0']}}\n"
        ),
    );
    pods.expect(agent, PUSHED, "once ADDED (manifest file)", |t, o| {
        t == "ADDED" && named(o, "once")
    });

    // (c) Status changes the agent makes as the containers run: Ready, then exited.
    pods.expect(
        agent,
        Duration::from_secs(30),
        "the Deployment's pod Ready",
        |t, o| t == "MODIFIED" && o["metadata"]["labels"]["app"] == "api-web" && ready(o),
    );
    pods.expect(agent, Duration::from_secs(30), "once Running", |t, o| {
        t == "MODIFIED" && named(o, "once") && o["status"]["phase"] == "Running"
    });
    pods.expect(agent, Duration::from_secs(30), "once Succeeded", |t, o| {
        t == "MODIFIED" && named(o, "once") && o["status"]["phase"] == "Succeeded"
    });
    // The last change of a finished pod: the agent stops its sandbox after it has recorded
    // the exit, as the kubelet does, and PodReadyToStartContainers turns False, in the same
    // event as Succeeded or (on a busy machine) in a later one.
    pods.expect(
        agent,
        Duration::from_secs(30),
        "once's sandbox stopped",
        |t, o| {
            t == "MODIFIED"
                && named(o, "once")
                && o["status"]["phase"] == "Succeeded"
                && condition(o, "PodReadyToStartContainers") == Some("False")
        },
    );

    // Idle: nothing changes, so nothing is sent (a wake-up for nothing lists, finds no
    // difference and stays quiet).
    let (p0, c0) = (pods.events().len(), cms.events().len());
    thread::sleep(Duration::from_secs(3));
    let (p1, c1) = (pods.events(), cms.events());
    assert_eq!(
        (p1.len(), c1.len()),
        (p0, c0),
        "events while idle:\n{}\n{}\n{}{}",
        summary(&p1[p0.min(p1.len())..]),
        summary(&c1[c0.min(c1.len())..]),
        changed(&p1, p0),
        changed(&c1, c0)
    );

    // A raw watch with timeoutSeconds ends on time, after its initial list.
    let t = Instant::now();
    let (code, body) = agent
        .get("/api/v1/namespaces/default/pods?watch=1&timeoutSeconds=2")
        .expect("watch answered");
    let took = t.elapsed();
    assert_eq!(code, 200, "{body}");
    assert!(body.lines().any(|l| l.contains("\"once\"")), "{body}");
    assert!(
        took >= Duration::from_secs(2) && took < scaled(Duration::from_secs(10)),
        "a 2 s watch took {took:?}"
    );

    // Deletions are pushed as well.
    agent.remove_manifest("once.yaml");
    agent.remove_manifest("file-cm.yaml");
    pods.expect(agent, Duration::from_secs(30), "once DELETED", |t, o| {
        t == "DELETED" && named(o, "once")
    });
    cms.expect(agent, PUSHED, "file-cm DELETED", |t, o| {
        t == "DELETED" && named(o, "file-cm")
    });
    // A watch lives as long as its client: the server's task for each ends when kubectl
    // goes (apiserver_longrunning_requests counts them).
    assert_eq!(watches(agent, "pods"), 1, "{}", metrics(agent));
    assert_eq!(watches(agent, "configmaps"), 1, "{}", metrics(agent));
    drop((pods, cms));
    let deadline = Instant::now() + scaled(Duration::from_secs(10));
    while watches(agent, "pods") + watches(agent, "configmaps") > 0 {
        assert!(
            Instant::now() < deadline,
            "the watches' tasks outlived their clients:\n{}",
            metrics(agent)
        );
        thread::sleep(Duration::from_millis(100));
    }
    k.ok(&["delete", "-f", &file.display().to_string()]);
    k.wait(agent, &["get", "pods", "-o", "name"], "no pods", |s| {
        s.is_empty()
    });
}

fn metrics(agent: &Agent) -> String {
    agent.get("/metrics").map(|(_, b)| b).unwrap_or_default()
}

/// The open watches of core/v1 `resource`, as `/metrics` counts them.
fn watches(agent: &Agent, resource: &str) -> i64 {
    let label = format!("resource=\"{resource}\"");
    metrics(agent)
        .lines()
        .filter(|l| l.starts_with("apiserver_longrunning_requests{") && l.contains(&label))
        .filter(|l| l.contains("verb=\"WATCH\"") && l.contains("group=\"\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}
