//! The CRI's `RuntimeDefault` seccomp profile: the CRI server's policy for containers that
//! ask for it, handed to the runtime as an ordinary `linux.seccomp` (as containerd builds
//! its default profile and gives it to runc).

use libseccomp::{ScmpArch, ScmpSyscall};
use oci_spec::runtime::LinuxSeccomp;

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
pub fn runtime_default(capabilities: &[String]) -> Result<LinuxSeccomp, serde_json::Error> {
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
    serde_json::from_value(profile)
}

#[cfg(test)]
mod tests {
    use super::*;

    // That the kernel enforces it is proven end to end by the integration test
    // `cri_runtime seccomp_runtime_default_blocks_unshare`.
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
    }
}
