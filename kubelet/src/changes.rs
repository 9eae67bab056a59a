//! The change signal the API's watches sleep on: an epoch that moves whenever something the
//! API serves may have changed (the agent's state through [`Guard`], the controllers' view at
//! the end of a pass that changed it, the API's stored objects after a write or a
//! collector's pass). A watch reads the epoch, recomputes its list, and sleeps until the
//! epoch is past what it read: a change during the recompute wakes it again, none is lost,
//! and a burst of changes is one wake-up.

use std::ops::{Deref, DerefMut};
use std::sync::MutexGuard;

use tokio::sync::watch;

pub struct Changes {
    epoch: watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        Changes {
            epoch: watch::channel(0).0,
        }
    }
}

impl Changes {
    /// Something served changed.
    #[track_caller]
    pub fn mark(&self) {
        self.mark_at(std::panic::Location::caller());
    }

    /// The writer's place is logged (trace) to find what wakes the watches of an idle node.
    fn mark_at(&self, at: &std::panic::Location<'_>) {
        self.epoch.send_modify(|e| *e += 1);
        tracing::trace!(epoch = *self.epoch.borrow(), %at, "changed");
    }

    /// A receiver whose current epoch counts as seen: subscribe, then read the state, then
    /// wait on `changed()`.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.epoch.subscribe()
    }
}

/// A lock of the agent's state that marks a change when it is dropped after a mutable
/// access, so every writer is caught without a call at each site. Reads do not mark; a
/// periodic pass should test before it writes (`if x != new { x = new }`), or idle watches
/// recompute on every pass.
pub struct Guard<'a, T> {
    inner: MutexGuard<'a, T>,
    changes: &'a Changes,
    /// Where the first mutable access was.
    dirty: Option<&'static std::panic::Location<'static>>,
}

impl<'a, T> Guard<'a, T> {
    pub fn new(inner: MutexGuard<'a, T>, changes: &'a Changes) -> Self {
        Guard {
            inner,
            changes,
            dirty: None,
        }
    }
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> DerefMut for Guard<'_, T> {
    #[track_caller]
    fn deref_mut(&mut self) -> &mut T {
        if self.dirty.is_none() {
            self.dirty = Some(std::panic::Location::caller());
        }
        &mut self.inner
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        if let Some(at) = self.dirty {
            self.changes.mark_at(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn marks_on_mutable_access_only() {
        let c = Changes::default();
        let m = Mutex::new(vec![1]);
        let mut rx = c.subscribe();
        {
            let g = Guard::new(m.lock().unwrap(), &c);
            assert_eq!(g.len(), 1);
        }
        assert!(!rx.has_changed().unwrap());
        {
            let mut g = Guard::new(m.lock().unwrap(), &c);
            g.push(2);
            g.push(3);
        }
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 1);
    }
}
