//! A container's cgroup counters, typed, for cgroup v1 and v2 alike, and the events of
//! `rrun events`. Serialized, [`Stats`] is the `data` of `rrun events --stats` (the field
//! names of runc's libcontainer `Stats`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Counters and gauges of a container's cgroup. A controller the host does not have (v1)
/// leaves its part at zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub cpu: CpuStats,
    pub memory: MemoryStats,
    pub pids: PidsStats,
    pub blkio: BlkioStats,
    /// Page size (`2MB`, `1GB`) → its usage.
    pub hugetlb: BTreeMap<String, HugetlbStats>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuStats {
    pub usage: CpuUsage,
    pub throttling: Throttling,
}

/// CPU time in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CpuUsage {
    pub total: u64,
    /// Per CPU (cgroup v1's cpuacct only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub percpu_usage: Vec<u64>,
    pub usage_in_kernelmode: u64,
    pub usage_in_usermode: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Throttling {
    pub periods: u64,
    pub throttled_periods: u64,
    /// Nanoseconds.
    pub throttled_time: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryStats {
    /// Page cache, bytes.
    pub cache: u64,
    pub usage: MemoryEntry,
    /// Memory and swap (v1's memsw); swap alone on v2.
    pub swap_usage: MemoryEntry,
    /// Kernel memory (v1 only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_usage: Option<MemoryEntry>,
    /// `memory.stat` as the kernel writes it (v1: `total_rss`, `total_inactive_file`, ...;
    /// v2: `anon`, `file`, `inactive_file`, ...).
    pub stats: BTreeMap<String, u64>,
    /// Processes the kernel's OOM killer killed.
    pub oom_kill: u64,
    /// Times the limit was hit and the OOM killer ran (v2's `memory.events` `oom`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oom: Option<u64>,
    /// Whether the cgroup is under OOM now (v1's `memory.oom_control`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under_oom: Option<u64>,
}

impl MemoryStats {
    /// The first of `keys` that `memory.stat` has (v1 and v2 name some counters apart).
    pub fn stat(&self, keys: &[&str]) -> Option<u64> {
        keys.iter().find_map(|k| self.stats.get(*k).copied())
    }
}

/// Bytes; a `limit` of 0 means none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemoryEntry {
    pub usage: u64,
    pub max_usage: u64,
    pub failcnt: u64,
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PidsStats {
    pub current: u64,
    /// 0 means none.
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlkioStats {
    #[serde(rename = "ioServiceBytesRecursive")]
    pub io_service_bytes_recursive: Vec<BlkioEntry>,
    #[serde(rename = "ioServicedRecursive")]
    pub io_serviced_recursive: Vec<BlkioEntry>,
}

/// One device's count of one operation (`Read`, `Write`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    pub op: String,
    pub value: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HugetlbStats {
    pub usage: u64,
    pub max_usage: u64,
    pub failcnt: u64,
}

/// One line of `rrun events`: `{"type":"stats","id":..,"data":{..}}` or
/// `{"type":"oom","id":..,"data":{"oom_kill":N}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    Stats { id: String, data: Box<Stats> },
    Oom { id: String, data: OomCount },
}

/// How many processes of the container the OOM killer has killed so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OomCount {
    pub oom_kill: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_with_runc_libcontainer_names() {
        let mut s = Stats::default();
        s.memory.oom_kill = 2;
        s.blkio.io_serviced_recursive.push(BlkioEntry {
            major: 8,
            minor: 0,
            op: "Read".into(),
            value: 3,
        });
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["memory"]["oom_kill"], 2);
        assert_eq!(v["blkio"]["ioServicedRecursive"][0]["op"], "Read");
        assert_eq!(v["cpu"]["throttling"]["throttled_periods"], 0);
        assert!(v["cpu"]["usage"].get("percpu_usage").is_none());
        assert_eq!(serde_json::from_value::<Stats>(v).unwrap(), s);
    }

    #[test]
    fn events_carry_their_type() {
        let oom = Event::Oom {
            id: "c".into(),
            data: OomCount { oom_kill: 1 },
        };
        let v = serde_json::to_value(&oom).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "oom", "id": "c", "data": {"oom_kill": 1}})
        );
        let stats = serde_json::to_value(Event::Stats {
            id: "c".into(),
            data: Box::default(),
        })
        .unwrap();
        assert_eq!(stats["type"], "stats");
        assert_eq!(stats["data"]["pids"]["current"], 0);
    }
}
