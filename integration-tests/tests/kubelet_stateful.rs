//! rrun-kubelet's StatefulSets, DaemonSets and PersistentVolumeClaims (local-path
//! provisioner) end to end through rrun-cri and, as the control, through containerd's CRI
//! with runc (`stateful_containerd`: the same steps), on a node of the test's own namespaces.
//!
//! `stateful_rrun_cri`: a StatefulSet of 3 with a claim template: pods start in order (no
//! pod N while N-1 is not Ready, in any listing), each pod's claim is a directory of the
//! data root that keeps what the pod wrote when the pod is deleted, when the set is scaled
//! to 1 and back to 3 (the same data per ordinal) and across a kill -9 of the agent; a
//! rolling update replaces 2, 1, 0 in that order. DaemonSets on a node labelled
//! `disk=ssd` and tainted `dedicated=infra:NoSchedule`: the one that selects ssd and
//! tolerates the taint runs one pod, the one that selects hdd and the one that does not
//! tolerate run none. A ReadWriteOncePod claim is refused to a second pod. Everything
//! removed: no pods, no sandboxes, and the directories of the claims under `Delete` gone.
//! `describe statefulset|daemonset|pvc` through the agent's CLI print what the stock
//! kubectl's describers print through the agent's API (the same text up to the events).

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::agent::{condition, Agent};
use integration_tests::cri::{api, Client};
use integration_tests::engines::have;
use integration_tests::kubectl::{self, Kubectl};
use integration_tests::kubelet::{start_engine, CgroupRoot, Endpoint, Engine, Node, IMAGE};
use integration_tests::{scaled, Value};

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn name(v: &Value) -> String {
    v["metadata"]["name"].as_str().unwrap_or("").to_string()
}

fn owned_by(p: &Value, kind: &str, owner: &str) -> bool {
    p["metadata"]["ownerReferences"][0]["kind"] == kind
        && p["metadata"]["ownerReferences"][0]["name"] == owner
}

fn sts_pods(list: &Value) -> Vec<Value> {
    let mut v: Vec<Value> = items(list)
        .into_iter()
        .filter(|p| owned_by(p, "StatefulSet", "db"))
        .collect();
    v.sort_by_key(name);
    v
}

fn statefulset(replicas: usize, version: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  replicas: {replicas}
  serviceName: db
  selector:
    matchLabels: {{app: db}}
  persistentVolumeClaimRetentionPolicy: {{whenDeleted: Delete, whenScaled: Retain}}
  template:
    metadata:
      labels: {{app: db}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: db
        image: {IMAGE}
        imagePullPolicy: Never
        env: [{{name: VERSION, value: {version}}}]
        command: [sh, -c, 'test -f /data/id || echo "$(hostname) $(cat /proc/sys/kernel/random/uuid)" > /data/id; echo "$VERSION $(hostname)" >> /data/boots; trap "exit 0" TERM; while :; do sleep 1; done']
        # Every field spelled out (the API fills in the API server's defaults, e.g.
        # timeoutSeconds 1, but the probe runs each second here).
        readinessProbe:
          exec: {{command: [cat, /data/id]}}
          periodSeconds: 1
          timeoutSeconds: 1
          successThreshold: 1
          failureThreshold: 3
        volumeMounts: [{{name: data, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: data}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 16Mi}}}}
"#
    )
}

fn daemonsets() -> String {
    let one = |n: &str, extra: &str| {
        format!(
            r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: {n}
spec:
  selector:
    matchLabels: {{app: {n}}}
  template:
    metadata:
      labels: {{app: {n}}}
    spec:
      terminationGracePeriodSeconds: 5
{extra}      containers:
      - name: agent
        image: {IMAGE}
        imagePullPolicy: Never
        command: [sh, -c, 'trap "exit 0" TERM; while :; do sleep 1; done']
"#
        )
    };
    let tol = "      tolerations: [{key: dedicated, operator: Equal, value: infra, effect: NoSchedule}]\n";
    [
        one("ssd", &format!("      nodeSelector: {{disk: ssd}}\n{tol}")),
        one("hdd", &format!("      nodeSelector: {{disk: hdd}}\n{tol}")),
        one("plain", "      nodeSelector: {disk: ssd}\n"),
    ]
    .join("---\n")
}

fn rwop_pod(pod: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {pod}
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: c
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, 'echo {pod} >> /solo/users; trap "exit 0" TERM; while :; do sleep 1; done']
    volumeMounts: [{{name: solo, mountPath: /solo}}]
  volumes:
  - name: solo
    persistentVolumeClaim: {{claimName: solo}}
"#
    )
}

const SOLO_CLAIM: &str = r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: solo
spec:
  accessModes: [ReadWriteOncePod]
  resources: {requests: {storage: 8Mi}}
"#;

fn ready(p: &Value) -> bool {
    p["status"]["phase"] == "Running" && condition(p, "Ready")
}

/// The claim directories of the data root.
fn claim_dirs(storage: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(storage)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn dir_of(storage: &Path, claim: &str) -> PathBuf {
    claim_dirs(storage)
        .into_iter()
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(&format!("_default_{claim}")))
        })
        .unwrap_or_else(|| panic!("no directory for claim {claim} in {}", storage.display()))
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The messages of the set's events (in order), after the first `skip`.
fn sts_events(agent: &Agent, reason: &str) -> Vec<String> {
    let ev = agent
        .get_json("/api/v1/namespaces/default/events?fieldSelector=involvedObject.name=db")
        .expect("events");
    items(&ev)
        .iter()
        .filter(|e| e["reason"] == reason && e["involvedObject"]["kind"] == "StatefulSet")
        .map(|e| e["message"].as_str().unwrap_or("").to_string())
        .collect()
}

/// No pod db-N listed while db-(N-1) is not Ready (the OrderedReady rule).
fn ordered(list: &Value) {
    let pods = sts_pods(list);
    for p in &pods {
        let n = name(p);
        let ord: usize = n.trim_start_matches("db-").parse().unwrap_or(0);
        if ord == 0 {
            continue;
        }
        let prev = format!("db-{}", ord - 1);
        let before = pods.iter().find(|q| name(q) == prev);
        assert!(
            before.is_some_and(ready),
            "{n} exists while {prev} is not Ready: {list}"
        );
    }
}

/// The CRI's pod sandboxes, asked as the agent asks (either endpoint).
async fn sandboxes(engine: &Engine) -> usize {
    let mut c = Client::connect(&engine.socket())
        .await
        .expect("connect to the CRI");
    c.runtime
        .list_pod_sandbox(api::ListPodSandboxRequest::default())
        .await
        .expect("ListPodSandbox")
        .into_inner()
        .items
        .len()
}

/// The text before the Events section (whose ages move between two runs).
fn before_events(text: &str) -> &str {
    text.split("\nEvents:").next().unwrap_or(text)
}

/// `describe KIND NAME` through the agent's CLI and, where the machine has it, through the
/// stock kubectl against the agent's API: the same text up to the events, which hold
/// `reasons`. The CLI's output.
fn describe(agent: &Agent, k: Option<&Kubectl>, kind: &str, obj: &str, reasons: &[&str]) -> String {
    let out = agent.cli(&["describe", kind, obj]);
    assert!(out.status.success(), "describe {kind} {obj}: {out}");
    for r in reasons {
        assert!(
            out.stdout.contains(r),
            "no {r} in describe {kind} {obj}:\n{out}"
        );
    }
    if let Some(k) = k {
        let theirs = k.ok(&["describe", kind, obj]);
        assert_eq!(
            before_events(&out.stdout),
            before_events(&theirs),
            "describe {kind} {obj}: the CLI (left) and kubectl (right) differ"
        );
        for r in reasons {
            assert!(
                theirs.contains(r),
                "no {r} in kubectl describe {kind} {obj}:\n{theirs}"
            );
        }
    }
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_rrun_cri() {
    stateful(Endpoint::RrunCri).await;
}

/// The control: the same through containerd's CRI (runc), where nothing is rrun's but the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stateful_containerd() {
    if !(have("containerd") && have("ctr")) {
        return;
    }
    stateful(Endpoint::Containerd).await;
}

async fn stateful(ep: Endpoint) {
    let tag = match ep {
        Endpoint::RrunCri => "stateful",
        Endpoint::Containerd => "stateful-cd",
    };
    let cgroups = CgroupRoot::new(tag);
    let node = Node::start();
    let engine = start_engine(ep, &node).await;
    let mut agent = Agent::start(
        &node,
        &engine.socket(),
        &cgroups,
        tag,
        &[
            "--node-labels=disk=ssd,zone=a".into(),
            "--register-with-taints=dedicated=infra:NoSchedule".into(),
        ],
    );
    let storage = agent.root_dir.join("storage");
    let pods_path = "/api/v1/namespaces/default/pods";
    let sts_path = "/apis/apps/v1/namespaces/default/statefulsets/db";

    // Ordered start.
    agent.write_manifest("db.yaml", &statefulset(3, "v1"));
    let t0 = Instant::now();
    agent.wait_for_each(
        pods_path,
        Duration::from_secs(180),
        "3 ready pods in order",
        ordered,
        |l| {
            let p = sts_pods(l);
            p.len() == 3 && p.iter().all(ready)
        },
    );
    eprintln!("db-0..2 Running and Ready in {:?}", t0.elapsed());
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or("VmRSS: ?");
    eprintln!("the agent with a StatefulSet of 3: {rss}");
    let created = sts_events(&agent, "SuccessfulCreate");
    let pods_created: Vec<&String> = created
        .iter()
        .filter(|m| m.starts_with("create Pod"))
        .collect();
    assert_eq!(
        pods_created,
        [
            "create Pod db-0 in StatefulSet db successful",
            "create Pod db-1 in StatefulSet db successful",
            "create Pod db-2 in StatefulSet db successful"
        ],
        "{created:?}"
    );
    let st = agent.wait_for_each(
        sts_path,
        Duration::from_secs(10),
        "status 3 ready",
        |_| {},
        |s| s["status"]["readyReplicas"] == 3,
    );
    assert_eq!(
        st["status"]["currentRevision"],
        st["status"]["updateRevision"]
    );
    let pod0 = agent.pod("db-0").expect("db-0");
    assert_eq!(pod0["spec"]["hostname"], "db-0");
    assert_eq!(pod0["spec"]["subdomain"], "db");

    // Claims: one per ordinal, bound to a directory of the data root.
    let pvcs = agent
        .get_json("/api/v1/namespaces/default/persistentvolumeclaims")
        .expect("pvcs");
    let mut names: Vec<String> = items(&pvcs).iter().map(name).collect();
    names.sort();
    assert_eq!(names, ["data-db-0", "data-db-1", "data-db-2"]);
    for c in items(&pvcs) {
        assert_eq!(c["status"]["phase"], "Bound", "{c}");
        assert_eq!(c["spec"]["storageClassName"], "local-path", "{c}");
        assert_eq!(c["status"]["capacity"]["storage"], "16Mi", "{c}");
        let q = c["metadata"]["annotations"]["rrun.io/storage-quota"]
            .as_str()
            .unwrap_or("");
        assert!(q == "enforced" || q.starts_with("not enforced: "), "{c}");
        eprintln!("{}: quota {q}", name(&c));
    }
    let out = agent.cli(&["get", "pvc"]);
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout.starts_with("NAME        STATUS   VOLUME"),
        "{out}"
    );
    assert!(
        out.stdout.contains("Bound") && out.stdout.contains("16Mi       RWO            local-path"),
        "{out}"
    );
    let out = agent.cli(&["get", "statefulsets"]);
    assert!(out.stdout.contains("db     3/3"), "{out}");
    let bin = kubectl::bin("1.33");
    let k = bin
        .is_file()
        .then(|| Kubectl::new(&node, &bin, &agent.root_dir.join("kubeconfig"), tag));
    let d = describe(
        &agent,
        k.as_ref(),
        "statefulset",
        "db",
        &["SuccessfulCreate"],
    );
    for want in [
        "Selector:           app=db\n",
        "Replicas:           3 desired | 3 total\n",
        "Update Strategy:    RollingUpdate\n",
        "Pods Status:        3 Running / 0 Waiting / 0 Succeeded / 0 Failed\n",
        "      /data from data (rw)\n",
        "Volume Claims:\n  Name:          data\n",
        "  Capacity:      16Mi\n  Access Modes:  [ReadWriteOnce]\n",
        "create Claim data-db-0 Pod db-0 in StatefulSet db success",
    ] {
        assert!(d.contains(want), "no {want:?} in:\n{d}");
    }
    let d = describe(&agent, k.as_ref(), "pvc", "data-db-1", &[]);
    for want in [
        "StorageClass:  local-path\nStatus:        Bound\n",
        "Capacity:      16Mi\nAccess Modes:  RWO\n",
        "Used By:       db-1\n",
    ] {
        assert!(d.contains(want), "no {want:?} in:\n{d}");
    }
    let ids: Vec<String> = (0..3)
        .map(|i| read(&dir_of(&storage, &format!("data-db-{i}")).join("id")))
        .collect();
    for (i, id) in ids.iter().enumerate() {
        assert!(id.starts_with(&format!("db-{i} ")), "{id}");
    }

    // A deleted pod comes back under its name, with its data.
    let old_uid = agent.pod("db-1").expect("db-1")["metadata"]["uid"].clone();
    let (code, body) = agent
        .delete("/api/v1/namespaces/default/pods/db-1")
        .expect("agent socket");
    assert_eq!(code, 200, "{body}");
    agent.wait_for_each(
        pods_path,
        Duration::from_secs(60),
        "db-1 replaced and Ready",
        |_| {},
        |l| {
            sts_pods(l)
                .iter()
                .any(|p| name(p) == "db-1" && p["metadata"]["uid"] != old_uid && ready(p))
        },
    );
    let d1 = dir_of(&storage, "data-db-1");
    assert_eq!(read(&d1.join("id")), ids[1]);
    assert_eq!(read(&d1.join("boots")), "v1 db-1\nv1 db-1\n");

    // Scale to 1 (highest first, one at a time), the claims stay; back to 3: same data.
    agent.write_manifest("db.yaml", &statefulset(1, "v1"));
    agent.wait_for_each(
        pods_path,
        Duration::from_secs(60),
        "only db-0",
        |_| {},
        |l| sts_pods(l).iter().map(name).collect::<Vec<_>>() == ["db-0"],
    );
    let deleted = sts_events(&agent, "SuccessfulDelete");
    assert_eq!(
        deleted,
        [
            "delete Pod db-2 in StatefulSet db successful",
            "delete Pod db-1 in StatefulSet db successful"
        ]
    );
    assert_eq!(claim_dirs(&storage).len(), 3);
    agent.write_manifest("db.yaml", &statefulset(3, "v1"));
    agent.wait_for_each(
        pods_path,
        Duration::from_secs(120),
        "3 ready pods again",
        ordered,
        |l| {
            let p = sts_pods(l);
            p.len() == 3 && p.iter().all(ready)
        },
    );
    for (i, id) in ids.iter().enumerate() {
        let d = dir_of(&storage, &format!("data-db-{i}"));
        assert_eq!(&read(&d.join("id")), id, "db-{i}");
    }
    assert_eq!(
        read(&dir_of(&storage, "data-db-2").join("boots")),
        "v1 db-2\nv1 db-2\n"
    );

    // A rolling update: 2, then 1, then 0 (the order in which the pods are replaced).
    let orig: Vec<Value> = (0..3)
        .map(|i| agent.pod(&format!("db-{i}")).expect("pod")["metadata"]["uid"].clone())
        .collect();
    agent.write_manifest("db.yaml", &statefulset(3, "v2"));
    let mut order: Vec<String> = Vec::new();
    agent.wait_for_each(
        pods_path,
        Duration::from_secs(180),
        "every pod replaced",
        |l| {
            let pods = sts_pods(l);
            for (i, u) in orig.iter().enumerate() {
                let n = format!("db-{i}");
                let same = pods
                    .iter()
                    .any(|p| name(p) == n && &p["metadata"]["uid"] == u);
                if !same && !order.contains(&n) {
                    order.push(n);
                }
            }
        },
        |l| {
            let pods = sts_pods(l);
            pods.len() == 3
                && pods.iter().all(ready)
                && pods.iter().all(|p| !orig.contains(&p["metadata"]["uid"]))
        },
    );
    assert_eq!(order, ["db-2", "db-1", "db-0"]);
    agent.wait_for_each(
        sts_path,
        Duration::from_secs(30),
        "v2 everywhere",
        |_| {},
        |s| {
            s["status"]["updatedReplicas"] == 3
                && s["status"]["readyReplicas"] == 3
                && s["status"]["currentRevision"] == s["status"]["updateRevision"]
        },
    );
    for i in 0..3 {
        let boots = read(&dir_of(&storage, &format!("data-db-{i}")).join("boots"));
        assert!(boots.ends_with(&format!("v2 db-{i}\n")), "{boots}");
    }
    let revs = agent
        .get_json("/apis/apps/v1/namespaces/default/controllerrevisions")
        .expect("revs");
    assert_eq!(items(&revs).len(), 2, "{revs}");

    // A kill -9 of the agent: the same pods, the same claims.
    let uids: Vec<Value> = (0..3)
        .map(|i| agent.pod(&format!("db-{i}")).expect("pod")["metadata"]["uid"].clone())
        .collect();
    agent.kill9();
    agent.restart();
    agent.wait_for_each(
        sts_path,
        Duration::from_secs(60),
        "3 ready after the restart",
        |_| {},
        |s| s["status"]["readyReplicas"] == 3,
    );
    for (i, u) in uids.iter().enumerate() {
        let p = agent.pod(&format!("db-{i}")).expect("pod");
        assert_eq!(&p["metadata"]["uid"], u);
        assert_eq!(
            p["status"]["containerStatuses"][0]["restartCount"], 0,
            "{p}"
        );
    }
    assert_eq!(claim_dirs(&storage).len(), 3);

    // Bad input: the API server's words, with the file; the set keeps running as it was.
    agent.write_manifest(
        "bad.yaml",
        &statefulset(1, "v1")
            .replace("db", "bad")
            .replace("      resources: {requests: {storage: 16Mi}}\n", ""),
    );
    agent.write_manifest(
        "db.yaml",
        &statefulset(3, "v2").replace("serviceName: db", "serviceName: other"),
    );
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    loop {
        let log = agent.log_text();
        let bad = log.contains("bad.yaml: document 0: spec.volumeClaimTemplates[0].spec.resources[storage]: Required value");
        let immutable = log.contains("db.yaml: StatefulSet.apps \"db\" is invalid: spec: Forbidden: updates to statefulset spec for fields other than");
        if bad && immutable {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no validation errors:\n{}",
            agent.log_tail(30)
        );
        thread::sleep(Duration::from_millis(100));
    }
    for (i, u) in uids.iter().enumerate() {
        let p = agent.pod(&format!("db-{i}")).expect("pod");
        assert_eq!(&p["metadata"]["uid"], u);
        assert_eq!(p["spec"]["subdomain"], "db");
    }
    assert!(agent.pod("bad-0").is_none());
    agent.remove_manifest("bad.yaml");
    agent.write_manifest("db.yaml", &statefulset(3, "v2"));

    // DaemonSets: only the one that fits the node's labels and taints runs.
    agent.write_manifest("ds.yaml", &daemonsets());
    agent.wait_for_each(
        pods_path,
        Duration::from_secs(60),
        "the ssd daemon",
        |l| {
            let others = items(l)
                .iter()
                .any(|p| owned_by(p, "DaemonSet", "hdd") || owned_by(p, "DaemonSet", "plain"));
            assert!(!others, "a daemon pod on a node it does not fit: {l}");
        },
        |l| {
            items(l)
                .iter()
                .any(|p| owned_by(p, "DaemonSet", "ssd") && ready(p))
        },
    );
    let ds = agent.wait_for_each(
        "/apis/apps/v1/namespaces/default/daemonsets",
        Duration::from_secs(10),
        "daemon statuses",
        |_| {},
        |l| {
            items(l).len() == 3
                && items(l)
                    .iter()
                    .any(|d| name(d) == "ssd" && d["status"]["numberAvailable"] == 1)
        },
    );
    for d in items(&ds) {
        let want = i64::from(name(&d) == "ssd");
        assert_eq!(d["status"]["desiredNumberScheduled"], want, "{d}");
    }
    let pod = items(&agent.get_json(pods_path).expect("pods"))
        .into_iter()
        .find(|p| owned_by(p, "DaemonSet", "ssd"))
        .expect("ssd pod");
    let tols = pod["spec"]["tolerations"].to_string();
    assert!(tols.contains("node.kubernetes.io/unreachable"), "{tols}");
    let d = describe(
        &agent,
        k.as_ref(),
        "daemonset",
        "ssd",
        &["SuccessfulCreate"],
    );
    for want in [
        "Node-Selector:  disk=ssd\n",
        "Desired Number of Nodes Scheduled: 1\n",
        "Number of Nodes Scheduled with Available Pods: 1\n",
        "Pods Status:  1 Running / 0 Waiting / 0 Succeeded / 0 Failed\n",
        "  Tolerations:     dedicated=infra:NoSchedule\n",
    ] {
        assert!(d.contains(want), "no {want:?} in:\n{d}");
    }
    let out = agent.cli(&["get", "ds"]);
    assert!(out.stdout.contains("NODE SELECTOR"), "{out}");
    assert!(
        out.stdout.lines().any(|l| l.starts_with("ssd ")
            && l.contains("1         1         1       1            1           disk=ssd")),
        "{out}"
    );

    // ReadWriteOncePod: a second pod is refused.
    agent.write_manifest(
        "solo.yaml",
        &format!("{SOLO_CLAIM}---\n{}", rwop_pod("solo-a")),
    );
    agent.wait_pod("solo-a", Duration::from_secs(60), "solo-a Running", |p| {
        p["status"]["phase"] == "Running"
    });
    agent.write_manifest("solo-b.yaml", &rwop_pod("solo-b"));
    let b = agent.wait_pod("solo-b", Duration::from_secs(30), "solo-b refused", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(b["status"]["reason"], "Unschedulable", "{b}");
    assert!(
        b["status"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode"),
        "{b}"
    );
    assert_eq!(read(&dir_of(&storage, "solo").join("users")), "solo-a\n");

    // Everything removed: no pods, no sandboxes, no claim directories (all under Delete).
    for f in ["db.yaml", "ds.yaml", "solo.yaml", "solo-b.yaml"] {
        agent.remove_manifest(f);
    }
    agent.wait_for_each(
        pods_path,
        Duration::from_secs(90),
        "no pods",
        |_| {},
        |l| items(l).is_empty(),
    );
    agent.wait_for_each(
        "/api/v1/namespaces/default/persistentvolumeclaims",
        Duration::from_secs(30),
        "no claims",
        |_| {},
        |l| items(l).is_empty(),
    );
    assert!(
        claim_dirs(&storage).is_empty(),
        "{:?}",
        claim_dirs(&storage)
    );
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    while sandboxes(&engine).await > 0 {
        assert!(Instant::now() < deadline, "sandboxes left");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(agent);
    drop(engine);
}

/// Runs `args` in the node's mount namespace; its output.
fn in_node_mounts(node: &Node, args: &[&str]) -> std::process::Output {
    std::process::Command::new("nsenter")
        .arg("--target")
        .arg(node.pid().to_string())
        .args(["--mount", "--"])
        .args(args)
        .output()
        .expect("nsenter")
}

/// `quota_rrun_cri`: a claim's `requests.storage` is a project quota where the data root's
/// filesystem has them (an ext4 image with the `quota,project` features, loop-mounted with
/// `prjquota` in the node's mount namespace only): a pod that writes past it gets EDQUOT.
/// Skipped where such a filesystem cannot be mounted (a kernel without quota support); the
/// claims then say `not enforced`, which `stateful_rrun_cri` checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_rrun_cri() {
    let tag = "quota";
    let cgroups = CgroupRoot::new(tag);
    let node = Node::start();
    let img = node.dir().join("qfs.img");
    let mnt = node.dir().join("qfs");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    std::fs::File::create(&img)
        .and_then(|f| f.set_len(64 << 20))
        .expect("image");
    let out = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-O", "quota,project"])
        .arg(&img)
        .output()
        .expect("mkfs.ext4");
    assert!(out.status.success(), "mkfs.ext4: {out:?}");
    let (i, m) = (img.display().to_string(), mnt.display().to_string());
    let out = in_node_mounts(&node, &["mount", "-o", "loop,prjquota", &i, &m]);
    if !out.status.success() {
        // A kernel without CONFIG_QUOTA and CONFIG_QFMT_V2 mounts no ext4 with quotas.
        eprintln!(
            "quota_rrun_cri: skipped: no ext4 with project quotas here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    let storage = mnt.join("storage");
    let engine = start_engine(Endpoint::RrunCri, &node).await;
    let mut agent = Agent::start(
        &node,
        &engine.socket(),
        &cgroups,
        tag,
        &[format!(
            "--default-local-storage-path={}",
            storage.display()
        )],
    );
    agent.write_manifest(
        "q.yaml",
        &format!(
            r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: q
spec:
  accessModes: [ReadWriteOnce]
  resources: {{requests: {{storage: 4Mi}}}}
---
apiVersion: v1
kind: Pod
metadata:
  name: filler
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: c
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, 'dd if=/dev/zero of=/q/big bs=1M count=16 2>/q/dd.err; echo $? > /q/rc; trap "exit 0" TERM; while :; do sleep 1; done']
    volumeMounts: [{{name: q, mountPath: /q}}]
  volumes:
  - name: q
    persistentVolumeClaim: {{claimName: q}}
"#
        ),
    );
    let c = agent.wait_for_each(
        "/api/v1/namespaces/default/persistentvolumeclaims/q",
        Duration::from_secs(60),
        "q bound",
        |_| {},
        |c| c["status"]["phase"] == "Bound",
    );
    assert_eq!(
        c["metadata"]["annotations"]["rrun.io/storage-quota"], "enforced",
        "{c}"
    );
    // The claim's directory, as the node sees it.
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    let find = format!("cat {}/pvc-*_default_q/rc", storage.display());
    let rc = loop {
        agent.assert_alive();
        let out = in_node_mounts(&node, &["sh", "-c", &find]);
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        assert!(Instant::now() < deadline, "no rc:\n{}", agent.log_tail(30));
        thread::sleep(Duration::from_millis(100));
    };
    assert_ne!(rc, "0", "dd wrote 16Mi into a 4Mi claim");
    let err = in_node_mounts(
        &node,
        &[
            "sh",
            "-c",
            &format!("cat {}/pvc-*_default_q/dd.err", storage.display()),
        ],
    );
    let err = String::from_utf8_lossy(&err.stdout).to_string();
    assert!(err.contains("Disk quota exceeded"), "{err}");
    agent.remove_manifest("q.yaml");
    agent.wait_for_each(
        "/api/v1/namespaces/default/persistentvolumeclaims",
        Duration::from_secs(60),
        "the claim gone",
        |_| {},
        |l| items(l).is_empty(),
    );
    let left = in_node_mounts(&node, &["ls", "-A", &storage.display().to_string()]);
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "", "{left:?}");
    drop(agent);
    drop(engine);
    let out = in_node_mounts(&node, &["umount", &m]);
    assert!(out.status.success(), "umount: {out:?}");
}
