//! `linux.devices`: the request's host devices, as the host has them.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;

use cri_proto::api;
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::{invalid, SpecError};

pub(super) fn host_device(path: &str) -> Result<(LinuxDeviceType, i64, i64), SpecError> {
    let meta = fs::metadata(path).map_err(|e| invalid(format!("device {path}: {e}")))?;
    let ft = meta.file_type();
    let typ = if ft.is_char_device() {
        LinuxDeviceType::C
    } else if ft.is_block_device() {
        LinuxDeviceType::B
    } else {
        return Err(invalid(format!("device {path} is not a device node")));
    };
    let rdev = meta.rdev();
    Ok((
        typ,
        nix::sys::stat::major(rdev) as i64,
        nix::sys::stat::minor(rdev) as i64,
    ))
}

pub(super) fn devices(cfg: &api::ContainerConfig) -> Result<Vec<LinuxDevice>, SpecError> {
    let mut out = Vec::new();
    for d in &cfg.devices {
        let (typ, major, minor) = host_device(&d.host_path)?;
        let meta = fs::metadata(&d.host_path)
            .map_err(|e| invalid(format!("device {}: {e}", d.host_path)))?;
        if !d.container_path.starts_with('/') {
            return Err(invalid(format!(
                "device container_path {:?} is not an absolute path",
                d.container_path
            )));
        }
        let mut dev = LinuxDevice::default();
        dev.set_path(PathBuf::from(&d.container_path))
            .set_typ(typ)
            .set_major(major)
            .set_minor(minor)
            .set_file_mode(Some(meta.mode() & 0o777))
            .set_uid(Some(meta.uid()))
            .set_gid(Some(meta.gid()));
        out.push(dev);
    }
    Ok(out)
}
