//! rrun-kubelet's HTTPS and grpc probes, through rrun-cri and through containerd 1.6's CRI
//! as the control, against real servers on the node's loopback: `openssl s_server` with a
//! self-signed certificate (the prober does not verify it, as the kubelet's does not), and
//! a gRPC health server (`grpc.health.v1`) run by the test, whose answers it flips.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::agent::{condition, Agent};
use integration_tests::engines::have;
use integration_tests::kubelet::{start_engine, CgroupRoot, Endpoint, Node, IMAGE};
use integration_tests::{scaled, Value};
use nix::sched::CloneFlags;
use tonic_health::ServingStatus;

const TLS_PORT: u16 = 18443;
const GRPC_PORT: u16 = 18444;

fn pod_yaml(name: &str, probe: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 1\n  hostNetwork: true\n  containers:\n  - name: main\n    image: {IMAGE}\n    imagePullPolicy: Never\n    command: [sleep, '1000000']\n    readinessProbe:\n{probe}      periodSeconds: 1\n      failureThreshold: 1\n"
    )
}

/// A TCP listener whose socket lives in the node's network namespace: bound by a thread
/// that entered it (setns is per thread, and a socket keeps the namespace it was made in).
fn listen_on_node(node: &Node, port: u16) -> tokio::net::TcpListener {
    let ns = format!("/proc/{}/ns/net", node.pid());
    let listener = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns).expect("opening the node's netns");
        nix::sched::setns(&f, CloneFlags::CLONE_NEWNET).expect("setns into the node's netns");
        let l = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind on the node");
        l.set_nonblocking(true).expect("non-blocking listener");
        l
    })
    .join()
    .expect("the binding thread");
    tokio::net::TcpListener::from_std(listener).expect("tokio listener")
}

/// `openssl s_server -www` on the node's loopback, with a fresh self-signed certificate.
struct TlsServer(Child);

impl TlsServer {
    fn start(node: &Node) -> TlsServer {
        let dir = node.dir().join("probe-tls");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
        let out = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args([
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=pod",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("running openssl req");
        assert!(
            out.status.success(),
            "openssl req: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cmd = node.wrap();
        cmd.extend(
            ["openssl", "s_server", "-quiet", "-www", "-accept"]
                .map(String::from)
                .into_iter()
                .chain([
                    format!("127.0.0.1:{TLS_PORT}"),
                    "-cert".into(),
                    cert.display().to_string(),
                    "-key".into(),
                    key.display().to_string(),
                ]),
        );
        let child = Command::new(&cmd[0])
            .args(&cmd[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning openssl s_server");
        let server = TlsServer(child);
        // Up once something accepts on the port, on the node.
        let deadline = Instant::now() + scaled(Duration::from_secs(20));
        while !listening(node) {
            assert!(Instant::now() < deadline, "openssl s_server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

fn listening(node: &Node) -> bool {
    node.run_net(&["ss", "-Hltn"], Duration::from_secs(5))
        .is_some_and(|o| o.stdout.contains(&format!("127.0.0.1:{TLS_PORT}")))
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn events_of(agent: &Agent, pod: &str) -> String {
    agent
        .get(&format!(
            "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name={pod}"
        ))
        .map(|(_, body)| body)
        .unwrap_or_default()
}

async fn wait_event(agent: &Agent, pod: &str, needle: &str) {
    let deadline = Instant::now() + scaled(Duration::from_secs(60));
    loop {
        let ev = events_of(agent, pod);
        if ev.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no event {needle:?} for {pod}: {ev}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn https_and_grpc(ep: Endpoint) {
    if ep == Endpoint::Containerd && !(have("containerd") && have("ctr")) {
        return;
    }
    let tag = format!("probes-{ep:?}").to_lowercase();
    let cgroups = CgroupRoot::new(&format!("agent-{tag}"));
    let node = Node::start();
    let engine = start_engine(ep, &node).await;
    let mut agent = Agent::start(&node, &engine.socket(), &cgroups, &tag, &[]);

    let tls = TlsServer::start(&node);
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("probe.Test", ServingStatus::NotServing)
        .await;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listen_on_node(&node, GRPC_PORT));
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(health)
            .serve_with_incoming(incoming),
    );

    agent.write_manifest(
        "probes.yaml",
        &[
            pod_yaml(
                "tls",
                &format!("      httpGet: {{scheme: HTTPS, port: {TLS_PORT}, path: /}}\n"),
            ),
            // Plain HTTP to the TLS port: the server's answer is no HTTP.
            pod_yaml("plain", &format!("      httpGet: {{port: {TLS_PORT}}}\n")),
            pod_yaml(
                "health",
                &format!("      grpc: {{port: {GRPC_PORT}, service: probe.Test}}\n"),
            ),
            pod_yaml(
                "unknown",
                &format!("      grpc: {{port: {GRPC_PORT}, service: no.Such}}\n"),
            ),
        ]
        .join("---\n"),
    );
    let timeout = Duration::from_secs(60);
    agent.wait_pod("tls", timeout, "tls Ready by an HTTPS probe", |p| {
        condition(p, "Ready")
    });

    // NOT_SERVING: not Ready, with the kubelet's message.
    wait_event(
        &agent,
        "health",
        "service unhealthy (responded with \\\"NOT_SERVING\\\")",
    )
    .await;
    wait_event(&agent, "plain", "Readiness probe failed").await;
    wait_event(&agent, "unknown", "NotFound").await;
    for name in ["health", "plain", "unknown"] {
        let p: Value = agent.pod(name).expect(name);
        assert!(!condition(&p, "Ready"), "{name} is Ready: {p}");
    }

    // SERVING: Ready; then NOT_SERVING again: not Ready (failureThreshold 1).
    reporter
        .set_service_status("probe.Test", ServingStatus::Serving)
        .await;
    agent.wait_pod("health", timeout, "health Ready by a grpc probe", |p| {
        condition(p, "Ready")
    });
    reporter
        .set_service_status("probe.Test", ServingStatus::NotServing)
        .await;
    agent.wait_pod("health", timeout, "health not Ready again", |p| {
        !condition(p, "Ready")
    });

    // The HTTPS server gone: tls is not Ready any more.
    drop(tls);
    agent.wait_pod("tls", timeout, "tls not Ready without its server", |p| {
        !condition(p, "Ready")
    });

    agent.remove_manifest("probes.yaml");
    for name in ["tls", "plain", "health", "unknown"] {
        agent.wait_gone(name, timeout);
    }
    agent.assert_alive();
    grpc.abort();
    drop(agent);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_grpc_rrun_cri() {
    https_and_grpc(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_grpc_containerd() {
    https_and_grpc(Endpoint::Containerd).await;
}
