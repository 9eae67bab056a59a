//! The CNI conf dir watched with inotify (the `notify` crate), so that a config written,
//! changed or removed after start-up changes NetworkReady without a restart, as
//! containerd's conf syncer does. Every event reloads the whole dir: loading is cheap and
//! a reload cannot go wrong by missing which file changed.

use std::path::Path;

use notify::{RecursiveMode, Watcher as _};

pub struct Watcher {
    // Held for its drop: dropping it stops the watch, which ends the reload thread.
    _inner: notify::RecommendedWatcher,
}

impl Watcher {
    /// Calls `reload` (on a thread of its own) after every change in `dir`.
    pub fn start(dir: &Path, reload: impl Fn() + Send + 'static) -> notify::Result<Watcher> {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let mut inner =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                // Access events (a reader opening a file) change nothing.
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.send(());
                }
            })?;
        inner.watch(dir, RecursiveMode::NonRecursive)?;
        std::thread::Builder::new()
            .name("cni-conf-watch".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    // One reload for a burst of events (a write is several).
                    while rx.try_recv().is_ok() {}
                    reload();
                }
            })
            .map_err(|e| notify::Error::generic(&e.to_string()))?;
        Ok(Watcher { _inner: inner })
    }
}
