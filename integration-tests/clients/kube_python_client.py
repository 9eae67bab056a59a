#!/usr/bin/env python3
"""The official Kubernetes Python client (`kubernetes` on PyPI) against rrun-kubelet's API.

Usage: kube_python_client.py KUBECONFIG IMAGE TIMEOUT_SECONDS

A client written apart from kubectl's Go code: its typed models, its JSON bodies, its watch
reader and its error type are its own. Each step checks what the API answers and fails with
a message naming the step; the last line on stdout is a JSON object of what was observed,
which the Rust test (integration-tests/tests/kube_python.rs) asserts on as well.
"""

import base64
import json
import sys
import time

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

KUBECONFIG, IMAGE, TIMEOUT = sys.argv[1], sys.argv[2], float(sys.argv[3])
NS = "py"
seen = {}


def fail(step, why):
    print(f"step {step}: {why}", file=sys.stderr)
    sys.exit(1)


def until(step, check, timeout=TIMEOUT):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except ApiException as e:
            last = f"{e.status} {e.reason}: {e.body}"
        time.sleep(0.2)
    fail(step, f"timed out after {timeout}s (last error: {last})")


def status_of(call):
    try:
        call()
    except ApiException as e:
        return e.status, json.loads(e.body or "{}")
    return 200, {}


config.load_kube_config(config_file=KUBECONFIG)
api = client.ApiClient()
core = client.CoreV1Api(api)
apps = client.AppsV1Api(api)

seen["gitVersion"] = client.VersionApi(api).get_code().git_version
names = [n.metadata.name for n in core.list_namespace().items]
for want in ("default", "kube-system"):
    if want not in names:
        fail("list namespaces", f"{want} missing from {names}")

core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))

# A ConfigMap: created, read back, and a replace with a stale resourceVersion refused.
cm = core.create_namespaced_config_map(
    NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg"), data={"a": "1"})
)
first_rv = cm.metadata.resource_version
if not cm.metadata.uid or not first_rv:
    fail("create configmap", f"no uid or resourceVersion: {cm.metadata}")
got = core.read_namespaced_config_map("cfg", NS)
if got.data != {"a": "1"}:
    fail("read configmap", f"data {got.data}")
got.data = {"a": "2"}
core.replace_namespaced_config_map("cfg", NS, got)
stale = client.V1ConfigMap(
    metadata=client.V1ObjectMeta(name="cfg", resource_version=first_rv), data={"a": "3"}
)
code, body = status_of(lambda: core.replace_namespaced_config_map("cfg", NS, stale))
seen["staleReplace"] = [code, body.get("reason")]
if core.read_namespaced_config_map("cfg", NS).data != {"a": "2"}:
    fail("stale replace", "the stale write changed the object")
code, body = status_of(lambda: core.read_namespaced_config_map("nope", NS))
seen["missing"] = [code, body.get("reason"), body.get("message")]

# A Secret from string data: the API answers it as base64 data.
core.create_namespaced_secret(
    NS,
    client.V1Secret(metadata=client.V1ObjectMeta(name="sec"), string_data={"password": "hunter2"}),
)
sec = core.read_namespaced_secret("sec", NS)
seen["secretType"] = sec.type
if base64.b64decode(sec.data["password"]) != b"hunter2":
    fail("read secret", f"data {sec.data}")

# A Deployment and its Service; the pods watched until both run.
def pod_template(version):
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels={"app": "py"}),
        spec=client.V1PodSpec(
            termination_grace_period_seconds=1,
            containers=[
                client.V1Container(
                    name="main",
                    image=IMAGE,
                    image_pull_policy="Never",
                    command=["sh", "-c", "echo started $V; exec sleep 1000000"],
                    env=[client.V1EnvVar(name="V", value=version)],
                )
            ],
        ),
    )


dep = apps.create_namespaced_deployment(
    NS,
    client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web", labels={"app": "py"}),
        spec=client.V1DeploymentSpec(
            replicas=2,
            selector=client.V1LabelSelector(match_labels={"app": "py"}),
            template=pod_template("v1"),
        ),
    ),
)
seen["generation"] = [dep.metadata.generation]
core.create_namespaced_service(
    NS,
    client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(
            selector={"app": "py"}, ports=[client.V1ServicePort(port=80, target_port=8080)]
        ),
    ),
)

running = set()
w = watch.Watch()
deadline = time.monotonic() + TIMEOUT
for ev in w.stream(
    core.list_namespaced_pod, NS, label_selector="app=py", timeout_seconds=int(TIMEOUT)
):
    pod = ev["object"]
    if ev["type"] in ("ADDED", "MODIFIED") and pod.status.phase == "Running":
        running.add(pod.metadata.name)
    if ev["type"] == "DELETED":
        running.discard(pod.metadata.name)
    if len(running) == 2 or time.monotonic() > deadline:
        w.stop()
if len(running) != 2:
    fail("watch pods", f"running: {running}")
seen["watchedRunning"] = len(running)

pod = sorted(running)[0]
log = until("pod log", lambda: core.read_namespaced_pod_log(pod, NS, container="main"))
seen["log"] = log.strip()

# Pages of one: the first names a continue token, the second is the other pod, the last.
p1 = core.list_namespaced_pod(NS, label_selector="app=py", limit=1)
p2 = core.list_namespaced_pod(NS, label_selector="app=py", limit=1, _continue=p1.metadata._continue)
pages = [p.items[0].metadata.name for p in (p1, p2)]
if sorted(pages) != sorted(running):
    fail("pages", f"pages {pages} of {running}")
seen["pages"] = [p1.metadata.remaining_item_count, p2.metadata._continue]

selected = core.list_namespaced_pod(NS, label_selector="app=py,app!=other").items
seen["selected"] = len(selected)
svc = core.read_namespaced_service("web", NS)
seen["clusterIP"] = svc.spec.cluster_ip

# A strategic merge patch of the template (what the client sends for a dict body): a
# rolling update to v2, watched through the pods' env.
apps.patch_namespaced_deployment(
    "web",
    NS,
    {"spec": {"template": {"spec": {"containers": [{"name": "main", "env": [{"name": "V", "value": "v2"}]}]}}}},
)


def rolled():
    pods = core.list_namespaced_pod(NS, label_selector="app=py").items
    envs = sorted(p.spec.containers[0].env[0].value for p in pods if p.status.phase == "Running")
    return envs == ["v2", "v2"] and len(pods) == 2


until("rolling update", rolled)
dep = apps.read_namespaced_deployment("web", NS)
seen["generation"].append(dep.metadata.generation)
until(
    "observedGeneration",
    lambda: apps.read_namespaced_deployment_status("web", NS).status.observed_generation
    == dep.metadata.generation,
)

# Without the token: 401.
anon = client.Configuration()
anon.host = api.configuration.host
anon.ssl_ca_cert = api.configuration.ssl_ca_cert
code, body = status_of(lambda: client.CoreV1Api(client.ApiClient(anon)).list_namespace())
seen["noToken"] = code

# The namespace deleted: its objects and the Deployment's pods are collected.
core.delete_namespace(NS)
until("namespace collected", lambda: not core.list_namespaced_pod(NS).items)
until(
    "objects collected",
    lambda: not apps.list_namespaced_deployment(NS).items
    and not core.list_namespaced_config_map(NS).items,
)
print(json.dumps(seen))
