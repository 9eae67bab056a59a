//! Device access on cgroup v2: v2 has no `devices.allow`/`devices.deny`; the kernel asks a
//! `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the cgroup instead. The program is
//! generated here from the rules, the way runc's `devicefilter` does it: rules are
//! checked last to first and the first that matches decides (which is what v1's ordered
//! allow/deny list amounts to); a request no rule matches is allowed, as v1 inherits
//! "allow all" from the parent (configs start with a deny-all rule that catches it).
//!
//! Hand-assembled (a dozen opcodes) rather than through a BPF crate: no libbpf, no ELF, no
//! dependency for 150 lines.

use super::{CgroupError, Result};
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes: class | op | source.
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const JMP_JNE_K: u8 = 0x55;
const JMP_EXIT: u8 = 0x95;

// struct bpf_cgroup_dev_ctx { u32 access_type /* access << 16 | type */; u32 major; u32 minor; }
const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// The program for `rules` (in config order).
pub fn program(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),        // r2 = ctx->access_type
        insn(ALU64_AND_K, 2, 0, 0, 0xffff), // r2 = device type
        insn(LDX_MEM_W, 3, 1, 0, 0),        // r3 = ctx->access_type
        insn(ALU64_RSH_K, 3, 0, 0, 16),     // r3 = requested access
        insn(LDX_MEM_W, 4, 1, 4, 0),        // r4 = major
        insn(LDX_MEM_W, 5, 1, 8, 0),        // r5 = minor
    ];
    for r in rules.iter().rev() {
        // Conditions jump past the block ("does not match"); their offsets are set once the
        // block's length is known.
        let mut conds: Vec<Insn> = Vec::new();
        match r.typ().unwrap_or_default() {
            LinuxDeviceType::A => {}
            LinuxDeviceType::B => conds.push(insn(JMP_JNE_K, 2, 0, 0, DEV_BLOCK)),
            LinuxDeviceType::C | LinuxDeviceType::U => {
                conds.push(insn(JMP_JNE_K, 2, 0, 0, DEV_CHAR))
            }
            // FIFOs are not device nodes: the kernel never asks about them.
            LinuxDeviceType::P => continue,
        }
        let access = r.access().as_deref().unwrap_or("rwm");
        let mut mask = 0;
        for ch in access.chars() {
            mask |= match ch {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                _ => 0,
            };
        }
        if access.is_empty() {
            mask = ACC_READ | ACC_WRITE | ACC_MKNOD;
        }
        if mask != ACC_READ | ACC_WRITE | ACC_MKNOD {
            // Matches only if every requested access is among the rule's.
            conds.push(insn(ALU64_MOV_X, 1, 3, 0, 0));
            conds.push(insn(ALU64_AND_K, 1, 0, 0, !mask & 7));
            conds.push(insn(JMP_JNE_K, 1, 0, 0, 0));
        }
        if let Some(m) = r.major().filter(|m| *m >= 0) {
            conds.push(insn(JMP_JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor().filter(|m| *m >= 0) {
            conds.push(insn(JMP_JNE_K, 5, 0, 0, m as i32));
        }
        let unconditional = conds.is_empty();
        let len = conds.len() + 2;
        for (i, c) in conds.iter_mut().enumerate() {
            if c.code == JMP_JNE_K {
                c.off = (len - i - 1) as i16;
            }
        }
        p.extend(conds);
        p.push(insn(ALU64_MOV_K, 0, 0, 0, r.allow() as i32));
        p.push(insn(JMP_EXIT, 0, 0, 0, 0));
        if unconditional {
            // Matches everything: what follows could never run, and the verifier refuses
            // unreachable instructions.
            return p;
        }
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// `union bpf_attr`, as large as any command here needs, zero-filled.
#[repr(C, align(8))]
struct Attr([u8; 128]);

impl Attr {
    fn new() -> Attr {
        Attr([0; 128])
    }
    fn u32_at(&mut self, off: usize, v: u32) -> &mut Self {
        self.0[off..off + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64_at(&mut self, off: usize, v: u64) -> &mut Self {
        self.0[off..off + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn get_u32(&self, off: usize) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.0[off..off + 4]);
        u32::from_ne_bytes(b)
    }
}

fn bpf(cmd: libc::c_long, attr: &mut Attr) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zero-filled, 8-aligned buffer of the size passed, laid out as the
    // kernel's `union bpf_attr` for `cmd`; any pointer in it (instructions, license, id
    // array) points to memory that outlives the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), attr.0.len()) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn owned(fd: i64) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn err(what: &str, cgroup: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let (what, path) = (what.to_string(), cgroup.to_path_buf());
    move |source| CgroupError::Io {
        op: what,
        path,
        source,
    }
}

/// Loads the program for `rules` and attaches it to `cgroup`, then detaches any program
/// attached there before (an `update`), so there is never a moment without a filter.
pub fn apply(cgroup: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let insns = program(rules);
    let license = b"Apache\0";
    let mut a = Attr::new();
    a.u32_at(0, BPF_PROG_TYPE_CGROUP_DEVICE)
        .u32_at(4, insns.len() as u32)
        .u64_at(8, insns.as_ptr() as u64)
        .u64_at(16, license.as_ptr() as u64)
        .u32_at(68, BPF_CGROUP_DEVICE); // expected_attach_type (after prog_name[16], prog_ifindex)
    let prog = owned(
        bpf(BPF_PROG_LOAD, &mut a).map_err(err("loading the device-access BPF program", cgroup))?,
    );
    let dir = std::fs::File::open(cgroup).map_err(err("open", cgroup))?;
    let old = attached(&dir).map_err(err("BPF_PROG_QUERY", cgroup))?;
    let mut a = Attr::new();
    a.u32_at(0, dir.as_raw_fd() as u32)
        .u32_at(4, prog.as_raw_fd() as u32)
        .u32_at(8, BPF_CGROUP_DEVICE)
        .u32_at(12, BPF_F_ALLOW_MULTI);
    bpf(BPF_PROG_ATTACH, &mut a).map_err(err("BPF_PROG_ATTACH", cgroup))?;
    for id in old {
        let mut a = Attr::new();
        a.u32_at(0, id);
        let Ok(fd) = bpf(BPF_PROG_GET_FD_BY_ID, &mut a) else {
            continue;
        };
        let old_prog = owned(fd);
        let mut a = Attr::new();
        a.u32_at(0, dir.as_raw_fd() as u32)
            .u32_at(4, old_prog.as_raw_fd() as u32)
            .u32_at(8, BPF_CGROUP_DEVICE);
        bpf(BPF_PROG_DETACH, &mut a).map_err(err("BPF_PROG_DETACH", cgroup))?;
    }
    Ok(())
}

/// Ids of the device programs attached to the cgroup itself.
fn attached(dir: &std::fs::File) -> std::io::Result<Vec<u32>> {
    let mut ids = [0u32; 64];
    let mut a = Attr::new();
    a.u32_at(0, dir.as_raw_fd() as u32)
        .u32_at(4, BPF_CGROUP_DEVICE)
        .u64_at(16, ids.as_mut_ptr() as u64)
        .u32_at(24, ids.len() as u32);
    bpf(BPF_PROG_QUERY, &mut a)?;
    let n = (a.get_u32(24) as usize).min(ids.len());
    Ok(ids[..n].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder as B;

    /// Runs the program on a request, the way the kernel would.
    fn eval(p: &[Insn], typ: i32, access: i32, major: i32, minor: i32) -> bool {
        let ctx = [((access << 16) | typ) as u32, major as u32, minor as u32];
        let mut r = [0i64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            match i.code {
                LDX_MEM_W => r[dst] = ctx[i.off as usize / 4] as i64,
                ALU64_AND_K => r[dst] &= i.imm as i64,
                ALU64_RSH_K => r[dst] >>= i.imm,
                ALU64_MOV_K => r[dst] = i.imm as i64,
                ALU64_MOV_X => r[dst] = r[src],
                JMP_JNE_K => {
                    if r[dst] != i.imm as i64 {
                        pc = (pc as i64 + i.off as i64) as usize
                    }
                }
                JMP_EXIT => return r[0] != 0,
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    /// Every instruction can be reached (the verifier refuses a program otherwise).
    fn assert_all_reachable(p: &[Insn]) {
        let mut seen = vec![false; p.len()];
        let mut todo = vec![0usize];
        while let Some(pc) = todo.pop() {
            if pc >= p.len() || seen[pc] {
                continue;
            }
            seen[pc] = true;
            match p[pc].code {
                JMP_EXIT => {}
                JMP_JNE_K => todo.extend([pc + 1, (pc as i64 + 1 + p[pc].off as i64) as usize]),
                _ => todo.push(pc + 1),
            }
        }
        assert!(seen.iter().all(|s| *s), "unreachable instructions in {p:?}");
    }

    #[test]
    fn last_matching_rule_decides() {
        let rules = vec![
            B::default().allow(false).access("rwm").build().unwrap(),
            B::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(1)
                .minor(3)
                .access("rwm")
                .build()
                .unwrap(),
            B::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(136)
                .access("rw")
                .build()
                .unwrap(),
            B::default()
                .allow(false)
                .typ(LinuxDeviceType::C)
                .major(136)
                .minor(7)
                .access("w")
                .build()
                .unwrap(),
        ];
        let p = program(&rules);
        assert_all_reachable(&p);
        assert_all_reachable(&program(&super::super::device_rules(Some(&rules[..1]))));
        let rw = ACC_READ | ACC_WRITE;
        assert!(eval(&p, DEV_CHAR, rw, 1, 3), "/dev/null");
        assert!(!eval(&p, DEV_CHAR, rw, 1, 5), "/dev/zero is not allowed");
        assert!(
            !eval(&p, DEV_BLOCK, rw, 1, 3),
            "a block 1:3 is not /dev/null"
        );
        assert!(eval(&p, DEV_CHAR, ACC_READ, 136, 2), "pts read");
        assert!(
            !eval(&p, DEV_CHAR, ACC_MKNOD, 136, 2),
            "pts mknod is not in rw"
        );
        assert!(
            !eval(&p, DEV_CHAR, ACC_WRITE, 136, 7),
            "the later deny wins"
        );
        assert!(eval(&p, DEV_CHAR, ACC_READ, 136, 7));
        // Without a deny-all rule, what no rule names stays allowed (as on v1).
        let p = program(&rules[1..2]);
        assert!(eval(&p, DEV_BLOCK, rw, 8, 0));
    }
}
