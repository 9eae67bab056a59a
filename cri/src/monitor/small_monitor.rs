//! The small `rrun-cri-monitor` binary's arguments: `rrun-cri monitor` becomes it (exec,
//! same pid) with its own arguments passed on, and it parses them back without clap.

use super::{MonitorArgs, MONITOR_BINARY};
use std::path::PathBuf;

/// Becomes [`MONITOR_BINARY`] if it is next to this executable: `Err(None)` when it is
/// not, `Err(Some(why))` when exec failed.
pub(super) fn exec_small_monitor(args: &MonitorArgs) -> Result<(), Option<String>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let exe = std::env::current_exe().map_err(|_| None)?;
    let small = exe.with_file_name(MONITOR_BINARY);
    if !small.is_file() {
        return Err(None);
    }
    let mut argv: Vec<&std::ffi::OsStr> =
        vec![small.as_os_str(), "--runtime-exe".as_ref(), exe.as_os_str()];
    argv.extend([
        "--runtime-root".as_ref(),
        args.runtime_root.as_os_str(),
        "--id".as_ref(),
        args.id.as_ref(),
        "--bundle".as_ref(),
        args.bundle.as_os_str(),
        "--log-path".as_ref(),
        args.log_path.as_os_str(),
        "--state-dir".as_ref(),
        args.state_dir.as_os_str(),
    ]);
    for (on, flag) in [
        (args.tty, "--tty"),
        (args.stdin, "--stdin"),
        (args.stdin_once, "--stdin-once"),
    ] {
        if on {
            argv.push(flag.as_ref());
        }
    }
    let argv: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| Some("an argument holds a NUL byte".to_string()))?;
    let Some(path) = argv.first() else {
        return Err(None);
    };
    let err = nix::unistd::execv(path, &argv).err();
    Err(Some(format!("executing {}: {err:?}", small.display())))
}

/// Parses `rrun-cri-monitor`'s arguments: `--runtime-exe FILE` then those of
/// `rrun-cri monitor` (as [`run_monitor`] passes them).
pub fn parse_small_monitor_args(
    argv: impl IntoIterator<Item = std::ffi::OsString>,
) -> Result<(PathBuf, MonitorArgs), String> {
    let mut exe = None;
    let mut args = MonitorArgs {
        runtime_root: PathBuf::new(),
        id: String::new(),
        bundle: PathBuf::new(),
        log_path: PathBuf::new(),
        state_dir: PathBuf::new(),
        tty: false,
        stdin: false,
        stdin_once: false,
        helper: None,
        result_fd: None,
    };
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        match flag.to_str() {
            Some("--tty") => {
                args.tty = true;
                continue;
            }
            Some("--stdin") => {
                args.stdin = true;
                continue;
            }
            Some("--stdin-once") => {
                args.stdin_once = true;
                continue;
            }
            _ => {}
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{} needs a value", flag.to_string_lossy()))?;
        match flag.to_str().unwrap_or("") {
            "--runtime-exe" => exe = Some(PathBuf::from(value)),
            "--runtime-root" => args.runtime_root = value.into(),
            "--id" => {
                args.id = value
                    .into_string()
                    .map_err(|_| "--id is not UTF-8".to_string())?
            }
            "--bundle" => args.bundle = value.into(),
            "--log-path" => args.log_path = value.into(),
            "--state-dir" => args.state_dir = value.into(),
            _ => return Err(format!("unknown argument {}", flag.to_string_lossy())),
        }
    }
    let missing = [
        ("--runtime-exe", exe.is_none()),
        ("--runtime-root", args.runtime_root.as_os_str().is_empty()),
        ("--id", args.id.is_empty()),
        ("--bundle", args.bundle.as_os_str().is_empty()),
        ("--log-path", args.log_path.as_os_str().is_empty()),
        ("--state-dir", args.state_dir.as_os_str().is_empty()),
    ];
    if let Some((flag, _)) = missing.iter().find(|(_, m)| *m) {
        return Err(format!("missing {flag}"));
    }
    Ok((exe.unwrap_or_default(), args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;
    use std::path::Path;

    fn argv(items: &[&str]) -> Vec<OsString> {
        items.iter().map(OsString::from).collect()
    }

    #[test]
    fn small_monitor_arguments_round_trip() {
        let (exe, a) = parse_small_monitor_args(argv(&[
            "--runtime-exe",
            "/usr/bin/rrun-cri",
            "--runtime-root",
            "/run/r",
            "--id",
            "c1",
            "--bundle",
            "/b",
            "--log-path",
            "/l/0.log",
            "--state-dir",
            "/s",
            "--tty",
        ]))
        .unwrap();
        assert_eq!(exe, Path::new("/usr/bin/rrun-cri"));
        assert_eq!(a.runtime_root, Path::new("/run/r"));
        assert_eq!(a.id, "c1");
        assert_eq!(a.bundle, Path::new("/b"));
        assert_eq!(a.log_path, Path::new("/l/0.log"));
        assert_eq!(a.state_dir, Path::new("/s"));
        assert!(a.tty);
        assert!(a.helper.is_none());
    }

    #[test]
    fn bad_small_monitor_arguments_are_refused() {
        for bad in [
            &["--id"][..],
            &["--what", "x"],
            &["--runtime-exe", "/x", "--id", "c"],
        ] {
            assert!(parse_small_monitor_args(argv(bad)).is_err(), "{bad:?}");
        }
    }
}
