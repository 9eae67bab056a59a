//! Pod start on a CNI bridge network, rrun-cri vs containerd 1.6's CRI, with the same
//! conflist and Debian's plugins (bridge + host-local), each server in a network namespace
//! of its own made for the run (`integration_tests::netns`), so the bridges never meet the
//! machine's network. Timed: RunPodSandbox until it answers (the pod then has its address:
//! checked, untimed), one pod at a time after a warm-up, then `CONCURRENT` pods at once
//! (the time until the last answered). Pods are stopped and removed untimed.
//!
//! Prints per endpoint `<endpoint> single <median ms> <min> <max> <n>` and
//! `<endpoint> concurrent <total ms> <n>`, or `<endpoint> failed: <why>`. Run by
//! bench/cni.sh.
//!
//!   cni-bench [RUNS [CONCURRENT]]     (default 20 and 100; root, Debian's plugins)

use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::cri::{api, Client, CriServer, StartOptions};
use integration_tests::engines::{Containerd, CRI_RUNTIME, CRI_SANDBOX_IMAGE, RUNC};
use integration_tests::netns::{self, NodeNetns};

const PREFIX: &str = "10.78.0.";

type PodConfig = Box<dyn Fn(&str) -> api::PodSandboxConfig>;

/// One server under test: its client, how its pods look, its runtime handler.
struct Server {
    client: Client,
    pod: PodConfig,
    handler: String,
}

async fn wait_ready(client: &mut Client) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(st) = client.runtime.status(api::StatusRequest::default()).await {
            let ready = st.into_inner().status.is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.r#type == "NetworkReady" && c.status)
            });
            if ready {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            return Err("NetworkReady stayed false".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_pod(
    mut client: Client,
    cfg: api::PodSandboxConfig,
    handler: String,
) -> Result<(String, Duration), String> {
    let t0 = Instant::now();
    let id = client
        .runtime
        .run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(cfg),
            runtime_handler: handler,
        })
        .await
        .map_err(|e| format!("RunPodSandbox: {}", e.message()))?
        .into_inner()
        .pod_sandbox_id;
    let took = t0.elapsed();
    let st = client
        .runtime
        .pod_sandbox_status(api::PodSandboxStatusRequest {
            pod_sandbox_id: id.clone(),
            verbose: false,
        })
        .await
        .map_err(|e| format!("PodSandboxStatus: {}", e.message()))?
        .into_inner();
    let ip = st
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .unwrap_or_default();
    if !ip.starts_with(PREFIX) {
        return Err(format!("pod {id} has no address on the bridge ({ip:?})"));
    }
    Ok((id, took))
}

async fn remove(mut client: Client, id: String) -> Result<(), String> {
    client
        .runtime
        .stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: id.clone(),
        })
        .await
        .map_err(|e| format!("StopPodSandbox: {}", e.message()))?;
    client
        .runtime
        .remove_pod_sandbox(api::RemovePodSandboxRequest { pod_sandbox_id: id })
        .await
        .map_err(|e| format!("RemovePodSandbox: {}", e.message()))?;
    Ok(())
}

async fn measure(s: &Server, runs: usize, concurrent: usize) -> Result<(Vec<f64>, f64), String> {
    let (warm, _) = run_pod(s.client.clone(), (s.pod)("warm"), s.handler.clone()).await?;
    remove(s.client.clone(), warm).await?;
    let mut single = Vec::new();
    for i in 0..runs {
        let (id, took) = run_pod(
            s.client.clone(),
            (s.pod)(&format!("s{i}")),
            s.handler.clone(),
        )
        .await?;
        single.push(took.as_secs_f64() * 1000.0);
        remove(s.client.clone(), id).await?;
    }
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..concurrent)
        .map(|i| {
            tokio::spawn(run_pod(
                s.client.clone(),
                (s.pod)(&format!("c{i}")),
                s.handler.clone(),
            ))
        })
        .collect();
    let mut ids = Vec::new();
    let mut first_err = None;
    for t in tasks {
        match t.await.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok((id, _)) => ids.push(id),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let total = t0.elapsed().as_secs_f64() * 1000.0;
    let removals: Vec<_> = ids
        .into_iter()
        .map(|id| tokio::spawn(remove(s.client.clone(), id)))
        .collect();
    for r in removals {
        r.await.map_err(|e| e.to_string())??;
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok((single, total)),
    }
}

fn report(name: &str, r: Result<(Vec<f64>, f64), String>, concurrent: usize) {
    match r {
        Ok((mut single, total)) => {
            single.sort_by(|a, b| a.total_cmp(b));
            let n = single.len();
            let median = if n == 0 {
                0.0
            } else if n % 2 == 1 {
                single[n / 2]
            } else {
                (single[n / 2 - 1] + single[n / 2]) / 2.0
            };
            println!(
                "{name} single {median:.1} {:.1} {:.1} {n}",
                single.first().copied().unwrap_or(0.0),
                single.last().copied().unwrap_or(0.0)
            );
            println!("{name} concurrent {total:.1} {concurrent}");
        }
        Err(e) => println!("{name} failed: {e}"),
    }
}

fn conflist(ipam: &Path) -> serde_json::Value {
    let mut list = netns::conflist(PREFIX, ipam);
    // Only bridge + host-local: the pods have no host ports here.
    if let Some(plugins) = list["plugins"].as_array_mut() {
        plugins.truncate(1);
    }
    list
}

async fn rrun_cri(runs: usize, concurrent: usize) -> Result<(Vec<f64>, f64), String> {
    let node = NodeNetns::new("cnibench-r");
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let conf = scratch.path().join("conf");
    netns::write_config(
        &conf,
        "10-bench.conflist",
        &conflist(&scratch.path().join("ipam")),
    );
    let s = CriServer::start_with(
        "cnibench",
        StartOptions {
            wrap: node.wrap(),
            cni_conf_dir: Some(conf),
            ..StartOptions::default()
        },
    )
    .await;
    let mut client = s.client();
    wait_ready(&mut client).await?;
    let server = Server {
        client,
        pod: {
            // Built from the harness's kubelet-shaped config (its own cgroup parent).
            let base = s.pod_config("bench");
            Box::new(move |name: &str| {
                let mut cfg = base.clone();
                if let Some(m) = cfg.metadata.as_mut() {
                    m.name = name.into();
                    m.uid = format!("{}-{name}", m.uid);
                }
                cfg.hostname = name.into();
                if let Some(l) = cfg.linux.as_mut() {
                    l.cgroup_parent = format!("{}-{name}", l.cgroup_parent);
                }
                cfg
            })
        },
        handler: String::new(),
    };
    let r = measure(&server, runs, concurrent).await;
    drop(server);
    drop(s);
    drop(node);
    r
}

async fn containerd(runs: usize, concurrent: usize) -> Result<(Vec<f64>, f64), String> {
    let node = NodeNetns::new("cnibench-c");
    let cd = Containerd::start_with_cri_in(Path::new(RUNC), &node.wrap());
    cd.import_image("k8s.io", CRI_SANDBOX_IMAGE, &["sleep", "1000000"]);
    let bin = cd.dir.join("cni/bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    for p in ["bridge", "host-local", "loopback"] {
        std::os::unix::fs::symlink(format!("{}/{p}", netns::CNI_BIN_DIR), bin.join(p))
            .map_err(|e| e.to_string())?;
    }
    netns::write_config(
        &cd.dir.join("cni/conf"),
        "10-bench.conflist",
        &conflist(&cd.dir.join("ipam")),
    );
    let mut client = Client::connect(&cd.socket)
        .await
        .map_err(|e| format!("connect containerd: {e}"))?;
    wait_ready(&mut client).await?;
    let logs = cd.dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| e.to_string())?;
    let parent = cd.cgroup_of("pods");
    let server = Server {
        client,
        pod: Box::new(move |name: &str| api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.into(),
                uid: format!("uid-{name}"),
                namespace: "bench".into(),
                attempt: 0,
            }),
            hostname: name.into(),
            log_directory: logs.display().to_string(),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: format!("/{parent}-{name}"),
                ..Default::default()
            }),
            ..Default::default()
        }),
        handler: CRI_RUNTIME.into(),
    };
    let r = measure(&server, runs, concurrent).await;
    drop(server);
    drop(cd);
    drop(node);
    r
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| {
            a.parse().unwrap_or_else(|_| {
                eprintln!("usage: cni-bench [RUNS [CONCURRENT]]");
                std::process::exit(2)
            })
        })
        .collect();
    let runs = args.first().copied().unwrap_or(20);
    let concurrent = args.get(1).copied().unwrap_or(100).min(250);
    if let Err(missing) = netns::missing_tools() {
        eprintln!("cni-bench: missing {missing}");
        std::process::exit(1);
    }
    report("rrun-cri", rrun_cri(runs, concurrent).await, concurrent);
    report("containerd", containerd(runs, concurrent).await, concurrent);
}
