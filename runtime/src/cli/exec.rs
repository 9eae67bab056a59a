//! `rrun exec`: a new process in a running container.

use anyhow::{anyhow, bail, Result};
use oci_spec::runtime::Process;
use rrun::foreground as process;
use rrun::{ExecOptions, Runtime};
use std::path::{Path, PathBuf};

use super::console::ConsoleProxy;

pub(crate) struct ExecFlags<'a> {
    pub(crate) tty: bool,
    pub(crate) cwd: Option<&'a Path>,
    pub(crate) env: &'a [String],
    pub(crate) user: Option<&'a str>,
    pub(crate) additional_gids: &'a [u32],
    pub(crate) caps: &'a [String],
    pub(crate) no_new_privs: bool,
    pub(crate) args: &'a [String],
}

/// runc's rule: start from the container's own process and override what the flags say.
pub(crate) fn exec_process_from_flags(mut p: Process, f: &ExecFlags) -> Result<Process> {
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

pub(crate) fn exec(
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
