//! `rrun-cri`: a Kubernetes CRI (runtime.v1) server on a unix socket, and its helper modes.
//!
//! ```text
//! rrun-cri [--socket PATH] [--root DIR] [--runtime-root DIR] [--config FILE]   serve
//! rrun-cri [--root DIR] image import FILE                                      load an image
//! rrun-cri [--root DIR] image list
//! rrun-cri [--root DIR] image pull [--creds USER[:PASS]] REF | rm REF | inspect REF
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
    /// The CNI network configuration dir (default /etc/cni/net.d; TOML `cni.conf_dir`).
    #[arg(long, global = true, value_name = "DIR")]
    cni_conf_dir: Option<PathBuf>,
    /// A dir of CNI plugins; repeatable, searched in order (default /opt/cni/bin, then
    /// /usr/lib/cni; TOML `cni.bin_dirs`).
    #[arg(long, global = true, value_name = "DIR")]
    cni_bin_dir: Vec<PathBuf>,
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
    /// Pull an image from its registry (the `[registry]` settings of --config apply).
    Pull {
        /// USER:PASS, or USER alone to read the password from stdin.
        #[arg(long, value_name = "USER[:PASS]")]
        creds: Option<String>,
        reference: String,
    },
    /// Remove an image (refused while a container uses it).
    Rm { reference: String },
    /// Print an image's record (config, layers, names) as JSON.
    Inspect { reference: String },
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
    /// `[registry]`: `config_path`, `max_concurrent_downloads`, `image_pull_progress_timeout`.
    #[serde(default)]
    registry: rrun_cri::image::RegistryConfig,
    /// containerd's `[plugins."io.containerd.grpc.v1.cri".cni]` keys of the same names.
    #[serde(default)]
    cni: CniFileConfig,
    /// containerd's keys: where the streaming server (Exec, Attach, PortForward) listens.
    stream_server_address: Option<String>,
    stream_server_port: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CniFileConfig {
    conf_dir: Option<PathBuf>,
    bin_dirs: Option<Vec<PathBuf>>,
    /// How long one plugin call may take (seconds).
    plugin_timeout_seconds: Option<u64>,
}

struct Settings {
    socket: PathBuf,
    root: PathBuf,
    runtime_root: PathBuf,
    tolerate_missing_hugetlb_controller: bool,
    registry: rrun_cri::image::RegistryConfig,
    cni: rrun_cri::network::CniSettings,
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
        registry: file.registry,
        cni: cni_settings(cli, file.cni, abs)?,
        streaming: rrun_cri::streaming::StreamConfig {
            address: file
                .stream_server_address
                .unwrap_or_else(|| rrun_cri::streaming::StreamConfig::default().address),
            port: file.stream_server_port.unwrap_or(0),
        },
    })
}

fn cni_settings(
    cli: &Cli,
    file: CniFileConfig,
    abs: impl Fn(PathBuf) -> anyhow::Result<PathBuf>,
) -> anyhow::Result<rrun_cri::network::CniSettings> {
    let default = rrun_cri::network::CniSettings::default();
    let conf_dir = cli.cni_conf_dir.clone().or(file.conf_dir);
    let bin_dirs = if cli.cni_bin_dir.is_empty() {
        file.bin_dirs
    } else {
        Some(cli.cni_bin_dir.clone())
    };
    if bin_dirs.as_ref().is_some_and(|d| d.is_empty()) {
        anyhow::bail!("cni.bin_dirs is empty: give at least one dir of CNI plugins");
    }
    if file.plugin_timeout_seconds == Some(0) {
        anyhow::bail!("cni.plugin_timeout_seconds must be at least 1");
    }
    Ok(rrun_cri::network::CniSettings {
        conf_dir: abs(conf_dir.unwrap_or(default.conf_dir))?,
        bin_dirs: bin_dirs
            .unwrap_or(default.bin_dirs)
            .into_iter()
            .map(&abs)
            .collect::<anyhow::Result<_>>()?,
        plugin_timeout: file
            .plugin_timeout_seconds
            .map(std::time::Duration::from_secs)
            .unwrap_or(default.plugin_timeout),
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    // oci-client logs a token service's refusal verbatim at debug level, and services may
    // echo the credentials they were sent: its client module never logs below info.
    let filter = match "oci_client::client=info".parse() {
        Ok(d) => filter.add_directive(d),
        Err(_) => filter,
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
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
        Some(Command::Image { action }) => image(&s.root, &s.registry, action),
        // Dispatched in main before anything else.
        Some(Command::Monitor(_)) | Some(Command::ExecSync(_)) | Some(Command::PodInit) => Ok(()),
    }
}

fn image(
    root: &Path,
    registry: &rrun_cri::image::RegistryConfig,
    action: ImageAction,
) -> anyhow::Result<()> {
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
        ImageAction::Pull { creds, reference } => {
            use rrun_cri::image::command;
            command::pull(&store, registry, &reference, creds.as_deref())?
        }
        ImageAction::Rm { reference } => {
            rrun_cri::image::command::remove(&store, root, &reference)?
        }
        ImageAction::Inspect { reference } => {
            rrun_cri::image::command::inspect(&store, &reference)?
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
            registry: s.registry.clone(),
            cni: s.cni.clone(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], toml: Option<&str>) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir()?;
        let mut argv = vec!["rrun-cri".to_string()];
        argv.extend(args.iter().map(|a| a.to_string()));
        if let Some(text) = toml {
            let path = dir.path().join("config.toml");
            std::fs::write(&path, text)?;
            argv.push("--config".into());
            argv.push(path.display().to_string());
        }
        settings(&Cli::try_parse_from(argv)?)
    }

    #[test]
    fn cni_dirs_default_to_containerds_and_debians() {
        let s = parse(&[], None).expect("settings");
        assert_eq!(s.cni.conf_dir, PathBuf::from("/etc/cni/net.d"));
        assert_eq!(
            s.cni.bin_dirs,
            vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")]
        );
    }

    #[test]
    fn cni_keys_come_from_the_toml_and_flags_win() {
        let toml =
            "[cni]\nconf_dir = \"/c\"\nbin_dirs = [\"/b1\", \"/b2\"]\nplugin_timeout_seconds = 5\n";
        let s = parse(&[], Some(toml)).expect("settings");
        assert_eq!(s.cni.conf_dir, PathBuf::from("/c"));
        assert_eq!(
            s.cni.bin_dirs,
            vec![PathBuf::from("/b1"), PathBuf::from("/b2")]
        );
        assert_eq!(s.cni.plugin_timeout, std::time::Duration::from_secs(5));
        let s = parse(
            &[
                "--cni-conf-dir",
                "/f",
                "--cni-bin-dir",
                "/x",
                "--cni-bin-dir",
                "/y",
            ],
            Some(toml),
        )
        .expect("settings");
        assert_eq!(s.cni.conf_dir, PathBuf::from("/f"));
        assert_eq!(
            s.cni.bin_dirs,
            vec![PathBuf::from("/x"), PathBuf::from("/y")]
        );
    }

    #[test]
    fn bad_cni_keys_are_refused_by_name() {
        for (toml, want) in [
            ("[cni]\nbin_dirs = []\n", "bin_dirs"),
            (
                "[cni]\nplugin_timeout_seconds = 0\n",
                "plugin_timeout_seconds",
            ),
            ("[cni]\nconfdir = \"/x\"\n", "confdir"),
        ] {
            let e = format!("{:#}", parse(&[], Some(toml)).err().expect(toml));
            assert!(e.contains(want), "{toml}: {e}");
        }
    }
}
