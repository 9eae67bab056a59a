//! What the API server's ServiceAccount admission plugin does to a pod before the kubelet
//! sees it (plugin/pkg/admission/serviceaccount): `serviceAccountName` defaults to
//! `default`, and unless the pod opts out (`automountServiceAccountToken: false`) it gets the
//! `kube-api-access-<suffix>` projected volume — a bound token (`expirationSeconds` 3607, the
//! API's audience), the `kube-root-ca.crt` ConfigMap's `ca.crt`, and its namespace — mounted
//! read-only at [`MOUNT_PATH`] in every container that has no mount there.
//!
//! The agent knows no ServiceAccount objects, so only the pod's own
//! `automountServiceAccountToken` is consulted (the plugin also reads the ServiceAccount's).
//! The plugin names the volume with 5 random characters; here they come from the pod's
//! namespace and name, because the agent admits the pod again at every manifest scan and a
//! new name each time would be a new spec.

use k8s_openapi::api::core::v1::{
    ConfigMapProjection, DownwardAPIProjection, DownwardAPIVolumeFile, KeyToPath,
    ObjectFieldSelector, Pod, ProjectedVolumeSource, ServiceAccountTokenProjection, Volume,
    VolumeMount, VolumeProjection,
};

/// Where the token, CA and namespace appear in containers.
pub const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The volume name's prefix.
pub const VOLUME_PREFIX: &str = "kube-api-access-";
/// The ConfigMap the root-ca-cert-publisher keeps in every namespace.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";
/// The API server's `WarnOnlyBoundTokenExpirationSeconds`: 1 h and 7 s, so that a token
/// used past its hour can be told apart in the audit log.
pub const TOKEN_EXPIRATION: i64 = 3607;
/// `ProjectedVolumeSourceDefaultMode`, set explicitly by the plugin.
const DEFAULT_MODE: i32 = 0o644;

/// The characters of apimachinery's `utilrand.String` (no vowels, no confusable digits).
const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// Five characters of [`ALPHABET`], fixed for `key` (FNV-1a: stable across releases,
/// unlike std's hasher; five characters need no crate).
fn suffix(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..5)
        .map(|_| {
            let c = ALPHABET[(h % ALPHABET.len() as u64) as usize] as char;
            h /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// The projected source the plugin adds (`TokenVolumeSource`).
fn token_volume_source() -> ProjectedVolumeSource {
    ProjectedVolumeSource {
        default_mode: Some(DEFAULT_MODE),
        sources: Some(vec![
            VolumeProjection {
                service_account_token: Some(ServiceAccountTokenProjection {
                    path: "token".into(),
                    expiration_seconds: Some(TOKEN_EXPIRATION),
                    audience: None,
                }),
                ..Default::default()
            },
            VolumeProjection {
                config_map: Some(ConfigMapProjection {
                    name: ROOT_CA_CONFIG_MAP.into(),
                    items: Some(vec![KeyToPath {
                        key: "ca.crt".into(),
                        path: "ca.crt".into(),
                        mode: None,
                    }]),
                    optional: None,
                }),
                ..Default::default()
            },
            VolumeProjection {
                downward_api: Some(DownwardAPIProjection {
                    items: Some(vec![DownwardAPIVolumeFile {
                        path: "namespace".into(),
                        field_ref: Some(ObjectFieldSelector {
                            api_version: Some("v1".into()),
                            field_path: "metadata.namespace".into(),
                        }),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            },
        ]),
    }
}

/// Admits `pod` as the plugin does (see the module docs). Idempotent.
pub fn admit(pod: &mut Pod) {
    let key = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    );
    let Some(spec) = pod.spec.as_mut() else {
        return;
    };
    if spec
        .service_account_name
        .as_deref()
        .unwrap_or("")
        .is_empty()
    {
        spec.service_account_name = Some("default".into());
    }
    if spec.automount_service_account_token == Some(false) {
        return;
    }
    let existing = spec
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name.starts_with(VOLUME_PREFIX))
        .map(|v| v.name.clone());
    let name = existing
        .clone()
        .unwrap_or_else(|| format!("{VOLUME_PREFIX}{}", suffix(&key)));
    let mount = VolumeMount {
        name: name.clone(),
        read_only: Some(true),
        mount_path: MOUNT_PATH.into(),
        ..Default::default()
    };
    let mut needed = false;
    let init = spec.init_containers.iter_mut().flatten();
    for c in init.chain(spec.containers.iter_mut()) {
        let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
        if !mounts.iter().any(|m| m.mount_path == MOUNT_PATH) {
            mounts.push(mount.clone());
            // A Vec grown by a push keeps room for more, and these specs are kept for
            // the pod's life.
            mounts.shrink_to_fit();
            needed = true;
        }
    }
    if existing.is_none() && needed {
        let volumes = spec.volumes.get_or_insert_with(Vec::new);
        volumes.push(Volume {
            name,
            projected: Some(token_volume_source()),
            ..Default::default()
        });
        volumes.shrink_to_fit();
    }
}

/// What a service account may do on the agent's API: what RBAC's default roles give every
/// authenticated user (`system:discovery`, `system:public-info-viewer`: the discovery
/// documents, the version and the health checks), and nothing else, as in a cluster where
/// no Role binds it. `Err` is the API server's Forbidden message.
pub fn authorize(method: &str, path: &str, query: &str, user: &str) -> Result<(), String> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let get = method == "GET" || method == "HEAD";
    // Non-resource paths: discovery (`/api`, `/api/v1`, `/apis`, `/apis/G`, `/apis/G/V`),
    // the version, health and OpenAPI documents.
    let (group, rest) = match segs.as_slice() {
        ["api"] | ["api", _] | ["apis"] | ["apis", _] | ["apis", _, _] => (None, &[][..]),
        ["api", _, rest @ ..] => (Some(""), rest),
        ["apis", g, _, rest @ ..] => (Some(*g), rest),
        _ => (None, &[][..]),
    };
    let Some(group) = group else {
        let public = matches!(
            segs.first().copied(),
            Some("api" | "apis" | "version" | "healthz" | "livez" | "readyz" | "openapi")
        );
        if get && public {
            return Ok(());
        }
        let verb = method.to_lowercase();
        return Err(format!(
            "forbidden: User \"{user}\" cannot {verb} path \"{path}\""
        ));
    };
    let (ns, rest) = match rest {
        ["namespaces", ns, r, tail @ ..] => (Some(*ns), [&[*r][..], tail].concat()),
        r => (None, r.to_vec()),
    };
    let resource = rest.first().copied().unwrap_or("");
    let named = rest.len() > 1;
    let verb = match method {
        "GET" | "HEAD"
            if query
                .split('&')
                .any(|q| q == "watch=true" || q == "watch=1") =>
        {
            "watch"
        }
        "GET" | "HEAD" if named => "get",
        "GET" | "HEAD" => "list",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if named => "delete",
        "DELETE" => "deletecollection",
        m => {
            return Err(format!(
                "forbidden: User \"{user}\" cannot {m} path \"{path}\""
            ))
        }
    };
    let scope = match ns {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".into(),
    };
    Err(format!(
        "{resource} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{group}\" {scope}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn mounts_in_every_container_once_and_respects_opt_out() {
        let mut p = pod("metadata: {name: a, namespace: ns}\nspec:\n  initContainers: [{name: i}]\n  containers:\n  - {name: c}\n  - name: own\n    volumeMounts: [{name: x, mountPath: /var/run/secrets/kubernetes.io/serviceaccount}]\n  volumes: [{name: x, emptyDir: {}}]\n");
        admit(&mut p);
        let again = p.clone();
        admit(&mut p);
        assert_eq!(p, again, "admission is idempotent");
        let s = p.spec.as_ref().unwrap();
        assert_eq!(s.service_account_name.as_deref(), Some("default"));
        let vols = s.volumes.as_ref().unwrap();
        assert_eq!(vols.len(), 2);
        let name = &vols[1].name;
        assert!(name.starts_with(VOLUME_PREFIX) && name.len() == VOLUME_PREFIX.len() + 5);
        assert!(name[VOLUME_PREFIX.len()..]
            .bytes()
            .all(|b| ALPHABET.contains(&b)));
        let src = vols[1].projected.as_ref().unwrap();
        assert_eq!(src.default_mode, Some(0o644));
        let token = src.sources.as_ref().unwrap()[0]
            .service_account_token
            .as_ref()
            .unwrap();
        assert_eq!(token.expiration_seconds, Some(3607));
        let mounted = |c: &k8s_openapi::api::core::v1::Container| {
            c.volume_mounts
                .iter()
                .flatten()
                .filter(|m| m.mount_path == MOUNT_PATH)
                .map(|m| (m.name.clone(), m.read_only))
                .collect::<Vec<_>>()
        };
        let init = &s.init_containers.as_ref().unwrap()[0];
        assert_eq!(mounted(init), [(name.clone(), Some(true))]);
        assert_eq!(mounted(&s.containers[0]), [(name.clone(), Some(true))]);
        assert_eq!(mounted(&s.containers[1]), [("x".to_string(), None)]);

        let mut out = pod("metadata: {name: a}\nspec:\n  automountServiceAccountToken: false\n  serviceAccountName: robot\n  containers: [{name: c}]\n");
        admit(&mut out);
        let s = out.spec.as_ref().unwrap();
        assert!(s.volumes.as_ref().is_none_or(|v| v.is_empty()));
        assert!(s.containers[0]
            .volume_mounts
            .as_ref()
            .is_none_or(|v| v.is_empty()));
        assert_eq!(s.service_account_name.as_deref(), Some("robot"));
    }

    #[test]
    fn service_accounts_may_discover_only() {
        let u = "system:serviceaccount:default:default";
        for p in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps/v1",
            "/version",
            "/healthz",
        ] {
            assert_eq!(authorize("GET", p, "", u), Ok(()), "{p}");
        }
        assert_eq!(
            authorize("GET", "/api/v1/namespaces/default/pods", "", u).unwrap_err(),
            "pods is forbidden: User \"system:serviceaccount:default:default\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
        assert_eq!(
            authorize("DELETE", "/apis/apps/v1/namespaces/x/deployments/web", "", u).unwrap_err(),
            "deployments is forbidden: User \"system:serviceaccount:default:default\" cannot delete resource \"deployments\" in API group \"apps\" in the namespace \"x\""
        );
        assert_eq!(
            authorize("GET", "/api/v1/nodes", "watch=true", u).unwrap_err(),
            "nodes is forbidden: User \"system:serviceaccount:default:default\" cannot watch resource \"nodes\" in API group \"\" at the cluster scope"
        );
        assert!(authorize("POST", "/api", "", u).is_err());
        // The API server's metrics are for its administrators (system:monitoring).
        assert!(authorize("GET", "/metrics", "", u).is_err());
    }
}
