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

/// Syscalls the `RuntimeDefault` profile keeps from every container, and those it allows
/// only to a container that holds a capability. Everything else this libseccomp knows for
/// the native architecture is allowed; syscalls newer than that are denied, so the profile
/// stays an allow-list as the kernel grows.
const DENIED_ALWAYS: &[&str] = &[
    // Not namespaced: the kernel keyring, and obsolete or dangerous interfaces.
    "add_key",
    "request_key",
    "keyctl",
    "kexec_load",
    "kexec_file_load",
    "_sysctl",
    "sysfs",
    "uselib",
    "ustat",
    "nfsservctl",
    "vm86",
    "vm86old",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "afs_syscall",
    "tuxcall",
    "security",
    "getpmsg",
    "putpmsg",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

const DENIED_WITHOUT: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "setns",
            "unshare",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "swapon",
            "swapoff",
            "quotactl",
            "quotactl_fd",
            "lookup_dcookie",
            "fanotify_init",
            "setdomainname",
            "sethostname",
            "clone3",
        ],
    ),
    (
        "CAP_SYS_MODULE",
        &["init_module", "finit_module", "delete_module"],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_PACCT", &["acct"]),
    (
        "CAP_SYS_TIME",
        &["settimeofday", "clock_settime", "clock_adjtime", "stime"],
    ),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    (
        "CAP_SYS_PTRACE",
        &[
            "kcmp",
            "process_vm_readv",
            "process_vm_writev",
            "pidfd_getfd",
        ],
    ),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    (
        "CAP_SYS_NICE",
        &["mbind", "set_mempolicy", "migrate_pages", "move_pages"],
    ),
    (
        "CAP_DAC_READ_SEARCH",
        &["open_by_handle_at", "name_to_handle_at"],
    ),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

/// The clone flags that make namespaces: without CAP_SYS_ADMIN, `clone` is allowed only
/// when none of them is set.
const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// The personas a program may switch to (linux, linux32, uname26 and the query).
const ALLOWED_PERSONALITIES: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// A containerd-like `RuntimeDefault` profile for a process holding `capabilities`
/// (`CAP_*` names), for the CRI server's `seccomp: RuntimeDefault`.
pub fn runtime_default(capabilities: &[String]) -> Result<LinuxSeccomp> {
    let held = |cap: &str| capabilities.iter().any(|c| c == cap);
    let mut denied: Vec<&str> = DENIED_ALWAYS.to_vec();
    for (cap, names) in DENIED_WITHOUT {
        if !held(cap) {
            denied.extend_from_slice(names);
        }
    }
    // Perf and BPF were CAP_SYS_ADMIN's before they had their own capabilities.
    if held("CAP_SYS_ADMIN") {
        denied.retain(|n| *n != "bpf" && *n != "perf_event_open");
    }
    let special = ["clone", "personality"];
    let native = ScmpArch::native();
    let mut allowed: Vec<String> = (0..1024)
        .filter_map(|nr| {
            ScmpSyscall::from_raw_syscall(nr)
                .get_name_by_arch(native)
                .ok()
        })
        .filter(|n| !denied.contains(&n.as_str()) && !special.contains(&n.as_str()))
        .collect();
    allowed.sort();
    allowed.dedup();
    let mut rules = vec![serde_json::json!({"names": allowed, "action": "SCMP_ACT_ALLOW"})];
    if held("CAP_SYS_ADMIN") {
        rules.push(serde_json::json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW"}));
    } else {
        rules.push(serde_json::json!({
            "names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]
        }));
        // glibc falls back to clone when clone3 says ENOSYS; clone's flags can be checked.
        rules.push(serde_json::json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}));
    }
    for persona in ALLOWED_PERSONALITIES {
        rules.push(serde_json::json!({
            "names": ["personality"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": persona, "op": "SCMP_CMP_EQ"}]
        }));
    }
    let arches: &[&str] = if cfg!(target_arch = "x86_64") {
        &["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    } else if cfg!(target_arch = "aarch64") {
        &["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    } else {
        &[]
    };
    let profile = serde_json::json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": libc::EPERM,
        "architectures": arches,
        "syscalls": rules,
    });
    serde_json::from_value(profile).map_err(|e| err(format!("building RuntimeDefault: {e}")))
}

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
    fn runtime_default_allows_the_common_and_denies_the_dangerous() {
        let p = runtime_default(&["CAP_KILL".into()]).unwrap();
        let allowed: Vec<&String> = p.syscalls().as_ref().unwrap()[0].names().iter().collect();
        for name in [
            "read",
            "openat",
            "execve",
            "exit_group",
            "futex",
            "epoll_wait",
        ] {
            assert!(allowed.iter().any(|n| *n == name), "{name} must be allowed");
        }
        for name in ["mount", "kexec_load", "keyctl", "unshare", "bpf", "reboot"] {
            assert!(!allowed.iter().any(|n| *n == name), "{name} must be denied");
        }
        let admin = runtime_default(&["CAP_SYS_ADMIN".into()]).unwrap();
        let allowed: Vec<&String> = admin.syscalls().as_ref().unwrap()[0]
            .names()
            .iter()
            .collect();
        assert!(allowed.iter().any(|n| *n == "mount"));
        build(&p).unwrap();
        build(&admin).unwrap();
    }

    /// Loads the profile in a child and watches the kernel refuse what it denies.
    #[test]
    fn runtime_default_is_enforced_by_the_kernel() {
        let profile = runtime_default(&["CAP_KILL".into()]).unwrap();
        let filter = build(&profile).unwrap();
        // SAFETY: the child only loads the filter built before the fork, makes raw
        // syscalls and _exits.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                let code = (|| {
                    nix::sys::prctl::set_no_new_privs().ok()?;
                    filter.load().ok()?;
                    // SAFETY: raw syscalls with plain integer arguments.
                    let unshare = unsafe { libc::unshare(libc::CLONE_NEWUTS) };
                    let errno = std::io::Error::last_os_error().raw_os_error();
                    let pid = unsafe { libc::getpid() };
                    Some(if unshare == -1 && errno == Some(libc::EPERM) && pid > 0 {
                        0
                    } else {
                        2
                    })
                })()
                .unwrap_or(3);
                // SAFETY: ends the forked test child at once.
                unsafe { libc::_exit(code) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }

    #[test]
    fn notify_is_a_clear_error() {
        let p = profile(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#);
        let e = build(&p).err().unwrap().to_string();
        assert!(e.contains("SCMP_ACT_NOTIFY"), "{e}");
    }
}
