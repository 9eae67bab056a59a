//! The stock kubectl (1.27 and 1.33) reads rrun-kubelet's OpenAPI v3 documents: `explain`
//! prints the API server's GROUP/KIND/VERSION/FIELD/DESCRIPTION/FIELDS for a field path and
//! the whole tree with `--recursive`. With the schemas served, `apply` and `create -f` with
//! the default `--validate=strict` get the API server's strict decoding error for an unknown
//! field (on a create and on the patch of a second apply), `--validate=warn` gets its
//! warning and the field dropped, and a correct file still applies.
//!
//! The same clients read `/openapi/v2` as gnostic's protobuf: `explain
//! --output=plaintext-openapiv2` prints its field docs, and `apply`/`create` (1.27's fetch
//! it for their validator, before they look at v3) still work with the whole document. Over
//! plain HTTP it is JSON with its definitions, with kube-openapi's ETag (304) and 406.

use std::fs;
use std::path::Path;

use integration_tests::kubectl::{self, ApiNode, Kubectl};
use integration_tests::Value;

/// `lines` appear in `out` in this order (other lines between them).
fn in_order(out: &str, lines: &[&str]) {
    let mut rest = out.lines();
    for want in lines {
        assert!(
            rest.any(|l| l == *want),
            "missing {want:?} (in order) in:\n{out}"
        );
    }
}

fn explain(k: &Kubectl) {
    let out = k.ok(&["explain", "deployment.spec"]);
    in_order(
        &out,
        &[
            "GROUP:      apps",
            "KIND:       Deployment",
            "VERSION:    v1",
            "FIELD: spec <DeploymentSpec>",
            "DESCRIPTION:",
            "    Specification of the desired behavior of the Deployment.",
            "    DeploymentSpec is the specification of the desired behavior of the",
            "FIELDS:",
            "  minReadySeconds\t<integer>",
            "  paused\t<boolean>",
            "  replicas\t<integer>",
            "  selector\t<LabelSelector> -required-",
            "  strategy\t<DeploymentStrategy>",
            "  template\t<PodTemplateSpec> -required-",
        ],
    );

    // The core group has no GROUP line.
    let out = k.ok(&["explain", "pods.spec.containers"]);
    assert!(
        out.starts_with("KIND:       Pod\nVERSION:    v1\n"),
        "{out}"
    );
    in_order(
        &out,
        &[
            "FIELD: containers <[]Container>",
            "DESCRIPTION:",
            "    A single application container that you want to run within a pod.",
            "FIELDS:",
            "  args\t<[]string>",
            "  env\t<[]EnvVar>",
            "  image\t<string>",
            "  name\t<string> -required-",
            "  ports\t<[]ContainerPort>",
            "  resources\t<ResourceRequirements>",
        ],
    );

    let out = k.ok(&["explain", "cronjob", "--recursive"]);
    in_order(
        &out,
        &[
            "GROUP:      batch",
            "KIND:       CronJob",
            "VERSION:    v1",
            "DESCRIPTION:",
            "    CronJob represents the configuration of a single cron job.",
            "FIELDS:",
            "  apiVersion\t<string>",
            "  kind\t<string>",
            "  metadata\t<ObjectMeta>",
            "    labels\t<map[string]string>",
            "  spec\t<CronJobSpec>",
            "    jobTemplate\t<JobTemplateSpec> -required-",
            "      spec\t<JobSpec>",
            "        template\t<PodTemplateSpec> -required-",
            "          spec\t<PodSpec>",
            "            containers\t<[]Container> -required-",
            "    schedule\t<string> -required-",
            "  status\t<CronJobStatus>",
        ],
    );

    let out = k.ok(&["explain", "svc.spec.ports.targetPort"]);
    in_order(
        &out,
        &[
            "KIND:       Service",
            "FIELD: targetPort <IntOrString>",
            "DESCRIPTION:",
            "    Number or name of the port to access on the pods targeted by the service.",
        ],
    );

    let o = k.run(&["explain", "deployment.spec.nosuch"]);
    assert!(!o.status.success());
    assert!(
        o.stderr.contains(r#"field "nosuch" does not exist"#),
        "{}",
        o.stderr
    );
}

fn configmap(name: &str, extra: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n{extra}data: {{a: b}}\n")
}

fn fails_with(k: &Kubectl, args: &[&str], message: &str) {
    let o = k.run(args);
    assert!(!o.status.success(), "kubectl {args:?}: {}", o.stdout);
    assert!(
        o.stderr.contains(message),
        "kubectl {args:?}: want {message:?} in:\n{}",
        o.stderr
    );
}

fn validation(k: &Kubectl, dir: &Path, i: usize) {
    let file = dir.join(format!("v{i}.yaml"));
    let f = file.display().to_string();
    let strict = |kind: &str, field: &str| {
        format!(
            r#"{kind} in version "v1" cannot be handled as a {kind}: strict decoding error: unknown field "{field}""#
        )
    };
    let cm = format!("c{i}");

    // A create with an unknown field: refused, nothing made.
    fs::write(&file, configmap(&cm, "  foo: 1\n")).expect("yaml");
    for verb in ["apply", "create"] {
        let line = format!(
            "Error from server (BadRequest): error when creating \"{f}\": {}",
            strict("ConfigMap", "metadata.foo")
        );
        fails_with(k, &[verb, "-f", &f], &line);
    }
    fails_with(
        k,
        &["get", "cm", &cm],
        &format!("Error from server (NotFound): configmaps \"{cm}\" not found"),
    );

    // Deep in a list, named as the API server names it.
    let deploy = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d{i}}}\nspec:\n  selector: {{matchLabels: {{app: d}}}}\n  template:\n    metadata: {{labels: {{app: d}}}}\n    spec:\n      containers:\n      - {{name: main, image: x}}\n      - {{name: side, image: x, foo: 1}}\n"
    );
    fs::write(&file, deploy).expect("yaml");
    fails_with(
        k,
        &["create", "-f", &f],
        &strict("Deployment", "spec.template.spec.containers[1].foo"),
    );

    // A correct file applies; its second apply with an unknown field (a patch) is refused.
    fs::write(&file, configmap(&cm, "")).expect("yaml");
    assert_eq!(
        k.ok(&["apply", "-f", &f]).trim(),
        format!("configmap/{cm} created")
    );
    // The API server's words for a strategic merge patch: 422, the patch (as Go prints it)
    // invalid.
    fs::write(&file, configmap(&cm, "  foo: 1\n")).expect("yaml");
    fails_with(
        k,
        &["apply", "-f", &f],
        r#"is invalid: patch: Invalid value: "map[metadata:map[annotations:map[kubectl.kubernetes.io/last-applied-configuration:"#,
    );
    fails_with(
        k,
        &["apply", "-f", &f],
        r#"foo:1]]": strict decoding error: unknown field "metadata.foo""#,
    );

    // Warn: the API server's warning, the object made without the field.
    let warned = format!("w{i}");
    fs::write(&file, configmap(&warned, "  foo: 1\n")).expect("yaml");
    let o = k.run(&["apply", "--validate=warn", "-f", &f]);
    assert!(o.status.success(), "{}\n{}", o.stdout, o.stderr);
    assert_eq!(o.stdout.trim(), format!("configmap/{warned} created"));
    assert!(
        o.stderr
            .lines()
            .any(|l| l == r#"Warning: unknown field "metadata.foo""#),
        "{}",
        o.stderr
    );
    let got: Value =
        serde_json::from_str(&k.ok(&["get", "cm", &warned, "-o", "json"])).expect("json");
    assert_eq!(got["data"]["a"], "b", "{got}");
    assert!(got["metadata"].get("foo").is_none(), "{got}");

    k.ok(&["delete", "cm", &cm, &warned]);
}

/// What `/openapi/v2` serves, to kubectl as protobuf and to curl as JSON.
fn openapi_v2(k: &Kubectl, dir: &Path, i: usize) {
    let o = k.sh("{k} -v=8 explain pods.spec.containers --output=plaintext-openapiv2");
    assert!(o.status.success(), "{}\n{}", o.stdout, o.stderr);
    in_order(
        &o.stdout,
        &[
            "KIND:     Pod",
            "VERSION:  v1",
            "RESOURCE: containers <[]Object>",
            "DESCRIPTION:",
            "     A single application container that you want to run within a pod.",
            "FIELDS:",
            "   args\t<[]string>",
            "   image\t<string>",
            "   name\t<string> -required-",
            "     Name of the container specified as a DNS_LABEL. Each container in a pod",
        ],
    );
    // Read from /openapi/v2 as protobuf (no v3 document fetched). The log's headers only
    // (1.27 and 1.33 print them differently; -v=8 dumps the body too).
    let log: Vec<&str> = o
        .stderr
        .lines()
        .take_while(|l| !l.contains("Response Body"))
        .collect();
    let has = |s: &str| log.iter().any(|l| l.contains(s));
    assert!(
        has("https://127.0.0.1:6443/openapi/v2?timeout=32s")
            && has("200 OK")
            && has("Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf")
            && has("Content-Type: application/com.github.proto-openapi.spec.v2.v1.0+protobuf")
            && !o.stderr.contains("/openapi/v3"),
        "{}",
        log.join("\n")
    );
    let o = k.run(&[
        "explain",
        "deploy.spec.strategy",
        "--output=plaintext-openapiv2",
    ]);
    in_order(
        &o.stdout,
        &[
            "KIND:     Deployment",
            "VERSION:  apps/v1",
            "RESOURCE: strategy <Object>",
            "   rollingUpdate\t<Object>",
        ],
    );
    fails_with(
        k,
        &[
            "explain",
            "deploy.spec.nosuch",
            "--output=plaintext-openapiv2",
        ],
        r#"field "nosuch" does not exist"#,
    );

    // An unknown field is still named, a correct file still applies, a server dry run still
    // answers.
    let file = dir.join(format!("v2-{i}.yaml"));
    let f = file.display().to_string();
    let name = format!("v2c{i}");
    fs::write(&file, configmap(&name, "  foo: 1\n")).expect("yaml");
    let o = k.sh(&format!("{{k}} -v=6 apply --validate=strict -f {f}"));
    assert!(!o.status.success(), "{}", o.stdout);
    // kubectl 1.27's validator parses the whole of /openapi/v2 (1.33's reads v3 only).
    if kubectl::VERSIONS[i] == "1.27" {
        assert!(
            o.stderr.contains("/openapi/v2?timeout=32s 200 OK"),
            "{}",
            o.stderr
        );
    }
    assert!(
        o.stderr.contains(r#"unknown field "metadata.foo""#),
        "{}",
        o.stderr
    );
    fs::write(&file, configmap(&name, "")).expect("yaml");
    assert_eq!(
        k.ok(&["create", "--dry-run=server", "-f", &f]).trim(),
        format!("configmap/{name} created (server dry run)")
    );
    assert_eq!(
        k.ok(&["apply", "--validate=strict", "-f", &f]).trim(),
        format!("configmap/{name} created")
    );
    k.ok(&["delete", "cm", &name]);

    // Over HTTP, as kube-openapi's handler answers.
    let curl = |headers: &str| {
        let line = format!(
            "S=$({{k}} config view --raw -o jsonpath='{{.clusters[0].cluster.server}}') && \
             T=$({{k}} config view --raw -o jsonpath='{{.users[0].user.token}}') && \
             curl -sS --cacert {ca} -H \"Authorization: Bearer $T\" {headers} -D- $S/openapi/v2",
            ca = dir.join(format!("ca-{i}.crt")).display(),
        );
        let o = k.sh(&line);
        assert!(o.status.success(), "{line}: {}", o.stderr);
        o.stdout
    };
    k.sh(&format!(
        "{{k}} config view --raw -o jsonpath='{{.clusters[0].cluster.certificate-authority-data}}' | base64 -d > {}",
        dir.join(format!("ca-{i}.crt")).display()
    ));
    let out = curl("-H 'Accept: application/json'");
    let (head, body) = out.split_once("\r\n\r\n").expect("headers");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("content-type: application/json"), "{head}");
    let doc: Value = serde_json::from_str(body).expect("JSON");
    assert_eq!(doc["swagger"], "2.0");
    assert_eq!(
        doc["definitions"]["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"][0]["kind"],
        "Pod"
    );
    let etag = head
        .lines()
        .find_map(|l| l.strip_prefix("etag: "))
        .expect("an ETag");
    let out = curl(&format!(
        "-H 'Accept: application/json' -H 'If-None-Match: {etag}'"
    ));
    assert!(out.starts_with("HTTP/1.1 304"), "{out}");
    let out = curl(
        "-H 'Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf' -o /dev/null",
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(
        out.contains("content-type: application/com.github.proto-openapi.spec.v2.v1.0+protobuf"),
        "{out}"
    );
    let out = curl("-H 'Accept: text/html'");
    assert!(out.starts_with("HTTP/1.1 406"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_and_field_validation() {
    let Some(bins) = kubectl::bins_or_skip() else {
        return;
    };
    let mut api = ApiNode::start("kexplain", "10.98.9.0/24").await;
    let (node, agent) = (&api.node, &mut api.agent);
    let kubeconfig = agent.root_dir.join("kubeconfig");
    for (i, bin) in bins.iter().enumerate() {
        let k = Kubectl::new(node, bin, &kubeconfig, &format!("x{i}"));
        explain(&k);
        validation(&k, node.dir(), i);
        openapi_v2(&k, node.dir(), i);
        agent.assert_alive();
    }
}
