//! rrun-kubelet serves ConfigMaps, Secrets and volumes as the kubelet does, through
//! rrun-cri and through containerd 1.6's CRI with runc as the control, on a node of the
//! test's own namespaces.
//!
//! Every env source (value with `$(VAR)` and `$$`, configMapKeyRef, secretKeyRef, fieldRef,
//! resourceFieldRef with a divisor, envFrom with a prefix) and every volume type (emptyDir
//! on disk and as a sized tmpfs, hostPath, configMap with items and modes, secret on a
//! tmpfs, projected, downwardAPI, subPath and subPathExpr) is read back from inside the
//! container by ExecSync. A ConfigMap edited while the pod runs: a reader in the container
//! sees the old file or the new one, never a mix, and the subPath mount and env keep the
//! old value. A Secret's binary, newline-less bytes arrive exactly. A missing key fails the
//! container (CreateContainerConfigError naming the key) until it appears. subPath escapes
//! (a symlink out of the volume, `..`) are refused. The memory emptyDir's limit holds. No
//! Secret value reaches the agent's log or its API. Removing the pods leaves no mount and
//! no pod directory, and the hostPath's file stays.

use std::time::Duration;

use integration_tests::agent::{container_status, Agent};
use integration_tests::cri::{api, Client};
use integration_tests::engines::have;
use integration_tests::kubelet::{start_engine, CgroupRoot, Endpoint, Node, IMAGE, SUBNET_PREFIX};
use integration_tests::Value;

const SECRET: &str = "s3cr3t-XYZZY";
const BIG: usize = 20000;

fn skip_endpoint(ep: Endpoint) -> bool {
    ep == Endpoint::Containerd && !(have("containerd") && have("ctr"))
}

fn objects_yaml(big: char, late_has_key: bool) -> String {
    let fill = big.to_string().repeat(BIG);
    let late = if late_has_key {
        "data: {other: x, needed: arrived}"
    } else {
        "data: {other: x}"
    };
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: settings}}\ndata:\n  greeting: hello\n  app.conf: \"a=1\\n\"\n  big: {fill}\nbinaryData: {{blob: AAEC/w==}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: creds}}\ndata: {{pw: czNjcjN0LVhZWlpZ, bin: AP8KgA==}}\nstringData: {{user: admin}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: tls}}\ntype: kubernetes.io/tls\nstringData: {{tls.crt: CERT, tls.key: KEY}}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: late}}\n{late}\n"
    )
}

fn cfg_pod(hostdir: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: cfg
  labels: {{app: cfg}}
  annotations: {{note: hi}}
spec:
  terminationGracePeriodSeconds: 1
  serviceAccountName: robot
  containers:
  - name: main
    image: {IMAGE}
    imagePullPolicy: Never
    command: [sh, -c, "echo '$(GREETING) $$(GREETING)' > /tmp/cmdline; exec sleep 1000000"]
    resources: {{limits: {{memory: 64Mi}}}}
    envFrom:
    - configMapRef: {{name: settings}}
      prefix: CM_
    - secretRef: {{name: tls}}
    - secretRef: {{name: absent, optional: true}}
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: settings, key: greeting}}}}}}
    - {{name: EXPANDED, value: '$(GREETING)-world-$$(GREETING)-$(NOPE)'}}
    - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: pw}}}}}}
    - {{name: MISSING_OK, valueFrom: {{secretKeyRef: {{name: creds, key: nokey, optional: true}}}}}}
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_NS, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
    - {{name: POD_UID, valueFrom: {{fieldRef: {{fieldPath: metadata.uid}}}}}}
    - {{name: APP, valueFrom: {{fieldRef: {{fieldPath: "metadata.labels['app']"}}}}}}
    - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    - {{name: SA, valueFrom: {{fieldRef: {{fieldPath: spec.serviceAccountName}}}}}}
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: HOST_IP, valueFrom: {{fieldRef: {{fieldPath: status.hostIP}}}}}}
    - {{name: MEM_MI, valueFrom: {{resourceFieldRef: {{resource: limits.memory, divisor: 1Mi}}}}}}
    volumeMounts:
    - {{name: scratch, mountPath: /scratch}}
    - {{name: mem, mountPath: /mem}}
    - {{name: host, mountPath: /host}}
    - {{name: cm, mountPath: /cm}}
    - {{name: cm, mountPath: /greeting, subPath: greeting}}
    - {{name: cm-all, mountPath: /cm-all}}
    - {{name: cm-all, mountPath: /big-pinned, subPath: big}}
    - {{name: secret, mountPath: /secret}}
    - {{name: proj, mountPath: /proj}}
    - {{name: dapi, mountPath: /dapi}}
    - {{name: scratch, mountPath: /per-pod, subPathExpr: '$(POD_NAME)'}}
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
  - {{name: mem, emptyDir: {{medium: Memory, sizeLimit: 1Mi}}}}
  - {{name: host, hostPath: {{path: {hostdir}, type: DirectoryOrCreate}}}}
  - name: cm
    configMap:
      name: settings
      items: [{{key: app.conf, path: conf/app.conf, mode: 0600}}, {{key: greeting, path: greeting}}]
  - {{name: cm-all, configMap: {{name: settings}}}}
  - {{name: secret, secret: {{secretName: creds, defaultMode: 0400}}}}
  - name: proj
    projected:
      sources:
      - configMap: {{name: settings, items: [{{key: greeting, path: g}}]}}
      - secret: {{name: creds, items: [{{key: user, path: u}}]}}
      - downwardAPI: {{items: [{{path: name, fieldRef: {{fieldPath: metadata.name}}}}]}}
  - name: dapi
    downwardAPI:
      items:
      - {{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}
      - {{path: annotations, fieldRef: {{fieldPath: metadata.annotations}}}}
      - {{path: mem, resourceFieldRef: {{containerName: main, resource: limits.memory, divisor: 1Mi}}}}
"#
    )
}

fn simple_pod(name: &str, extra_ctr: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  terminationGracePeriodSeconds: 1\n{extra_spec}  containers:\n  - name: main\n    image: {IMAGE}\n    imagePullPolicy: Never\n    command: [sh, -c, 'exec sleep 1000000']\n{extra_ctr}"
    )
}

fn container_id(p: &Value, c: &str) -> String {
    let id = container_status(p, c).expect("container status")["containerID"]
        .as_str()
        .unwrap_or("")
        .to_string();
    id.split_once("://")
        .map(|(_, i)| i.to_string())
        .unwrap_or(id)
}

async fn exec(socket: &std::path::Path, id: &str, script: &str) -> (i32, Vec<u8>, String) {
    exec_argv(socket, id, &["sh", "-c", script]).await
}

async fn exec_argv(socket: &std::path::Path, id: &str, argv: &[&str]) -> (i32, Vec<u8>, String) {
    let mut c = Client::connect(socket).await.expect("connect to the CRI");
    let r = c
        .runtime
        .exec_sync(api::ExecSyncRequest {
            container_id: id.into(),
            cmd: argv.iter().map(|a| a.to_string()).collect(),
            timeout: 60,
        })
        .await
        .expect("ExecSync")
        .into_inner();
    (
        r.exit_code,
        r.stdout,
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

async fn out(socket: &std::path::Path, id: &str, script: &str) -> String {
    let (code, o, e) = exec(socket, id, script).await;
    assert_eq!(code, 0, "{script}: exit {code}: {e}");
    String::from_utf8_lossy(&o).into_owned()
}

fn waiting(p: &Value, c: &str) -> (String, String) {
    let w = &container_status(p, c)
        .map(|s| s["state"]["waiting"].clone())
        .unwrap_or(Value::Null);
    (
        w["reason"].as_str().unwrap_or("").to_string(),
        w["message"].as_str().unwrap_or("").to_string(),
    )
}

/// Mount points at or below `dir` in the node's mount namespace.
fn node_mounts_under(node: &Node, dir: &std::path::Path) -> Vec<String> {
    let dir = dir.display().to_string();
    std::fs::read_to_string(format!("/proc/{}/mountinfo", node.pid()))
        .expect("the node's mountinfo")
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|m| m.starts_with(&dir))
        .collect()
}

async fn config(ep: Endpoint) {
    if skip_endpoint(ep) {
        return;
    }
    let tag = format!("cfg-{ep:?}").to_lowercase();
    let cgroups = CgroupRoot::new(&format!("agent-{tag}"));
    let node = Node::start();
    let engine = start_engine(ep, &node).await;
    let socket = engine.socket();
    let mut agent = Agent::start(&node, &socket, &cgroups, &tag, &[]);
    let hostdir = node.dir().join("hostpath");
    let escdir = node.dir().join("escvol");
    std::fs::create_dir_all(&escdir).expect("mkdir");
    std::os::unix::fs::symlink("/etc", escdir.join("esc")).expect("symlink");

    agent.write_manifest("objects.yaml", &objects_yaml('A', false));
    agent.write_manifest("cfg.yaml", &cfg_pod(&hostdir.display().to_string()));
    agent.write_manifest(
        "waiter.yaml",
        &simple_pod(
            "waiter",
            "    env:\n    - {name: NEEDED, valueFrom: {configMapKeyRef: {name: late, key: needed}}}\n",
            "",
        ),
    );
    agent.write_manifest(
        "escape.yaml",
        &format!(
            "{}  - name: dots\n    image: {IMAGE}\n    imagePullPolicy: Never\n    command: [sh, -c, 'exec sleep 1000000']\n    volumeMounts: [{{name: v, mountPath: /x, subPath: ../../etc}}]\n",
            simple_pod(
                "escape",
                "    volumeMounts: [{name: v, mountPath: /x, subPath: esc}]\n",
                &format!("  volumes: [{{name: v, hostPath: {{path: {}}}}}]\n", escdir.display()),
            )
        ),
    );
    agent.write_manifest(
        "badsecret.yaml",
        &format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: bad}}\ntype: kubernetes.io/basic-auth\nstringData: {{other: {SECRET}}}\n"),
    );

    let cfg = agent.wait_pod("cfg", Duration::from_secs(90), "cfg Running", |p| {
        p["status"]["phase"] == "Running"
            && container_status(p, "main").is_some_and(|s| s["state"]["running"].is_object())
    });
    let id = container_id(&cfg, "main");

    // Env: every source.
    // `env` run directly: a shell would drop names like `tls.crt`.
    let env = exec_argv(&socket, &id, &["env"]).await;
    assert_eq!(env.0, 0, "{}", env.2);
    let env: String = String::from_utf8_lossy(&env.1)
        .lines()
        .filter(|l| !l.starts_with("CM_big="))
        .map(|l| format!("{l}\n"))
        .collect();
    let has = |kv: &str| env.lines().any(|l| l == kv);
    for kv in [
        "GREETING=hello",
        "EXPANDED=hello-world-$(GREETING)-$(NOPE)",
        &format!("PASSWORD={SECRET}"),
        "POD_NAME=cfg",
        "POD_NS=default",
        "APP=cfg",
        "NODE=rrun-node",
        "SA=robot",
        "MEM_MI=64",
        "CM_greeting=hello",
        "tls.crt=CERT",
    ] {
        assert!(has(kv), "{kv} not in the container's env:\n{env}");
    }
    let uid = cfg["metadata"]["uid"].as_str().unwrap_or("").to_string();
    assert!(has(&format!("POD_UID={uid}")), "{env}");
    let pod_ip = cfg["status"]["podIP"].as_str().unwrap_or("");
    assert!(has(&format!("POD_IP={pod_ip}")), "{env}");
    assert!(
        env.lines()
            .any(|l| l.starts_with("HOST_IP=") && l.len() > 8),
        "{env}"
    );
    assert!(!env.contains("MISSING_OK"), "{env}");
    assert_eq!(
        out(&socket, &id, "cat /tmp/cmdline").await,
        "hello $(GREETING)\n"
    );

    // Volumes, read back.
    let files = out(
        &socket,
        &id,
        "cat /cm/greeting; echo; cat /cm/conf/app.conf; stat -c %a /cm/..data/conf/app.conf; cat /greeting; echo; cat /proj/g /proj/u /proj/name; echo; cat /dapi/labels; echo; cat /dapi/annotations; echo; cat /dapi/mem; echo; stat -c %a /secret/..data/pw; readlink /cm/..data",
    )
    .await;
    let lines: Vec<&str> = files.lines().collect();
    assert_eq!(
        &lines[..9],
        &[
            "hello",
            "a=1",
            "600",
            "hello",
            "helloadmincfg",
            "app=\"cfg\"",
            "note=\"hi\"",
            "64",
            "400"
        ],
        "{files}"
    );
    assert!(lines[9].starts_with("..2"), "..data -> {}", lines[9]);
    // The Secret's bytes, exactly (binary, no newline added).
    let (code, pw, _) = exec(&socket, &id, "cat /secret/pw").await;
    assert_eq!((code, pw.as_slice()), (0, SECRET.as_bytes()));
    let (_, bin, _) = exec(&socket, &id, "cat /secret/bin").await;
    assert_eq!(bin, [0x00, 0xff, 0x0a, 0x80]);
    let (_, blob, _) = exec(&socket, &id, "cat /cm-all/blob").await;
    assert_eq!(blob, [0, 1, 2, 255]);
    // Secret, projected and memory volumes are tmpfs.
    let mounts = out(&socket, &id, "cat /proc/mounts").await;
    for m in ["/secret", "/proj", "/mem"] {
        assert!(
            mounts
                .lines()
                .any(|l| l.split(' ').nth(1) == Some(m) && l.starts_with("tmpfs ")),
            "{m} is not a tmpfs:\n{mounts}"
        );
    }
    // emptyDir, hostPath and subPathExpr are writable and shared with the node.
    out(
        &socket,
        &id,
        "echo disk > /scratch/f && echo node > /host/f && echo mine > /per-pod/f",
    )
    .await;
    let voldir = agent.root_dir.join(format!("pods/{uid}/volumes"));
    assert_eq!(
        std::fs::read_to_string(voldir.join("kubernetes.io~empty-dir/scratch/cfg/f"))
            .ok()
            .as_deref(),
        Some("mine\n")
    );
    assert_eq!(
        std::fs::read_to_string(hostdir.join("f")).ok().as_deref(),
        Some("node\n")
    );
    // The memory emptyDir's 1Mi limit holds.
    let (code, _, _) = exec(&socket, &id, "dd if=/dev/zero of=/mem/f bs=1024 count=2048").await;
    assert_ne!(
        code, 0,
        "writing 2 MiB into a 1Mi memory emptyDir succeeded"
    );
    let size = out(&socket, &id, "wc -c < /mem/f").await;
    assert!(
        size.trim().parse::<u64>().unwrap_or(u64::MAX) <= 1 << 20,
        "{size}"
    );

    // A missing key fails the container, naming the key, until the key arrives; subPath
    // escapes are refused.
    let w = agent.wait_pod(
        "waiter",
        Duration::from_secs(60),
        "waiter's config error",
        |p| waiting(p, "main").0 == "CreateContainerConfigError",
    );
    assert_eq!(
        waiting(&w, "main").1,
        "couldn't find key needed in ConfigMap default/late"
    );
    let e = agent.wait_pod("escape", Duration::from_secs(60), "escape refused", |p| {
        waiting(p, "main").0 == "CreateContainerConfigError"
            && waiting(p, "dots").0 == "CreateContainerConfigError"
    });
    assert!(
        waiting(&e, "main").1.contains("not within volume path"),
        "{e}"
    );
    assert!(
        waiting(&e, "dots").1.contains("must not contain '..'"),
        "{e}"
    );

    // Live update: a reader loops over the big file while the ConfigMap changes; every read
    // is all old or all new.
    let reader = {
        let socket = socket.clone();
        let id = id.clone();
        tokio::spawn(async move {
            exec(
                &socket,
                &id,
                "end=$(($(date +%s) + 8)); while [ $(date +%s) -lt $end ]; do x=$(cat /cm-all/big); y=$(printf %s \"$x\" | tr -d A); echo ${#x},${#y}; done",
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    agent.write_manifest("objects.yaml", &objects_yaml('B', true));
    let (code, reads, err) = reader.await.expect("the reader");
    assert_eq!(code, 0, "{err}");
    let reads = String::from_utf8_lossy(&reads).into_owned();
    // One read per line: its length, then how many of its bytes are not the old fill.
    let (old, new) = (format!("{BIG},0"), format!("{BIG},{BIG}"));
    assert!(
        reads.lines().all(|l| l == old || l == new),
        "a reader saw a mixed or partial file: {:?}",
        reads
            .lines()
            .filter(|l| *l != old && *l != new)
            .take(3)
            .collect::<Vec<_>>()
    );
    assert!(reads.lines().any(|l| l == old), "no read before the edit");
    assert!(
        reads.lines().any(|l| l == new),
        "the edit did not reach the file within 6 s"
    );
    // subPath and env keep the old content.
    let pinned = out(
        &socket,
        &id,
        "tr -d A < /big-pinned | wc -c; echo $CM_big | tr -d A | wc -c",
    )
    .await;
    assert_eq!(
        pinned.split_whitespace().collect::<Vec<_>>(),
        ["0", "1"],
        "{pinned}"
    );
    // The key arrived: the waiting pod starts with it.
    let w = agent.wait_pod("waiter", Duration::from_secs(60), "waiter Running", |p| {
        container_status(p, "main").is_some_and(|s| s["state"]["running"].is_object())
    });
    let wid = container_id(&w, "main");
    assert_eq!(out(&socket, &wid, "echo $NEEDED").await, "arrived\n");

    // The invalid Secret is reported without its content; no Secret value anywhere.
    let log = agent.log_text();
    assert!(
        log.contains("badsecret.yaml: document 0: data[username]: Required value"),
        "{}",
        agent.log_tail(30)
    );
    let yaml = agent.cli(&["get", "pods", "-o", "yaml"]).stdout;
    let describe = agent.cli(&["describe", "pod", "cfg"]).stdout;
    let (_, pods) = agent.get("/pods").expect("/pods");
    for (what, text) in [
        ("log", &log),
        ("get -o yaml", &yaml),
        ("describe", &describe),
        ("/pods", &pods),
    ] {
        assert!(
            !text.contains(SECRET),
            "the Secret's value is in the agent's {what}"
        );
    }

    // Removed: no mount and no pod directory left; the hostPath stays.
    for f in ["cfg.yaml", "waiter.yaml", "escape.yaml"] {
        agent.remove_manifest(f);
    }
    for name in ["cfg", "waiter", "escape"] {
        agent.wait_gone(name, Duration::from_secs(90));
    }
    assert_eq!(
        node_mounts_under(&node, &agent.root_dir),
        Vec::<String>::new()
    );
    let left: Vec<_> = std::fs::read_dir(agent.root_dir.join("pods"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "pod directories left: {left:?}");
    assert_eq!(
        std::fs::read_to_string(hostdir.join("f")).ok().as_deref(),
        Some("node\n")
    );
    assert!(escdir.join("esc").symlink_metadata().is_ok());
    agent.assert_alive();
    drop(agent);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_rrun_cri() {
    config(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_containerd() {
    config(Endpoint::Containerd).await;
}

const FROZEN: &str = "fr0zen-PLUGH";

fn frozen_yaml(v: &str, secret: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: frozen}}\nimmutable: true\ndata: {{v: {v}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: frozen-s}}\nimmutable: true\nstringData: {{k: {secret}}}\n")
}

fn b64url(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .expect("base64url")
}

/// Verifies an ES256 JWT with the node's public key (`sa.pub`, SPKI PEM) and returns its
/// claims.
fn verify_token(token: &str, public_pem: &str) -> Value {
    use base64::Engine;
    let parts: Vec<&str> = token.trim().split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWT: {token}");
    let header: Value = serde_json::from_slice(&b64url(parts[0])).expect("JWT header");
    assert_eq!(header["alg"], "ES256", "{header}");
    let der = base64::engine::general_purpose::STANDARD
        .decode(
            public_pem
                .lines()
                .filter(|l| !l.starts_with("-----"))
                .collect::<String>(),
        )
        .expect("sa.pub");
    // A P-256 SubjectPublicKeyInfo ends with the 65-byte uncompressed point.
    let point = &der[der.len() - 65..];
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point)
        .verify(
            format!("{}.{}", parts[0], parts[1]).as_bytes(),
            &b64url(parts[2]),
        )
        .expect("the token's signature verifies with the node's public key");
    serde_json::from_slice(&b64url(parts[1])).expect("JWT claims")
}

/// Immutable objects refuse edits, across a kill -9 of the agent too; projected service
/// account tokens are signed by the node and rotate; `get`/`describe` of ConfigMaps and
/// Secrets print what kubectl prints, never a Secret's value.
async fn immutable_and_tokens(ep: Endpoint) {
    if skip_endpoint(ep) {
        return;
    }
    let tag = format!("imm-{ep:?}").to_lowercase();
    let cgroups = CgroupRoot::new(&format!("agent-{tag}"));
    let node = Node::start();
    let engine = start_engine(ep, &node).await;
    let socket = engine.socket();
    let mut agent = Agent::start(
        &node,
        &socket,
        &cgroups,
        &tag,
        &["--service-account-token-min-expiration=10s".into()],
    );
    agent.write_manifest("frozen.yaml", &frozen_yaml("one", FROZEN));
    agent.write_manifest(
        "imm.yaml",
        &simple_pod(
            "imm",
            "    volumeMounts:\n    - {name: cm, mountPath: /cm}\n    - {name: s, mountPath: /s}\n    - {name: tok, mountPath: /var/run/secrets/tokens}\n",
            "  serviceAccountName: robot\n  volumes:\n  - {name: cm, configMap: {name: frozen}}\n  - {name: s, secret: {secretName: frozen-s}}\n  - name: tok\n    projected:\n      sources:\n      - serviceAccountToken: {audience: vault, expirationSeconds: 10, path: vault-token}\n      - serviceAccountToken: {path: api-token}\n",
        ),
    );
    let p = agent.wait_pod("imm", Duration::from_secs(90), "imm Running", |p| {
        container_status(p, "main").is_some_and(|s| s["state"]["running"].is_object())
    });
    let id = container_id(&p, "main");
    let uid = p["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let read = "cat /cm/v; echo; cat /s/k";
    assert_eq!(out(&socket, &id, read).await, format!("one\n{FROZEN}"));

    // The token: signed by the node's key, with a bound token's claims.
    let public = std::fs::read_to_string(agent.root_dir.join("sa.pub")).expect("sa.pub");
    let key_mode = std::fs::metadata(agent.root_dir.join("sa.key"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("sa.key");
    assert_eq!(key_mode, 0o600);
    let first = out(&socket, &id, "cat /var/run/secrets/tokens/vault-token").await;
    let c = verify_token(&first, &public);
    assert_eq!(c["iss"], "https://kubernetes.default.svc.cluster.local");
    assert_eq!(c["sub"], "system:serviceaccount:default:robot");
    assert_eq!(c["aud"], serde_json::json!(["vault"]));
    let (iat, exp, nbf) = (c["iat"].as_i64(), c["exp"].as_i64(), c["nbf"].as_i64());
    assert_eq!(exp.zip(iat).map(|(e, i)| e - i), Some(10), "{c}");
    assert_eq!(nbf, iat, "{c}");
    let k = &c["kubernetes.io"];
    assert_eq!(k["namespace"], "default");
    assert_eq!(k["pod"]["name"], "imm");
    assert_eq!(k["pod"]["uid"], uid.as_str());
    assert_eq!(k["serviceaccount"]["name"], "robot");
    assert_eq!(k["node"]["name"], "rrun-node");
    let api = verify_token(
        &out(&socket, &id, "cat /var/run/secrets/tokens/api-token").await,
        &public,
    );
    assert_eq!(
        api["aud"],
        serde_json::json!(["https://kubernetes.default.svc.cluster.local"])
    );
    assert_eq!(
        api["exp"]
            .as_i64()
            .zip(api["iat"].as_i64())
            .map(|(e, i)| e - i),
        Some(3600)
    );

    // Immutable: an edit is refused as the API server words it; the pod keeps the old
    // content, and so does the API.
    agent.write_manifest("frozen.yaml", &frozen_yaml("two", "other-secret"));
    let refused = |log: &str| {
        log.contains("ConfigMap \"frozen\" is invalid: data: Forbidden: field is immutable when `immutable` is set")
            && log.contains("Secret \"frozen-s\" is invalid: data: Forbidden: field is immutable when `immutable` is set")
    };
    let deadline = std::time::Instant::now() + integration_tests::scaled(Duration::from_secs(30));
    while !refused(&agent.log_text()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the edit was not refused:\n{}",
            agent.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cm = agent.cli(&["get", "cm", "frozen", "-o", "json"]).stdout;
    let cm: Value = serde_json::from_str(&cm).expect("get cm -o json");
    assert_eq!(cm["data"]["v"], "one");
    assert_eq!(cm["immutable"], true);
    assert_eq!(out(&socket, &id, read).await, format!("one\n{FROZEN}"));

    // kill -9, another edit, a restart: still refused, from what the agent pinned.
    let pin = agent
        .root_dir
        .join("immutable/secret_default_frozen-s.json");
    let pin_mode = std::fs::metadata(&pin)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("the Secret's pin");
    assert_eq!(pin_mode, 0o600);
    agent.kill9();
    agent.write_manifest("frozen.yaml", &frozen_yaml("three", "third-secret"));
    agent.restart();
    let since_restart = |log: &str| {
        log.rsplit_once("---- restart")
            .map(|(_, after)| after.to_string())
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + integration_tests::scaled(Duration::from_secs(30));
    while !refused(&since_restart(&agent.log_text())) {
        assert!(
            std::time::Instant::now() < deadline,
            "the edit was not refused after the restart:\n{}",
            agent.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cm: Value = serde_json::from_str(&agent.cli(&["get", "cm", "frozen", "-o", "json"]).stdout)
        .expect("get cm -o json");
    assert_eq!(cm["data"]["v"], "one");
    let p = agent.wait_pod("imm", Duration::from_secs(60), "imm adopted", |p| {
        container_status(p, "main").is_some_and(|s| s["state"]["running"].is_object())
    });
    assert_eq!(container_id(&p, "main"), id, "the pod was not adopted");
    assert_eq!(out(&socket, &id, read).await, format!("one\n{FROZEN}"));

    // The token rotates before 80% of its 10 s: a new signed token with a later iat.
    let deadline = std::time::Instant::now() + integration_tests::scaled(Duration::from_secs(60));
    let second = loop {
        let t = out(&socket, &id, "cat /var/run/secrets/tokens/vault-token").await;
        if t != first {
            break t;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the 10 s token was not rotated:\n{}",
            agent.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let c2 = verify_token(&second, &public);
    assert!(c2["iat"].as_i64() > iat, "{c2}");
    assert_eq!(c2["kubernetes.io"]["pod"]["uid"], uid.as_str());

    // get and describe, as kubectl prints them.
    let cms = agent.cli(&["get", "configmaps"]).stdout;
    let lines: Vec<&str> = cms.lines().collect();
    assert_eq!(lines.first().copied(), Some("NAME     DATA   AGE"), "{cms}");
    assert!(
        lines.iter().any(|l| l.starts_with("frozen   1      ")),
        "{cms}"
    );
    let secrets = agent.cli(&["get", "secret"]).stdout;
    let lines: Vec<&str> = secrets.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some("NAME       TYPE     DATA   AGE"),
        "{secrets}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("frozen-s   Opaque   1      ")),
        "{secrets}"
    );
    assert_eq!(
        agent.cli(&["get", "cm", "-o", "name"]).stdout,
        "configmap/frozen\n"
    );
    assert_eq!(
        agent
            .cli(&["get", "secrets", "frozen-s", "-o", "name"])
            .stdout,
        "secret/frozen-s\n"
    );
    let yaml = agent
        .cli(&["get", "secret", "frozen-s", "-o", "yaml"])
        .stdout;
    assert!(yaml.contains("  k: ZnIwemVuLVBMVUdI\n"), "{yaml}");
    let desc = agent.cli(&["describe", "secret", "frozen-s"]).stdout;
    assert!(
        desc.starts_with("Name:         frozen-s\nNamespace:    default\n")
            && desc.contains("\nType:  Opaque\n\nData\n====\nk:  12 bytes\n"),
        "{desc}"
    );
    let desc = agent.cli(&["describe", "cm", "frozen"]).stdout;
    assert!(desc.contains("\nData\n====\nv:\n----\none\n\n"), "{desc}");
    assert!(desc.ends_with("Events:  <none>\n"), "{desc}");
    let log = agent.log_text();
    for s in [FROZEN, "other-secret", "third-secret", &first, &second] {
        assert!(!log.contains(s), "a Secret or token is in the agent's log");
        assert!(!yaml.contains(s) && !desc.contains(s));
    }

    agent.remove_manifest("imm.yaml");
    agent.wait_gone("imm", Duration::from_secs(90));
    agent.remove_manifest("frozen.yaml");
    let deadline = std::time::Instant::now() + integration_tests::scaled(Duration::from_secs(30));
    while pin.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the pin stayed after the delete"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        node_mounts_under(&node, &agent.root_dir),
        Vec::<String>::new()
    );
    agent.assert_alive();
    drop(agent);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_and_tokens_rrun_cri() {
    immutable_and_tokens(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn immutable_and_tokens_containerd() {
    immutable_and_tokens(Endpoint::Containerd).await;
}

/// The API's port on the node (its own network namespace: any free port does).
const API_PORT: u16 = 6443;
const SA_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The `sleep` argument of the service account test's main container: one per endpoint, as
/// the two tests may run at once.
fn sleep_arg(ep: Endpoint) -> &'static str {
    match ep {
        Endpoint::RrunCri => "1000123",
        Endpoint::Containerd => "1000124",
    }
}

/// The host pid of the one `sleep ARG` process.
fn pid_of_sleep(arg: &str) -> u32 {
    let want = format!("sleep\0{arg}\0");
    let pids: Vec<u32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want.as_bytes())
        })
        .collect();
    assert_eq!(pids.len(), 1, "sleep {arg} processes: {pids:?}");
    pids[0]
}

/// The default `kube-api-access-*` volume, as the ServiceAccount admission plugin adds it:
/// token, CA and namespace read from inside the container, the token's claims, a request
/// to the agent's API with it from inside the pod (discovery answered, pods forbidden, as
/// RBAC's default roles have it); a container with its own mount there keeps it; a pod
/// that opts out has no mount.
async fn service_account_token(ep: Endpoint) {
    if skip_endpoint(ep) {
        return;
    }
    let tag = format!("sa-{ep:?}").to_lowercase();
    let cgroups = CgroupRoot::new(&format!("agent-{tag}"));
    let node = Node::start();
    let engine = start_engine(ep, &node).await;
    let socket = engine.socket();
    let mut agent = Agent::start(
        &node,
        &socket,
        &cgroups,
        &tag,
        &[format!("--api-address=0.0.0.0:{API_PORT}")],
    );
    agent.write_manifest(
        "sa.yaml",
        &format!(
            "{}  - name: own\n    image: {IMAGE}\n    imagePullPolicy: Never\n    command: [sh, -c, 'exec sleep 1000000']\n    volumeMounts: [{{name: mine, mountPath: {SA_PATH}}}]\n  volumes: [{{name: mine, emptyDir: {{}}}}]\n",
            simple_pod("sa", "", "")
                .replace("sleep 1000000", &format!("sleep {}", sleep_arg(ep)))
        ),
    );
    agent.write_manifest(
        "optout.yaml",
        &simple_pod("optout", "", "  automountServiceAccountToken: false\n"),
    );
    let running = |p: &Value| {
        ["main", "own"]
            .iter()
            .all(|c| container_status(p, c).is_some_and(|s| s["state"]["running"].is_object()))
    };
    let p = agent.wait_pod("sa", Duration::from_secs(90), "sa Running", running);
    let id = container_id(&p, "main");
    let own = container_id(&p, "own");

    // The pod as the API server would have admitted it.
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    let vol = p["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kube-api-access-"))
        })
        .cloned()
        .unwrap_or_else(|| panic!("no kube-api-access volume: {p}"));
    let sources = &vol["projected"]["sources"];
    assert_eq!(sources[0]["serviceAccountToken"]["expirationSeconds"], 3607);
    assert_eq!(sources[1]["configMap"]["name"], "kube-root-ca.crt");
    assert_eq!(vol["projected"]["defaultMode"], 420);

    // The three files, read-only, from inside the container.
    let ns = out(&socket, &id, &format!("cat {SA_PATH}/namespace")).await;
    assert_eq!(ns, "default");
    let ca = out(&socket, &id, &format!("cat {SA_PATH}/ca.crt")).await;
    let node_ca = std::fs::read_to_string(agent.root_dir.join("pki/ca.crt")).expect("the CA");
    assert_eq!(ca, node_ca, "ca.crt is not the API's CA");
    let (code, _, _) = exec(&socket, &id, &format!("touch {SA_PATH}/x")).await;
    assert_ne!(code, 0, "the service account volume is writable");
    let token = out(&socket, &id, &format!("cat {SA_PATH}/token")).await;
    let public = std::fs::read_to_string(agent.root_dir.join("sa.pub")).expect("sa.pub");
    let c = verify_token(&token, &public);
    assert_eq!(c["sub"], "system:serviceaccount:default:default");
    assert_eq!(
        c["aud"],
        serde_json::json!(["https://kubernetes.default.svc.cluster.local"])
    );
    assert_eq!(
        c["exp"].as_i64().zip(c["iat"].as_i64()).map(|(e, i)| e - i),
        Some(3607),
        "{c}"
    );
    assert_eq!(c["kubernetes.io"]["pod"]["name"], "sa");
    // A container with its own mount there keeps it.
    let mine = out(&socket, &own, &format!("ls -A {SA_PATH}")).await;
    assert_eq!(mine, "", "the emptyDir mounted there got the token");

    // The agent's API, from the pod's network namespace, with the token and ca.crt the pod
    // got: curl, because busybox's wget shares no TLS cipher suite with rustls (handshake
    // failure). The serving certificate names localhost: `--resolve` sends that name to
    // the pod's gateway, the node.
    let netns = format!("/proc/{}/ns/net", pid_of_sleep(sleep_arg(ep)));
    let ca_file = node.dir().join("pod-ca.crt");
    std::fs::write(&ca_file, &ca).expect("writing ca.crt");
    let curl = |token: &str, path: &str| {
        let o = std::process::Command::new("nsenter")
            .arg(format!("--net={netns}"))
            .args(["--", "curl", "-sS", "--max-time", "60", "--cacert"])
            .arg(&ca_file)
            .arg("--resolve")
            .arg(format!("localhost:{API_PORT}:{SUBNET_PREFIX}1"))
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", token.trim()))
            .arg("-w")
            .arg("\n%{http_code}")
            .arg(format!("https://localhost:{API_PORT}{path}"))
            .output()
            .expect("nsenter curl");
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success(),
            "curl {path}: {text}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (code.to_string(), body.to_string())
    };
    let (code, body) = curl(&token, "/api");
    assert_eq!(code, "200", "{body}");
    let versions: Value = serde_json::from_str(&body).expect("/api JSON");
    assert_eq!(versions["kind"], "APIVersions");
    let (code, body) = curl(&token, "/api/v1/namespaces/default/pods");
    assert_eq!(code, "403", "{body}");
    let status: Value = serde_json::from_str(&body).expect("Status JSON");
    assert_eq!(
        status["message"],
        "pods is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
    );
    let (code, _) = curl("nope", "/api");
    assert_eq!(code, "401");

    // Opted out: no volume, no mount.
    let p = agent.wait_pod("optout", Duration::from_secs(90), "optout Running", |p| {
        container_status(p, "main").is_some_and(|s| s["state"]["running"].is_object())
    });
    assert!(
        !p["spec"].to_string().contains("kube-api-access-"),
        "{}",
        p["spec"]
    );
    let oid = container_id(&p, "main");
    let mounts = out(&socket, &oid, "cat /proc/mounts").await;
    assert!(!mounts.contains("serviceaccount"), "{mounts}");
    let (code, _, _) = exec(&socket, &oid, &format!("ls {SA_PATH}")).await;
    assert_ne!(code, 0, "{SA_PATH} exists in the opted-out pod");

    // The token is in no log.
    assert!(!agent.log_text().contains(token.trim()));
    for f in ["sa.yaml", "optout.yaml"] {
        agent.remove_manifest(f);
    }
    for name in ["sa", "optout"] {
        agent.wait_gone(name, Duration::from_secs(90));
    }
    assert_eq!(
        node_mounts_under(&node, &agent.root_dir),
        Vec::<String>::new()
    );
    agent.assert_alive();
    drop(agent);
    drop(engine);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_token_rrun_cri() {
    service_account_token(Endpoint::RrunCri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_token_containerd() {
    service_account_token(Endpoint::Containerd).await;
}
