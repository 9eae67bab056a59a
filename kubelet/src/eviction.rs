//! The eviction manager (the kubelet's pkg/kubelet/eviction, for memory): every round it
//! observes `memory.available` twice — for the node (`/proc/meminfo`) and for the pods'
//! share of it (node allocatable before the threshold, minus the working set of the
//! `kubepods` cgroup, the kubelet's allocatable signal) — and when either is under the
//! `evictionHard` threshold it reports MemoryPressure and evicts one pod, ranked as the
//! kubelet ranks them: pods using more memory than they request first, then lower
//! priority, then the largest use above the request.
//!
//! The decision is made here; the pod's own sync task does the killing (with the one
//! second of grace of a hard eviction), so that no two tasks ever act on one pod. The
//! decision is saved, so an evicted pod is not started again by the next agent.
//!
//! Unlike the stock kubelet, which never evicts static pods, this agent's manifest pods
//! are its API objects, and are evicted like the API server's pods; a pod of
//! `priorityClassName: system-node-critical` or `system-cluster-critical` (or a priority of
//! 2000000000 and more) is never evicted.
//!
//! It is also the first admission handler, as the kubelet's: while the node has
//! MemoryPressure a new BestEffort pod is refused (unless it tolerates the memory-pressure
//! taint or is critical). The agent observes no disk or PID signal, so DiskPressure, which
//! would refuse every pod, never holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cri_proto::api;
use k8s_openapi::api::core::v1::{Pod, Toleration};

use crate::cri::req;
use crate::manifest::Desired;
use crate::resources::{self, Refusal};
use crate::spec;
use crate::state::Shared;

/// How often the signals are observed. The kubelet's default is 10 s; the two file reads
/// of a round cost little, and a slower round would let a fast-growing pod reach the OOM
/// killer first.
const INTERVAL: Duration = Duration::from_secs(1);

/// The kubelet's grace period of a hard eviction.
pub const GRACE_SECONDS: i64 = 1;

/// How long a round waits for an evicted pod to be gone before it observes again (the
/// kubelet's podCleanupTimeout): the memory is freed only then, and a round in between
/// would see the same pressure and evict a second pod for it.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// The kubelet's SystemCriticalPriority.
const CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// The reason in the status of an evicted pod.
pub const REASON: &str = "Evicted";

/// The taint of a node under memory pressure (`v1.TaintNodeMemoryPressure`).
const MEMORY_PRESSURE_TAINT: &str = "node.kubernetes.io/memory-pressure";

/// The eviction manager's admission (the kubelet's `managerImpl.Admit`): with the node
/// under MemoryPressure, a BestEffort pod is refused unless it is critical or tolerates
/// the memory-pressure taint; the other classes are admitted.
pub fn admit(pod: &Pod, memory_pressure: bool) -> Result<(), Refusal> {
    if !memory_pressure
        || critical(pod)
        || spec::qos(pod) != resources::Qos::BestEffort
        || spec::spec(pod)
            .tolerations
            .iter()
            .flatten()
            .any(tolerates_memory_pressure)
    {
        return Ok(());
    }
    Err(Refusal {
        reason: REASON.into(),
        // The kubelet's nodeConditionMessageFmt, trailing space included.
        message: "The node had condition: [MemoryPressure]. ".into(),
    })
}

/// `Toleration.ToleratesTaint` for the NoSchedule taint of memory pressure (no value).
fn tolerates_memory_pressure(t: &Toleration) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    let key = t.key.as_deref().unwrap_or("");
    (effect.is_empty() || effect == "NoSchedule")
        && (key.is_empty() || key == MEMORY_PRESSURE_TAINT)
        && match t.operator.as_deref().unwrap_or("") {
            "" | "Equal" => t.value.as_deref().unwrap_or("").is_empty(),
            "Exists" => true,
            _ => false,
        }
}

pub async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        round(&shared).await;
    }
}

/// One observation, and at most one eviction.
async fn round(shared: &Arc<Shared>) {
    let c = &shared.config;
    let threshold = c.eviction_memory;
    let (_, capacity) = resources::capacity();
    let node = node_available(capacity);
    let kubepods = format!("{}/kubepods", c.cgroup_root.trim_end_matches('/'));
    let pods = capacity - c.reserved_memory - crate::cgroups::working_set(&kubepods);
    let available = node.min(pods);
    let now = Instant::now();
    {
        let mut g = shared.lock();
        if available < threshold {
            if g.memory_pressure.is_none() {
                tracing::warn!(
                    available,
                    threshold,
                    node_available = node,
                    allocatable_available = pods,
                    "memory pressure"
                );
            }
            g.memory_pressure = Some(now);
        } else if g
            .memory_pressure
            .is_some_and(|t| now.duration_since(t) >= c.eviction_pressure_transition)
        {
            g.memory_pressure = None;
            tracing::info!("memory pressure is over");
        }
    }
    if available >= threshold {
        return;
    }
    let Some(victim) = pick(shared).await else {
        tracing::warn!("memory pressure, and no pod to evict");
        return;
    };
    let message = format!(
        "The node was low on resource: memory. Threshold quantity: {}, available: {}Ki. {}",
        quantity(threshold),
        available / 1024,
        victim.detail
    );
    evict(shared, &victim.desired, message);
    wait_cleanup(shared, &victim.desired).await;
}

/// Waits until the pod's sync task has killed it (it records the Evicted status after).
async fn wait_cleanup(shared: &Shared, d: &Desired) {
    let deadline = Instant::now() + CLEANUP_TIMEOUT;
    while Instant::now() < deadline {
        let done = shared
            .lock()
            .pods
            .get(&d.key())
            .and_then(|p| p.status.as_ref())
            .is_some_and(|s| s.reason.as_deref() == Some(REASON));
        if done {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(pod = %d.key(), "the evicted pod is not gone after {CLEANUP_TIMEOUT:?}");
}

/// `memory.available` of the node: capacity minus the working set (all memory in use but
/// the inactive file cache, which the kernel reclaims first), as cAdvisor counts it.
fn node_available(capacity: i64) -> i64 {
    let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") else {
        return i64::MAX;
    };
    let field = |name: &str| -> i64 {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<i64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    let working_set = capacity - field("MemFree") - field("Inactive(file)");
    capacity - working_set.max(0)
}

/// `100Mi` as the kubelet prints a threshold (bytes when it is not a whole Mi).
fn quantity(bytes: i64) -> String {
    if bytes % (1 << 20) == 0 {
        format!("{}Mi", bytes >> 20)
    } else {
        bytes.to_string()
    }
}

struct Victim {
    desired: Desired,
    detail: String,
}

fn critical(pod: &Pod) -> bool {
    let s = spec::spec(pod);
    s.priority.is_some_and(|p| p >= CRITICAL_PRIORITY)
        || matches!(
            s.priority_class_name.as_deref(),
            Some("system-node-critical" | "system-cluster-critical")
        )
}

/// The pod to evict, by the kubelet's memory ranking, among the running pods this agent
/// admitted.
async fn pick(shared: &Arc<Shared>) -> Option<Victim> {
    let mut client = shared.cri.get().await?;
    let stats = client
        .runtime
        .list_container_stats(req(api::ListContainerStatsRequest::default()))
        .await
        .ok()?
        .into_inner()
        .stats;
    // uid → (container name → working set).
    let mut usage: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for s in stats {
        let Some(a) = s.attributes else { continue };
        let Some(uid) = a.labels.get(spec::POD_UID) else {
            continue;
        };
        let ws = s
            .memory
            .and_then(|m| m.working_set_bytes)
            .map_or(0, |v| v.value as i64);
        let name = a
            .labels
            .get(spec::CONTAINER_NAME)
            .cloned()
            .or(a.metadata.map(|m| m.name))
            .unwrap_or_default();
        usage.entry(uid.clone()).or_default().push((name, ws));
    }
    let g = shared.lock();
    let mut ranked: Vec<(bool, i32, i64, Desired, String)> = g
        .desired
        .values()
        .filter(|d| {
            g.admitted.contains(&d.uid) && !g.refused.contains_key(&d.uid) && !critical(&d.pod)
        })
        .filter_map(|d| {
            let used = usage.get(&d.uid)?;
            let total: i64 = used.iter().map(|(_, ws)| ws).sum();
            let (_, request) = resources::pod_requests(spec::spec(&d.pod));
            let priority = spec::spec(&d.pod).priority.unwrap_or(0);
            let detail = used
                .iter()
                .filter_map(|(name, ws)| {
                    let c = crate::reconcile::find_container(&d.pod, name)?;
                    let req = resources::amounts(c)
                        .ok()
                        .and_then(|a| a.mem_request)
                        .unwrap_or(0);
                    (*ws > req).then(|| {
                        format!(
                            "Container {name} was using {}Ki, request is {}, has larger consumption of memory. ",
                            ws / 1024,
                            quantity(req)
                        )
                    })
                })
                .collect::<String>();
            Some((total > request, priority, total - request, d.clone(), detail))
        })
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(b.2.cmp(&a.2)));
    ranked
        .into_iter()
        .next()
        .map(|(_, _, _, desired, detail)| Victim { desired, detail })
}

/// Marks the pod evicted (its sync task then kills it), saves the decision and records
/// the event.
fn evict(shared: &Arc<Shared>, d: &Desired, message: String) {
    tracing::warn!(pod = %d.key(), "evicting: {message}");
    shared.event(&d.pod, &d.uid, "Warning", REASON, message.clone());
    let r = Refusal {
        reason: REASON.into(),
        message,
    };
    {
        let mut store = shared.store();
        store.state.evicted.insert(d.uid.clone(), r.clone().into());
        if let Err(e) = store.save() {
            tracing::error!("saving the eviction of {}: {e}", d.key());
        }
    }
    let mut g = shared.lock();
    g.admitted.remove(&d.uid);
    g.refused.insert(d.uid.clone(), r);
    drop(g);
    shared
        .metrics
        .evictions
        .get_or_create(&crate::metrics::EvictionLabels {
            eviction_signal: "memory.available".into(),
        })
        .inc();
    shared.wake.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Pod {
        serde_yaml_ng::from_str(yaml).expect("pod yaml")
    }

    const BEST_EFFORT: &str = "spec:\n  containers: [{name: c}]\n";

    #[test]
    fn memory_pressure_refuses_only_best_effort_pods() {
        let be = pod(BEST_EFFORT);
        assert_eq!(admit(&be, false), Ok(()));
        let r = admit(&be, true).unwrap_err();
        assert_eq!(r.reason, "Evicted");
        assert_eq!(r.message, "The node had condition: [MemoryPressure]. ");
        let burstable =
            pod("spec:\n  containers: [{name: c, resources: {requests: {memory: 16Mi}}}]\n");
        assert_eq!(admit(&burstable, true), Ok(()));
        let guaranteed = pod(
            "spec:\n  containers: [{name: c, resources: {limits: {cpu: 100m, memory: 16Mi}}}]\n",
        );
        assert_eq!(admit(&guaranteed, true), Ok(()));
    }

    #[test]
    fn critical_and_tolerating_best_effort_pods_are_admitted_under_pressure() {
        let critical =
            pod("spec:\n  priorityClassName: system-node-critical\n  containers: [{name: c}]\n");
        assert_eq!(admit(&critical, true), Ok(()));
        for (toleration, ok) in [
            (
                "{key: node.kubernetes.io/memory-pressure, operator: Exists, effect: NoSchedule}",
                true,
            ),
            (
                "{key: node.kubernetes.io/memory-pressure, operator: Exists}",
                true,
            ),
            ("{operator: Exists}", true),
            (
                "{key: node.kubernetes.io/memory-pressure, effect: NoSchedule}",
                true,
            ),
            (
                "{key: node.kubernetes.io/memory-pressure, value: x, effect: NoSchedule}",
                false,
            ),
            (
                "{key: node.kubernetes.io/memory-pressure, operator: Exists, effect: NoExecute}",
                false,
            ),
            (
                "{key: node.kubernetes.io/disk-pressure, operator: Exists, effect: NoSchedule}",
                false,
            ),
        ] {
            let p = pod(&format!(
                "spec:\n  tolerations: [{toleration}]\n  containers: [{{name: c}}]\n"
            ));
            assert_eq!(admit(&p, true).is_ok(), ok, "{toleration}");
        }
    }

    #[test]
    fn thresholds_print_as_the_kubelet_does() {
        assert_eq!(quantity(100 << 20), "100Mi");
        assert_eq!(quantity(1000), "1000");
    }

    #[test]
    fn node_signal_is_capacity_minus_working_set() {
        let (_, cap) = resources::capacity();
        let a = node_available(cap);
        assert!(a > 0 && a <= cap, "{a} of {cap}");
    }
}
