//! `hostPath` volumes: the type checks the kubelet makes before a container mounts a path
//! of the node (and the `...OrCreate` types' creation). The agent never removes a hostPath.

use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Checks (or creates) `path` for hostPath type `type_`; the kubelet's messages.
pub fn check(path: &Path, type_: &str) -> Result<(), String> {
    let shown = path.display();
    let failed = |what: &str| Err(format!("hostPath type check failed: {shown} is not {what}"));
    let md = std::fs::metadata(path);
    match type_ {
        "" => Ok(()),
        "DirectoryOrCreate" => match md {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => failed("a directory"),
            Err(_) => {
                std::fs::create_dir_all(path).map_err(|e| format!("creating {shown}: {e}"))?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
                    .map_err(|e| format!("{shown}: {e}"))
            }
        },
        "Directory" => match md {
            Ok(m) if m.is_dir() => Ok(()),
            _ => failed("a directory"),
        },
        // The parent is not created, as with the kubelet.
        "FileOrCreate" => match md {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => failed("a file"),
            Err(_) => std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                .open(path)
                .map(|_| ())
                .map_err(|e| format!("creating {shown}: {e}")),
        },
        "File" => match md {
            Ok(m) if m.is_file() => Ok(()),
            _ => failed("a file"),
        },
        "Socket" => match md {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => failed("a socket file"),
        },
        "CharDevice" => match md {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => failed("a character device"),
        },
        "BlockDevice" => match md {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => failed("a block device"),
        },
        other => Err(format!("hostPath: unsupported type {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert!(check(d, "Directory").is_ok());
        assert!(check(d, "File").unwrap_err().ends_with("is not a file"));
        assert!(check(&d.join("x/y"), "DirectoryOrCreate").is_ok());
        assert!(d.join("x/y").is_dir());
        assert!(check(&d.join("f"), "FileOrCreate").is_ok());
        assert!(check(&d.join("f"), "File").is_ok());
        assert!(check(&d.join("f"), "Directory").is_err());
        assert!(check(&d.join("no/f"), "FileOrCreate").is_err());
        assert!(check(Path::new("/dev/null"), "CharDevice").is_ok());
        assert!(check(Path::new("/dev/null"), "BlockDevice").is_err());
        assert!(check(&d.join("f"), "Socket").is_err());
        assert!(check(d, "Nonsense").is_err());
    }
}
