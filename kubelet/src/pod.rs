//! One pod's step towards its spec (sandbox, init containers in order, native sidecars, app
//! containers, restarts with back-off, probe-driven restarts, garbage collection), and the
//! graceful removal of a pod.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use cri_proto::api;
use k8s_openapi::api::core::v1::{Container, Pod};

use crate::cri::req;
use crate::images::ensure_image;
use crate::manifest::Desired;
use crate::reconcile::{
    attempt, cname, probe_verdict, set_waiting, target, PodView, CREATED, EXITED, RUNNING,
};
use crate::spec::{self, Kind};
use crate::state::{ProbeKind, Shared, Verdict, Waiting};
use crate::termination::{kill_container, remove_sandbox};

/// Containers that ran this long have their back-off reset (the kubelet's 2 × 5 min rule is
/// spelt "10 min of running" in the issue).
const BACKOFF_RESET: Duration = Duration::from_secs(600);

type Inst = (api::Container, api::ContainerStatus);

fn restart_policy(pod: &Pod) -> &str {
    spec::spec(pod)
        .restart_policy
        .as_deref()
        .unwrap_or("Always")
}

/// Should an exited instance be restarted, by the pod's policy (sidecars always)?
pub fn should_restart(pod: &Pod, kind: Kind, exit_code: i32) -> bool {
    match kind {
        Kind::Sidecar => true,
        _ => match restart_policy(pod) {
            "Always" => kind == Kind::App || exit_code != 0,
            "OnFailure" => exit_code != 0,
            _ => false,
        },
    }
}

/// Is the pod done (every app container exited for good, or an init container failed
/// under `Never`)? Looks at the newest sandbox.
pub fn terminal(pod: &Pod, v: &PodView) -> bool {
    let Some(sb) = v.sandboxes.first() else {
        return false;
    };
    let s = spec::spec(pod);
    for c in s.init_containers.iter().flatten() {
        if spec::kind_of(c, true) == Kind::Init {
            if let Some((_, st)) = v.instances(&sb.id, &c.name).first() {
                if st.state == EXITED && st.exit_code != 0 && restart_policy(pod) == "Never" {
                    return true;
                }
            }
        }
    }
    !s.containers.is_empty()
        && s.containers.iter().all(|c| {
            v.instances(&sb.id, &c.name).first().is_some_and(|(_, st)| {
                st.state == EXITED && !should_restart(pod, Kind::App, st.exit_code)
            })
        })
}

/// One step; `true` when something was changed (the loop relists at once).
pub async fn step(shared: &Arc<Shared>, d: &Desired, v: &PodView) -> bool {
    let pod = &d.pod;
    let sb = match v.ready_sandbox() {
        Some(sb) => sb.clone(),
        None => return new_sandbox(shared, d, v).await,
    };
    let sb_attempt = sb.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
    // Made only for a container start: it reads the node's resolv.conf, and a steady pod's
    // step starts nothing.
    let sb_cfg = || {
        spec::sandbox_config(
            pod,
            &d.uid,
            sb_attempt,
            &shared.config.pod_logs_dir,
            &shared.config.cgroup_root,
            &shared.config.dns,
        )
    };
    if terminal(pod, v) {
        // The kubelet stops a finished pod's sandbox and keeps its containers for status.
        if let Some(mut c) = shared.cri.get().await {
            let _ = c
                .runtime
                .stop_pod_sandbox(req(api::StopPodSandboxRequest {
                    pod_sandbox_id: sb.id.clone(),
                }))
                .await;
        }
        return true;
    }
    refresh_volumes(shared, d, &sb.id);
    let mut changed = gc(shared, v, &sb.id).await;
    let s = spec::spec(pod);
    for c in s.init_containers.iter().flatten() {
        let kind = spec::kind_of(c, true);
        let inst = v.instances(&sb.id, &c.name);
        let latest = inst.first().copied();
        match (kind, latest) {
            (_, None) => return start(shared, d, c, &sb.id, &sb_cfg(), None).await || changed,
            (_, Some((ct, _))) if ct.state == CREATED => {
                return start_existing(shared, d, c, &sb.id, &ct.id).await || changed
            }
            (Kind::Sidecar, Some((ct, _))) if ct.state == RUNNING => {
                changed |= check_liveness(shared, d, c, ct).await;
                if c.startup_probe.is_some()
                    && probe_verdict(shared, &ct.id, ProbeKind::Startup) != Some(Verdict::Success)
                {
                    return changed;
                }
            }
            (Kind::Init, Some((ct, _))) if ct.state == RUNNING => return changed,
            (Kind::Init, Some((_, st))) if st.state == EXITED && st.exit_code == 0 => {}
            (_, Some(inst)) => {
                if should_restart(pod, kind, inst.1.exit_code) {
                    return start(shared, d, c, &sb.id, &sb_cfg(), Some(inst)).await || changed;
                }
                return changed;
            }
        }
    }
    for c in &s.containers {
        let inst = v.instances(&sb.id, &c.name);
        match inst.first().copied() {
            None => changed |= start(shared, d, c, &sb.id, &sb_cfg(), None).await,
            Some((ct, _)) if ct.state == CREATED => {
                changed |= start_existing(shared, d, c, &sb.id, &ct.id).await
            }
            Some((ct, _)) if ct.state == RUNNING => {
                changed |= check_liveness(shared, d, c, ct).await
            }
            Some(inst) => {
                if should_restart(pod, Kind::App, inst.1.exit_code) {
                    changed |= start(shared, d, c, &sb.id, &sb_cfg(), Some(inst)).await;
                }
            }
        }
    }
    changed
}

/// Brings the pod's ConfigMap, Secret, downward API and token files up to date when
/// something they are made of changed or they are due (a failure is reported when a
/// container next starts).
fn refresh_volumes(shared: &Shared, d: &Desired, sb: &str) {
    if spec::spec(&d.pod)
        .volumes
        .as_ref()
        .is_none_or(|v| v.is_empty())
    {
        return;
    }
    let (objects, pod_ip) = {
        let g = shared.lock();
        let objects = g.objects.clone();
        let pod_ip = g.pod_ips.get(sb).cloned().unwrap_or_default();
        let synced = g.volume_syncs.get(&d.uid);
        if synced.is_some_and(|s| s.fresh(sb, objects.generation, &pod_ip, &d.pod)) {
            return;
        }
        (objects, pod_ip)
    };
    let alloc = shared.config.allocatable();
    // Taken alone: the controllers' lock comes before the agent's, never inside it.
    let services = crate::controllers::lock(&shared.workloads)
        .view
        .services
        .clone();
    let facts = crate::env::Facts {
        uid: &d.uid,
        node_name: &shared.config.node_name,
        pod_ip: &pod_ip,
        host_ip: crate::env::host_ip(),
        objects: &objects,
        node_milli_cpu: alloc.milli_cpu,
        node_memory: alloc.memory,
        services: &services,
    };
    let root = &shared.config.root_dir;
    // A failure is tried again at the next sync.
    if let Ok(v) = crate::volumes::setup(root, &d.pod, &d.uid, &facts) {
        let synced = crate::volumes::Synced::new(sb, objects.generation, &pod_ip, &d.pod, &v);
        // Redone when due (token rotation) for every pod: not a change the API shows.
        shared
            .lock_unserved()
            .volume_syncs
            .insert(d.uid.clone(), synced);
    }
}

async fn new_sandbox(shared: &Arc<Shared>, d: &Desired, v: &PodView) -> bool {
    let pod = &d.pod;
    if terminal(pod, v) {
        return false;
    }
    let Some(mut c) = shared.cri.get().await else {
        return false;
    };
    // A sandbox that died takes its containers with it; the kubelet makes a new one and
    // starts the containers again in it.
    for old in &v.sandboxes {
        remove_sandbox(shared, &mut c, old, v).await;
    }
    let attempt = v
        .sandboxes
        .first()
        .and_then(|s| s.metadata.as_ref())
        .map(|m| m.attempt + 1)
        .unwrap_or(0);
    let cfg = spec::sandbox_config(
        pod,
        &d.uid,
        attempt,
        &shared.config.pod_logs_dir,
        &shared.config.cgroup_root,
        &shared.config.dns,
    );
    if let Err(e) = std::fs::create_dir_all(&cfg.log_directory) {
        shared.event(
            pod,
            &d.uid,
            "Warning",
            "FailedCreatePodSandBox",
            format!("creating the log directory {}: {e}", cfg.log_directory),
        );
        return false;
    }
    // The pod's own cgroup and its limits come first, as the kubelet's pod container
    // manager makes them: the runtime puts the sandbox and the containers below it.
    let limits = crate::resources::pod_limits(spec::spec(pod));
    let parent = cfg
        .linux
        .as_ref()
        .map(|l| l.cgroup_parent.clone())
        .unwrap_or_default();
    if let Err(e) = crate::cgroups::make_pod(&parent, &limits) {
        shared.event(
            pod,
            &d.uid,
            "Warning",
            "FailedCreatePodSandBox",
            format!("creating the pod's cgroup: {e}"),
        );
        return false;
    }
    if let Some(rc) = spec::spec(pod).runtime_class_name.as_deref() {
        shared.event(
            pod,
            &d.uid,
            "Warning",
            "RuntimeClassIgnored",
            format!(
                "runtimeClassName {rc:?} is ignored: the endpoint's default handler runs the pod"
            ),
        );
    }
    if attempt > 0 {
        shared.metrics.restarted_pods.inc();
        shared.event(
            pod,
            &d.uid,
            "Normal",
            "SandboxChanged",
            "Pod sandbox changed, it will be killed and re-created.".into(),
        );
    }
    let r = c
        .runtime
        .run_pod_sandbox(req(api::RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: String::new(),
        }))
        .await;
    match r {
        Ok(_) => true,
        Err(e) => {
            shared.event(
                pod,
                &d.uid,
                "Warning",
                "FailedCreatePodSandBox",
                format!("Failed to create pod sandbox: {}", e.message()),
            );
            false
        }
    }
}

/// Keeps the newest two instances of each container (the current one and the one
/// `logs --previous` reads); removes older exited ones.
async fn gc(shared: &Shared, v: &PodView, sb: &str) -> bool {
    let mut names: Vec<&str> = v.containers.iter().map(|(c, _)| cname(c)).collect();
    names.sort();
    names.dedup();
    let mut victims = Vec::new();
    for n in names {
        for (c, st) in v.instances(sb, n).into_iter().skip(2) {
            if st.state == EXITED {
                victims.push(c.id.clone());
            }
        }
    }
    if victims.is_empty() {
        return false;
    }
    let Some(mut c) = shared.cri.get().await else {
        return false;
    };
    for id in victims {
        let _ = c
            .runtime
            .remove_container(req(api::RemoveContainerRequest { container_id: id }))
            .await;
    }
    true
}

/// Restarts a container whose liveness (or startup) probe failed.
async fn check_liveness(
    shared: &Arc<Shared>,
    d: &Desired,
    c: &Container,
    ct: &api::Container,
) -> bool {
    for kind in [ProbeKind::Liveness, ProbeKind::Startup] {
        if probe_verdict(shared, &ct.id, kind) == Some(Verdict::Failure) {
            shared.event(
                &d.pod,
                &d.uid,
                "Normal",
                "Killing",
                format!(
                    "Container {} failed {} probe, will be restarted",
                    c.name,
                    kind.as_str().to_lowercase()
                ),
            );
            shared.lock().probes.remove(&(ct.id.clone(), kind));
            kill_container(shared, Some(&d.pod), &d.uid, Some(c), ct, None).await;
            return true;
        }
    }
    false
}

/// Is a restart of `prev` allowed now, by the back-off? `Err(delay)` while backing off.
fn backoff_check(
    shared: &Shared,
    uid: &str,
    name: &str,
    prev: &api::ContainerStatus,
) -> Result<(), Duration> {
    let mut store = shared.store();
    let st = store.container(uid, name);
    let ran = Duration::from_nanos((prev.finished_at - prev.started_at).max(0) as u64);
    if ran >= BACKOFF_RESET {
        st.backoff.delay_ms = 0;
    }
    if st.backoff.delay_ms == 0 {
        return Ok(());
    }
    let delay = Duration::from_millis(st.backoff.delay_ms);
    let since = Utc::now().timestamp_nanos_opt().unwrap_or(0) - prev.finished_at;
    if Duration::from_nanos(since.max(0) as u64) < delay {
        Err(delay)
    } else {
        Ok(())
    }
}

fn backoff_next(shared: &Shared, uid: &str, name: &str, restarts: u32) {
    let (base, cap) = (shared.config.backoff_base, shared.config.backoff_cap);
    let mut store = shared.store();
    let st = store.container(uid, name);
    let next = if st.backoff.delay_ms == 0 {
        base
    } else {
        (Duration::from_millis(st.backoff.delay_ms) * 2).min(cap)
    };
    st.backoff.delay_ms = next.as_millis() as u64;
    st.backoff.updated_ms = Utc::now().timestamp_millis();
    st.restarts = restarts;
    if let Err(e) = store.save() {
        tracing::error!("saving the agent's state: {e}");
    }
}

/// Creates and starts a new instance of `c` (after `prev`, subject to back-off).
async fn start(
    shared: &Arc<Shared>,
    d: &Desired,
    c: &Container,
    sb: &str,
    sb_cfg: &api::PodSandboxConfig,
    prev: Option<&Inst>,
) -> bool {
    let pod = &d.pod;
    let attempt_no = match prev {
        Some((ct, _)) => attempt(ct) + 1,
        None => shared
            .store()
            .get(&d.uid, &c.name)
            .map(|s| s.restarts)
            .unwrap_or(0),
    };
    if let Some((_, st)) = prev {
        if let Err(delay) = backoff_check(shared, &d.uid, &c.name, st) {
            let msg = format!(
                "back-off {} restarting failed container={} pod={}_{}({})",
                humantime(delay),
                c.name,
                spec::name(pod),
                spec::namespace(pod),
                d.uid
            );
            let first = shared
                .lock()
                .waiting
                .get(&(d.uid.clone(), c.name.clone()))
                .is_none_or(|w| w.reason != "CrashLoopBackOff");
            if first {
                shared.event(
                    pod,
                    &d.uid,
                    "Warning",
                    "BackOff",
                    "Back-off restarting failed container".to_string()
                        + &format!(
                            " {} in pod {}_{}({})",
                            c.name,
                            spec::name(pod),
                            spec::namespace(pod),
                            d.uid
                        ),
                );
            }
            set_waiting(
                shared,
                &d.uid,
                &c.name,
                Some(Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: msg,
                }),
            );
            return false;
        }
    }
    let Some(mut client) = shared.cri.get().await else {
        return false;
    };
    let image_ref = match ensure_image(shared, d, c, sb_cfg, &mut client).await {
        Ok(r) => r,
        Err(w) => {
            set_waiting(shared, &d.uid, &c.name, Some(w));
            return false;
        }
    };
    let pod_ip = shared.lock().pod_ips.get(sb).cloned().unwrap_or_default();
    let objects = shared.lock().objects.clone();
    let alloc = shared.config.allocatable();
    // Taken alone: the controllers' lock comes before the agent's, never inside it.
    let services = crate::controllers::lock(&shared.workloads)
        .view
        .services
        .clone();
    let facts = crate::env::Facts {
        uid: &d.uid,
        node_name: &shared.config.node_name,
        pod_ip: &pod_ip,
        host_ip: crate::env::host_ip(),
        objects: &objects,
        node_milli_cpu: alloc.milli_cpu,
        node_memory: alloc.memory,
        services: &services,
    };
    let (_, mem) = crate::resources::capacity();
    let root = &shared.config.root_dir;
    let ready = match crate::volumes::setup(root, pod, &d.uid, &facts) {
        Ok(v) => v.ready,
        Err(e) => {
            shared.event(pod, &d.uid, "Warning", "FailedMount", e.clone());
            set_waiting(
                shared,
                &d.uid,
                &c.name,
                Some(Waiting {
                    reason: "ContainerCreating".into(),
                    message: e,
                }),
            );
            return false;
        }
    };
    let cfg = crate::env::container_env(pod, c, &facts)
        .and_then(|env| crate::volumes::container_mounts(root, &d.uid, c, &ready, &env))
        .and_then(|mut mounts| {
            let domain = &shared.config.dns.domain;
            mounts.extend(crate::dns::hosts::mount(
                root, &d.uid, pod, c, &pod_ip, domain,
            )?);
            spec::container_config(pod, c, &d.uid, attempt_no, &image_ref, &facts, mem, mounts)
        });
    let cfg = match cfg {
        Ok(cfg) => cfg,
        Err(e) => {
            shared.event(pod, &d.uid, "Warning", "Failed", format!("Error: {e}"));
            set_waiting(
                shared,
                &d.uid,
                &c.name,
                Some(Waiting {
                    reason: "CreateContainerConfigError".into(),
                    message: e,
                }),
            );
            return false;
        }
    };
    let created = client
        .runtime
        .create_container(req(api::CreateContainerRequest {
            pod_sandbox_id: sb.to_string(),
            config: Some(cfg),
            sandbox_config: Some(sb_cfg.clone()),
        }))
        .await;
    let id = match created {
        Ok(r) => r.into_inner().container_id,
        Err(e) => {
            let msg = e.message().to_string();
            shared.event(pod, &d.uid, "Warning", "Failed", format!("Error: {msg}"));
            set_waiting(
                shared,
                &d.uid,
                &c.name,
                Some(Waiting {
                    reason: "CreateContainerError".into(),
                    message: msg,
                }),
            );
            return false;
        }
    };
    if prev.is_some() {
        backoff_next(shared, &d.uid, &c.name, attempt_no);
    } else if attempt_no == 0 {
        let mut store = shared.store();
        store.container(&d.uid, &c.name);
        let _ = store.save();
    }
    shared.event(
        pod,
        &d.uid,
        "Normal",
        "Created",
        format!("Created container {}", c.name),
    );
    start_existing(shared, d, c, sb, &id).await;
    true
}

/// Starts a created container, then runs its postStart hook.
async fn start_existing(
    shared: &Arc<Shared>,
    d: &Desired,
    c: &Container,
    sb: &str,
    id: &str,
) -> bool {
    let pod = &d.pod;
    let Some(mut client) = shared.cri.get().await else {
        return false;
    };
    if let Err(e) = client
        .runtime
        .start_container(req(api::StartContainerRequest {
            container_id: id.to_string(),
        }))
        .await
    {
        let msg = e.message().to_string();
        shared.event(pod, &d.uid, "Warning", "Failed", format!("Error: {msg}"));
        set_waiting(
            shared,
            &d.uid,
            &c.name,
            Some(Waiting {
                reason: "RunContainerError".into(),
                message: msg,
            }),
        );
        return true;
    }
    set_waiting(shared, &d.uid, &c.name, None);
    shared.event(
        pod,
        &d.uid,
        "Normal",
        "Started",
        format!("Started container {}", c.name),
    );
    if let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
        let ip = shared.lock().pod_ips.get(sb).cloned().unwrap_or_default();
        let t = target(pod, &d.uid, c, id, &ip);
        let grace = Duration::from_secs(spec::grace_seconds(pod).max(1) as u64);
        if let Err(e) = crate::probes::run_hook(shared, h, &t, grace).await {
            shared.event(pod, &d.uid, "Warning", "FailedPostStartHook", e);
            let ct = api::Container {
                id: id.to_string(),
                ..Default::default()
            };
            kill_container(shared, Some(pod), &d.uid, Some(c), &ct, None).await;
        }
    }
    true
}

/// `10s`, `1m20s`, `5m0s` as Go prints durations in the back-off message.
pub fn humantime(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else if d.subsec_millis() > 0 && s < 10 {
        format!("{}s", d.as_secs_f64())
    } else {
        format!("{s}s")
    }
}
