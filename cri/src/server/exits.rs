//! How the server learns that a container ended: the monitor's exit file, whether the
//! monitor and the init are alive, and the watchers that turn an exit into an event.

use super::*;

impl Cri {
    /// Reads the monitor's exit file into the record once it exists.
    pub(super) fn refresh_exit(&self, id: &str) -> Option<ExitRecord> {
        let rec = self.state().containers.get(id).cloned()?;
        if rec.exit.is_some() {
            return rec.exit;
        }
        let exit = read_exit(&rec)?;
        let mut rec = rec;
        rec.exit = Some(exit.clone());
        if let Err(e) = self.inner.store.save_container(&rec) {
            tracing::warn!("container {id}: saving its exit: {e}");
        }
        let newly = {
            let mut st = self.state();
            match st.containers.get_mut(id) {
                Some(c) if c.exit.is_none() => {
                    *c = rec.clone();
                    true
                }
                _ => false,
            }
        };
        if newly {
            self.emit(&rec, api::ContainerEventType::ContainerStoppedEvent);
        }
        Some(exit)
    }

    pub fn phase(&self, rec: &ContainerRecord) -> ContainerPhase {
        if rec.exit.is_some() || self.refresh_exit(&rec.id).is_some() {
            return ContainerPhase::Exited;
        }
        test_hook_delay("RRUN_CRI_TEST_EXIT_READ_DELAY_MS");
        match self.inner.runtime.status(&rec.id) {
            Ok(rrun::Status::Created | rrun::Status::Creating) => ContainerPhase::Created,
            Ok(rrun::Status::Running | rrun::Status::Paused) => ContainerPhase::Running,
            // The init is gone. Whether the monitor is alive is asked before the exit file
            // is read again: the monitor writes the file and then ends, so a monitor seen
            // gone has written it (or never will). Asked the other way round, a monitor
            // that writes and ends between the two looks like one that died first.
            _ => {
                let alive = monitor_alive(rec);
                if self.refresh_exit(&rec.id).is_none() && alive {
                    // Still draining the pipes before it writes the exit file.
                    ContainerPhase::Running
                } else {
                    ContainerPhase::Exited
                }
            }
        }
    }

    /// Notices the container's end as it happens (for the event stream), by polling the
    /// monitor's exit file; a stopped container's status is read on demand anyway.
    pub(super) fn watch_exit(&self, id: String) {
        let me = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let exists = me.state().containers.contains_key(&id);
                if !exists {
                    return;
                }
                let me2 = me.clone();
                let id2 = id.clone();
                let done = tokio::task::spawn_blocking(move || me2.refresh_exit(&id2).is_some())
                    .await
                    .unwrap_or(true);
                if done {
                    return;
                }
            }
        });
    }

    /// Re-arms the exit watchers after a restart.
    pub fn watch_running(&self) {
        let ids: Vec<String> = self
            .state()
            .containers
            .values()
            .filter(|c| c.exit.is_none() && c.started_at > 0)
            .map(|c| c.id.clone())
            .collect();
        for id in ids {
            self.watch_exit(id);
        }
    }

    /// Waits until the monitor has written the container's exit, at most `limit`.
    pub(super) async fn wait_exit(&self, id: &str, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let me = self.clone();
            let id2 = id.to_string();
            let done = tokio::task::spawn_blocking(move || {
                me.refresh_exit(&id2).is_some() || me.init_gone(&id2)
            })
            .await
            .unwrap_or(false);
            if done {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The runtime says stopped and the monitor is gone without an exit file (it was
    /// killed): nothing more will come.
    pub(super) fn init_gone(&self, id: &str) -> bool {
        let Some(rec) = self.state().containers.get(id).cloned() else {
            return true;
        };
        let stopped = !matches!(
            self.inner.runtime.status(id),
            Ok(s) if s != rrun::Status::Stopped
        );
        stopped && !monitor_alive(&rec)
    }
}

pub(super) fn read_exit(rec: &ContainerRecord) -> Option<ExitRecord> {
    let data = std::fs::read(monitor::exit_file(&rec.monitor_dir)).ok()?;
    let exit = monitor::protocol::ExitStatus::parse(&data).ok()?;
    let exit_code = exit.exit_code;
    let oom = exit.oom_killed;
    let finished_at = match i64::try_from(exit.finished_at_ns) {
        Ok(0) | Err(_) => crate::records::now_ns(),
        Ok(t) => t,
    };
    let reason = if oom {
        "OOMKilled"
    } else if exit_code == 0 {
        "Completed"
    } else {
        "Error"
    };
    Some(ExitRecord {
        exit_code,
        finished_at,
        reason: reason.into(),
        message: String::new(),
    })
}

pub(super) fn monitor_alive(rec: &ContainerRecord) -> bool {
    let Ok(pid) = std::fs::read_to_string(monitor::pid_file(&rec.monitor_dir)) else {
        return false;
    };
    let Ok(pid) = pid.trim().parse::<i32>() else {
        return false;
    };
    // The pid must still be a monitor of this container (pids are reused).
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains("monitor") && c.contains(&rec.id)
        })
        .unwrap_or(false)
}
