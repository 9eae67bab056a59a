//! What the agent knows, shared by the reconcile loop, the probe workers and the API: the
//! desired pods, the last status of each, events, probe results and the CRI caches.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use chrono::{DateTime, Utc};
use cri_proto::api;
use k8s_openapi::api::core::v1::{Event, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use tokio::sync::Notify;

use crate::config::Config;
use crate::cri::Cri;
use crate::manifest::Desired;
use crate::metrics::Metrics;
use crate::resources::Refusal;
use crate::store::Store;

/// Events kept for `describe` (a ring: the oldest go first).
pub const MAX_EVENTS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// A probe's current verdict for one container instance (by CRI id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Unknown,
    Success,
    Failure,
}

/// A waiting reason set by the last attempt to start a container (ErrImagePull, ...).
#[derive(Debug, Clone)]
pub struct Waiting {
    pub reason: String,
    pub message: String,
}

#[derive(Default)]
pub struct Inner {
    pub desired: BTreeMap<String, Desired>,
    pub manifest_errors: BTreeMap<PathBuf, String>,
    /// The ConfigMaps and Secrets in force.
    pub objects: std::sync::Arc<crate::objects::Objects>,
    /// Pods with their last computed status, by `namespace/name`. Boxed: a map node holds
    /// eleven values inline, and a `Pod` is 2.2 KB.
    pub pods: BTreeMap<String, Box<Pod>>,
    pub admitted: HashSet<String>,
    pub refused: HashMap<String, Refusal>,
    pub events: VecDeque<Event>,
    pub cri_up: bool,
    /// The runtime's name (`containerd`, `rrun-cri`), for container ids (`<runtime>://<id>`).
    pub runtime_name: String,
    /// (uid, container name) → why it is waiting.
    pub waiting: HashMap<(String, String), Waiting>,
    /// (container id, probe) → verdict.
    pub probes: HashMap<(String, ProbeKind), Verdict>,
    /// Container id → its CRI status (refreshed when its state changes).
    pub statuses: HashMap<String, api::ContainerStatus>,
    /// Sandbox id → pod IP.
    pub pod_ips: HashMap<String, String>,
    /// Pod uid → when the agent first saw it wanted (for the start-duration metric).
    pub first_seen: HashMap<String, Instant>,
    pub started_reported: HashSet<String>,
    /// When memory was last seen under the eviction threshold (MemoryPressure while the
    /// transition period has not passed since).
    pub memory_pressure: Option<Instant>,
    /// Pod uid → what its volume files were last made from (pod.rs `refresh_volumes`).
    pub volume_syncs: HashMap<String, crate::volumes::Synced>,
    /// (uid, image) → image pull back-off.
    pub pull_backoff: HashMap<(String, String), (Instant, std::time::Duration)>,
}

pub struct Shared {
    pub config: Config,
    pub cri: Cri,
    pub inner: Mutex<Inner>,
    pub store: Mutex<Store>,
    pub wake: Notify,
    /// The manifest directory's scans (API writes wait for theirs).
    pub scans: crate::manifest::Scans,
    /// The controllers' passes: the view of Deployments, Services, Jobs... the API reads is
    /// theirs, so a write also waits for a pass after its scan.
    pub passes: crate::manifest::Scans,
    pub metrics: Metrics,
    pub workloads: crate::controllers::Handle,
    /// What the API's watches wait on (changes.rs).
    pub changes: crate::changes::Changes,
}

impl Shared {
    /// The agent's state; a mutable access marks a change for the API's watches.
    pub fn lock(&self) -> crate::changes::Guard<'_, Inner> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        crate::changes::Guard::new(g, &self.changes)
    }

    /// The agent's state for a write of its own bookkeeping, which the API does not serve
    /// (volume syncs): no change is marked, so it wakes no watch.
    pub fn lock_unserved(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store is not served as such: what of it the API shows (restarts, evictions) is
    /// in the pods' status, which the next sync writes through [`Shared::lock`].
    pub fn store(&self) -> std::sync::MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records an event about a pod (`Normal` or `Warning`), folding a repeat of the last
    /// one into its count as the kubelet's recorder does.
    pub fn event(&self, pod: &Pod, uid: &str, kind: &str, reason: &str, message: String) {
        let now = Time(Utc::now());
        let mut g = self.lock();
        let same = g.events.iter_mut().rev().take(20).find(|e| {
            e.involved_object.uid.as_deref() == Some(uid)
                && e.reason.as_deref() == Some(reason)
                && e.message.as_deref() == Some(message.as_str())
        });
        if let Some(e) = same {
            e.count = Some(e.count.unwrap_or(1) + 1);
            e.last_timestamp = Some(now);
            return;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let n = g.events.len();
        tracing::info!(pod = %format!("{ns}/{name}"), reason, "{message}");
        g.events.push_back(Event {
            metadata: ObjectMeta {
                name: Some(format!(
                    "{name}.{:x}{n:x}",
                    Utc::now().timestamp_nanos_opt().unwrap_or(0)
                )),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: ObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                name: Some(name),
                namespace: Some(ns),
                uid: Some(uid.to_string()),
                ..Default::default()
            },
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(kind.into()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(k8s_openapi::api::core::v1::EventSource {
                component: Some("kubelet".into()),
                host: Some(self.config.node_name.clone()),
            }),
            ..Default::default()
        });
        while g.events.len() > MAX_EVENTS {
            g.events.pop_front();
        }
    }
}

/// CRI nanoseconds into an API time.
pub fn time_of(ns: i64) -> Option<Time> {
    (ns > 0).then(|| Time(DateTime::<Utc>::from_timestamp_nanos(ns)))
}
