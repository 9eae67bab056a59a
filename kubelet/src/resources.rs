//! Requests and limits as the kubelet turns them into CRI resources, the pod's QoS class,
//! its cgroup under the cgroupfs driver's tree, and node admission (does the pod fit?).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

/// The kubelet's constants (pkg/kubelet/cm and qos).
const MIN_SHARES: i64 = 2;
const SHARES_PER_CPU: i64 = 1024;
const QUOTA_PERIOD: i64 = 100_000;
const MIN_QUOTA: i64 = 1000;
const GUARANTEED_OOM_SCORE_ADJ: i64 = -997;
const BEST_EFFORT_OOM_SCORE_ADJ: i64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Qos {
    Guaranteed,
    Burstable,
    BestEffort,
}

impl Qos {
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::Guaranteed => "Guaranteed",
            Qos::Burstable => "Burstable",
            Qos::BestEffort => "BestEffort",
        }
    }
}

/// A container's cpu (millicores) and memory (bytes) requests and limits; a request left
/// out where a limit is given defaults to the limit, as the API server's defaulting does.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Amounts {
    pub cpu_request: Option<i64>,
    pub cpu_limit: Option<i64>,
    pub mem_request: Option<i64>,
    pub mem_limit: Option<i64>,
}

fn get<'a>(map: &'a Option<BTreeMap<String, Quantity>>, key: &str) -> Option<&'a str> {
    map.as_ref()?.get(key).map(|q| q.0.as_str())
}

/// Reads a container's resources; the error names the field.
pub fn amounts(c: &Container) -> Result<Amounts, String> {
    let r = c.resources.clone().unwrap_or_default();
    let cpu = |m: &Option<BTreeMap<String, Quantity>>, what: &str| {
        get(m, "cpu")
            .map(|q| quantity::milli_cpu(q).map_err(|e| format!("resources.{what}.cpu: {e}")))
            .transpose()
    };
    let mem = |m: &Option<BTreeMap<String, Quantity>>, what: &str| {
        get(m, "memory")
            .map(|q| quantity::bytes(q).map_err(|e| format!("resources.{what}.memory: {e}")))
            .transpose()
    };
    let cpu_limit = cpu(&r.limits, "limits")?;
    let mem_limit = mem(&r.limits, "limits")?;
    let cpu_request = cpu(&r.requests, "requests")?.or(cpu_limit);
    let mem_request = mem(&r.requests, "requests")?.or(mem_limit);
    Ok(Amounts {
        cpu_request,
        cpu_limit,
        mem_request,
        mem_limit,
    })
}

fn all_containers(spec: &PodSpec) -> impl Iterator<Item = &Container> {
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
}

/// The QoS class (pkg/apis/core/v1/helper/qos): Guaranteed when every container has cpu
/// and memory limits equal to its requests, BestEffort when none has any, else Burstable.
pub fn qos(spec: &PodSpec) -> Qos {
    let mut any = false;
    let mut guaranteed = true;
    for c in all_containers(spec) {
        let a = amounts(c).unwrap_or_default();
        if a.cpu_request.is_some() || a.mem_request.is_some() {
            any = true;
        }
        let full = a.cpu_limit.is_some()
            && a.mem_limit.is_some()
            && a.cpu_request == a.cpu_limit
            && a.mem_request == a.mem_limit;
        guaranteed &= full;
    }
    if !any {
        Qos::BestEffort
    } else if guaranteed {
        Qos::Guaranteed
    } else {
        Qos::Burstable
    }
}

/// The CRI resources of a container (pkg/kubelet/kuberuntime's generateLinuxContainerResources).
pub fn linux_resources(
    a: &Amounts,
    qos: Qos,
    memory_capacity: i64,
) -> cri_proto::api::LinuxContainerResources {
    let cpu_shares = match (a.cpu_request, a.cpu_limit) {
        (Some(r), _) => (r * SHARES_PER_CPU / 1000).max(MIN_SHARES),
        (None, _) => MIN_SHARES,
    };
    let cpu_quota = a
        .cpu_limit
        .map(|l| (l * QUOTA_PERIOD / 1000).max(MIN_QUOTA))
        .unwrap_or(0);
    cri_proto::api::LinuxContainerResources {
        cpu_shares,
        cpu_period: if cpu_quota > 0 { QUOTA_PERIOD } else { 0 },
        cpu_quota,
        memory_limit_in_bytes: a.mem_limit.unwrap_or(0),
        oom_score_adj: oom_score_adj(qos, a.mem_request.unwrap_or(0), memory_capacity),
        ..Default::default()
    }
}

/// pkg/kubelet/qos's GetContainerOOMScoreAdjust.
pub fn oom_score_adj(qos: Qos, mem_request: i64, memory_capacity: i64) -> i64 {
    match qos {
        Qos::Guaranteed => GUARANTEED_OOM_SCORE_ADJ,
        Qos::BestEffort => BEST_EFFORT_OOM_SCORE_ADJ,
        Qos::Burstable => {
            let cap = memory_capacity.max(1);
            let adj = 1000 - (1000 * i128::from(mem_request) / i128::from(cap)) as i64;
            if adj < 1000 + GUARANTEED_OOM_SCORE_ADJ {
                1000 + GUARANTEED_OOM_SCORE_ADJ
            } else if adj == BEST_EFFORT_OOM_SCORE_ADJ {
                adj - 1
            } else {
                adj
            }
        }
    }
}

/// The pod's cgroup with the cgroupfs driver: `<root>/kubepods[/burstable|/besteffort]/pod<uid>`.
pub fn pod_cgroup(cgroup_root: &str, qos: Qos, uid: &str) -> String {
    let root = cgroup_root.trim_end_matches('/');
    let class = match qos {
        Qos::Guaranteed => "",
        Qos::Burstable => "/burstable",
        Qos::BestEffort => "/besteffort",
    };
    format!("{root}/kubepods{class}/pod{uid}")
}

/// A pod's effective requests for scheduling: the larger of the sum over app containers
/// (and sidecars) and the largest init container (the scheduler's rule).
pub fn pod_requests(spec: &PodSpec) -> (i64, i64) {
    let mut cpu = 0;
    let mut mem = 0;
    for c in &spec.containers {
        let a = amounts(c).unwrap_or_default();
        cpu += a.cpu_request.unwrap_or(0);
        mem += a.mem_request.unwrap_or(0);
    }
    let (mut init_cpu, mut init_mem) = (0, 0);
    for c in spec.init_containers.iter().flatten() {
        let a = amounts(c).unwrap_or_default();
        if c.restart_policy.as_deref() == Some("Always") {
            cpu += a.cpu_request.unwrap_or(0);
            mem += a.mem_request.unwrap_or(0);
        } else {
            init_cpu = init_cpu.max(a.cpu_request.unwrap_or(0));
            init_mem = init_mem.max(a.mem_request.unwrap_or(0));
        }
    }
    (cpu.max(init_cpu), mem.max(init_mem))
}

/// The limits the kubelet writes on a pod's own cgroup (pkg/kubelet/cm's
/// ResourceConfigForPod): cpu shares from the requests; a cpu quota and a memory limit only
/// when every container declares that limit (else the pod could not use what its
/// unlimited containers may); BestEffort pods get the minimum shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodLimits {
    pub cpu_shares: i64,
    /// cfs quota in µs per `QUOTA_PERIOD`.
    pub cpu_quota: Option<i64>,
    pub memory: Option<i64>,
}

impl PodLimits {
    pub const PERIOD: i64 = QUOTA_PERIOD;
}

/// A pod's limits by the same rule as its requests: the larger of the sum over app
/// containers (and sidecars) and the largest init container; `None` when a container has
/// no such limit.
fn pod_limit(spec: &PodSpec, get: impl Fn(&Amounts) -> Option<i64>) -> Option<i64> {
    let mut sum = 0;
    for c in &spec.containers {
        sum += get(&amounts(c).unwrap_or_default())?;
    }
    let mut init = 0;
    for c in spec.init_containers.iter().flatten() {
        let v = get(&amounts(c).unwrap_or_default())?;
        if c.restart_policy.as_deref() == Some("Always") {
            sum += v;
        } else {
            init = init.max(v);
        }
    }
    Some(sum.max(init))
}

pub fn pod_limits(spec: &PodSpec) -> PodLimits {
    let qos = qos(spec);
    if qos == Qos::BestEffort {
        return PodLimits {
            cpu_shares: MIN_SHARES,
            cpu_quota: None,
            memory: None,
        };
    }
    let (cpu_request, _) = pod_requests(spec);
    PodLimits {
        cpu_shares: (cpu_request * SHARES_PER_CPU / 1000).max(MIN_SHARES),
        cpu_quota: pod_limit(spec, |a| a.cpu_limit)
            .map(|l| (l * QUOTA_PERIOD / 1000).max(MIN_QUOTA)),
        memory: pod_limit(spec, |a| a.mem_limit),
    }
}

/// What the node offers pods: capacity minus kube and system reservations and the hard
/// eviction threshold of memory (the kubelet's allocatable).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allocatable {
    pub milli_cpu: i64,
    pub memory: i64,
    pub pods: i64,
}

/// A refusal: the kubelet's reason (`OutOfcpu`, `OutOfmemory`, `OutOfpods`) and message.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub reason: String,
    pub message: String,
}

/// Admits `pod` onto a node where `admitted` already run (the kubelet's predicate admit
/// handler, resources part).
pub fn admit(pod: &Pod, admitted: &[&Pod], alloc: &Allocatable) -> Result<(), Refusal> {
    let refuse = |res: &str, req: i64, used: i64, cap: i64| {
        Refusal {
        reason: format!("OutOf{res}"),
        message: format!(
            "Node didn't have enough resource: {res}, requested: {req}, used: {used}, capacity: {cap}"
        ),
    }
    };
    let n = admitted.len() as i64;
    if n + 1 > alloc.pods {
        return Err(refuse("pods", 1, n, alloc.pods));
    }
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let (cpu, mem) = pod_requests(spec);
    let (mut used_cpu, mut used_mem) = (0, 0);
    for p in admitted {
        if let Some(s) = p.spec.as_ref() {
            let (c, m) = pod_requests(s);
            used_cpu += c;
            used_mem += m;
        }
    }
    if cpu > 0 && used_cpu + cpu > alloc.milli_cpu {
        return Err(refuse("cpu", cpu, used_cpu, alloc.milli_cpu));
    }
    if mem > 0 && used_mem + mem > alloc.memory {
        return Err(refuse("memory", mem, used_mem, alloc.memory));
    }
    Ok(())
}

/// The machine's cpus (millicores) and memory (bytes).
pub fn capacity() -> (i64, i64) {
    // SAFETY: sysconf has no preconditions.
    let cpus = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    (cpus * 1000, mem)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(req: &[(&str, &str)], lim: &[(&str, &str)]) -> Container {
        let m = |kv: &[(&str, &str)]| {
            (!kv.is_empty()).then(|| {
                kv.iter()
                    .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                    .collect()
            })
        };
        Container {
            name: "c".into(),
            resources: Some(k8s_openapi::api::core::v1::ResourceRequirements {
                requests: m(req),
                limits: m(lim),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn spec(c: Container) -> PodSpec {
        PodSpec {
            containers: vec![c],
            ..Default::default()
        }
    }

    #[test]
    fn qos_classes_and_cri_resources() {
        let g = spec(container(&[], &[("cpu", "500m"), ("memory", "64Mi")]));
        assert_eq!(qos(&g), Qos::Guaranteed);
        let a = amounts(&g.containers[0]).unwrap();
        let r = linux_resources(&a, Qos::Guaranteed, 1 << 30);
        assert_eq!(r.cpu_shares, 512);
        assert_eq!(r.cpu_quota, 50_000);
        assert_eq!(r.cpu_period, 100_000);
        assert_eq!(r.memory_limit_in_bytes, 64 << 20);
        assert_eq!(r.oom_score_adj, -997);

        let b = spec(container(&[("cpu", "1m"), ("memory", "256Mi")], &[]));
        assert_eq!(qos(&b), Qos::Burstable);
        let a = amounts(&b.containers[0]).unwrap();
        let r = linux_resources(&a, Qos::Burstable, 1 << 30);
        assert_eq!(r.cpu_shares, 2);
        assert_eq!(r.cpu_quota, 0);
        assert_eq!(r.oom_score_adj, 750);

        let e = spec(Container::default());
        assert_eq!(qos(&e), Qos::BestEffort);
        let r = linux_resources(&Amounts::default(), Qos::BestEffort, 1 << 30);
        assert_eq!((r.cpu_shares, r.oom_score_adj), (2, 1000));
        assert_eq!(oom_score_adj(Qos::Burstable, 0, 1 << 30), 999);
        assert_eq!(oom_score_adj(Qos::Burstable, 1 << 30, 1 << 30), 3);
    }

    #[test]
    fn pod_level_limits() {
        let both = container(
            &[("cpu", "250m"), ("memory", "64Mi")],
            &[("cpu", "500m"), ("memory", "128Mi")],
        );
        let mut s = spec(both.clone());
        s.containers.push(Container {
            name: "b".into(),
            ..both.clone()
        });
        let l = pod_limits(&s);
        assert_eq!(l.cpu_shares, 512);
        assert_eq!(l.cpu_quota, Some(100_000));
        assert_eq!(l.memory, Some(256 << 20));
        // One container without limits: shares only.
        s.containers.push(container(&[("cpu", "100m")], &[]));
        let l = pod_limits(&s);
        assert_eq!((l.cpu_shares, l.cpu_quota, l.memory), (614, None, None));
        // A big init container raises the limit; BestEffort gets the minimum shares.
        let mut s = spec(both.clone());
        s.init_containers = Some(vec![container(&[], &[("cpu", "2"), ("memory", "1Gi")])]);
        assert_eq!(pod_limits(&s).memory, Some(1 << 30));
        assert_eq!(pod_limits(&s).cpu_quota, Some(200_000));
        let l = pod_limits(&spec(Container::default()));
        assert_eq!((l.cpu_shares, l.cpu_quota, l.memory), (2, None, None));
    }

    #[test]
    fn cgroups_and_admission() {
        assert_eq!(
            pod_cgroup("/rrun-test/x", Qos::Burstable, "u1"),
            "/rrun-test/x/kubepods/burstable/podu1"
        );
        assert_eq!(pod_cgroup("/", Qos::Guaranteed, "u1"), "/kubepods/podu1");
        let alloc = Allocatable {
            milli_cpu: 1000,
            memory: 1 << 30,
            pods: 1,
        };
        let p = Pod {
            spec: Some(spec(container(&[("cpu", "2")], &[]))),
            ..Default::default()
        };
        let e = admit(&p, &[], &alloc).unwrap_err();
        assert_eq!(e.reason, "OutOfcpu");
        let small = Pod {
            spec: Some(spec(container(&[("cpu", "100m")], &[]))),
            ..Default::default()
        };
        assert!(admit(&small, &[], &alloc).is_ok());
        assert_eq!(
            admit(&small, &[&small], &alloc).unwrap_err().reason,
            "OutOfpods"
        );
    }
}
