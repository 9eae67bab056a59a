//! The kubelet's AtomicWriter layout for ConfigMap, Secret, downward API and projected
//! volumes: the files live in a timestamped directory `..<time>`, a `..data` symlink
//! names the current one, and each top-level name the user sees is a symlink through
//! `..data`. An update writes a new timestamped directory and swaps `..data` with one
//! rename, so a reader in the container sees the old files or the new ones, never a mix.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path};

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// One file of a payload: its bytes and mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path → file.
pub type Payload = BTreeMap<String, File>;

/// Is `p` a path a payload may hold: relative, no `..` element, not starting with `..`
/// (the names the writer itself uses)?
pub fn valid_path(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with("..")
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

fn current(dir: &Path) -> Option<Payload> {
    let target = std::fs::read_link(dir.join(DATA)).ok()?;
    let base = dir.join(target);
    let mut out = Payload::new();
    let mut stack = vec![base.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).ok()?;
            if md.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(&base).ok()?.to_string_lossy().into_owned();
                let data = std::fs::read(&p).ok()?;
                out.insert(
                    rel,
                    File {
                        data,
                        mode: md.permissions().mode() & 0o7777,
                    },
                );
            }
        }
    }
    Some(out)
}

fn top_level(p: &str) -> &str {
    p.split('/').next().unwrap_or(p)
}

/// Writes `payload` into `dir` (which exists); does nothing when it is already there.
/// `true` when the files changed.
pub fn write(dir: &Path, payload: &Payload) -> std::io::Result<bool> {
    for p in payload.keys() {
        if !valid_path(p) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("invalid path {p:?}: must be relative and may not contain '..'"),
            ));
        }
    }
    let old_target = std::fs::read_link(dir.join(DATA)).ok();
    if old_target.is_some() && current(dir).as_ref() == Some(payload) {
        return Ok(false);
    }
    let now = chrono::Utc::now();
    let ts = format!(
        "..{}.{}",
        now.format("%Y_%m_%d_%H_%M_%S"),
        now.timestamp_subsec_nanos()
    );
    let ts_dir = dir.join(&ts);
    std::fs::create_dir(&ts_dir)?;
    std::fs::set_permissions(&ts_dir, std::fs::Permissions::from_mode(0o755))?;
    for (p, f) in payload {
        let path = ts_dir.join(p);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let mut fh = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        fh.write_all(&f.data)?;
        // Set after writing: the requested mode may not let the owner write.
        fh.set_permissions(std::fs::Permissions::from_mode(f.mode))?;
    }
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts, &tmp)?;
    // The one step readers can observe.
    std::fs::rename(&tmp, dir.join(DATA))?;
    let wanted: std::collections::BTreeSet<&str> = payload.keys().map(|p| top_level(p)).collect();
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA).join(name), &link)?;
        }
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !wanted.contains(name.as_str()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old_target {
        if old.as_os_str() != ts.as_str() {
            let _ = std::fs::remove_dir_all(dir.join(old));
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let f = |d: &[u8], mode| File {
            data: d.to_vec(),
            mode,
        };
        let mut p: Payload = [
            ("a".to_string(), f(b"one", 0o644)),
            ("sub/b".to_string(), f(b"\x00\xff", 0o400)),
        ]
        .into();
        assert!(write(dir.path(), &p).unwrap());
        assert!(!write(dir.path(), &p).unwrap());
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"one");
        assert_eq!(
            std::fs::read(dir.path().join("sub/b")).unwrap(),
            b"\x00\xff"
        );
        assert_eq!(
            std::fs::read_link(dir.path().join("a")).unwrap(),
            Path::new("..data/a")
        );
        let md = std::fs::metadata(dir.path().join("sub/b")).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o400);
        let first = std::fs::read_link(dir.path().join(DATA)).unwrap();
        p.remove("sub/b");
        p.insert("a".into(), f(b"two", 0o644));
        assert!(write(dir.path(), &p).unwrap());
        assert_eq!(std::fs::read(dir.path().join("a")).unwrap(), b"two");
        assert!(std::fs::symlink_metadata(dir.path().join("sub")).is_err());
        assert!(!dir.path().join(first).exists());
        for bad in ["../x", "/x", "..x", "a/../b", ""] {
            assert!(!valid_path(bad), "{bad}");
            let p: Payload = [(bad.to_string(), f(b"", 0o644))].into();
            assert!(write(dir.path(), &p).is_err(), "{bad}");
        }
    }
}
