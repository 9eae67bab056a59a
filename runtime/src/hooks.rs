//! OCI hooks: each runs with the container's state JSON on its stdin, and is killed (and
//! its hook counted as failed) when its timeout passes.

use crate::error::{Error, Result};
use oci_spec::runtime::Hook;
use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The points in a container's life where hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl HookKind {
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        }
    }

    pub fn of(self, spec: &oci_spec::runtime::Spec) -> Vec<Hook> {
        let Some(h) = spec.hooks().as_ref() else {
            return vec![];
        };
        #[allow(deprecated)]
        let list = match self {
            HookKind::Prestart => h.prestart(),
            HookKind::CreateRuntime => h.create_runtime(),
            HookKind::CreateContainer => h.create_container(),
            HookKind::StartContainer => h.start_container(),
            HookKind::Poststart => h.poststart(),
            HookKind::Poststop => h.poststop(),
        };
        list.clone().unwrap_or_default()
    }
}

/// Runs every hook of `kind` in order; the first failure stops the rest and fails the
/// operation (prestart, createRuntime, createContainer, startContainer).
pub fn run_all(kind: HookKind, hooks: &[Hook], state_json: &[u8]) -> Result<()> {
    for hook in hooks {
        run_one(kind, hook, state_json)?;
    }
    Ok(())
}

/// Runs every hook of `kind` in order, each whatever the ones before it did, and reports
/// each failure as a warning on stderr: the runtime-spec's rule for poststart and poststop
/// hooks, whose failure must not stop the lifecycle (runc 1.1 fails the operation at the
/// first one instead; see docs/compatibility.md). Returns how many failed.
pub fn run_all_warning(kind: HookKind, hooks: &[Hook], state_json: &[u8]) -> usize {
    let mut failed = 0;
    for hook in hooks {
        if let Err(e) = run_one(kind, hook, state_json) {
            eprintln!("warning: {e}");
            failed += 1;
        }
    }
    failed
}

fn run_one(kind: HookKind, hook: &Hook, state_json: &[u8]) -> Result<()> {
    let fail = |reason: String| Error::Hook {
        kind: kind.name(),
        path: hook.path().clone(),
        reason,
    };
    let args = hook.args().clone().unwrap_or_default();
    let mut cmd = Command::new(hook.path());
    if let Some(argv0) = args.first() {
        cmd.arg0(argv0);
    }
    cmd.args(args.iter().skip(1))
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot start: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine: ignore EPIPE.
        let _ = stdin.write_all(state_json);
    }
    let deadline = hook
        .timeout()
        .map(|t| Instant::now() + Duration::from_secs(t.max(1) as u64));
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(fail(format!("waiting: {e}"))),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(format!(
                "timed out after {} s",
                hook.timeout().unwrap_or_default()
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(fail(format!("exited with status {code}"))),
        (None, Some(sig)) => Err(fail(format!("killed by signal {sig}"))),
        _ => Err(fail("ended abnormally".into())),
    }
}
