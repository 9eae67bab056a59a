//! `rrun-cri`: a Kubernetes CRI (runtime.v1) server on a unix socket, and its helper modes.
//!
//! ```text
//! rrun-cri [--socket PATH] [--root DIR] [--runtime-root DIR] [--config FILE]   serve
//! rrun-cri [--root DIR] image import FILE                                      load an image
//! rrun-cri [--root DIR] image list
//! rrun-cri monitor ... / rrun-cri exec-sync ...   (started by the server itself)
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Parser, Subcommand};
use serde::Deserialize;

const DEFAULT_SOCKET: &str = "/run/rrun/cri.sock";
const DEFAULT_ROOT: &str = "/var/lib/rrun";
const DEFAULT_RUNTIME_ROOT: &str = "/run/rrun/k8s";
/// `info`, and h2's server-side debug lines: they are the only word of a request that h2
/// refused as malformed before any handler saw it (one line per refused request).
const DEFAULT_LOG_FILTER: &str = "info,h2::server=debug";

#[derive(Parser)]
#[command(
    name = "rrun-cri",
    version,
    about = "A Kubernetes CRI server on top of rrun"
)]
struct Cli {
    /// The unix socket to serve on (created 0600).
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Persistent state: pod and container records, images.
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// The runtime's volatile state (containers, pinned namespaces, monitors).
    #[arg(long, global = true, value_name = "DIR")]
    runtime_root: Option<PathBuf>,
    /// A TOML file with `socket`, `root`, `runtime_root` (flags win over it).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the CRI (the default).
    Serve,
    /// Manage the local image store.
    Image {
        #[command(subcommand)]
        action: ImageAction,
    },
    /// The per-container monitor (started by the server).
    #[command(hide = true)]
    Monitor(rrun_cri::monitor::MonitorArgs),
    /// Run one command in a container and wait for it (started by the server for ExecSync).
    #[command(hide = true)]
    ExecSync(rrun_cri::monitor::ExecSyncArgs),
    /// Start the pid 1 of a pod-wide pid namespace (started by the server for
    /// shareProcessNamespace when rrun-cri-monitor is not installed beside it).
    #[command(hide = true)]
    PodInit,
}

#[derive(Subcommand)]
enum ImageAction {
    /// Import an OCI layout directory, an oci-archive or a `docker save` tarball.
    Import { file: PathBuf },
    /// List the images of the store.
    List,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    socket: Option<PathBuf>,
    root: Option<PathBuf>,
    runtime_root: Option<PathBuf>,
    /// containerd's key of the same name: hugepage limits on a node without the hugetlb
    /// controller are skipped with a warning (true, the default) or refused.
    tolerate_missing_hugetlb_controller: Option<bool>,
    /// containerd's keys: where the streaming server (Exec, Attach, PortForward) listens.
    stream_server_address: Option<String>,
    stream_server_port: Option<u16>,
}

struct Settings {
    socket: PathBuf,
    root: PathBuf,
    runtime_root: PathBuf,
    tolerate_missing_hugetlb_controller: bool,
    streaming: rrun_cri::streaming::StreamConfig,
}

fn settings(cli: &Cli) -> anyhow::Result<Settings> {
    let file = match &cli.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<FileConfig>(&text)
                .with_context(|| format!("parsing {}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let pick = |flag: &Option<PathBuf>, from_file: Option<PathBuf>, default: &str| {
        flag.clone()
            .or(from_file)
            .unwrap_or_else(|| PathBuf::from(default))
    };
    let abs = |p: PathBuf| -> anyhow::Result<PathBuf> {
        if p.is_absolute() {
            Ok(p)
        } else {
            Ok(std::env::current_dir()?.join(p))
        }
    };
    Ok(Settings {
        socket: abs(pick(&cli.socket, file.socket, DEFAULT_SOCKET))?,
        root: abs(pick(&cli.root, file.root, DEFAULT_ROOT))?,
        runtime_root: abs(pick(
            &cli.runtime_root,
            file.runtime_root,
            DEFAULT_RUNTIME_ROOT,
        ))?,
        tolerate_missing_hugetlb_controller: file
            .tolerate_missing_hugetlb_controller
            .unwrap_or(true),
        streaming: rrun_cri::streaming::StreamConfig {
            address: file
                .stream_server_address
                .unwrap_or_else(|| rrun_cri::streaming::StreamConfig::default().address),
            port: file.stream_server_port.unwrap_or(0),
        },
    })
}

fn main() {
    let cli = Cli::parse();
    // The helper modes clone into containers: they must run before any thread exists,
    // so they are dispatched before logging or the async runtime start.
    match &cli.command {
        Some(Command::Monitor(args)) => std::process::exit(rrun_cri::monitor::run_monitor(args)),
        Some(Command::ExecSync(args)) => std::process::exit(rrun_cri::monitor::run_exec_sync(args)),
        Some(Command::PodInit) => std::process::exit(rrun_cri::monitor::run_pod_init()),
        _ => {}
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER)),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(cli) {
        eprintln!("rrun-cri: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let s = settings(&cli)?;
    match cli.command {
        None | Some(Command::Serve) => serve(s),
        Some(Command::Image { action }) => image(&s.root, action),
        // Dispatched in main before anything else.
        Some(Command::Monitor(_)) | Some(Command::ExecSync(_)) | Some(Command::PodInit) => Ok(()),
    }
}

fn image(root: &Path, action: ImageAction) -> anyhow::Result<()> {
    let store = rrun_cri::image::ImageStore::open(&root.join("images"))
        .with_context(|| format!("opening the image store under {}", root.display()))?;
    match action {
        ImageAction::Import { file } => {
            let images = store
                .import(&file)
                .with_context(|| format!("importing {}", file.display()))?;
            for img in images {
                println!("{} {}", img.id, img.repo_tags.join(" "));
            }
        }
        ImageAction::List => {
            for img in store.list()? {
                println!("{} {} {}", img.id, img.size, img.repo_tags.join(" "));
            }
        }
    }
    Ok(())
}

fn serve(s: Settings) -> anyhow::Result<()> {
    let exe = std::fs::read_link("/proc/self/exe").context("reading /proc/self/exe")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let cri = rrun_cri::server::Cri::open(rrun_cri::server::Config {
            root: s.root.clone(),
            runtime_root: s.runtime_root.clone(),
            exe,
            tolerate_missing_hugetlb_controller: s.tolerate_missing_hugetlb_controller,
        })
        .await?;
        cri.watch_running();
        cri.start_streaming(&s.streaming)
            .await
            .map_err(anyhow::Error::msg)?;
        tracing::info!(
            "serving CRI on {} (root {}, runtime root {})",
            s.socket.display(),
            s.root.display(),
            s.runtime_root.display()
        );
        let shutdown = async {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!("no SIGTERM handler ({e}); only SIGINT stops the server");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            tracing::info!("shutting down; containers keep running");
        };
        cri_proto::serve(&s.socket, cri.clone(), cri, shutdown)
            .await
            .context("serving")?;
        Ok(())
    })
}
