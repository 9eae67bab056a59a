//! The container's seccomp profile: none (unconfined or privileged), the server's
//! RuntimeDefault, or a localhost profile file.

use std::fs;

use cri_proto::api;

use super::{invalid, SpecError};

pub(super) fn seccomp(
    sec: &api::LinuxContainerSecurityContext,
    caps: Vec<String>,
) -> Result<Option<oci_spec::runtime::LinuxSeccomp>, SpecError> {
    if sec.privileged {
        return Ok(None);
    }
    enum Profile {
        Unconfined,
        RuntimeDefault,
        Localhost(String),
    }
    let profile = match &sec.seccomp {
        Some(p) => match api::security_profile::ProfileType::try_from(p.profile_type) {
            Ok(api::security_profile::ProfileType::RuntimeDefault) => Profile::RuntimeDefault,
            Ok(api::security_profile::ProfileType::Unconfined) => Profile::Unconfined,
            Ok(api::security_profile::ProfileType::Localhost) => {
                Profile::Localhost(p.localhost_ref.clone())
            }
            Err(_) => {
                return Err(invalid(format!(
                    "unknown seccomp profile type {}",
                    p.profile_type
                )))
            }
        },
        // Older kubelets (before 1.25) still send the deprecated path form.
        #[allow(deprecated)]
        None => match sec.seccomp_profile_path.as_str() {
            "" | "unconfined" => Profile::Unconfined,
            "runtime/default" | "docker/default" => Profile::RuntimeDefault,
            other => match other.strip_prefix("localhost/") {
                Some(path) => Profile::Localhost(path.to_string()),
                None => return Err(invalid(format!("unknown seccomp profile {other:?}"))),
            },
        },
    };
    match profile {
        Profile::Unconfined => Ok(None),
        Profile::RuntimeDefault => crate::seccomp_profile::runtime_default(&caps)
            .map(Some)
            .map_err(|e| {
                SpecError::Unsupported(format!("the RuntimeDefault seccomp profile: {e}"))
            }),
        Profile::Localhost(path) => {
            if !path.starts_with('/') {
                return Err(invalid(format!(
                    "seccomp localhost profile {path:?} is not an absolute path"
                )));
            }
            let data = fs::read(&path)
                .map_err(|e| invalid(format!("seccomp localhost profile {path}: {e}")))?;
            let profile: oci_spec::runtime::LinuxSeccomp = serde_json::from_slice(&data)
                .map_err(|e| invalid(format!("seccomp localhost profile {path}: {e}")))?;
            Ok(Some(profile))
        }
    }
}
