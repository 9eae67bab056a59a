//! The benchmark of rrun-kubelet's Kubernetes API (`bench/api.sh`; ignored in test runs):
//! an agent on rrun-cri in a node of the test's own namespaces (as `kubectl_api`), with
//! `RRUN_API_BENCH_PODS` pods (default 100, one Deployment) Ready, then
//!
//! - the agent's RSS (VmRSS) and CPU (utime+stime over 30 s) at steady state with the pods,
//!   before anything else talks to it, then the same with 5 idle `kubectl get pods -w`
//!   open (watches are pushed: idle ones should cost nothing);
//! - `kubectl get pods` end to end (kubectl 1.33 in the node's network namespace, its
//!   discovery cached), and the server's time for the same list, taken by curl as the time
//!   from the TLS connection up to the last byte of the answer (`time_total -
//!   time_appconnect`): once as the Table kubectl asks for, once as the plain JSON list; the
//!   three alternate, `RRUN_API_BENCH_RUNS` rounds (default 30) after one warm-up round;
//! - `kubectl apply -f` of a 20-object file (a Namespace, 6 ConfigMaps, 5 Secrets, 4
//!   Deployments of 0 replicas, 4 Services): the first apply (all created), then the same file
//!   again (all unchanged), in 5 rounds, each with a namespace of its own;
//! - watch latency: a ConfigMap watch open (the Python client), the time from a label patch
//!   sent to its event read, 25 changes (`integration-tests/clients/kube_watch_bench.py`).
//!
//! It prints `BENCH` lines and asserts only that every command did what it should: the
//! figures are for the reader (no timed assertions).

use std::fs;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use integration_tests::agent::Agent;
use integration_tests::kubectl::{self, ApiNode, Kubectl};
use integration_tests::kubelet::{Node, IMAGE};
use integration_tests::{scaled, Value};

/// kubectl's Accept header for `get` (the server-side Table, then plain JSON).
const TABLE_ACCEPT: &str = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
const PODS_URL: &str = "https://127.0.0.1:6443/api/v1/namespaces/default/pods?limit=500";
const APPLY_ROUNDS: usize = 5;
const REAPPLIES: usize = 3;
const WATCH_CHANGES: usize = 25;

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn deployment(replicas: usize) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: bench
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: bench}}
  template:
    metadata:
      labels: {{app: bench}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {IMAGE}
        imagePullPolicy: Never
        command: [sh, -c, 'exec sleep 1000000']
"#
    )
}

/// The 20 objects of the apply benchmark, in namespace `ns`.
fn apply_file(ns: &str) -> String {
    let mut docs = vec![format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
    )];
    for i in 0..6 {
        docs.push(format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg-{i}\n  namespace: {ns}\n  labels: {{app: app-{i}}}\ndata: {{key: \"value {i}\", other: \"{i}\"}}\n"
        ));
    }
    for i in 0..5 {
        docs.push(format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: sec-{i}\n  namespace: {ns}\nstringData: {{password: \"hunter{i}\"}}\n"
        ));
    }
    for i in 0..4 {
        docs.push(format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-{i}
  namespace: {ns}
spec:
  replicas: 0
  selector:
    matchLabels: {{app: app-{i}}}
  template:
    metadata:
      labels: {{app: app-{i}}}
    spec:
      containers:
      - name: main
        image: {IMAGE}
        imagePullPolicy: Never
        command: [sleep, '1000000']
        envFrom: [{{configMapRef: {{name: cfg-{i}}}}}]
"#
        ));
        docs.push(format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: app-{i}\n  namespace: {ns}\nspec:\n  selector: {{app: app-{i}}}\n  ports:\n  - {{port: 80, targetPort: 8080}}\n"
        ));
    }
    assert_eq!(docs.len(), 20);
    docs.join("---\n")
}

/// Median and p90 (nearest rank) of milliseconds.
fn stats(v: &[f64]) -> (f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    let median = if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    };
    (median, rank(0.9))
}

/// The agent's utime+stime in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // utime and stime: fields 14 and 15, i.e. 12th and 13th after the state.
    f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0)
}

fn vm_rss_kib(pid: i32) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// curl of the pod list in the node's network namespace with the admin token: the server's
/// time in ms (`time_total - time_appconnect`) and the body's size.
fn curl_pods(node: &Node, ca: &Path, token: &str, accept: &str) -> (f64, u64) {
    let auth = format!("Authorization: Bearer {token}");
    let accept = format!("Accept: {accept}");
    let ca = ca.display().to_string();
    let o = node
        .run_net(
            &[
                "curl",
                "-sS",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{time_appconnect} %{time_total} %{size_download}",
                "--cacert",
                &ca,
                "-H",
                &auth,
                "-H",
                &accept,
                PODS_URL,
            ],
            scaled(Duration::from_secs(60)),
        )
        .expect("curl timed out");
    let w: Vec<&str> = o.stdout.split_whitespace().collect();
    assert!(
        o.status.success() && w.len() == 4 && w[0] == "200",
        "curl of the pod list: {}\n{}",
        o.stdout,
        o.stderr
    );
    let secs = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
    (
        (secs(w[2]) - secs(w[1])) * 1000.0,
        w[3].parse().unwrap_or(0),
    )
}

/// Polls (every second, so as not to load the agent) until `kubectl args` prints `want`.
fn wait_output(k: &Kubectl, agent: &mut Agent, args: &[&str], want: &str, timeout: Duration) {
    let deadline = Instant::now() + scaled(timeout);
    loop {
        agent.assert_alive();
        let o = k.run(args);
        if o.status.success() && o.stdout.trim() == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "kubectl {args:?}: not {want:?} within {timeout:?}: {}\n{}\nagent log:\n{}",
            o.stdout,
            o.stderr,
            agent.log_tail(30)
        );
        thread::sleep(Duration::from_secs(1));
    }
}

/// Times one kubectl invocation, which must succeed; (ms, stdout).
fn timed(k: &Kubectl, args: &[&str]) -> (f64, String) {
    let t = Instant::now();
    let out = k.ok(args);
    (t.elapsed().as_secs_f64() * 1000.0, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: bench/api.sh runs it"]
async fn bench_api() {
    let Some(bins) = kubectl::bins_or_skip() else {
        return;
    };
    let n = env_usize("RRUN_API_BENCH_PODS", 100);
    let runs = env_usize("RRUN_API_BENCH_RUNS", 30).max(1);
    let mut api = ApiNode::start("kbench", "10.98.7.0/24").await;
    let (node, agent) = (&api.node, &mut api.agent);
    let kubeconfig = agent.root_dir.join("kubeconfig");
    let ca = agent.root_dir.join("pki/ca.crt");
    let token = fs::read_to_string(&kubeconfig)
        .expect("kubeconfig")
        .lines()
        .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string))
        .expect("the kubeconfig's token");
    let newest = bins.last().expect("a kubectl");
    let k = Kubectl::new(node, newest, &kubeconfig, "bench").timeout(Duration::from_secs(120));

    // The pods.
    let deploy = node.dir().join("bench-deploy.yaml");
    fs::write(&deploy, deployment(n)).expect("write the Deployment");
    let t = Instant::now();
    k.ok(&["apply", "-f", &deploy.display().to_string()]);
    wait_output(
        &k,
        agent,
        &[
            "get",
            "deploy",
            "bench",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
        &n.to_string(),
        Duration::from_secs(900),
    );
    let all_ready = t.elapsed().as_secs_f64();

    // Steady state: nothing but the agent's own work (pod syncs, status) with the pods.
    let pid = agent.pid();
    thread::sleep(Duration::from_secs(10));
    let t0 = cpu_ticks(pid);
    let w = Instant::now();
    thread::sleep(Duration::from_secs(30));
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu = cpu_ticks(pid).saturating_sub(t0) as f64 / hz / w.elapsed().as_secs_f64() * 100.0;
    let rss = vm_rss_kib(pid);
    println!(
        "BENCH api pods={n} all_ready={all_ready:.1}s agent_rss={:.1}MiB agent_cpu={cpu:.2}% (budget 32 MiB, 2 %)",
        rss as f64 / 1024.0
    );

    // The same with 5 idle watches open (`kubectl get pods -w`, as people leave them): what
    // a watch costs while nothing changes.
    let watchers: Vec<std::process::Child> = (0..5)
        .map(|_| {
            k.command()
                .args(["get", "pods", "-w"])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("kubectl get pods -w")
        })
        .collect();
    // This window starts 60 s after the first: the pods' volumes are made again once a
    // minute, so both windows miss that (or both would hold it) and differ by the watches.
    thread::sleep(Duration::from_secs(30));
    let t0 = cpu_ticks(pid);
    let w = Instant::now();
    thread::sleep(Duration::from_secs(30));
    let cpu_watched =
        cpu_ticks(pid).saturating_sub(t0) as f64 / hz / w.elapsed().as_secs_f64() * 100.0;
    for mut c in watchers {
        let _ = c.kill();
        let _ = c.wait();
    }
    println!("BENCH api pods={n} idle_watches=5 agent_cpu={cpu_watched:.2}% (30 s)");

    // `get pods`: kubectl end to end, and the server's time for the Table and the JSON list.
    let (mut kubectl_ms, mut table_ms, mut json_ms) = (vec![], vec![], vec![]);
    let (mut table_bytes, mut json_bytes) = (0, 0);
    for round in 0..=runs {
        let (ms, out) = timed(&k, &["get", "pods"]);
        assert_eq!(out.lines().count(), n + 1, "get pods:\n{out}");
        let (t_ms, t_bytes) = curl_pods(node, &ca, &token, TABLE_ACCEPT);
        let (j_ms, j_bytes) = curl_pods(node, &ca, &token, "application/json");
        if round > 0 {
            kubectl_ms.push(ms);
            table_ms.push(t_ms);
            json_ms.push(j_ms);
        }
        (table_bytes, json_bytes) = (t_bytes, j_bytes);
    }
    let line = |what: &str, v: &[f64], extra: String| {
        let (med, p90) = stats(v);
        println!(
            "BENCH api {what} median={med:.1}ms p90={p90:.1}ms runs={}{extra}",
            v.len()
        );
    };
    line("get_pods_kubectl", &kubectl_ms, String::new());
    line(
        "get_pods_server_table",
        &table_ms,
        format!(" bytes={table_bytes}"),
    );
    line(
        "get_pods_server_json",
        &json_ms,
        format!(" bytes={json_bytes}"),
    );

    // `apply -f` of 20 objects: created, then unchanged.
    let (mut create_ms, mut reapply_ms, mut unchanged) = (vec![], vec![], 0);
    for round in 0..APPLY_ROUNDS {
        let file = node.dir().join(format!("bench-apply-{round}.yaml"));
        fs::write(&file, apply_file(&format!("bench-{round}"))).expect("write the apply file");
        let file = file.display().to_string();
        let (ms, out) = timed(&k, &["apply", "-f", &file]);
        assert_eq!(
            out.lines().filter(|l| l.ends_with(" created")).count(),
            20,
            "first apply:\n{out}"
        );
        create_ms.push(ms);
        for _ in 0..REAPPLIES {
            let (ms, out) = timed(&k, &["apply", "-f", &file]);
            // kubectl prints "configured" where its three-way patch is not empty although
            // the file is the same (a Secret's stringData, as against a cluster).
            assert!(
                out.lines().count() == 20
                    && out
                        .lines()
                        .all(|l| l.ends_with(" unchanged") || l.ends_with(" configured")),
                "apply of the same file:\n{out}"
            );
            unchanged = out.lines().filter(|l| l.ends_with(" unchanged")).count();
            reapply_ms.push(ms);
        }
    }
    line("apply20_create", &create_ms, String::new());
    line(
        "apply20_again",
        &reapply_ms,
        format!(" unchanged={unchanged}/20"),
    );

    // Watch latency.
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/kube_watch_bench.py");
    let o = node
        .run_net(
            &[
                "python3",
                &script.display().to_string(),
                &kubeconfig.display().to_string(),
                &WATCH_CHANGES.to_string(),
            ],
            scaled(Duration::from_secs(300)),
        )
        .expect("the watch bench timed out");
    assert!(
        o.status.success(),
        "the watch bench failed ({}):\n{}\n{}\nagent log:\n{}",
        o.status,
        o.stdout,
        o.stderr,
        agent.log_tail(30)
    );
    let v: Value = serde_json::from_str(o.stdout.lines().last().unwrap_or("")).expect("its JSON");
    let ms = |key: &str| -> Vec<f64> {
        v[key]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let (event_ms, patch_ms) = (ms("event_ms"), ms("patch_ms"));
    assert_eq!(event_ms.len(), WATCH_CHANGES, "{v}");
    line("watch_event", &event_ms, String::new());
    line("watch_patch_roundtrip", &patch_ms, String::new());

    // Down again: the pods go before the node does.
    k.ok(&["delete", "deploy", "bench"]);
    wait_output(
        &k,
        agent,
        &["get", "pods", "-o", "name"],
        "",
        Duration::from_secs(600),
    );
}
