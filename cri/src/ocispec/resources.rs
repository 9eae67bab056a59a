//! `linux.resources`: CPU, memory and hugepage limits from the request, and the device
//! cgroup rules.

use cri_proto::api;
use oci_spec::runtime::{
    LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxHugepageLimit, LinuxMemory, LinuxResources,
};

use super::devices::host_device;
use super::{invalid, SpecError};

/// The CRI resources as OCI `linux.resources`, with the default device rules (deny all,
/// then what the request's devices need; rrun adds the standard devices after).
pub fn linux_resources(
    r: &api::LinuxContainerResources,
    cfg: &api::ContainerConfig,
    privileged: bool,
) -> Result<LinuxResources, SpecError> {
    let mut out = resources_only(r)?;
    let mut rules = vec![device_rule(false, None, None, None, "rwm")];
    if privileged {
        rules.push(device_rule(true, None, None, None, "rwm"));
    }
    for d in &cfg.devices {
        let (typ, major, minor) = host_device(&d.host_path)?;
        let perms = if d.permissions.is_empty() {
            "rwm"
        } else {
            &d.permissions
        };
        rules.push(device_rule(
            true,
            Some(typ),
            Some(major),
            Some(minor),
            perms,
        ));
    }
    out.set_devices(Some(rules));
    Ok(out)
}

/// The parts of `linux.resources` UpdateContainerResources may change.
pub fn resources_only(r: &api::LinuxContainerResources) -> Result<LinuxResources, SpecError> {
    for (name, v) in [
        ("cpu_period", r.cpu_period),
        ("cpu_quota", r.cpu_quota),
        ("cpu_shares", r.cpu_shares),
        ("memory_limit_in_bytes", r.memory_limit_in_bytes),
        ("memory_swap_limit_in_bytes", r.memory_swap_limit_in_bytes),
    ] {
        // -1 means "unlimited" for the quota and swap, as in the kernel's files.
        if v < -1 || (v == -1 && !matches!(name, "cpu_quota" | "memory_swap_limit_in_bytes")) {
            return Err(invalid(format!("{name} {v} is negative")));
        }
    }
    let mut out = LinuxResources::default();
    let mut cpu = LinuxCpu::default();
    let mut any_cpu = false;
    if r.cpu_shares > 0 {
        cpu.set_shares(Some(r.cpu_shares as u64));
        any_cpu = true;
    }
    if r.cpu_quota != 0 {
        cpu.set_quota(Some(r.cpu_quota));
        any_cpu = true;
    }
    if r.cpu_period > 0 {
        cpu.set_period(Some(r.cpu_period as u64));
        any_cpu = true;
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.set_cpus(Some(r.cpuset_cpus.clone()));
        any_cpu = true;
    }
    if !r.cpuset_mems.is_empty() {
        cpu.set_mems(Some(r.cpuset_mems.clone()));
        any_cpu = true;
    }
    if any_cpu {
        out.set_cpu(Some(cpu));
    }
    if r.memory_limit_in_bytes > 0 || r.memory_swap_limit_in_bytes != 0 {
        let mut mem = LinuxMemory::default();
        if r.memory_limit_in_bytes > 0 {
            mem.set_limit(Some(r.memory_limit_in_bytes));
        }
        if r.memory_swap_limit_in_bytes != 0 {
            mem.set_swap(Some(r.memory_swap_limit_in_bytes));
        }
        out.set_memory(Some(mem));
    }
    if !r.hugepage_limits.is_empty() {
        let limits = r
            .hugepage_limits
            .iter()
            .map(|h| {
                let mut l = LinuxHugepageLimit::default();
                l.set_page_size(h.page_size.clone())
                    .set_limit(h.limit as i64);
                l
            })
            .collect();
        out.set_hugepage_limits(Some(limits));
    }
    if !r.unified.is_empty() {
        out.set_unified(Some(r.unified.clone().into_iter().collect()));
    }
    Ok(out)
}

fn device_rule(
    allow: bool,
    typ: Option<LinuxDeviceType>,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut d = LinuxDeviceCgroup::default();
    d.set_allow(allow)
        .set_typ(typ.or(Some(LinuxDeviceType::A)))
        .set_major(major)
        .set_minor(minor)
        .set_access(Some(access.to_string()));
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_resources_are_refused() {
        let r = api::LinuxContainerResources {
            memory_limit_in_bytes: -5,
            ..Default::default()
        };
        assert!(matches!(resources_only(&r), Err(SpecError::Invalid(_))));
        let r = api::LinuxContainerResources {
            cpu_quota: 50_000,
            cpu_period: 100_000,
            memory_limit_in_bytes: 32 << 20,
            ..Default::default()
        };
        let out = resources_only(&r).unwrap();
        assert_eq!(out.memory().as_ref().unwrap().limit(), Some(32 << 20));
        assert_eq!(out.cpu().as_ref().unwrap().quota(), Some(50_000));
    }
}
