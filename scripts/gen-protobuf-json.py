#!/usr/bin/env python3
"""Generates kubelet/src/api/protobuf_json.rs: the JSON form of the k8s-pb (prost) types that
the agent's API accepts as `application/vnd.kubernetes.protobuf` request bodies.

k8s-pb has the generated protobuf types but no serde, and its field names are prost's
snake_case, which loses the JSON names' acronyms (`hostIPC`, `clusterIP`). So this script
reads k8s-pb's source for the fields (name, protobuf kind) of every type reachable from the
writable kinds, and k8s-openapi's source for the JSON names that are not plain camelCase, and
writes one `ToJson` impl per type. The types whose JSON form is not their protobuf shape
(Time, Quantity, IntOrString, RawExtension, ...) are written by hand in protobuf.rs.

Run it after a k8s-pb or k8s-openapi upgrade:
    python3 scripts/gen-protobuf-json.py > kubelet/src/api/protobuf_json.rs && cargo fmt --all
"""

import glob
import os
import re
import sys

REGISTRY = os.path.expanduser("~/.cargo/registry/src")
K8S_PB = "k8s-pb-0.9.0"
K8S_OPENAPI = "k8s-openapi-0.26.1"

# The kinds a protobuf body may carry: (apiVersion, kind, k8s-pb module).
ROOTS = [
    ("v1", "ConfigMap", "api::core::v1"),
    ("v1", "Secret", "api::core::v1"),
    ("v1", "Service", "api::core::v1"),
    ("v1", "Namespace", "api::core::v1"),
    ("v1", "Pod", "api::core::v1"),
    ("apps/v1", "Deployment", "api::apps::v1"),
    ("apps/v1", "StatefulSet", "api::apps::v1"),
    ("apps/v1", "DaemonSet", "api::apps::v1"),
    ("batch/v1", "Job", "api::batch::v1"),
    ("batch/v1", "CronJob", "api::batch::v1"),
]

# JSON forms written by hand in protobuf.rs.
SPECIAL = {
    "apimachinery::pkg::apis::meta::v1::Time",
    "apimachinery::pkg::apis::meta::v1::MicroTime",
    "apimachinery::pkg::apis::meta::v1::Duration",
    "apimachinery::pkg::apis::meta::v1::FieldsV1",
    "apimachinery::pkg::api::resource::Quantity",
    "apimachinery::pkg::util::intstr::IntOrString",
    "apimachinery::pkg::runtime::RawExtension",
}


# Fields that are plain (non-pointer) ints in the Go types: Go's protobuf writes their zero,
# which means "not set" (JSON leaves it out, the API server defaults or allocates it: a
# NodePort service's `nodePort: 0` asks for a port). Pointer ints (`replicas: 0`) keep it.
ZERO_IS_UNSET = {
    "apimachinery::pkg::apis::meta::v1::ObjectMeta": {"generation"},
    "api::core::v1::ServicePort": {"node_port"},
    "api::core::v1::ContainerPort": {"host_port"},
    "api::core::v1::Probe": {
        "initial_delay_seconds",
        "timeout_seconds",
        "period_seconds",
        "success_threshold",
        "failure_threshold",
    },
    "api::apps::v1::DeploymentSpec": {"min_ready_seconds"},
    "api::apps::v1::DaemonSetSpec": {"min_ready_seconds"},
    "api::apps::v1::StatefulSetSpec": {"min_ready_seconds"},
}


def one(pattern):
    found = glob.glob(os.path.join(REGISTRY, "*", pattern))
    if not found:
        sys.exit(f"{pattern} not in {REGISTRY}: run cargo fetch first")
    return found[0]


def json_names():
    """snake_case field -> JSON name, where it is not the plain camelCase (k8s-openapi's
    Deserialize impls spell each one: `"hostIPC" => Field::Key_host_ipc`)."""
    seen = {}
    root = one(K8S_OPENAPI)
    for path in glob.glob(os.path.join(root, "src", "v1_34", "**", "*.rs"), recursive=True):
        with open(path) as f:
            for j, s in re.findall(r'"([A-Za-z$]+)" => Field::Key_([a-z_0-9]+)', f.read()):
                seen.setdefault(s.rstrip("_"), set()).add(j)
    out = {}
    for s, js in seen.items():
        camel = re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), s)
        odd = js - {camel}
        if len(odd) == 1 and camel not in js:
            out[s] = odd.pop()
    return out


def parse_types():
    """module::Type -> [(field, attr, type text)], module of each type."""
    root = os.path.join(one(K8S_PB), "src")
    types = {}
    for path in glob.glob(os.path.join(root, "**", "mod.rs"), recursive=True):
        module = os.path.relpath(os.path.dirname(path), root).replace("/", "::")
        with open(path) as f:
            text = f.read()
        text = re.sub(r"^\s*///.*$", "", text, flags=re.M)
        for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", text, flags=re.S):
            body = m.group(2)
            fields = re.findall(
                r"#\[prost\(([^\]]*)\)\]\s*pub\s+((?:r#)?\w+):\s*(.*?),\s*(?=#\[prost|$)",
                body,
                flags=re.S,
            )
            types[f"{module}::{m.group(1)}"] = [
                (n, a, re.sub(r",?\s*>", ">", " ".join(t.split()))) for a, n, t in fields
            ]
    return types


def resolve(module, path):
    parts = module.split("::")
    segs = path.split("::")
    while segs and segs[0] == "super":
        parts.pop()
        segs.pop(0)
    if len(segs) == 1:
        return "::".join(module.split("::") + segs)
    return "::".join(parts + segs)


def message_type(module, ty):
    inner = re.findall(r"((?:super::)*[A-Za-z_][\w:]*)>", ty)
    names = [t for t in inner if not t.startswith("::") and t not in ("String",)]
    return resolve(module, names[-1]) if names else None


def main():
    types = parse_types()
    names = json_names()
    order, todo = [], [f"{m}::{k}" for _, k, m in ROOTS]
    while todo:
        t = todo.pop(0)
        if t in order or t in SPECIAL:
            continue
        if t not in types:
            sys.exit(f"unknown type {t}")
        order.append(t)
        module = t.rsplit("::", 1)[0]
        for _, attr, ty in types[t]:
            if attr.startswith("message") or 'string, message' in attr:
                todo.append(message_type(module, ty))

    print("// @generated by scripts/gen-protobuf-json.py from k8s-pb's types and k8s-openapi's")
    print("// JSON names: do not edit by hand.")
    print()
    print("use serde_json::{Map, Value};")
    print()
    print("use super::protobuf::{bytes_map, field, nonzero, ToJson};")
    print()
    print("/// Decodes the protobuf of one kind into its JSON form; None for a kind not here.")
    print("pub fn decode(api_version: &str, kind: &str, raw: &[u8]) -> Option<Result<Value, prost::DecodeError>> {")
    print("    let v = match (api_version, kind) {")
    for av, k, m in ROOTS:
        print(f'        ("{av}", "{k}") => <k8s_pb::{m}::{k} as prost::Message>::decode(raw).map(|o| o.to_json()),')
    print("        _ => return None,")
    print("    };")
    print("    Some(v)")
    print("}")
    for t in order:
        print()
        print(f"impl ToJson for k8s_pb::{t} {{")
        print("    fn to_json(&self) -> Value {")
        fields = types[t]
        print(f"        let {'mut ' if fields else ''}m = Map::new();")
        for name, attr, _ in fields:
            bare = name.removeprefix("r#")
            key = names.get(bare, re.sub(r"_([a-z0-9])", lambda x: x.group(1).upper(), bare))
            if attr.startswith("bytes"):
                sys.exit(f"{t}.{name}: a bytes field; give protobuf.rs a helper for it")
            if name in ZERO_IS_UNSET.get(t, ()):
                print(f'        nonzero(&mut m, "{key}", &self.{name});')
            elif 'string, bytes' in attr:
                print(f'        bytes_map(&mut m, "{key}", &self.{name});')
            else:
                print(f'        field(&mut m, "{key}", &self.{name});')
        print("        Value::Object(m)")
        print("    }")
        print("}")


main()
