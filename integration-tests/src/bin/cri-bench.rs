//! `cri-bench`: pod start latency of a CRI server, measured over its socket.
//!
//! ```text
//! cri-bench --socket PATH --image REF [--runs N] [--warmup N] [--host-network]
//!           [--keep N] [--ready-file PATH] [--json PATH] [--name LABEL]
//!           [--cgroup-parent REL] [--log-root DIR] [--timeout SECS]
//! ```
//!
//! One measured run: RunPodSandbox, CreateContainer (busybox `sleep 3600`),
//! StartContainer, then ContainerStatus polled until it says RUNNING; wall clock
//! (`Instant`) from before RunPodSandbox to the first RUNNING answer. Each pod is then
//! torn down, untimed (StopPodSandbox, RemovePodSandbox). `--warmup` runs (default 3) go
//! first and are not counted; `--runs` (default 30) are.
//!
//! The pods are shaped like the kubelet's (see `integration_tests::cri`): metadata, labels,
//! a log directory of their own (below `--log-root`, default a temp dir removed at the
//! end), network and IPC namespaces of the pod (`--host-network`: the node's network,
//! `namespace_options.network = NODE`), PID per container, and a relative
//! `linux.cgroup_parent` `<--cgroup-parent>/pod-<n>` (default `rrun-bench/cri-bench-<pid>`:
//! below the server's own cgroup for a cgroupfs-driver server).
//!
//! `--keep N`: after the measured runs, starts N more pods the same way and leaves them
//! running, writes their ids and pids as JSON to `--ready-file` (if given; written to a
//! temp name and renamed, so it appears complete), prints `kept N pods`, and waits for
//! SIGTERM, SIGINT, SIGUSR1 or a line on stdin before removing them (stdin at EOF, as for
//! a background job, is ignored).
//!
//! Prints median, p90, min and max in ms; `--json PATH` writes every sample (with its
//! wall-clock start time and per-call durations) and the summary.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use integration_tests::cri::{api, image_spec, kv, pod_namespaces, Client};
use serde_json::{json, Value};

const USAGE: &str = "usage: cri-bench --socket PATH --image REF [--runs N (30)] [--warmup N (3)]
                 [--host-network] [--keep N] [--ready-file PATH] [--json PATH]
                 [--name LABEL] [--cgroup-parent REL (rrun-bench/cri-bench-PID)]
                 [--log-root DIR (a temp dir)] [--timeout SECS (60)]";

struct Opts {
    socket: PathBuf,
    image: String,
    runs: usize,
    warmup: usize,
    host_network: bool,
    keep: usize,
    ready_file: Option<PathBuf>,
    json: Option<PathBuf>,
    name: String,
    cgroup_parent: String,
    log_root: Option<PathBuf>,
    timeout: Duration,
}

fn parse_args(args: &[String]) -> Result<Opts> {
    let mut socket = None;
    let mut image = None;
    let mut o = Opts {
        socket: PathBuf::new(),
        image: String::new(),
        runs: 30,
        warmup: 3,
        host_network: false,
        keep: 0,
        ready_file: None,
        json: None,
        name: String::new(),
        cgroup_parent: format!("rrun-bench/cri-bench-{}", std::process::id()),
        log_root: None,
        timeout: Duration::from_secs(60),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if flag == "--host-network" {
            o.host_network = true;
            continue;
        }
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = it
            .next()
            .ok_or_else(|| anyhow!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| -> Result<usize> {
            v.parse::<usize>()
                .with_context(|| format!("{flag} {v:?}: not a number"))
        };
        match flag.as_str() {
            "--socket" => socket = Some(PathBuf::from(value)),
            "--image" => image = Some(value.clone()),
            "--runs" => o.runs = num(value)?,
            "--warmup" => o.warmup = num(value)?,
            "--keep" => o.keep = num(value)?,
            "--ready-file" => o.ready_file = Some(PathBuf::from(value)),
            "--json" => o.json = Some(PathBuf::from(value)),
            "--name" => o.name = value.clone(),
            "--cgroup-parent" => o.cgroup_parent = value.trim_matches('/').to_string(),
            "--log-root" => o.log_root = Some(PathBuf::from(value)),
            "--timeout" => o.timeout = Duration::from_secs(num(value)? as u64),
            other => bail!("unknown option {other:?}\n{USAGE}"),
        }
    }
    o.socket = socket.ok_or_else(|| anyhow!("--socket is required\n{USAGE}"))?;
    o.image = image.ok_or_else(|| anyhow!("--image is required\n{USAGE}"))?;
    if o.runs == 0 && o.keep == 0 {
        bail!("nothing to do: --runs 0 and no --keep");
    }
    if o.cgroup_parent.is_empty() {
        bail!("--cgroup-parent must not be empty");
    }
    if o.name.is_empty() {
        o.name = o.socket.display().to_string();
    }
    Ok(o)
}

/// One pod of the bench: its request and what the server answered.
struct Pod {
    name: String,
    config: api::PodSandboxConfig,
    pod_id: String,
    container_id: String,
}

/// The durations of one measured start, in ms.
struct Sample {
    started_unix_ns: u128,
    run_pod_ms: f64,
    create_ms: f64,
    start_ms: f64,
    running_ms: f64,
    total_ms: f64,
    polls: u32,
}

struct Bench {
    opts: Opts,
    client: Client,
    log_root: PathBuf,
    tag: String,
    counter: usize,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn status_msg(what: &str, s: &tonic::Status) -> anyhow::Error {
    anyhow!("{what}: {:?}: {}", s.code(), s.message())
}

impl Bench {
    fn namespaces(&self) -> api::NamespaceOption {
        let mut ns = pod_namespaces();
        if self.opts.host_network {
            ns.network = api::NamespaceMode::Node as i32;
        }
        ns
    }

    fn pod_config(&mut self, kind: &str) -> Result<(String, api::PodSandboxConfig)> {
        self.counter += 1;
        let name = format!("bench-{kind}-{}", self.counter);
        let log_dir = self.log_root.join(&name);
        fs::create_dir_all(&log_dir)
            .with_context(|| format!("mkdir pod log dir {}", log_dir.display()))?;
        let config = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.clone(),
                uid: format!("uid-{}-{name}", self.tag),
                namespace: "rrun-bench".into(),
                attempt: 0,
            }),
            // As the kubelet: no hostname for a pod on the node's network (runc refuses
            // to set one without a UTS namespace of the pod).
            hostname: if self.opts.host_network {
                String::new()
            } else {
                name.clone()
            },
            log_directory: log_dir.display().to_string(),
            labels: HashMap::from([
                ("io.kubernetes.pod.name".into(), name.clone()),
                ("io.kubernetes.pod.namespace".into(), "rrun-bench".into()),
                ("rrun-bench".into(), self.tag.clone()),
            ]),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: format!("{}/pod-{name}", self.opts.cgroup_parent),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(self.namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok((name, config))
    }

    fn container_config(&self) -> api::ContainerConfig {
        api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: "sleep".into(),
                attempt: 0,
            }),
            image: Some(image_spec(&self.opts.image)),
            command: vec!["sleep".into(), "3600".into()],
            envs: vec![kv("RRUN_BENCH", &self.tag)],
            labels: HashMap::from([
                ("io.kubernetes.container.name".into(), "sleep".into()),
                ("rrun-bench".into(), self.tag.clone()),
            ]),
            log_path: "sleep.log".into(),
            linux: Some(api::LinuxContainerConfig {
                resources: Some(api::LinuxContainerResources::default()),
                security_context: Some(api::LinuxContainerSecurityContext {
                    namespace_options: Some(self.namespaces()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    /// Starts one pod with its container and waits until ContainerStatus says RUNNING.
    /// On error, whatever was made is removed.
    async fn start_pod(&mut self, kind: &str) -> Result<(Pod, Sample)> {
        let (name, config) = self.pod_config(kind)?;
        let cfg = self.container_config();
        let mut rt = self.client.runtime.clone();
        let started_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let t0 = Instant::now();
        let pod_id = rt
            .run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(|s| status_msg(&format!("RunPodSandbox {name}"), &s))?
            .into_inner()
            .pod_sandbox_id;
        let t1 = Instant::now();
        let mut pod = Pod {
            name,
            config,
            pod_id,
            container_id: String::new(),
        };
        match self.start_container(&mut pod, cfg, t0, t1).await {
            Ok(s) => Ok((
                pod,
                Sample {
                    started_unix_ns,
                    ..s
                },
            )),
            Err(e) => {
                if let Err(e2) = self.remove_pod(&pod).await {
                    eprintln!(
                        "cri-bench: removing pod {} after an error: {e2:#}",
                        pod.name
                    );
                }
                Err(e)
            }
        }
    }

    async fn start_container(
        &self,
        pod: &mut Pod,
        cfg: api::ContainerConfig,
        t0: Instant,
        t1: Instant,
    ) -> Result<Sample> {
        let mut rt = self.client.runtime.clone();
        pod.container_id = rt
            .create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod.pod_id.clone(),
                config: Some(cfg),
                sandbox_config: Some(pod.config.clone()),
            })
            .await
            .map_err(|s| status_msg(&format!("CreateContainer in {}", pod.name), &s))?
            .into_inner()
            .container_id;
        let t2 = Instant::now();
        rt.start_container(api::StartContainerRequest {
            container_id: pod.container_id.clone(),
        })
        .await
        .map_err(|s| status_msg(&format!("StartContainer in {}", pod.name), &s))?;
        let t3 = Instant::now();
        let deadline = t3 + self.opts.timeout;
        let mut polls = 0;
        loop {
            polls += 1;
            let st = rt
                .container_status(api::ContainerStatusRequest {
                    container_id: pod.container_id.clone(),
                    verbose: false,
                })
                .await
                .map_err(|s| status_msg(&format!("ContainerStatus in {}", pod.name), &s))?
                .into_inner()
                .status
                .ok_or_else(|| anyhow!("ContainerStatus in {}: no status", pod.name))?;
            if st.state == api::ContainerState::ContainerRunning as i32 {
                break;
            }
            if st.state == api::ContainerState::ContainerExited as i32 {
                bail!(
                    "container in {} exited (code {}, reason {:?}, message {:?})",
                    pod.name,
                    st.exit_code,
                    st.reason,
                    st.message
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "container in {} not RUNNING within {:?} (state {})",
                    pod.name,
                    self.opts.timeout,
                    st.state
                );
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let t4 = Instant::now();
        Ok(Sample {
            started_unix_ns: 0,
            run_pod_ms: ms(t1 - t0),
            create_ms: ms(t2 - t1),
            start_ms: ms(t3 - t2),
            running_ms: ms(t4 - t3),
            total_ms: ms(t4 - t0),
            polls,
        })
    }

    /// StopPodSandbox then RemovePodSandbox (the containers go with the pod), then the
    /// pod's log dir.
    async fn remove_pod(&self, pod: &Pod) -> Result<()> {
        let mut rt = self.client.runtime.clone();
        rt.stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: pod.pod_id.clone(),
        })
        .await
        .map_err(|s| status_msg(&format!("StopPodSandbox {}", pod.name), &s))?;
        rt.remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: pod.pod_id.clone(),
        })
        .await
        .map_err(|s| status_msg(&format!("RemovePodSandbox {}", pod.name), &s))?;
        let _ = fs::remove_dir_all(&pod.config.log_directory);
        Ok(())
    }

    /// The pid in a verbose status's `info["info"]` JSON (containerd's shape, which
    /// rrun-cri follows), if any.
    fn info_pid(info: &HashMap<String, String>) -> Option<i64> {
        let v: Value = serde_json::from_str(info.get("info")?).ok()?;
        v.get("pid").and_then(Value::as_i64).filter(|p| *p > 0)
    }

    async fn describe(&self, pod: &Pod) -> Value {
        let mut rt = self.client.runtime.clone();
        let sandbox_pid = rt
            .pod_sandbox_status(api::PodSandboxStatusRequest {
                pod_sandbox_id: pod.pod_id.clone(),
                verbose: true,
            })
            .await
            .ok()
            .and_then(|r| Self::info_pid(&r.into_inner().info));
        let container_pid = rt
            .container_status(api::ContainerStatusRequest {
                container_id: pod.container_id.clone(),
                verbose: true,
            })
            .await
            .ok()
            .and_then(|r| Self::info_pid(&r.into_inner().info));
        json!({
            "name": pod.name,
            "pod_id": pod.pod_id,
            "container_id": pod.container_id,
            "sandbox_pid": sandbox_pid,
            "container_pid": container_pid,
        })
    }
}

/// The `q`-quantile (0..=1) of sorted `v`, nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn summary(samples: &[Sample], field: fn(&Sample) -> f64) -> Value {
    let mut v: Vec<f64> = samples.iter().map(field).collect();
    v.sort_by(f64::total_cmp);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    json!({
        "median": round(median(&v)),
        "p90": round(quantile(&v, 0.9)),
        "min": round(v.first().copied().unwrap_or(f64::NAN)),
        "max": round(v.last().copied().unwrap_or(f64::NAN)),
        "mean": round(v.iter().sum::<f64>() / v.len().max(1) as f64),
    })
}

fn write_atomic(path: &Path, text: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Waits for SIGTERM, SIGINT, SIGUSR1 or a line on stdin.
async fn wait_for_release() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut usr1 = signal(SignalKind::user_defined1()).context("SIGUSR1 handler")?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    std::thread::spawn(move || {
        let mut line = String::new();
        // EOF (a background job's /dev/null) is no release: only a line is.
        if matches!(std::io::stdin().read_line(&mut line), Ok(n) if n > 0) {
            let _ = tx.blocking_send(());
        }
    });
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = usr1.recv() => {}
        Some(()) = rx.recv() => {}
    }
    Ok(())
}

async fn run(opts: Opts) -> Result<Value> {
    let client = Client::connect(&opts.socket)
        .await
        .with_context(|| format!("connecting to {}", opts.socket.display()))?;
    let version = client
        .runtime
        .clone()
        .version(api::VersionRequest {
            version: "0.1.0".into(),
        })
        .await
        .map_err(|s| status_msg("Version", &s))?
        .into_inner();
    let image_status = client
        .image
        .clone()
        .image_status(api::ImageStatusRequest {
            image: Some(image_spec(&opts.image)),
            verbose: false,
        })
        .await
        .map_err(|s| status_msg(&format!("ImageStatus {}", opts.image), &s))?
        .into_inner();
    if image_status.image.is_none() {
        bail!(
            "image {} is not on the server {}: import it first",
            opts.image,
            opts.socket.display()
        );
    }
    let tmp_logs = match &opts.log_root {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("cri-bench-logs-")
                .tempdir()
                .context("making the log temp dir")?,
        ),
    };
    let log_root = match (&opts.log_root, &tmp_logs) {
        (Some(d), _) => {
            fs::create_dir_all(d).with_context(|| format!("mkdir {}", d.display()))?;
            d.clone()
        }
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable!("a temp dir is made when --log-root is not given"),
    };
    eprintln!(
        "cri-bench: {} {} (runtime API {}) on {}; image {}; {} network; {} warmup + {} runs",
        version.runtime_name,
        version.runtime_version,
        version.runtime_api_version,
        opts.socket.display(),
        opts.image,
        if opts.host_network { "host" } else { "pod" },
        opts.warmup,
        opts.runs
    );
    let mut bench = Bench {
        tag: format!("cri-bench-{}", std::process::id()),
        opts,
        client,
        log_root,
        counter: 0,
    };
    let mut samples = Vec::new();
    let total = bench.opts.warmup + bench.opts.runs;
    for i in 0..total {
        let warm = i < bench.opts.warmup;
        let (pod, s) = bench.start_pod(if warm { "warm" } else { "run" }).await?;
        bench.remove_pod(&pod).await?;
        if !warm {
            samples.push(s);
        }
    }

    let mut kept_info = Vec::new();
    if bench.opts.keep > 0 {
        let mut kept = Vec::new();
        let mut result = Ok(());
        for _ in 0..bench.opts.keep {
            match bench.start_pod("keep").await {
                Ok((pod, _)) => kept.push(pod),
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        if result.is_ok() {
            for pod in &kept {
                kept_info.push(bench.describe(pod).await);
            }
            let ready = json!({ "pods": kept_info });
            if let Some(f) = &bench.opts.ready_file {
                result = write_atomic(f, &serde_json::to_string_pretty(&ready)?);
            }
        }
        if result.is_ok() {
            println!(
                "kept {} pods; waiting for a signal or a line on stdin",
                kept.len()
            );
            let _ = std::io::stdout().flush();
            result = wait_for_release().await;
        }
        for pod in &kept {
            if let Err(e) = bench.remove_pod(pod).await {
                eprintln!("cri-bench: {e:#}");
                if result.is_ok() {
                    result = Err(e);
                }
            }
        }
        result?;
    }

    let o = &bench.opts;
    let out = json!({
        "name": o.name,
        "socket": o.socket.display().to_string(),
        "runtime_name": version.runtime_name,
        "runtime_version": version.runtime_version,
        "image": o.image,
        "host_network": o.host_network,
        "cgroup_parent": o.cgroup_parent,
        "warmup": o.warmup,
        "runs": o.runs,
        "measured": "RunPodSandbox + CreateContainer + StartContainer until ContainerStatus is RUNNING (ms)",
        "total_ms": summary(&samples, |s| s.total_ms),
        "run_pod_ms": summary(&samples, |s| s.run_pod_ms),
        "create_ms": summary(&samples, |s| s.create_ms),
        "start_ms": summary(&samples, |s| s.start_ms),
        "running_ms": summary(&samples, |s| s.running_ms),
        "samples": samples.iter().map(|s| json!({
            "started_unix_ns": s.started_unix_ns.to_string(),
            "run_pod_ms": s.run_pod_ms,
            "create_ms": s.create_ms,
            "start_ms": s.start_ms,
            "running_ms": s.running_ms,
            "total_ms": s.total_ms,
            "status_polls": s.polls,
        })).collect::<Vec<_>>(),
        "kept": kept_info,
        "load": fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
    });
    if !samples.is_empty() {
        let t = &out["total_ms"];
        println!(
            "{}: pod start (ms, {} runs{}): median {:.1}  p90 {:.1}  min {:.1}  max {:.1}",
            o.name,
            samples.len(),
            if o.host_network {
                ", host network"
            } else {
                ", pod network"
            },
            t["median"].as_f64().unwrap_or(f64::NAN),
            t["p90"].as_f64().unwrap_or(f64::NAN),
            t["min"].as_f64().unwrap_or(f64::NAN),
            t["max"].as_f64().unwrap_or(f64::NAN),
        );
        let part = |k: &str| out[k]["median"].as_f64().unwrap_or(f64::NAN);
        println!(
            "  medians: RunPodSandbox {:.1}  CreateContainer {:.1}  StartContainer {:.1}  until RUNNING {:.1}",
            part("run_pod_ms"),
            part("create_ms"),
            part("start_ms"),
            part("running_ms"),
        );
    }
    if let Some(p) = &o.json {
        write_atomic(p, &serde_json::to_string_pretty(&out)?)?;
    }
    drop(tmp_logs);
    Ok(out)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = match parse_args(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cri-bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cri-bench: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(opts)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cri-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
