//! A container's environment as the kubelet builds it: `envFrom` sources first (ConfigMaps
//! and Secrets, with a prefix), then `env` in order, each value expanded with the
//! variables defined before it; `valueFrom` reads ConfigMap and Secret keys, the pod's own
//! fields (the downward API) and the container's resources.
//!
//! Errors become the container's CreateContainerConfigError; they name the object and key,
//! never a value.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector, Service};

use crate::objects::{Kind, Objects};
use crate::spec;

/// Facts about the pod and node that `fieldRef`s and `resourceFieldRef`s name.
pub struct Facts<'a> {
    pub uid: &'a str,
    pub node_name: &'a str,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    pub objects: &'a Objects,
    /// The node's allocatable cpu (millicores) and memory (bytes): a limit left out reads
    /// as these, as with the kubelet.
    pub node_milli_cpu: i64,
    pub node_memory: i64,
    /// The node's Services (as the API shows them, ClusterIPs given), for the service
    /// environment variables.
    pub services: &'a [Service],
}

/// The node's address (`status.hostIP`): the source address of its default route, found
/// by connecting a UDP socket (no packet is sent); loopback on a node without a route.
pub fn host_ip() -> &'static str {
    static IP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    IP.get_or_init(|| {
        std::net::UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| {
                s.connect("192.0.2.1:9")?;
                s.local_addr()
            })
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| "127.0.0.1".into())
    })
}

/// Expands `$(VAR)` references as the kubelet does (its fork of Go's `os.Expand`): `$$` is
/// one `$`, an unknown or unterminated reference stays as written, a lone `$` stays.
pub fn expand(s: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(j) => {
                    let var = &body[..j];
                    match lookup(var) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(var);
                            out.push(')');
                        }
                    }
                    rest = &body[j + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// `key="value"` lines, sorted, as the kubelet formats labels and annotations (Go's `%q`).
pub fn format_map(m: Option<&std::collections::BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

fn subscript<'a>(path: &'a str, field: &str) -> Option<&'a str> {
    path.strip_prefix(field)?
        .strip_prefix("['")?
        .strip_suffix("']")
}

/// A `fieldRef`'s value; `volume` allows the whole label and annotation maps (the
/// downward API volume's files).
pub fn field_value(pod: &Pod, facts: &Facts, path: &str) -> Result<String, String> {
    let m = &pod.metadata;
    Ok(match path {
        "metadata.name" => spec::name(pod).to_string(),
        "metadata.namespace" => spec::namespace(pod).to_string(),
        "metadata.uid" => facts.uid.to_string(),
        "metadata.labels" => format_map(m.labels.as_ref()),
        "metadata.annotations" => format_map(m.annotations.as_ref()),
        "spec.nodeName" => facts.node_name.to_string(),
        "spec.serviceAccountName" => spec::spec(pod)
            .service_account_name
            .clone()
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => facts.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.to_string(),
        p => {
            if let Some(k) = subscript(p, "metadata.labels") {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(k))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(k) = subscript(p, "metadata.annotations") {
                m.annotations
                    .as_ref()
                    .and_then(|l| l.get(k))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldRef fieldPath {p:?}"));
            }
        }
    })
}

/// A `resourceFieldRef`'s value: the amount divided by the divisor, rounded up.
pub fn resource_value(
    pod: &Pod,
    c: &Container,
    r: &ResourceFieldSelector,
    facts: &Facts,
) -> Result<String, String> {
    let c = match r.container_name.as_deref() {
        Some(n) if !n.is_empty() && n != c.name => crate::reconcile::find_container(pod, n)
            .ok_or_else(|| format!("resourceFieldRef: no container {n:?} in the pod"))?,
        _ => c,
    };
    let a = crate::resources::amounts(c)?;
    let div = r.divisor.as_ref().map(|q| q.0.as_str()).unwrap_or("1");
    let cpu = |v: i64| -> Result<String, String> {
        let d = crate::quantity::milli_cpu(div).map_err(|e| e.to_string())?;
        Ok(((v as f64) / (d.max(1) as f64)).ceil().to_string())
    };
    let mem = |v: i64| -> Result<String, String> {
        let d = crate::quantity::bytes(div).map_err(|e| e.to_string())?;
        Ok(((v as f64) / (d.max(1) as f64)).ceil().to_string())
    };
    match r.resource.as_str() {
        "limits.cpu" => cpu(a.cpu_limit.unwrap_or(facts.node_milli_cpu)),
        "requests.cpu" => cpu(a.cpu_request.unwrap_or(0)),
        "limits.memory" => mem(a.mem_limit.unwrap_or(facts.node_memory)),
        "requests.memory" => mem(a.mem_request.unwrap_or(0)),
        other => Err(format!("unsupported resourceFieldRef resource {other:?}")),
    }
}

/// Is `name` an environment variable name the kubelet passes on (a C identifier-like
/// name: printable, no `=`)?
fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.contains('=')
        && name.bytes().all(|b| b.is_ascii_graphic())
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// `my-svc` → `MY_SVC`, as the kubelet names a Service's variables.
fn env_name(s: &str) -> String {
    s.to_uppercase().replace('-', "_")
}

/// The variables the kubelet gives a pod for each Service (`getServiceEnvVarMap`): those of
/// its own namespace when `enableServiceLinks` (the default), and the `kubernetes` Service
/// of `default` always; only Services with a ClusterIP. For each: `<SVC>_SERVICE_HOST`,
/// `<SVC>_SERVICE_PORT` (the first port), `<SVC>_SERVICE_PORT_<NAME>` per named port, and
/// Docker's link variables (`<SVC>_PORT=tcp://ip:port`, `<SVC>_PORT_<port>_<PROTO>` with
/// `_PROTO`, `_PORT`, `_ADDR`).
pub fn service_env(pod: &Pod, services: &[Service]) -> Vec<(String, String)> {
    let ns = spec::namespace(pod);
    let links = spec::spec(pod).enable_service_links.unwrap_or(true);
    let mut chosen: Vec<&Service> = services
        .iter()
        .filter(|s| {
            let sns = s.metadata.namespace.as_deref().unwrap_or("default");
            let name = s.metadata.name.as_deref().unwrap_or("");
            (links && sns == ns) || (sns == "default" && name == "kubernetes")
        })
        .collect();
    chosen.sort_by_key(|s| s.metadata.name.clone());
    let mut out = Vec::new();
    for s in chosen {
        let Some(spec) = s.spec.as_ref() else {
            continue;
        };
        let ip = match spec.cluster_ip.as_deref() {
            None | Some("") | Some("None") => continue,
            Some(ip) => ip,
        };
        let name = env_name(s.metadata.name.as_deref().unwrap_or(""));
        let ports = spec.ports.as_deref().unwrap_or_default();
        out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        if let Some(p) = ports.first() {
            out.push((format!("{name}_SERVICE_PORT"), p.port.to_string()));
        }
        for p in ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{name}_SERVICE_PORT_{}", env_name(pn)),
                    p.port.to_string(),
                ));
            }
        }
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let lower = proto.to_lowercase();
            let url = format!("{lower}://{ip}:{}", p.port);
            let prefix = format!("{name}_PORT_{}_{}", p.port, proto.to_uppercase());
            if i == 0 {
                out.push((format!("{name}_PORT"), url.clone()));
            }
            out.push((prefix.clone(), url));
            out.push((format!("{prefix}_PROTO"), lower));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.to_string()));
        }
    }
    out
}

/// The container's environment, in definition order (a redefined name keeps its first
/// place and takes the last value), then the service variables not defined otherwise
/// (which `$(VAR)` references may also name), as the kubelet orders them.
pub fn container_env(
    pod: &Pod,
    c: &Container,
    facts: &Facts,
) -> Result<Vec<(String, String)>, String> {
    let ns = spec::namespace(pod);
    let svc_env = service_env(pod, facts.services);
    let mut out: Vec<(String, String)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut set = |out: &mut Vec<(String, String)>, k: String, v: String| match index.get(&k) {
        Some(&i) => out[i].1 = v,
        None => {
            index.insert(k.clone(), out.len());
            out.push((k, v));
        }
    };
    for from in c.env_from.iter().flatten() {
        let (kind, name, optional) = if let Some(r) = &from.config_map_ref {
            (
                Kind::ConfigMap,
                r.name.as_str(),
                r.optional.unwrap_or(false),
            )
        } else if let Some(r) = &from.secret_ref {
            (Kind::Secret, r.name.as_str(), r.optional.unwrap_or(false))
        } else {
            continue;
        };
        let Some(obj) = facts.objects.get(kind, ns, name) else {
            if optional {
                continue;
            }
            return Err(format!("{} \"{name}\" not found", kind.resource()));
        };
        let prefix = from.prefix.as_deref().unwrap_or("");
        for (k, v) in obj.data.iter().filter(|(k, _)| !obj.binary.contains(*k)) {
            let key = format!("{prefix}{k}");
            // The kubelet skips keys that are not valid variable names (with an event).
            if valid_env_name(&key) {
                set(&mut out, key, String::from_utf8_lossy(v).into_owned());
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = e.value.as_deref().filter(|v| !v.is_empty()) {
            let known: HashMap<&str, &str> = svc_env
                .iter()
                .chain(out.iter())
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            expand(v, |n| known.get(n).map(|s| s.to_string()))
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                field_value(pod, facts, &f.field_path)
                    .map_err(|m| format!("env {}: {m}", e.name))?
            } else if let Some(r) = &from.resource_field_ref {
                resource_value(pod, c, r, facts).map_err(|m| format!("env {}: {m}", e.name))?
            } else if let Some(r) = &from.config_map_key_ref {
                match key_ref(facts, Kind::ConfigMap, ns, &r.name, &r.key, r.optional)? {
                    Some(v) => v,
                    None => continue,
                }
            } else if let Some(r) = &from.secret_key_ref {
                match key_ref(facts, Kind::Secret, ns, &r.name, &r.key, r.optional)? {
                    Some(v) => v,
                    None => continue,
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut out, e.name.clone(), value);
    }
    let defined: std::collections::HashSet<String> = out.iter().map(|(k, _)| k.clone()).collect();
    out.extend(svc_env.into_iter().filter(|(k, _)| !defined.contains(k)));
    Ok(out)
}

/// A `configMapKeyRef` / `secretKeyRef`: `Ok(None)` when optional and missing (the
/// variable is left out), the kubelet's message otherwise.
fn key_ref(
    facts: &Facts,
    kind: Kind,
    ns: &str,
    name: &str,
    key: &str,
    optional: Option<bool>,
) -> Result<Option<String>, String> {
    let optional = optional.unwrap_or(false);
    let Some(obj) = facts.objects.get(kind, ns, name) else {
        if optional {
            return Ok(None);
        }
        return Err(format!(
            "couldn't get {} {ns}/{name}: {} \"{name}\" not found",
            if kind == Kind::ConfigMap {
                "configMap"
            } else {
                "secret"
            },
            kind.resource()
        ));
    };
    match obj.data.get(key).filter(|_| !obj.binary.contains(key)) {
        Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
        None if optional => Ok(None),
        None => Err(format!(
            "couldn't find key {key} in {} {ns}/{name}",
            kind.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kubelet's expansion cases (third_party/forked/golang/expansion).
    #[test]
    fn expansion_cases() {
        let vars: HashMap<&str, &str> = [
            ("VAR_A", "A"),
            ("VAR_B", "B"),
            ("VAR_C", "C"),
            ("VAR_REF", "$(VAR_A)"),
            ("VAR_EMPTY", ""),
            ("BLU", "$"),
        ]
        .into();
        let x = |s: &str| expand(s, |n| vars.get(n).map(|v| v.to_string()));
        for (input, want) in [
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("$(VAR_A)-$(VAR_A)", "A-A"),
            ("$(VAR_A)-1", "A-1"),
            ("$(VAR_A)_$(VAR_B)_$(VAR_C)", "A_B_C"),
            ("$$(VAR_B)_$(VAR_A)", "$(VAR_B)_A"),
            ("$$(VAR_A)_$$(VAR_B)", "$(VAR_A)_$(VAR_B)"),
            ("f000-$$VAR_A", "f000-$VAR_A"),
            ("foo\\$(VAR_C)bar", "foo\\Cbar"),
            ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
            ("$(VAR_A)$(VAR_B)$(VAR_C)", "ABC"),
            ("$(VAR_REF)", "$(VAR_A)"),
            ("foo$(VAR_EMPTY)bar", "foobar"),
            ("$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
            ("$$$$$$$(BLU)", "$$$$"),
            ("$(VAR_A", "$(VAR_A"),
            ("$(", "$("),
            ("$", "$"),
            ("$()", "$()"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$VAR_A", "$VAR_A"),
            ("$(VAR_A)$", "A$"),
            ("??? $(VAR_A) ???", "??? A ???"),
            ("", ""),
            ("$(VAR_DELIMITER)...", "$(VAR_DELIMITER)..."),
        ] {
            assert_eq!(x(input), want, "{input:?}");
        }
    }

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn sources_and_errors() {
        let mut objs = Objects::default();
        let p = pod(
            "metadata: {name: p, namespace: ns, labels: {b: '2', a: '1'}}\nspec:\n  serviceAccountName: sa\n  containers:\n  - name: c\n    image: i\n    resources: {limits: {memory: 64Mi}, requests: {cpu: 250m}}\n    envFrom:\n    - configMapRef: {name: cm}\n      prefix: CM_\n    - secretRef: {name: gone, optional: true}\n    env:\n    - {name: A, value: 'x-$(CM_k)-$$(A)'}\n    - {name: N, valueFrom: {fieldRef: {fieldPath: metadata.name}}}\n    - {name: L, valueFrom: {fieldRef: {fieldPath: \"metadata.labels['a']\"}}}\n    - {name: SA, valueFrom: {fieldRef: {fieldPath: spec.serviceAccountName}}}\n    - {name: M, valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}}\n    - {name: C, valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}}\n    - {name: LC, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}\n    - {name: S, valueFrom: {secretKeyRef: {name: s, key: pw}}}\n    - {name: O, valueFrom: {configMapKeyRef: {name: cm, key: nokey, optional: true}}}\n",
        );
        fn facts(o: &Objects) -> Facts<'_> {
            Facts {
                uid: "u",
                node_name: "n",
                pod_ip: "10.0.0.2",
                host_ip: "10.0.0.1",
                objects: o,
                node_milli_cpu: 2000,
                node_memory: 1 << 30,
                services: &[],
            }
        }
        let c = &p.spec.as_ref().unwrap().containers[0];
        let e = container_env(&p, c, &facts(&objs)).unwrap_err();
        assert_eq!(e, "configmap \"cm\" not found");
        let obj = |k: &str, v: &[u8]| crate::objects::Object {
            data: [(k.to_string(), v.to_vec())].into(),
            binary: Default::default(),
            immutable: false,
            type_: String::new(),
        };
        objs.insert((Kind::ConfigMap, "ns".into(), "cm".into()), obj("k", b"v"));
        let e = container_env(&p, c, &facts(&objs)).unwrap_err();
        assert_eq!(e, "couldn't get secret ns/s: secret \"s\" not found");
        objs.insert((Kind::Secret, "ns".into(), "s".into()), obj("other", b"z"));
        let e = container_env(&p, c, &facts(&objs)).unwrap_err();
        assert_eq!(e, "couldn't find key pw in Secret ns/s");
        objs.insert(
            (Kind::Secret, "ns".into(), "s".into()),
            obj("pw", b"hunter2"),
        );
        let env: HashMap<String, String> = container_env(&p, c, &facts(&objs))
            .unwrap()
            .into_iter()
            .collect();
        let want: HashMap<String, String> = [
            ("CM_k", "v"),
            ("A", "x-v-$(A)"),
            ("N", "p"),
            ("L", "1"),
            ("SA", "sa"),
            ("M", "64"),
            ("C", "250"),
            ("LC", "2"),
            ("S", "hunter2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, want);
        assert_eq!(
            field_value(&p, &facts(&objs), "metadata.labels").unwrap(),
            "a=\"1\"\nb=\"2\""
        );
    }

    #[test]
    fn service_variables() {
        let svc = |ns: &str, name: &str, ip: &str, ports: serde_json::Value| -> Service {
            serde_json::from_value(serde_json::json!({"metadata": {"name": name, "namespace": ns}, "spec": {"clusterIP": ip, "ports": ports}})).unwrap()
        };
        let services = vec![
            svc(
                "ns",
                "my-web",
                "10.96.0.5",
                serde_json::json!([{"name": "http", "port": 80}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}]),
            ),
            svc("ns", "headless", "None", serde_json::json!([{"port": 80}])),
            svc(
                "other",
                "far",
                "10.96.0.6",
                serde_json::json!([{"port": 81}]),
            ),
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                serde_json::json!([{"name": "https", "port": 443}]),
            ),
        ];
        let p = pod("metadata: {name: p, namespace: ns}\nspec:\n  containers:\n  - name: c\n    image: i\n    env:\n    - {name: MY_WEB_SERVICE_PORT, value: mine}\n    - {name: URL, value: 'http://$(MY_WEB_SERVICE_HOST)/'}\n");
        let objs = Objects::default();
        let f = Facts {
            uid: "u",
            node_name: "n",
            pod_ip: "",
            host_ip: "",
            objects: &objs,
            node_milli_cpu: 1,
            node_memory: 1,
            services: &services,
        };
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env: HashMap<String, String> = container_env(&p, c, &f).unwrap().into_iter().collect();
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("MY_WEB_SERVICE_HOST"), Some("10.96.0.5"));
        // Defined by the pod: the pod's value wins.
        assert_eq!(get("MY_WEB_SERVICE_PORT"), Some("mine"));
        assert_eq!(get("URL"), Some("http://10.96.0.5/"));
        assert_eq!(get("MY_WEB_SERVICE_PORT_HTTP"), Some("80"));
        assert_eq!(get("MY_WEB_SERVICE_PORT_DNS_UDP"), Some("53"));
        assert_eq!(get("MY_WEB_PORT"), Some("tcp://10.96.0.5:80"));
        assert_eq!(get("MY_WEB_PORT_53_UDP"), Some("udp://10.96.0.5:53"));
        assert_eq!(get("MY_WEB_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("MY_WEB_PORT_80_TCP_PORT"), Some("80"));
        assert_eq!(get("MY_WEB_PORT_80_TCP_ADDR"), Some("10.96.0.5"));
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert!(!env
            .keys()
            .any(|k| k.starts_with("HEADLESS_") || k.starts_with("FAR_")));
        // enableServiceLinks: false: only the kubernetes Service's.
        let mut q = p.clone();
        q.spec.as_mut().unwrap().enable_service_links = Some(false);
        let keys: Vec<String> = service_env(&q, &services)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(
            keys.iter().all(|k| k.starts_with("KUBERNETES_")),
            "{keys:?}"
        );
        assert!(keys.contains(&"KUBERNETES_PORT_443_TCP".to_string()));
    }
}
