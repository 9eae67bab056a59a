//! `kubectl exec`, `attach` and `port-forward` (1.27, which speaks SPDY/3.1, and 1.33,
//! which speaks WebSocket v5 for exec and attach and tunnels port forwarding over
//! WebSocket) through rrun-kubelet's Kubernetes API, which proxies the upgraded connection
//! to the CRI's streaming server; against rrun-cri and, as the control, containerd 1.6.
//!
//! exec: stdout and stderr apart, the command's exit code passed back; stdin piped with
//! `-i`; a terminal with `-it` (under `script`, which gives kubectl a pty). attach: the
//! output of a running container. port-forward: a page of the pod's httpd read through a
//! local port. A container that does not exist: the kubelet's error.

use std::path::PathBuf;
use std::time::Duration;

use integration_tests::agent::{condition, Agent};
use integration_tests::engines::have;
use integration_tests::kubectl::{self, Kubectl, VERSIONS};
use integration_tests::kubelet::{start_engine, CgroupRoot, Endpoint, Node, IMAGE};

fn pod() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, 'mkdir -p /www && echo hello-pf > /www/index.html && exec httpd -f -p 8080 -h /www']
  - name: ticker
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, 'while true; do echo tick; sleep 1; done']
"#
    )
}

fn check(k: &Kubectl, version: &str) {
    // exec: the streams apart, the exit code back.
    let o = k.sh("{k} exec shell -c web -- sh -c 'echo out; echo err >&2; exit 7'");
    assert_eq!(o.status.code(), Some(7), "{version}: {o:?}");
    assert_eq!(o.stdout, "out\n", "{version}: {o:?}");
    assert!(o.stderr.contains("err"), "{version}: {o:?}");
    // stdin with -i.
    let o = k.sh("printf 'piped\\nlines\\n' | {k} exec -i shell -c web -- cat");
    assert!(o.status.success(), "{version}: {o:?}");
    assert_eq!(o.stdout, "piped\nlines\n", "{version}: {o:?}");
    // A terminal with -it.
    let o = k.sh("script -qec \"{k} exec -it shell -c web -- sh -c 'tty; exit 3'\" /dev/null");
    assert_eq!(o.status.code(), Some(3), "{version}: {o:?}");
    assert!(o.stdout.contains("/dev/pts/"), "{version}: {o:?}");
    // attach to the ticking container.
    let o = k.sh("timeout 6 {k} attach shell -c ticker; true");
    assert!(o.stdout.contains("tick"), "{version}: {o:?}");
    // port-forward: the page through a local port, then the forwarder stopped.
    let out = k.node().dir().join(format!("pf-{version}.out"));
    let o = k.sh(&format!(
        "{{k}} port-forward pod/shell 18080:8080 >{out} 2>&1 & pf=$!; \
         for i in $(seq 300); do busybox wget -qO- http://127.0.0.1:18080/ 2>/dev/null && break; sleep 0.2; done; \
         kill $pf; wait $pf; cat {out} >&2",
        out = out.display()
    ));
    assert!(o.stdout.contains("hello-pf"), "{version}: {o:?}");
    assert!(
        o.stderr.contains("Forwarding from 127.0.0.1:18080 -> 8080"),
        "{version}: {o:?}"
    );
    // A container the pod does not have.
    let o = k.sh("{k} exec shell -c nope -- true");
    assert!(!o.status.success(), "{version}: {o:?}");
    assert!(
        o.stderr.contains("container nope not found") || o.stderr.contains("\"nope\""),
        "{version}: {o:?}"
    );
}

async fn streams(ep: Endpoint) {
    let bins: Vec<PathBuf> = VERSIONS.iter().map(|v| kubectl::bin(v)).collect();
    if !bins.iter().all(|b| b.is_file()) || !have("script") {
        eprintln!(
            "skipped: needs {}/kubectl.{{1.27,1.33}} and script",
            kubectl::DIR
        );
        return;
    }
    if ep == Endpoint::Containerd && !(have("containerd") && have("ctr")) {
        return;
    }
    let tag = format!("kstream-{ep:?}").to_lowercase();
    let cgroups = CgroupRoot::new(&tag);
    let node = Node::start();
    let engine = start_engine(ep, &node).await;
    let mut agent = Agent::start(&node, &engine.socket(), &cgroups, &tag, &[]);
    agent.write_manifest("shell.yaml", &pod());
    agent.wait_pod("shell", Duration::from_secs(90), "shell Running", |p| {
        p["status"]["phase"] == "Running" && condition(p, "Ready")
    });
    let kubeconfig = agent.root_dir.join("kubeconfig");
    for (bin, v) in bins.iter().zip(VERSIONS) {
        check(
            &Kubectl::new(&node, bin, &kubeconfig, v).timeout(Duration::from_secs(90)),
            v,
        );
    }
    agent.remove_manifest("shell.yaml");
    agent.wait_gone("shell", Duration::from_secs(60));
    drop(agent);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_rrun_cri() {
    streams(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_containerd() {
    streams(Endpoint::Containerd).await;
}
