//! The command line as clap parses it: runc's commands, flags and defaults.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// `--version` prints `rrun version X` and `spec: Y` lines, runc's layout, which callers
/// parse (go-runc's `Version` takes the first line only if it contains "version"). clap
/// puts the command name before this text.
pub(crate) const VERSION_TEXT: &str =
    concat!("version ", env!("CARGO_PKG_VERSION"), "\nspec: ", "1.2.0");

#[derive(Parser)]
#[command(name = "rrun", version = VERSION_TEXT, about = "A low-level OCI runtime, runc-compatible")]
pub(crate) struct Cli {
    /// Directory for the containers' state.
    #[arg(long, global = true, default_value = rrun::DEFAULT_ROOT)]
    pub(crate) root: PathBuf,
    /// Write errors (and with --debug, more) to this file instead of only stderr.
    #[arg(long, global = true)]
    pub(crate) log: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub(crate) log_format: LogFormat,
    #[arg(long, global = true)]
    pub(crate) debug: bool,
    /// Refused: rrun has only the cgroupfs driver (runc's systemd driver needs a running
    /// systemd). Without it a `slice:prefix:name` cgroupsPath is a cgroupfs directory name.
    #[arg(long, global = true)]
    pub(crate) systemd_cgroup: bool,
    /// Accepted for compatibility with callers that pass it.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) rootless: Option<String>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub(crate) enum ListFormat {
    Table,
    Json,
}

#[derive(clap::Args)]
pub(crate) struct CreateArgs {
    /// Path to the bundle directory.
    #[arg(short, long, default_value = ".")]
    pub(crate) bundle: PathBuf,
    #[arg(long)]
    pub(crate) pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master of a terminal container.
    #[arg(long)]
    pub(crate) console_socket: Option<PathBuf>,
    /// Pass this many extra descriptors (from 3 on) to the container.
    #[arg(long, default_value_t = 0)]
    pub(crate) preserve_fds: u32,
    /// Use MS_MOVE + chroot instead of pivot_root (for a rootfs on ramfs).
    #[arg(long)]
    pub(crate) no_pivot: bool,
    /// Accepted for compatibility.
    #[arg(long)]
    pub(crate) no_new_keyring: bool,
    pub(crate) id: String,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Write a default config.json.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
    },
    /// Create a container (it waits for `start`).
    Create(CreateArgs),
    /// Run the user's process of a created container.
    Start { id: String },
    /// Create and start a container; in the foreground, wait and exit with its status.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        #[arg(short, long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
    },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal (default SIGTERM) to the container's init, or with --all to all its processes.
    Kill {
        #[arg(short, long)]
        all: bool,
        id: String,
        signal: Option<String>,
    },
    /// Delete a stopped container (any with --force).
    Delete {
        #[arg(short, long)]
        force: bool,
        id: String,
    },
    /// List containers.
    #[command(alias = "ls")]
    List {
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Run a process in a running container.
    Exec {
        /// A process.json to run instead of the command line.
        #[arg(short, long)]
        process: Option<PathBuf>,
        #[arg(short, long)]
        tty: bool,
        #[arg(short, long)]
        detach: bool,
        #[arg(long)]
        pid_file: Option<PathBuf>,
        #[arg(long)]
        console_socket: Option<PathBuf>,
        #[arg(long)]
        cwd: Option<PathBuf>,
        #[arg(short, long)]
        env: Vec<String>,
        /// uid[:gid]
        #[arg(short, long)]
        user: Option<String>,
        #[arg(short = 'g', long)]
        additional_gids: Vec<u32>,
        #[arg(short, long)]
        cap: Vec<String>,
        #[arg(long)]
        no_new_privs: bool,
        #[arg(long, default_value_t = 0)]
        preserve_fds: u32,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List the processes of a container.
    Ps {
        #[arg(short, long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
        id: String,
        /// Options for ps(1) (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Print the runtime-spec features document.
    Features,
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a container's resource limits.
    Update(UpdateArgs),
    /// Print a container's events: OOM kills as they happen and stats every --interval.
    Events {
        /// Print the stats once and exit.
        #[arg(long)]
        stats: bool,
        /// Time between stats events (e.g. 5s, 500ms).
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
}

#[derive(clap::Args)]
pub(crate) struct UpdateArgs {
    /// A JSON file (runtime-spec linux.resources) with the new limits; "-" for stdin.
    #[arg(short, long)]
    pub(crate) resources: Option<PathBuf>,
    #[arg(long)]
    pub(crate) memory: Option<String>,
    #[arg(long)]
    pub(crate) memory_reservation: Option<String>,
    /// Memory plus swap; -1 for unlimited.
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) memory_swap: Option<String>,
    /// Accepted for compatibility (kernel memory limits are gone from Linux).
    #[arg(long)]
    pub(crate) kernel_memory: Option<String>,
    #[arg(long)]
    pub(crate) cpu_shares: Option<u64>,
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) cpu_quota: Option<i64>,
    #[arg(long)]
    pub(crate) cpu_period: Option<u64>,
    #[arg(long)]
    pub(crate) cpu_rt_period: Option<u64>,
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) cpu_rt_runtime: Option<i64>,
    #[arg(long)]
    pub(crate) cpuset_cpus: Option<String>,
    #[arg(long)]
    pub(crate) cpuset_mems: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub(crate) pids_limit: Option<i64>,
    #[arg(long)]
    pub(crate) blkio_weight: Option<u16>,
    pub(crate) id: String,
}
