//! Replacing a file so that a reader, or the next start after a crash, sees either the old
//! content or the whole new one: every state file of rrun and of the CRI server is written
//! through here.

use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Whether a write must survive a crash of the machine, or only a crash of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The file and the directory entry are fsynced: records that outlive a reboot (the
    /// CRI server's, under `/var/lib`).
    Synced,
    /// No fsync: state that a reboot makes moot anyway (the runtime's under `/run`, pid
    /// files), written on every container's start path, where an fsync costs milliseconds.
    Volatile,
}

/// Writes `data` to a new file beside `path` (mode `mode`) and renames it over `path`,
/// fsyncing the file and the directory when `durability` asks for it. The temporary name
/// is unique per process and call, so concurrent writers of one path never share a
/// temporary file: the last rename wins.
pub fn write(path: &Path, data: &[u8], mode: u32, durability: Durability) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut name = std::ffi::OsString::from(".");
    name.push(path.file_name().unwrap_or_default());
    name.push(format!(
        ".tmp-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = dir.join(name);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        if durability == Durability::Synced {
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        if durability == Durability::Synced {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_files_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write(&p, b"first", 0o600, Durability::Synced).unwrap();
        write(&p, b"second", 0o644, Durability::Volatile).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"second");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn concurrent_writers_of_one_path_never_mix() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..50 {
                        write(p, &[i; 4096], 0o600, Durability::Volatile).unwrap();
                    }
                });
            }
        });
        let data = std::fs::read(&p).unwrap();
        assert_eq!(data.len(), 4096);
        assert!(data.iter().all(|b| *b == data[0]));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_missing_directory_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("no/such/f");
        assert!(write(&p, b"x", 0o600, Durability::Synced).is_err());
    }
}
