//! Startup, liveness and readiness probes (exec, httpGet, tcpSocket, grpc) and the
//! lifecycle hooks (postStart, preStop), with the kubelet's semantics: one worker per probe
//! of a running container instance; liveness and readiness wait for the startup probe;
//! a verdict flips after failureThreshold failures or successThreshold successes.

use std::sync::Arc;
use std::time::Duration;

use cri_proto::api;
use k8s_openapi::api::core::v1::{LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;

mod grpc;
mod http;

use crate::metrics::ProbeLabels;
use crate::state::{ProbeKind, Shared, Verdict};

/// Where a probe runs: the container instance and the pod's address.
#[derive(Clone)]
pub struct Target {
    pub container_id: String,
    pub container: String,
    pub pod: String,
    pub namespace: String,
    pub uid: String,
    /// The pod IP, or 127.0.0.1 (host network, or no IP).
    pub host: String,
    /// Named ports of the container.
    pub ports: Vec<(String, i32)>,
}

fn port_of(p: &IntOrString, t: &Target) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => t
            .ports
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, p)| u16::try_from(*p).ok())
            .ok_or_else(|| format!("unknown named port {name:?}")),
    }
}

async fn exec(shared: &Shared, id: &str, cmd: &[String], timeout: Duration) -> Result<(), String> {
    let Some(mut c) = shared.cri.get().await else {
        return Err("the CRI endpoint is unreachable".into());
    };
    let mut req = tonic::Request::new(api::ExecSyncRequest {
        container_id: id.to_string(),
        cmd: cmd.to_vec(),
        timeout: timeout.as_secs().max(1) as i64,
    });
    req.set_timeout(timeout + Duration::from_secs(5));
    match c.runtime.exec_sync(req).await {
        Ok(r) => {
            let r = r.into_inner();
            if r.exit_code == 0 {
                Ok(())
            } else {
                let out = String::from_utf8_lossy(&r.stdout).into_owned()
                    + &String::from_utf8_lossy(&r.stderr);
                Err(format!(
                    "command {cmd:?} exited with {}: {}",
                    r.exit_code,
                    out.trim()
                ))
            }
        }
        Err(s) => Err(format!("command {cmd:?} failed: {}", s.message())),
    }
}

async fn tcp(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
        Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
    }
}

/// Runs a probe once.
pub async fn run_once(shared: &Shared, p: &Probe, t: &Target) -> Result<(), String> {
    let timeout = Duration::from_secs(p.timeout_seconds.unwrap_or(1).max(1) as u64);
    if let Some(e) = &p.exec {
        return exec(
            shared,
            &t.container_id,
            e.command.as_deref().unwrap_or(&[]),
            timeout,
        )
        .await;
    }
    if let Some(h) = &p.http_get {
        let port = port_of(&h.port, t)?;
        return http::get(h, &t.host, port, timeout).await;
    }
    if let Some(s) = &p.tcp_socket {
        let host = s.host.clone().unwrap_or_else(|| t.host.clone());
        return tcp(&host, port_of(&s.port, t)?, timeout).await;
    }
    if let Some(g) = &p.grpc {
        let port = u16::try_from(g.port).map_err(|_| format!("invalid port {}", g.port))?;
        return grpc::check(&t.host, port, g.service.as_deref().unwrap_or(""), timeout).await;
    }
    Err("probe has no handler".into())
}

/// Runs a lifecycle hook (exec or httpGet; sleep too) within `timeout`.
pub async fn run_hook(
    shared: &Shared,
    h: &LifecycleHandler,
    t: &Target,
    timeout: Duration,
) -> Result<(), String> {
    if let Some(e) = &h.exec {
        return exec(
            shared,
            &t.container_id,
            e.command.as_deref().unwrap_or(&[]),
            timeout,
        )
        .await;
    }
    if let Some(g) = &h.http_get {
        let port = port_of(&g.port, t)?;
        return http::get(g, &t.host, port, timeout).await;
    }
    if let Some(s) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(s.seconds.max(0) as u64).min(timeout)).await;
        return Ok(());
    }
    Ok(())
}

/// The worker of one probe of one container instance; ends when aborted (the instance stopped)
/// or, for a startup probe, when it succeeded.
pub async fn worker(
    shared: Arc<Shared>,
    kind: ProbeKind,
    p: Probe,
    t: Target,
    started_at: std::time::SystemTime,
) {
    let key = (t.container_id.clone(), kind);
    let initial = match kind {
        ProbeKind::Liveness => Verdict::Success,
        _ => Verdict::Unknown,
    };
    shared.lock().probes.insert(key.clone(), initial);
    let delay = Duration::from_secs(p.initial_delay_seconds.unwrap_or(0).max(0) as u64);
    let since = started_at.elapsed().unwrap_or_default();
    if delay > since {
        tokio::time::sleep(delay - since).await;
    }
    let period = Duration::from_secs(p.period_seconds.unwrap_or(10).max(1) as u64);
    let success_threshold = p.success_threshold.unwrap_or(1).max(1);
    let failure_threshold = p.failure_threshold.unwrap_or(3).max(1);
    let (mut ok_run, mut fail_run) = (0, 0);
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        if kind != ProbeKind::Startup {
            let started = shared
                .lock()
                .probes
                .get(&(t.container_id.clone(), ProbeKind::Startup))
                .copied();
            if matches!(started, Some(Verdict::Unknown) | Some(Verdict::Failure)) {
                continue;
            }
        }
        // Boxed: a probe's future (an exec through CRI, an HTTP or gRPC client) is some
        // KiB, and held inline it would stay allocated in every worker between probes.
        let result = Box::pin(run_once(&shared, &p, &t)).await;
        let label = |r: &str| ProbeLabels {
            probe_type: kind.as_str().into(),
            result: r.into(),
            container: t.container.clone(),
            pod: t.pod.clone(),
            namespace: t.namespace.clone(),
        };
        let verdict = match &result {
            Ok(()) => {
                shared
                    .metrics
                    .probes
                    .get_or_create(&label("successful"))
                    .inc();
                ok_run += 1;
                fail_run = 0;
                (ok_run >= success_threshold).then_some(Verdict::Success)
            }
            Err(msg) => {
                shared.metrics.probes.get_or_create(&label("failed")).inc();
                fail_run += 1;
                ok_run = 0;
                let pod = shared
                    .lock()
                    .pods
                    .get(&format!("{}/{}", t.namespace, t.pod))
                    .cloned();
                if let Some(pod) = pod {
                    shared.event(
                        &pod,
                        &t.uid,
                        "Warning",
                        "Unhealthy",
                        format!("{} probe failed: {msg}", kind.as_str()),
                    );
                }
                (fail_run >= failure_threshold).then_some(Verdict::Failure)
            }
        };
        if let Some(v) = verdict {
            let changed = {
                // Tested first: a write marks a change for the API's watches.
                let mut g = shared.lock();
                let changed = g.probes.get(&key) != Some(&v);
                if changed {
                    g.probes.insert(key.clone(), v);
                }
                changed
            };
            if changed {
                shared.wake.notify_one();
            }
            if kind == ProbeKind::Startup && v == Verdict::Success {
                return;
            }
            if kind == ProbeKind::Liveness && v == Verdict::Failure {
                // The container is restarted; a new instance gets a new worker.
                return;
            }
        }
    }
}
