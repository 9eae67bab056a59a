//! CRI stats from the runtime's typed cgroup stats (the same for cgroup v1 and v2).

use std::path::Path;

use cri_proto::api;
use rrun::Stats;

use crate::records::{now_ns, ContainerRecord, SandboxRecord};

fn value(v: u64) -> Option<api::UInt64Value> {
    Some(api::UInt64Value { value: v })
}

/// CPU and memory from one container's or pod's cgroup stats.
fn cpu_and_memory(stats: &Stats, ts: i64) -> (api::CpuUsage, api::MemoryUsage) {
    let cpu = api::CpuUsage {
        timestamp: ts,
        usage_core_nano_seconds: value(stats.cpu.usage.total),
        usage_nano_cores: None,
    };
    let mem = &stats.memory;
    let usage = mem.usage.usage;
    let limit = mem.usage.limit;
    let stat = |keys: &[&str]| mem.stat(keys).unwrap_or(0);
    // The kubelet's working set: usage less the page cache the kernel can drop at once.
    let inactive_file = stat(&["total_inactive_file", "inactive_file"]);
    let working_set = usage.saturating_sub(inactive_file);
    // cgroup v1 reports an unset limit as a huge number; only a real limit leaves room.
    let available = (limit > 0 && limit < (1 << 62)).then(|| limit.saturating_sub(working_set));
    let memory = api::MemoryUsage {
        timestamp: ts,
        working_set_bytes: value(working_set),
        available_bytes: available.and_then(value),
        usage_bytes: value(usage),
        rss_bytes: value(stat(&["total_rss", "rss", "anon"])),
        page_faults: value(stat(&["total_pgfault", "pgfault"])),
        major_page_faults: value(stat(&["total_pgmajfault", "pgmajfault"])),
    };
    (cpu, memory)
}

/// Bytes and inodes under `dir` (the container's writable layer), not following links and
/// not crossing into other filesystems' mounts.
pub fn disk_usage(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::symlink_metadata(dir) else {
        return (0, 0);
    };
    let dev = root.dev();
    let (mut bytes, mut inodes) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.dev() != dev {
                continue;
            }
            inodes += 1;
            bytes += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

pub fn container_stats(rec: &ContainerRecord, raw: Option<&Stats>) -> api::ContainerStats {
    let ts = now_ns();
    let (cpu, memory) = match raw {
        Some(r) => {
            let (c, m) = cpu_and_memory(r, ts);
            (Some(c), Some(m))
        }
        None => (None, None),
    };
    let upper = rec.dir.join("upper");
    let (used, inodes) = disk_usage(&upper);
    api::ContainerStats {
        attributes: Some(api::ContainerAttributes {
            id: rec.id.clone(),
            metadata: rec.config.metadata.clone(),
            labels: rec.config.labels.clone(),
            annotations: rec.config.annotations.clone(),
        }),
        cpu,
        memory,
        writable_layer: Some(api::FilesystemUsage {
            timestamp: ts,
            fs_id: Some(api::FilesystemIdentifier {
                mountpoint: upper.to_string_lossy().into_owned(),
            }),
            used_bytes: value(used),
            inodes_used: value(inodes),
        }),
        swap: None,
    }
}

/// The pod's stats: its own cgroup's when this server made it, else the sum of its
/// containers'.
pub fn pod_stats(
    rec: &SandboxRecord,
    pod_raw: Option<&Stats>,
    pids: Option<u64>,
    containers: Vec<api::ContainerStats>,
) -> api::PodSandboxStats {
    let ts = now_ns();
    let (cpu, memory) = match pod_raw {
        Some(r) => {
            let (c, m) = cpu_and_memory(r, ts);
            (c, m)
        }
        None => {
            let sum =
                |f: &dyn Fn(&api::ContainerStats) -> Option<u64>| -> Option<api::UInt64Value> {
                    value(containers.iter().filter_map(f).sum())
                };
            (
                api::CpuUsage {
                    timestamp: ts,
                    usage_core_nano_seconds: sum(&|c| {
                        c.cpu
                            .as_ref()?
                            .usage_core_nano_seconds
                            .as_ref()
                            .map(|v| v.value)
                    }),
                    usage_nano_cores: None,
                },
                api::MemoryUsage {
                    timestamp: ts,
                    working_set_bytes: sum(&|c| {
                        c.memory
                            .as_ref()?
                            .working_set_bytes
                            .as_ref()
                            .map(|v| v.value)
                    }),
                    usage_bytes: sum(&|c| c.memory.as_ref()?.usage_bytes.as_ref().map(|v| v.value)),
                    rss_bytes: sum(&|c| c.memory.as_ref()?.rss_bytes.as_ref().map(|v| v.value)),
                    ..Default::default()
                },
            )
        }
    };
    api::PodSandboxStats {
        attributes: Some(api::PodSandboxAttributes {
            id: rec.id.clone(),
            metadata: rec.config.metadata.clone(),
            labels: rec.config.labels.clone(),
            annotations: rec.config.annotations.clone(),
        }),
        linux: Some(api::LinuxPodSandboxStats {
            cpu: Some(cpu),
            memory: Some(memory),
            network: None,
            process: pids.map(|n| api::ProcessUsage {
                timestamp: ts,
                process_count: value(n),
            }),
            containers,
        }),
        windows: None,
    }
}

use super::{labels_match, ContainerPhase, Error, SandboxState};

/// The CRI's stats RPCs, from the containers' and pods' cgroups.
impl super::Cri {
    pub fn container_stats(&self, id: &str) -> Result<api::ContainerStats, Error> {
        let rec = self.container(id)?;
        Ok(self.stats_of(&rec))
    }

    pub(super) fn stats_of(&self, rec: &ContainerRecord) -> api::ContainerStats {
        let raw = if self.phase(rec) == ContainerPhase::Exited {
            None
        } else {
            self.inner.runtime.stats(&rec.id).ok()
        };
        container_stats(rec, raw.as_ref())
    }

    pub fn list_container_stats(
        &self,
        filter: Option<api::ContainerStatsFilter>,
    ) -> Vec<api::ContainerStats> {
        let f = filter.unwrap_or_default();
        let recs: Vec<ContainerRecord> = {
            let st = self.state();
            st.containers
                .values()
                .filter(|c| f.id.is_empty() || c.id.starts_with(&f.id))
                .filter(|c| {
                    f.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&f.pod_sandbox_id)
                })
                .filter(|c| labels_match(&c.config.labels, &f.label_selector))
                .cloned()
                .collect()
        };
        // Like the kubelet's cadvisor-less path: only containers that run have stats.
        recs.iter()
            .filter(|c| self.phase(c) != ContainerPhase::Exited)
            .map(|c| self.stats_of(c))
            .collect()
    }

    pub fn pod_sandbox_stats(&self, id: &str) -> Result<api::PodSandboxStats, Error> {
        let rec = self.sandbox(id)?;
        let containers: Vec<ContainerRecord> = self
            .state()
            .containers
            .values()
            .filter(|c| c.sandbox_id == rec.id)
            .cloned()
            .collect();
        let running: Vec<api::ContainerStats> = containers
            .iter()
            .filter(|c| self.phase(c) != ContainerPhase::Exited)
            .map(|c| self.stats_of(c))
            .collect();
        let pod_raw = rec
            .cgroup
            .as_ref()
            .and_then(|cg| rrun::pod_cgroup::PodCgroup::open(cg).stats().ok());
        let pids = rec
            .cgroup
            .as_ref()
            .and_then(|cg| rrun::pod_cgroup::PodCgroup::open(cg).pids().ok())
            .map(|p| p.len() as u64);
        Ok(pod_stats(&rec, pod_raw.as_ref(), pids, running))
    }

    pub fn list_pod_sandbox_stats(
        &self,
        filter: Option<api::PodSandboxStatsFilter>,
    ) -> Vec<api::PodSandboxStats> {
        let f = filter.unwrap_or_default();
        let ids: Vec<String> = self
            .state()
            .sandboxes
            .values()
            .filter(|s| f.id.is_empty() || s.id.starts_with(&f.id))
            .filter(|s| labels_match(&s.config.labels, &f.label_selector))
            .filter(|s| s.state == SandboxState::Ready)
            .map(|s| s.id.clone())
            .collect();
        ids.iter()
            .filter_map(|id| self.pod_sandbox_stats(id).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn working_set_is_usage_less_inactive_file() {
        let mut raw = Stats::default();
        raw.cpu.usage.total = 1234;
        raw.memory.usage.usage = 10_000;
        raw.memory.usage.limit = 50_000;
        for (k, v) in [
            ("total_inactive_file", 3_000),
            ("total_rss", 6_000),
            ("total_pgfault", 7),
            ("total_pgmajfault", 1),
        ] {
            raw.memory.stats.insert(k.into(), v);
        }
        let (cpu, mem) = cpu_and_memory(&raw, 1);
        assert_eq!(cpu.usage_core_nano_seconds.unwrap().value, 1234);
        assert_eq!(mem.working_set_bytes.unwrap().value, 7_000);
        assert_eq!(mem.available_bytes.unwrap().value, 43_000);
        assert_eq!(mem.rss_bytes.unwrap().value, 6_000);
        assert_eq!(mem.page_faults.unwrap().value, 7);
    }
}
