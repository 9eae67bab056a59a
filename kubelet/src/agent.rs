//! The agent's start: settings, state, the API socket and ports, the manifest watcher and
//! the reconcile loop.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use tokio::net::UnixListener;
use tokio::sync::{mpsc, Notify};

use crate::config::{self, Config};
use crate::cri::Cri;
use crate::manifest;
use crate::metrics::Metrics;
use crate::state::{Inner, Shared};
use crate::store::Store;
use crate::Args;

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

/// Flags over the file over the kubelet's defaults.
pub fn settings(args: &Args) -> Result<Config> {
    let file = match &args.config {
        Some(p) => config::read_file(p)?,
        None => config::FileConfig::default(),
    };
    for u in &file.unknown {
        tracing::warn!(
            "--config: field {u:?} is not honoured by rrun-kubelet and is ignored (honoured: {})",
            config::HONOURED.join(", ")
        );
    }
    let manifest_dir = args
        .pod_manifest_path
        .clone()
        .or(file.static_pod_path)
        .context("no manifest directory: give --pod-manifest-path or staticPodPath in --config")?;
    let endpoint = match &args.container_runtime_endpoint {
        Some(e) => config::parse_endpoint(e)?,
        None => file.endpoint.unwrap_or_else(|| "/run/rrun/cri.sock".into()),
    };
    let domain = args
        .cluster_domain
        .clone()
        .or(file.cluster_domain)
        .unwrap_or_else(|| "cluster.local".into());
    let dns = crate::dns::Settings {
        cluster_dns: args
            .cluster_dns
            .clone()
            .or(file.cluster_dns)
            .unwrap_or_default(),
        domain: crate::dns::parse_domain(&domain)
            .map_err(|e| anyhow::anyhow!("clusterDomain: {e}"))?,
        resolv_conf: match args.resolv_conf.clone().or(file.resolv_conf) {
            Some(p) if p.is_empty() => None,
            Some(p) => Some(p.into()),
            None => Some("/etc/resolv.conf".into()),
        },
    };
    if args.backoff_base > args.backoff_cap {
        bail!("--backoff-base must not exceed --backoff-cap");
    }
    Ok(Config {
        manifest_dir,
        endpoint,
        root_dir: args.root_dir.clone(),
        node_name: args.node_name.clone().unwrap_or_else(hostname),
        read_only_port: args.read_only_port.or(file.read_only_port).unwrap_or(10255),
        healthz_port: args.healthz_port.or(file.healthz_port).unwrap_or(10248),
        healthz_bind: args
            .healthz_bind_address
            .clone()
            .or(file.healthz_bind)
            .unwrap_or_else(|| "127.0.0.1".into()),
        cgroup_root: args
            .cgroup_root
            .clone()
            .or(file.cgroup_root)
            .unwrap_or_else(|| "/".into()),
        pod_logs_dir: args
            .pod_logs_dir
            .clone()
            .or(file.pod_logs_dir)
            .unwrap_or_else(|| "/var/log/pods".into()),
        max_pods: file.max_pods.unwrap_or(110),
        reserved_milli_cpu: file.reserved_milli_cpu,
        reserved_memory: file.reserved_memory,
        eviction_memory: file.eviction_memory.unwrap_or(100 << 20),
        eviction_pressure_transition: file
            .eviction_pressure_transition
            .unwrap_or(std::time::Duration::from_secs(300)),
        backoff_base: args.backoff_base,
        backoff_cap: args.backoff_cap,
        dns,
    })
}

/// Binds `<root>/kubelet.sock`, refusing when another agent answers there.
async fn bind_socket(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            bail!(
                "{}: another rrun-kubelet is running with this --root-dir",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// The node as the controllers see it: labels, taints, the claims' data root (made 0711:
/// pods reach their claims' directories through it, nobody lists them).
fn node_conf(
    args: &Args,
    config: &crate::config::Config,
) -> Result<crate::controllers::daemonset::NodeConf> {
    use crate::controllers::daemonset::{parse_labels, parse_taints, NodeConf};
    let labels =
        parse_labels(&args.node_labels).map_err(|e| anyhow::anyhow!("--node-labels: {e}"))?;
    let taints = parse_taints(&args.register_with_taints)
        .map_err(|e| anyhow::anyhow!("--register-with-taints: {e}"))?;
    let storage = args
        .default_local_storage_path
        .clone()
        .unwrap_or_else(|| config.root_dir.join("storage"));
    std::fs::create_dir_all(&storage).with_context(|| format!("creating {}", storage.display()))?;
    std::fs::set_permissions(&storage, std::fs::Permissions::from_mode(0o711))?;
    Ok(NodeConf::new(&config.node_name, &labels, taints, storage))
}

pub fn run(args: &Args) -> Result<()> {
    let config = settings(args)?;
    std::fs::create_dir_all(&config.root_dir)
        .with_context(|| format!("creating --root-dir {}", config.root_dir.display()))?;
    std::fs::set_permissions(&config.root_dir, std::fs::Permissions::from_mode(0o700))?;
    std::fs::create_dir_all(&config.manifest_dir)
        .with_context(|| format!("creating {}", config.manifest_dir.display()))?;
    let store = Store::open(&config.root_dir)?;
    let evicted = store
        .state
        .evicted
        .iter()
        .map(|(uid, e)| (uid.clone(), e.clone().into()))
        .collect();
    let workloads = crate::controllers::Ctl::open(&config.root_dir, args.service_cluster_ip_range)?;
    crate::controllers::lock(&workloads).node = node_conf(args, &config)?;
    let api_address = args.api_address.clone();
    crate::malloc::tune();
    // One thread runs every task: the agent waits on the runtime, the kernel and its
    // clients far more than it computes, and so keeps off the workloads' cores. Two
    // workers measured about 0.5 MiB more RSS at 100 pods (a thread, the work-stealing
    // scheduler's code pages), of the agent's 20 MiB budget. Blocking work goes to the
    // blocking pool (`spawn_blocking`), as before.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        crate::malloc::spawn_trimmer();
        let sock = config.root_dir.join("kubelet.sock");
        let listener = bind_socket(&sock).await?;
        // The scan loop's wake-ups: the directory's watcher, and the API after a write.
        let (tx, mut rx) = mpsc::unbounded_channel();
        // The controllers' wake-ups: an API write waits for a pass, which starts at once.
        let (pass_tx, pass_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            cri: Cri::new(config.endpoint.clone()),
            config: config.clone(),
            inner: Mutex::new(Inner {
                runtime_name: "cri".into(),
                refused: evicted,
                ..Default::default()
            }),
            store: Mutex::new(store),
            wake: Notify::new(),
            scans: manifest::Scans::new(tx.clone()),
            passes: manifest::Scans::new(pass_tx),
            metrics: Metrics::default(),
            workloads,
            changes: Default::default(),
        });
        // Before the API: once the agent answers, its DNS does too.
        let dns = crate::dns::start(
            &config.dns,
            crate::dns::source(
                shared.clone(),
                shared.workloads.clone(),
                config.dns.domain.clone(),
            ),
        )
        .await
        .context("starting the cluster DNS server")?;
        if dns.is_some() {
            tracing::info!(addresses = ?config.dns.cluster_dns, domain = %config.dns.domain, "cluster DNS");
        }
        let api = crate::api::router(shared.clone());
        crate::api::spawn_controllers(shared.clone());
        if !api_address.is_empty() {
            let addr: std::net::SocketAddr = api_address
                .parse()
                .with_context(|| format!("--api-address {api_address:?}: expected ADDR:PORT"))?;
            let kc = crate::api::tls::start(&config.root_dir, addr, api.clone()).await?;
            tracing::info!(address = %addr, kubeconfig = %kc.display(), "the Kubernetes API");
        }
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, api).await {
                tracing::error!("the API socket: {e}");
            }
        });
        if config.read_only_port != 0 {
            let l = tokio::net::TcpListener::bind(("127.0.0.1", config.read_only_port))
                .await
                .with_context(|| {
                    format!(
                        "binding the read-only port 127.0.0.1:{}",
                        config.read_only_port
                    )
                })?;
            let r = crate::api::http::read_only(shared.clone());
            tokio::spawn(async move { axum::serve(l, r).await });
        }
        if config.healthz_port != 0 {
            let l =
                tokio::net::TcpListener::bind((config.healthz_bind.as_str(), config.healthz_port))
                    .await
                    .with_context(|| {
                        format!(
                            "binding the healthz port {}:{}",
                            config.healthz_bind, config.healthz_port
                        )
                    })?;
            let r = crate::api::http::healthz_only(shared.clone());
            tokio::spawn(async move { axum::serve(l, r).await });
        }
        // The runtime's name for container ids.
        let s2 = shared.clone();
        tokio::spawn(async move {
            loop {
                if let Some(mut c) = s2.cri.get().await {
                    if let Ok(v) = c
                        .runtime
                        .version(cri_proto::api::VersionRequest::default())
                        .await
                    {
                        s2.lock().runtime_name = v.into_inner().runtime_name;
                        return;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        });
        let _watcher = manifest::watch(config.manifest_dir.clone(), tx)
            .with_context(|| format!("watching {}", config.manifest_dir.display()))?;
        let s3 = shared.clone();
        let dir = config.manifest_dir.clone();
        let pins = config.root_dir.clone();
        // The pod loop, the controllers and the eviction manager start after the first
        // scan: a pass over no manifests would take the running pods for unwanted ones and
        // kill them, and the controllers would forget the Deployments of the last run and
        // replace their pods instead of adopting them.
        let (scanned_tx, scanned_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut m = manifest::Dir::default();
            let mut objects = crate::objects::Objects::pinned_under(&pins);
            match crate::api::tls::root_ca(&pins) {
                Ok(pem) => objects.publish_root_ca(&pem),
                Err(e) => tracing::error!("the API's CA for kube-root-ca.crt: {e}"),
            }
            let mut files = None;
            loop {
                let n = s3.scans.begin();
                // Before the reads: an edit during them changes the next scan's.
                let now_files = manifest::fingerprint(&dir);
                m.rescan(&dir);
                objects.rescan(&dir);
                let mut desired = m.desired();
                let mut workloads = crate::controllers::scan(&dir);
                {
                    // The controllers' lock before the agent's, as the controllers take them.
                    let mut ctl = crate::controllers::lock(&s3.workloads);
                    crate::controllers::stateful::vet(&ctl, &mut workloads);
                    let mut g = s3.lock();
                    if g.objects.generation != objects.generation {
                        g.objects = Arc::new(objects.clone());
                    }
                    let mut errors = m.errors.clone();
                    for (p, e) in objects.errors.iter().chain(&workloads.errors) {
                        errors
                            .entry(p.clone())
                            .and_modify(|x| {
                                x.push_str("; ");
                                x.push_str(e);
                            })
                            .or_insert_with(|| e.clone());
                    }
                    for (p, e) in &errors {
                        if g.manifest_errors.get(p) != Some(e) {
                            tracing::error!("invalid manifest: {e}");
                        }
                    }
                    // Written only when different: the scan also runs every 20 s, and a
                    // write wakes the API's watches (changes.rs).
                    if g.manifest_errors != errors {
                        g.manifest_errors = errors;
                    }
                    ctl.set_objects(workloads);
                    // Both sources hold admitted pods (manifest::load_file, refresh_pods).
                    desired.extend(ctl.pods.clone());
                    if g.desired != desired {
                        g.desired = desired;
                    }
                }
                if files.as_ref() != Some(&now_files) {
                    // What the API reads from the files themselves (objects Terminating,
                    // namespaces) is not in the agent's state: the watches look again.
                    s3.changes.mark();
                    files = Some(now_files);
                }
                s3.wake.notify_one();
                s3.scans.end(n);
                scanned_tx.send_replace(true);
                if rx.recv().await.is_none() {
                    return;
                }
                // Wake-ups that came during the scan are served by the next one.
                while rx.try_recv().is_ok() {}
            }
        });
        tracing::info!(
            manifests = %config.manifest_dir.display(),
            endpoint = %config.endpoint.display(),
            api = %sock.display(),
            "rrun-kubelet started"
        );
        let (s1, mut rx1) = (shared.clone(), scanned_rx.clone());
        let main = tokio::spawn(async move {
            if rx1.wait_for(|s| *s).await.is_ok() {
                crate::reconcile::run(s1).await;
            }
        });
        let (s4, h4, mut rx4) = (shared.clone(), shared.workloads.clone(), scanned_rx.clone());
        tokio::spawn(async move {
            if rx4.wait_for(|s| *s).await.is_ok() {
                crate::controllers::run(s4, h4, pass_rx).await;
            }
        });
        let (s5, mut rx5) = (shared.clone(), scanned_rx);
        tokio::spawn(async move {
            if rx5.wait_for(|s| *s).await.is_ok() {
                crate::eviction::run(s5).await;
            }
        });
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = main => {}
        }
        // The pods keep running, as with the kubelet; the next start adopts them.
        let _ = std::fs::remove_file(&sock);
        crate::controllers::shutdown(&shared.workloads);
        if let Some(d) = dns {
            d.stop().await;
        }
        tracing::info!("rrun-kubelet stopping; pods keep running");
        Ok(())
    })
}
