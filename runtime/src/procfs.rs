//! What rrun reads from `/proc`: the mount table, a process's cgroups and a process's
//! `stat` line. One parser each, so that every caller gets the same answer for the same
//! tricky input (octal escapes in mount points, spaces and parentheses in command names).

use std::io;
use std::path::PathBuf;

/// One line of `/proc/<pid>/mountinfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct MountInfo {
    /// The path inside the filesystem that is mounted (field 4; not `/` for a bind mount
    /// of a subtree, or a cgroup hierarchy seen from a cgroup namespace).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
    /// A member of a shared peer group (`shared:N` among the optional fields).
    pub shared: bool,
}

/// This process's mount table, in the kernel's order (later mounts after earlier ones).
pub fn mountinfo() -> io::Result<Vec<MountInfo>> {
    Ok(parse_mountinfo(&std::fs::read_to_string(
        "/proc/self/mountinfo",
    )?))
}

/// Parses mountinfo text: `id parent maj:min root mount-point opts [optional...] - fstype
/// source super-opts`. Lines that do not have that shape are left out.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            Some(MountInfo {
                root: PathBuf::from(unescape_octal(left.get(3)?)),
                mount_point: PathBuf::from(unescape_octal(left.get(4)?)),
                shared: left.iter().skip(6).any(|f| f.starts_with("shared:")),
                fstype: right.next()?.to_string(),
                source: unescape_octal(right.next().unwrap_or_default()),
                super_options: right.next().unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// The kernel escapes space, tab, newline and backslash in mountinfo paths as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            if let Ok(byte) = u8::try_from(v) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One line of `/proc/<pid>/cgroup`: the hierarchy's controllers (v1: `cpu,cpuacct`,
/// `name=systemd`; v2: empty) and the cgroup's path in it.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupEntry {
    pub controllers: String,
    pub path: PathBuf,
}

/// This process's cgroups.
pub fn self_cgroups() -> io::Result<Vec<CgroupEntry>> {
    Ok(parse_cgroups(&std::fs::read_to_string(
        "/proc/self/cgroup",
    )?))
}

/// Parses `/proc/<pid>/cgroup` text (`id:controllers:path`; the path may hold colons).
pub fn parse_cgroups(text: &str) -> Vec<CgroupEntry> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let _id = it.next()?;
            let controllers = it.next()?.to_string();
            let path = PathBuf::from(it.next()?);
            Some(CgroupEntry { controllers, path })
        })
        .collect()
}

/// How many threads this process has (`Threads:` of `/proc/self/status`).
pub fn thread_count() -> io::Result<u32> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no Threads: line"))
}

/// The fields of `/proc/<pid>/stat` that rrun uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// `R`, `S`, `D`, `Z`, `X`, ...
    pub state: char,
    pub ppid: i32,
    /// Clock ticks after boot: with the pid, it names one process for its whole life.
    pub start_time: u64,
}

/// A process's stat line; `None` once it is gone.
pub fn stat(pid: i32) -> Option<Stat> {
    if pid <= 0 {
        return None;
    }
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses a stat line. The command name (field 2) may hold spaces and parentheses, so the
/// fields are counted after its last `)`.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = text.get(text.rfind(')')? + 1..)?;
    let mut fields = rest.split_ascii_whitespace();
    // `rest` starts at field 3 (state); ppid is field 4, start time field 22.
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let start_time = fields.nth(17)?.parse().ok()?;
    Some(Stat {
        state,
        ppid,
        start_time,
    })
}

/// The start time of a live process that is not a zombie: with the pid, the identity of a
/// process that cannot be confused with a later one reusing the pid.
pub fn process_start_time(pid: i32) -> Option<u64> {
    stat(pid)
        .filter(|s| s.state != 'Z' && s.state != 'X')
        .map(|s| s.start_time)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn mountinfo_lines_parse_with_optional_fields_and_escapes() {
        let text = "36 35 98:0 /mnt1 /mnt\\040x rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue\n\
                    40 1 0:33 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let m = parse_mountinfo(text);
        assert_eq!(m[0].mount_point, Path::new("/mnt x"));
        assert_eq!(m[0].root, Path::new("/mnt1"));
        assert!(m[0].shared);
        assert_eq!(m[0].source, "/dev/root");
        assert_eq!(m[1].fstype, "cgroup");
        assert_eq!(m[1].super_options, "rw,memory");
        assert!(!m[1].shared);
    }

    #[test]
    fn mountinfo_escapes_of_tab_newline_and_backslash() {
        let text = "1 0 0:1 / /a\\011b\\012c\\134d rw - tmpfs t\\040x rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m[0].mount_point, Path::new("/a\tb\nc\\d"));
        assert_eq!(m[0].source, "t x");
    }

    #[test]
    fn mountinfo_leaves_odd_escapes_and_lines_alone() {
        // Not octal, cut short at the end, or above a byte: kept as written.
        let text =
            "1 0 0:1 / /a\\9bc\\04 rw - tmpfs t rw\n2 0 0:1 / /x\\777 rw - tmpfs t rw\ngarbage\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mount_point, Path::new("/a\\9bc\\04"));
        assert_eq!(m[1].mount_point, Path::new("/x\\777"));
    }

    #[test]
    fn cgroup_lines_parse_with_colons_in_paths() {
        let v = parse_cgroups("4:memory:/a/b\n1:cpu,cpuacct:/\n0::/x:y\nbad\n");
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].controllers, "memory");
        assert_eq!(v[0].path, Path::new("/a/b"));
        assert_eq!(v[2].controllers, "");
        assert_eq!(v[2].path, Path::new("/x:y"));
    }

    #[test]
    fn stat_lines_with_spaces_and_parentheses_in_the_name() {
        let line = "42 (a) b (c)) S 7 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 12345 1000 10";
        let s = parse_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 7);
        assert_eq!(s.start_time, 12345);
        assert!(parse_stat("42 (x) S 1").is_none());
        assert!(parse_stat("").is_none());
    }

    #[test]
    fn threads_are_counted() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || rx.recv());
        // This thread and the one waiting, at least (the test harness may run others).
        assert!(thread_count().unwrap() >= 2);
        drop(tx);
        let _ = t.join();
    }

    #[test]
    fn this_process_has_a_start_time() {
        let me = std::process::id() as i32;
        assert!(process_start_time(me).is_some());
        assert_eq!(
            stat(me).map(|s| s.ppid),
            Some(nix::unistd::getppid().as_raw())
        );
        assert!(process_start_time(i32::MAX).is_none());
        assert!(process_start_time(0).is_none());
    }
}
