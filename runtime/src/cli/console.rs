//! The console socket of a foreground terminal container that rrun relays itself.

use anyhow::{Context, Result};
use std::path::PathBuf;

/// The console socket of a foreground terminal that we relay ourselves, in a private
/// directory that goes when this is dropped, whether the container started or not.
pub(crate) struct ConsoleProxy {
    pub(crate) dir: PathBuf,
    pub(crate) path: PathBuf,
    pub(crate) listener: std::os::unix::net::UnixListener,
}

impl ConsoleProxy {
    pub(crate) fn new() -> Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("rrun-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let proxy = |listener| ConsoleProxy {
            path: dir.join("console.sock"),
            dir: dir.clone(),
            listener,
        };
        match rrun::pty::console_pair(&dir) {
            Ok((_, listener)) => Ok(proxy(listener)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e.into())
            }
        }
    }

    /// The pty master, once the container's process has sent it.
    pub(crate) fn receive(self) -> Result<std::os::fd::OwnedFd> {
        Ok(rrun::pty::receive_master(&self.listener)?)
    }
}

impl Drop for ConsoleProxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
