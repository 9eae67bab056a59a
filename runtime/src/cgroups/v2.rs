//! cgroup v2 (unified): one directory; controllers enabled down to it through
//! `cgroup.subtree_control`.

use super::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub struct V2 {
    rec: CgroupRecord,
}

impl V2 {
    pub fn create(p: &CgroupPath) -> Result<V2> {
        let mount = Path::new(CGROUP_ROOT);
        let own = own_cgroups()?
            .into_iter()
            .find(|(k, _)| k.is_empty())
            .map(|(_, p)| p)
            .unwrap_or_else(|| PathBuf::from("/"));
        let leaf = join_under(mount, &own, p);
        let mut rec = CgroupRecord {
            version: Version::V2,
            ..Default::default()
        };
        rec.paths.insert(String::new(), leaf.clone());
        rec.mounts.insert(String::new(), mount.to_path_buf());
        let made = make_dirs(mount, &leaf, &mut rec.created, |_| Ok(()));
        let v = V2 { rec };
        if let Err(e) = made.and_then(|()| enable_controllers(mount, &own, &leaf, p.absolute)) {
            let _ = v.destroy();
            return Err(e);
        }
        Ok(v)
    }

    pub fn open(rec: CgroupRecord) -> V2 {
        V2 { rec }
    }

    fn dir(&self) -> &Path {
        self.rec
            .paths
            .values()
            .next()
            .map(|p| p.as_path())
            .unwrap_or(Path::new(CGROUP_ROOT))
    }

    /// A write whose file is missing means the controller is not enabled for us.
    fn put(&self, file: &str, value: &str) -> Result<()> {
        match write(self.dir(), file, value) {
            Err(CgroupError::Io { source, path, .. }) if source.kind() == ErrorKind::NotFound => {
                let ctrl = file.split('.').next().unwrap_or(file);
                Err(CgroupError::Unsupported(format!(
                    "{}: the {ctrl} controller is not available to this cgroup (not in the parent's cgroup.subtree_control)",
                    path.display()
                )))
            }
            other => other,
        }
    }

    fn apply_memory(&self, m: &oci_spec::runtime::LinuxMemory) -> Result<()> {
        let max = |v: i64| {
            if v < 0 {
                "max".to_string()
            } else {
                v.to_string()
            }
        };
        if let Some(l) = m.limit() {
            self.put("memory.max", &max(l))?;
        }
        if let Some(r) = m.reservation() {
            self.put("memory.low", &max(r))?;
        }
        if let Some(swap) = m.swap() {
            // The spec's swap is memory+swap (v1 memsw); v2's memory.swap.max is swap only.
            let v = match (swap, m.limit()) {
                (-1, _) => "max".to_string(),
                (0, _) => String::new(),
                (s, Some(l)) if l > 0 => {
                    if s < l {
                        return Err(CgroupError::Invalid(format!(
                            "memory.swap {s} is below memory.limit {l}"
                        )));
                    }
                    (s - l).to_string()
                }
                (s, Some(-1)) => {
                    return Err(CgroupError::Invalid(format!(
                        "memory.swap {s} with an unlimited memory.limit"
                    )))
                }
                _ => {
                    return Err(CgroupError::Invalid(
                        "memory.swap needs memory.limit".into(),
                    ))
                }
            };
            if !v.is_empty() {
                // No swap accounting (swapaccount=0 or no swap) means no file: nothing to limit.
                optional(write(self.dir(), "memory.swap.max", &v))?;
            }
        }
        // swappiness and disableOOMKiller have no v2 interface (v1 only by the spec); kernel
        // memory limits were removed from Linux.
        Ok(())
    }

    fn apply_cpu(&self, c: &oci_spec::runtime::LinuxCpu) -> Result<()> {
        if let Some(s) = c.shares().filter(|s| *s > 0) {
            self.put("cpu.weight", &shares_to_weight(s).to_string())?;
        }
        let quota = c.quota().filter(|q| *q != 0);
        let period = c.period().filter(|p| *p > 0);
        if quota.is_some() || period.is_some() {
            let q = match quota {
                Some(q) if q > 0 => q.to_string(),
                Some(_) => "max".to_string(),
                None => read(self.dir(), "cpu.max")?
                    .split_whitespace()
                    .next()
                    .unwrap_or("max")
                    .to_string(),
            };
            let v = match period {
                Some(p) => format!("{q} {p}"),
                None => q,
            };
            self.put("cpu.max", &v)?;
        }
        if let Some(b) = c.burst() {
            self.put("cpu.max.burst", &b.to_string())?;
        }
        if let Some(i) = c.idle() {
            self.put("cpu.idle", &i.to_string())?;
        }
        if c.realtime_runtime().is_some_and(|r| r != 0)
            || c.realtime_period().is_some_and(|p| p != 0)
        {
            return Err(CgroupError::Unsupported(
                "cpu.realtimeRuntime/realtimePeriod: not in cgroup v2".into(),
            ));
        }
        if let Some(cpus) = c.cpus().as_deref().filter(|s| !s.is_empty()) {
            self.put("cpuset.cpus", cpus)?;
        }
        if let Some(mems) = c.mems().as_deref().filter(|s| !s.is_empty()) {
            self.put("cpuset.mems", mems)?;
        }
        Ok(())
    }

    fn apply_io(&self, b: &oci_spec::runtime::LinuxBlockIo) -> Result<()> {
        let bfq = self.dir().join("io.bfq.weight").exists();
        if let Some(w) = b.weight() {
            if bfq {
                self.put("io.bfq.weight", &w.to_string())?;
            } else {
                self.put(
                    "io.weight",
                    &format!("default {}", blkio_weight_to_io(w.into())),
                )?;
            }
        }
        for wd in b.weight_device().as_deref().unwrap_or_default() {
            if let Some(w) = wd.weight() {
                let (file, w) = if bfq {
                    ("io.bfq.weight", w as u64)
                } else {
                    ("io.weight", blkio_weight_to_io(w.into()))
                };
                self.put(file, &format!("{}:{} {w}", wd.major(), wd.minor()))?;
            }
        }
        for (key, list) in [
            ("rbps", b.throttle_read_bps_device()),
            ("wbps", b.throttle_write_bps_device()),
            ("riops", b.throttle_read_iops_device()),
            ("wiops", b.throttle_write_iops_device()),
        ] {
            for t in list.as_deref().unwrap_or_default() {
                let rate = if t.rate() == 0 {
                    "max".to_string()
                } else {
                    t.rate().to_string()
                };
                self.put(
                    "io.max",
                    &format!("{}:{} {key}={rate}", t.major(), t.minor()),
                )?;
            }
        }
        Ok(())
    }
}

/// Enables every controller the runtime's cgroup (or, for an absolute path, the root) has
/// in `cgroup.subtree_control` of each cgroup from there down to the leaf's parent, so the
/// leaf gets the controllers' files.
fn enable_controllers(mount: &Path, own: &Path, leaf: &Path, absolute: bool) -> Result<()> {
    let start = if absolute {
        mount.to_path_buf()
    } else {
        mount.join(own.strip_prefix("/").unwrap_or(own))
    };
    let start = if leaf.starts_with(&start) {
        start
    } else {
        mount.to_path_buf()
    };
    let available = read(&start, "cgroup.controllers")?;
    let wanted: Vec<&str> = available.split_whitespace().collect();
    if wanted.is_empty() {
        return Ok(());
    }
    let all = wanted
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut dir = start.clone();
    let parent = leaf.parent().unwrap_or(leaf);
    let rest: Vec<_> = parent
        .strip_prefix(&start)
        .unwrap_or(Path::new(""))
        .components()
        .collect();
    for i in 0..=rest.len() {
        if i > 0 {
            dir.push(rest[i - 1]);
        }
        if write(&dir, "cgroup.subtree_control", &all).is_err() {
            // One at a time, so one controller that cannot be enabled here (a process in
            // a non-root cgroup blocks domain controllers) does not cost the others.
            for c in &wanted {
                let _ = write(&dir, "cgroup.subtree_control", &format!("+{c}"));
            }
        }
    }
    Ok(())
}

impl Manager for V2 {
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
            let v = if p.limit() > 0 {
                p.limit().to_string()
            } else {
                "max".into()
            };
            self.put("pids.max", &v)?;
        }
        if let Some(b) = res.block_io() {
            self.apply_io(b)?;
        }
        for h in res.hugepage_limits().as_deref().unwrap_or_default() {
            self.put(
                &format!("hugetlb.{}.max", h.page_size()),
                &h.limit().to_string(),
            )?;
        }
        if let Some(n) = res.network() {
            if n.class_id().is_some() || n.priorities().as_ref().is_some_and(|p| !p.is_empty()) {
                return Err(CgroupError::Unsupported(
                    "linux.resources.network: net_cls/net_prio are cgroup v1 only".into(),
                ));
            }
        }
        if let Some(rules) = res.devices().as_deref().filter(|r| !r.is_empty()) {
            super::devices_bpf::apply(self.dir(), &device_rules(Some(rules)))?;
        }
        if let Some(u) = res.unified().as_ref() {
            for (k, v) in u {
                if k.contains('/')
                    || k.starts_with("cgroup.")
                        && k != "cgroup.max.depth"
                        && k != "cgroup.max.descendants"
                {
                    return Err(CgroupError::Invalid(format!("unified key {k:?}")));
                }
                self.put(k, v)?;
            }
        }
        Ok(())
    }

    fn placement(&self) -> Result<Placement> {
        let mut p = Placement::default();
        p.open_cgroup2(self.dir())?;
        Ok(p)
    }

    fn freeze(&self) -> Result<()> {
        write(self.dir(), "cgroup.freeze", "1")?;
        wait_until("cgroup.freeze", || self.is_frozen())
    }

    fn thaw(&self) -> Result<()> {
        write(self.dir(), "cgroup.freeze", "0")?;
        wait_until("cgroup thaw", || Ok(!self.is_frozen()?))
    }

    fn is_frozen(&self) -> Result<bool> {
        Ok(read_keyed(self.dir(), "cgroup.events").get("frozen") == Some(&1))
    }

    fn pids(&self) -> Result<Vec<i32>> {
        let mut out = Vec::new();
        procs_recursive(self.dir(), &mut out)?;
        out.sort_unstable();
        Ok(out)
    }

    fn kill_all(&self, sig: Signal) -> Result<()> {
        if sig == Signal::SIGKILL && self.dir().join("cgroup.kill").exists() {
            return write(self.dir(), "cgroup.kill", "1");
        }
        // Frozen, nothing can fork between our listing and our kill; SIGKILLed processes
        // of a frozen cgroup die only once thawed, so a SIGKILL always ends thawed.
        let freeze = sig == Signal::SIGKILL;
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
        Ok(read_keyed(self.dir(), "memory.events")
            .get("oom_kill")
            .copied()
            .unwrap_or(0))
    }

    fn stats(&self) -> Result<Stats> {
        let d = self.dir();
        let cpu = read_keyed(d, "cpu.stat");
        let g = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0);
        let mem = read_keyed(d, "memory.stat");
        let events = read_keyed(d, "memory.events");
        let limit = |f: &str| {
            read_u64(d, f)
                .map(|v| if v == u64::MAX { 0 } else { v })
                .unwrap_or(0)
        };
        let mut blkio = BlkioStats::default();
        for line in read(d, "io.stat").unwrap_or_default().lines() {
            let mut f = line.split_whitespace();
            let Some((maj, min)) = f.next().and_then(|x| x.split_once(':')) else {
                continue;
            };
            let (Ok(major), Ok(minor)) = (maj.parse::<u64>(), min.parse::<u64>()) else {
                continue;
            };
            for kv in f {
                let Some((k, v)) = kv.split_once('=') else {
                    continue;
                };
                let Ok(value) = v.parse::<u64>() else {
                    continue;
                };
                let e = |op: &str| BlkioEntry {
                    major,
                    minor,
                    op: op.into(),
                    value,
                };
                match k {
                    "rbytes" => blkio.io_service_bytes_recursive.push(e("Read")),
                    "wbytes" => blkio.io_service_bytes_recursive.push(e("Write")),
                    "rios" => blkio.io_serviced_recursive.push(e("Read")),
                    "wios" => blkio.io_serviced_recursive.push(e("Write")),
                    _ => {}
                }
            }
        }
        let mut hugetlb = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(d) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(size) = name
                    .strip_prefix("hugetlb.")
                    .and_then(|n| n.strip_suffix(".current"))
                {
                    let ev = read_keyed(d, &format!("hugetlb.{size}.events"));
                    hugetlb.insert(
                        size.to_string(),
                        HugetlbStats {
                            usage: read_u64(d, &name).unwrap_or(0),
                            max_usage: 0,
                            failcnt: g(&ev, "max"),
                        },
                    );
                }
            }
        }
        Ok(Stats {
            cpu: CpuStats {
                usage: CpuUsage {
                    total: g(&cpu, "usage_usec") * 1000,
                    percpu_usage: Vec::new(),
                    usage_in_kernelmode: g(&cpu, "system_usec") * 1000,
                    usage_in_usermode: g(&cpu, "user_usec") * 1000,
                },
                throttling: Throttling {
                    periods: g(&cpu, "nr_periods"),
                    throttled_periods: g(&cpu, "nr_throttled"),
                    throttled_time: g(&cpu, "throttled_usec") * 1000,
                },
            },
            memory: MemoryStats {
                cache: g(&mem, "file"),
                usage: MemoryEntry {
                    usage: read_u64(d, "memory.current").unwrap_or(0),
                    max_usage: read_u64(d, "memory.peak").unwrap_or(0),
                    failcnt: g(&events, "max"),
                    limit: limit("memory.max"),
                },
                swap_usage: MemoryEntry {
                    usage: read_u64(d, "memory.swap.current").unwrap_or(0),
                    limit: limit("memory.swap.max"),
                    ..Default::default()
                },
                kernel_usage: None,
                oom_kill: g(&events, "oom_kill"),
                oom: Some(g(&events, "oom")),
                under_oom: None,
                stats: mem,
            },
            pids: PidsStats {
                current: read_u64(d, "pids.current").unwrap_or(0),
                limit: limit("pids.max"),
            },
            blkio,
            hugetlb,
        })
    }

    fn destroy(&self) -> Result<()> {
        remove_dirs(&[self.dir()], &self.rec.created)
    }
}
