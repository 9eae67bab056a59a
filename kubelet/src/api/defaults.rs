//! The API server's defaulting (core/v1, apps/v1 and batch/v1 `SetDefaults_*`), applied to
//! every object the API serves and to what an API write stores, so `kubectl get -o yaml` and
//! `describe` show what a cluster shows (a probe's `timeout=1s period=10s`, a container's
//! `imagePullPolicy`, a Deployment's `strategy`...).
//!
//! Filling never overrides a set value, so it is idempotent. The same table run backwards
//! ([`normal_template`]: each field that equals its default removed) gives a pod template
//! whose hash does not depend on whether it was defaulted: a template the API stored
//! defaulted and the same template written without its defaults are one revision, so
//! defaulting never rolls pods. The agent's own fallbacks (probes' period 10 s, grace 30 s,
//! ClusterFirst, the pull policy of `images.rs`) are these same values.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use serde_json::{json, Map, Value};

/// Whether a pass fills in the defaults or removes the values equal to them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Fill,
    Strip,
}

/// `o[key]` defaults to `v`.
fn def(o: &mut Value, key: &str, v: Value, mode: Mode) {
    let Some(m) = o.as_object_mut() else {
        return;
    };
    match mode {
        Mode::Fill => {
            if m.get(key).is_none_or(Value::is_null) {
                m.insert(key.into(), v);
            }
        }
        Mode::Strip => {
            if m.get(key) == Some(&v) {
                m.remove(key);
            }
        }
    }
}

/// The object at `o[key]`: made when filling, only an existing one when stripping.
fn child<'a>(o: &'a mut Value, key: &str, mode: Mode) -> Option<&'a mut Value> {
    let m = o.as_object_mut()?;
    if mode == Mode::Fill && m.get(key).is_none_or(Value::is_null) {
        m.insert(key.into(), Value::Object(Map::new()));
    }
    m.get_mut(key).filter(|v| v.is_object())
}

/// The object at `o[key]` when it is there.
fn present<'a>(o: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    o.get_mut(key).filter(|v| v.is_object())
}

fn each<'a>(o: &'a mut Value, key: &str) -> impl Iterator<Item = &'a mut Value> {
    o.get_mut(key)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter(|v| v.is_object())
}

/// Fills in the API server's defaults for an object of `plural` (as served: apiVersion,
/// kind and metadata may be there or not).
pub fn apply(plural: &str, obj: &mut Value) {
    walk(plural, obj, Mode::Fill);
}

fn walk(plural: &str, obj: &mut Value, mode: Mode) {
    if !obj.is_object() {
        return;
    }
    match plural {
        "pods" => {
            if let Some(s) = child(obj, "spec", mode) {
                pod_spec(s, mode);
                def(s, "enableServiceLinks", true.into(), mode);
                requests_from_limits(s, mode);
            }
        }
        "deployments" => {
            if let Some(s) = child(obj, "spec", mode) {
                def(s, "replicas", 1.into(), mode);
                def(s, "revisionHistoryLimit", 10.into(), mode);
                def(s, "progressDeadlineSeconds", 600.into(), mode);
                if let Some(st) = child(s, "strategy", mode) {
                    def(st, "type", "RollingUpdate".into(), mode);
                    if st["type"] == "RollingUpdate" {
                        if let Some(ru) = child(st, "rollingUpdate", mode) {
                            def(ru, "maxUnavailable", "25%".into(), mode);
                            def(ru, "maxSurge", "25%".into(), mode);
                        }
                    }
                }
                template(s, mode);
            }
        }
        "replicasets" => {
            if let Some(s) = child(obj, "spec", mode) {
                def(s, "replicas", 1.into(), mode);
                template(s, mode);
            }
        }
        "statefulsets" => {
            if let Some(s) = child(obj, "spec", mode) {
                def(s, "replicas", 1.into(), mode);
                def(s, "podManagementPolicy", "OrderedReady".into(), mode);
                def(s, "revisionHistoryLimit", 10.into(), mode);
                if let Some(us) = child(s, "updateStrategy", mode) {
                    def(us, "type", "RollingUpdate".into(), mode);
                    if us["type"] == "RollingUpdate" {
                        if let Some(ru) = child(us, "rollingUpdate", mode) {
                            def(ru, "partition", 0.into(), mode);
                        }
                    }
                }
                if let Some(p) = child(s, "persistentVolumeClaimRetentionPolicy", mode) {
                    def(p, "whenDeleted", "Retain".into(), mode);
                    def(p, "whenScaled", "Retain".into(), mode);
                }
                for c in each(s, "volumeClaimTemplates") {
                    def(c, "apiVersion", "v1".into(), mode);
                    def(c, "kind", "PersistentVolumeClaim".into(), mode);
                    if let Some(cs) = child(c, "spec", mode) {
                        def(cs, "volumeMode", "Filesystem".into(), mode);
                    }
                }
                template(s, mode);
            }
        }
        "daemonsets" => {
            if let Some(s) = child(obj, "spec", mode) {
                def(s, "revisionHistoryLimit", 10.into(), mode);
                if let Some(us) = child(s, "updateStrategy", mode) {
                    def(us, "type", "RollingUpdate".into(), mode);
                    if us["type"] == "RollingUpdate" {
                        if let Some(ru) = child(us, "rollingUpdate", mode) {
                            def(ru, "maxUnavailable", 1.into(), mode);
                            def(ru, "maxSurge", 0.into(), mode);
                        }
                    }
                }
                template(s, mode);
            }
        }
        "jobs" => {
            if let Some(s) = child(obj, "spec", mode) {
                job_spec(s, mode);
            }
        }
        "cronjobs" => {
            if let Some(s) = child(obj, "spec", mode) {
                def(s, "concurrencyPolicy", "Allow".into(), mode);
                def(s, "suspend", false.into(), mode);
                def(s, "successfulJobsHistoryLimit", 3.into(), mode);
                def(s, "failedJobsHistoryLimit", 1.into(), mode);
                // A CronJob's jobTemplate gets the pod defaults only: SetDefaults_Job runs on
                // Jobs, not on the JobSpec inside a template.
                if let Some(js) = child(s, "jobTemplate", mode).and_then(|j| child(j, "spec", mode))
                {
                    template(js, mode);
                }
            }
        }
        "services" => service(obj, mode),
        "secrets" => def(obj, "type", "Opaque".into(), mode),
        "persistentvolumeclaims" => {
            if let Some(s) = child(obj, "spec", mode) {
                def(s, "volumeMode", "Filesystem".into(), mode);
            }
        }
        "namespaces" => {
            let name = obj["metadata"]["name"].clone();
            if name.is_string() {
                if let Some(l) = child(obj, "metadata", mode).and_then(|m| child(m, "labels", mode))
                {
                    def(l, "kubernetes.io/metadata.name", name, mode);
                }
            }
            if let Some(s) = child(obj, "spec", mode) {
                def(s, "finalizers", json!(["kubernetes"]), mode);
            }
        }
        _ => {}
    }
}

fn job_spec(s: &mut Value, mode: Mode) {
    let unset = |s: &Value, k: &str| s.get(k).is_none_or(Value::is_null);
    if mode == Mode::Fill && unset(s, "completions") && unset(s, "parallelism") {
        s["completions"] = 1.into();
    }
    def(s, "parallelism", 1.into(), mode);
    if unset(s, "backoffLimitPerIndex") {
        def(s, "backoffLimit", 6.into(), mode);
    }
    def(s, "completionMode", "NonIndexed".into(), mode);
    def(s, "suspend", false.into(), mode);
    let replacement = if unset(s, "podFailurePolicy") {
        "TerminatingOrFailed"
    } else {
        "Failed"
    };
    def(s, "podReplacementPolicy", replacement.into(), mode);
    template(s, mode);
}

fn template(spec: &mut Value, mode: Mode) {
    if let Some(ps) = child(spec, "template", mode).and_then(|t| child(t, "spec", mode)) {
        pod_spec(ps, mode);
    }
}

/// SetDefaults_PodSpec and what it reaches (containers, probes, ports, volumes).
fn pod_spec(s: &mut Value, mode: Mode) {
    def(s, "restartPolicy", "Always".into(), mode);
    def(s, "dnsPolicy", "ClusterFirst".into(), mode);
    def(s, "schedulerName", "default-scheduler".into(), mode);
    def(s, "securityContext", json!({}), mode);
    def(s, "terminationGracePeriodSeconds", 30.into(), mode);
    let host_network = s["hostNetwork"] == true;
    for key in ["initContainers", "containers"] {
        for c in each(s, key) {
            container(c, host_network, mode);
        }
    }
    for v in each(s, "volumes") {
        volume(v, mode);
    }
}

fn container(c: &mut Value, host_network: bool, mode: Mode) {
    def(
        c,
        "terminationMessagePath",
        "/dev/termination-log".into(),
        mode,
    );
    def(c, "terminationMessagePolicy", "File".into(), mode);
    if let Some(image) = c["image"].as_str() {
        let policy = crate::images::default_pull_policy(image);
        def(c, "imagePullPolicy", policy.into(), mode);
    }
    for p in each(c, "ports") {
        def(p, "protocol", "TCP".into(), mode);
        if host_network {
            let port = p["containerPort"].clone();
            def(p, "hostPort", port, mode);
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = present(c, probe) {
            def(p, "timeoutSeconds", 1.into(), mode);
            def(p, "periodSeconds", 10.into(), mode);
            def(p, "successThreshold", 1.into(), mode);
            def(p, "failureThreshold", 3.into(), mode);
            http_get(p, mode);
        }
    }
    if let Some(l) = present(c, "lifecycle") {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = present(l, hook) {
                http_get(h, mode);
            }
        }
    }
    for e in each(c, "env") {
        if let Some(f) = present(e, "valueFrom").and_then(|v| present(v, "fieldRef")) {
            def(f, "apiVersion", "v1".into(), mode);
        }
    }
}

fn http_get(handler: &mut Value, mode: Mode) {
    if let Some(h) = present(handler, "httpGet") {
        def(h, "path", "/".into(), mode);
        def(h, "scheme", "HTTP".into(), mode);
    }
}

/// SetDefaults_Volume and the sources' file modes (0644).
fn volume(v: &mut Value, mode: Mode) {
    const SOURCES: &[&str] = &[
        "hostPath",
        "emptyDir",
        "secret",
        "configMap",
        "persistentVolumeClaim",
        "projected",
        "downwardAPI",
        "csi",
        "ephemeral",
        "nfs",
        "image",
        "iscsi",
        "gitRepo",
    ];
    let none = v.as_object().is_some_and(|m| {
        m.keys()
            .all(|k| k == "name" || !SOURCES.contains(&k.as_str()))
    });
    if none && mode == Mode::Fill {
        v["emptyDir"] = json!({});
    }
    for src in ["secret", "configMap", "projected", "downwardAPI"] {
        if let Some(s) = present(v, src) {
            def(s, "defaultMode", 420.into(), mode);
        }
    }
    if let Some(h) = present(v, "hostPath") {
        def(h, "type", "".into(), mode);
    }
}

/// SetDefaults_Pod: a container's requests default to its limits.
fn requests_from_limits(s: &mut Value, mode: Mode) {
    if mode != Mode::Fill {
        return;
    }
    for key in ["initContainers", "containers"] {
        for c in each(s, key) {
            let Some(limits) = c["resources"]["limits"].as_object().cloned() else {
                continue;
            };
            if let Some(req) = child(c, "resources", mode).and_then(|r| child(r, "requests", mode))
            {
                for (k, v) in limits {
                    def(req, &k, v, mode);
                }
            }
        }
    }
}

/// SetDefaults_Service, and the IP family fields the API server's allocation sets.
fn service(obj: &mut Value, mode: Mode) {
    let Some(s) = child(obj, "spec", mode) else {
        return;
    };
    def(s, "type", "ClusterIP".into(), mode);
    def(s, "sessionAffinity", "None".into(), mode);
    let ty = s["type"].as_str().unwrap_or("ClusterIP").to_string();
    if ty != "ExternalName" {
        def(s, "internalTrafficPolicy", "Cluster".into(), mode);
        def(s, "ipFamilies", json!(["IPv4"]), mode);
        def(s, "ipFamilyPolicy", "SingleStack".into(), mode);
    }
    if matches!(ty.as_str(), "NodePort" | "LoadBalancer") {
        def(s, "externalTrafficPolicy", "Cluster".into(), mode);
    }
    if ty == "LoadBalancer" {
        def(s, "allocateLoadBalancerNodePorts", true.into(), mode);
    }
    for p in each(s, "ports") {
        def(p, "protocol", "TCP".into(), mode);
        let port = p["port"].clone();
        if p["targetPort"] == 0 || p["targetPort"] == "" {
            p.as_object_mut().map(|m| m.remove("targetPort"));
        }
        if port.is_number() {
            def(p, "targetPort", port, mode);
        }
    }
}

/// A pod template with each value equal to its default removed: what two templates that
/// differ only by defaulting have in common (the controllers hash and compare this).
pub fn normal_template(t: &PodTemplateSpec) -> PodTemplateSpec {
    let Ok(mut v) = serde_json::to_value(t) else {
        return t.clone();
    };
    if let Some(s) = present(&mut v, "spec") {
        pod_spec(s, Mode::Strip);
    }
    serde_json::from_value(v).unwrap_or_else(|_| t.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "c", "image": "busybox",
                        "ports": [{"containerPort": 80}],
                        "livenessProbe": {"httpGet": {"port": 80}},
                        "readinessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 2},
                    }]},
                },
            },
        })
    }

    #[test]
    fn deployment_defaults() {
        let mut d = deployment();
        apply("deployments", &mut d);
        let s = &d["spec"];
        assert_eq!(s["replicas"], 1);
        assert_eq!(s["revisionHistoryLimit"], 10);
        assert_eq!(s["progressDeadlineSeconds"], 600);
        assert_eq!(
            s["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        let ps = &s["template"]["spec"];
        assert_eq!(ps["restartPolicy"], "Always");
        assert_eq!(ps["dnsPolicy"], "ClusterFirst");
        assert_eq!(ps["schedulerName"], "default-scheduler");
        assert_eq!(ps["securityContext"], json!({}));
        assert_eq!(ps["terminationGracePeriodSeconds"], 30);
        // Templates are not Pods: no enableServiceLinks (SetDefaults_Pod).
        assert!(ps.get("enableServiceLinks").is_none());
        let c = &ps["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "File");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(
            c["livenessProbe"],
            json!({"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                   "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3})
        );
        // A set value stays.
        assert_eq!(c["readinessProbe"]["periodSeconds"], 2);
    }

    #[test]
    fn idempotent_and_set_values_kept() {
        for plural in [
            "pods",
            "deployments",
            "statefulsets",
            "daemonsets",
            "jobs",
            "cronjobs",
            "services",
            "secrets",
            "namespaces",
        ] {
            let mut o = deployment();
            apply(plural, &mut o);
            let once = o.clone();
            apply(plural, &mut o);
            assert_eq!(o, once, "{plural}");
        }
        let mut d = deployment();
        d["spec"]["replicas"] = 3.into();
        d["spec"]["strategy"] = json!({"type": "Recreate"});
        d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] = "Never".into();
        d["spec"]["template"]["spec"]["dnsPolicy"] = "Default".into();
        apply("deployments", &mut d);
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
        let ps = &d["spec"]["template"]["spec"];
        assert_eq!(ps["containers"][0]["imagePullPolicy"], "Never");
        assert_eq!(ps["dnsPolicy"], "Default");
    }

    #[test]
    fn pull_policy_by_tag() {
        for (image, want) in [
            ("busybox", "Always"),
            ("busybox:latest", "Always"),
            ("localhost:5000/busybox", "Always"),
            ("busybox:1.36", "IfNotPresent"),
            ("busybox@sha256:abcd", "IfNotPresent"),
        ] {
            let mut p = json!({"spec": {"containers": [{"name": "c", "image": image}]}});
            apply("pods", &mut p);
            assert_eq!(
                p["spec"]["containers"][0]["imagePullPolicy"], want,
                "{image}"
            );
        }
    }

    #[test]
    fn others() {
        let mut j = json!({"spec": {"template": {"spec": {"restartPolicy": "Never",
                                                          "containers": []}}}});
        apply("jobs", &mut j);
        assert_eq!(
            (
                &j["spec"]["completions"],
                &j["spec"]["parallelism"],
                &j["spec"]["backoffLimit"]
            ),
            (&json!(1), &json!(1), &json!(6))
        );
        assert_eq!(j["spec"]["completionMode"], "NonIndexed");
        assert_eq!(j["spec"]["suspend"], false);
        assert_eq!(j["spec"]["template"]["spec"]["restartPolicy"], "Never");
        // Parallelism alone leaves completions unset (a work queue).
        let mut j = json!({"spec": {"parallelism": 3}});
        apply("jobs", &mut j);
        assert!(j["spec"]["completions"].is_null());

        let mut cj = json!({"spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {
            "template": {"spec": {"containers": [{"name": "c", "image": "x:1"}]}}}}}});
        apply("cronjobs", &mut cj);
        assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
        assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
        assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
        assert!(cj["spec"]["jobTemplate"]["spec"]["backoffLimit"].is_null());
        assert_eq!(
            cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
                ["imagePullPolicy"],
            "IfNotPresent"
        );

        let mut s = json!({"spec": {"ports": [{"port": 80}, {"port": 53, "protocol": "UDP",
                                                             "targetPort": "dns"}]}});
        apply("services", &mut s);
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["sessionAffinity"], "None");
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
        assert_eq!(s["spec"]["ipFamilyPolicy"], "SingleStack");
        assert_eq!(s["spec"]["internalTrafficPolicy"], "Cluster");
        assert_eq!(
            s["spec"]["ports"],
            json!([{"port": 80, "protocol": "TCP", "targetPort": 80},
                   {"port": 53, "protocol": "UDP", "targetPort": "dns"}])
        );

        let mut sec = json!({"data": {}});
        apply("secrets", &mut sec);
        assert_eq!(sec["type"], "Opaque");
        let mut pvc = json!({"spec": {}});
        apply("persistentvolumeclaims", &mut pvc);
        assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");

        let mut p = json!({"spec": {"containers": [{"name": "c", "image": "x:1",
            "resources": {"limits": {"cpu": "1"}}}],
            "volumes": [{"name": "a"}, {"name": "b", "configMap": {"name": "m"}}]}});
        apply("pods", &mut p);
        assert_eq!(p["spec"]["enableServiceLinks"], true);
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "1"
        );
        assert_eq!(p["spec"]["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(p["spec"]["volumes"][1]["configMap"]["defaultMode"], 420);
    }

    /// A template and its defaulted form are the same revision.
    #[test]
    fn defaulting_keeps_the_template_hash() {
        let mut d = deployment();
        let raw: PodTemplateSpec = serde_json::from_value(d["spec"]["template"].clone()).unwrap();
        apply("deployments", &mut d);
        let full: PodTemplateSpec = serde_json::from_value(d["spec"]["template"].clone()).unwrap();
        assert_ne!(raw, full);
        assert_eq!(normal_template(&raw), normal_template(&full));
        // Without explicit defaults, the normal form is the template itself (hashes kept
        // across the upgrade).
        assert_eq!(normal_template(&raw), raw);
    }
}
