//! rrun-kubelet's cluster DNS, end to end through rrun-cri and through containerd 1.6's CRI
//! with runc as the control, on a node of the test's own namespaces: the agent runs with
//! `--cluster-dns` (a link-local address, as NodeLocal DNSCache uses), serves it from a
//! dummy link of the node's network namespace, and pods with the default `dnsPolicy`
//! (ClusterFirst) get it as their nameserver with the Kubernetes search list.
//!
//! From inside a client pod (busybox `nslookup` and `nc`, through the CRI's ExecSync): a
//! ClusterIP Service by its full name and through the search list (an HTTP GET to the
//! address found reaches the Deployment behind it), a headless Service answered with its Ready pods'
//! IPs, a StatefulSet pod's `db-0.db` name (and its FQDN in the `/etc/hosts` the agent
//! writes), SRV of a named port, NXDOMAIN for an unknown
//! Service; scaling the StatefulSet adds `db-2` and a third address, and a pod replaced
//! with a new IP is answered with it. After a clean stop of the agent, no DNS link, no
//! address and no agent process are left on the node. Names outside the cluster domain
//! go to the upstream resolvers (the unit tests of `kubelet/src/dns/`): these tests give the
//! agent an empty resolv.conf, so nothing here depends on an outside resolver.

use std::time::{Duration, Instant};

use integration_tests::agent::{condition, container_status, Agent};
use integration_tests::cri::{api, Client};
use integration_tests::engines::have;
use integration_tests::kubelet::{start_engine, CgroupRoot, Endpoint, Node, IMAGE, SUBNET_PREFIX};
use integration_tests::{scaled, Value};

const SERVICE_RANGE: &str = "10.97.0.0/24";
const CLUSTER_DNS: &str = "169.254.20.10";
const DOMAIN: &str = "cluster.local";

fn skip_endpoint(ep: Endpoint) -> bool {
    (ep == Endpoint::Containerd && !(have("containerd") && have("ctr"))) || !have("nft")
}

/// A Deployment `web` (httpd, named port `http`) behind a ClusterIP Service; a headless
/// Service `db` and its StatefulSet of `db_replicas`; a client pod that only sleeps.
fn manifests(db_replicas: usize) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: httpd
        image: {IMAGE}
        imagePullPolicy: Never
        command: [sh, -c, 'mkdir -p /www && echo web-page > /www/index.html && exec httpd -f -p 8080 -h /www']
        ports: [{{name: http, containerPort: 8080}}]
        readinessProbe:
          tcpSocket: {{port: http}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: 80, targetPort: http}}
---
apiVersion: v1
kind: Service
metadata:
  name: db
spec:
  clusterIP: None
  selector: {{app: db}}
  ports:
  - {{name: pg, port: 5432}}
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
spec:
  replicas: {db_replicas}
  serviceName: db
  podManagementPolicy: Parallel
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
        command: [sh, -c, 'exec sleep 1000000']
---
apiVersion: v1
kind: Pod
metadata:
  name: client
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

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn ready(p: &Value) -> bool {
    condition(p, "Ready")
}

/// The IP of every Ready pod whose name starts with `prefix`, by name.
fn ips(list: &Value, prefix: &str) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = items(list)
        .iter()
        .filter(|p| {
            p["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .starts_with(prefix)
        })
        .filter(|p| ready(p))
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["status"]["podIP"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

fn container_id(p: &Value) -> String {
    let id = container_status(p, "main").expect("container status")["containerID"]
        .as_str()
        .unwrap_or("")
        .to_string();
    id.split_once("://")
        .map(|(_, i)| i.to_string())
        .unwrap_or(id)
}

/// `sh -c script` in the client pod: (exit code, stdout and stderr).
async fn exec(engine: &std::path::Path, id: &str, script: &str) -> (i32, String) {
    let mut c = Client::connect(engine).await.expect("connect to the CRI");
    let r = c
        .runtime
        .exec_sync(api::ExecSyncRequest {
            container_id: id.into(),
            cmd: vec!["sh".into(), "-c".into(), script.into()],
            timeout: 30,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    let mut out = String::from_utf8_lossy(&r.stdout).into_owned();
    out.push_str(&String::from_utf8_lossy(&r.stderr));
    (r.exit_code, out)
}

async fn ok(engine: &std::path::Path, id: &str, script: &str) -> String {
    let (code, out) = exec(engine, id, script).await;
    assert_eq!(code, 0, "{script}: exit {code}:\n{out}");
    out
}

/// The addresses busybox `nslookup` printed for the name (not the server's own line).
fn addresses(out: &str) -> Vec<String> {
    let mut v: Vec<String> = out
        .split("Name:")
        .skip(1)
        .flat_map(|answer| {
            answer
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Address:"))
                .map(|a| a.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// Polls `nslookup name` in the client until its addresses are `want` (the agent's view
/// follows pods' readiness through the controllers' pass).
async fn wait_resolves(
    agent: &mut Agent,
    engine: &std::path::Path,
    id: &str,
    name: &str,
    want: &[String],
) {
    let deadline = Instant::now() + scaled(Duration::from_secs(30));
    let mut want = want.to_vec();
    want.sort();
    loop {
        agent.assert_alive();
        let (code, out) = exec(engine, id, &format!("nslookup {name}")).await;
        if code == 0 && addresses(&out) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nslookup {name}: wanted {want:?}, got (exit {code}):\n{out}\nagent log:\n{}",
            agent.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn node_addresses(node: &Node) -> String {
    node.run_net(&["ip", "-o", "addr"], Duration::from_secs(10))
        .map(|o| o.stdout)
        .unwrap_or_default()
}

async fn dns(ep: Endpoint) {
    if skip_endpoint(ep) {
        return;
    }
    let tag = format!("dns-{ep:?}").to_lowercase();
    let cgroups = CgroupRoot::new(&tag);
    let node = Node::start();
    let engine = start_engine(ep, &node).await;
    let socket = engine.socket();
    // No upstream: names outside the cluster domain are not this test's.
    let resolv = node.dir().join("resolv.conf");
    std::fs::write(&resolv, "").expect("resolv.conf");
    let mut agent = Agent::start(
        &node,
        &socket,
        &cgroups,
        &tag,
        &[
            format!("--service-cluster-ip-range={SERVICE_RANGE}"),
            format!("--cluster-dns={CLUSTER_DNS}"),
            format!("--cluster-domain={DOMAIN}"),
            format!("--resolv-conf={}", resolv.display()),
        ],
    );
    assert!(
        node.links().iter().any(|l| l == "rrun-dns0")
            || node_addresses(&node).contains(&format!("inet {CLUSTER_DNS}/32")),
        "the clusterDNS address is not on the node:\n{}",
        node_addresses(&node)
    );
    agent.write_manifest("apps.yaml", &manifests(2));
    let list = agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(120),
        "web, db and client Ready",
        |l| {
            let it = items(l);
            it.len() == 5 && it.iter().all(ready)
        },
    );
    // Ready pods become endpoints (and nft rules, and DNS answers) in the controllers'
    // next pass, after the pods' status: until then a Service has no backend.
    for (svc, n) in [("web", 2), ("db", 2)] {
        agent.wait_for(
            &format!("/api/v1/namespaces/default/endpoints/{svc}"),
            Duration::from_secs(60),
            &format!("{n} endpoints of {svc}"),
            |e| {
                e["subsets"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default())
                    .count()
                    == n
            },
        );
    }
    let client = items(&list)
        .into_iter()
        .find(|p| p["metadata"]["name"] == "client")
        .expect("the client pod");
    let id = container_id(&client);
    let svc = agent
        .get_json("/api/v1/namespaces/default/services/web")
        .expect("service web");
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap_or("").to_string();
    assert!(cluster_ip.starts_with("10.97.0."), "{svc}");
    // The node's route to the Service range (a real node's default route does this).
    let out = node
        .run_net(
            &["ip", "route", "add", SERVICE_RANGE, "dev", "rrunkbr0"],
            Duration::from_secs(10),
        )
        .expect("ip route");
    assert!(out.status.success(), "ip route add: {out:?}");

    // The pod's resolv.conf, as the kubelet writes it for ClusterFirst.
    let rc = ok(&socket, &id, "cat /etc/resolv.conf").await;
    assert!(rc.contains(&format!("nameserver {CLUSTER_DNS}")), "{rc}");
    assert!(
        rc.contains(&format!(
            "search default.svc.{DOMAIN} svc.{DOMAIN} {DOMAIN}"
        )),
        "{rc}"
    );
    assert!(rc.contains("ndots:5"), "{rc}");

    // A ClusterIP Service, by its full name and through the search list.
    let out = ok(&socket, &id, &format!("nslookup web.default.svc.{DOMAIN}")).await;
    assert_eq!(addresses(&out), [cluster_ip.as_str()], "{out}");
    // busybox asks every search domain at once and exits 1 when one says NXDOMAIN: the
    // first one answered.
    let (_, out) = exec(&socket, &id, "nslookup web").await;
    assert!(
        out.contains(&format!("web.default.svc.{DOMAIN}\nAddress: {cluster_ip}")),
        "{out}"
    );
    assert_eq!(addresses(&out), [cluster_ip.as_str()], "{out}");
    // The fixture's busybox is a static glibc build whose name lookups through libc need
    // NSS modules the image does not have (its `wget` crashes resolving names, on any
    // runtime): the page is fetched with `nc` from the address the search list gave.
    let page = ok(
        &socket,
        &id,
        "ip=$(nslookup web 2>/dev/null | awk '/^Address: /{print $2; exit}'); \
         printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 $ip 80",
    )
    .await;
    let page = page.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or(&page);
    assert_eq!(page.trim(), "web-page");

    // The headless Service: its Ready pods; a StatefulSet pod by name.
    let db: Vec<(String, String)> = ips(&list, "db-");
    assert_eq!(db.len(), 2, "{db:?}");
    let mut db_ips: Vec<String> = db.iter().map(|(_, ip)| ip.clone()).collect();
    db_ips.sort();
    assert!(
        db_ips.iter().all(|ip| ip.starts_with(SUBNET_PREFIX)),
        "{db_ips:?}"
    );
    let out = ok(&socket, &id, &format!("nslookup db.default.svc.{DOMAIN}")).await;
    assert_eq!(addresses(&out), db_ips, "{out}");
    let out = ok(
        &socket,
        &id,
        &format!("nslookup db-0.db.default.svc.{DOMAIN}"),
    )
    .await;
    assert_eq!(addresses(&out), [db[0].1.as_str()], "{out}");
    // The kubelet's /etc/hosts of a StatefulSet pod: its own FQDN and hostname.
    let db0 = items(&list)
        .into_iter()
        .find(|p| p["metadata"]["name"] == "db-0")
        .expect("db-0");
    let hosts = ok(&socket, &container_id(&db0), "cat /etc/hosts").await;
    assert!(
        hosts.contains(&format!(
            "\n{}\tdb-0.db.default.svc.{DOMAIN}\tdb-0\n",
            db[0].1
        )),
        "{hosts}"
    );
    let hosts = ok(&socket, &id, "cat /etc/hosts").await;
    assert!(
        hosts.starts_with("# Kubernetes-managed hosts file."),
        "{hosts}"
    );
    assert!(hosts.contains("\tclient\n"), "{hosts}");
    // (busybox's nslookup applies the search list to dot-less names only.)
    let out = ok(
        &socket,
        &id,
        &format!("nslookup db-1.db.default.svc.{DOMAIN}"),
    )
    .await;
    assert_eq!(addresses(&out), [db[1].1.as_str()], "{out}");

    // SRV of a named port: the Service's name and port; the headless one's pods.
    let out = ok(
        &socket,
        &id,
        &format!("nslookup -type=srv _http._tcp.web.default.svc.{DOMAIN}"),
    )
    .await;
    assert!(
        out.contains(&format!("0 100 80 web.default.svc.{DOMAIN}")),
        "{out}"
    );
    let out = ok(
        &socket,
        &id,
        &format!("nslookup -type=srv _pg._tcp.db.default.svc.{DOMAIN}"),
    )
    .await;
    for p in ["db-0", "db-1"] {
        assert!(
            out.contains(&format!("0 50 5432 {p}.db.default.svc.{DOMAIN}")),
            "{out}"
        );
    }

    // Unknown names in the cluster domain: NXDOMAIN.
    let (code, out) = exec(&socket, &id, &format!("nslookup nope.default.svc.{DOMAIN}")).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("NXDOMAIN"), "{out}");

    // Scaling: a third pod and name.
    agent.write_manifest("apps.yaml", &manifests(3));
    let list = agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(120),
        "db-2 Ready",
        |l| ips(l, "db-").len() == 3,
    );
    let db = ips(&list, "db-");
    let all: Vec<String> = db.iter().map(|(_, ip)| ip.clone()).collect();
    wait_resolves(
        &mut agent,
        &socket,
        &id,
        &format!("db.default.svc.{DOMAIN}"),
        &all,
    )
    .await;
    let out = ok(
        &socket,
        &id,
        &format!("nslookup db-2.db.default.svc.{DOMAIN}"),
    )
    .await;
    assert_eq!(addresses(&out), [db[2].1.as_str()], "{out}");

    // A pod replaced with a new IP: its name follows.
    let old = db[0].1.clone();
    let (code, body) = agent
        .delete("/api/v1/namespaces/default/pods/db-0")
        .expect("DELETE db-0");
    assert!(code < 300, "DELETE db-0: {code} {body}");
    let list = agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(120),
        "db-0 back, Ready, with a new IP",
        |l| {
            ips(l, "db-")
                .iter()
                .any(|(n, ip)| n == "db-0" && *ip != old && !ip.is_empty())
        },
    );
    let new = ips(&list, "db-")
        .into_iter()
        .find(|(n, _)| n == "db-0")
        .map(|(_, ip)| ip)
        .expect("db-0");
    wait_resolves(
        &mut agent,
        &socket,
        &id,
        &format!("db-0.db.default.svc.{DOMAIN}"),
        &[new],
    )
    .await;

    // Everything removed, then a clean stop: no DNS link, address or agent left.
    agent.remove_manifest("apps.yaml");
    agent.wait_for(
        "/api/v1/namespaces/default/pods",
        Duration::from_secs(60),
        "no pods",
        |l| items(l).is_empty(),
    );
    let st = agent
        .terminate()
        .expect("the agent did not stop on SIGTERM");
    assert!(st.success(), "the agent exited with {st}");
    assert!(
        !node.links().iter().any(|l| l == "rrun-dns0"),
        "{:?}",
        node.links()
    );
    let addrs = node_addresses(&node);
    assert!(!addrs.contains(CLUSTER_DNS), "{addrs}");
    let out = node
        .run_net(&["ss", "-Hlnu"], Duration::from_secs(10))
        .expect("ss");
    assert!(!out.stdout.contains(":53 "), "{}", out.stdout);
    drop(agent);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rrun_cri() {
    dns(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_containerd() {
    dns(Endpoint::Containerd).await;
}
