//! `mounts[].options` as mount(2) wants them: flags to set and to clear, propagation
//! changes, filesystem data, and runc's `tmpcopyup`.

use crate::error::{Error, Result};
use nix::mount::MsFlags;

/// Mount options split the way mount(2) wants them.
#[derive(Debug, PartialEq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Flags that must be cleared (a later `rw` undoing an earlier `ro`).
    pub clear: MsFlags,
    pub propagation: Vec<MsFlags>,
    pub data: Vec<String>,
    /// runc's `tmpcopyup` extension (tmpfs only): the new tmpfs starts with a copy of what
    /// the rootfs has at the destination.
    pub copy_up: bool,
}

pub fn parse_mount_options(options: &[String]) -> Result<MountOptions> {
    let mut out = MountOptions {
        flags: MsFlags::empty(),
        clear: MsFlags::empty(),
        propagation: vec![],
        data: vec![],
        copy_up: false,
    };
    for opt in options {
        if let Some(p) = propagation_flag(opt) {
            out.propagation.push(p);
            continue;
        }
        let (set, flag) = match opt.as_str() {
            "defaults" => continue,
            "ro" => (true, MsFlags::MS_RDONLY),
            "rw" => (false, MsFlags::MS_RDONLY),
            "suid" => (false, MsFlags::MS_NOSUID),
            "nosuid" => (true, MsFlags::MS_NOSUID),
            "dev" => (false, MsFlags::MS_NODEV),
            "nodev" => (true, MsFlags::MS_NODEV),
            "exec" => (false, MsFlags::MS_NOEXEC),
            "noexec" => (true, MsFlags::MS_NOEXEC),
            "sync" => (true, MsFlags::MS_SYNCHRONOUS),
            "async" => (false, MsFlags::MS_SYNCHRONOUS),
            "dirsync" => (true, MsFlags::MS_DIRSYNC),
            "remount" => (true, MsFlags::MS_REMOUNT),
            "mand" => (true, MsFlags::MS_MANDLOCK),
            "nomand" => (false, MsFlags::MS_MANDLOCK),
            "atime" => (false, MsFlags::MS_NOATIME),
            "noatime" => (true, MsFlags::MS_NOATIME),
            "diratime" => (false, MsFlags::MS_NODIRATIME),
            "nodiratime" => (true, MsFlags::MS_NODIRATIME),
            "bind" => (true, MsFlags::MS_BIND),
            "rbind" => (true, MsFlags::MS_BIND | MsFlags::MS_REC),
            "relatime" => (true, MsFlags::MS_RELATIME),
            "norelatime" => (false, MsFlags::MS_RELATIME),
            "strictatime" => (true, MsFlags::MS_STRICTATIME),
            "nostrictatime" => (false, MsFlags::MS_STRICTATIME),
            "lazytime" => (true, MsFlags::MS_LAZYTIME),
            "nolazytime" => (false, MsFlags::MS_LAZYTIME),
            "silent" => (true, MsFlags::MS_SILENT),
            "loud" => (false, MsFlags::MS_SILENT),
            "tmpcopyup" => {
                out.copy_up = true;
                continue;
            }
            "idmap" | "ridmap" => {
                return Err(Error::Invalid(format!(
                    "mount option {opt:?} is not supported"
                )))
            }
            o if o.len() > 1
                && o.starts_with('r')
                && matches!(
                    &o[1..],
                    "ro" | "rw" | "nosuid" | "nodev" | "noexec" | "noatime"
                ) =>
            {
                return Err(Error::Invalid(format!(
                    "recursive mount option {opt:?} is not supported"
                )))
            }
            _ => {
                out.data.push(opt.clone());
                continue;
            }
        };
        if set {
            out.flags |= flag;
            out.clear &= !flag;
        } else {
            out.flags &= !flag;
            out.clear |= flag;
        }
    }
    Ok(out)
}

pub(super) fn propagation_flag(opt: &str) -> Option<MsFlags> {
    Some(match opt {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_propagation_and_data() {
        let o = parse_mount_options(&s(&[
            "nosuid", "ro", "rbind", "rslave", "size=64k", "mode=755",
        ]))
        .unwrap();
        assert_eq!(
            o.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_RDONLY | MsFlags::MS_BIND | MsFlags::MS_REC
        );
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        assert_eq!(o.data, s(&["size=64k", "mode=755"]));
    }

    #[test]
    fn a_later_option_undoes_an_earlier_one() {
        let o = parse_mount_options(&s(&["ro", "rw", "noexec", "exec"])).unwrap();
        assert!(o.flags.is_empty());
        assert!(o.clear.contains(MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC));
    }

    #[test]
    fn unsupported_options_are_errors_not_silently_dropped() {
        assert!(parse_mount_options(&s(&["idmap"])).is_err());
        assert!(parse_mount_options(&s(&["rro"])).is_err());
    }

    #[test]
    fn tmpcopyup_is_a_flag_of_ours_not_filesystem_data() {
        let o = parse_mount_options(&s(&["nosuid", "tmpcopyup", "mode=1777"])).unwrap();
        assert!(o.copy_up);
        assert_eq!(o.data, s(&["mode=1777"]));
        assert!(!parse_mount_options(&s(&["nosuid"])).unwrap().copy_up);
    }
}
