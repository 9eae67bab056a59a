//! Linux security module labels: `process.apparmorProfile`, `process.selinuxLabel` and
//! `linux.mountLabel`. Applied when the host runs that LSM; otherwise a config that asks for
//! a label is refused with a clear error, never silently run unconfined.

use crate::error::{Error, Result};
use oci_spec::runtime::{Process, Spec};

fn apparmor_enabled() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|s| s.trim_start().starts_with('Y'))
}

fn selinux_enabled() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

fn wanted(label: &Option<String>) -> Option<&str> {
    label.as_deref().filter(|l| !l.is_empty())
}

/// Checked at create time, on the host, before anything is made.
pub fn check(spec: &Spec) -> Result<()> {
    if let Some(p) = spec.process().as_ref() {
        check_process(p)?;
    }
    if let Some(label) = spec.linux().as_ref().and_then(|l| wanted(l.mount_label())) {
        if !selinux_enabled() {
            return Err(Error::Invalid(format!(
                "linux.mountLabel {label:?} needs SELinux, which this host does not run"
            )));
        }
    }
    Ok(())
}

pub fn check_process(p: &Process) -> Result<()> {
    if let Some(profile) = wanted(p.apparmor_profile()) {
        if !apparmor_enabled() {
            return Err(Error::Invalid(format!(
                "process.apparmorProfile {profile:?} needs AppArmor, which this host does not run"
            )));
        }
    }
    if let Some(label) = wanted(p.selinux_label()) {
        if !selinux_enabled() {
            return Err(Error::Invalid(format!(
                "process.selinuxLabel {label:?} needs SELinux, which this host does not run"
            )));
        }
    }
    Ok(())
}

/// Sets the labels the next execve takes on. Called in the container just before it.
pub fn apply_exec_labels(p: &Process) -> Result<()> {
    if let Some(profile) = wanted(p.apparmor_profile()) {
        // The LSM-specific file exists since Linux 5.8; the shared one before that.
        let path = if std::path::Path::new("/proc/self/attr/apparmor/exec").exists() {
            "/proc/self/attr/apparmor/exec"
        } else {
            "/proc/self/attr/exec"
        };
        std::fs::write(path, format!("exec {profile}"))
            .map_err(|e| Error::Invalid(format!("applying AppArmor profile {profile:?}: {e}")))?;
    }
    if let Some(label) = wanted(p.selinux_label()) {
        std::fs::write("/proc/self/attr/exec", label)
            .map_err(|e| Error::Invalid(format!("applying SELinux label {label:?}: {e}")))?;
    }
    Ok(())
}

/// The mount option that labels a new (non-bind) filesystem.
pub fn mount_label_option(spec: &Spec) -> Option<String> {
    spec.linux()
        .as_ref()
        .and_then(|l| wanted(l.mount_label()))
        .map(|label| format!("context=\"{label}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_labels_ask_for_nothing() {
        let p: Process = serde_json::from_str(
            r#"{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0},"apparmorProfile":"","selinuxLabel":""}"#,
        )
        .unwrap();
        check_process(&p).unwrap();
    }

    #[test]
    fn a_label_without_its_lsm_is_refused_by_name() {
        if apparmor_enabled() {
            return;
        }
        let p: Process = serde_json::from_str(
            r#"{"cwd":"/","args":["sh"],"user":{"uid":0,"gid":0},"apparmorProfile":"docker-default"}"#,
        )
        .unwrap();
        let e = check_process(&p).unwrap_err().to_string();
        assert!(
            e.contains("AppArmor") && e.contains("docker-default"),
            "{e}"
        );
    }
}
