//! The container's user: uid, gid and supplementary groups from the security context or
//! the image's `User`, names looked up in the image's /etc/passwd and /etc/group.

use std::fs;
use std::path::Path;

use cri_proto::api;
use oci_spec::runtime::User;

use super::{invalid, SpecError};

/// uid and gid from the security context, else from the image's `User` (`uid[:gid]` or
/// names looked up in the rootfs's /etc/passwd and /etc/group), and the supplementary groups.
pub(super) fn user(
    sec: &api::LinuxContainerSecurityContext,
    image: Option<&oci_spec::image::Config>,
    rootfs: &Path,
) -> Result<User, SpecError> {
    let passwd = read_in_rootfs(rootfs, "etc/passwd");
    let group = read_in_rootfs(rootfs, "etc/group");
    let (uid, mut gid, name) = if let Some(u) = &sec.run_as_user {
        let uid = u32::try_from(u.value)
            .map_err(|_| invalid(format!("run_as_user {} is not a valid uid", u.value)))?;
        let entry = passwd_by_uid(&passwd, uid);
        (
            uid,
            entry.as_ref().map(|e| e.1).unwrap_or(0),
            entry.map(|e| e.0),
        )
    } else if !sec.run_as_username.is_empty() {
        let (uid, gid) = passwd_by_name(&passwd, &sec.run_as_username).ok_or_else(|| {
            invalid(format!(
                "run_as_username {:?}: no such user in the image's /etc/passwd",
                sec.run_as_username
            ))
        })?;
        (uid, gid, Some(sec.run_as_username.clone()))
    } else {
        let spec = image.and_then(|i| i.user().clone()).unwrap_or_default();
        image_user(&spec, &passwd, &group)?
    };
    if let Some(g) = &sec.run_as_group {
        gid = u32::try_from(g.value)
            .map_err(|_| invalid(format!("run_as_group {} is not a valid gid", g.value)))?;
    }
    let mut additional: Vec<u32> = name
        .map(|n| groups_of_member(&group, &n))
        .unwrap_or_default();
    for g in &sec.supplemental_groups {
        let g = u32::try_from(*g)
            .map_err(|_| invalid(format!("supplemental group {g} is not a valid gid")))?;
        additional.push(g);
    }
    additional.retain(|g| *g != gid);
    additional.sort_unstable();
    additional.dedup();
    let mut user = User::default();
    user.set_uid(uid).set_gid(gid);
    user.set_additional_gids((!additional.is_empty()).then_some(additional));
    Ok(user)
}

/// Parses the image config's `User`: `""`, `uid`, `name`, `uid:gid`, `name:group`.
fn image_user(
    spec: &str,
    passwd: &str,
    group: &str,
) -> Result<(u32, u32, Option<String>), SpecError> {
    if spec.is_empty() {
        return Ok((0, 0, Some("root".into())));
    }
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, pw_gid, name) = match u.parse::<u32>() {
        Ok(uid) => {
            let e = passwd_by_uid(passwd, uid);
            (uid, e.as_ref().map(|e| e.1).unwrap_or(0), e.map(|e| e.0))
        }
        Err(_) => {
            let (uid, gid) = passwd_by_name(passwd, u).ok_or_else(|| {
                invalid(format!(
                    "image user {u:?}: no such user in the image's /etc/passwd"
                ))
            })?;
            (uid, gid, Some(u.to_string()))
        }
    };
    let gid = match g {
        None => pw_gid,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_by_name(group, g).ok_or_else(|| {
                invalid(format!(
                    "image group {g:?}: no such group in the image's /etc/group"
                ))
            })?,
        },
    };
    Ok((uid, gid, name))
}

fn passwd_by_uid(passwd: &str, uid: u32) -> Option<(String, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[2].parse() == Ok(uid))
            .then(|| (f[0].to_string(), f[3].parse().unwrap_or(0)))
    })
}

fn passwd_by_name(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() >= 4 && f[0] == name {
            Some((f[2].parse().ok()?, f[3].parse().ok()?))
        } else {
            None
        }
    })
}

fn group_by_name(group: &str, name: &str) -> Option<u32> {
    group.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 3 && f[0] == name)
            .then(|| f[2].parse().ok())
            .flatten()
    })
}

fn groups_of_member(group: &str, user: &str) -> Vec<u32> {
    group
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4 && f[3].split(',').any(|m| m == user))
                .then(|| f[2].parse().ok())
                .flatten()
        })
        .collect()
}

/// Reads a file of the image by a path resolved inside the rootfs (an image's /etc/passwd
/// may be a symlink to anywhere: it must not name a host file).
fn read_in_rootfs(rootfs: &Path, rel: &str) -> String {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    use std::io::Read;
    let Ok(root) = fs::File::open(rootfs) else {
        return String::new();
    };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let Ok(fd) = openat2(&root, rel, how) else {
        return String::new();
    };
    let mut f = fs::File::from(fd);
    let mut out = String::new();
    // A passwd file of more than 1 MiB is no one's; reading stops there.
    let _ = (&mut f).take(1 << 20).read_to_string(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_user_forms() {
        let passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n";
        let group = "root:x:0:\napp:x:1001:\nextra:x:2000:app\n";
        assert_eq!(
            image_user("", passwd, group).unwrap(),
            (0, 0, Some("root".into()))
        );
        assert_eq!(
            image_user("1000", passwd, group).unwrap(),
            (1000, 1001, Some("app".into()))
        );
        assert_eq!(
            image_user("app:extra", passwd, group).unwrap(),
            (1000, 2000, Some("app".into()))
        );
        assert_eq!(image_user("42:43", passwd, group).unwrap(), (42, 43, None));
        assert!(image_user("nobody-here", passwd, group).is_err());
        assert_eq!(groups_of_member(group, "app"), vec![2000]);
    }
}
