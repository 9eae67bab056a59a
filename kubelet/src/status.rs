//! A pod's status as the kubelet reports it: phase, conditions, container statuses (state,
//! lastState, ready, started, restartCount, image, imageID, containerID), IPs, QoS class.

use chrono::Utc;
use cri_proto::api;
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::manifest::Desired;
use crate::pod::{should_restart, terminal};
use crate::reconcile::{probe_verdict, PodView, EXITED, RUNNING};
use crate::resources::Refusal;
use crate::spec::{self, Kind};
use crate::state::{time_of, ProbeKind, Shared, Verdict};

fn terminated(st: &api::ContainerStatus, runtime: &str) -> ContainerStateTerminated {
    let reason = if !st.reason.is_empty() {
        st.reason.clone()
    } else if st.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    ContainerStateTerminated {
        exit_code: st.exit_code,
        reason: Some(reason),
        message: (!st.message.is_empty()).then(|| st.message.clone()),
        started_at: time_of(st.started_at),
        finished_at: time_of(st.finished_at),
        container_id: Some(format!("{runtime}://{}", st.id)),
        signal: None,
    }
}

/// The published object: the manifest's pod with metadata the API server would add and
/// the status.
fn published(shared: &Shared, d: &Desired, status: PodStatus) -> Pod {
    let mut pod = (*d.pod).clone();
    pod.metadata.uid = Some(d.uid.clone());
    pod.metadata
        .resource_version
        .get_or_insert_with(|| "1".into());
    if let Some(s) = pod.spec.as_mut() {
        s.node_name = Some(shared.config.node_name.clone());
        s.restart_policy.get_or_insert_with(|| "Always".into());
    }
    let ann = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    ann.insert("kubernetes.io/config.source".into(), "file".into());
    ann.insert("kubernetes.io/config.hash".into(), d.uid.clone());
    ann.insert("rrun.io/manifest".into(), d.file.display().to_string());
    pod.status = Some(status);
    pod
}

fn store(shared: &Shared, d: &Desired, mut pod: Pod) {
    let mut g = shared.lock();
    let created = g
        .pods
        .get(&d.key())
        .filter(|p| p.metadata.uid.as_deref() == Some(&d.uid))
        .and_then(|p| p.metadata.creation_timestamp.clone())
        .unwrap_or_else(|| Time(Utc::now()));
    pod.metadata.creation_timestamp = Some(created);
    // Each pass records every pod: only a different one is written (a write marks a change
    // for the API's watches).
    if g.pods.get(&d.key()).map(|p| &**p) != Some(&pod) {
        g.pods.insert(d.key(), Box::new(pod));
    }
}

pub fn record_refused(shared: &Shared, d: &Desired, r: &Refusal) {
    let already = shared
        .lock()
        .pods
        .get(&d.key())
        .and_then(|p| p.status.as_ref())
        .and_then(|s| s.reason.clone())
        .is_some();
    // The eviction manager records its own event when it evicts (a refusal at admission
    // with reason Evicted, under MemoryPressure, is a rejection like the others).
    let evicted = shared.store().state.evicted.contains_key(&d.uid);
    if !already && !evicted {
        shared.event(&d.pod, &d.uid, "Warning", &r.reason, r.message.clone());
    }
    let status = PodStatus {
        phase: Some("Failed".into()),
        reason: Some(r.reason.clone()),
        message: Some(if evicted {
            r.message.clone()
        } else {
            format!("Pod was rejected: {}", r.message)
        }),
        qos_class: Some(spec::qos(&d.pod).as_str().into()),
        ..Default::default()
    };
    store(shared, d, published(shared, d, status));
}

/// While the CRI endpoint is gone, the pods' phase is Unknown.
pub fn mark_unknown(shared: &Shared) {
    let mut g = shared.lock();
    let stale = |s: &PodStatus| {
        s.phase.as_deref() != Some("Unknown")
            && (s.phase.as_deref() != Some("Failed") || s.reason.is_none())
    };
    // Tested first (the retry loop calls this): a write marks a change for the watches.
    if !g.pods.values().filter_map(|p| p.status.as_ref()).any(stale) {
        return;
    }
    for p in g.pods.values_mut() {
        if let Some(s) = p.status.as_mut() {
            if s.phase.as_deref() != Some("Failed") || s.reason.is_none() {
                s.phase = Some("Unknown".into());
            }
        }
    }
}

struct One {
    status: ContainerStatus,
    running: bool,
    exited_for_good: bool,
}

fn container_status(
    shared: &Shared,
    d: &Desired,
    c: &Container,
    kind: Kind,
    v: &PodView,
    sb: Option<&str>,
    initializing: bool,
) -> One {
    let (runtime, waiting) = {
        let g = shared.lock();
        (
            g.runtime_name.clone(),
            g.waiting.get(&(d.uid.clone(), c.name.clone())).cloned(),
        )
    };
    let inst = sb.map(|sb| v.instances(sb, &c.name)).unwrap_or_default();
    let latest = inst.first().map(|(_, st)| st);
    let prev = inst.get(1).map(|(_, st)| st);
    let restart_count = latest
        .and_then(|st| st.metadata.as_ref())
        .map(|m| m.attempt as i32)
        .or_else(|| {
            shared
                .store()
                .get(&d.uid, &c.name)
                .map(|s| s.restarts as i32)
        })
        .unwrap_or(0);
    let mut status = ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: latest.map(|st| st.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|st| format!("{runtime}://{}", st.id)),
        restart_count,
        ready: false,
        started: Some(false),
        ..Default::default()
    };
    let mut running = false;
    let mut exited_for_good = false;
    let waiting_state = |reason: &str, message: Option<String>| ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message,
        }),
        ..Default::default()
    };
    match latest {
        Some(st) if st.state == RUNNING => {
            running = true;
            let startup_ok = c.startup_probe.is_none()
                || probe_verdict(shared, &st.id, ProbeKind::Startup) == Some(Verdict::Success);
            let ready = startup_ok
                && (c.readiness_probe.is_none()
                    || probe_verdict(shared, &st.id, ProbeKind::Readiness)
                        == Some(Verdict::Success));
            status.started = Some(startup_ok);
            status.ready = ready;
            status.state = Some(ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time_of(st.started_at),
                }),
                ..Default::default()
            });
            if let Some(p) = prev.filter(|p| p.state == EXITED) {
                status.last_state = Some(ContainerState {
                    terminated: Some(terminated(p, &runtime)),
                    ..Default::default()
                });
            }
        }
        Some(st) if st.state == EXITED => {
            let restart = should_restart(&d.pod, kind, st.exit_code);
            let t = terminated(st, &runtime);
            if restart {
                let w = waiting.unwrap_or(crate::state::Waiting {
                    reason: "ContainerCreating".into(),
                    message: String::new(),
                });
                status.state = Some(waiting_state(
                    &w.reason,
                    (!w.message.is_empty()).then_some(w.message),
                ));
                status.last_state = Some(ContainerState {
                    terminated: Some(t),
                    ..Default::default()
                });
            } else {
                exited_for_good = true;
                status.state = Some(ContainerState {
                    terminated: Some(t),
                    ..Default::default()
                });
                if let Some(p) = prev.filter(|p| p.state == EXITED) {
                    status.last_state = Some(ContainerState {
                        terminated: Some(terminated(p, &runtime)),
                        ..Default::default()
                    });
                }
            }
        }
        _ => {
            let (reason, message) = match waiting {
                Some(w) => (w.reason, (!w.message.is_empty()).then_some(w.message)),
                None if initializing && kind == Kind::App => ("PodInitializing".into(), None),
                None => ("ContainerCreating".into(), None),
            };
            status.state = Some(waiting_state(&reason, message));
        }
    }
    One {
        status,
        running,
        exited_for_good,
    }
}

fn condition(kind: &str, ok: bool, reason: Option<&str>, now: &Time) -> PodCondition {
    PodCondition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: (!ok)
            .then(|| reason.unwrap_or("").to_string())
            .filter(|r| !r.is_empty()),
        last_transition_time: Some(now.clone()),
        last_probe_time: None,
        ..Default::default()
    }
}

/// Computes and stores the pod's status from what the CRI shows.
pub fn record(shared: &Shared, d: &Desired, v: &PodView) {
    let pod = &d.pod;
    let s = spec::spec(pod);
    let sb = v.ready_sandbox().or(v.sandboxes.first());
    let sb_id = sb.map(|s| s.id.as_str());
    let sandbox_ready = v.ready_sandbox().is_some();
    // Init containers: done when each exited 0 (sidecars: started).
    // Sized exactly: the statuses are kept (the API's pods) until the next change.
    let mut init_statuses = Vec::with_capacity(s.init_containers.as_ref().map_or(0, Vec::len));
    let mut inits_done = true;
    let mut init_failed = false;
    for c in s.init_containers.iter().flatten() {
        let kind = spec::kind_of(c, true);
        let one = container_status(shared, d, c, kind, v, sb_id, false);
        let done = match kind {
            Kind::Sidecar => one.status.started == Some(true),
            _ => one
                .status
                .state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0),
        };
        if kind == Kind::Init && one.exited_for_good && !done {
            init_failed = true;
        }
        inits_done &= done;
        init_statuses.push(one.status);
    }
    let mut statuses = Vec::with_capacity(s.containers.len());
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    let mut all_ready = true;
    for c in &s.containers {
        let one = container_status(shared, d, c, Kind::App, v, sb_id, !inits_done);
        all_ready &= one.status.ready;
        let st = one.status.state.as_ref();
        if one.running {
            running += 1;
        } else if let Some(t) = st.and_then(|s| s.terminated.as_ref()) {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if one
            .status
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .is_some()
        {
            stopped += 1;
        } else {
            waiting += 1;
        }
        statuses.push(one.status);
    }
    let policy = s.restart_policy.as_deref().unwrap_or("Always");
    // The kubelet's getPhase.
    let phase = if init_failed && policy == "Never" {
        "Failed"
    } else if !inits_done || waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if policy == "Never" || terminal(pod, v) {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    };
    let now = Time(Utc::now());
    let ready = all_ready && inits_done && phase == "Running";
    let prev_conditions = shared
        .lock()
        .pods
        .get(&d.key())
        .filter(|p| p.metadata.uid.as_deref() == Some(&d.uid))
        .and_then(|p| p.status.clone())
        .and_then(|s| s.conditions)
        .unwrap_or_default();
    let keep_time = |c: PodCondition| -> PodCondition {
        match prev_conditions
            .iter()
            .find(|p| p.type_ == c.type_ && p.status == c.status)
        {
            Some(p) => PodCondition {
                last_transition_time: p.last_transition_time.clone(),
                ..c
            },
            None => c,
        }
    };
    let not_ready_reason = if phase == "Succeeded" || phase == "Failed" {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let conditions = vec![
        condition("PodReadyToStartContainers", sandbox_ready, None, &now),
        condition(
            "Initialized",
            inits_done,
            Some("ContainersNotInitialized"),
            &now,
        ),
        condition("Ready", ready, Some(not_ready_reason), &now),
        condition("ContainersReady", ready, Some(not_ready_reason), &now),
        condition("PodScheduled", true, None, &now),
    ]
    .into_iter()
    .map(keep_time)
    .collect();
    let ip = sb_id
        .and_then(|id| shared.lock().pod_ips.get(id).cloned())
        .filter(|ip| !ip.is_empty());
    let host_net = s.host_network.unwrap_or(false);
    let ip = ip.or_else(|| host_net.then(|| "127.0.0.1".to_string()));
    let status = PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        host_ip: Some("127.0.0.1".into()),
        qos_class: Some(spec::qos(pod).as_str().into()),
        start_time: v.sandboxes.last().and_then(|s| time_of(s.created_at)),
        ..Default::default()
    };
    if phase == "Running" {
        let mut g = shared.lock();
        if !g.started_reported.contains(&d.uid) {
            g.started_reported.insert(d.uid.clone());
            if let Some(t) = g.first_seen.get(&d.uid) {
                shared.metrics.pod_start.observe(t.elapsed().as_secs_f64());
            }
        }
    }
    store(shared, d, published(shared, d, status));
}
