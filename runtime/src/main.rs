//! `rrun`: the runc-compatible command line over the rrun library.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use oci_spec::runtime::Process;
use rrun::container::{CreateOptions, ExecOptions, Runtime};
use rrun::{process, spec};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `--version` prints `rrun version X` and `spec: Y` lines, runc's layout, which callers
/// parse (go-runc's `Version` takes the first line only if it contains "version"). clap
/// puts the command name before this text.
const VERSION_TEXT: &str = concat!("version ", env!("CARGO_PKG_VERSION"), "\nspec: ", "1.2.0");

#[derive(Parser)]
#[command(name = "rrun", version = VERSION_TEXT, about = "A low-level OCI runtime, runc-compatible")]
struct Cli {
    /// Directory for the containers' state.
    #[arg(long, global = true, default_value = rrun::state::DEFAULT_ROOT)]
    root: PathBuf,
    /// Write errors (and with --debug, more) to this file instead of only stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[arg(long, global = true)]
    debug: bool,
    /// Refused: rrun has only the cgroupfs driver (runc's systemd driver needs a running
    /// systemd). Without it a `slice:prefix:name` cgroupsPath is a cgroupfs directory name.
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// Accepted for compatibility with callers that pass it.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "true")]
    rootless: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum ListFormat {
    Table,
    Json,
}

#[derive(clap::Args)]
struct CreateArgs {
    /// Path to the bundle directory.
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives the pty master of a terminal container.
    #[arg(long)]
    console_socket: Option<PathBuf>,
    /// Pass this many extra descriptors (from 3 on) to the container.
    #[arg(long, default_value_t = 0)]
    preserve_fds: u32,
    /// Use MS_MOVE + chroot instead of pivot_root (for a rootfs on ramfs).
    #[arg(long)]
    no_pivot: bool,
    /// Accepted for compatibility.
    #[arg(long)]
    no_new_keyring: bool,
    id: String,
}

#[derive(Subcommand)]
enum Command {
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
struct UpdateArgs {
    /// A JSON file (runtime-spec linux.resources) with the new limits; "-" for stdin.
    #[arg(short, long)]
    resources: Option<PathBuf>,
    #[arg(long)]
    memory: Option<String>,
    #[arg(long)]
    memory_reservation: Option<String>,
    /// Memory plus swap; -1 for unlimited.
    #[arg(long, allow_hyphen_values = true)]
    memory_swap: Option<String>,
    /// Accepted for compatibility (kernel memory limits are gone from Linux).
    #[arg(long)]
    kernel_memory: Option<String>,
    #[arg(long)]
    cpu_shares: Option<u64>,
    #[arg(long, allow_hyphen_values = true)]
    cpu_quota: Option<i64>,
    #[arg(long)]
    cpu_period: Option<u64>,
    #[arg(long)]
    cpu_rt_period: Option<u64>,
    #[arg(long, allow_hyphen_values = true)]
    cpu_rt_runtime: Option<i64>,
    #[arg(long)]
    cpuset_cpus: Option<String>,
    #[arg(long)]
    cpuset_mems: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pids_limit: Option<i64>,
    #[arg(long)]
    blkio_weight: Option<u16>,
    id: String,
}

fn main() {
    let cli = Cli::parse();
    let logger = Logger {
        file: cli.log.clone(),
        json: cli.log_format == LogFormat::Json,
    };
    match dispatch(&cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let msg = error_text(&e);
            logger.error(&msg);
            eprintln!("rrun: {msg}");
            std::process::exit(1);
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the line already
/// has (library errors name their source in their own message).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// Errors go to `--log` as runc writes them (`level`, `msg`, `time`), so containerd's shim,
/// which reads the last error from that file, shows the user our message. Hand-rolled:
/// one line per error does not warrant a logging framework on the start-up path.
struct Logger {
    file: Option<PathBuf>,
    json: bool,
}

impl Logger {
    fn error(&self, msg: &str) {
        let Some(path) = &self.file else { return };
        let time = rrun::state::now_rfc3339();
        let line = if self.json {
            serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
        } else {
            format!("time=\"{time}\" level=error msg={msg:?}")
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

fn dispatch(cli: &Cli) -> Result<i32> {
    if cli.systemd_cgroup {
        bail!(
            "--systemd-cgroup: rrun has no systemd cgroup driver, only cgroupfs; leave the flag out \
             (containerd: SystemdCgroup = false): a cgroupsPath of the form slice:prefix:name is \
             then one cgroup directory of that name, as with runc"
        );
    }
    // The commands that start processes in a container run from a sealed copy of this
    // binary, so a container can never reach the host's file (CVE-2019-5736).
    if matches!(
        cli.command,
        Command::Create(_) | Command::Run { .. } | Command::Exec { .. }
    ) {
        rrun::security::sealed_exe::reexec_from_sealed_copy()?;
    }
    let rt = Runtime::new(&cli.root);
    match &cli.command {
        Command::Spec { bundle } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("{} already exists; remove it first", path.display());
            }
            let text = serde_json::to_string_pretty(&spec::default_spec())?;
            std::fs::write(&path, text + "\n")
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(0)
        }
        Command::Create(args) => {
            rt.create(&create_options(args))?;
            Ok(0)
        }
        Command::Start { id } => {
            rt.start(id)?;
            Ok(0)
        }
        Command::Run {
            create,
            detach,
            keep,
        } => run(&rt, create, *detach, *keep),
        Command::State { id } => {
            println!("{}", serde_json::to_string_pretty(&rt.state(id)?)?);
            Ok(0)
        }
        Command::Kill { all, id, signal } => {
            let sig = spec::parse_signal(signal.as_deref().unwrap_or("SIGTERM"))?;
            rt.kill(id, sig, *all)?;
            Ok(0)
        }
        Command::Delete { force, id } => {
            rt.delete(id, *force)?;
            Ok(0)
        }
        Command::List { format, quiet } => {
            list(&rt, *format, *quiet)?;
            Ok(0)
        }
        Command::Exec {
            process,
            tty,
            detach,
            pid_file,
            console_socket,
            cwd,
            env,
            user,
            additional_gids,
            cap,
            no_new_privs,
            preserve_fds,
            id,
            command,
        } => {
            let (_, record, _) = rt.load(id)?;
            let proc = match process {
                Some(file) => {
                    let data = std::fs::read(file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    serde_json::from_slice::<Process>(&data)
                        .with_context(|| format!("parsing process file {}", file.display()))?
                }
                None => exec_process_from_flags(
                    record.spec.process().clone().unwrap_or_default(),
                    &ExecFlags {
                        tty: *tty,
                        cwd: cwd.as_deref(),
                        env,
                        user: user.as_deref(),
                        additional_gids,
                        caps: cap,
                        no_new_privs: *no_new_privs,
                        args: command,
                    },
                )?,
            };
            exec(
                &rt,
                id,
                proc,
                *detach,
                pid_file.clone(),
                console_socket.clone(),
                *preserve_fds,
            )
        }
        Command::Ps {
            format,
            id,
            ps_args,
        } => {
            ps(&rt, id, *format, ps_args)?;
            Ok(0)
        }
        Command::Pause { id } => {
            rt.pause(id)?;
            Ok(0)
        }
        Command::Resume { id } => {
            rt.resume(id)?;
            Ok(0)
        }
        Command::Update(args) => {
            rt.update(&args.id, &update_resources(args)?)?;
            Ok(0)
        }
        Command::Events {
            stats,
            interval,
            id,
        } => {
            if *stats {
                // A closed stdout (`| head`) is the reader's choice, not an error.
                let _ = writeln!(std::io::stdout(), "{}", rt.stats(id)?);
                return Ok(0);
            }
            let interval = humantime::parse_duration(interval)
                .or_else(|_| interval.parse::<u64>().map(std::time::Duration::from_secs))
                .map_err(|_| {
                    anyhow!("--interval {interval:?}: give a duration like 5s or 500ms")
                })?;
            if interval.is_zero() {
                bail!("--interval must be more than zero");
            }
            let mut out = std::io::stdout().lock();
            rt.events(id, interval, |ev| {
                writeln!(out, "{ev}")
                    .and_then(|()| out.flush())
                    .map_err(|e| rrun::Error::Invalid(format!("writing events: {e}")))
            })?;
            Ok(0)
        }
        Command::Features => {
            println!("{}", serde_json::to_string_pretty(&spec::features())?);
            Ok(0)
        }
    }
}

/// runc's `update`: `--resources FILE` first, the flags over it.
fn update_resources(a: &UpdateArgs) -> Result<oci_spec::runtime::LinuxResources> {
    use oci_spec::runtime::{LinuxPids, LinuxResources};
    use rrun::cgroups::parse_size;
    let mut res: LinuxResources = match &a.resources {
        Some(p) => {
            let data = if p.as_os_str() == "-" {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut v)
                    .context("reading stdin")?;
                v
            } else {
                std::fs::read(p).with_context(|| format!("reading {}", p.display()))?
            };
            serde_json::from_slice(&data)
                .with_context(|| format!("parsing resources {}", p.display()))?
        }
        None => LinuxResources::default(),
    };
    let size = |s: &Option<String>, flag: &str| -> Result<Option<i64>> {
        s.as_deref()
            .map(|v| parse_size(v).with_context(|| format!("--{flag}")))
            .transpose()
    };
    let (limit, reservation, swap) = (
        size(&a.memory, "memory")?,
        size(&a.memory_reservation, "memory-reservation")?,
        size(&a.memory_swap, "memory-swap")?,
    );
    if limit.is_some() || reservation.is_some() || swap.is_some() {
        let mut m = res.memory().unwrap_or_default();
        if limit.is_some() {
            m.set_limit(limit);
        }
        if reservation.is_some() {
            m.set_reservation(reservation);
        }
        if swap.is_some() {
            m.set_swap(swap);
        }
        res.set_memory(Some(m));
    }
    let cpu_flags = a.cpu_shares.is_some()
        || a.cpu_quota.is_some()
        || a.cpu_period.is_some()
        || a.cpu_rt_period.is_some()
        || a.cpu_rt_runtime.is_some()
        || a.cpuset_cpus.is_some()
        || a.cpuset_mems.is_some();
    if cpu_flags {
        let mut c = res.cpu().clone().unwrap_or_default();
        if a.cpu_shares.is_some() {
            c.set_shares(a.cpu_shares);
        }
        if a.cpu_quota.is_some() {
            c.set_quota(a.cpu_quota);
        }
        if a.cpu_period.is_some() {
            c.set_period(a.cpu_period);
        }
        if a.cpu_rt_period.is_some() {
            c.set_realtime_period(a.cpu_rt_period);
        }
        if a.cpu_rt_runtime.is_some() {
            c.set_realtime_runtime(a.cpu_rt_runtime);
        }
        if a.cpuset_cpus.is_some() {
            c.set_cpus(a.cpuset_cpus.clone());
        }
        if a.cpuset_mems.is_some() {
            c.set_mems(a.cpuset_mems.clone());
        }
        res.set_cpu(Some(c));
    }
    if let Some(n) = a.pids_limit {
        let mut p = LinuxPids::default();
        p.set_limit(n);
        res.set_pids(Some(p));
    }
    if let Some(w) = a.blkio_weight {
        let mut b = res.block_io().clone().unwrap_or_default();
        b.set_weight(Some(w));
        res.set_block_io(Some(b));
    }
    Ok(res)
}

fn create_options(a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
    }
}

fn run(rt: &Runtime, args: &CreateArgs, detach: bool, keep: bool) -> Result<i32> {
    let mut opts = create_options(args);
    let (bundle, bundle_spec) = rrun::container::load_bundle(&args.bundle)?;
    let terminal = bundle_spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    // A foreground terminal without a console socket: we hold the master and relay stdio.
    let proxy = if terminal && opts.console_socket.is_none() {
        if detach {
            bail!("a detached terminal container needs --console-socket");
        }
        let proxy = ConsoleProxy::new()?;
        opts.console_socket = Some(proxy.path.clone());
        Some(proxy)
    } else {
        None
    };
    if !detach {
        process::block_signals()?;
    }
    let pid = rt.create_from(&opts, &bundle, &bundle_spec)?;
    let master = proxy.map(|p| p.receive()).transpose()?;
    if let Err(e) = rt.start(&opts.id) {
        let _ = rt.delete(&opts.id, true);
        return Err(e.into());
    }
    if detach {
        return Ok(0);
    }
    let code = process::supervise(pid, master)?;
    if !keep {
        rt.delete(&opts.id, true)?;
    }
    Ok(code)
}

struct ExecFlags<'a> {
    tty: bool,
    cwd: Option<&'a Path>,
    env: &'a [String],
    user: Option<&'a str>,
    additional_gids: &'a [u32],
    caps: &'a [String],
    no_new_privs: bool,
    args: &'a [String],
}

/// runc's rule: start from the container's own process and override what the flags say.
fn exec_process_from_flags(mut p: Process, f: &ExecFlags) -> Result<Process> {
    if f.args.is_empty() {
        bail!("exec needs a command (or --process FILE)");
    }
    p.set_args(Some(f.args.to_vec()));
    p.set_terminal(Some(f.tty));
    if let Some(cwd) = f.cwd {
        p.set_cwd(cwd.to_path_buf());
    }
    if !f.env.is_empty() {
        let mut env = p.env().clone().unwrap_or_default();
        for kv in f.env {
            let key = kv.split('=').next().unwrap_or(kv);
            env.retain(|e| e.split('=').next() != Some(key));
            env.push(kv.clone());
        }
        p.set_env(Some(env));
    }
    let mut user = p.user().clone();
    if let Some(u) = f.user {
        let (uid, gid) = match u.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (u, None),
        };
        user.set_uid(
            uid.parse()
                .map_err(|_| anyhow!("--user {u:?}: uid must be numeric"))?,
        );
        user.set_gid(match gid {
            Some(g) => g
                .parse()
                .map_err(|_| anyhow!("--user {u:?}: gid must be numeric"))?,
            None => 0,
        });
    }
    if !f.additional_gids.is_empty() {
        user.set_additional_gids(Some(f.additional_gids.to_vec()));
    }
    p.set_user(user);
    if !f.caps.is_empty() {
        let mut caps = p.capabilities().clone().unwrap_or_default();
        for name in f.caps {
            let name = if name.starts_with("CAP_") {
                name.clone()
            } else {
                format!("CAP_{name}")
            };
            let cap: oci_spec::runtime::Capability = name
                .parse()
                .map_err(|_| anyhow!("unknown capability {name}"))?;
            for set in [
                caps.bounding().clone(),
                caps.effective().clone(),
                caps.permitted().clone(),
            ]
            .iter()
            .enumerate()
            {
                let mut s = set.1.clone().unwrap_or_default();
                s.insert(cap);
                match set.0 {
                    0 => caps.set_bounding(Some(s)),
                    1 => caps.set_effective(Some(s)),
                    _ => caps.set_permitted(Some(s)),
                };
            }
        }
        p.set_capabilities(Some(caps));
    }
    if f.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    Ok(p)
}

fn exec(
    rt: &Runtime,
    id: &str,
    mut proc: Process,
    detach: bool,
    pid_file: Option<PathBuf>,
    console_socket: Option<PathBuf>,
    preserve_fds: u32,
) -> Result<i32> {
    let terminal = proc.terminal().unwrap_or(false);
    let proxy = if terminal && console_socket.is_none() {
        if detach {
            bail!("a detached exec with --tty needs --console-socket");
        }
        Some(ConsoleProxy::new()?)
    } else {
        None
    };
    let opts = ExecOptions {
        pid_file,
        console_socket: console_socket.or_else(|| proxy.as_ref().map(|p| p.path.clone())),
        preserve_fds,
    };
    if !terminal {
        proc.set_console_size(None);
    }
    if !detach {
        process::block_signals()?;
    }
    let pid = rt.exec(id, &proc, &opts)?;
    let master = proxy.map(|p| p.receive()).transpose()?;
    if detach {
        return Ok(0);
    }
    Ok(process::supervise(pid, master)?)
}

fn list(rt: &Runtime, format: ListFormat, quiet: bool) -> Result<()> {
    let states = rt.list()?;
    if quiet {
        for s in &states {
            println!("{}", s["id"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    if format == ListFormat::Json {
        println!("{}", serde_json::to_string(&states)?);
        return Ok(());
    }
    let mut out = String::from("ID\tPID\tSTATUS\tBUNDLE\tCREATED\tOWNER\n");
    for s in &states {
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\n",
            s["id"].as_str().unwrap_or_default(),
            s["pid"],
            s["status"].as_str().unwrap_or_default(),
            s["bundle"].as_str().unwrap_or_default(),
            s["created"].as_str().unwrap_or_default(),
            s["owner"].as_str().unwrap_or_default(),
        ));
    }
    print!("{out}");
    Ok(())
}

fn ps(rt: &Runtime, id: &str, format: ListFormat, ps_args: &[String]) -> Result<()> {
    let pids = rt.pids(id)?;
    if format == ListFormat::Json {
        println!("{}", serde_json::to_string(&pids)?);
        return Ok(());
    }
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .context("running ps")?;
    if !out.status.success() {
        bail!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let pid_col = header
        .split_whitespace()
        .position(|h| h == "PID")
        .ok_or_else(|| anyhow!("ps output has no PID column"))?;
    println!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_col)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            println!("{line}");
        }
    }
    Ok(())
}

/// The console socket of a foreground terminal that we relay ourselves, in a private
/// directory that goes when this is dropped, whether the container started or not.
struct ConsoleProxy {
    dir: PathBuf,
    path: PathBuf,
    listener: std::os::unix::net::UnixListener,
}

impl ConsoleProxy {
    fn new() -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("rrun-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let proxy = |listener| ConsoleProxy {
            path: dir.join("console.sock"),
            dir: dir.clone(),
            listener,
        };
        match rrun::container::console_pair(&dir) {
            Ok((_, listener)) => Ok(proxy(listener)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e.into())
            }
        }
    }

    /// The pty master, once the container's process has sent it.
    fn receive(self) -> Result<std::os::fd::OwnedFd> {
        Ok(rrun::container::receive_master(&self.listener)?)
    }
}

impl Drop for ConsoleProxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
