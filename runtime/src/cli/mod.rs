//! `rrun`'s command line: [`args`] is what clap parses, [`dispatch`] runs a command, one
//! file per command family beside it.

mod args;
mod console;
mod exec;
mod list;
mod log;
mod run;
mod update;

pub(crate) use args::{Cli, LogFormat};
pub(crate) use log::{error_text, Logger};

use anyhow::{anyhow, bail, Context, Result};
use oci_spec::runtime::Process;
use rrun::spec;
use rrun::Runtime;
use std::io::Write;

use args::*;
use exec::*;
use list::*;
use run::*;
use update::*;

pub(crate) fn dispatch(cli: &Cli) -> Result<i32> {
    if cli.systemd_cgroup {
        bail!(
            "--systemd-cgroup: rrun has no systemd cgroup driver, only cgroupfs; leave the flag out \
             (containerd: SystemdCgroup = false): a cgroupsPath of the form slice:prefix:name is \
             then one cgroup directory of that name, as with runc"
        );
    }
    // The commands that start processes in a container run from a protected view of this
    // binary (a read-only overlay, else a sealed copy), so a container can never reach the
    // host's file (CVE-2019-5736).
    if matches!(
        cli.command,
        Command::Create(_) | Command::Run { .. } | Command::Exec { .. }
    ) {
        rrun::reexec_from_protected_exe()?;
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
            let configured = rt.process(id)?;
            let proc = match process {
                Some(file) => {
                    let data = std::fs::read(file)
                        .with_context(|| format!("reading {}", file.display()))?;
                    serde_json::from_slice::<Process>(&data)
                        .with_context(|| format!("parsing process file {}", file.display()))?
                }
                None => exec_process_from_flags(
                    configured,
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
                let event = rrun::Event::Stats {
                    id: id.clone(),
                    data: Box::new(rt.stats(id)?),
                };
                let _ = writeln!(std::io::stdout(), "{}", serde_json::to_string(&event)?);
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
                let line = serde_json::to_string(ev)
                    .map_err(|e| rrun::Error::Invalid(format!("encoding an event: {e}")))?;
                writeln!(out, "{line}")
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
