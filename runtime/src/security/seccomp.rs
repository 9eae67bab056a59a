//! seccomp filters from `linux.seccomp`, compiled to BPF by libseccomp.
//!
//! The `libseccomp` crate (bindings to the C library every runtime uses: runc, crun, youki)
//! is chosen over a pure-Rust BPF compiler because it covers the whole of what the spec can
//! say: every action, 64-bit argument comparisons with masks, multiple architectures in one
//! filter (x86_64 + x86 + x32) and the filter flags. It is linked statically.

use crate::error::{Error, Result};
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscall,
};
use std::str::FromStr;

fn err(what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("seccomp: {what}"))
}

/// The errno of an `SCMP_ACT_ERRNO` without `errnoRet`, as runc uses.
const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

fn action(a: LinuxSeccompAction, errno_ret: Option<u32>) -> Result<ScmpAction> {
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(errno_ret.unwrap_or(DEFAULT_ERRNO) as i32)
        }
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(errno_ret.unwrap_or(DEFAULT_ERRNO) as u16)
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => return Err(err(
            "SCMP_ACT_NOTIFY needs a seccomp agent (listenerPath), which rrun does not support yet",
        )),
    })
}

fn compare(op: LinuxSeccompOperator, value: u64, value_two: Option<u64>) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        // runtime-spec: for SCMP_CMP_MASKED_EQ, `value` is the mask and `valueTwo` the datum.
        LinuxSeccompOperator::ScmpCmpMaskedEq => {
            let _ = value_two;
            ScmpCompareOp::MaskedEqual(value)
        }
    }
}

/// The name the spec's enums serialize to (`SCMP_ARCH_X86_64`, `SECCOMP_FILTER_FLAG_LOG`).
fn wire_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Builds the filter the spec describes (without loading it).
pub fn build(seccomp: &LinuxSeccomp) -> Result<ScmpFilterContext> {
    let default = action(seccomp.default_action(), seccomp.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(err)?;
    // We set no_new_privileges ourselves when the config asks; libseccomp must not force it.
    ctx.set_ctl_nnp(false).map_err(err)?;
    for arch in seccomp.architectures().iter().flatten() {
        let name = wire_name(arch);
        let a =
            ScmpArch::from_str(&name).map_err(|_| err(format!("unknown architecture {name}")))?;
        ctx.add_arch(a)
            .map_err(|e| err(format!("adding architecture {name}: {e}")))?;
    }
    for flag in seccomp.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => ctx.set_ctl_log(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => ctx.set_ctl_tsync(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => ctx.set_ctl_ssb(true),
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => ctx.set_ctl_waitkill(true),
        }
        .map_err(|e| err(format!("flag {}: {e}", wire_name(flag))))?;
    }
    for rule in seccomp.syscalls().iter().flatten() {
        add_rule(&mut ctx, rule, default)?;
    }
    Ok(ctx)
}

fn add_rule(ctx: &mut ScmpFilterContext, rule: &LinuxSyscall, default: ScmpAction) -> Result<()> {
    let act = action(rule.action(), rule.errno_ret())?;
    // libseccomp refuses a rule whose action is the default one; it would change nothing.
    if act == default {
        return Ok(());
    }
    let conditions: Vec<ScmpArgCompare> = rule
        .args()
        .iter()
        .flatten()
        .map(|a| {
            let datum = if a.op() == LinuxSeccompOperator::ScmpCmpMaskedEq {
                a.value_two().unwrap_or(0)
            } else {
                a.value()
            };
            ScmpArgCompare::new(
                a.index() as u32,
                compare(a.op(), a.value(), a.value_two()),
                datum,
            )
        })
        .collect();
    // libseccomp cannot AND two conditions on one argument in one rule; runc then adds one
    // rule per condition (they OR), and so do we.
    let mut indexes: Vec<u32> = rule
        .args()
        .iter()
        .flatten()
        .map(|a| a.index() as u32)
        .collect();
    indexes.sort_unstable();
    let repeated = indexes.windows(2).any(|w| w[0] == w[1]);
    for name in rule.names() {
        // A syscall this libseccomp or architecture does not know is skipped, as in runc:
        // profiles list syscalls of newer kernels.
        let Ok(nr) = ScmpSyscall::from_name(name) else {
            continue;
        };
        let result = if conditions.is_empty() {
            ctx.add_rule(act, nr)
        } else if repeated {
            conditions
                .iter()
                .try_for_each(|c| {
                    ctx.add_rule_conditional(act, nr, std::slice::from_ref(c))
                        .map(|_| ())
                })
                .map(|_| &mut *ctx)
        } else {
            ctx.add_rule_conditional(act, nr, &conditions)
        };
        result.map_err(|e| err(format!("rule for {name}: {e}")))?;
    }
    Ok(())
}

/// Loads a filter made by [`build`] into the calling process (and, with TSYNC, its
/// threads). The runtime builds it before cloning the container's process, so a bad profile
/// fails `create` and the child only has this one call to make.
pub fn load(filter: &ScmpFilterContext) -> Result<()> {
    filter
        .load()
        .map_err(|e| err(format!("loading filter: {e}")))
}

pub use libseccomp::ScmpFilterContext as Filter;

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str) -> LinuxSeccomp {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_full_profile_compiles() {
        let p = profile(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,
                "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
                "flags":["SECCOMP_FILTER_FLAG_LOG"],
                "syscalls":[
                  {"names":["read","write","exit_group","no_such_syscall_xyz"],"action":"SCMP_ACT_ALLOW"},
                  {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"}]},
                  {"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
                  {"names":["mkdir"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
                  {"names":["getpid"],"action":"SCMP_ACT_TRAP"},
                  {"names":["kill"],"action":"SCMP_ACT_ALLOW","args":[{"index":1,"value":0,"op":"SCMP_CMP_NE"},{"index":1,"value":9,"op":"SCMP_CMP_NE"}]}
                ]}"#,
        );
        build(&p).unwrap();
    }

    #[test]
    fn notify_is_a_clear_error() {
        let p = profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#);
        let e = build(&p).err().unwrap().to_string();
        assert!(e.contains("SCMP_ACT_NOTIFY"), "{e}");
    }
}
