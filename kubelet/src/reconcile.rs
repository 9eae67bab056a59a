//! The level-triggered loop: every second (or when woken by a manifest change, a probe or a
//! finished action) the CRI's pods and containers are listed, and each wanted pod gets a
//! sync task that moves it one step towards its spec; pods no manifest wants are removed.
//! A pod's sync runs alone (a slow stop never holds up the other pods).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cri_proto::api;
use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::task::JoinHandle;

use crate::cri::{req, Cri};
use crate::eviction::GRACE_SECONDS;
use crate::manifest::Desired;
use crate::probes::{self, Target};
use crate::spec::{self, CONTAINER_NAME, POD_UID};
use crate::state::{ProbeKind, Shared, Verdict, Waiting};
use crate::status;

pub const SANDBOX_READY: i32 = 0;
pub const RUNNING: i32 = 1;
pub const EXITED: i32 = 2;
pub const CREATED: i32 = 0;

/// One listing of the CRI.
#[derive(Default, Clone)]
pub struct Snapshot {
    pub sandboxes: Vec<api::PodSandbox>,
    pub containers: Vec<api::Container>,
}

/// A pod's part of a snapshot.
#[derive(Default, Clone)]
pub struct PodView {
    /// Newest first.
    pub sandboxes: Vec<api::PodSandbox>,
    /// All containers of the pod's sandboxes, with their CRI status.
    pub containers: Vec<(api::Container, api::ContainerStatus)>,
}

impl PodView {
    pub fn ready_sandbox(&self) -> Option<&api::PodSandbox> {
        self.sandboxes.iter().find(|s| s.state == SANDBOX_READY)
    }

    /// The instances of container `name` in sandbox `sb`, newest attempt first.
    pub fn instances(&self, sb: &str, name: &str) -> Vec<&(api::Container, api::ContainerStatus)> {
        let mut v: Vec<_> = self
            .containers
            .iter()
            .filter(|(c, _)| c.pod_sandbox_id == sb && cname(c) == name)
            .collect();
        v.sort_by_key(|(c, s)| std::cmp::Reverse((attempt(c), s.created_at)));
        v
    }
}

pub fn cname(c: &api::Container) -> &str {
    c.labels
        .get(CONTAINER_NAME)
        .map(String::as_str)
        .or(c.metadata.as_ref().map(|m| m.name.as_str()))
        .unwrap_or("")
}

pub fn attempt(c: &api::Container) -> u32 {
    c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0)
}

fn uid_of_sandbox(s: &api::PodSandbox) -> Option<&str> {
    s.labels.get(POD_UID).map(String::as_str)
}

/// Lists sandboxes and containers, refreshing the status cache of containers whose state
/// changed. `Err` when the endpoint is unreachable.
async fn relist(shared: &Shared) -> Result<Snapshot, ()> {
    let Some(mut c) = shared.cri.get().await else {
        return Err(());
    };
    let sandboxes = c
        .runtime
        .list_pod_sandbox(req(api::ListPodSandboxRequest::default()))
        .await;
    let containers = c
        .runtime
        .list_containers(req(api::ListContainersRequest::default()))
        .await;
    let (sandboxes, containers) = match (sandboxes, containers) {
        (Ok(s), Ok(c)) => (s.into_inner().items, c.into_inner().containers),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!("listing the CRI: {}", e.message());
            if Cri::is_transport(&e) {
                shared.cri.reset().await;
            }
            return Err(());
        }
    };
    let sandboxes: Vec<_> = sandboxes
        .into_iter()
        .filter(|s| uid_of_sandbox(s).is_some())
        .collect();
    let containers: Vec<_> = containers
        .into_iter()
        .filter(|c| c.labels.contains_key(POD_UID))
        .collect();
    // Statuses: fetched once per container state.
    let stale: Vec<String> = {
        let g = shared.lock();
        containers
            .iter()
            .filter(|ct| {
                g.statuses
                    .get(&ct.id)
                    .is_none_or(|s| stale_status(s, ct.state))
            })
            .map(|ct| ct.id.clone())
            .collect()
    };
    for id in stale {
        if let Ok(r) = c
            .runtime
            .container_status(req(api::ContainerStatusRequest {
                container_id: id.clone(),
                verbose: false,
            }))
            .await
        {
            if let Some(st) = r.into_inner().status {
                shared.lock().statuses.insert(id, st);
            }
        }
    }
    let missing_ips: Vec<String> = {
        let g = shared.lock();
        sandboxes
            .iter()
            .filter(|s| s.state == SANDBOX_READY && !g.pod_ips.contains_key(&s.id))
            .map(|s| s.id.clone())
            .collect()
    };
    for id in missing_ips {
        if let Ok(r) = c
            .runtime
            .pod_sandbox_status(req(api::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: false,
            }))
            .await
        {
            let ip = r
                .into_inner()
                .status
                .and_then(|s| s.network)
                .map(|n| n.ip)
                .unwrap_or_default();
            shared.lock().pod_ips.insert(id, ip);
        }
    }
    let mut g = shared.lock();
    let live: HashSet<&str> = containers.iter().map(|c| c.id.as_str()).collect();
    let live_sb: HashSet<&str> = sandboxes.iter().map(|s| s.id.as_str()).collect();
    // Tested first: a write marks a change for the API's watches (changes.rs).
    if g.statuses.keys().any(|id| !live.contains(id.as_str())) {
        g.statuses.retain(|id, _| live.contains(id.as_str()));
    }
    if g.probes.keys().any(|(id, _)| !live.contains(id.as_str())) {
        g.probes.retain(|(id, _), _| live.contains(id.as_str()));
    }
    if g.pod_ips.keys().any(|id| !live_sb.contains(id.as_str())) {
        g.pod_ips.retain(|id, _| live_sb.contains(id.as_str()));
    }
    Ok(Snapshot {
        sandboxes,
        containers,
    })
}

/// Is a cached status out of date? A runtime may answer a container's new state before
/// its times (started_at of a just-started one, both of one that exited at once): such a
/// status is fetched again.
fn stale_status(s: &api::ContainerStatus, listed: i32) -> bool {
    s.state != listed
        || (s.state == RUNNING && s.started_at == 0)
        || (s.state == EXITED && s.finished_at == 0)
}

/// Every pod's part of a snapshot, in one pass (a pass per pod was quadratic in the pods).
fn views(shared: &Shared, snap: &Snapshot) -> HashMap<String, PodView> {
    let mut out: HashMap<String, PodView> = HashMap::new();
    for s in &snap.sandboxes {
        if let Some(uid) = uid_of_sandbox(s) {
            out.entry(uid.to_string())
                .or_default()
                .sandboxes
                .push(s.clone());
        }
    }
    for v in out.values_mut() {
        v.sandboxes.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    }
    let g = shared.lock();
    for c in &snap.containers {
        let (Some(uid), Some(st)) = (c.labels.get(POD_UID), g.statuses.get(&c.id)) else {
            continue;
        };
        out.entry(uid.clone())
            .or_default()
            .containers
            .push((c.clone(), st.clone()));
    }
    out
}

/// The loop. Never returns.
pub async fn run(shared: Arc<Shared>) {
    let mut syncs: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut kills: HashMap<String, JoinHandle<()>> = HashMap::new();
    let mut probe_workers: HashMap<(String, ProbeKind), JoinHandle<()>> = HashMap::new();
    let mut down_since: Option<Instant> = None;
    let mut retry = Duration::from_millis(200);
    loop {
        // Pods whose step is still under way when the listing starts are left out of this
        // round: the listing may predate what that step did (no double creates).
        syncs.retain(|_, h| !h.is_finished());
        kills.retain(|_, h| !h.is_finished());
        let busy: HashSet<String> = syncs.keys().chain(kills.keys()).cloned().collect();
        let snap = match relist(&shared).await {
            Ok(s) => {
                if down_since.take().is_some() {
                    tracing::info!("the CRI endpoint is back");
                }
                retry = Duration::from_millis(200);
                let mut g = shared.lock();
                if !g.cri_up {
                    g.cri_up = true;
                }
                drop(g);
                s
            }
            Err(()) => {
                down_since.get_or_insert_with(Instant::now);
                shared.lock().cri_up = false;
                status::mark_unknown(&shared);
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let desired: Vec<Desired> = shared.lock().desired.values().cloned().collect();
        let wanted: HashSet<String> = desired.iter().map(|d| d.uid.clone()).collect();
        admit(&shared, &desired, &snap);
        let mut views = views(&shared, &snap);
        for d in &desired {
            if busy.contains(&d.uid) || syncs.contains_key(&d.uid) || kills.contains_key(&d.uid) {
                continue;
            }
            let v = views.remove(&d.uid).unwrap_or_default();
            let s = shared.clone();
            let d = d.clone();
            let uid = d.uid.clone();
            syncs.insert(uid, tokio::spawn(async move { sync_pod(&s, &d, v).await }));
        }
        // Pods with our labels that no manifest wants.
        let mut unwanted: HashSet<String> = snap
            .sandboxes
            .iter()
            .filter_map(uid_of_sandbox)
            .chain(
                snap.containers
                    .iter()
                    .filter_map(|c| c.labels.get(POD_UID).map(String::as_str)),
            )
            .filter(|u| !wanted.contains(*u))
            .map(str::to_string)
            .collect();
        let leaving = unwanted.clone();
        unwanted.retain(|u| !busy.contains(u) && !kills.contains_key(u) && !syncs.contains_key(u));
        for uid in unwanted {
            let v = views.remove(&uid).unwrap_or_default();
            let s = shared.clone();
            let u = uid.clone();
            // A pod the agent still knows (a scale-down) gets its preStop and grace period.
            let known = shared
                .lock()
                .pods
                .values()
                .find(|p| p.metadata.uid.as_deref() == Some(uid.as_str()))
                .map(|p| (**p).clone());
            kills.insert(
                uid,
                tokio::spawn(async move { kill_pod(&s, &u, v, known.as_ref()).await }),
            );
        }
        {
            let mut g = shared.lock();
            let gone = |p: &Pod| p.metadata.uid.as_ref().is_some_and(|u| leaving.contains(u));
            // A removed pod stays listed, Terminating, until its containers are gone.
            // (Each write is tested first: a write marks a change for the API's watches.)
            if g.pods
                .iter()
                .any(|(k, p)| !g.desired.contains_key(k) && !gone(p))
            {
                let wanted_keys: HashSet<String> = g.desired.keys().cloned().collect();
                g.pods.retain(|k, p| wanted_keys.contains(k) || gone(p));
            }
            if g.pods
                .values()
                .any(|p| gone(p) && p.metadata.deletion_timestamp.is_none())
            {
                for p in g.pods.values_mut() {
                    if gone(p) && p.metadata.deletion_timestamp.is_none() {
                        p.metadata.deletion_timestamp = Some(
                            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(chrono::Utc::now()),
                        );
                    }
                }
            }
            if g.admitted.iter().any(|u| !wanted.contains(u)) {
                g.admitted.retain(|u| wanted.contains(u));
            }
            if g.refused.keys().any(|u| !wanted.contains(u)) {
                g.refused.retain(|u, _| wanted.contains(u));
            }
            if g.volume_syncs.keys().any(|u| !wanted.contains(u)) {
                g.volume_syncs.retain(|u, _| wanted.contains(u));
            }
        }
        forget_evictions(&shared, &wanted);
        update_probes(&shared, &snap, &desired, &mut probe_workers);
        let running_pods = snap
            .sandboxes
            .iter()
            .filter(|s| s.state == SANDBOX_READY)
            .count();
        let running_ctrs = snap
            .containers
            .iter()
            .filter(|c| c.state == RUNNING)
            .count();
        shared.metrics.running_pods.set(running_pods as i64);
        shared.metrics.running_containers.set(running_ctrs as i64);
        let _ = tokio::time::timeout(Duration::from_secs(1), shared.wake.notified()).await;
    }
}

/// Node admission, in the order the pods were first seen; pods already running (adopted)
/// are admitted first.
fn admit(shared: &Shared, desired: &[Desired], snap: &Snapshot) {
    let alloc = shared.config.allocatable();
    let mut g = shared.lock();
    let running: HashSet<&str> = snap.sandboxes.iter().filter_map(uid_of_sandbox).collect();
    for d in desired {
        // An evicted pod runs until its sync task has killed it; it stays refused.
        if running.contains(d.uid.as_str())
            && !g.refused.contains_key(&d.uid)
            && !g.admitted.contains(&d.uid)
        {
            g.admitted.insert(d.uid.clone());
        }
    }
    let pressure = g.memory_pressure.is_some();
    for d in desired {
        if g.admitted.contains(&d.uid) || g.refused.contains_key(&d.uid) {
            continue;
        }
        let admitted: Vec<&Pod> = desired
            .iter()
            .filter(|o| g.admitted.contains(&o.uid))
            .map(|o| &*o.pod)
            .collect();
        // The kubelet's order: the eviction manager's handler, then the predicates.
        let verdict = crate::eviction::admit(&d.pod, pressure)
            .and_then(|()| crate::resources::admit(&d.pod, &admitted, &alloc))
            .and_then(|()| crate::storage::admit(&d.pod, &admitted));
        match verdict {
            Ok(()) => {
                g.admitted.insert(d.uid.clone());
            }
            Err(r) => {
                tracing::warn!(pod = %d.key(), reason = %r.reason, "{}", r.message);
                g.refused.insert(d.uid.clone(), r);
            }
        }
    }
}

/// Evictions of pods no longer wanted are forgotten (the refusals went with them above).
fn forget_evictions(shared: &Shared, wanted: &HashSet<String>) {
    let mut store = shared.store();
    let before = store.state.evicted.len();
    store.state.evicted.retain(|u, _| wanted.contains(u));
    if store.state.evicted.len() != before {
        if let Err(e) = store.save() {
            tracing::warn!("saving the agent's state: {e}");
        }
    }
}

/// Starts a worker per probe of each running container, and stops those whose instance
/// is gone.
fn update_probes(
    shared: &Arc<Shared>,
    snap: &Snapshot,
    desired: &[Desired],
    workers: &mut HashMap<(String, ProbeKind), JoinHandle<()>>,
) {
    let running: HashSet<&str> = snap
        .containers
        .iter()
        .filter(|c| c.state == RUNNING)
        .map(|c| c.id.as_str())
        .collect();
    workers.retain(|(id, _), h| {
        let keep = running.contains(id.as_str());
        if !keep {
            h.abort();
        }
        keep
    });
    let desired: HashMap<&str, &Desired> = desired.iter().map(|d| (d.uid.as_str(), d)).collect();
    for c in snap.containers.iter().filter(|c| c.state == RUNNING) {
        let Some(d) = c.labels.get(POD_UID).and_then(|u| desired.get(u.as_str())) else {
            continue;
        };
        let Some(spec_c) = find_container(&d.pod, cname(c)) else {
            continue;
        };
        let probes = [
            (ProbeKind::Startup, &spec_c.startup_probe),
            (ProbeKind::Liveness, &spec_c.liveness_probe),
            (ProbeKind::Readiness, &spec_c.readiness_probe),
        ];
        for (kind, p) in probes {
            let Some(p) = p else { continue };
            let key = (c.id.clone(), kind);
            if workers.contains_key(&key) {
                continue;
            }
            let (started_at, ip) = {
                let g = shared.lock();
                let st = g.statuses.get(&c.id).map(|s| s.started_at).unwrap_or(0);
                let ip = g.pod_ips.get(&c.pod_sandbox_id).cloned();
                (st, ip.unwrap_or_default())
            };
            let t = target(&d.pod, &d.uid, spec_c, &c.id, &ip);
            let started = std::time::UNIX_EPOCH + Duration::from_nanos(started_at.max(0) as u64);
            let worker = probes::worker(shared.clone(), kind, p.clone(), t, started);
            workers.insert(key, tokio::spawn(worker));
        }
    }
}

pub fn target(pod: &Pod, uid: &str, c: &Container, id: &str, ip: &str) -> Target {
    let host_net = spec::spec(pod).host_network.unwrap_or(false);
    Target {
        container_id: id.to_string(),
        container: c.name.clone(),
        pod: spec::name(pod).into(),
        namespace: spec::namespace(pod).into(),
        uid: uid.into(),
        host: if host_net || ip.is_empty() {
            "127.0.0.1".into()
        } else {
            ip.to_string()
        },
        ports: c
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.name.clone().map(|n| (n, p.container_port)))
            .collect(),
    }
}

pub fn find_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a Container> {
    let s = spec::spec(pod);
    s.init_containers
        .iter()
        .flatten()
        .chain(s.containers.iter())
        .find(|c| c.name == name)
}

/// Moves one pod a step towards its spec, then records its status.
async fn sync_pod(shared: &Arc<Shared>, d: &Desired, v: PodView) {
    {
        let mut g = shared.lock();
        if !g.first_seen.contains_key(&d.uid) {
            g.first_seen.insert(d.uid.clone(), Instant::now());
        }
    }
    let refused = shared.lock().refused.get(&d.uid).cloned();
    if let Some(r) = refused {
        // An evicted pod still has its containers: they go first, with the short grace
        // of a hard eviction.
        if !v.sandboxes.is_empty() || !v.containers.is_empty() {
            crate::termination::kill_all(shared, &d.uid, &v, Some(&d.pod), Some(GRACE_SECONDS))
                .await;
            shared.wake.notify_one();
        }
        status::record_refused(shared, d, &r);
        return;
    }
    let changed = crate::pod::step(shared, d, &v).await;
    status::record(shared, d, &v);
    if changed {
        shared.wake.notify_one();
    }
}

/// Stops and removes everything of pod `uid`: containers (preStop and grace when the pod
/// is known), sandboxes, its cgroup and logs, and its saved state.
pub async fn kill_pod(shared: &Arc<Shared>, uid: &str, v: PodView, pod: Option<&Pod>) {
    crate::termination::kill_all(shared, uid, &v, pod, None).await;
    if v.sandboxes.is_empty() && v.containers.is_empty() {
        return;
    }
    shared.wake.notify_one();
}

pub fn probe_verdict(shared: &Shared, id: &str, kind: ProbeKind) -> Option<Verdict> {
    shared.lock().probes.get(&(id.to_string(), kind)).copied()
}

pub fn set_waiting(shared: &Shared, uid: &str, name: &str, w: Option<Waiting>) {
    let mut g = shared.lock();
    let key = (uid.to_string(), name.to_string());
    // Tested first: a write marks a change for the API's watches.
    match w {
        Some(w) => {
            let same = g
                .waiting
                .get(&key)
                .is_some_and(|o| o.reason == w.reason && o.message == w.message);
            if !same {
                g.waiting.insert(key, w);
            }
        }
        None => {
            if g.waiting.contains_key(&key) {
                g.waiting.remove(&key);
            }
        }
    }
}
