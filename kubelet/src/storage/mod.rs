//! PersistentVolumeClaims on the node, with a local provisioner as single-node
//! distributions ship one (k3s's local-path is the model): the node's default
//! StorageClass `local-path` (or a StorageClass of the manifests naming the same
//! provisioner) binds a claim to a directory `pvc-<uid>_<ns>_<name>` under the data root,
//! when the first pod that uses it is wanted (`WaitForFirstConsumer`, as local-path's class
//! says) or at once (`Immediate`). `requests.storage` becomes a project quota where the
//! filesystem has them. A claim that goes waits until no pod uses it (the
//! `kubernetes.io/pvc-protection` finalizer), then its directory goes (`Delete`) or stays
//! (`Retain`).

pub mod quota;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimStatus, Pod};
use k8s_openapi::api::storage::v1::StorageClass;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

pub const DEFAULT_CLASS: &str = "local-path";
pub const PROVISIONER: &str = "rancher.io/local-path";
const DEFAULT_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
/// Where the claim's quota stands: `enforced`, or `not enforced: <why>`.
pub const QUOTA_ANNOTATION: &str = "rrun.io/storage-quota";

/// A volume a claim is bound to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bound {
    pub volume: String,
    pub path: PathBuf,
    pub capacity: String,
    pub class: String,
    pub reclaim: String,
    pub quota: String,
    pub project: Option<u32>,
    pub at: Time,
}

/// A claim the agent keeps: from a manifest, or made from a StatefulSet's template
/// (`owner`, the set's `namespace/name`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimRec {
    pub claim: PersistentVolumeClaim,
    pub owner: Option<String>,
    pub bound: Option<Bound>,
    /// Deleted, waiting for its pods to go.
    #[serde(default)]
    pub deleting: bool,
}

impl ClaimRec {
    pub fn new(
        mut claim: PersistentVolumeClaim,
        owner: Option<String>,
        now: DateTime<Utc>,
    ) -> Self {
        claim.metadata.uid = Some(crate::controllers::replicaset::random_uid());
        claim.metadata.creation_timestamp = Some(Time(now));
        claim.status = None;
        ClaimRec {
            claim,
            owner,
            bound: None,
            deleting: false,
        }
    }

    fn ns(&self) -> &str {
        self.claim
            .metadata
            .namespace
            .as_deref()
            .unwrap_or("default")
    }

    fn name(&self) -> &str {
        self.claim.metadata.name.as_deref().unwrap_or("")
    }

    fn modes(&self) -> Vec<String> {
        self.claim
            .spec
            .as_ref()
            .and_then(|s| s.access_modes.clone())
            .unwrap_or_default()
    }

    fn request(&self) -> Option<String> {
        self.claim
            .spec
            .as_ref()
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .map(|q| q.0.clone())
    }

    /// The claim as the API shows it.
    pub fn published(&self) -> PersistentVolumeClaim {
        let mut c = self.claim.clone();
        let spec = c.spec.get_or_insert_with(Default::default);
        spec.volume_mode.get_or_insert_with(|| "Filesystem".into());
        let mut st = PersistentVolumeClaimStatus {
            phase: Some("Pending".into()),
            ..Default::default()
        };
        if let Some(b) = &self.bound {
            spec.volume_name = Some(b.volume.clone());
            spec.storage_class_name = Some(b.class.clone());
            st.phase = Some("Bound".into());
            st.access_modes = Some(self.modes());
            st.capacity = Some([("storage".to_string(), Quantity(b.capacity.clone()))].into());
            let a = c.metadata.annotations.get_or_insert_with(Default::default);
            a.insert("pv.kubernetes.io/bind-completed".into(), "yes".into());
            a.insert(
                "volume.kubernetes.io/storage-provisioner".into(),
                PROVISIONER.into(),
            );
            a.insert(QUOTA_ANNOTATION.into(), b.quota.clone());
        }
        if self.deleting {
            c.metadata.deletion_timestamp = Some(Time(Utc::now()));
            c.metadata.finalizers = Some(vec!["kubernetes.io/pvc-protection".into()]);
        }
        c.status = Some(st);
        c
    }
}

/// What the pods' volume set-up and admission read: claim `namespace/name` → (directory,
/// access modes) of the bound claims. Kept apart from the controllers' state so that a
/// pod's sync reads it without the controllers' lock.
static BINDINGS: RwLock<BTreeMap<String, (PathBuf, Vec<String>)>> = RwLock::new(BTreeMap::new());

fn publish(claims: &BTreeMap<String, ClaimRec>) {
    let map = claims
        .iter()
        .filter(|(_, r)| !r.deleting)
        .filter_map(|(k, r)| Some((k.clone(), (r.bound.as_ref()?.path.clone(), r.modes()))))
        .collect();
    *BINDINGS.write().unwrap_or_else(|e| e.into_inner()) = map;
}

/// The directory of a pod's `persistentVolumeClaim` volume (the kubelet's and scheduler's
/// words when it is not there).
pub fn claim_path(ns: &str, claim: &str) -> Result<PathBuf, String> {
    let g = BINDINGS.read().unwrap_or_else(|e| e.into_inner());
    match g.get(&format!("{ns}/{claim}")) {
        Some((p, _)) => Ok(p.clone()),
        None => Err(format!(
            "persistentvolumeclaim \"{claim}\" not found or not bound yet"
        )),
    }
}

/// The claims a pod's volumes name.
pub fn claims_of(pod: &Pod) -> Vec<String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    pod.spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref())
        .map(|c| format!("{ns}/{}", c.claim_name))
        .collect()
}

/// A second pod on a `ReadWriteOncePod` claim is refused (on a one-node cluster, the
/// scheduler's reason and words).
pub fn admit(pod: &Pod, admitted: &[&Pod]) -> Result<(), crate::resources::Refusal> {
    let g = BINDINGS.read().unwrap_or_else(|e| e.into_inner());
    for k in claims_of(pod) {
        let rwop = g
            .get(&k)
            .is_some_and(|(_, m)| m.iter().any(|m| m == "ReadWriteOncePod"));
        if rwop && admitted.iter().any(|o| claims_of(o).contains(&k)) {
            return Err(crate::resources::Refusal {
                reason: "Unschedulable".into(),
                message: "0/1 nodes are available: 1 node has pod using PersistentVolumeClaim with the same name and ReadWriteOncePod access mode.".into(),
            });
        }
    }
    Ok(())
}

/// The claim's validation, as the API server words it (`field: problem`).
pub fn validate(c: &PersistentVolumeClaim, field: &str) -> Result<(), String> {
    let Some(spec) = c.spec.as_ref() else {
        return Err(format!("{field}spec: Required value"));
    };
    let modes = spec.access_modes.clone().unwrap_or_default();
    if modes.is_empty() {
        return Err(format!(
            "{field}spec.accessModes: Required value: at least 1 access mode is required"
        ));
    }
    const KNOWN: [&str; 4] = [
        "ReadWriteOnce",
        "ReadOnlyMany",
        "ReadWriteMany",
        "ReadWriteOncePod",
    ];
    for m in &modes {
        if !KNOWN.contains(&m.as_str()) {
            return Err(format!(
                "{field}spec.accessModes: Unsupported value: \"{m}\": supported values: \"ReadOnlyMany\", \"ReadWriteMany\", \"ReadWriteOnce\", \"ReadWriteOncePod\""
            ));
        }
    }
    if modes.len() > 1 && modes.iter().any(|m| m == "ReadWriteOncePod") {
        return Err(format!("{field}spec.accessModes: Forbidden: may not use ReadWriteOncePod with other access modes"));
    }
    let storage = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"));
    match storage {
        None => Err(format!("{field}spec.resources[storage]: Required value")),
        Some(q) => match crate::quantity::bytes(&q.0) {
            Ok(n) if n > 0 => Ok(()),
            _ => Err(format!(
                "{field}spec.resources[storage]: Invalid value: \"{}\": must be greater than zero",
                q.0
            )),
        },
    }
}

/// The class a claim gets: its own `storageClassName`, or the default class.
fn class_of<'a>(
    c: &PersistentVolumeClaim,
    classes: &'a [StorageClass],
    builtin: &'a StorageClass,
) -> Result<&'a StorageClass, String> {
    let name = c.spec.as_ref().and_then(|s| s.storage_class_name.clone());
    let all = || classes.iter().chain(std::iter::once(builtin));
    match name {
        Some(n) => all()
            .find(|s| s.metadata.name.as_deref() == Some(n.as_str()))
            .ok_or_else(|| format!("storageclass.storage.k8s.io \"{n}\" not found")),
        None => Ok(classes
            .iter()
            .find(|s| {
                s.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(DEFAULT_ANNOTATION))
                    .is_some_and(|v| v == "true")
            })
            .unwrap_or(builtin)),
    }
}

/// The node's built-in class, as k3s installs it.
pub fn builtin_class() -> StorageClass {
    StorageClass {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(DEFAULT_CLASS.into()),
            annotations: Some([(DEFAULT_ANNOTATION.to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        provisioner: PROVISIONER.into(),
        reclaim_policy: Some("Delete".into()),
        volume_binding_mode: Some("WaitForFirstConsumer".into()),
        ..Default::default()
    }
}

/// A controller decision about a claim, for the events.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimEvent {
    pub claim: PersistentVolumeClaim,
    pub type_: &'static str,
    pub reason: &'static str,
    pub message: String,
}

fn project_id(uid: &str) -> u32 {
    // Above the ids people give by hand; stable for the claim.
    let h = uid.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    1_000_000 + h % 1_000_000_000
}

/// Makes a claim's volume: its directory (0777, as local-path's helper leaves it) and quota.
fn provision(rec: &ClaimRec, class: &StorageClass, root: &Path) -> Result<Bound, String> {
    let uid = rec.claim.metadata.uid.clone().unwrap_or_default();
    let volume = format!("pvc-{uid}");
    let path = root.join(format!("{volume}_{}_{}", rec.ns(), rec.name()));
    std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let capacity = rec.request().unwrap_or_default();
    let bytes = crate::quantity::bytes(&capacity).unwrap_or(0);
    let project = project_id(&uid);
    let (quota, project) = match quota::apply(&path, project, bytes) {
        Ok(()) => ("enforced".to_string(), Some(project)),
        Err(e) => (format!("not enforced: {e}"), None),
    };
    Ok(Bound {
        volume,
        path,
        capacity,
        class: class.metadata.name.clone().unwrap_or_default(),
        reclaim: class
            .reclaim_policy
            .clone()
            .unwrap_or_else(|| "Delete".into()),
        quota,
        project,
        at: Time(Utc::now()),
    })
}

/// Releases a claim's volume by its reclaim policy.
fn reclaim(b: &Bound) -> Result<(), String> {
    if b.reclaim != "Delete" {
        return Ok(());
    }
    if let Some(id) = b.project {
        quota::clear(&b.path, id);
    }
    match std::fs::remove_dir_all(&b.path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("{}: {e}", b.path.display())),
    }
}

/// One pass of the provisioner. `manifest` are the claims of the manifest directory;
/// claims with an owner are the StatefulSets' (added and removed by their controller);
/// `used` the claims that pods the node has (wanted or still stopping) name.
pub fn sync(
    claims: &mut BTreeMap<String, ClaimRec>,
    manifest: &[PersistentVolumeClaim],
    classes: &[StorageClass],
    used: &BTreeSet<String>,
    root: &Path,
    now: DateTime<Utc>,
) -> (bool, Vec<ClaimEvent>) {
    let mut changed = false;
    let mut events = Vec::new();
    let key_of = |c: &PersistentVolumeClaim| {
        format!(
            "{}/{}",
            c.metadata.namespace.as_deref().unwrap_or("default"),
            c.metadata.name.as_deref().unwrap_or("")
        )
    };
    let wanted: BTreeSet<String> = manifest.iter().map(key_of).collect();
    for c in manifest {
        let k = key_of(c);
        match claims.get_mut(&k) {
            Some(r) if r.owner.is_none() => {
                // A manifest claim's spec is immutable once bound but for the request.
                if r.deleting {
                    continue;
                }
                if r.bound.is_none() && r.claim.spec != c.spec {
                    r.claim.spec = c.spec.clone();
                    changed = true;
                }
            }
            Some(_) => {}
            None => {
                claims.insert(k, ClaimRec::new(c.clone(), None, now));
                changed = true;
            }
        }
    }
    for (k, r) in claims.iter_mut() {
        if r.owner.is_none() && !wanted.contains(k) && !r.deleting {
            r.deleting = true;
            changed = true;
        }
    }
    let builtin = builtin_class();
    let mut gone = Vec::new();
    for (k, r) in claims.iter_mut() {
        if r.deleting {
            if used.contains(k) {
                continue;
            }
            if let Some(b) = &r.bound {
                if let Err(e) = reclaim(b) {
                    events.push(ClaimEvent {
                        claim: r.published(),
                        type_: "Warning",
                        reason: "VolumeFailedDelete",
                        message: e,
                    });
                    continue;
                }
            }
            gone.push(k.clone());
            continue;
        }
        if r.bound.is_some() {
            continue;
        }
        let class = match class_of(&r.claim, classes, &builtin) {
            Ok(c) => c,
            Err(e) => {
                let ev = ClaimEvent {
                    claim: r.published(),
                    type_: "Warning",
                    reason: "ProvisioningFailed",
                    message: e,
                };
                if !events.contains(&ev) {
                    events.push(ev);
                }
                continue;
            }
        };
        let waits = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
        if waits && !used.contains(k) {
            let ev = ClaimEvent {
                claim: r.published(),
                type_: "Normal",
                reason: "WaitForFirstConsumer",
                message: "waiting for first consumer to be created before binding".into(),
            };
            if !events.contains(&ev) {
                events.push(ev);
            }
            continue;
        }
        match provision(r, class, root) {
            Ok(b) => {
                let msg = format!(
                    "Successfully provisioned volume {} ({}: requests.storage {})",
                    b.volume, b.quota, b.capacity
                );
                r.bound = Some(b);
                changed = true;
                events.push(ClaimEvent {
                    claim: r.published(),
                    type_: "Normal",
                    reason: "ProvisioningSucceeded",
                    message: msg,
                });
            }
            Err(e) => events.push(ClaimEvent {
                claim: r.published(),
                type_: "Warning",
                reason: "ProvisioningFailed",
                message: e,
            }),
        }
    }
    for k in gone {
        claims.remove(&k);
        changed = true;
    }
    publish(claims);
    (changed, events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, yaml: &str) -> PersistentVolumeClaim {
        let mut c: PersistentVolumeClaim = serde_yaml_ng::from_str(yaml).unwrap();
        c.metadata.name = Some(name.into());
        c.metadata.namespace = Some("default".into());
        c
    }

    const RWO: &str = "spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Mi}}}";

    #[test]
    fn validation_words() {
        let e = validate(&claim("a", "spec: {accessModes: [ReadWriteOnce]}"), "").unwrap_err();
        assert_eq!(e, "spec.resources[storage]: Required value");
        let e = validate(
            &claim("a", "spec: {resources: {requests: {storage: 1Mi}}}"),
            "",
        )
        .unwrap_err();
        assert!(e.starts_with("spec.accessModes: Required value"), "{e}");
        assert!(validate(&claim("a", RWO), "").is_ok());
    }

    #[test]
    fn bind_on_first_consumer_then_reclaim() {
        let root = tempfile::tempdir().unwrap();
        let mut claims = BTreeMap::new();
        let c = claim("data", RWO);
        let none = BTreeSet::new();
        let (ch, ev) = sync(
            &mut claims,
            std::slice::from_ref(&c),
            &[],
            &none,
            root.path(),
            Utc::now(),
        );
        assert!(ch);
        assert!(claims["default/data"].bound.is_none());
        assert_eq!(ev[0].reason, "WaitForFirstConsumer");
        let used: BTreeSet<String> = ["default/data".to_string()].into();
        let (_, ev) = sync(
            &mut claims,
            std::slice::from_ref(&c),
            &[],
            &used,
            root.path(),
            Utc::now(),
        );
        assert_eq!(ev[0].reason, "ProvisioningSucceeded");
        let b = claims["default/data"].bound.clone().unwrap();
        assert!(b.path.is_dir());
        assert_eq!(claim_path("default", "data").unwrap(), b.path);
        let p = claims["default/data"].published();
        assert_eq!(p.status.unwrap().phase.as_deref(), Some("Bound"));
        // Gone from the manifests while a pod uses it: kept, then deleted with its data.
        sync(&mut claims, &[], &[], &used, root.path(), Utc::now());
        assert!(claims["default/data"].deleting && b.path.is_dir());
        assert!(claim_path("default", "data").is_err());
        sync(&mut claims, &[], &[], &none, root.path(), Utc::now());
        assert!(claims.is_empty() && !b.path.exists());
        // A class that does not exist: a warning, no volume.
        let mut c2 = claim("x", RWO);
        c2.spec.as_mut().unwrap().storage_class_name = Some("fast".into());
        let (_, ev) = sync(&mut claims, &[c2], &[], &none, root.path(), Utc::now());
        assert!(ev[0].message.contains("\"fast\" not found"), "{ev:?}");
    }

    #[test]
    fn retain_class_keeps_the_directory() {
        let root = tempfile::tempdir().unwrap();
        let class: StorageClass = serde_yaml_ng::from_str(
            "metadata: {name: keep}\nprovisioner: rancher.io/local-path\n\
             reclaimPolicy: Retain\nvolumeBindingMode: Immediate\n",
        )
        .unwrap();
        let mut c = claim("kept", RWO);
        c.spec.as_mut().unwrap().storage_class_name = Some("keep".into());
        let mut claims = BTreeMap::new();
        let none = BTreeSet::new();
        let classes = std::slice::from_ref(&class);
        // Immediate: bound with no pod.
        sync(
            &mut claims,
            std::slice::from_ref(&c),
            classes,
            &none,
            root.path(),
            Utc::now(),
        );
        let b = claims["default/kept"].bound.clone().unwrap();
        assert_eq!((b.class.as_str(), b.reclaim.as_str()), ("keep", "Retain"));
        std::fs::write(b.path.join("f"), "x").unwrap();
        sync(&mut claims, &[], classes, &none, root.path(), Utc::now());
        assert!(claims.is_empty());
        assert_eq!(std::fs::read_to_string(b.path.join("f")).unwrap(), "x");
    }
}
