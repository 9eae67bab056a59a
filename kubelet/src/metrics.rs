//! Prometheus metrics (prometheus-client), with the kubelet's names where one exists.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionLabels {
    pub eviction_signal: String,
}

/// The API server's labels of a long-running request (here: a watch).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LongRunningLabels {
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub probe_type: String,
    pub result: String,
    pub container: String,
    pub pod: String,
    pub namespace: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub running_pods: Gauge,
    pub running_containers: Gauge,
    pub pod_start: Histogram,
    pub restarted_pods: Counter,
    pub probes: Family<ProbeLabels, Counter>,
    pub evictions: Family<EvictionLabels, Counter>,
    pub long_running: Family<LongRunningLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let running_pods = Gauge::default();
        let running_containers = Gauge::default();
        let pod_start = Histogram::new([
            0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 300.0,
        ]);
        let restarted_pods = Counter::default();
        let probes = Family::<ProbeLabels, Counter>::default();
        let evictions = Family::<EvictionLabels, Counter>::default();
        let long_running = Family::<LongRunningLabels, Gauge>::default();
        // prometheus-client adds the `_total` suffix to counters itself.
        registry.register(
            "kubelet_running_pods",
            "Number of pods that have a running pod sandbox",
            running_pods.clone(),
        );
        registry.register(
            "kubelet_running_containers",
            "Number of containers currently running",
            running_containers.clone(),
        );
        registry.register(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from the kubelet seeing a pod for the first time to the pod starting to run",
            pod_start.clone(),
        );
        registry.register(
            "kubelet_restarted_pods",
            "Number of pods that have been restarted because they were deleted and recreated with the same UID",
            restarted_pods.clone(),
        );
        registry.register(
            "prober_probe",
            "Cumulative number of a liveness, readiness or startup probe for a container by result",
            probes.clone(),
        );
        registry.register(
            "kubelet_evictions",
            "Cumulative number of pod evictions by eviction signal",
            evictions.clone(),
        );
        registry.register(
            "apiserver_longrunning_requests",
            "Gauge of all active long-running apiserver requests broken out by verb, group, version and resource",
            long_running.clone(),
        );
        Metrics {
            registry,
            running_pods,
            running_containers,
            pod_start,
            restarted_pods,
            probes,
            evictions,
            long_running,
        }
    }
}

/// One long-running request counted in `apiserver_longrunning_requests` while it lives.
pub struct LongRunning(Gauge);

impl LongRunning {
    pub fn start(m: &Metrics, labels: LongRunningLabels) -> Self {
        let g = m.long_running.get_or_create(&labels).clone();
        g.inc();
        LongRunning(g)
    }
}

impl Drop for LongRunning {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
