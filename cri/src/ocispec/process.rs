//! The container's process: its command line and environment (Kubernetes' rules over the
//! image's config) and its OOM score.

use std::fs;

use cri_proto::api;

use super::{invalid, SpecError};

/// Kubernetes' rule: `command` replaces the image's entrypoint and drops its cmd; without a
/// command, the image's entrypoint runs with `args`, else with the image's cmd.
pub fn command_line(
    cfg: &api::ContainerConfig,
    image: Option<&oci_spec::image::Config>,
) -> Result<Vec<String>, SpecError> {
    let mut argv = cfg.command.clone();
    let mut args = cfg.args.clone();
    if argv.is_empty() {
        if args.is_empty() {
            args = image.and_then(|i| i.cmd().clone()).unwrap_or_default();
        }
        argv = image
            .and_then(|i| i.entrypoint().clone())
            .unwrap_or_default();
    }
    argv.extend(args);
    if argv.is_empty() {
        return Err(invalid(
            "no command specified: the request has no command or args and the image no entrypoint or cmd",
        ));
    }
    Ok(argv)
}

/// The image's env, then HOSTNAME, then the request's envs, a later value replacing an
/// earlier one of the same name (in place, so the order stays the image's).
pub fn environment(
    cfg: &api::ContainerConfig,
    image: Option<&oci_spec::image::Config>,
    hostname: &str,
) -> Vec<String> {
    let mut env: Vec<String> = Vec::new();
    let mut set = |kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        match env
            .iter_mut()
            .find(|e| e.split('=').next() == Some(key.as_str()))
        {
            Some(slot) => *slot = kv,
            None => env.push(kv),
        }
    };
    let image_env = image.and_then(|i| i.env().clone()).unwrap_or_default();
    if !image_env.iter().any(|e| e.starts_with("PATH=")) {
        set("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    }
    for kv in image_env {
        set(kv);
    }
    if !hostname.is_empty() {
        set(format!("HOSTNAME={hostname}"));
    }
    for kv in &cfg.envs {
        set(format!("{}={}", kv.key, kv.value));
    }
    env
}

/// What the kubelet asks for, unless it is below this process's own score and this process
/// may not lower scores (no CAP_SYS_RESOURCE, as on this project's machine): then this
/// process's own score, as containerd's `restrict_oom_score_adj` does.
pub fn allowed_oom_score_adj(requested: i64) -> i32 {
    let requested = requested.clamp(-1000, 1000) as i32; // checked by the caller
    let own = fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    let may_lower = caps::has_cap(
        None,
        caps::CapSet::Effective,
        caps::Capability::CAP_SYS_RESOURCE,
    )
    .unwrap_or(false)
        && caps::has_cap(
            None,
            caps::CapSet::Bounding,
            caps::Capability::CAP_SYS_RESOURCE,
        )
        .unwrap_or(false);
    if requested < own && !may_lower {
        own
    } else {
        requested
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entry: &[&str], cmd: &[&str]) -> oci_spec::image::Config {
        let mut c = oci_spec::image::Config::default();
        c.set_entrypoint(Some(entry.iter().map(|s| s.to_string()).collect()));
        c.set_cmd(Some(cmd.iter().map(|s| s.to_string()).collect()));
        c.set_env(Some(vec![
            "PATH=/bin".into(),
            "A=image".into(),
            "B=image".into(),
        ]));
        c
    }

    fn cfg(command: &[&str], args: &[&str]) -> api::ContainerConfig {
        api::ContainerConfig {
            command: command.iter().map(|s| s.to_string()).collect(),
            args: args.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }
    #[test]
    fn command_follows_kubernetes_rules() {
        let img = image(&["/entry"], &["default"]);
        assert_eq!(
            command_line(&cfg(&[], &[]), Some(&img)).unwrap(),
            ["/entry", "default"]
        );
        assert_eq!(
            command_line(&cfg(&[], &["x"]), Some(&img)).unwrap(),
            ["/entry", "x"]
        );
        assert_eq!(
            command_line(&cfg(&["sh"], &[]), Some(&img)).unwrap(),
            ["sh"]
        );
        assert_eq!(
            command_line(&cfg(&["sh"], &["-c", "y"]), Some(&img)).unwrap(),
            ["sh", "-c", "y"]
        );
        assert!(command_line(&cfg(&[], &[]), None).is_err());
    }

    #[test]
    fn request_env_overrides_image_env_in_place() {
        let img = image(&[], &["sh"]);
        let mut c = cfg(&[], &[]);
        c.envs = vec![
            api::KeyValue {
                key: "B".into(),
                value: "request".into(),
            },
            api::KeyValue {
                key: "C".into(),
                value: "new".into(),
            },
        ];
        assert_eq!(
            environment(&c, Some(&img), "pod"),
            ["PATH=/bin", "A=image", "B=request", "HOSTNAME=pod", "C=new"]
        );
    }
}
