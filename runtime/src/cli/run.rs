//! `rrun create` and `rrun run`: a bundle to a container, in the foreground or not.

use anyhow::{bail, Result};
use rrun::foreground as process;
use rrun::{CreateOptions, Runtime};

use super::args::*;
use super::console::ConsoleProxy;

pub(crate) fn create_options(a: &CreateArgs) -> CreateOptions {
    CreateOptions {
        id: a.id.clone(),
        bundle: a.bundle.clone(),
        pid_file: a.pid_file.clone(),
        console_socket: a.console_socket.clone(),
        preserve_fds: a.preserve_fds,
        no_pivot: a.no_pivot,
    }
}

pub(crate) fn run(rt: &Runtime, args: &CreateArgs, detach: bool, keep: bool) -> Result<i32> {
    let mut opts = create_options(args);
    let (bundle, bundle_spec) = rrun::load_bundle(&args.bundle)?;
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
