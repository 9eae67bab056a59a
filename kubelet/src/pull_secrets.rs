//! `imagePullSecrets`: the pod's `kubernetes.io/dockerconfigjson` (or legacy
//! `kubernetes.io/dockercfg`) Secrets into the CRI `AuthConfig` of a pull, matched on the
//! image's registry host as the kubelet's keyring matches them (the first secret naming
//! the registry wins).

use base64::Engine;
use cri_proto::api;
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;

use crate::objects::{Kind, Objects};
use crate::spec;

/// The registry host of an image reference (`docker.io` for short names).
pub fn registry_of(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The host of a docker config key (`https://index.docker.io/v1/`, `reg:5000`, ...), with
/// Docker Hub's aliases folded into `docker.io`.
fn key_host(key: &str) -> &str {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = k.split('/').next().unwrap_or(k);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io",
        h => h,
    }
}

fn auth_of(entry: &Value) -> api::AuthConfig {
    let s = |k: &str| {
        entry
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (mut username, mut password) = (s("username"), s("password"));
    let auth = s("auth");
    if username.is_empty() && !auth.is_empty() {
        if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(auth.trim()) {
            let text = String::from_utf8_lossy(&b);
            if let Some((u, p)) = text.split_once(':') {
                username = u.to_string();
                password = p.to_string();
            }
        }
    }
    api::AuthConfig {
        username,
        password,
        auth,
        // Empty, as the kubelet's keyring leaves it: containerd's CRI parses a non-empty
        // one as a URL and refuses a bare `host:port` ("first path segment in URL cannot
        // contain colon"); the match on the image's registry is done here already.
        server_address: String::new(),
        identity_token: s("identitytoken"),
        registry_token: s("registrytoken"),
    }
}

/// The credentials for pulling `image` for `pod`, if one of its pull secrets has some.
pub fn auth_for(pod: &Pod, objects: &Objects, image: &str) -> Option<api::AuthConfig> {
    let want = registry_of(image);
    let ns = spec::namespace(pod);
    for r in spec::spec(pod).image_pull_secrets.iter().flatten() {
        let Some(s) = objects.get(Kind::Secret, ns, &r.name) else {
            continue;
        };
        let doc: Option<Value> = match s.type_.as_str() {
            "kubernetes.io/dockerconfigjson" => s
                .data
                .get(".dockerconfigjson")
                .and_then(|b| serde_json::from_slice::<Value>(b).ok())
                .and_then(|v| v.get("auths").cloned()),
            "kubernetes.io/dockercfg" => s
                .data
                .get(".dockercfg")
                .and_then(|b| serde_json::from_slice(b).ok()),
            _ => None,
        };
        let Some(Value::Object(auths)) = doc else {
            continue;
        };
        for (key, entry) in &auths {
            if key_host(key) == want {
                return Some(auth_of(entry));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_and_auth() {
        assert_eq!(registry_of("busybox"), "docker.io");
        assert_eq!(registry_of("library/busybox:1"), "docker.io");
        assert_eq!(registry_of("127.0.0.1:5000/x/y"), "127.0.0.1:5000");
        assert_eq!(registry_of("localhost/x"), "localhost");
        assert_eq!(key_host("https://index.docker.io/v1/"), "docker.io");
        let a = auth_of(
            &serde_json::json!({"auth": base64::engine::general_purpose::STANDARD.encode("bob:s3cret")}),
        );
        assert_eq!(
            (a.username.as_str(), a.password.as_str()),
            ("bob", "s3cret")
        );
        assert_eq!(a.server_address, "");
    }
}
