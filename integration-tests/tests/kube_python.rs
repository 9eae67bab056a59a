//! The official Kubernetes Python client (`kubernetes` on PyPI, installed by
//! scripts/setup.sh) against rrun-kubelet's API on an agent over rrun-cri, in a node of the
//! test's own namespaces: a client that shares no code with kubectl. The script
//! (integration-tests/clients/kube_python_client.py) creates a Namespace, ConfigMap, Secret,
//! Deployment and Service with the typed models, reads them back, watches the pods come up,
//! pages through them with `limit` and `continue`, reads a pod's log, rolls the Deployment with a strategic merge patch, gets 409 for a stale
//! replace, 404 for a missing object and 401 without the token, and deletes the namespace,
//! which takes its objects and pods with it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use integration_tests::engines::have;
use integration_tests::kubectl::ApiNode;
use integration_tests::kubelet::IMAGE;
use integration_tests::{scaled, Value};

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/kube_python_client.py")
}

fn python_client_present() -> bool {
    Command::new("python3")
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client() {
    if !python_client_present() || !have("nft") {
        eprintln!("skipped: needs python3's kubernetes client (scripts/setup.sh) and nft");
        return;
    }
    let mut api = ApiNode::start("kpy", "10.97.0.0/24").await;
    let (node, agent) = (&api.node, &mut api.agent);
    let kubeconfig = agent.root_dir.join("kubeconfig");
    let step = scaled(Duration::from_secs(120)).as_secs().to_string();
    let out = node
        .run_net(
            &[
                "python3",
                &script().display().to_string(),
                &kubeconfig.display().to_string(),
                IMAGE,
                &step,
            ],
            scaled(Duration::from_secs(600)),
        )
        .expect("the Python client timed out");
    assert!(
        out.status.success(),
        "the Python client failed ({}):\n{}\n{}\nagent log:\n{}",
        out.status,
        out.stdout,
        out.stderr,
        agent.log_tail(40)
    );
    let last = out.stdout.lines().last().unwrap_or("");
    let seen: Value = serde_json::from_str(last).expect("the client's JSON line");
    assert!(
        seen["gitVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("v1.")),
        "{seen}"
    );
    assert_eq!(seen["staleReplace"][0], 409, "{seen}");
    assert_eq!(seen["staleReplace"][1], "Conflict", "{seen}");
    assert_eq!(seen["missing"][0], 404, "{seen}");
    assert_eq!(seen["missing"][1], "NotFound", "{seen}");
    assert_eq!(
        seen["missing"][2], "configmaps \"nope\" not found",
        "{seen}"
    );
    assert_eq!(seen["secretType"], "Opaque", "{seen}");
    assert_eq!(seen["watchedRunning"], 2, "{seen}");
    assert_eq!(seen["log"], "started v1", "{seen}");
    assert_eq!(seen["selected"], 2, "{seen}");
    assert_eq!(seen["pages"], serde_json::json!([1, null]), "{seen}");
    assert!(
        seen["clusterIP"]
            .as_str()
            .is_some_and(|ip| ip.starts_with("10.97.0.")),
        "{seen}"
    );
    // The patch changed the template: one generation more.
    assert_eq!(seen["generation"], serde_json::json!([1, 2]), "{seen}");
    assert_eq!(seen["noToken"], 401, "{seen}");
    agent.assert_alive();
}
