//! `rrun-kubelet`: the node agent. It keeps the pods of a manifest directory running
//! through a CRI endpoint, serves the Kubernetes REST API for them on a unix socket under
//! its root dir, and is also the command line people use on that API.

mod agent;
mod api;
mod cgroups;
mod changes;
mod cli;
mod config;
mod controllers;
mod cri;
mod dns;
mod env;
mod eviction;
mod images;
mod logs;
mod malloc;
mod manifest;
mod metrics;
mod objects;
mod pod;
mod print;
mod print_batch;
mod print_config;
mod print_describe;
mod print_stateful;
mod print_workloads;
mod probes;
mod proxy;
mod pull_secrets;
mod quantity;
mod reconcile;
mod resources;
mod rollout_cli;
mod service_account;
mod spec;
mod state;
mod status;
mod storage;
mod store;
mod termination;
mod volumes;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// The stock kubelet's flag names, so its users feel at home.
#[derive(Parser, Debug)]
#[command(
    name = "rrun-kubelet",
    version,
    about = "rrun's node agent: runs the pods of a manifest directory through a CRI endpoint"
)]
pub struct Args {
    /// Directory of pod manifests (.yaml, .yml, .json) to keep running.
    #[arg(long, value_name = "DIR")]
    pub pod_manifest_path: Option<PathBuf>,
    /// The CRI endpoint (unix:///path).
    #[arg(long, value_name = "ENDPOINT")]
    pub container_runtime_endpoint: Option<String>,
    /// The agent's state, and its API socket (kubelet.sock).
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/rrun-kubelet",
        value_name = "DIR"
    )]
    pub root_dir: PathBuf,
    /// The node's name (default: the hostname).
    #[arg(long)]
    pub node_name: Option<String>,
    /// The read-only port on 127.0.0.1 (/pods, /healthz, /metrics); 0 disables it.
    #[arg(long)]
    pub read_only_port: Option<u16>,
    /// The healthz port; 0 disables it.
    #[arg(long)]
    pub healthz_port: Option<u16>,
    /// The healthz server's address.
    #[arg(long)]
    pub healthz_bind_address: Option<String>,
    /// A KubeletConfiguration (kubelet.config.k8s.io/v1beta1) file; flags win over it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The cgroup under which the pods' cgroups go (kubepods/...).
    #[arg(long)]
    pub cgroup_root: Option<String>,
    /// Where pods' container logs go (the kubelet's podLogsDir).
    #[arg(long, value_name = "DIR")]
    pub pod_logs_dir: Option<PathBuf>,
    /// Test knob: the first crash-loop back-off (the kubelet's 10s).
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    pub backoff_base: Duration,
    /// Test knob: the longest crash-loop back-off (the kubelet's 5m).
    #[arg(long, value_parser = parse_duration, default_value = "5m")]
    pub backoff_cap: Duration,
    /// Test knob: the shortest `expirationSeconds` of a projected service account token
    /// (the API server's 10m); a shorter one lets a test see a token's rotation.
    #[arg(long, value_parser = parse_duration, default_value = "10m")]
    pub service_account_token_min_expiration: Duration,
    /// The range Services' ClusterIPs come from.
    #[arg(long, default_value = "10.96.0.0/12", value_name = "CIDR")]
    pub service_cluster_ip_range: proxy::Range,
    /// Labels of the node, `key=value,...` (DaemonSets' nodeSelector and affinity).
    #[arg(long, default_value = "", value_name = "LABELS")]
    pub node_labels: String,
    /// Taints of the node, `key=value:Effect,...` (DaemonSets' tolerations).
    #[arg(long, default_value = "", value_name = "TAINTS")]
    pub register_with_taints: String,
    /// Where the local provisioner makes claims' directories (default <root-dir>/storage).
    #[arg(long, value_name = "DIR")]
    pub default_local_storage_path: Option<PathBuf>,
    /// The Kubernetes API over HTTPS (kubeconfig at <root-dir>/kubeconfig); empty disables it.
    /// Loopback unless another address is given here.
    #[arg(long, default_value = "127.0.0.1:6443", value_name = "ADDR:PORT")]
    pub api_address: String,
    /// The cluster DNS server's addresses (comma-separated), pods' nameservers with
    /// `dnsPolicy: ClusterFirst`; the agent serves DNS on them. Empty: no cluster DNS.
    #[arg(long, value_delimiter = ',', value_name = "IPS")]
    pub cluster_dns: Option<Vec<std::net::IpAddr>>,
    /// The cluster's DNS domain (default cluster.local).
    #[arg(long, value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// The node's resolv.conf: pods' `dnsPolicy: Default` and the DNS server's upstreams
    /// (default /etc/resolv.conf; "" for none).
    #[arg(long, value_name = "FILE")]
    pub resolv_conf: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List pods, deployments, replicasets, services, endpoints, configmaps or secrets (as
    /// `kubectl get`).
    Get {
        /// The resource: pods (po).
        resource: String,
        /// One pod's name.
        name: Option<String>,
        #[arg(short = 'o', long = "output")]
        output: Option<String>,
        #[arg(short = 'n', long = "namespace", default_value = "default")]
        namespace: String,
        #[arg(short = 'A', long = "all-namespaces")]
        all_namespaces: bool,
    },
    /// Show a pod, job, cronjob, statefulset, daemonset, pvc, configmap or secret (as
    /// `kubectl describe`).
    Describe {
        resource: String,
        name: String,
        #[arg(short = 'n', long = "namespace", default_value = "default")]
        namespace: String,
    },
    /// Print a container's logs.
    Logs {
        pod: String,
        #[arg(short = 'c', long = "container")]
        container: Option<String>,
        #[arg(short = 'f', long = "follow")]
        follow: bool,
        #[arg(short = 'p', long = "previous")]
        previous: bool,
        #[arg(long = "tail")]
        tail: Option<i64>,
        #[arg(short = 'n', long = "namespace", default_value = "default")]
        namespace: String,
    },
    /// Put a manifest into the agent's manifest directory.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Create a Job from a CronJob's template (`create job NAME --from=cronjob/NAME`): its
    /// manifest goes into the agent's manifest directory.
    Create {
        /// The kind: job.
        resource: String,
        name: String,
        /// The CronJob: `cronjob/NAME`.
        #[arg(long)]
        from: String,
        #[arg(short = 'n', long = "namespace", default_value = "default")]
        namespace: String,
    },
    /// Take a manifest out of the agent's manifest directory.
    Delete {
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// Manage a rollout, as kubectl: `status` (exit 0 when complete, 1 past the progress
    /// deadline or --timeout), `history`, `undo`, `restart` of deployment/NAME,
    /// statefulset/NAME or daemonset/NAME; `pause`, `resume` of deployment/NAME. Changes are
    /// written into the manifest file that defines the object.
    Rollout {
        /// status, history, undo, pause, resume or restart.
        action: String,
        /// deployment/NAME, statefulset/NAME or daemonset/NAME.
        target: String,
        #[arg(short = 'n', long = "namespace", default_value = "default")]
        namespace: String,
        /// How long `status` waits (e.g. 2m); without it, until done.
        #[arg(long = "timeout", value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// `history`: show this revision's pod template.
        #[arg(long = "revision")]
        revision: Option<i64>,
        /// `undo`: the revision to go back to (default: the previous one).
        #[arg(long = "to-revision")]
        to_revision: Option<i64>,
    },
    /// Set the replicas of deployment/NAME or statefulset/NAME, in its manifest file.
    Scale {
        target: String,
        #[arg(long = "replicas")]
        replicas: i32,
        #[arg(short = 'n', long = "namespace", default_value = "default")]
        namespace: String,
    },
}

/// `10s`, `500ms`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (e.g. 10s, 500ms, 5m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration {s:?} (e.g. 10s, 500ms, 5m)")),
    };
    if !secs.is_finite() || secs <= 0.0 {
        return Err(format!("invalid duration {s:?}: must be positive"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn main() {
    let args = Args::parse();
    let code = match args.command {
        Some(ref c) => cli::run(&args.root_dir, c),
        None => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("RRUN_LOG")
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .with_writer(std::io::stderr)
                .init();
            volumes::token::set_min_expiration(args.service_account_token_min_expiration.as_secs());
            match agent::run(&args) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("rrun-kubelet: {e:#}");
                    1
                }
            }
        }
    };
    std::process::exit(code);
}
