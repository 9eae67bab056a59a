//! A pod's volumes, laid out as the kubelet lays them out under its root dir
//! (`pods/<uid>/volumes/kubernetes.io~<plugin>/<name>`), and the CRI mounts of a
//! container's `volumeMounts`.
//!
//! Set-up is idempotent. It runs when a container starts and again when what the files are
//! made of changes (the ConfigMaps and Secrets, the pod's labels, annotations or IP), when
//! a projected token is due for rotation, and at least once a minute (the kubelet's sync
//! period), so that a changed ConfigMap or Secret reaches its volumes' files at once
//! (through the AtomicWriter's one rename); `subPath` mounts and env keep what they had
//! until the container restarts.
//! Secret, projected and downward API volumes live on a tmpfs (their bytes never reach a
//! disk), as do `emptyDir`s of `medium: Memory`.

pub mod atomic_writer;
pub mod host_path;
pub mod payload;
pub mod subpath;
pub mod token;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cri_proto::api;
use k8s_openapi::api::core::v1::{Container, Pod};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::env::Facts;
use crate::objects::Kind;
use crate::spec;

/// File modes written as YAML 1.1 octals (`defaultMode: 0400`), which kubectl's YAML
/// reads as numbers and a YAML 1.2 reader leaves as strings, made numbers.
pub fn octal_modes(mut doc: serde_json::Value) -> serde_json::Value {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if k == "mode" || k == "defaultMode" {
                        if let Some(n) = x
                            .as_str()
                            .filter(|s| s.len() > 1 && s.starts_with('0'))
                            .and_then(|s| i64::from_str_radix(&s[1..], 8).ok())
                        {
                            *x = n.into();
                        }
                    }
                    walk(x);
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut doc);
    doc
}

/// A volume ready for mounts: where it is on the node, and whether every mount of it is
/// read-only (the kubelet mounts ConfigMap, Secret, downward API and projected volumes so).
#[derive(Debug, Clone)]
pub struct Ready {
    pub path: PathBuf,
    pub read_only: bool,
}

pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

fn volume_dir(root: &Path, uid: &str, plugin: &str, name: &str) -> PathBuf {
    pod_dir(root, uid)
        .join("volumes")
        .join(format!("kubernetes.io~{plugin}"))
        .join(name)
}

/// Undoes the escapes of `/proc/self/mountinfo` (`\040` for a space, ...).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points of this mount namespace.
fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(|p| PathBuf::from(unescape(p))))
        .collect()
}

pub fn is_mount_point(p: &Path) -> bool {
    let p = std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    mount_points().contains(&p)
}

/// Mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut v: Vec<PathBuf> = mount_points()
        .into_iter()
        .filter(|m| m.starts_with(&dir))
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    v.dedup();
    v
}

fn tmpfs(dir: &Path, size: Option<i64>) -> Result<(), String> {
    if is_mount_point(dir) {
        return Ok(());
    }
    let opts = size.map(|s| format!("size={s}"));
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        opts.as_deref(),
    )
    .map_err(|e| format!("mounting a tmpfs on {}: {e}", dir.display()))
}

fn make_dir(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

/// A pod's volumes once set up.
pub struct Volumes {
    /// By volume name.
    pub ready: HashMap<String, Ready>,
    /// When the first projected token must be rotated (unix seconds), if any.
    pub rotate_at: Option<i64>,
}

/// How often a pod's volume files are made again when nothing they are made of changed:
/// the kubelet's default `syncFrequency`. It repairs files changed behind the agent's back.
pub const RESYNC: std::time::Duration = std::time::Duration::from_secs(60);

/// What a pod's volume files were last made from. Making them is not free (a mountinfo
/// read for each tmpfs, every file compared, a token's signature checked), so the pod's
/// sync makes them again only when this changes or `due` passes: once a second for 100
/// pods it was most of the agent's CPU.
pub struct Synced {
    sandbox: String,
    objects: u64,
    pod_ip: String,
    labels: Option<std::collections::BTreeMap<String, String>>,
    annotations: Option<std::collections::BTreeMap<String, String>>,
    due: std::time::Instant,
}

impl Synced {
    /// The state of a sync that succeeded now, with the tokens' next rotation.
    pub fn new(sandbox: &str, objects: u64, pod_ip: &str, pod: &Pod, v: &Volumes) -> Synced {
        let now = std::time::Instant::now();
        let rotate = v.rotate_at.map(|at| {
            let secs = at.saturating_sub(chrono::Utc::now().timestamp()).max(0);
            std::time::Duration::from_secs(secs as u64)
        });
        Synced {
            sandbox: sandbox.into(),
            objects,
            pod_ip: pod_ip.into(),
            labels: pod.metadata.labels.clone(),
            annotations: pod.metadata.annotations.clone(),
            due: now + rotate.map_or(RESYNC, |r| r.min(RESYNC)),
        }
    }

    /// Are the files still what these inputs make?
    pub fn fresh(&self, sandbox: &str, objects: u64, pod_ip: &str, pod: &Pod) -> bool {
        std::time::Instant::now() < self.due
            && self.sandbox == sandbox
            && self.objects == objects
            && self.pod_ip == pod_ip
            && self.labels == pod.metadata.labels
            && self.annotations == pod.metadata.annotations
    }
}

/// Sets up (or refreshes) every volume of the pod. The error is the kubelet's
/// `MountVolume.SetUp failed for volume "x" : ...`.
pub fn setup(root: &Path, pod: &Pod, uid: &str, facts: &Facts) -> Result<Volumes, String> {
    let ns = spec::namespace(pod);
    let mut out = Volumes {
        ready: HashMap::new(),
        rotate_at: None,
    };
    for v in spec::spec(pod).volumes.iter().flatten() {
        let r = setup_one(root, pod, uid, facts, ns, v, &mut out.rotate_at)
            .map_err(|e| format!("MountVolume.SetUp failed for volume \"{}\" : {e}", v.name))?;
        out.ready.insert(v.name.clone(), r);
    }
    Ok(out)
}

fn setup_one(
    root: &Path,
    pod: &Pod,
    uid: &str,
    facts: &Facts,
    ns: &str,
    v: &k8s_openapi::api::core::v1::Volume,
    rotate_at: &mut Option<i64>,
) -> Result<Ready, String> {
    let files = |plugin: &str, on_tmpfs: bool, p: &atomic_writer::Payload| {
        let dir = volume_dir(root, uid, plugin, &v.name);
        make_dir(&dir)?;
        if on_tmpfs {
            tmpfs(&dir, None)?;
        }
        atomic_writer::write(&dir, p).map_err(|e| e.to_string())?;
        Ok::<_, String>(Ready {
            path: dir,
            read_only: true,
        })
    };
    let mut p = atomic_writer::Payload::new();
    if let Some(e) = &v.empty_dir {
        let dir = volume_dir(root, uid, "empty-dir", &v.name);
        make_dir(&dir)?;
        if e.medium.as_deref() == Some("Memory") {
            let size = e
                .size_limit
                .as_ref()
                .map(|q| crate::quantity::bytes(&q.0))
                .transpose()
                .map_err(|e| format!("sizeLimit: {e}"))?;
            tmpfs(&dir, size)?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| e.to_string())?;
        return Ok(Ready {
            path: dir,
            read_only: false,
        });
    }
    if let Some(h) = &v.host_path {
        let path = PathBuf::from(&h.path);
        host_path::check(&path, h.type_.as_deref().unwrap_or(""))?;
        return Ok(Ready {
            path,
            read_only: false,
        });
    }
    if let Some(c) = &v.persistent_volume_claim {
        // The claim's own directory, shared by every pod that mounts it.
        return Ok(Ready {
            path: crate::storage::claim_path(ns, &c.claim_name)?,
            read_only: c.read_only.unwrap_or(false),
        });
    }
    if let Some(c) = &v.config_map {
        payload::object(
            facts,
            ns,
            Kind::ConfigMap,
            &c.name,
            c.items.as_ref(),
            c.default_mode.unwrap_or(payload::DEFAULT_MODE),
            c.optional.unwrap_or(false),
            &mut p,
        )?;
        return files("configmap", false, &p);
    }
    if let Some(s) = &v.secret {
        payload::object(
            facts,
            ns,
            Kind::Secret,
            s.secret_name.as_deref().unwrap_or(""),
            s.items.as_ref(),
            s.default_mode.unwrap_or(payload::DEFAULT_MODE),
            s.optional.unwrap_or(false),
            &mut p,
        )?;
        return files("secret", true, &p);
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(payload::DEFAULT_MODE);
        payload::downward(pod, facts, d.items.as_ref(), mode, &mut p)?;
        return files("downward-api", true, &p);
    }
    if let Some(pr) = &v.projected {
        let mode = pr.default_mode.unwrap_or(payload::DEFAULT_MODE);
        for s in pr.sources.iter().flatten() {
            if let Some(c) = &s.config_map {
                let opt = c.optional.unwrap_or(false);
                let items = c.items.as_ref();
                payload::object(
                    facts,
                    ns,
                    Kind::ConfigMap,
                    &c.name,
                    items,
                    mode,
                    opt,
                    &mut p,
                )?;
            } else if let Some(c) = &s.secret {
                let opt = c.optional.unwrap_or(false);
                let items = c.items.as_ref();
                payload::object(facts, ns, Kind::Secret, &c.name, items, mode, opt, &mut p)?;
            } else if let Some(d) = &s.downward_api {
                payload::downward(pod, facts, d.items.as_ref(), mode, &mut p)?;
            } else if let Some(t) = &s.service_account_token {
                let dir = volume_dir(root, uid, "projected", &v.name);
                let at = token::project(root, &dir, pod, facts, t, mode, &mut p)?;
                *rotate_at = Some(rotate_at.map_or(at, |r| r.min(at)));
            } else {
                return Err(
                    "projected: only configMap, secret, downwardAPI and serviceAccountToken sources are supported"
                        .into(),
                );
            }
        }
        return files("projected", true, &p);
    }
    Err("unsupported volume type (supported: emptyDir, hostPath, persistentVolumeClaim, configMap, secret, downwardAPI, projected)".into())
}

/// The CRI mounts of a container's `volumeMounts`; `env` expands `subPathExpr`.
pub fn container_mounts(
    root: &Path,
    uid: &str,
    c: &Container,
    ready: &HashMap<String, Ready>,
    env: &[(String, String)],
) -> Result<Vec<api::Mount>, String> {
    let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = Vec::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let Some(r) = ready.get(&m.name) else {
            return Err(format!("volumeMounts[{i}]: no volume named {:?}", m.name));
        };
        let sub = match (&m.sub_path, &m.sub_path_expr) {
            (Some(s), _) if !s.is_empty() => s.clone(),
            (_, Some(e)) if !e.is_empty() => {
                crate::env::expand(e, |n| vars.get(n).map(|v| v.to_string()))
            }
            _ => String::new(),
        };
        let host_path = if sub.is_empty() {
            r.path.clone()
        } else {
            let target = pod_dir(root, uid)
                .join("volume-subpaths")
                .join(&m.name)
                .join(&c.name)
                .join(i.to_string());
            subpath::prepare(&r.path, &sub, &target)?;
            target
        };
        out.push(api::Mount {
            container_path: m.mount_path.clone(),
            host_path: host_path.display().to_string(),
            readonly: r.read_only || m.read_only.unwrap_or(false),
            propagation: match m.mount_propagation.as_deref() {
                Some("HostToContainer") => api::MountPropagation::PropagationHostToContainer as i32,
                Some("Bidirectional") => api::MountPropagation::PropagationBidirectional as i32,
                _ => api::MountPropagation::PropagationPrivate as i32,
            },
            ..Default::default()
        });
    }
    Ok(out)
}

/// Removes a pod's volumes: its tmpfs and subpath mounts are unmounted, then its directory
/// removed. A mount that stays keeps the directory (never recurse into a mounted hostPath).
pub fn teardown(root: &Path, uid: &str) -> Result<(), String> {
    let dir = pod_dir(root, uid);
    if !dir.exists() {
        return Ok(());
    }
    for m in mounts_under(&dir) {
        let _ = umount2(&m, MntFlags::MNT_DETACH);
    }
    let left = mounts_under(&dir);
    if !left.is_empty() {
        return Err(format!("{}: mounts remain: {left:?}", dir.display()));
    }
    std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))
}
