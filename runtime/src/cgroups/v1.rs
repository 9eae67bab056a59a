//! cgroup v1 (and hybrid): one directory per mounted hierarchy; in hybrid mode also one in
//! the cgroup2 tree (no controllers there, but it gives the container an honest v2 view,
//! and `unified` resources have somewhere to go).

use super::*;
use crate::procfs::MountInfo;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub struct V1 {
    rec: CgroupRecord,
}

/// A mounted hierarchy: its mount point and controllers (`["unified"]` for cgroup2).
#[derive(Debug, Clone, PartialEq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// The cgroup mounted there (not `/` when a container got a bind of its own cgroup).
    pub root: PathBuf,
    pub controllers: Vec<String>,
}

/// The cgroup hierarchies in `/proc/self/mountinfo` (named ones like `name=systemd` left
/// out: they hold no resources).
pub fn hierarchies(table: &[MountInfo]) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for m in table {
        // A later mount on or above a hierarchy's mount point hides it (a tmpfs over
        // /sys/fs/cgroup/unified, as the benchmark does to run crun on a hybrid host):
        // only what the paths reach counts.
        out.retain(|h| !h.mount.starts_with(&m.mount_point));
        let opts = m.super_options.as_str();
        let controllers: Vec<String> = match m.fstype.as_str() {
            "cgroup2" => vec!["unified".into()],
            "cgroup" => opts
                .split(',')
                .filter(|o| {
                    !matches!(*o, "rw" | "ro")
                        && !o.contains('=')
                        && !o.starts_with("no")
                        && *o != "xattr"
                        && *o != "clone_children"
                        && *o != "cpuset_v2_mode"
                })
                .map(String::from)
                .collect(),
            _ => continue,
        };
        // The same hierarchy mounted twice: keep the first.
        if controllers.is_empty() || out.iter().any(|h| h.controllers == controllers) {
            continue;
        }
        out.push(Hierarchy {
            mount: m.mount_point.clone(),
            root: m.root.clone(),
            controllers,
        });
    }
    out
}

impl V1 {
    pub fn create(p: &CgroupPath) -> Result<V1> {
        let mi = Path::new("/proc/self/mountinfo");
        let hs = hierarchies(&crate::procfs::mountinfo().map_err(io_err("read", mi))?);
        if hs.iter().all(|h| h.controllers == ["unified"]) {
            return Err(CgroupError::NotMounted);
        }
        let own = own_cgroups()?;
        let own_of = |h: &Hierarchy| -> PathBuf {
            own.iter()
                .find(|(k, _)| {
                    if h.controllers == ["unified"] {
                        k.is_empty()
                    } else {
                        k.split(',').any(|c| h.controllers.iter().any(|hc| hc == c))
                    }
                })
                .map(|(_, p)| p.clone())
                .unwrap_or_else(|| PathBuf::from("/"))
        };
        let mut rec = CgroupRecord {
            version: Version::V1,
            ..Default::default()
        };
        let made = (|| {
            for h in &hs {
                // /proc/self/cgroup names cgroups from the hierarchy's root; the mount may
                // show a subtree of it.
                let own = own_of(h);
                let own = own
                    .strip_prefix(&h.root)
                    .map(|o| Path::new("/").join(o))
                    .unwrap_or(own);
                let leaf = join_under(&h.mount, &own, p);
                let is_cpuset = h.controllers.iter().any(|c| c == "cpuset");
                make_dirs(&h.mount, &leaf, &mut rec.created, |dir| {
                    if is_cpuset {
                        fill_cpuset(dir)?;
                    }
                    Ok(())
                })?;
                for c in &h.controllers {
                    rec.paths.insert(c.clone(), leaf.clone());
                    rec.mounts.insert(c.clone(), h.mount.clone());
                }
            }
            Ok(())
        })();
        let v = V1 { rec };
        if let Err(e) = made {
            let _ = v.destroy();
            return Err(e);
        }
        Ok(v)
    }

    pub fn open(rec: CgroupRecord) -> V1 {
        V1 { rec }
    }

    fn dir(&self, ctrl: &str) -> Option<&Path> {
        self.rec.paths.get(ctrl).map(|p| p.as_path())
    }

    fn need(&self, ctrl: &str, what: &str) -> Result<&Path> {
        self.dir(ctrl).ok_or_else(|| {
            CgroupError::Unsupported(format!(
                "{what} needs the {ctrl} cgroup controller, which is not mounted"
            ))
        })
    }

    /// One directory per hierarchy.
    fn dirs(&self) -> Vec<&Path> {
        let mut v: Vec<&Path> = self.rec.paths.values().map(|p| p.as_path()).collect();
        v.sort();
        v.dedup();
        v
    }

    fn apply_memory(&self, m: &oci_spec::runtime::LinuxMemory) -> Result<()> {
        let d = self.need("memory", "linux.resources.memory")?;
        let val = |v: i64| {
            if v < 0 {
                "-1".to_string()
            } else {
                v.to_string()
            }
        };
        match (m.limit(), m.swap()) {
            (Some(limit), Some(swap)) => {
                // memsw must stay >= the limit at every step: raise memsw first when the
                // new limit does not fit under the current one.
                if write(d, "memory.limit_in_bytes", &val(limit)).is_err() {
                    write(d, "memory.memsw.limit_in_bytes", &val(swap))?;
                    write(d, "memory.limit_in_bytes", &val(limit))?;
                } else {
                    write(d, "memory.memsw.limit_in_bytes", &val(swap))?;
                }
            }
            (Some(limit), None) => {
                write(d, "memory.limit_in_bytes", &val(limit)).map_err(|e| match e {
                    CgroupError::Io { ref source, .. } if source.raw_os_error() == Some(libc::EINVAL) => {
                        CgroupError::Invalid(format!(
                            "memory limit {limit} is above the container's memory+swap limit: give the swap limit too (--memory-swap)"
                        ))
                    }
                    e => e,
                })?
            }
            (None, Some(swap)) => write(d, "memory.memsw.limit_in_bytes", &val(swap))?,
            (None, None) => {}
        }
        if let Some(r) = m.reservation() {
            write(d, "memory.soft_limit_in_bytes", &val(r))?;
        }
        if let Some(s) = m.swappiness() {
            if s > 100 {
                return Err(CgroupError::Invalid(format!(
                    "memory.swappiness {s} (0-100)"
                )));
            }
            write(d, "memory.swappiness", &s.to_string())?;
        }
        if m.disable_oom_killer() == Some(true) {
            write(d, "memory.oom_control", "1")?;
        }
        // kernel: the kernel memory limit is deprecated and ignored, by runc too. kernelTCP
        // is still honoured by cgroup v1 kernels, and runc 1.1 writes it.
        if let Some(t) = m.kernel_tcp() {
            write_if_supported(
                d,
                "memory.kmem.tcp.limit_in_bytes",
                &val(t),
                "linux.resources.memory.kernelTCP",
            )?;
        }
        Ok(())
    }

    fn apply_cpu(&self, c: &oci_spec::runtime::LinuxCpu) -> Result<()> {
        let wants_cpu = c.shares().is_some()
            || c.quota().is_some()
            || c.period().is_some()
            || c.burst().is_some()
            || c.idle().is_some()
            || c.realtime_period().is_some()
            || c.realtime_runtime().is_some();
        if wants_cpu {
            let d = self.need("cpu", "linux.resources.cpu")?;
            if let Some(s) = c.shares().filter(|s| *s > 0) {
                write(d, "cpu.shares", &s.to_string())?;
            }
            if let Some(p) = c.period().filter(|p| *p > 0) {
                write(d, "cpu.cfs_period_us", &p.to_string())?;
            }
            if let Some(q) = c.quota().filter(|q| *q != 0) {
                write(
                    d,
                    "cpu.cfs_quota_us",
                    &if q < 0 { "-1".into() } else { q.to_string() },
                )?;
            }
            if let Some(b) = c.burst() {
                write(d, "cpu.cfs_burst_us", &b.to_string())?;
            }
            if let Some(i) = c.idle() {
                write(d, "cpu.idle", &i.to_string())?;
            }
            if let Some(p) = c.realtime_period().filter(|p| *p > 0) {
                write(d, "cpu.rt_period_us", &p.to_string())?;
            }
            if let Some(r) = c.realtime_runtime().filter(|r| *r != 0) {
                write(d, "cpu.rt_runtime_us", &r.to_string())?;
            }
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            write(self.need("cpuset", "cpu.cpus")?, "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            write(self.need("cpuset", "cpu.mems")?, "cpuset.mems", mems)?;
        }
        Ok(())
    }

    fn apply_blkio(&self, b: &oci_spec::runtime::LinuxBlockIo) -> Result<()> {
        let d = self.need("blkio", "linux.resources.blockIO")?;
        if let Some(w) = b.weight() {
            // CFQ's file, gone with CFQ; else BFQ's replacement.
            let file = ["blkio.weight", "blkio.bfq.weight"]
                .into_iter()
                .find(|f| d.join(f).exists())
                .ok_or_else(|| {
                    CgroupError::Unsupported(
                        "linux.resources.blockIO.weight: not supported by this kernel (no blkio.weight (CFQ) or blkio.bfq.weight (BFQ))".into(),
                    )
                })?;
            write(d, file, &w.to_string())?;
        }
        if let Some(w) = b.leaf_weight() {
            write_if_supported(
                d,
                "blkio.leaf_weight",
                &w.to_string(),
                "linux.resources.blockIO.leafWeight",
            )?;
        }
        for wd in b.weight_device().as_deref().unwrap_or_default() {
            if let Some(w) = wd.weight() {
                write_if_supported(
                    d,
                    "blkio.weight_device",
                    &format!("{}:{} {w}", wd.major(), wd.minor()),
                    "linux.resources.blockIO.weightDevice",
                )?;
            }
            if let Some(w) = wd.leaf_weight() {
                write_if_supported(
                    d,
                    "blkio.leaf_weight_device",
                    &format!("{}:{} {w}", wd.major(), wd.minor()),
                    "linux.resources.blockIO.weightDevice.leafWeight",
                )?;
            }
        }
        for (file, list) in [
            (
                "blkio.throttle.read_bps_device",
                b.throttle_read_bps_device(),
            ),
            (
                "blkio.throttle.write_bps_device",
                b.throttle_write_bps_device(),
            ),
            (
                "blkio.throttle.read_iops_device",
                b.throttle_read_iops_device(),
            ),
            (
                "blkio.throttle.write_iops_device",
                b.throttle_write_iops_device(),
            ),
        ] {
            for t in list.as_deref().unwrap_or_default() {
                write_if_supported(
                    d,
                    file,
                    &format!("{}:{} {}", t.major(), t.minor(), t.rate()),
                    "linux.resources.blockIO throttling",
                )?;
            }
        }
        Ok(())
    }
}

/// A new v1 cpuset starts with no cpus and no memory nodes, and can hold no task (nor give
/// any to a child) until given some: copy the parent's into each that is still empty. Runs
/// on every level of the path, ours or found, top down, so the parent is never empty here;
/// a level another create made and has not filled yet gets the same values it would write.
fn fill_cpuset(dir: &Path) -> Result<()> {
    let parent = dir.parent().unwrap_or(dir);
    for f in ["cpuset.cpus", "cpuset.mems"] {
        if !read(dir, f)?.trim().is_empty() {
            continue;
        }
        let v = read(parent, f)?;
        let v = v.trim();
        if !v.is_empty() {
            write(dir, f, v)?;
        }
    }
    Ok(())
}

impl Manager for V1 {
    fn record(&self) -> &CgroupRecord {
        &self.rec
    }

    fn apply(&self, res: &LinuxResources) -> Result<()> {
        if let Some(m) = res.memory() {
            self.apply_memory(m)?;
        }
        if let Some(c) = res.cpu() {
            self.apply_cpu(c)?;
        }
        if let Some(p) = res.pids() {
            let d = self.need("pids", "linux.resources.pids")?;
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            write(d, "pids.max", &v)?;
        }
        if let Some(b) = res.block_io() {
            self.apply_blkio(b)?;
        }
        for h in res.hugepage_limits().as_deref().unwrap_or_default() {
            let d = self.need("hugetlb", "linux.resources.hugepageLimits")?;
            write(
                d,
                &format!("hugetlb.{}.limit_in_bytes", h.page_size()),
                &h.limit().to_string(),
            )?;
        }
        if let Some(n) = res.network() {
            if let Some(id) = n.class_id() {
                write(
                    self.need("net_cls", "network.classID")?,
                    "net_cls.classid",
                    &id.to_string(),
                )?;
            }
            for p in n.priorities().as_deref().unwrap_or_default() {
                write(
                    self.need("net_prio", "network.priorities")?,
                    "net_prio.ifpriomap",
                    &format!("{} {}", p.name(), p.priority()),
                )?;
            }
        }
        if let Some(rules) = res.devices().as_deref().filter(|r| !r.is_empty()) {
            let d = self.need("devices", "linux.resources.devices")?;
            for r in &device_rules(Some(rules)) {
                let file = if r.allow() {
                    "devices.allow"
                } else {
                    "devices.deny"
                };
                write(d, file, &device_rule(r))?;
            }
        }
        if let Some(u) = res.unified().as_ref().filter(|u| !u.is_empty()) {
            let d = self.dir("unified").ok_or_else(|| {
                CgroupError::Unsupported("linux.resources.unified needs cgroup v2".into())
            })?;
            for (k, v) in u {
                if k.contains('/') {
                    return Err(CgroupError::Invalid(format!("unified key {k:?}")));
                }
                write(d, k, v)?;
            }
        }
        Ok(())
    }

    fn placement(&self) -> Result<Placement> {
        let mut p = Placement::default();
        let v2 = self.dir("unified");
        for d in self.dirs() {
            if Some(d) == v2 {
                p.open_cgroup2(d)?;
            } else {
                p.open_v1_tasks(d)?;
            }
        }
        Ok(p)
    }

    fn freeze(&self) -> Result<()> {
        let d = self.need("freezer", "pause")?;
        write(d, "freezer.state", "FROZEN")?;
        wait_until("the freezer", || {
            Ok(read(d, "freezer.state")?.trim() == "FROZEN")
        })
    }

    fn thaw(&self) -> Result<()> {
        let d = self.need("freezer", "resume")?;
        write(d, "freezer.state", "THAWED")?;
        wait_until("the thaw", || {
            Ok(read(d, "freezer.state")?.trim() == "THAWED")
        })
    }

    fn is_frozen(&self) -> Result<bool> {
        match self.dir("freezer") {
            Some(d) => Ok(read(d, "freezer.state")?.trim() != "THAWED"),
            None => Ok(false),
        }
    }

    fn pids(&self) -> Result<Vec<i32>> {
        let d = ["pids", "freezer", "memory", "cpu", "devices"]
            .iter()
            .find_map(|c| self.dir(c))
            .or_else(|| self.dirs().first().copied());
        let mut out = Vec::new();
        if let Some(d) = d {
            procs_recursive(d, &mut out)?;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn kill_all(&self, sig: Signal) -> Result<()> {
        // An empty cgroup (the usual case at `delete`) costs one read, no freeze.
        if self.pids()?.is_empty() {
            return Ok(());
        }
        // Frozen, nothing can fork between our listing and our kill; SIGKILLed processes
        // of a frozen cgroup die only once thawed, so a SIGKILL always ends thawed.
        let freeze = sig == Signal::SIGKILL && self.dir("freezer").is_some();
        if freeze && !self.is_frozen()? {
            self.freeze()?;
        }
        for pid in self.pids()? {
            let _ = kill(Pid::from_raw(pid), sig);
        }
        if freeze {
            self.thaw()?;
        }
        Ok(())
    }

    fn oom_kills(&self) -> Result<u64> {
        Ok(self
            .dir("memory")
            .map(|d| {
                read_keyed(d, "memory.oom_control")
                    .get("oom_kill")
                    .copied()
                    .unwrap_or(0)
            })
            .unwrap_or(0))
    }

    fn stats(&self) -> Result<Stats> {
        let mut stats = Stats::default();
        if let Some(d) = self.dir("cpuacct") {
            // cpuacct.stat counts USER_HZ (100 Hz) ticks; runc reports nanoseconds.
            let st = read_keyed(d, "cpuacct.stat");
            let tick = 10_000_000u64;
            stats.cpu.usage = CpuUsage {
                total: read_u64(d, "cpuacct.usage").unwrap_or(0),
                percpu_usage: read(d, "cpuacct.usage_percpu")
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect(),
                usage_in_kernelmode: st.get("system").copied().unwrap_or(0) * tick,
                usage_in_usermode: st.get("user").copied().unwrap_or(0) * tick,
            };
        }
        if let Some(d) = self.dir("cpu") {
            let st = read_keyed(d, "cpu.stat");
            stats.cpu.throttling = Throttling {
                periods: st.get("nr_periods").copied().unwrap_or(0),
                throttled_periods: st.get("nr_throttled").copied().unwrap_or(0),
                throttled_time: st.get("throttled_time").copied().unwrap_or(0),
            };
        }
        if let Some(d) = self.dir("memory") {
            let entry = |prefix: &str| MemoryEntry {
                usage: read_u64(d, &format!("{prefix}usage_in_bytes")).unwrap_or(0),
                max_usage: read_u64(d, &format!("{prefix}max_usage_in_bytes")).unwrap_or(0),
                failcnt: read_u64(d, &format!("{prefix}failcnt")).unwrap_or(0),
                limit: read_u64(d, &format!("{prefix}limit_in_bytes")).unwrap_or(0),
            };
            let raw = read_keyed(d, "memory.stat");
            let oom = read_keyed(d, "memory.oom_control");
            stats.memory = MemoryStats {
                cache: raw
                    .get("total_cache")
                    .or(raw.get("cache"))
                    .copied()
                    .unwrap_or(0),
                usage: entry("memory."),
                swap_usage: entry("memory.memsw."),
                kernel_usage: Some(entry("memory.kmem.")),
                oom_kill: oom.get("oom_kill").copied().unwrap_or(0),
                oom: None,
                under_oom: Some(oom.get("under_oom").copied().unwrap_or(0)),
                stats: raw,
            };
        }
        if let Some(d) = self.dir("pids") {
            stats.pids = PidsStats {
                current: read_u64(d, "pids.current").unwrap_or(0),
                limit: read_u64(d, "pids.max")
                    .map(|m| if m == u64::MAX { 0 } else { m })
                    .unwrap_or(0),
            };
        }
        if let Some(d) = self.dir("blkio") {
            let parse = |file: &str| -> Vec<BlkioEntry> {
                read(d, file)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|l| {
                        let mut f = l.split_whitespace();
                        let (maj, min) = f.next()?.split_once(':')?;
                        let op = f.next()?;
                        Some(BlkioEntry {
                            major: maj.parse().ok()?,
                            minor: min.parse().ok()?,
                            op: op.to_string(),
                            value: f.next()?.parse().ok()?,
                        })
                    })
                    .collect()
            };
            stats.blkio = BlkioStats {
                io_service_bytes_recursive: parse("blkio.throttle.io_service_bytes_recursive"),
                io_serviced_recursive: parse("blkio.throttle.io_serviced_recursive"),
            };
        }
        if let Some(d) = self.dir("hugetlb") {
            if let Ok(entries) = std::fs::read_dir(d) {
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(size) = name
                        .strip_prefix("hugetlb.")
                        .and_then(|n| n.strip_suffix(".usage_in_bytes"))
                    {
                        let file = |what: &str| format!("hugetlb.{size}.{what}");
                        stats.hugetlb.insert(
                            size.to_string(),
                            HugetlbStats {
                                usage: read_u64(d, &name).unwrap_or(0),
                                max_usage: read_u64(d, &file("max_usage_in_bytes")).unwrap_or(0),
                                failcnt: read_u64(d, &file("failcnt")).unwrap_or(0),
                            },
                        );
                    }
                }
            }
        }
        Ok(stats)
    }

    fn destroy(&self) -> Result<()> {
        let leaves = self.dirs();
        remove_dirs(&leaves, &self.rec.created)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::procfs::parse_mountinfo;

    #[test]
    fn mountinfo_hierarchies() {
        let mi = "\
30 29 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";
        let hs = hierarchies(&parse_mountinfo(mi));
        assert_eq!(hs.len(), 3);
        assert_eq!(hs[0].controllers, ["unified"]);
        assert_eq!(hs[1].controllers, ["cpu", "cpuacct"]);
        assert_eq!(hs[2].mount, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(hs[2].root, PathBuf::from("/"));
    }

    #[test]
    fn hidden_hierarchies_are_left_out() {
        let mi = "\
30 29 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw,nsdelegate
34 30 0:30 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
40 31 0:40 / /sys/fs/cgroup/unified rw - tmpfs none rw
";
        let hs = hierarchies(&parse_mountinfo(mi));
        assert_eq!(hs.len(), 1);
        assert_eq!(hs[0].controllers, ["memory"]);
        let over_all = format!("{mi}41 30 0:41 / /sys/fs/cgroup rw - tmpfs none rw\n");
        assert!(hierarchies(&parse_mountinfo(&over_all)).is_empty());
    }
}
