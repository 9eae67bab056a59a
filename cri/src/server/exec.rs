//! ExecSync: a command run in a container through the exec helper (no clone in the
//! server), with its output capped and its deadline kept.

use super::*;

impl Cri {
    pub async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: i64,
    ) -> Result<api::ExecSyncResponse, Error> {
        use tokio::io::AsyncReadExt;
        if cmd.is_empty() {
            return Err(Error::invalid_argument("ExecSync needs a command"));
        }
        if timeout < 0 {
            return Err(Error::invalid_argument(format!(
                "ExecSync timeout {timeout} is negative (0: no timeout)"
            )));
        }
        let rec = self.container(id)?;
        if self.phase(&rec) != ContainerPhase::Running {
            return Err(Error::failed_precondition(format!(
                "container {} is not running",
                rec.id
            )));
        }
        let process = self.exec_process(&rec, cmd)?;
        let tag = new_id()?;
        let process_file = rec.monitor_dir.join(format!("exec-{}.json", &tag[..12]));
        let status_file = rec.monitor_dir.join(format!("exec-{}.status", &tag[..12]));
        crate::records::write_json_atomic(&process_file, &process).map_err(internal)?;
        let mut child = tokio::process::Command::new(&self.inner.config.exe)
            .arg("exec-sync")
            .arg("--runtime-root")
            .arg(&self.inner.config.runtime_root)
            .arg("--id")
            .arg(&rec.id)
            .arg("--process")
            .arg(&process_file)
            .arg("--status-file")
            .arg(&status_file)
            .arg("--timeout")
            .arg(timeout.max(0).to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| internal(format!("starting the exec helper: {e}")))?;
        let mut stdout = child.stdout.take();
        let mut stderr = child.stderr.take();
        let limit = cri_proto::MAX_MESSAGE_SIZE as u64 / 2;
        let (out, err) = tokio::join!(
            async {
                let mut v = Vec::new();
                if let Some(s) = stdout.as_mut() {
                    let _ = s.take(limit).read_to_end(&mut v).await;
                }
                v
            },
            async {
                let mut v = Vec::new();
                if let Some(s) = stderr.as_mut() {
                    let _ = s.take(limit).read_to_end(&mut v).await;
                }
                v
            }
        );
        let _ = child.wait().await;
        let status =
            monitor::protocol::ExecStatus::parse(std::fs::read(&status_file).ok().as_deref());
        let _ = std::fs::remove_file(&process_file);
        let _ = std::fs::remove_file(&status_file);
        let exit_code = match status {
            monitor::protocol::ExecStatus::Failed(f) => {
                return Err(Error::from(f).context(format_args!("exec in container {}", rec.id)));
            }
            monitor::protocol::ExecStatus::Exited {
                timed_out: true, ..
            } => {
                return Err(Error::deadline_exceeded(format!(
                    "command timed out after {timeout}s"
                )));
            }
            monitor::protocol::ExecStatus::Exited { exit_code, .. } => exit_code,
        };
        Ok(api::ExecSyncResponse {
            stdout: out,
            stderr: err,
            exit_code,
        })
    }

    /// The exec'd process: the container's own process settings with another command.
    pub(super) fn exec_process(
        &self,
        rec: &ContainerRecord,
        cmd: Vec<String>,
    ) -> Result<oci_spec::runtime::Process, Error> {
        let spec: oci_spec::runtime::Spec =
            crate::records::read_json(&rec.dir.join("config.json")).map_err(internal)?;
        let mut process = spec.process().clone().unwrap_or_default();
        process.set_args(Some(cmd));
        process.set_terminal(Some(false));
        process.set_oom_score_adj(None);
        Ok(process)
    }
}
