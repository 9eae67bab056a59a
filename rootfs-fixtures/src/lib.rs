//! Test fixtures for rrun: an OCI bundle made of a busybox root filesystem (from Debian's
//! `busybox-static`) and a runc-like default `config.json`.
//!
//! ```no_run
//! let dir = std::path::Path::new("/tmp/mybundle");
//! let mut bundle = rootfs_fixtures::Bundle::busybox(dir)?;
//! bundle.set_args(["sh", "-c", "echo hello"]);
//! bundle.config_mut()["hostname"] = "box".into();
//! bundle.save()?;
//! # anyhow::Ok(())
//! ```
//!
//! Nothing here depends on the runtime: the config is plain [`serde_json::Value`], so
//! tests can also write configs the runtime must reject.

pub mod image;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// Where Debian's `busybox-static` puts its binary (`/bin` is a symlink to `/usr/bin` on
/// merged-/usr systems, but not everywhere).
pub const BUSYBOX_CANDIDATES: &[&str] = &["/usr/bin/busybox", "/bin/busybox"];

/// Users in the fixture's `/etc/passwd`: `root` (0), `app` (1000:1000, also in group
/// `extra` 2000) and `nobody` (65534).
pub const APP_UID: u32 = 1000;
/// Primary group of `app`.
pub const APP_GID: u32 = 1000;
/// Supplementary group of `app`, named `extra`.
pub const EXTRA_GID: u32 = 2000;
/// The overflow user and group.
pub const NOBODY: u32 = 65534;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
app:x:1000:1000:app:/home/app:/bin/sh\n\
nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";

const GROUP: &str = "root:x:0:\n\
tty:x:5:\n\
app:x:1000:\n\
extra:x:2000:app\n\
nogroup:x:65534:\n";

/// Is the ELF file at `path` statically linked (no `PT_INTERP` program header)?
pub fn is_static_elf(path: &Path) -> Result<bool> {
    let mut data = Vec::new();
    fs::File::open(path)
        .with_context(|| format!("opening {}", path.display()))?
        .read_to_end(&mut data)
        .with_context(|| format!("reading {}", path.display()))?;
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        bail!("{} is not an ELF file", path.display());
    }
    let class64 = match data[4] {
        1 => false,
        2 => true,
        c => bail!("{}: unknown ELF class {c}", path.display()),
    };
    let le = match data[5] {
        1 => true,
        2 => false,
        d => bail!("{}: unknown ELF data encoding {d}", path.display()),
    };
    let rd = |off: usize, len: usize| -> Result<u64> {
        let b = data
            .get(off..off + len)
            .with_context(|| format!("{}: truncated ELF file", path.display()))?;
        let mut v = 0u64;
        for i in 0..len {
            let byte = if le { b[len - 1 - i] } else { b[i] };
            v = (v << 8) | u64::from(byte);
        }
        Ok(v)
    };
    let (phoff, phentsize, phnum) = if class64 {
        (rd(0x20, 8)?, rd(0x36, 2)?, rd(0x38, 2)?)
    } else {
        (rd(0x1c, 4)?, rd(0x2a, 2)?, rd(0x2c, 2)?)
    };
    for i in 0..phnum {
        let off = usize::try_from(phoff + i * phentsize)?;
        const PT_INTERP: u64 = 3;
        if rd(off, 4)? == PT_INTERP {
            return Ok(false);
        }
    }
    Ok(true)
}

fn find_static_busybox() -> Option<PathBuf> {
    BUSYBOX_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file() && is_static_elf(p).unwrap_or(false))
}

static INSTALL_LOCK: Mutex<()> = Mutex::new(());

/// The path of a statically linked busybox on the host. If there is none, installs
/// Debian's `busybox-static` with `apt-get` (needs root), and fails with a clear error
/// if that is not possible.
pub fn static_busybox() -> Result<PathBuf> {
    if let Some(p) = find_static_busybox() {
        return Ok(p);
    }
    let _guard = INSTALL_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = find_static_busybox() {
        return Ok(p);
    }
    let status = Command::new("apt-get")
        .args(["install", "-y", "busybox-static"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => bail!(
            "no static busybox at {BUSYBOX_CANDIDATES:?} and `apt-get install -y busybox-static` \
             failed ({s}); install Debian's busybox-static package (as root)"
        ),
        Err(e) => bail!(
            "no static busybox at {BUSYBOX_CANDIDATES:?} and apt-get could not be run ({e}); \
             install Debian's busybox-static package"
        ),
    }
    find_static_busybox().with_context(|| {
        format!("busybox-static was installed but no static busybox is at {BUSYBOX_CANDIDATES:?}")
    })
}

/// The applet names of `busybox` (`busybox --list`), cached per process.
fn applets(busybox: &Path) -> Result<Vec<String>> {
    static CACHE: Mutex<Option<Vec<String>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(list) = cache.as_ref() {
        return Ok(list.clone());
    }
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .with_context(|| format!("running {} --list", busybox.display()))?;
    if !out.status.success() {
        bail!("{} --list failed: {}", busybox.display(), out.status);
    }
    let list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "busybox" && !l.contains('/'))
        .map(String::from)
        .collect();
    if list.is_empty() {
        bail!("{} --list printed no applets", busybox.display());
    }
    *cache = Some(list.clone());
    Ok(list)
}

fn mkdir_mode(path: &Path, mode: u32) -> Result<()> {
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(())
}

/// Lays out a busybox root filesystem at `rootfs` (created if missing): `/bin/busybox`
/// plus a symlink per applet in `/bin`, the usual top-level directories, and
/// `/etc/passwd` and `/etc/group` (see [`APP_UID`], [`EXTRA_GID`], [`NOBODY`]).
pub fn layout_busybox_rootfs(rootfs: &Path) -> Result<()> {
    let busybox = static_busybox()?;
    mkdir_mode(rootfs, 0o755)?;
    for d in [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "proc", "sys", "dev", "etc", "var", "run",
        "mnt", "home", "home/app",
    ] {
        mkdir_mode(&rootfs.join(d), 0o755)?;
    }
    mkdir_mode(&rootfs.join("tmp"), 0o1777)?;
    mkdir_mode(&rootfs.join("var/tmp"), 0o1777)?;
    mkdir_mode(&rootfs.join("root"), 0o700)?;

    let dst = rootfs.join("bin/busybox");
    fs::copy(&busybox, &dst)
        .with_context(|| format!("copying {} to {}", busybox.display(), dst.display()))?;
    fs::set_permissions(&dst, fs::Permissions::from_mode(0o755))?;
    for applet in applets(&busybox)? {
        let link = rootfs.join("bin").join(&applet);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        symlink("busybox", &link).with_context(|| format!("symlink {}", link.display()))?;
    }

    let etc = rootfs.join("etc");
    fs::write(etc.join("passwd"), PASSWD)?;
    fs::write(etc.join("group"), GROUP)?;
    fs::write(etc.join("hosts"), "127.0.0.1\tlocalhost\n::1\tlocalhost\n")?;
    fs::write(etc.join("resolv.conf"), "")?;
    Ok(())
}

/// The default `config.json`: what `runc spec` writes (runtime-spec defaults for a
/// non-privileged container), except `process.terminal` is `false`.
pub fn default_spec() -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.2.0",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "ambient": caps
            },
            "rlimits": [
                { "type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024 }
            ],
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": true },
        "hostname": "runc",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            {
                "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]
            },
            {
                "destination": "/dev/pts", "type": "devpts", "source": "devpts",
                "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
            },
            {
                "destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
            },
            {
                "destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"]
            },
            {
                "destination": "/sys", "type": "sysfs", "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"]
            },
            {
                "destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]
            }
        ],
        "linux": {
            "resources": {
                "devices": [ { "allow": false, "access": "rwm" } ]
            },
            "namespaces": [
                { "type": "pid" },
                { "type": "network" },
                { "type": "ipc" },
                { "type": "uts" },
                { "type": "mount" }
            ],
            "maskedPaths": [
                "/proc/acpi",
                "/proc/asound",
                "/proc/kcore",
                "/proc/keys",
                "/proc/latency_stats",
                "/proc/timer_list",
                "/proc/timer_stats",
                "/proc/sched_debug",
                "/sys/firmware",
                "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus",
                "/proc/fs",
                "/proc/irq",
                "/proc/sys",
                "/proc/sysrq-trigger"
            ]
        }
    })
}

/// An OCI bundle directory: `config.json` plus a `rootfs/`.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
    config: Value,
}

impl Bundle {
    /// Makes a bundle in `dir` (created if missing) with a busybox rootfs and the
    /// [`default_spec`], and writes its `config.json`.
    pub fn busybox(dir: &Path) -> Result<Bundle> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let dir = dir
            .canonicalize()
            .with_context(|| format!("resolving {}", dir.display()))?;
        layout_busybox_rootfs(&dir.join("rootfs"))?;
        let bundle = Bundle {
            dir,
            config: default_spec(),
        };
        bundle.save()?;
        Ok(bundle)
    }

    /// The bundle directory (absolute).
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The root filesystem directory.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// The `config.json` path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The configuration (as last set; [`Bundle::save`] writes it).
    pub fn config(&self) -> &Value {
        &self.config
    }

    /// The configuration to edit; call [`Bundle::save`] afterwards.
    pub fn config_mut(&mut self) -> &mut Value {
        &mut self.config
    }

    /// Sets `process.args`.
    pub fn set_args<I, S>(&mut self, args: I) -> &mut Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let args: Vec<Value> = args.into_iter().map(|a| a.as_ref().into()).collect();
        self.config["process"]["args"] = Value::Array(args);
        self
    }

    /// Writes `config.json`.
    pub fn save(&self) -> Result<()> {
        let path = self.config_path();
        let text = serde_json::to_string_pretty(&self.config)?;
        fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elf_static_check() {
        let bb = static_busybox().unwrap();
        assert!(is_static_elf(&bb).unwrap());
        assert!(!is_static_elf(Path::new("/bin/ls")).unwrap());
        assert!(is_static_elf(Path::new("/etc/passwd")).is_err());
    }

    #[test]
    fn default_spec_shape() {
        let s = default_spec();
        assert_eq!(s["process"]["terminal"], false);
        assert_eq!(s["process"]["args"], json!(["sh"]));
        assert_eq!(s["root"]["path"], "rootfs");
        assert_eq!(s["linux"]["namespaces"].as_array().unwrap().len(), 5);
    }
}
