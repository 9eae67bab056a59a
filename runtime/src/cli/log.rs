//! Errors as the user and `--log` see them.

use std::io::Write;
use std::path::PathBuf;

/// The error and its causes on one line, leaving out a cause whose text the line already
/// has (library errors name their source in their own message).
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
    }
    text
}

/// Errors go to `--log` as runc writes them (`level`, `msg`, `time`), so containerd's shim,
/// which reads the last error from that file, shows the user our message. Hand-rolled:
/// one line per error does not warrant a logging framework on the start-up path.
pub(crate) struct Logger {
    pub(crate) file: Option<PathBuf>,
    pub(crate) json: bool,
}

impl Logger {
    pub(crate) fn error(&self, msg: &str) {
        let Some(path) = &self.file else { return };
        let time = humantime::format_rfc3339_nanos(std::time::SystemTime::now()).to_string();
        let line = if self.json {
            serde_json::json!({"level": "error", "msg": msg, "time": time}).to_string()
        } else {
            format!("time=\"{time}\" level=error msg={msg:?}")
        };
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }
}
