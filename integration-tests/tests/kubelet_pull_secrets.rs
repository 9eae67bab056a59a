//! `imagePullSecrets` end to end: rrun-kubelet pulls a private image from a real registry
//! (Debian's `docker-registry` with htpasswd basic auth, filled by `skopeo`) through rrun-cri
//! and through containerd 1.6's CRI (the control), with the credentials of the pod's
//! `kubernetes.io/dockerconfigjson` and legacy `kubernetes.io/dockercfg` Secrets.
//!
//! The registry listens on 127.0.0.1 of the node's network namespace, where the CRI server
//! (and so its pulls) runs; both endpoints speak plain HTTP to a loopback registry
//! (containerd's CRI picks `http` for 127.0.0.1 by itself).
//!
//! A pod whose pull Secret does not exist yet, and one whose Secret has a wrong password,
//! wait in ErrImagePull / ImagePullBackOff with the registry's answer in the status message
//! and a Failed event, and nothing of the image reaches the store; once the Secret appears
//! the first pod runs from the private image. The password never shows in the agent's log,
//! its API (pods, events) or the files under its root dir.

use std::path::Path;
use std::time::Duration;

use integration_tests::agent::{container_status, Agent};
use integration_tests::cri::{api, Client, LayerSpec};
use integration_tests::engines::have;
use integration_tests::kubelet::{start_engine, CgroupRoot, Endpoint, Engine, Node};
use integration_tests::registry::{tools_present, Registry, RegistryOptions};
use integration_tests::Value;

const USER: &str = "puller";
const PASSWORD: &str = "pu11-S3cret-QUUX";
const WRONG: &str = "wr0ng-Pa55-FROB";

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A `kubernetes.io/dockerconfigjson` Secret for `host`, the credentials as docker's `auth`.
fn dockerconfigjson(name: &str, host: &str, password: &str) -> String {
    let cfg = serde_json::json!({
        "auths": { host: { "auth": b64(&format!("{USER}:{password}")) } }
    });
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/dockerconfigjson\ndata: {{.dockerconfigjson: {}}}\n",
        b64(&cfg.to_string())
    )
}

/// A legacy `kubernetes.io/dockercfg` Secret for `host`, with username and password.
fn dockercfg(name: &str, host: &str, password: &str) -> String {
    let cfg = serde_json::json!({
        format!("http://{host}"): { "username": USER, "password": password }
    });
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/dockercfg\ndata: {{.dockercfg: {}}}\n",
        b64(&cfg.to_string())
    )
}

/// A pod of the private image (always pulled, so that every pod's own credentials are
/// what the pull uses) with the pull Secret `secret`.
fn pod(name: &str, image: &str, secret: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  imagePullSecrets: [{{name: {secret}}}]\n  containers:\n  - name: main\n    image: {image}\n    imagePullPolicy: Always\n    command: [sh, -c, 'exec sleep 1000000']\n"
    )
}

fn waiting(p: &Value) -> (String, String) {
    let w = container_status(p, "main")
        .map(|s| s["state"]["waiting"].clone())
        .unwrap_or(Value::Null);
    (
        w["reason"].as_str().unwrap_or("").to_string(),
        w["message"].as_str().unwrap_or("").to_string(),
    )
}

fn pull_failed(p: &Value) -> bool {
    matches!(waiting(p).0.as_str(), "ErrImagePull" | "ImagePullBackOff")
}

/// The registry's refusal as each endpoint words it: rrun-cri's Unauthenticated quoting
/// the registry, containerd's `401 Unauthorized`.
fn names_refusal(msg: &str) -> bool {
    let m = msg.to_lowercase();
    m.contains("401") || m.contains("unauthorized") || m.contains("authentication required")
}

fn running(p: &Value) -> bool {
    container_status(p, "main").is_some_and(|s| s["state"]["running"].is_object())
}

/// Paths under `dir` whose name holds one of `needles` (blob digests' hex).
fn paths_naming(dir: &Path, needles: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if needles.iter().any(|n| name.contains(n.as_str())) {
                out.push(p.display().to_string());
            }
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out
}

/// Files under `dir` (not below a mount point: the pods' tmpfs volumes are theirs) whose
/// bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(p),
                Ok(t) if t.is_file() => {
                    let found = std::fs::read(&p)
                        .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle));
                    if found {
                        out.push(p.display().to_string());
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// `/etc/marker` of the pod's container, read by ExecSync: the private image's own file.
async fn cat_marker(socket: &Path, p: &Value) -> String {
    let id = container_status(p, "main").expect("container status")["containerID"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let id = id
        .split_once("://")
        .map(|(_, i)| i.to_string())
        .unwrap_or(id);
    let mut c = Client::connect(socket).await.expect("connect to the CRI");
    let r = c
        .runtime
        .exec_sync(api::ExecSyncRequest {
            container_id: id,
            cmd: vec!["cat".into(), "/etc/marker".into()],
            timeout: 60,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    assert_eq!(r.exit_code, 0, "{}", String::from_utf8_lossy(&r.stderr));
    String::from_utf8_lossy(&r.stdout).into_owned()
}

async fn image_present(socket: &Path, image: &str) -> bool {
    let mut c = Client::connect(socket).await.expect("connect to the CRI");
    c.image
        .image_status(api::ImageStatusRequest {
            image: Some(api::ImageSpec {
                image: image.into(),
                ..Default::default()
            }),
            verbose: false,
        })
        .await
        .expect("ImageStatus")
        .into_inner()
        .image
        .is_some()
}

async fn pull_secrets(ep: Endpoint) {
    if ep == Endpoint::Containerd && !(have("containerd") && have("ctr")) {
        return;
    }
    if !tools_present() {
        return;
    }
    let tag = format!("pullsec-{ep:?}").to_lowercase();
    let cgroups = CgroupRoot::new(&format!("agent-{tag}"));
    let node = Node::start();
    let reg = Registry::start(RegistryOptions {
        credentials: Some((USER.into(), PASSWORD.into())),
        wrap: node.wrap(),
        ..Default::default()
    });
    // The fixtures' busybox (as the endpoint's IMAGE has it) and a marker layer of this
    // test's own: its blobs, config and manifest are this image's only.
    let written = reg.push(
        &integration_tests::cri::FixtureImage {
            extra_layers: vec![LayerSpec {
                files: vec![("etc/marker".into(), b"private-image\n".to_vec(), 0o644)],
                ..Default::default()
            }],
            ..Default::default()
        },
        "rrun/private:1",
    );
    let image = format!("{}/rrun/private:1", reg.host());
    let hex = |d: &str| d.trim_start_matches("sha256:").to_string();
    let own_blobs: Vec<String> = [
        written.manifest_digest.clone(),
        written.id.clone(),
        written.layer_digests.last().cloned().unwrap_or_default(),
    ]
    .iter()
    .map(|d| hex(d))
    .collect();

    let engine = start_engine(ep, &node).await;
    let socket = engine.socket();
    let store: &Path = match &engine {
        Engine::Containerd(c) => &c.dir,
        Engine::RrunCri(s) => s.dir(),
    };
    let mut agent = Agent::start(
        &node,
        &socket,
        &cgroups,
        &tag,
        &["--backoff-base=1s".into(), "--backoff-cap=4s".into()],
    );

    // No Secret yet, and a Secret with a wrong password: the pulls are refused.
    agent.write_manifest("wrong.yaml", &dockerconfigjson("wrong", &reg.host(), WRONG));
    agent.write_manifest("nosecret.yaml", &pod("nosecret", &image, "regcred"));
    agent.write_manifest("wrongpw.yaml", &pod("wrongpw", &image, "wrong"));
    for name in ["nosecret", "wrongpw"] {
        let p = agent.wait_pod(name, Duration::from_secs(60), "a refused pull", |p| {
            pull_failed(p) && names_refusal(&waiting(p).1)
        });
        let (_, msg) = waiting(&p);
        assert!(msg.contains(&image), "{name}: {msg}");
        // The back-off follows the failed pull, as the kubelet's does.
        agent.wait_pod(name, Duration::from_secs(60), "ImagePullBackOff", |p| {
            waiting(p).0 == "ImagePullBackOff"
        });
        let (code, events) = agent
            .get(&format!(
                "/api/v1/namespaces/default/events?fieldSelector=involvedObject.name={name}"
            ))
            .expect("events");
        assert_eq!(code, 200, "{events}");
        let events: Value = serde_json::from_str(&events).expect("events JSON");
        let failed: Vec<&Value> = events["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["reason"] == "Failed" && e["type"] == "Warning")
            .collect();
        assert!(
            failed.iter().any(|e| {
                let m = e["message"].as_str().unwrap_or("");
                m.starts_with(&format!("Failed to pull image \"{image}\": ")) && names_refusal(m)
            }),
            "{name}: no Failed event with the registry's answer: {events}"
        );
    }
    assert!(
        !image_present(&socket, &image).await,
        "a refused pull left the image"
    );
    let left = paths_naming(store, &own_blobs);
    assert!(
        left.is_empty(),
        "refused pulls left blobs of the image: {left:?}"
    );

    // The Secret appears: the pod's next pull (after its back-off) has the credentials.
    agent.write_manifest(
        "regcred.yaml",
        &dockerconfigjson("regcred", &reg.host(), PASSWORD),
    );
    agent.write_manifest("legacy.yaml", &dockercfg("legacy", &reg.host(), PASSWORD));
    agent.write_manifest("oldstyle.yaml", &pod("oldstyle", &image, "legacy"));
    for name in ["nosecret", "oldstyle"] {
        let p = agent.wait_pod(name, Duration::from_secs(90), "Running", running);
        let marker = cat_marker(&socket, &p).await;
        assert_eq!(marker, "private-image\n", "{name}");
    }
    assert!(image_present(&socket, &image).await);
    // Each pod pulled with its own Secret: the wrong password still fails, image or not.
    let p = agent.pod("wrongpw").expect("wrongpw");
    assert!(pull_failed(&p) && !running(&p), "{p}");
    // (GET from rrun-cri, HEAD then GET by digest from containerd.)
    assert!(
        reg.log_text()
            .contains("/v2/rrun/private/manifests/1 HTTP/1.1\" 200 "),
        "the registry served no pull"
    );

    // No password anywhere the agent writes or shows.
    let (_, pods) = agent.get("/pods").expect("/pods");
    let (_, events) = agent
        .get("/api/v1/namespaces/default/events")
        .expect("events");
    let yaml = agent.cli(&["get", "pods", "-o", "yaml"]).stdout;
    let log = agent.log_text();
    for pw in [PASSWORD, WRONG] {
        for (what, text) in [
            ("log", &log),
            ("/pods", &pods),
            ("events", &events),
            ("get -o yaml", &yaml),
        ] {
            assert!(!text.contains(pw), "a password is in the agent's {what}");
        }
        let files = files_containing(&agent.root_dir, pw.as_bytes());
        assert!(
            files.is_empty(),
            "a password is in the agent's files: {files:?}"
        );
    }

    for f in ["nosecret.yaml", "wrongpw.yaml", "oldstyle.yaml"] {
        agent.remove_manifest(f);
    }
    for name in ["nosecret", "wrongpw", "oldstyle"] {
        agent.wait_gone(name, Duration::from_secs(90));
    }
    agent.assert_alive();
    drop(agent);
    drop(engine);
    drop(reg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_rrun_cri() {
    pull_secrets(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_secrets_containerd() {
    pull_secrets(Endpoint::Containerd).await;
}
