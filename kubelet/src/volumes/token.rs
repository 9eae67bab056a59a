//! The `serviceAccountToken` source of projected volumes. The agent is its node's token
//! issuer (there is no API server to ask for a TokenRequest): it signs bound tokens as the
//! API server does, ES256 JWTs with the claims of a bound token (iss, sub
//! `system:serviceaccount:NS:NAME`, aud, exp, iat, nbf, jti and the `kubernetes.io` binding
//! to the pod, its node and its service account), with a P-256 key made once under the
//! root dir (`sa.key`, 0600; its public half in `sa.pub`, for whoever verifies the tokens).
//!
//! As the kubelet's token manager does, a token is kept while younger than 80% of its
//! lifetime (and 24 h) and replaced after that; the volume's sync writes the new one through
//! the AtomicWriter. The API server refuses an `expirationSeconds` under 10 minutes; the
//! agent's `--service-account-token-min-expiration` lowers that floor so that tests can see
//! a rotation without waiting 8 minutes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use k8s_openapi::api::core::v1::{Pod, ServiceAccountTokenProjection};
use serde_json::{json, Value};

use super::atomic_writer::{File, Payload};
use crate::env::Facts;
use crate::spec;

/// The issuer the tokens name: the API server's default for a cluster of `cluster.local`.
pub const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// A token's lifetime when `expirationSeconds` is left out (the API's default).
const DEFAULT_EXPIRATION: i64 = 3600;
/// The kubelet refreshes a token past this share of its lifetime...
const REFRESH_SHARE: f64 = 0.8;
/// ...or past this age, whichever comes first.
const REFRESH_AGE: i64 = 24 * 3600;

static MIN_EXPIRATION: AtomicU64 = AtomicU64::new(600);

/// Lowers (or raises) the shortest `expirationSeconds` accepted (the API server's 600 s).
pub fn set_min_expiration(secs: u64) {
    MIN_EXPIRATION.store(secs.max(1), Ordering::Relaxed);
}

/// The node's signing key.
struct Issuer {
    key: EncodingKey,
    verify: DecodingKey,
    /// The key id, as the API server makes it: base64url of the SHA-256 of the public key.
    kid: String,
}

fn read_or_make_key(root: &Path) -> Result<(String, String), String> {
    let (priv_path, pub_path) = (root.join("sa.key"), root.join("sa.pub"));
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
    if priv_path.exists() {
        let private = read(&priv_path)?;
        let kp = rcgen::KeyPair::from_pem(&private)
            .map_err(|e| format!("{}: {e}", priv_path.display()))?;
        return Ok((private, kp.public_key_pem()));
    }
    let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("making the service account signing key: {e}"))?;
    let (private, public) = (kp.serialize_pem(), kp.public_key_pem());
    std::fs::create_dir_all(root).map_err(|e| format!("{}: {e}", root.display()))?;
    // The public half first: a private key on disk always has its public one beside it.
    crate::store::write_atomic(&pub_path, public.as_bytes())
        .map_err(|e| format!("{}: {e}", pub_path.display()))?;
    crate::store::write_private(&priv_path, private.as_bytes())
        .map_err(|e| format!("{}: {e}", priv_path.display()))?;
    Ok((private, public))
}

/// The issuer of the agent with this root dir, its key made on first use.
fn issuer(root: &Path) -> Result<Arc<Issuer>, String> {
    static ISSUERS: OnceLock<Mutex<HashMap<PathBuf, Arc<Issuer>>>> = OnceLock::new();
    let mut map = ISSUERS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(i) = map.get(root) {
        return Ok(i.clone());
    }
    let (private, public) = read_or_make_key(root)?;
    let key = EncodingKey::from_ec_pem(private.as_bytes()).map_err(|e| e.to_string())?;
    let verify = DecodingKey::from_ec_pem(public.as_bytes()).map_err(|e| e.to_string())?;
    let der = pem_body(&public);
    let kid = {
        use base64::Engine;
        let d = ring::digest::digest(&ring::digest::SHA256, &der);
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
    };
    let i = Arc::new(Issuer { key, verify, kid });
    map.insert(root.to_path_buf(), i.clone());
    Ok(i)
}

fn pem_body(pem: &str) -> Vec<u8> {
    use base64::Engine;
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap_or_default()
}

fn random_uuid() -> String {
    let x = format!("{:032x}", fastrand::u128(..));
    format!(
        "{}-{}-{}-{}-{}",
        &x[..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..]
    )
}

/// The claims of a bound token for this pod, issued `now`.
fn claims(pod: &Pod, facts: &Facts, aud: &[String], now: i64, ttl: i64) -> Value {
    let ns = spec::namespace(pod);
    let sa = spec::spec(pod)
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let local = crate::api::local::uid_of;
    json!({
        "aud": aud,
        "exp": now + ttl,
        "iat": now,
        "nbf": now,
        "iss": ISSUER,
        "jti": random_uuid(),
        "sub": format!("system:serviceaccount:{ns}:{sa}"),
        "kubernetes.io": {
            "namespace": ns,
            "node": {"name": facts.node_name, "uid": local(&format!("node/{}", facts.node_name))},
            "pod": {"name": pod.metadata.name.clone().unwrap_or_default(), "uid": facts.uid},
            "serviceaccount": {"name": sa, "uid": local(&format!("serviceaccount/{ns}/{sa}"))},
        },
    })
}

/// Is the token already in the volume still good for this request: ours, for the same
/// audience, pod and lifetime, and young enough? Answers its `iat` if so.
fn keep(i: &Issuer, old: &[u8], want: &Value, ttl: i64, now: i64) -> Option<i64> {
    let text = std::str::from_utf8(old).ok()?;
    let mut v = Validation::new(Algorithm::ES256);
    v.validate_exp = false;
    v.validate_aud = false;
    v.required_spec_claims = Default::default();
    let c = jsonwebtoken::decode::<Value>(text.trim(), &i.verify, &v)
        .ok()?
        .claims;
    let (iat, exp) = (
        c["iat"].as_i64().unwrap_or(0),
        c["exp"].as_i64().unwrap_or(0),
    );
    (c["aud"] == want["aud"]
        && c["sub"] == want["sub"]
        && c["kubernetes.io"]["pod"] == want["kubernetes.io"]["pod"]
        && exp - iat == ttl
        && now < rotate_at(iat, ttl))
    .then_some(iat)
}

/// Adds the token file of a `serviceAccountToken` source to a projected volume's payload;
/// `dir` is the volume (where the token in force, if any, is read from). Answers when the
/// token is due for rotation (unix seconds).
pub fn project(
    root: &Path,
    dir: &Path,
    pod: &Pod,
    facts: &Facts,
    src: &ServiceAccountTokenProjection,
    mode: i32,
    out: &mut Payload,
) -> Result<i64, String> {
    if !super::atomic_writer::valid_path(&src.path) {
        return Err(format!(
            "serviceAccountToken.path: Invalid value: {:?}: must be a relative path without '..'",
            src.path
        ));
    }
    let ttl = src.expiration_seconds.unwrap_or(DEFAULT_EXPIRATION);
    let min = MIN_EXPIRATION.load(Ordering::Relaxed) as i64;
    if ttl < min {
        return Err(format!(
            "serviceAccountToken.expirationSeconds: Invalid value: {ttl}: may not specify a duration less than {min} seconds"
        ));
    }
    if ttl > 1 << 32 {
        return Err(format!(
            "serviceAccountToken.expirationSeconds: Invalid value: {ttl}: may not specify a duration larger than 2^32 seconds"
        ));
    }
    let aud: Vec<String> = match src.audience.as_deref() {
        Some(a) if !a.is_empty() => vec![a.to_string()],
        _ => vec![ISSUER.to_string()],
    };
    let i = issuer(root)?;
    let now = chrono::Utc::now().timestamp();
    let want = claims(pod, facts, &aud, now, ttl);
    let file = |data: Vec<u8>| File {
        data,
        mode: (mode & 0o7777) as u32,
    };
    if let Ok(old) = std::fs::read(dir.join(&src.path)) {
        if let Some(iat) = keep(&i, &old, &want, ttl, now) {
            out.insert(src.path.clone(), file(old));
            return Ok(rotate_at(iat, ttl));
        }
    }
    let mut h = Header::new(Algorithm::ES256);
    h.kid = Some(i.kid.clone());
    let token = jsonwebtoken::encode(&h, &want, &i.key)
        .map_err(|e| format!("signing the service account token: {e}"))?;
    out.insert(src.path.clone(), file(token.into_bytes()));
    Ok(rotate_at(now, ttl))
}

/// The first second at which [`keep`] no longer keeps a token issued at `iat`.
fn rotate_at(iat: i64, ttl: i64) -> i64 {
    iat + ((REFRESH_SHARE * ttl as f64).ceil() as i64).min(REFRESH_AGE)
}

/// The user a bearer token of this node's issuer stands for (`system:serviceaccount:NS:SA`),
/// if it verifies with the node's key, has not expired and is meant for the API (its
/// audience). Unlike the API server, the bound pod is not looked up: a token of a deleted
/// pod is good until it expires.
pub fn authenticate(root: &Path, token: &str) -> Option<String> {
    let i = issuer(root).ok()?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_audience(&[ISSUER]);
    v.set_issuer(&[ISSUER]);
    v.leeway = 0;
    let t = jsonwebtoken::decode::<Value>(token, &i.verify, &v).ok()?;
    t.claims["sub"]
        .as_str()
        .filter(|s| s.starts_with("system:serviceaccount:"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_keeps_and_refreshes() {
        let root = tempfile::tempdir().unwrap();
        let vol = tempfile::tempdir().unwrap();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"serviceAccountName": "robot", "containers": []},
        }))
        .unwrap();
        let objects = crate::objects::Objects::default();
        let facts = Facts {
            uid: "u1",
            node_name: "n",
            pod_ip: "",
            host_ip: "",
            objects: &objects,
            node_milli_cpu: 0,
            node_memory: 0,
            services: &[],
        };
        let src = ServiceAccountTokenProjection {
            audience: Some("vault".into()),
            expiration_seconds: Some(600),
            path: "t/token".into(),
        };
        let mut p = Payload::new();
        project(root.path(), vol.path(), &pod, &facts, &src, 0o644, &mut p).unwrap();
        let token = String::from_utf8(p["t/token"].data.clone()).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let md = std::fs::metadata(root.path().join("sa.key")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        let public = std::fs::read(root.path().join("sa.pub")).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&["vault"]);
        v.set_issuer(&[ISSUER]);
        let c =
            jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_ec_pem(&public).unwrap(), &v)
                .unwrap()
                .claims;
        assert_eq!(c["sub"], "system:serviceaccount:ns:robot");
        assert_eq!(c["aud"], json!(["vault"]));
        assert_eq!(c["kubernetes.io"]["pod"], json!({"name": "p", "uid": "u1"}));
        assert_eq!(c["exp"].as_i64().unwrap() - c["iat"].as_i64().unwrap(), 600);
        // Not for the API (audience vault): no API user; for the API: the service account.
        assert_eq!(authenticate(root.path(), &token), None);
        let api_src = ServiceAccountTokenProjection {
            audience: None,
            ..src.clone()
        };
        let mut q = Payload::new();
        project(
            root.path(),
            vol.path(),
            &pod,
            &facts,
            &api_src,
            0o644,
            &mut q,
        )
        .unwrap();
        let api_token = String::from_utf8(q["t/token"].data.clone()).unwrap();
        assert_eq!(
            authenticate(root.path(), &api_token).as_deref(),
            Some("system:serviceaccount:ns:robot")
        );
        assert_eq!(authenticate(root.path(), &api_token[1..]), None);
        // In the volume and young: kept; older than 80% of its life: replaced.
        super::super::atomic_writer::write(vol.path(), &p).unwrap();
        let mut again = Payload::new();
        project(
            root.path(),
            vol.path(),
            &pod,
            &facts,
            &src,
            0o644,
            &mut again,
        )
        .unwrap();
        assert_eq!(again, p);
        let i = issuer(root.path()).unwrap();
        let now = chrono::Utc::now().timestamp();
        let want = claims(&pod, &facts, &["vault".into()], now, 600);
        assert!(keep(&i, token.as_bytes(), &want, 600, now + 470).is_some());
        assert_eq!(rotate_at(now, 600), now + 480);
        assert!(keep(&i, token.as_bytes(), &want, 600, now + 480).is_none());
        assert!(keep(&i, token.as_bytes(), &want, 3600, now).is_none());
        // Too short a lifetime is refused, as the API server refuses it.
        let short = ServiceAccountTokenProjection {
            expiration_seconds: Some(60),
            ..src.clone()
        };
        let e = project(
            root.path(),
            vol.path(),
            &pod,
            &facts,
            &short,
            0o644,
            &mut again,
        )
        .unwrap_err();
        assert!(
            e.contains("may not specify a duration less than 600 seconds"),
            "{e}"
        );
    }
}
