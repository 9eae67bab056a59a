//! Stopping pods, as the kubelet does: a container's preStop hook, the stop signal and
//! SIGKILL when its grace period runs out (the runtime's StopContainer does the last two),
//! and a pod's removal: containers, sandboxes, its cgroup, logs, volumes and saved state.

use std::sync::Arc;
use std::time::Duration;

use cri_proto::api;
use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::task::JoinSet;

use crate::cri::req;
use crate::reconcile::{cname, find_container, target, PodView, CREATED, RUNNING};
use crate::spec;
use crate::state::Shared;

pub async fn remove_sandbox(
    shared: &Shared,
    c: &mut cri_proto::Client,
    sb: &api::PodSandbox,
    v: &PodView,
) {
    let _ = c
        .runtime
        .stop_pod_sandbox(req(api::StopPodSandboxRequest {
            pod_sandbox_id: sb.id.clone(),
        }))
        .await;
    for (ct, _) in v
        .containers
        .iter()
        .filter(|(ct, _)| ct.pod_sandbox_id == sb.id)
    {
        let _ = c
            .runtime
            .remove_container(req(api::RemoveContainerRequest {
                container_id: ct.id.clone(),
            }))
            .await;
    }
    let _ = c
        .runtime
        .remove_pod_sandbox(req(api::RemovePodSandboxRequest {
            pod_sandbox_id: sb.id.clone(),
        }))
        .await;
    shared.lock().pod_ips.remove(&sb.id);
}

/// Stops a container gracefully: its preStop hook, then the stop signal, then SIGKILL when
/// the grace period (`terminationGracePeriodSeconds`, or the annotation for a pod no longer
/// known) runs out; the runtime's StopContainer does the last two.
pub async fn kill_container(
    shared: &Shared,
    pod: Option<&Pod>,
    uid: &str,
    c: Option<&Container>,
    ct: &api::Container,
    grace_override: Option<i64>,
) {
    let grace = grace_override
        .or(pod.map(spec::grace_seconds))
        .or_else(|| ct.annotations.get(spec::GRACE).and_then(|g| g.parse().ok()))
        .unwrap_or(30)
        .max(0);
    let started = std::time::Instant::now();
    if let (Some(pod), Some(c)) = (pod, c) {
        if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
            let ip = shared
                .lock()
                .pod_ips
                .get(&ct.pod_sandbox_id)
                .cloned()
                .unwrap_or_default();
            let t = target(pod, uid, c, &ct.id, &ip);
            if let Err(e) =
                crate::probes::run_hook(shared, h, &t, Duration::from_secs(grace as u64)).await
            {
                shared.event(pod, uid, "Warning", "FailedPreStopHook", e);
            }
        }
    }
    let left = (grace - started.elapsed().as_secs() as i64).max(0);
    if let Some(mut client) = shared.cri.get().await {
        let mut r = tonic::Request::new(api::StopContainerRequest {
            container_id: ct.id.clone(),
            timeout: left,
        });
        r.set_timeout(Duration::from_secs(left as u64 + 60));
        if let Err(e) = client.runtime.stop_container(r).await {
            tracing::warn!(container = %ct.id, "stopping: {}", e.message());
        }
    }
}

/// Removes everything of a pod: running containers stopped gracefully (in parallel), then
/// sandboxes and containers removed, then its pod cgroup, log directory and saved state.
/// `grace` overrides the pod's termination grace period (an eviction's).
pub async fn kill_all(
    shared: &Arc<Shared>,
    uid: &str,
    v: &PodView,
    pod: Option<&Pod>,
    grace: Option<i64>,
) {
    let mut set = JoinSet::new();
    for (ct, _) in v
        .containers
        .iter()
        .filter(|(ct, _)| ct.state == RUNNING || ct.state == CREATED)
    {
        let s = shared.clone();
        let pod = pod.cloned();
        let uid = uid.to_string();
        let ct = ct.clone();
        set.spawn(async move {
            let c = pod
                .as_ref()
                .and_then(|p| find_container(p, cname(&ct)).cloned());
            kill_container(&s, pod.as_ref(), &uid, c.as_ref(), &ct, grace).await;
        });
    }
    while set.join_next().await.is_some() {}
    if let Some(mut c) = shared.cri.get().await {
        for sb in &v.sandboxes {
            remove_sandbox(shared, &mut c, sb, v).await;
        }
        for (ct, _) in &v.containers {
            let _ = c
                .runtime
                .remove_container(req(api::RemoveContainerRequest {
                    container_id: ct.id.clone(),
                }))
                .await;
        }
    }
    // The pod's logs and cgroup: the kubelet removes both with the pod.
    let labels = v
        .sandboxes
        .first()
        .map(|s| s.labels.clone())
        .or_else(|| v.containers.first().map(|(c, _)| c.labels.clone()))
        .unwrap_or_default();
    if let (Some(ns), Some(name)) = (labels.get(spec::POD_NAMESPACE), labels.get(spec::POD_NAME)) {
        let dir = shared
            .config
            .pod_logs_dir
            .join(format!("{ns}_{name}_{uid}"));
        let _ = std::fs::remove_dir_all(dir);
    }
    crate::cgroups::remove_pod(&shared.config.cgroup_root, uid);
    if let Err(e) = crate::volumes::teardown(&shared.config.root_dir, uid) {
        tracing::warn!(pod = %uid, "removing the pod's volumes: {e}");
    }
    let mut store = shared.store();
    if store.forget_pod(uid) {
        let _ = store.save();
    }
    drop(store);
    let mut g = shared.lock();
    g.waiting.retain(|(u, _), _| u != uid);
    g.first_seen.remove(uid);
    g.started_reported.remove(uid);
    g.volume_syncs.remove(uid);
}
